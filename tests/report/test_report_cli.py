"""The report from MLflow stores: a synthetic store in the jobs' schema (fast) and a real
`digits` sweep (slow); the error cases leave no PDF behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradeoff.report import PAGE_TITLES, ReportError, build_report, load_runs
from tradeoff.report.cli import main

EPS = (0.1411764706, 0.2823529412, 0.5, 1.0, 1.58)
POPPLER = shutil.which("pdftotext") and shutil.which("pdfinfo")
needs_poppler = pytest.mark.skipif(not POPPLER, reason="poppler-utils (pdftotext) not installed")


# -- a synthetic store in the schema tradeoff jobs write ---------------------------------------


def _job(
    client,
    exp_id,
    parent,
    family,
    hp,
    *,
    seed,
    metrics=True,
    certificates=True,
    status="FINISHED",
    drop=(),
    data="digits",
):
    from mlflow.entities import Metric, Param

    rng = np.random.default_rng(seed)
    name = family + "".join(f" {k}={v:g}" for k, v in hp.items())
    run = client.create_run(
        exp_id,
        run_name=name,
        tags={
            "tradeoff.role": "job",
            "mlflow.parentRunId": parent,
            "loss_family": family,
            "dataset": data,
            "model": "seed_conv",
            "git_commit": "0123456789abcdef",
        },
    )
    run_id = run.info.run_id
    keys = {"tau": "loss.tau", "m": "loss.min_margin", "a": "loss.alpha"}
    params = {
        "loss.family": family,
        "data.name": data,
        "model.name": "seed_conv",
        "train.epochs": "2",
        "eval.eps": json.dumps(list(EPS)),
        **{keys[k]: str(float(v)) for k, v in hp.items()},
    }
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    if metrics:
        robust = rng.random()
        n = 200
        correct = rng.random(n) < 0.95 - 0.5 * robust
        cert = rng.exponential(0.05 + 0.4 * robust, n)
        now = int(time.time() * 1000)
        values = {"test/accuracy": correct.mean(), "test/mean_certificate": cert.mean()}
        values.update({f"test/cra_eps_{e:g}": ((cert > e) & correct).mean() for e in EPS})
        batch = [Metric(k, float(v), now, 2) for k, v in values.items() if k not in drop]
        for epoch in (1, 2):
            batch += [
                Metric("val/accuracy", correct.mean() * epoch / 2, now, epoch),
                Metric("val/mean_certificate", cert.mean() * epoch / 2, now, epoch),
            ]
        client.log_batch(run_id, metrics=batch)
        if certificates:
            frame = pd.DataFrame(
                {"label": 0, "prediction": 0, "correct": correct, "certificate": cert}
            )
            folder = Path(client.tracking_uri.removeprefix("sqlite:///")).parent / "tmp_art"
            folder.mkdir(exist_ok=True)
            frame.to_parquet(folder / "test.parquet")
            client.log_artifact(run_id, str(folder / "test.parquet"), "certificates")
    client.set_terminated(run_id, status)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """sqlite store with `synth` (two sweeps, a skipped and a FAILED run), `only_failed`,
    `deleted_exp`; returns (folder, uri, facts)."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("synth", artifact_location=str(folder / "artifacts"))
    sweep = client.create_run(exp, run_name="sweep", tags={"tradeoff.role": "sweep"}).info.run_id
    jobs = [
        _job(client, exp, sweep, "tau_cce", {"tau": t}, seed=i, certificates=i != 0)
        for i, t in enumerate((1, 3, 10, 30))
    ]
    jobs += [
        _job(client, exp, sweep, "hkr", {"m": m, "a": 30}, seed=10 + i)
        for i, m in enumerate((0.1, 1))
    ]
    skipped = _job(
        client, exp, sweep, "tau_cce", {"tau": 100}, seed=20, drop=("test/mean_certificate",)
    )
    failed = _job(client, exp, sweep, "hkr", {"m": 3, "a": 5}, seed=21, status="FAILED")
    client.set_terminated(sweep, "FINISHED")
    other = client.create_run(exp, run_name="sweep 2", tags={"tradeoff.role": "sweep"})
    other_job = _job(client, exp, other.info.run_id, "tau_cce", {"tau": 0.3}, seed=30)
    only_failed = client.create_experiment("only_failed")
    parent = client.create_run(only_failed, tags={"tradeoff.role": "sweep"}).info.run_id
    _job(client, only_failed, parent, "kr", {}, seed=40, status="FAILED", metrics=False)
    client.delete_experiment(client.create_experiment("deleted_exp"))
    facts = {
        "sweep": sweep,
        "jobs": jobs,
        "skipped": skipped,
        "failed": failed,
        "other_sweep": other.info.run_id,
        "other_job": other_job,
    }
    return folder, uri, facts


def _pdftotext(pdf: Path, page: int) -> str:
    return subprocess.run(
        ["pdftotext", "-f", str(page), "-l", str(page), "-layout", str(pdf), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _pages(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    return int(
        next(line.split()[-1] for line in info.stdout.splitlines() if line.startswith("Pages:"))
    )


def test_load_runs_one_row_per_finished_job(store):
    _, uri, facts = store
    runs = load_runs("synth", tracking_uri=uri)
    assert set(runs["run_id"]) == {*facts["jobs"], facts["skipped"], facts["other_job"]}
    assert set(runs["status"]) == {"FINISHED"} and set(runs["experiment"]) == {"synth"}
    assert runs["params.loss.tau"].dtype.kind == "f"  # params made numeric where they are
    assert not pd.api.types.is_numeric_dtype(runs["params.eval.eps"])  # JSON lists stay text
    assert runs["on_front"].dtype == bool
    assert not runs.loc[runs["run_id"] == facts["skipped"], "on_front"].item()
    for column in ("run_name", "loss_family", "metrics.test/accuracy", "tags.git_commit"):
        assert runs[column].notna().all(), column
    only = load_runs("synth", tracking_uri=uri, parent=facts["other_sweep"])
    assert only["run_id"].tolist() == [facts["other_job"]]


@needs_poppler
def test_report_pages_from_synthetic_store(store, tmp_path):
    _, uri, facts = store
    pdf = build_report(["synth"], tmp_path / "out" / "synth.pdf", tracking_uri=uri)
    assert _pages(pdf) == len(PAGE_TITLES)
    summary = " ".join(_pdftotext(pdf, 1).split())
    assert facts["skipped"] in summary  # skipped runs are listed, not silently dropped
    assert "1 FAILED" in summary and "reference point (0, 0)" in summary
    # Front runs without certificate artifact are named on the radius page.
    front = load_runs("synth", tracking_uri=uri)
    front_ids = front.loc[front["on_front"], "run_id"].tolist()
    if facts["jobs"][0] in front_ids:
        assert facts["jobs"][0][:8] in _pdftotext(pdf, 5)
    table = _pdftotext(pdf, 7)
    assert all(run_id in table for run_id in front_ids)
    csv = pd.read_csv(tmp_path / "out" / "synth_front.csv")
    assert sorted(csv["run_id"]) == sorted(front_ids)
    assert (tmp_path / "out" / "synth_front.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "synth.pdf",
        "synth_front.csv",
        "synth_front.png",
    ]


def test_report_is_attached_to_the_sweep_runs_it_draws(store, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    _, uri, facts = store
    client = MlflowClient(uri)

    def attached(run_id: str) -> set[str]:
        return {a.path for a in client.list_artifacts(run_id, "report")}

    main(["synth", "--tracking-uri", uri, "--out", str(tmp_path / "all.pdf")])
    printed = capsys.readouterr().out
    names = {"report/all.pdf", "report/all_front.png", "report/all_front.csv"}
    for parent in (facts["sweep"], facts["other_sweep"]):
        assert f"attached to sweep run {parent}" in printed
        assert names <= attached(parent)
    only = facts["other_sweep"]
    main(["synth", "--tracking-uri", uri, "--out", str(tmp_path / "one.pdf"), "--parent", only])
    assert "report/one.pdf" in attached(only) and "report/one.pdf" not in attached(facts["sweep"])
    capsys.readouterr()
    main(["synth", "--tracking-uri", uri, "--out", str(tmp_path / "none.pdf"), "--no-attach"])
    assert "attached to" not in capsys.readouterr().out
    assert not any("none" in path for path in attached(facts["sweep"]) | attached(only))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "experiment 'nope' not found"),
        (["only_failed"], "experiment 'only_failed' has no FINISHED job runs (job runs: 1 FAILED)"),
        (["deleted_exp"], "experiment 'deleted_exp' is deleted"),
        (["synth", "--x", "test/nope"], "no run has metric 'test/nope'"),
        (["synth", "--y", "val/nope"], "no run has metric 'val/nope'"),
        (["synth", "--parent", "0" * 32], f"parent run '{'0' * 32}' not found"),
        (["synth", "nope"], "experiment 'nope' not found"),
    ],
)
def test_errors_exit_non_zero_with_a_message_and_no_pdf(store, tmp_path, capsys, args, message):
    _, uri, _ = store
    out = tmp_path / "reports"
    out.mkdir()
    with pytest.raises(SystemExit) as exc:
        main([*args, "--tracking-uri", uri, "--out", str(out / "r.pdf")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("tradeoff-report: error: ") and message in err
    assert list(out.iterdir()) == []  # not even a temporary file


def test_unwritable_out_folder_is_named_before_any_drawing(store, tmp_path, capsys):
    _, uri, _ = store
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--tracking-uri", uri, "--out", str(blocker / "r.pdf")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tradeoff-report: error: --out='{blocker / 'r.pdf'}'")
    assert "writable folder" in err and len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "not a folder"


def test_where_keeps_one_dataset_and_mixed_datasets_are_flagged(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("mixed", artifact_location=str(tmp_path / "artifacts"))
    sweep = client.create_run(exp, tags={"tradeoff.role": "sweep"}).info.run_id
    ids = {
        data: [
            _job(client, exp, sweep, "tau_cce", {"tau": t}, seed=i, data=data)
            for i, t in enumerate((1, 10))
        ]
        for data in ("digits", "fashion_mnist")
    }
    args = ["mixed", "--tracking-uri", uri, "--no-attach"]
    main([*args, "--out", str(tmp_path / "all.pdf")])
    out = capsys.readouterr().out
    assert "2 datasets (digits, fashion_mnist)" in out and "--where data.name=" in out
    assert len(load_runs("mixed", uri)) == 4

    main([*args, "--where", "data.name=fashion_mnist", "--out", str(tmp_path / "f.pdf")])
    assert "datasets" not in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "f_front.csv")
    assert set(table["run_id"]) <= set(ids["fashion_mnist"])
    runs = load_runs("mixed", uri, where={"data.name": "fashion_mnist"})
    assert sorted(runs["run_id"]) == sorted(ids["fashion_mnist"])

    with pytest.raises(SystemExit) as exit_:
        main([*args, "--where", "data.name=cifar10"])
    assert exit_.value.code == 1
    assert "no FINISHED job runs with data.name=cifar10" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--where", "data.name"])
    assert exit_.value.code == 2
    assert "is not PARAM=VALUE" in capsys.readouterr().err


def test_missing_store_is_an_error_not_a_new_database(tmp_path):
    with pytest.raises(ReportError, match="no MLflow store"):
        load_runs("quick", tracking_uri=f"sqlite:///{tmp_path / 'absent.db'}")
    assert not (tmp_path / "absent.db").exists()


def test_the_report_opens_its_store_as_runs_do(tmp_path):
    """Through tracking.open_client: with the lock that serialises a sqlite store's migration."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("one", artifact_location=str(tmp_path / "artifacts"))
    sweep = client.create_run(exp, tags={"tradeoff.role": "sweep"}).info.run_id
    _job(client, exp, sweep, "tau_cce", {"tau": 3}, seed=0, certificates=False)
    assert not (tmp_path / "mlflow.db.lock").exists()
    assert len(load_runs("one", tracking_uri=uri)) == 1
    assert (tmp_path / "mlflow.db.lock").exists()


def test_failed_rendering_leaves_the_old_report_alone(store, tmp_path, monkeypatch):
    _, uri, _ = store
    pdf = tmp_path / "r.pdf"
    pdf.write_bytes(b"old report")
    from tradeoff.report.pages import curves

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(curves, "page_curves", broken)
    with pytest.raises(RuntimeError, match="drawing failed"):
        build_report("synth", pdf, tracking_uri=uri)
    assert pdf.read_bytes() == b"old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.pdf"]


# -- a real sweep on digits --------------------------------------------------------------------


def _cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRADEOFF_TEST_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def digits_sweep(tmp_path_factory):
    """`tradeoff-sweep quick` (2 tau_cce runs) plus 2 HKR runs in the same experiment."""
    cwd = tmp_path_factory.mktemp("digits")
    common = ["train.threads=1", "tracking.log_model=false"]
    proc = _cli(["tradeoff-sweep", "quick", *common], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _cli(
        [
            "tradeoff-train",
            "-m",
            "data=digits",
            "train.epochs=1",
            "optim.lr=3e-3",
            "train.batch_size=128",
            "tracking.experiment=quick",
            "loss=hkr",
            "loss.min_margin=0.1,1",
            "loss.alpha=10",
            *common,
        ],
        cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd


@pytest.mark.slow
@needs_poppler
def test_report_from_a_real_digits_sweep(digits_sweep):
    cwd = digits_sweep
    proc = _cli([sys.executable, "-m", "tradeoff.report.cli", "quick"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pdf = cwd / "reports" / "quick.pdf"
    assert _pages(pdf) == 8  # the seven pages, then the cost page: the runs logged their cost
    for page, title in enumerate(PAGE_TITLES, start=1):
        assert title in _pdftotext(pdf, page), (page, title)
    assert "Accuracy and robustness vs training cost" in _pdftotext(pdf, 8)
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    runs = load_runs("quick", tracking_uri=uri)
    assert len(runs) == 4 and set(runs["loss_family"]) == {"tau_cce", "hkr"}
    front = runs.loc[runs["on_front"], "run_id"].tolist()
    table = _pdftotext(pdf, 7)
    assert front and all(run_id in table for run_id in front)
    assert sorted(pd.read_csv(cwd / "reports" / "quick_front.csv")["run_id"]) == sorted(front)
    assert "no HKR runs" not in _pdftotext(pdf, 4)  # the HKR grid is drawn
    assert "no per-sample certificate artifact" not in _pdftotext(pdf, 5)
    png = (cwd / "reports" / "quick_front.png").read_bytes()
    assert png[:4] == b"\x89PNG"


@pytest.mark.slow
def test_parent_restricts_the_report_to_one_sweep(digits_sweep, tmp_path):
    cwd = digits_sweep
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    runs = load_runs("quick", tracking_uri=uri)
    sweep_parent = json.loads(
        next((cwd / "multirun" / "quick").glob("*/mlflow_parent_run.json")).read_text()
    )["run_id"]
    mine = load_runs("quick", tracking_uri=uri, parent=sweep_parent)
    assert len(mine) == 2 and set(mine["params.loss.tau"]) == {3.0, 30.0}
    assert set(mine["run_id"]) < set(runs["run_id"])
    pdf = build_report("quick", tmp_path / "one.pdf", tracking_uri=uri, parent=sweep_parent)
    assert pdf.exists()


def test_the_sweeps_group_by_is_the_reports_default_and_by_overrides_it(tmp_path):
    from mlflow.tracking import MlflowClient

    from tradeoff.report.frame import select_runs
    from tradeoff.tracking import ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    grouped = ensure_experiment(client, "grouped", "by layer", group_by="model.layer")
    plain = ensure_experiment(client, "plain", "by loss")
    for exp in (grouped, plain):
        sweep = client.create_run(exp, tags={"tradeoff.role": "sweep"}).info.run_id
        for i, t in enumerate((1, 10)):
            _job(client, exp, sweep, "tau_cce", {"tau": t}, seed=i)
    assert select_runs("grouped", uri).group_by == "model.layer"
    assert select_runs("plain", uri).group_by is None
    assert select_runs(["grouped", "plain"], uri).group_by is None  # they disagree
    assert select_runs(["grouped", "grouped"], uri).group_by == "model.layer"
