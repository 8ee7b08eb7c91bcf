#!/usr/bin/env bash
# Style and import checks: ruff with the rules in pyproject.toml ([tool.ruff]). Installs what is missing first.
# Extra arguments go to `ruff check`, e.g. `bash scripts/lint.sh --fix`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RSANET_EXTRAS=dev source "$ROOT/scripts/install.sh"
"${PYTHON:-python3}" -m ruff check "$@" .
