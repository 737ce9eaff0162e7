"""Named sweeps: the package's own (tradeoff/conf/sweeps/) and the user's ./sweeps/ beside them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
import pytest

from tradeoff import sweep
from tradeoff.paths import conf_dir, sweep_files

MINE = """# @package _global_
defaults:
  - override /data: digits
sweep:
  name: mine
  description: "A sweep of my own: digits, 1 epoch"
train:
  epochs: 1
  batch_size: 128
  threads: 1
hydra:
  sweeper:
    params:
      loss.tau: 2,20
"""


def test_the_package_sweeps_are_listed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = sweep_files()
    assert {"quick", "tau_grid", "hkr_grid", "seed_table", "optuna_pareto"} <= set(files)
    assert all(p.parent == conf_dir() / "sweeps" for p in files.values())


def test_a_user_sweep_in_the_working_folder_is_listed_and_may_shadow_ours(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "mine.yaml").write_text(MINE)
    (tmp_path / "sweeps" / "quick.yaml").write_text(MINE.replace("mine", "quick"))
    names = sweep.available()
    assert names["mine"] == "A sweep of my own: digits, 1 epoch"
    assert sweep_files()["quick"] == tmp_path / "sweeps" / "quick.yaml"


@pytest.mark.slow
def test_a_user_sweep_runs_through_tradeoff_sweep(tmp_path):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "mine.yaml").write_text(MINE)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        ["tradeoff-sweep", "mine"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{Path(tmp_path) / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["mine"])
    jobs = runs[runs["tags.tradeoff.role"] == "job"]
    assert sorted(jobs["params.loss.tau"].astype(float)) == [2.0, 20.0]
    assert set(jobs["params.data.name"]) == {"digits"}
