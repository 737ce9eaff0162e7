"""End to end through the real CLI: Hydra multirun → training → MLflow sqlite store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sqlite_peek import query

pytestmark = pytest.mark.slow


def _cli(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRADEOFF_TEST_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def quick_sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sweep")
    proc = _cli(["tradeoff-sweep", "quick", "train.threads=1"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, proc


def _runs(uri: str, experiment: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])


def test_quick_sweep_logs_parent_and_children(quick_sweep):
    cwd, _ = quick_sweep
    assert (cwd / "mlflow.db").exists()  # MLflow's default store, where the command ran
    runs = _runs(f"sqlite:///{cwd / 'mlflow.db'}", "quick")
    parents = runs[runs["tags.tradeoff.role"] == "sweep"]
    children = runs[runs["tags.tradeoff.role"] == "job"]
    assert len(parents) == 1 and len(children) == 2
    assert set(runs["status"]) == {"FINISHED"}
    assert set(children["tags.mlflow.parentRunId"]) == {parents["run_id"].iloc[0]}
    assert sorted(children["params.loss.tau"].astype(float)) == [3.0, 30.0]
    assert set(
        children["tags.run_name" if "tags.run_name" in children else "tags.mlflow.runName"]
    ) == {
        "tau_cce tau=3",
        "tau_cce tau=30",
    }
    for column, value in {
        "params.data.name": "digits",
        "params.model.name": "seed_conv",
        "tags.loss_family": "tau_cce",
        "tags.dataset": "digits",
        "tags.sweep": "quick",
    }.items():
        assert set(children[column]) == {value}
    assert children["tags.config_hash"].nunique() == 2
    for metric in ("test/accuracy", "val/accuracy", "test/cra_eps_0.5", "train/loss"):
        assert children[f"metrics.{metric}"].between(0, 10).all(), metric
    assert children["metrics.test/accuracy"].min() > 0.3
    assert (children["metrics.test/mean_certificate"] > 0).all()
    assert (
        children["metrics.test/mean_certificate_correct"]
        <= children["metrics.test/mean_certificate"] + 1e-9
    ).all()


def test_logged_model_reproduces_logged_accuracy(quick_sweep):
    cwd, _ = quick_sweep
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    runs = _runs(uri, "quick")
    child = runs[runs["tags.tradeoff.role"] == "job"].iloc[0]
    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model(f"runs:/{child['run_id']}/model")
    vanilla = mlflow.pytorch.load_model(f"runs:/{child['run_id']}/vanilla")
    from tradeoff.data import load_dataset

    data = load_dataset("digits", val_size=0.1, seed=0)
    for m in (model, vanilla):
        acc = float((m.eval()(data.test.x).argmax(1) == data.test.y).float().mean())
        assert acc == pytest.approx(child["metrics.test/accuracy"], abs=1e-6)
    client = MlflowClient(uri)
    arts = {a.path for a in client.list_artifacts(child["run_id"])}
    assert {"config.yaml", "certificates"} <= arts
    local = client.download_artifacts(child["run_id"], "certificates/test.parquet", str(cwd))
    certs = pd.read_parquet(local)
    assert len(certs) == len(data.test.y)
    assert certs["correct"].mean() == pytest.approx(child["metrics.test/accuracy"], abs=1e-6)
    assert certs["certificate"].mean() == pytest.approx(
        child["metrics.test/mean_certificate"], rel=1e-5
    )


def test_experiment_and_parent_run_as_the_mlflow_ui_shows_them(quick_sweep):
    """The experiment opens on training runs with the sweep's description; the parent run holds
    the sweep's summary metrics (what the collapsed runs table and the chart view show)."""
    cwd, _ = quick_sweep
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    experiment = MlflowClient(uri).get_experiment_by_name("quick")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    from tradeoff.sweep import available

    assert experiment.tags["mlflow.note.content"] == available()["quick"]
    runs = _runs(uri, "quick")
    parent = runs[runs["tags.tradeoff.role"] == "sweep"].iloc[0]
    children = runs[runs["tags.tradeoff.role"] == "job"]
    assert parent["metrics.sweep/runs"] == 2
    assert parent["metrics.sweep/best_test_accuracy"] == children["metrics.test/accuracy"].max()
    assert parent["metrics.sweep/best_test_mean_certificate"] == pytest.approx(
        children["metrics.test/mean_certificate"].max()
    )
    assert 1 <= parent["metrics.sweep/front_runs"] <= 2
    assert 0 < parent["metrics.sweep/hypervolume"] <= 1


def test_rerun_reopens_the_parent_and_the_report_attaches_to_it(quick_sweep):
    cwd, _ = quick_sweep
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    before = _runs(uri, "quick")
    again = _cli(["tradeoff-sweep", "quick", "train.threads=1"], cwd)
    assert again.returncode == 0, again.stderr[-3000:]
    runs = _runs(uri, "quick")
    assert len(runs) == len(before)  # no second, empty parent run
    parent = runs[runs["tags.tradeoff.role"] == "sweep"]
    assert list(parent["run_id"]) == list(
        before.loc[before["tags.tradeoff.role"] == "sweep", "run_id"]
    )
    assert parent["status"].item() == "FINISHED"
    assert "browse the runs: http://127.0.0.1:5000/#/experiments/" in again.stdout + again.stderr
    report = _cli(["tradeoff-report", "quick"], cwd)
    assert report.returncode == 0, report.stderr[-3000:]
    run_id = parent["run_id"].item()
    assert f"attached to sweep run {run_id}" in report.stdout
    attached = {a.path for a in MlflowClient(uri).list_artifacts(run_id, "report")}
    assert attached == {"report/quick.pdf", "report/quick_front.png", "report/quick_front.csv"}


def test_a_single_run_lands_in_the_adhoc_experiment(tmp_path):
    args = ["data=digits", "train.epochs=1", "train.threads=1", "tracking.log_model=false"]
    proc = _cli(["tradeoff-train", *args], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = MlflowClient(uri).get_experiment_by_name("adhoc")
    assert experiment.tags["mlflow.note.content"].startswith("Runs of `tradeoff-train`")
    runs = _runs(uri, "adhoc")
    assert list(runs["status"]) == ["FINISHED"] and list(runs["tags.tradeoff.role"]) == ["job"]


def test_bad_override_fails_early_and_leaves_no_running_run(tmp_path):
    proc = _cli(["tradeoff-train", "data=digits", "loss.tau=-1"], tmp_path)
    assert proc.returncode != 0
    assert "tau" in proc.stderr and "> 0" in proc.stderr
    db = tmp_path / "mlflow.db"
    if db.exists():
        runs = _runs(f"sqlite:///{db}", "adhoc")
        assert "RUNNING" not in set(runs.get("status", []))


def test_unknown_model_option_lists_valid_options(tmp_path):
    proc = _cli(["tradeoff-train", "data=digits", "model.activation=gelu"], tmp_path)
    assert proc.returncode != 0
    assert "activation must be one of" in proc.stderr
    assert "groupsort2" in proc.stderr


def test_sweep_list_and_unknown_sweep(tmp_path):
    proc = _cli(["tradeoff-sweep", "--list"], tmp_path)
    assert proc.returncode == 0
    for name in ("seed_table", "tau_grid", "hkr_grid", "quick", "optuna_pareto"):
        assert name in proc.stdout
    proc = _cli(["tradeoff-sweep", "nope"], tmp_path)
    assert proc.returncode != 0 and "available" in proc.stderr


def test_module_entry_point_runs(tmp_path):
    proc = _cli([sys.executable, "-m", "tradeoff.train", "--help"], tmp_path)
    assert proc.returncode == 0


def _job_statuses(db: Path) -> list[str]:
    """Statuses of a sweep's job runs, read straight from MLflow's sqlite file."""
    rows = query(
        db,
        "SELECT r.status FROM runs r JOIN tags t ON r.run_uuid = t.run_uuid "
        "WHERE t.key = 'tradeoff.role' AND t.value = 'job'",
    )
    return [status for (status,) in rows]


def test_killed_sweep_resumes_without_duplicates(tmp_path):
    """SIGKILL a grid sweep mid-job, run it again: only the missing jobs train."""
    import signal
    import time

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = [
        "tradeoff-sweep",
        "quick",
        "loss.tau=1,3,30",
        "train.threads=1",
        "train.epochs=12",
        "tracking.log_model=false",
    ]
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    deadline = time.time() + 300
    killed = False
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        # A direct read-only query: an MLflow search takes longer than a whole job under load.
        statuses = _job_statuses(tmp_path / "mlflow.db")
        if statuses.count("FINISHED") >= 1 and statuses.count("RUNNING") == 1:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
    proc.wait(timeout=60)
    assert killed, "the sweep finished before it could be killed mid-job"
    checkpointed = any((tmp_path / "checkpoints").rglob("*.pt"))  # an epoch of it was done
    before = _runs(uri, "quick")
    done_before = set(before.loc[before["status"] == "FINISHED", "tags.config_hash"].dropna())

    again = _cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skipping: this config already has FINISHED run" in again.stdout
    runs = _runs(uri, "quick")
    jobs = runs[runs["tags.tradeoff.role"] == "job"]
    finished = jobs[jobs["status"] == "FINISHED"]
    assert len(finished) == 3
    assert finished["tags.config_hash"].is_unique  # nothing finished was trained twice
    assert done_before <= set(finished["tags.config_hash"])
    assert "RUNNING" not in set(runs["status"])
    if checkpointed:  # the killed job went on from its checkpoint, in its own run
        assert len(jobs) == 3 and (jobs["tags.tradeoff.resumed"] == "1").sum() == 1
    else:  # killed before its first checkpoint: its run was marked FAILED, a new one trained
        assert (jobs["status"] == "FAILED").sum() == 1


def test_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    proc = _cli(
        [
            "tradeoff-train",
            "-m",
            "data=digits",
            "model.layer=plain",
            "optim=sgd",
            "optim.lr=1e30,1e-2",  # the first job diverges to NaN, the second trains
            "train.epochs=1",
            "train.threads=1",
            "tracking.log_model=false",
            "tracking.experiment=fails",
        ],
        tmp_path,
    )
    assert proc.returncode != 0  # the multirun reports its failed job
    runs = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "fails")
    jobs = runs[runs["tags.tradeoff.role"] == "job"].set_index("params.optim.lr")
    assert jobs.loc["1e+30", "status"] == "FAILED"
    assert "nan" in jobs.loc["1e+30", "tags.error"]
    assert jobs.loc["0.01", "status"] == "FINISHED"
    parent = runs[runs["tags.tradeoff.role"] == "sweep"]
    assert list(parent["status"]) == ["FAILED"]  # closed, and says a job failed
    assert "RUNNING" not in set(runs["status"])
