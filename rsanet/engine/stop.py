"""Clean stops on SIGTERM and SIGINT (Slurm pre-emption or time limit, ``kill``, Ctrl-C).

While :class:`StopRequest` is installed, either signal only sets a flag. The training loop asks
:meth:`StopRequest.poll` after every optimizer step; once it answers, the loop writes ``last.pth`` of the
state after that step, logs the stop and ends with exit code ``128 + signal`` (143 for SIGTERM, 130 for
SIGINT), so that ``--resume auto`` continues exactly where it stopped.

With several processes, the ranks agree on the step to stop after: each step's flags are summed over a
gloo group on the CPU (no device synchronisation), asynchronously, and read one step later, so every rank
stops after the same step even when only one of them received the signal. DataLoader workers ignore both
signals (:func:`ignore_stop_signals`); the main process shuts them down when it stops.
"""
from __future__ import annotations

import signal
import threading
from typing import Optional

import torch
import torch.distributed as dist

__all__ = ["STOP_SIGNALS", "StopRequest", "ignore_stop_signals", "signal_name"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15, and so on."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of the DataLoaders: a worker leaves SIGTERM / SIGINT to the main process (a Ctrl-C
    reaches every process of the terminal's group), which finishes its step and then shuts the workers down."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class StopRequest:
    """Catches the stop signals while installed; ``poll()`` says, the same on every rank, when to stop."""

    def __init__(self, distributed: bool = False):
        self.received = 0  # signal number this process received (0: none)
        self.signum = 0  # the agreed stop signal (0: go on)
        self._previous: dict[int, object] = {}
        self._group = dist.new_group(backend="gloo") if distributed else None  # collective over every rank
        self._pending: Optional[tuple[object, torch.Tensor]] = None

    def install(self) -> "StopRequest":
        """Catch SIGTERM and SIGINT (only possible in the main thread; elsewhere this does nothing)."""
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if not self.received:
            self.received = signum

    def restore(self) -> None:
        """Put the previous handlers back and finish any pending collective."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        self._wait()

    def _wait(self) -> int:
        if self._pending is None:
            return 0
        work, flag = self._pending
        self._pending = None
        work.wait()
        return int(flag.item())

    def _start(self) -> None:
        flag = torch.tensor([self.received], dtype=torch.int64)
        self._pending = (dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group, async_op=True), flag)

    def poll(self) -> int:
        """The signal to stop on now (0: go on). Alone: this process's own. With several ranks: the largest
        signal any rank had received one call earlier; every rank must call this equally often."""
        if self._group is None:
            self.signum = self.received
        else:
            self.signum = self._wait()
            if not self.signum:
                self._start()
        return self.signum

    def agree(self) -> int:
        """Like :meth:`poll`, but on what every rank has received by now (a blocking collective)."""
        if self._group is None:
            self.signum = self.received
            return self.signum
        self.signum = self._wait()
        if not self.signum:
            self._start()
            self.signum = self._wait()
        return self.signum
