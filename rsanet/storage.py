"""Writing the files of a run: one-line errors for a full, read-only or otherwise unwritable disk.

A failed write raises :class:`StorageError`, whose message names the path and the operating system's reason
("No space left on device", "Read-only file system", "Permission denied"), instead of the chained
tracebacks of ``torch.save`` or the logging module. Writers remove their partial ``*.tmp`` file before
raising it (see :func:`rsanet.engine.checkpoint.save_checkpoint`).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

__all__ = ["StorageError", "os_error_in", "storage_error", "free_bytes", "check_writable"]


class StorageError(RuntimeError):
    """A file of the run could not be written; the message names the path and the reason."""


def os_error_in(exc: BaseException) -> Optional[OSError]:
    """The first ``OSError`` in ``exc``'s chain (itself, its cause or its context), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def free_bytes(path: str | os.PathLike) -> Optional[int]:
    """Bytes free for this user on the file system of ``path`` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def storage_error(path: str | os.PathLike, exc: BaseException, action: str = "write") -> StorageError:
    """A :class:`StorageError` "cannot <action> <path>: <reason>" for the failure ``exc``."""
    os_error = os_error_in(exc)
    if os_error is not None and os_error.strerror:
        reason = os_error.strerror
    else:
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
    free = free_bytes(path)
    if free is not None and free < 2 ** 20:
        reason += f" ({free} bytes free on that file system)"
    return StorageError(f"cannot {action} {path}: {reason}")


def check_writable(folder: str | os.PathLike, need_bytes: int = 0, what: str = "work dir") -> None:
    """Create ``folder`` and write (then remove) a small probe file in it; raise :class:`StorageError` when
    that fails or when fewer than ``need_bytes`` are free there."""
    folder = Path(folder)
    probe = folder / f".rsanet_write_test.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise storage_error(folder, e, f"write to the {what}") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
    free = free_bytes(folder)
    if need_bytes and free is not None and free < need_bytes:
        raise StorageError(f"the {what} {folder} has {free / 2 ** 20:.1f} MiB free, but one checkpoint of this model "
                           f"needs about {need_bytes / 2 ** 20:.1f} MiB: free some space or choose another --work-dir")
