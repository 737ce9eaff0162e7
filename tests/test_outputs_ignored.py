"""What the quickstart (`tradeoff-sweep tau_grid && tradeoff-report tau_grid`) writes in the
checkout is ignored by git, and no committed file lies where it writes: `git status` stays clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not (ROOT / ".git").exists() or shutil.which("git") is None, reason="not a git checkout"
)

WRITTEN = [
    "mlflow.db",
    "mlflow.db.lock",
    "mlflow.db.claims/1-0123456789abcdef.lock",
    "optuna.db",
    "mlruns/1/0123/artifacts/certificates/test.parquet",
    "multirun/tau_grid/2026-01-01_00-00-00_4242/0/.hydra/config.yaml",
    "outputs/2026-01-01/00-00-00/train.log",
    "reports/tau_grid.pdf",
    "reports/tau_grid_front.png",
    "reports/tau_grid_front.csv",
]


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout


def test_quickstart_outputs_are_ignored():
    assert sorted(_git("check-ignore", "--no-index", *WRITTEN).split()) == sorted(WRITTEN)


def test_no_committed_file_where_the_quickstart_writes():
    assert _git("ls-files", "reports", "multirun", "outputs", "mlruns") == ""
    examples = _git("ls-files", "docs/examples").split()
    assert "docs/examples/tau_grid.pdf" in examples  # the README's example report
