#!/usr/bin/env bash
# Table 2 on the synthetic motion benchmark: every transform of configs/synthetic/ (2D conv/TSN, 3D conv,
# (2+1)D conv, self-attention with and without the positional term, RSA), several seeds, mean ± std of
# top-1 on the held-out test split. Prints a Markdown table and saves it (JSON and .md) in the work dir
# (TABLE2_WORK_DIR, default work_dirs/table2_synthetic). Finished runs are reused, so it can be resumed.
# Extra arguments go to tools/table2_synthetic.py, e.g. `--seeds 5` or `--opts runtime.device=cpu`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source "$ROOT/scripts/install.sh"
PY="${PYTHON:-python3}"
"$PY" "$ROOT/tools/table2_synthetic.py" --work-dir "${TABLE2_WORK_DIR:-$ROOT/work_dirs/table2_synthetic}" "$@"
