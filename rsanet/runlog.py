"""Run logging: console + ``train.log`` text, ``metrics.jsonl`` records and TensorBoard scalars.

Only rank 0 writes files. Other ranks print warnings and errors to the console (with their rank), so
that a failure on any rank is visible. A file that cannot be written (disk full, read-only work dir)
raises :class:`~rsanet.storage.StorageError` naming it, from the logging call that hit it; after that the
logger keeps printing to the console only.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

from rsanet.storage import StorageError, os_error_in, storage_error

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


class _FileHandler(logging.FileHandler):
    """A text log that remembers a failed write instead of printing logging's "--- Logging error ---" traceback."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.failure: Optional[BaseException] = None

    def handleError(self, record: logging.LogRecord) -> None:
        if self.failure is None:
            self.failure = sys.exc_info()[1]


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
        self._text: Optional[_FileHandler] = None
        if rank != 0:
            return
        target = self.work_dir
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            target = self.work_dir / log_name
            self._text = _FileHandler(target)
            self._text.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
            self._add(self._text)
            if jsonl:
                target = self.work_dir / "metrics.jsonl"
                self._jsonl = open(target, "a", buffering=1)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter
                target = self.work_dir / "tensorboard"
                self._tb = SummaryWriter(str(target))
        except OSError as e:
            self.close()
            raise storage_error(target, e) from None

    def _check_text(self) -> None:
        """Raise the failure of the text log's last write (once; the file is then dropped)."""
        if self._text is not None and self._text.failure is not None:
            failure, path = self._text.failure, self._text.baseFilename
            self.logger.removeHandler(self._text)
            self._handlers.remove(self._text)
            self._text = None
            raise storage_error(path, failure) from None

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
        self._check_text()

    def warning(self, msg: str) -> None:
        """A warning; shown on every rank."""
        self.logger.warning(msg)
        self._check_text()

    def error(self, msg: str) -> None:
        """An error; shown on every rank. A failing text log is dropped silently here (the error is shown)."""
        self.logger.error(msg)
        try:
            self._check_text()
        except StorageError:
            pass

    def record(self, kind: str, step: int, tb_prefix: Optional[str] = None, **values: Any) -> None:
        """One ``metrics.jsonl`` line ``{"kind", "step", "time", **values}``; numbers also go to TensorBoard
        as ``<tb_prefix>/<name>`` (default prefix: ``kind``)."""
        if self._jsonl is None:
            return
        row = {"kind": kind, "step": int(step), "time": round(time.time(), 3)}
        row.update({k: _plain(v) for k, v in values.items()})
        try:
            self._jsonl.write(json.dumps(row) + "\n")
        except OSError as e:
            raise storage_error(self.work_dir / "metrics.jsonl", e) from None
        self.scalars(tb_prefix or kind, step, **values)

    def scalars(self, prefix: str, step: int, **values: Any) -> None:
        """Finite numbers of ``values`` as TensorBoard scalars ``<prefix>/<name>`` (when TensorBoard is on)."""
        if self._tb is None:
            return
        try:
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(f"{prefix}/{name}", value, int(step))
        except Exception as e:  # the event writer's thread hit a full or read-only disk
            if os_error_in(e) is None:
                raise
            raise storage_error(self.work_dir / "tensorboard", e) from None

    def close(self) -> None:
        """Flush and detach everything this logger opened. A file that cannot be flushed (full disk) is
        reported on stderr in one line; closing never raises."""
        problems = []
        for h in self._handlers:
            self.logger.removeHandler(h)
            try:
                h.close()
            except OSError as e:
                problems.append(storage_error(getattr(h, "baseFilename", "log"), e))
        self._handlers.clear()
        self._text = None
        self.logger.setLevel(self._saved[0])
        self.logger.propagate = self._saved[1]
        for name, closer in (("metrics.jsonl", self._jsonl), ("tensorboard", self._tb)):
            try:
                if closer is not None:
                    closer.close()
            except Exception as e:
                if os_error_in(e) is None:
                    raise
                problems.append(storage_error(self.work_dir / name, e))
        self._jsonl = self._tb = None
        for problem in problems:
            print(f"warning: {problem}", file=sys.stderr)

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
