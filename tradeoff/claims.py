"""A config is trained by one process at a time, so concurrent sweeps over the same configs
never train one twice.

Before training, a job claims its config (experiment id and config hash) with an exclusive
`flock` on a lock file beside a local store (`<store>.claims/<experiment>-<hash>.lock`). The
kernel drops the lock when the process ends, however it ends, so a dead job never holds a
config. A job that finds its config claimed skips it. Server stores are claimed through the
store itself (`tradeoff.tracking.RunTracker.start`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Claim", "claim_file", "local_store_path", "try_claim"]


def local_store_path(uri: str) -> Path | None:
    """The file or folder of a local MLflow store (sqlite:///PATH, file:PATH, a plain path);
    None for a server or an in-memory store."""
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///").split("?")[0]
        return None if path in ("", ":memory:") else Path(path).resolve()
    if uri.startswith("file:"):
        return Path(uri.removeprefix("file:").removeprefix("//")).resolve()
    if "://" not in uri and ":" not in uri.split("/")[0] and uri != "databricks":
        return Path(uri).resolve()
    return None


def claim_file(store: Path, experiment_id: str, config_hash: str) -> Path:
    return store.parent / f"{store.name}.claims" / f"{experiment_id}-{config_hash}.lock"


@dataclass
class Claim:
    """A config this process trains until `release()` (or until it exits); `path` is None for
    a claim a server store decides (`tradeoff.tracking.RunTracker.contested`)."""

    path: Path | None
    fd: int | None

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def try_claim(store: Path, experiment_id: str, config_hash: str) -> Claim | str:
    """Claim the config for this process, or return who holds it ("pid 123 on host")."""
    path = claim_file(store, experiment_id, config_hash)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        return holder
    me = f"pid {os.getpid()} on {socket.gethostname()}".encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, me, 0)
    return Claim(path, fd)
