"""Where the Hydra configs (`tradeoff/conf/`, shipped in the package) and the named sweeps
(`tradeoff/conf/sweeps/`, plus `./sweeps/` of the working folder) live, and the check that an
output folder can be written before any work is done."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

__all__ = [
    "OutputDirCheck",
    "OutputDirError",
    "conf_dir",
    "sweep_files",
    "user_sweeps_dir",
    "writable_dir",
]


class OutputDirError(ValueError):
    """An output folder that cannot be created or written; `reason` is the OS's word for why."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def writable_dir(path: str | os.PathLike[str], setting: str, create: bool = True) -> Path:
    """Create `path` if needed (unless `create` is false) and write a scratch file in it; raise
    OutputDirError naming `setting` (the option that chose the folder) and the fix otherwise.

    A real write, not os.access: as root, access() says yes to read-only folders."""
    folder = Path(path)
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputDirError(
            f"{setting}={str(path)!r} cannot be written ({reason}); "
            f"set {setting} to a writable folder",
            reason,
        ) from None
    return folder


class OutputDirCheck(Callback):
    """Hydra callback: refuse an unwritable run or sweep folder in one line, before any job,
    MLflow run or training starts (Hydra itself would fail later, with a traceback)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_or_exit(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_or_exit(config.hydra.sweep.dir, "hydra.sweep.dir")


def _check_or_exit(path: str, setting: str) -> None:
    try:
        writable_dir(path, setting)
    except OutputDirError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)


def conf_dir() -> Path:
    """The Hydra configs shipped inside the package (`tradeoff/conf/`)."""
    return Path(__file__).resolve().parent / "conf"


def user_sweeps_dir() -> Path:
    """`./sweeps/` of the working folder: sweep files of the user's own, found beside ours."""
    return Path.cwd() / "sweeps"


def sweep_files() -> dict[str, Path]:
    """Sweep name → file, the package's named sweeps overridden by same-named user files."""
    files = {p.stem: p for p in sorted((conf_dir() / "sweeps").glob("*.yaml"))}
    if user_sweeps_dir().is_dir():
        files.update({p.stem: p for p in sorted(user_sweeps_dir().glob("*.yaml"))})
    return dict(sorted(files.items()))
