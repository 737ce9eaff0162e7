"""Experiments and sweep parent runs as users browse them in MLflow: experiment kind and
description, one parent per sweep (reopened, never left empty), summary metrics that agree
with the report. A real sqlite store, no training (the job runs are written directly)."""

from __future__ import annotations

import time

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from tradeoff import tracking
from tradeoff.report import hypervolume, load_runs
from tradeoff.tracking import (
    ADHOC_DESCRIPTION,
    close_parent_run,
    ensure_experiment,
    experiment_name,
    open_experiment,
    open_parent_run,
    runs_page,
    sweep_key,
)

KIND = ("mlflow.experimentKind", "custom_model_development")
NOTE = "mlflow.note.content"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One store for the module (creating a sqlite store takes seconds); each test its own
    experiments."""
    folder = tmp_path_factory.mktemp("store")
    return MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")


def _cfg(name=None, description=None, experiment=None, task=(), params=None):
    return OmegaConf.create(
        {
            "sweep": {"name": name, "description": description},
            "tracking": {"experiment": experiment},
            "hydra": {"overrides": {"task": list(task)}, "sweeper": {"params": params or {}}},
        }
    )


def _job(client, exp_id, parent, accuracy, certificate, status="FINISHED"):
    run = client.create_run(
        exp_id,
        tags={"tradeoff.role": "job", "mlflow.parentRunId": parent, "loss_family": "tau_cce"},
    )
    now = int(time.time() * 1000)
    metrics = {"test/accuracy": accuracy, "test/mean_certificate": certificate}
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, now, 1) for k, v in metrics.items()])
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_experiments_are_model_training_with_the_sweep_description(client):
    exp_id = open_experiment(client, _cfg("tau_grid", "tau on a log grid"))
    tags = client.get_experiment(exp_id).tags
    assert tags[KIND[0]] == KIND[1] and tags[NOTE] == "tau on a log grid"
    # An edited sweep file updates the note; a run outside the sweep keeps it.
    open_experiment(client, _cfg("tau_grid", "tau from 0.3 to 300"))
    open_experiment(client, _cfg(experiment="tau_grid"))
    assert client.get_experiment(exp_id).tags[NOTE] == "tau from 0.3 to 300"
    # An experiment made elsewhere (plain MLflow) is tagged when tradeoff first logs to it.
    plain = client.create_experiment("plain")
    assert ensure_experiment(client, "plain") == plain
    assert client.get_experiment(plain).tags[KIND[0]] == KIND[1]


def test_runs_outside_a_sweep_land_in_adhoc_with_its_description(client):
    cfg = _cfg()
    assert experiment_name(cfg) == tracking.ADHOC_EXPERIMENT == "adhoc"
    exp = client.get_experiment(open_experiment(client, cfg))
    assert exp.name == "adhoc" and exp.tags[NOTE] == ADHOC_DESCRIPTION
    assert experiment_name(_cfg(experiment="mine")) == "mine"
    assert experiment_name(_cfg("quick", experiment="mine")) == "mine"


def test_sweep_key_is_the_sweep_and_its_fixed_overrides():
    base = sweep_key(_cfg("quick", task=["+sweeps=quick"], params={"loss.tau": "3,30"}))
    same = [
        ["+sweeps=quick", "train.threads=1", "tracking.log_model=false", "hydra/launcher=joblib"],
        ["+sweeps=quick", "loss.tau=1,3,30"],  # a grown grid is the same sweep
        ["+sweeps=quick", "loss.tau=3"],
    ]
    for task in same:
        assert sweep_key(_cfg("quick", task=task, params={"loss.tau": "3,30"}))[0] == base[0]
    other, label = sweep_key(
        _cfg("quick", task=["+sweeps=quick", "data=mnist5k"], params={"loss.tau": "3,30"})
    )
    assert other != base[0] and label == "data=mnist5k"
    assert sweep_key(_cfg(task=["loss.tau=1,3"]))[0] != sweep_key(_cfg(task=["optim.lr=1,3"]))[0]


def test_a_sweep_run_is_reopened_and_gets_the_summary_of_its_jobs(client):
    exp_id = ensure_experiment(client, "quick")
    identity = {"sweep": "quick", "tradeoff.sweep_key": "k"}
    parent, created = open_parent_run(client, exp_id, identity, run_name="sweep quick", tags={})
    assert created
    points = [(0.9, 0.1), (0.8, 0.3), (0.7, 0.2), (0.5, 0.05)]
    for accuracy, certificate in points:
        _job(client, exp_id, parent, accuracy, certificate)
    _job(client, exp_id, parent, 0.99, 0.99, status="FAILED")  # not counted
    client.set_tag(parent, "error", "a job failed")
    close_parent_run(client, parent, "FAILED", experiment="quick", created=created)

    again, created = open_parent_run(client, exp_id, identity, run_name="sweep quick", tags={})
    assert (again, created) == (parent, False)
    run = client.get_run(parent)
    assert run.info.status == "RUNNING" and "error" not in run.data.tags
    close_parent_run(client, parent, "FINISHED", experiment="quick", created=created)

    uri = client.tracking_uri
    jobs = load_runs("quick", tracking_uri=uri, parent=parent)
    metrics = client.get_run(parent).data.metrics
    assert metrics["sweep/runs"] == 4
    assert metrics["sweep/front_runs"] == jobs["on_front"].sum() == 2
    assert metrics["sweep/hypervolume"] == pytest.approx(
        hypervolume(jobs, "test/mean_certificate", "test/accuracy")
    )
    assert metrics["sweep/best_test_accuracy"] == pytest.approx(0.9)
    assert metrics["sweep/best_test_mean_certificate"] == pytest.approx(0.3)
    assert client.get_run(parent).info.status == "FINISHED"


def test_a_new_sweep_run_that_trained_nothing_is_deleted(client):
    exp_id = ensure_experiment(client, "rerun")
    parent, created = open_parent_run(
        client, exp_id, {"sweep": "rerun"}, run_name="sweep quick", tags={}
    )
    close_parent_run(client, parent, "FINISHED", experiment="rerun", created=created)
    assert client.get_run(parent).info.lifecycle_stage == "deleted"
    assert client.search_runs([exp_id]) == []
    # A reopened parent stays, even when this invocation trained nothing.
    kept, _ = open_parent_run(client, exp_id, {"sweep": "rerun"}, run_name="sweep quick", tags={})
    _job(client, exp_id, kept, 0.9, 0.1)
    close_parent_run(client, kept, "FINISHED", experiment="rerun", created=True)
    again, created = open_parent_run(
        client, exp_id, {"sweep": "rerun"}, run_name="sweep quick", tags={}
    )
    close_parent_run(client, again, "FINISHED", experiment="rerun", created=created)
    assert again == kept and client.get_run(kept).info.lifecycle_stage == "active"


def test_runs_page_lists_every_run_in_model_training_mode():
    page = runs_page("sqlite:///mlflow.db", "7")
    assert page.startswith("http://127.0.0.1:5000/#/experiments/7/runs?")
    # Sorting by a metric lists child runs flat; the workflow type skips the GenAI pages.
    assert "workflowType=machine_learning" in page and "orderByKey=metrics." in page
    assert runs_page("https://mlflow.example:8443/", "7").startswith(
        "https://mlflow.example:8443/#/"
    )
