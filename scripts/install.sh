#!/usr/bin/env bash
# Installs what RSANet needs into the current Python, only where something is missing.
# Sourced by scripts/test.sh and scripts/demo.sh. Set PYTHON to choose the interpreter,
# and RSANET_EXTRAS="dev" to add the test dependencies.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
PIP=("$PY" -m pip install -q --disable-pip-version-check)

# 1. torch. Keep an installed one. Otherwise prefer a pre-provisioned CPU wheel from pip's own
#    find-links when the machine has no NVIDIA GPU (no download of CUDA packages), else the index.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[install] torch is missing; installing it"
  if ! command -v nvidia-smi >/dev/null 2>&1 && "${PIP[@]}" --no-index --no-deps "torch>=2.4" >/dev/null 2>&1; then
    echo "[install] used a local CPU wheel of torch"
  fi
  "${PIP[@]}" "torch>=2.4"
fi

# 2. Everything else, with torch pinned to what is installed, so that pip picks the torchvision
#    release built for it instead of replacing torch.
TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
CONSTRAINTS="$(mktemp)"; trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==${TORCH_VERSION}" > "$CONSTRAINTS"
MODULES="torchvision decord numpy yaml tensorboard tqdm"
REQS=(-r "$ROOT/requirements.txt")
if [[ "${RSANET_EXTRAS:-}" == *dev* ]]; then MODULES="$MODULES pytest av onnx onnxscript onnxruntime matplotlib ruff"; REQS+=(-r "$ROOT/requirements-dev.txt"); fi
if ! "$PY" -c "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None for m in '$MODULES'.split()))"; then
  echo "[install] installing requirements (torch==${TORCH_VERSION} kept)"
  "${PIP[@]}" "${REQS[@]}" -c "$CONSTRAINTS"
fi

# 3. The package itself, editable, pointing at this checkout.
HERE="$(cd / && "$PY" -c 'import os, rsanet; print(os.path.dirname(os.path.dirname(os.path.abspath(rsanet.__file__))))' 2>/dev/null || true)"
if [[ "$HERE" != "$ROOT" ]]; then
  echo "[install] pip install -e $ROOT"
  "${PIP[@]}" --no-deps -e "$ROOT"
fi
