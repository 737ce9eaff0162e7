"""The report keeps degenerate and non-finite runs off the front, labels what tells front runs
apart, refuses unusable stores in one line within seconds, and leaves no temporary file."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from tradeoff.report import ReportError, build_report, load_runs
from tradeoff.report.cli import main
from tradeoff.report.frame import front_table, hyperparameters, varying_params

POPPLER = shutil.which("pdftotext") is not None


def _run(client, exp, name, params, metrics, tags=None):
    from mlflow.entities import Metric, Param

    run = client.create_run(
        exp,
        run_name=name,
        tags={"tradeoff.role": "job", "loss_family": "tau_cce", **(tags or {})},
    )
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 1) for k, v in metrics.items()])
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """`lr`: two tau=10 runs told apart by optim.lr, one degenerate (lr 1e3, at chance), one
    whose certificate was logged as +inf; `all_bad`: only a degenerate run."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("lr", artifact_location=str(folder / "artifacts"))
    base = {"loss.family": "tau_cce", "loss.tau": 10, "data.name": "digits", "train.threads": 1}
    ids = {
        "slow": _run(
            client,
            exp,
            "tau_cce tau=10",
            {**base, "optim.lr": 1e-4, "optim._target_": "torch.optim.Adam"},
            {"test/accuracy": 0.9, "test/mean_certificate": 0.2},
        ),
        "fast": _run(
            client,
            exp,
            "tau_cce tau=10",
            {**base, "optim.lr": 1e-2, "optim._target_": "torch.optim.SGD", "train.threads": 2},
            {"test/accuracy": 0.8, "test/mean_certificate": 0.5},
        ),
        "degenerate": _run(
            client,
            exp,
            "tau_cce tau=10",
            {**base, "optim.lr": 1e3, "optim._target_": "torch.optim.Adam"},
            {"test/accuracy": 0.097, "test/mean_certificate": 14.5},
            tags={"degenerate": "test accuracy 0.097 is at or below chance (0.1028)"},
        ),
        "infinite": _run(
            client,
            exp,
            "tau_cce tau=3",
            {**base, "loss.tau": 3, "optim.lr": 1e-4, "optim._target_": "torch.optim.Adam"},
            {"test/accuracy": 0.85, "test/mean_certificate": float("inf")},
        ),
    }
    bad = client.create_experiment("all_bad")
    _run(
        client,
        bad,
        "tau_cce tau=1",
        base,
        {"test/accuracy": 0.1, "test/mean_certificate": 9.0},
        tags={"degenerate": "a certificate of 9 exceeds the inputs' diameter 8"},
    )
    return folder, uri, ids


def test_degenerate_runs_are_left_out_unless_asked_for(store):
    _, uri, ids = store
    runs = load_runs("lr", tracking_uri=uri)
    assert ids["degenerate"] not in set(runs["run_id"])
    assert set(runs.loc[runs["on_front"], "run_id"]) == {ids["slow"], ids["fast"]}
    every = load_runs("lr", tracking_uri=uri, include_degenerate=True)
    row = every[every["run_id"] == ids["degenerate"]].iloc[0]
    assert row["degenerate"].startswith("test accuracy 0.097") and row["on_front"]
    with pytest.raises(ReportError, match="every FINISHED job run of experiment 'all_bad' is"):
        load_runs("all_bad", tracking_uri=uri)
    assert len(load_runs("all_bad", tracking_uri=uri, include_degenerate=True)) == 1


def test_a_metric_logged_as_infinite_is_skipped_not_drawn(store):
    _, uri, ids = store
    runs = load_runs("lr", tracking_uri=uri)
    row = runs[runs["run_id"] == ids["infinite"]].iloc[0]
    assert row["metrics.test/mean_certificate"] == float("inf") and not row["on_front"]


def test_front_labels_show_every_hyperparameter_that_differs(store):
    _, uri, ids = store
    runs = load_runs("lr", tracking_uri=uri)
    assert varying_params(runs) == ["optim._target_", "optim.lr"]  # not train.threads
    table = front_table(runs, "test/mean_certificate", "test/accuracy").set_index("run_id")
    assert table.loc[ids["slow"], "hyperparameters"] == "tau=10 optim=Adam lr=0.0001"
    assert table.loc[ids["fast"], "hyperparameters"] == "tau=10 optim=SGD lr=0.01"
    row = runs[runs["run_id"] == ids["slow"]].iloc[0]
    assert hyperparameters(row, greek=True, extra=["optim.lr"]) == "τ=10, lr=0.0001"
    clash = pd.Series({"loss_family": "kr", "params.model.width": 8, "params.data.width": 4})
    assert hyperparameters(clash, extra=["model.width", "data.width"]) == (
        "model.width=8 data.width=4"
    )


@pytest.mark.skipif(not POPPLER, reason="poppler-utils (pdftotext) not installed")
def test_summary_page_lists_the_degenerate_runs(store, tmp_path):
    _, uri, ids = store
    pdf = build_report(["lr"], tmp_path / "lr.pdf", tracking_uri=uri, attach=False)
    text = subprocess.run(
        ["pdftotext", "-f", "1", "-l", "1", str(pdf), "-"], capture_output=True, text=True
    ).stdout
    flat = " ".join(text.split())
    assert "1 degenerate, left out" in flat and ids["degenerate"] in flat
    assert "at or below chance" in flat and "--include-degenerate" in flat
    assert f"{ids['infinite']} tau_cce tau=3: no finite test/mean_certificate" in flat


def test_temporary_files_of_dead_reports_are_removed(store, tmp_path):
    _, uri, _ = store
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".lr.{dead.pid}~abc123.pdf.tmp"
    stale.write_text("half a report")
    alive = tmp_path / f".lr.{os.getpid()}~def456.pdf.tmp"
    alive.write_text("another report being written")
    mine = tmp_path / ".notes~1.txt.tmp"
    mine.write_text("not ours")
    build_report(["lr"], tmp_path / "lr.pdf", tracking_uri=uri, attach=False)
    assert not stale.exists() and alive.exists() and mine.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "lr.pdf",
        "lr_front.csv",
        "lr_front.png",
    ]


def _fails(capsys, args: list[str]) -> tuple[str, float]:
    start = time.monotonic()
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0], time.monotonic() - start


def test_unusable_stores_are_one_line_within_seconds(tmp_path, capsys):
    line, seconds = _fails(capsys, ["x", "--tracking-uri", "http://127.0.0.1:9"])
    assert "--tracking-uri='http://127.0.0.1:9' is unreachable" in line and seconds < 10
    damaged = tmp_path / "mlflow.db"
    damaged.write_bytes(b"this is not a database " * 100)
    line, _ = _fails(capsys, ["x", "--tracking-uri", f"sqlite:///{damaged}"])
    assert f"{str(damaged)!r} is damaged (file is not a database)" in line
    assert "move" in line and "--tracking-uri" in line
    other = tmp_path / "optuna.db"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE studies (id INTEGER)")
    line, _ = _fails(capsys, ["x", "--tracking-uri", f"sqlite:///{other}"])
    assert "is an SQLite database but not an MLflow store (its tables: studies)" in line
    line, _ = _fails(capsys, ["x", "--tracking-uri", "foo://bar"])
    assert "unknown scheme 'foo://'" in line
