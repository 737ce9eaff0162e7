"""Workers of a parallel launcher (joblib's loky processes, submitit's local ones) end when the
sweep process that started them dies, instead of training on from a queue nobody reads.

The sweep process records its pid in `SWEEP_PID_ENV` before launching; a job that descends from
that process starts a daemon thread that polls it and, once it is gone (dead, a zombie, or its
pid taken by another process), sends this process SIGTERM (`tradeoff.signals` closes the job's
run as KILLED; where the launcher keeps its own SIGTERM handler, a KeyboardInterrupt does),
then exits.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import threading
import time
from pathlib import Path

from . import signals

__all__ = [
    "SWEEP_PID_ENV",
    "SweepDied",
    "orphaned",
    "pid_alive",
    "record_sweep_process",
    "watch_parent",
]

SWEEP_PID_ENV = "TRADEOFF_SWEEP_PID"
POLL_SECONDS = 1.0

log = logging.getLogger(__name__)

_watched: int | None = None
_died: SweepDied | None = None  # set by the watchdog thread once the sweep process is gone


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, ..., start time at 19), or
    None without /proc (macOS) or such a process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host runs (a zombie, dead but not yet waited for by its
    parent, does not: a launcher that just killed its workers has not reaped them yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _stat(pid)
    return stat is None or stat[0] not in ("Z", "X")  # no /proc: alive as far as we know


def _descends_from(ancestor: int) -> bool:
    """Whether this process is a descendant of process `ancestor` (a direct child where there
    is no /proc to walk): joblib's workers are its children, submitit's local jobs children of
    a controller it started."""
    if os.getppid() == ancestor:
        return True
    pid = os.getppid()
    while pid > 1:
        stat = _stat(pid)
        if stat is None:
            return False
        pid = int(stat[1])
        if pid == ancestor:
            return True
    return False


class SweepDied(RuntimeError):
    """What stopped a worker's job: the sweep process that started it died."""


def record_sweep_process() -> None:
    """Called in the process that launches a sweep's jobs: its pid, for the workers to watch."""
    os.environ[SWEEP_PID_ENV] = str(os.getpid())


def orphaned() -> SweepDied | None:
    """Why this worker stops, if the sweep process that started it has died."""
    return _died


def watch_parent(poll: float = POLL_SECONDS) -> bool:
    """In a worker the sweep process started (directly or through a launcher's controller),
    watch that process (once per worker); return whether this process is watched. Jobs run in
    the sweep process itself, or elsewhere (a SLURM node), are not."""
    global _watched
    sweep = os.environ.get(SWEEP_PID_ENV, "")
    if not sweep.isdigit() or int(sweep) == os.getpid() or not _descends_from(int(sweep)):
        return False
    if _watched == int(sweep):
        return True
    _watched = int(sweep)
    born = (_stat(int(sweep)) or [None] * 20)[19]  # with the pid, tells a reused pid apart
    thread = threading.Thread(target=_watch, args=(int(sweep), born, poll), daemon=True)
    thread.name = "tradeoff-parent-watchdog"
    thread.start()
    return True


def _watch(sweep: int, born: str | None, poll: float) -> None:
    global _died
    while pid_alive(sweep) and (_stat(sweep) or [None] * 20)[19] == born:
        time.sleep(poll)
    _died = SweepDied(f"the sweep process {sweep} died")
    log.warning("the sweep process %d died: this worker (pid %d) stops", sweep, os.getpid())
    if signals.handles(signal.SIGTERM):
        os.kill(os.getpid(), signal.SIGTERM)
    else:  # a launcher's own SIGTERM handler (submitit's): a KeyboardInterrupt instead
        _thread.interrupt_main()
    time.sleep(signals.GRACE_SECONDS)
    os._exit(128 + signal.SIGTERM)
