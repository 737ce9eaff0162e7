"""The named sweep `fashion_front` composes and trains on real Fashion-MNIST under its recipe
(one temperature, a budget of seconds instead of minutes)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from test_app import _cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
        reason="Debian's dataset-fashion-mnist is not installed",
    ),
]


def test_fashion_front_trains_seed_conv_under_the_recipe_and_budget(tmp_path):
    proc = _cli(
        [
            "tradeoff-sweep",
            "fashion_front",
            "loss.tau=3",
            "train.budget_minutes=0.1",
            "train.threads=1",
            "tracking.log_model=false",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["fashion_front"])
    job = runs[runs["tags.tradeoff.role"] == "job"].iloc[0]
    assert job["status"] == "FINISHED"
    expected = {
        "data.name": "fashion_mnist",
        "model.name": "seed_conv",
        "loss.family": "tau_cce",
        "loss.tau": "3",
        "schedule.name": "onecycle",
        "optim.lr": "0.005",
        "train.batch_size": "128",
        "train.budget_minutes": "0.1",
    }
    assert {k: job[f"params.{k}"] for k in expected} == expected
    assert job["tags.stopped_by"] == "budget"
    assert job["metrics.train/steps"] > 0
    assert job["metrics.test/accuracy"] > 0.3  # well above chance (0.1) after a few batches
    assert job["metrics.test/mean_certificate"] > 0
