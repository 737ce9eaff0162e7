"""SIGTERM, SIGINT and SIGUSR1 end a job the same way: `Interrupted` is raised in the main
thread, the code in flight closes what it opened (the MLflow run KILLED, the sweep's parent run,
an Optuna trial failed and re-queued), and the command prints one line and exits 128 + the
signal. Inside `deferred()` (a store write, a training loop that checkpoints) the signal only
marks the stop as requested (`stop_requested`) and takes effect when the block ends.

SIGUSR1 is what SLURM sends ahead of a time limit or preemption (`sbatch --signal=USR1@90`). A
launcher's own handler of SIGUSR1 or SIGUSR2 (submitit's: checkpoint the job, requeue it, exit)
is chained: it runs once the job has reached a point where it can stop, after its checkpoint.

A second signal, or cleanup that outlasts `GRACE_SECONDS`, ends the process at once: a later
start marks what is left RUNNING as the runs of a dead process.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "GRACE_SECONDS",
    "Interrupted",
    "deferred",
    "exit_now",
    "handles",
    "install",
    "received",
    "reset",
    "stop_requested",
]

GRACE_SECONDS = 20.0  # SLURM sends SIGKILL 30 s (KillWait) after SIGTERM by default
HANDLED = (signal.SIGTERM, signal.SIGINT)
PREEMPTION = (signal.SIGUSR1, signal.SIGUSR2)  # SLURM's and submitit's advance notices

_received: int | None = None
_deferring = 0
_pending = False
_deadline: threading.Timer | None = None
_chained: dict[int, Any] = {}  # a launcher's preemption handler, by signal


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by `signum` (SIGTERM or SIGINT)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {self.name}")

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process its signal ended."""
        return 128 + self.signum


def received() -> int | None:
    """The signal this process was asked to stop by, if any."""
    return _received


def stop_requested() -> bool:
    """Whether a signal asked this process to stop (a loop polls it inside `deferred`)."""
    return _received is not None


def _program() -> str:
    return Path(sys.argv[0]).name or "tradeoff"


def _handler(signum: int, frame: Any) -> None:
    global _received, _pending, _deadline
    if _received is not None:
        name = signal.Signals(signum).name
        print(f"{_program()}: {name} again: stopping now", file=sys.stderr, flush=True)
        os._exit(128 + signum)
    _received = signum
    _deadline = threading.Timer(GRACE_SECONDS, os._exit, args=(128 + signum,))
    _deadline.daemon = True
    _deadline.start()
    if _deferring:
        _pending = True
        return
    raise Interrupted(signum)


def _chain(signum: int, frame: Any) -> None:
    """A launcher's preemption handler, run once the code in flight can stop (`deferred`)."""
    global _received, _pending
    if _deferring:
        _received = signum if _received is None else _received
        _pending = True
        return
    _chained[signum](signum, frame)


def _install_preemption() -> None:
    """SIGUSR1 stops the job like SIGTERM; a launcher's handler of SIGUSR1 or SIGUSR2 is
    chained (`_chain`)."""
    for sig in PREEMPTION:
        current = signal.getsignal(sig)
        if current in (_handler, _chain):
            continue
        if callable(current):
            _chained[sig] = current
            signal.signal(sig, _chain)
        elif sig == signal.SIGUSR1 and current == signal.SIG_DFL:
            signal.signal(sig, _handler)


def handles(sig: int) -> bool:
    """Whether `sig` raises Interrupted in this process (`install` took it)."""
    return signal.getsignal(sig) is _handler


def install() -> bool:
    """Handle SIGTERM, SIGINT and SIGUSR1 in this process (main thread only); False where it
    cannot or where another handler than Python's default is already installed for SIGTERM or
    SIGINT (a launcher's own, e.g. submitit's, which it needs for requeueing: its preemption
    handler is then chained, see `_install_preemption`)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    _install_preemption()
    defaults = {signal.SIG_DFL, signal.default_int_handler, _handler}
    # An ignored signal stays ignored: a shell starts background jobs with SIGINT ignored.
    current = {s: signal.getsignal(s) for s in HANDLED}
    if any(h not in defaults and h != signal.SIG_IGN for h in current.values()):
        return False
    for sig, handler in current.items():
        if handler != signal.SIG_IGN:
            signal.signal(sig, _handler)
    return True


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block a signal does not cut short (a write to the tracking store): `Interrupted` is
    raised when it ends instead."""
    global _deferring, _pending
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending:
            _pending = False
            assert _received is not None
            if _received in _chained:  # the launcher checkpoints, requeues and exits
                _chained[_received](_received, None)
            raise Interrupted(_received)


def exit_now(code: int) -> NoReturn:
    """Exit with `code` once the exit handlers ran and the output is flushed, without the
    interpreter's teardown (seconds, for torch and MLflow, that a stopped job need not wait)."""
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def reset() -> None:
    """Forget a signal received and cancel its deadline (for tests that send one in-process)."""
    global _received, _pending, _deferring, _deadline
    if _deadline is not None:
        _deadline.cancel()
    _received, _pending, _deferring, _deadline = None, False, 0, None
