"""Seed repeats folded into means with spreads, and the hypervolume of three objectives: against
brute force on synthetic frames, on a synthetic store, and through the real CLI on a real sweep
of 2 seeds × 2 configs."""

from __future__ import annotations

import itertools
import json
import sys

import numpy as np
import pandas as pd
import pytest
from test_report_cli import _cli, _pages, _pdftotext, needs_poppler

from tradeoff.report import ReportError, hypervolume, load_runs
from tradeoff.report.cli import main
from tradeoff.report.frame import (
    default_reference,
    front_table,
    nondominated,
    pareto_front,
    seed_repeats,
    spread_column,
    varying_params,
)
from tradeoff.report.summary import extra_objectives, summary_metrics, sweep_summary

X, Y, Z = "metrics.test/mean_certificate", "metrics.test/accuracy", "metrics.train/seconds"


def brute_hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Every cell of the grid the points' coordinates draw, counted when some point is at least
    its far corner in every (maximised) dimension."""
    axes = [sorted({r, *(float(v) for v in points[:, d] if v > r)}) for d, r in enumerate(ref)]
    total = 0.0
    for cell in itertools.product(*(itertools.pairwise(a) for a in axes)):
        far = np.array([hi for _, hi in cell])
        if any((p >= far).all() for p in points):
            total += float(np.prod([hi - lo for lo, hi in cell]))
    return total


def _runs(rows: list[dict]) -> pd.DataFrame:
    out = []
    for i, row in enumerate(rows):
        out.append(
            {
                "run_id": f"{i:032x}",
                "experiment": "e",
                "run_name": f"tau_cce tau={row['tau']:g}",
                "loss_family": "tau_cce",
                "config": f"c{row['tau']:g}",
                "params.loss.tau": row["tau"],
                "params.train.seed": row["seed"],
                X: row["cert"],
                Y: row["acc"],
                Z: row.get("seconds", 10.0),
            }
        )
    return pd.DataFrame(out)


def test_seed_repeats_are_one_row_of_means_and_spreads():
    runs = _runs(
        [
            {"tau": 3, "seed": 0, "acc": 0.80, "cert": 0.30, "seconds": 10},
            {"tau": 3, "seed": 1, "acc": 0.84, "cert": 0.20, "seconds": 14},
            {"tau": 30, "seed": 0, "acc": 0.90, "cert": 0.10},
            {"tau": 30, "seed": 1, "acc": 0.92, "cert": np.inf},  # ±inf: averaged without it
            {"tau": 100, "seed": 0, "acc": 0.95, "cert": 0.05},
        ]
    )
    folded = seed_repeats(runs)
    assert folded["seeds"].tolist() == [2, 2, 1]
    assert folded["run_id"].tolist() == runs["run_id"].iloc[[0, 2, 4]].tolist()
    assert folded["seed_run_ids"][0] == f"{runs['run_id'][0]},{runs['run_id'][1]}"
    assert folded[Y].tolist() == pytest.approx([0.82, 0.91, 0.95])
    assert folded[X].tolist() == pytest.approx([0.25, 0.10, 0.05])
    assert folded[Z].tolist() == pytest.approx([12.0, 10.0, 10.0])
    assert folded[spread_column(Y)][0] == pytest.approx(np.std([0.80, 0.84], ddof=1))
    assert folded[spread_column(X)][0] == pytest.approx(np.std([0.30, 0.20], ddof=1))
    assert np.isnan(folded[spread_column(X)][1]) and np.isnan(folded[spread_column(Y)][2])
    assert folded.iloc[2][[X, Y]].tolist() == runs.iloc[4][[X, Y]].tolist()  # one seed: as is
    # The front goes through the means: tau=3's mean (0.82, 0.25) and the others.
    assert pareto_front(folded, X, Y).tolist() == [True, True, True]
    assert hypervolume(folded, X, Y) == pytest.approx(
        brute_hypervolume(folded[[X, Y]].to_numpy(float), np.zeros(2))
    )
    # The seed tells repeats apart, not configs: labels leave it out once they are folded.
    assert "train.seed" in varying_params(runs) and "train.seed" not in varying_params(folded)
    table = front_table(folded, X, Y)
    assert table["seeds"].tolist() == [1, 2, 2]  # most accurate first
    assert table[spread_column(Y)].iloc[1] == pytest.approx(0.01414, abs=1e-4)


def test_runs_that_repeat_a_seed_or_another_experiment_are_not_folded():
    same_seed = _runs([{"tau": 3, "seed": 0, "acc": a, "cert": 0.2} for a in (0.8, 0.9)])
    assert seed_repeats(same_seed)["seeds"].tolist() == [1, 1]
    no_seed = same_seed.drop(columns="params.train.seed")
    assert seed_repeats(no_seed)[Y].tolist() == [0.8, 0.9]
    two_experiments = _runs([{"tau": 3, "seed": s, "acc": 0.8, "cert": 0.2} for s in (0, 1)])
    two_experiments.loc[1, "experiment"] = "other"
    assert seed_repeats(two_experiments)["seeds"].tolist() == [1, 1]


def test_runs_without_repeats_are_drawn_as_before():
    runs = _runs([{"tau": t, "seed": 0, "acc": a, "cert": c} for t, a, c in ((3, 0.8, 0.3),)])
    folded = seed_repeats(runs)
    assert folded["seeds"].tolist() == [1]
    assert folded.dtypes[X] == runs.dtypes[X] and folded.dtypes["params.loss.tau"] == "int64"
    assert "seeds" not in front_table(folded, X, Y)
    assert varying_params(folded) == varying_params(runs)


@pytest.mark.parametrize("seed", range(5))
def test_three_objective_hypervolume_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 7
    acc, cert, seconds = rng.random(n), rng.random(n), 1 + 9 * rng.random(n)
    runs = pd.DataFrame({X: cert, Y: acc, Z: seconds})
    ref = default_reference(runs, X, Y, Z)
    assert ref[:2] == (0.0, 0.0) and ref[2] == pytest.approx(1.1 * seconds.max())
    # Seconds are minimised: flipped, the reference is -ref and the points -seconds.
    flipped = np.column_stack([cert, acc, -seconds])
    expected = brute_hypervolume(flipped, np.array([0.0, 0.0, -ref[2]]))
    assert hypervolume(runs, X, Y, None, z=[Z]) == pytest.approx(expected, rel=1e-12)
    assert hypervolume(runs, X, Y, ref, z=[Z]) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ReportError, match=r"3 finite numbers, one per objective"):
        hypervolume(runs, X, Y, (0.0, 0.0), z=[Z])
    kept = nondominated(runs, (X, Y, Z)).to_numpy()
    for i in range(n):
        beaten = any(
            (flipped[j] >= flipped[i]).all() and (flipped[j] > flipped[i]).any() for j in range(n)
        )
        assert kept[i] == (not beaten)
    summary = summary_metrics(runs, z=["train/seconds"])
    assert summary["sweep/hypervolume"] == pytest.approx(expected, rel=1e-12)
    assert summary["sweep/hypervolume_2d"] == pytest.approx(hypervolume(runs, X, Y))


def test_a_study_objective_maps_to_its_test_metric_and_cost_stays():
    runs = pd.DataFrame({X: [0.1], Y: [0.9], Z: [3.0], "metrics.val/accuracy": [0.9]})
    objectives = "val/accuracy,val/mean_certificate,train/seconds"
    x, y = "test/mean_certificate", "test/accuracy"
    assert extra_objectives(objectives, runs, x, y) == ["train/seconds"]
    assert extra_objectives("val/accuracy,val/mean_certificate", runs, x, y) == []


def test_reference_must_have_one_value_per_objective(capsys):
    with pytest.raises(SystemExit) as info:
        main(["quick", "--z", "train/seconds", "--reference", "0", "0"])
    assert info.value.code == 2
    assert "--reference takes one value per objective, 3 here" in capsys.readouterr().err


def test_a_study_parent_with_a_cost_objective_gets_the_hypervolume_of_three(tmp_path):
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("study", artifact_location=str(tmp_path / "artifacts"))
    tags = {
        "tradeoff.role": "sweep",
        "optuna.objectives": "val/accuracy,val/mean_certificate,train/seconds",
    }
    parent = client.create_run(exp, tags=tags).info.run_id
    points = [(0.9, 0.1, 20.0), (0.8, 0.3, 30.0), (0.7, 0.2, 5.0), (0.6, 0.05, 40.0)]
    for i, (acc, cert, seconds) in enumerate(points):
        run = client.create_run(
            exp, tags={"tradeoff.role": "job", "mlflow.parentRunId": parent}
        ).info.run_id
        client.log_batch(run, params=[Param("loss.family", "tau_cce"), Param("loss.tau", str(i))])
        values = {"test/accuracy": acc, "test/mean_certificate": cert, "train/seconds": seconds}
        client.log_batch(run, metrics=[Metric(k, v, 0, 0) for k, v in values.items()])
        client.set_terminated(run, "FINISHED")
    metrics = sweep_summary("study", parent, uri)
    array = np.array(points)
    worst = 1.1 * array[:, 2].max()
    flipped = np.column_stack([array[:, 1], array[:, 0], -array[:, 2]])
    assert metrics["sweep/runs"] == 4
    assert metrics["sweep/hypervolume"] == pytest.approx(
        brute_hypervolume(flipped, np.array([0.0, 0.0, -worst])), rel=1e-12
    )
    assert metrics["sweep/hypervolume_2d"] == pytest.approx(
        brute_hypervolume(array[:, [1, 0]], np.zeros(2)), rel=1e-12
    )


# -- a real sweep: 2 configs × 2 seeds ---------------------------------------------------------


@pytest.fixture(scope="module")
def seeds_sweep(tmp_path_factory):
    """`tradeoff-sweep quick train.seed=0,1`: tau 3 and 30, each with seeds 0 and 1."""
    cwd = tmp_path_factory.mktemp("seeds")
    common = ["train.threads=1", "tracking.log_model=false", "train.epochs=2"]
    proc = _cli(["tradeoff-sweep", "quick", "train.seed=0,1", *common], cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd


@pytest.mark.slow
@needs_poppler
def test_seed_repeats_of_a_real_sweep_are_drawn_as_means_with_error_bars(seeds_sweep):
    cwd = seeds_sweep
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    runs = load_runs("quick", tracking_uri=uri)
    assert len(runs) == 4 and runs["config"].nunique() == 2
    assert runs.groupby("config")["params.train.seed"].apply(sorted).tolist() == [[0, 1]] * 2
    assert runs["tags.config_hash"].nunique() == 4  # the seed is part of what a run computes
    proc = _cli([sys.executable, "-m", "tradeoff.report.cli", "quick", "--z", "train/seconds"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pdf = cwd / "reports" / "quick.pdf"
    summary = " ".join(_pdftotext(pdf, 1).split())
    assert "4 FINISHED job runs (tau_cce 4)" in summary
    assert "(mean of 2 seeds, first " in summary
    assert "2 configs run with several seeds (4 runs)" in summary
    assert "3-d hypervolume" in summary
    means = runs.groupby("config")[["metrics.test/accuracy", "metrics.test/mean_certificate"]]
    table = pd.read_csv(cwd / "reports" / "quick_front.csv")
    assert (table["seeds"] == 2).all()
    for _, row in table.iterrows():
        config = runs.loc[runs["run_id"] == row["run_id"], "config"].item()
        assert row["test/accuracy"] == pytest.approx(means.mean().loc[config].iloc[0], abs=1e-6)
        spread = means.std(ddof=1).loc[config].iloc[0]
        assert row["std.test/accuracy"] == pytest.approx(spread, abs=1e-6)
    folded = seed_repeats(runs)
    hv = hypervolume(folded, X, Y)
    assert f"{hv:.4f}" in summary  # the front's hypervolume is that of the means
    hv3 = hypervolume(folded, X, Y, None, z=[Z])
    assert f"{hv3:.6g}" in summary
    assert "one point at their mean, error bars ± 1 std" in " ".join(_pdftotext(pdf, 2).split())
    assert "±" in _pdftotext(pdf, 7)
    assert _pages(pdf) == 8
    # The sweep's parent run: the same front over the means (it has no third objective).
    parent = json.loads(
        next((cwd / "multirun" / "quick").glob("*/mlflow_parent_run.json")).read_text()
    )["run_id"]
    from mlflow.tracking import MlflowClient

    logged = MlflowClient(uri).get_run(parent).data.metrics
    assert logged["sweep/runs"] == 4
    assert logged["sweep/front_runs"] == pareto_front(folded, X, Y).sum()
    assert logged["sweep/hypervolume"] == pytest.approx(hv)
