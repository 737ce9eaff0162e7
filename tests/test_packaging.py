"""A non-editable install works from any folder: the wheel carries the Hydra configs and the
named sweeps (`tradeoff/conf/`), so `tradeoff-sweep quick && tradeoff-report quick` run in an
empty folder far from the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-w",
            str(out),
            ".",
        ],
        ROOT,
    )
    (built,) = out.glob("tradeoff-*.whl")
    return built


def test_the_wheel_ships_configs_and_sweeps(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in names if n.startswith("tradeoff/conf/")}
    in_tree = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "tradeoff" / "conf").rglob("*")
        if p.suffix in (".yaml", ".py")
    }
    assert in_tree and in_tree <= shipped
    assert "tradeoff/conf/sweeps/quick.yaml" in shipped
    assert "tradeoff/conf/config.yaml" in shipped


def test_installed_wheel_sweeps_and_reports_from_an_empty_folder(wheel, tmp_path):
    """The wheel goes into a fresh virtualenv (its dependencies seen through this
    environment's site-packages, so pip installs only tradeoff itself), then the quickstart
    runs in an empty folder whose parents hold no checkout."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=True)
    python = env_dir / "bin" / "python"
    _run([str(python), "-m", "pip", "install", str(wheel)], tmp_path)
    work = tmp_path / "empty"
    work.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")},
        "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    where = _run([str(python), "-c", "import tradeoff; print(tradeoff.__file__)"], work, env)
    assert Path(where.stdout.strip()).is_relative_to(env_dir), where.stdout
    sweep = _run([str(env_dir / "bin" / "tradeoff-sweep"), "quick"], work, env)
    assert "test accuracy" in sweep.stdout + sweep.stderr
    _run([str(env_dir / "bin" / "tradeoff-report"), "quick"], work, env)
    assert (work / "mlflow.db").exists()
    assert (work / "reports" / "quick.pdf").read_bytes().startswith(b"%PDF")
    assert {p.name for p in work.iterdir()} <= {
        "mlflow.db",
        "mlflow.db.lock",
        "mlflow.db.claims",
        "mlruns",
        "multirun",
        "outputs",
        "reports",
    }
