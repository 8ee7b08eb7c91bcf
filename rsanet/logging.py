"""Run logging: console + ``train.log`` text, ``metrics.jsonl`` records and TensorBoard scalars.

Only rank 0 writes files. Other ranks print warnings and errors to the console (with their rank), so
that a failure on any rank is visible.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

__all__ = ["RunLogger", "get_logger"]

_LOGGER_NAME = "rsanet"


def get_logger() -> logging.Logger:
    """The library logger (``rsanet``); :class:`RunLogger` attaches its handlers to it."""
    return logging.getLogger(_LOGGER_NAME)


def _plain(value: Any) -> Any:
    """JSON-safe value: floats that are nan/inf become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunLogger:
    """Text log, JSON-lines metrics and TensorBoard scalars of one run.

    ``work_dir`` is where ``train.log`` (or ``log_name``), ``metrics.jsonl`` (unless ``jsonl=False``) and
    ``tensorboard/`` go.
    On ranks other than 0 (``rank != 0``) nothing is written to disk.
    """

    def __init__(self, work_dir: str | Path, rank: int = 0, tensorboard: bool = True,
                 log_name: str = "train.log", jsonl: bool = True):
        self.rank = rank
        self.work_dir = Path(work_dir)
        self.logger = get_logger()
        self._saved = (self.logger.level, self.logger.propagate)  # restored by close()
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self._handlers: list[logging.Handler] = []
        self._jsonl = None
        self._tb = None
        console = logging.StreamHandler(sys.stdout if rank == 0 else sys.stderr)
        console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        console.setFormatter(logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(message)s",
                                               "%H:%M:%S"))
        console.addFilter(lambda record: not getattr(record, "file_only", False))
        self._add(console)
        if rank != 0:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        text = logging.FileHandler(self.work_dir / log_name)
        text.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        self._add(text)
        if jsonl:
            self._jsonl = open(self.work_dir / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(self.work_dir / "tensorboard"))

    def _add(self, handler: logging.Handler) -> None:
        self.logger.addHandler(handler)
        self._handlers.append(handler)

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files."""
        return self.rank == 0

    def info(self, msg: str, console: bool = True) -> None:
        """A line in train.log and, unless ``console=False`` (a progress bar owns the console), on screen."""
        self.logger.info(msg, extra={"file_only": not console})

    def warning(self, msg: str) -> None:
        """A warning; shown on every rank."""
        self.logger.warning(msg)

    def error(self, msg: str) -> None:
        """An error; shown on every rank."""
        self.logger.error(msg)

    def record(self, kind: str, step: int, tb_prefix: Optional[str] = None, **values: Any) -> None:
        """One ``metrics.jsonl`` line ``{"kind", "step", "time", **values}``; numbers also go to TensorBoard
        as ``<tb_prefix>/<name>`` (default prefix: ``kind``)."""
        if self._jsonl is None:
            return
        row = {"kind": kind, "step": int(step), "time": round(time.time(), 3)}
        row.update({k: _plain(v) for k, v in values.items()})
        self._jsonl.write(json.dumps(row) + "\n")
        if self._tb is not None:
            prefix = tb_prefix or kind
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(f"{prefix}/{name}", value, int(step))

    def close(self) -> None:
        """Flush and detach everything this logger opened."""
        for h in self._handlers:
            self.logger.removeHandler(h)
            h.close()
        self._handlers.clear()
        self.logger.setLevel(self._saved[0])
        self.logger.propagate = self._saved[1]
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
