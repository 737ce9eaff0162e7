"""The `layers_compared` sweep: its paired random search (`${log_uniform:...}`) and, end to end
through the real CLI on digits, a tiny version of it and its report grouped by layer family."""

from __future__ import annotations

import math
import shutil
import subprocess

import mlflow
import numpy as np
import pytest
from omegaconf import OmegaConf
from test_app import _cli

from tradeoff.paths import sweep_files
from tradeoff.resolvers import log_uniform


def test_log_uniform_is_deterministic_in_range_and_keyed_by_draw_and_salt():
    values = [log_uniform(1e-4, 1e-2, d, "lr") for d in range(200)]
    assert values == [log_uniform(1e-4, 1e-2, d, "lr") for d in range(200)]
    assert all(1e-4 <= v <= 1e-2 for v in values)
    assert len(set(values)) == 200
    assert log_uniform(1e-4, 1e-2, 3, "lr") != log_uniform(1e-4, 1e-2, 3, "weight_decay")


def test_log_uniform_is_uniform_in_log_space_and_salts_draw_independently():
    n = 2000
    u = {
        salt: np.array([math.log10(log_uniform(1e-5, 1e-1, d, salt)) + 5 for d in range(n)]) / 4
        for salt in ("lr", "weight_decay")
    }
    for values in u.values():
        # Kolmogorov-Smirnov distance to U(0, 1): 1.63/sqrt(n) is its 1% critical value.
        ranks = np.sort(values)
        ks = np.max(np.abs(ranks - (np.arange(1, n + 1) - 0.5) / n))
        assert ks < 1.63 / math.sqrt(n)
        # Equal counts per decade of the range (4 decades): a log-uniform, not a uniform, draw.
        counts = np.histogram(values, bins=4, range=(0, 1))[0]
        assert counts.min() > 0.8 * n / 4
    assert abs(np.corrcoef(u["lr"], u["weight_decay"])[0, 1]) < 3 / math.sqrt(n)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1e-2, 0, "lr"), "low=0 must be a finite number > 0"),
        ((-1e-3, 1e-2, 0, "lr"), "low=-0.001 must be a finite number > 0"),
        ((1e-2, 1e-3, 0, "lr"), "high=0.001 must be > low=0.01; swap them"),
        ((1e-3, 1e-3, 0, "lr"), "must be > low"),
        ((1e-4, 1e-2, -1, "lr"), "draw=-1 must be an integer >= 0"),
        ((1e-4, 1e-2, 0.5, "lr"), "draw=0.5 must be an integer >= 0"),
        ((1e-4, "x", 0, "lr"), "high='x' must be a finite number > 0"),
    ],
)
def test_log_uniform_refuses_bad_arguments_in_one_line(args, message):
    with pytest.raises(ValueError, match=r"^log_uniform: ") as info:
        log_uniform(*args)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_sweep_file_draws_the_same_lr_and_weight_decay_for_every_family():
    """Resolved as Hydra resolves it: each family's job of a draw gets that draw's values."""
    conf = OmegaConf.load(sweep_files()["layers_compared"])
    params = {k: str(v) for k, v in conf.hydra.sweeper.params.items()}
    families = params["model.layer"].split(",")
    assert "plain" not in families and len(families) >= 5
    draws = [int(d) for d in params["search.draw"].split(",")]
    seen = {}
    for family in families:
        for draw in draws:
            job = OmegaConf.merge(conf, {"model": {"layer": family}, "search": {"draw": draw}})
            seen.setdefault(draw, set()).add((job.optim.lr, job.optim.weight_decay))
    assert all(len(values) == 1 for values in seen.values())
    assert len({v for values in seen.values() for v in values}) == len(draws)


@pytest.mark.slow
def test_a_tiny_layers_compared_runs_and_reports_by_layer(tmp_path):
    proc = _cli(
        [
            "tradeoff-sweep",
            "layers_compared",
            "data=digits",
            "model.layer=aol,cayley",
            "search.draw=1",
            "train.budget_minutes=0.03",
            "train.threads=1",
            "tracking.log_model=false",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["layers_compared"])
    jobs = runs[runs["tags.tradeoff.role"] == "job"]
    assert sorted(jobs["params.model.layer"]) == ["aol", "cayley"]
    assert set(jobs["status"]) == {"FINISHED"}
    assert set(jobs["tags.stopped_by"]) == {"budget"}
    lr, wd = log_uniform(5e-4, 1e-2, 1, "lr"), log_uniform(1e-5, 1e-2, 1, "weight_decay")
    assert [float(v) for v in jobs["params.optim.lr"]] == pytest.approx([lr, lr])
    assert [float(v) for v in jobs["params.optim.weight_decay"]] == pytest.approx([wd, wd])
    assert set(jobs["params.schedule.name"]) == {"onecycle"}
    assert {float(v) for v in jobs["params.loss.tau"]} == {3.0}

    # The sweep's group_by tags the experiment: the report groups by layer without --by.
    report = _cli(["tradeoff-report", "layers_compared"], tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    pdf = tmp_path / "reports" / "layers_compared.pdf"
    assert pdf.stat().st_size > 0
    if not shutil.which("pdftotext"):
        return
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "Per model.layer" in text
    for layer in ("aol", "cayley"):
        assert f"{layer}: best test accuracy" in text
    assert "front of a model.layer" in text
