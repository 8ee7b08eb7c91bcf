"""The command-line tools, one module each with a ``main(argv) -> exit code``.

Each is a console command of the installed package (``pyproject.toml``, ``[project.scripts]``:
``rsanet-train`` runs :func:`rsanet.cli.train.main`, and so on) and ``tools/<name>.py`` is a thin wrapper, so
``python tools/train.py ...`` and ``torchrun ... tools/train.py ...`` keep working. Only the tools parse
command lines; the library never does.
"""
from pathlib import Path

# The checkout this package runs from (scripts/install.sh installs it editable): where configs/ and the
# relative data/ paths of the configs are.
REPO = Path(__file__).resolve().parents[2]
