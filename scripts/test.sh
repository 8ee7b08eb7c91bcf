#!/usr/bin/env bash
# The README's test command: installs what is missing (plus pytest), then runs the CPU test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k config -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RSANET_EXTRAS=dev source "$ROOT/scripts/install.sh"
PY="${PYTHON:-python3}"
# Tests use tiny shapes on the CPU; keep thread counts sane on small machines.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PYTHONHASHSEED=0
set +e
"$PY" -m pytest "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "No tests were collected."
  exit 0
fi
exit $rc
