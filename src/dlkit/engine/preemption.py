"""Preemption: SIGTERM (a scheduler taking the machine back) and SIGINT (Ctrl-C) end training cleanly.

The promise of Slurm's preemption and torchelastic: a signalled run saves a checkpoint at the next
step boundary and exits, and `--resume` continues it as if nothing had happened. While the Trainer
runs, `SignalWatch` turns the two signals into a flag that the loop reads after each optimizer step
(a handler never touches the model mid-step); the loop then checkpoints and raises `Preempted`, which
the command line turns into one line and the shell's exit code 128 + signal (143 for SIGTERM, 130 for
SIGINT). A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import signal
import threading

from ..errors import DlkitError

WATCHED = (signal.SIGTERM, signal.SIGINT)


class Preempted(DlkitError):
    """Training stopped on a signal after saving a checkpoint; `exit_code` is 128 + the signal's number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


class Interrupted(Preempted, KeyboardInterrupt):
    """`Preempted` by SIGINT (Ctrl-C): also a KeyboardInterrupt, so `except KeyboardInterrupt` around a fit()
    catches it as it would catch Ctrl-C anywhere else."""


def stopped_by(signum: int, message: str) -> Preempted:
    """The exception for training stopped by signal `signum`: Interrupted for SIGINT, else Preempted."""
    return (Interrupted if signum == signal.SIGINT else Preempted)(message, signum)


class SignalWatch:
    """A context manager: inside it (in the main thread), SIGTERM and SIGINT set `received` instead of ending the
    process; a second SIGINT raises KeyboardInterrupt at once. The previous handlers are put back on exit. In
    another thread (where Python cannot install handlers) it does nothing."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = int(signum)

    def __enter__(self) -> SignalWatch:
        if threading.current_thread() is threading.main_thread():
            for sig in WATCHED:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}


def signal_name(signum: int) -> str:
    """'SIGTERM' for 15, and so on."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
