"""The ffmpeg lookup and a parallel job runner whose results appear under their final name only when complete."""
from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Sequence

__all__ = ["find_ffmpeg", "partial_path", "run_jobs"]


def find_ffmpeg(name: str = "ffmpeg") -> str:
    """Path of the ffmpeg executable, or a RuntimeError that says how to install it."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"`{name}` was not found on PATH. Install it first (e.g. `apt-get install ffmpeg` "
                           "or `conda install -c conda-forge ffmpeg`), or pass --ffmpeg /path/to/ffmpeg.")
    return path


def partial_path(final: Path, is_dir: bool) -> Path:
    """Where a job writes before it is complete: folder ``x`` -> ``x.partial``, file ``x.mp4`` -> ``x.partial.mp4``."""
    name = f"{final.name}.partial" if is_dir else f"{final.stem}.partial{final.suffix}"
    return final.with_name(name)


def _run_one(job: list[str] | Callable[[], object]) -> str:
    """Run a command line or a Python callable; returns '' on success, else the error text."""
    if callable(job):
        try:
            job()
            return ""
        except Exception as e:
            return f"{type(e).__name__}: {e}"
    proc = subprocess.run(job, capture_output=True, text=True)
    return "" if proc.returncode == 0 else (proc.stderr.strip()[-500:] or f"exit {proc.returncode}")


def run_jobs(jobs: Sequence[tuple[list[str] | Callable[[], object], Path]], workers: int = 4,
             is_dir: bool = False) -> list[tuple[Path, str]]:
    """Run ``(command or callable, final path)`` jobs in a thread pool; returns ``(final path, error)`` for
    each failure.

    Each job must write to ``partial_path(final, is_dir)`` (created first when it is a folder). On success
    it is renamed to ``final``, on failure removed, so an interrupted run never leaves a truncated result
    under the final name, and re-running redoes only what is missing.
    """
    def one(job: tuple[list[str] | Callable[[], object], Path]) -> Optional[tuple[Path, str]]:
        cmd, final = job
        tmp = partial_path(final, is_dir)
        (tmp if is_dir else tmp.parent).mkdir(parents=True, exist_ok=True)
        error = _run_one(cmd)
        if not error and tmp.exists():
            if is_dir and final.is_dir():
                shutil.rmtree(final)  # an empty or stale folder from an earlier attempt
            os.replace(tmp, final)
            return None
        if is_dir:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        return final, (error or "no output written")

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return [r for r in pool.map(one, list(jobs)) if r is not None]
