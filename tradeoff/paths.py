"""Where the project's Hydra configs (`conf/`) and named sweeps (`sweeps/`) live."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["conf_dir", "project_root", "sweeps_dir"]


def project_root() -> Path:
    """$TRADEOFF_HOME, else the checkout holding this package (editable install), else cwd."""
    if os.environ.get("TRADEOFF_HOME"):
        return Path(os.environ["TRADEOFF_HOME"]).resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "conf" / "config.yaml").exists():
        return checkout
    return Path.cwd()


def conf_dir() -> Path:
    return project_root() / "conf"


def sweeps_dir() -> Path:
    return project_root() / "sweeps"
