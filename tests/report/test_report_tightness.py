"""The report's summary page shows how loose the runs' certificates are (`test/bound_tightness`),
from the runs that logged it."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from test_report_cli import _job

from tradeoff.report import build_report

pytestmark = pytest.mark.skipif(
    not shutil.which("pdftotext"), reason="poppler-utils (pdftotext) not installed"
)


def _summary(pdf) -> str:
    out = subprocess.run(
        ["pdftotext", "-f", "1", "-l", "1", "-layout", str(pdf), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return " ".join(out.split())


def test_summary_page_shows_the_bound_tightness_of_the_runs(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    for name, tightness in (("measured", (1.02, 1.9, 4.5)), ("older", None)):
        exp = client.create_experiment(name, artifact_location=str(tmp_path / name))
        sweep = client.create_run(exp, tags={"tradeoff.role": "sweep"}).info.run_id
        for i, tau in enumerate((1, 3, 10)):
            run_id = _job(client, exp, sweep, "tau_cce", {"tau": tau}, seed=i)
            if tightness:
                client.log_metric(run_id, "test/bound_tightness", tightness[i], step=2)
        client.set_terminated(sweep, "FINISHED")
    # runs that did not log it (older runs) are left out of the figures, not counted as zero
    both = _summary(build_report(["measured", "older"], tmp_path / "r.pdf", tracking_uri=uri))
    assert "Bound tightness median 1.9x, range 1.02–4.5 over 3 runs" in both
