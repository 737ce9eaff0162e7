"""Workers of a parallel launcher (joblib's loky processes, submitit's local ones) end when the
sweep process that started them dies, instead of training on from a queue nobody reads.

The sweep process records its pid in `SWEEP_PID_ENV` before launching; a job whose parent is
that process starts a daemon thread that polls `os.getppid()` and, once the parent is gone,
sends this process SIGTERM (`tradeoff.signals` closes the job's run as KILLED), then exits.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from . import signals

__all__ = ["SWEEP_PID_ENV", "orphaned", "pid_alive", "record_sweep_process", "watch_parent"]

SWEEP_PID_ENV = "TRADEOFF_SWEEP_PID"
POLL_SECONDS = 1.0

log = logging.getLogger(__name__)

_watched: int | None = None
_orphaned = threading.Event()


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host runs (a zombie, dead but not yet waited for by its
    parent, does not: a launcher that just killed its workers has not reaped them yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): alive as far as we can tell
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def record_sweep_process() -> None:
    """Called in the process that launches a sweep's jobs: its pid, for the workers to watch."""
    os.environ[SWEEP_PID_ENV] = str(os.getpid())


def orphaned() -> bool:
    """Whether the sweep process that started this worker has died."""
    return _orphaned.is_set()


def watch_parent(poll: float = POLL_SECONDS) -> bool:
    """In a worker started by the sweep process, watch that process (once per worker); return
    whether this process is watched. Jobs run in the sweep process itself are not."""
    global _watched
    sweep = os.environ.get(SWEEP_PID_ENV, "")
    if not sweep.isdigit() or int(sweep) == os.getpid() or os.getppid() != int(sweep):
        return False
    if _watched == int(sweep):
        return True
    _watched = int(sweep)
    thread = threading.Thread(target=_watch, args=(int(sweep), poll), daemon=True)
    thread.name = "tradeoff-parent-watchdog"
    thread.start()
    return True


def _watch(parent: int, poll: float) -> None:
    while os.getppid() == parent:
        time.sleep(poll)
    _orphaned.set()
    log.warning("the sweep process %d died: this worker (pid %d) stops", parent, os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(signals.GRACE_SECONDS)
    os._exit(128 + signal.SIGTERM)
