#!/usr/bin/env bash
# The README's first command: TSN vs RSANet on the built-in synthetic motion benchmark (CPU is fine).
# Installs what is missing (scripts/install.sh), trains both models with the real tools/train.py, tests
# them on a held-out split with tools/test.py, counts params/GFLOPs with tools/flops.py, and prints the
# table; the work dir (DEMO_WORK_DIR, default work_dirs/demo) keeps checkpoints, TensorBoard logs and
# demo_results.json. A GPU is used when there is one (runtime.device: auto). Extra arguments go to
# tools/demo.py, e.g. `bash scripts/demo.sh --opts runtime.device=cpu`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source "$ROOT/scripts/install.sh"
PY="${PYTHON:-python3}"
"$PY" "$ROOT/tools/demo.py" --work-dir "${DEMO_WORK_DIR:-$ROOT/work_dirs/demo}" "$@"
