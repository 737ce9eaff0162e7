"""Real processes, real signals (issue 16): SIGTERM and SIGINT end a run, a grid or an Optuna
study in one line with every run closed; a launcher's workers stop when the sweep process
dies; two identical sweeps at once train each config once; a bad store or objective is refused
in one line before any training. Each test inspects MLflow's sqlite file afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from sqlite_peek import query

from tradeoff.watchdog import pid_alive

pytestmark = pytest.mark.slow

FAST = ["data=digits", "train.threads=1", "train.batch_size=64", "tracking.log_model=false"]
# A job long enough to be caught training (digits: about 1 s an epoch on one thread).
LONG = [*FAST, "train.epochs=40"]
STOPPED = "stopped by {}; runs in progress are marked KILLED"
CHECKPOINTED = (
    "stopped by {}; runs in progress are checkpointed and marked KILLED: the same command "
    "resumes them"
)


def _env() -> dict[str, str]:
    env = {**os.environ, "TRADEOFF_TEST_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for key in ("MLFLOW_TRACKING_URI", "TRADEOFF_PARENT_RUN_ID", "HYDRA_FULL_ERROR"):
        env.pop(key, None)
    return env


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _runs(db: Path) -> list[dict[str, str]]:
    """Every run in MLflow's sqlite file: status, name and tags, read without MLflow."""
    rows = query(db, "SELECT run_uuid, name, status, lifecycle_stage FROM runs")
    runs = []
    for run_id, name, status, stage in rows:
        tags = dict(query(db, "SELECT key, value FROM tags WHERE run_uuid = ?", run_id))
        runs.append({"id": run_id, "name": name, "status": status, "stage": stage, **tags})
    return runs


def _jobs(db: Path, status: str | None = None) -> list[dict[str, str]]:
    jobs = [r for r in _runs(db) if r.get("tradeoff.role") == "job" and r["stage"] == "active"]
    return [r for r in jobs if status is None or r["status"] == status]


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"exited {proc.returncode} first:\n{(out + err)[-3000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _training(db: Path, count: int = 1):
    """Until `count` job runs are RUNNING and have logged an epoch (so their fit is under way)."""

    def ready() -> bool:
        running = {r["id"] for r in _jobs(db, "RUNNING")}
        logged = {
            run_id
            for (run_id,) in query(db, "SELECT DISTINCT run_uuid FROM metrics WHERE step >= 1")
        }
        return len(running & logged) >= count

    return ready


def _stop(proc: subprocess.Popen, sig: signal.Signals) -> tuple[int, float, list[str]]:
    """Send `sig` to the process alone; (exit code, seconds to exit, stderr's own lines)."""
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    seconds = time.monotonic() - sent
    assert "Traceback" not in out + err, (out + err)[-3000:]
    # MLflow and Optuna log their INFO records to stderr too ("Creating initial MLflow
    # database tables", "[I ...] A new study created"): not the command's own lines.
    lines = [
        ln
        for ln in err.splitlines()
        if ln.strip() and " INFO mlflow." not in ln and not ln.startswith("[I ")
    ]
    return proc.returncode, seconds, lines


def _stop_a_run(args: list[str], cwd: Path, sig: signal.Signals, line: str) -> dict[str, str]:
    """Start `tradeoff-train`, send `sig` once it trains: it exits within 5 s with 128 + sig,
    printing `line` alone, its run KILLED by the signal; returns the run."""
    proc = _start(["tradeoff-train", *args], cwd)
    db = cwd / "mlflow.db"
    _wait_for(_training(db), proc)
    code, seconds, lines = _stop(proc, sig)
    assert code == 128 + sig and seconds < 5
    assert lines == [f"tradeoff-train: {line.format(sig.name)}"]
    (job,) = _jobs(db)
    assert job["status"] == "KILLED" and job["error"] == f"Interrupted: stopped by {sig.name}"
    return job


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_run_in_one_line_and_marks_it_killed(tmp_path, sig):
    """Without checkpoints (train.checkpoint_dir=null) the signal stops the run at once."""
    _stop_a_run([*LONG, "train.checkpoint_dir=null"], tmp_path, sig, STOPPED)


def _steps(db: Path, run_id: str, key: str) -> list[int]:
    rows = query(db, "SELECT step FROM metrics WHERE run_uuid = ? AND key = ?", run_id, key)
    return sorted(step for (step,) in rows)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stopped_run_resumes_in_the_same_mlflow_run(tmp_path, sig):
    """SIGTERM, or SLURM's advance notice SIGUSR1, mid-training: the run is checkpointed and
    KILLED; the same command goes on from the checkpoint in the same run, whose epochs are
    logged once each, and ends FINISHED with its checkpoint removed."""
    args = [*FAST, "train.epochs=12"]
    db = tmp_path / "mlflow.db"
    job = _stop_a_run(args, tmp_path, sig, CHECKPOINTED)
    saved = tmp_path / job["tradeoff.checkpoint"]
    assert saved.parent.parent == tmp_path / "checkpoints" and saved.exists()
    stopped_at = _steps(db, job["id"], "train/loss")
    assert stopped_at == list(range(1, len(stopped_at) + 1)) and len(stopped_at) < 12

    again = _run(["tradeoff-train", *args], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming MLflow run {job['id']}" in again.stdout
    (done,) = _jobs(db)
    assert done["id"] == job["id"] and done["status"] == "FINISHED"
    assert done["tradeoff.resumed"] == "1" and "error" not in done
    assert _steps(db, job["id"], "train/loss") == list(range(1, 13))
    assert _steps(db, job["id"], "test/accuracy") == [12]
    assert not (tmp_path / "checkpoints").exists()


def test_submitit_requeues_a_preempted_job_which_resumes_its_run(tmp_path):
    """submitit's preemption signal (SIGUSR2) to a job of a submitit_local sweep: the job
    checkpoints, submitit requeues it, and the requeued job finishes the same run."""
    args = [
        "tradeoff-train",
        "-m",
        *FAST,
        "train.epochs=12",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "hydra.launcher.cpus_per_task=1",
        "loss.tau=3",
    ]
    proc = _start(args, tmp_path)
    db = tmp_path / "mlflow.db"
    _wait_for(_training(db), proc)
    (job,) = _jobs(db, "RUNNING")
    os.kill(int(job["tradeoff.pid"]), signal.SIGUSR2)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, (out + err)[-3000:]
    (done,) = _jobs(db)
    assert done["id"] == job["id"] and done["status"] == "FINISHED"
    assert done["tradeoff.resumed"] == "1" and done["tradeoff.pid"] != job["tradeoff.pid"]
    assert _steps(db, job["id"], "train/loss") == list(range(1, 13))
    logs = "".join(p.read_text() for p in tmp_path.glob("multirun/**/*_log.out"))
    assert "Requeued job" in logs or "Requeued" in logs + out + err
    assert not (tmp_path / "checkpoints").exists()


def test_sigint_ends_a_grid_with_its_parent_and_job_killed(tmp_path):
    args = ["tradeoff-train", "-m", *LONG, "loss.tau=1,3"]
    proc = _start(args, tmp_path)
    db = tmp_path / "mlflow.db"
    _wait_for(_training(db), proc)
    code, seconds, lines = _stop(proc, signal.SIGINT)
    assert code == 130 and seconds < 5
    assert lines == [f"tradeoff-train: {CHECKPOINTED.format('SIGINT')}"]
    (job,) = _jobs(db)  # the second config never started
    assert job["status"] == "KILLED"
    (parent,) = [r for r in _runs(db) if r.get("tradeoff.role") == "sweep"]
    assert parent["status"] == "KILLED"
    assert parent["error"] == "the sweep process was stopped by SIGINT"
    assert parent["tradeoff.pid"] == str(proc.pid) and parent["tradeoff.host"]


def test_sigterm_ends_an_optuna_study_and_its_trial_is_requeued(tmp_path):
    study = [
        "hydra/sweeper=tradeoff_optuna",
        "hydra.sweeper.study_name=s",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.seed=0",
        "loss.tau=tag(log,interval(0.1,100))",
    ]
    proc = _start(["tradeoff-train", "-m", *LONG, *study], tmp_path)
    db = tmp_path / "mlflow.db"
    _wait_for(_training(db), proc)
    code, seconds, lines = _stop(proc, signal.SIGTERM)
    assert code == 143 and seconds < 5
    assert lines == [f"tradeoff-train: {CHECKPOINTED.format('SIGTERM')}"]
    (job,) = _jobs(db)
    assert job["status"] == "KILLED"
    (parent,) = [r for r in _runs(db) if r.get("tradeoff.role") == "sweep"]
    assert parent["status"] == "KILLED" and parent["tradeoff.pid"] == str(proc.pid)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    failed, queued = optuna.load_study(study_name="s", storage=storage).trials
    assert failed.state == optuna.trial.TrialState.FAIL
    assert failed.user_attrs == {
        "fail_reason": "the sweep was stopped by SIGTERM",
        "mlflow_run_id": job["id"],
    }
    assert queued.state == optuna.trial.TrialState.WAITING and queued.params == failed.params

    # The same command trains the re-queued trial, in the same parent run.
    again = _run(["tradeoff-train", "-m", *FAST, "train.epochs=1", *study], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].params == failed.params
    (parent,) = [r for r in _runs(db) if r.get("tradeoff.role") == "sweep"]
    assert parent["status"] == "FINISHED"


def test_two_identical_grid_sweeps_at_once_train_each_config_once(tmp_path):
    args = ["tradeoff-train", "-m", *FAST, "train.epochs=2", "loss.tau=1,3,10"]
    first, second = _start(args, tmp_path), _start(args, tmp_path)
    outputs = [proc.communicate(timeout=600) for proc in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    jobs = _jobs(tmp_path / "mlflow.db")
    assert sorted(j["name"] for j in jobs) == ["tau_cce tau=1", "tau_cce tau=10", "tau_cce tau=3"]
    assert {j["status"] for j in jobs} == {"FINISHED"}
    assert len({j["config_hash"] for j in jobs}) == 3
    logs = "".join(out for out, _ in outputs)
    assert (
        logs.count("skipping: this config is being trained by pid")
        + logs.count("skipping: this config already has FINISHED run")
        == 3
    )
    folders = sorted(p.name for p in (tmp_path / "multirun" / "adhoc").iterdir())
    assert len(folders) == 2 and {f.rsplit("_", 1)[1] for f in folders} == {
        str(first.pid),
        str(second.pid),
    }


JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "loss.tau=1,3,10,30"]
SUBMITIT = [
    "hydra/launcher=submitit_local",
    "hydra.launcher.timeout_min=5",
    "hydra.launcher.cpus_per_task=1",
    "loss.tau=1,3",
]


@pytest.mark.parametrize("launcher", [JOBLIB, SUBMITIT], ids=["joblib", "submitit_local"])
def test_workers_stop_when_the_sweep_process_dies(tmp_path, launcher):
    """joblib's workers are children of the sweep process, submitit's local jobs children of
    a controller it started: both stop, their runs KILLED, and take no further job."""
    proc = _start(["tradeoff-train", "-m", *LONG, *launcher], tmp_path)
    db = tmp_path / "mlflow.db"
    _wait_for(_training(db, count=2), proc)
    workers = {int(j["tradeoff.pid"]) for j in _jobs(db, "RUNNING")}
    assert len(workers) == 2 and proc.pid not in workers
    os.kill(proc.pid, signal.SIGKILL)  # the sweep process only: its workers live on
    proc.communicate()
    deadline = time.monotonic() + 30
    while any(pid_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(pid_alive(pid) for pid in workers)
    time.sleep(2)
    jobs = _jobs(db)
    assert len(jobs) == 2  # no worker took another job
    assert {j["status"] for j in jobs} == {"KILLED"}
    assert {j["error"] for j in jobs} == {f"SweepDied: the sweep process {proc.pid} died"}


def test_sigterm_to_a_joblib_sweep_closes_the_runs_of_the_workers_it_killed(tmp_path):
    """joblib SIGKILLs its workers when the sweep process stops: the sweep process marks their
    runs KILLED itself, and its parent run."""
    proc = _start(["tradeoff-train", "-m", *LONG, *JOBLIB], tmp_path)
    db = tmp_path / "mlflow.db"
    _wait_for(_training(db, count=2), proc)
    code, seconds, lines = _stop(proc, signal.SIGTERM)
    assert code == 143 and seconds < 5
    assert lines == [f"tradeoff-train: {STOPPED.format('SIGTERM')}"]
    jobs = _jobs(db)
    assert len(jobs) == 2 and {j["status"] for j in jobs} == {"KILLED"}
    for job in jobs:
        where = f"process {job['tradeoff.pid']} on {job['tradeoff.host']}"
        assert job["error"] == f"{where} was stopped with its sweep (SIGTERM)"
    (parent,) = [r for r in _runs(db) if r.get("tradeoff.role") == "sweep"]
    assert parent["status"] == "KILLED"


def _fails_in_one_line(args: list[str], cwd: Path) -> tuple[str, float]:
    start = time.monotonic()
    proc = _run(args, cwd, timeout=300)
    seconds = time.monotonic() - start
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "epoch" not in proc.stdout
    return lines[0], seconds


def test_bad_stores_are_refused_in_one_line_before_any_job(tmp_path):
    line, seconds = _fails_in_one_line(
        ["tradeoff-train", *FAST, "data=mnist5k", "tracking.uri=foo://bar"], tmp_path
    )
    assert line.startswith("tradeoff-train: error: tracking.uri='foo://bar': unknown scheme")
    assert seconds < 60  # before loading mnist5k and building the model
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not a database " * 1000)
    line, _ = _fails_in_one_line(["tradeoff-train", "-m", *FAST, "loss.tau=1,3"], tmp_path)
    assert line == (
        "tradeoff-train: error: tracking.uri='sqlite:///mlflow.db': 'mlflow.db' is damaged "
        "(file is not a database); move 'mlflow.db' away (MLflow makes a new store) or point "
        "tracking.uri elsewhere"
    )
    assert not (tmp_path / "multirun" / "adhoc").exists() or not list(
        (tmp_path / "multirun" / "adhoc").glob("*/0")
    )


def test_a_bad_optuna_objective_or_space_leaves_no_trace(tmp_path):
    study = [
        "hydra/sweeper=tradeoff_optuna",
        "hydra.sweeper.study_name=s",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.seed=0",
    ]
    objective = "hydra.sweeper.objectives=[val/acc:maximize]"
    typo = _run(
        ["tradeoff-train", "-m", *FAST, *study, "loss.tau=interval(1,9)", objective], tmp_path
    )
    assert typo.returncode != 0
    assert "the jobs do not log 'val/acc'; did you mean val/accuracy" in typo.stderr
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()

    space = "loss=choice(tau_cce,hkr)"
    done = _run(["tradeoff-train", "-m", *FAST, "train.epochs=1", *study, space], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    other = "loss=choice(tau_cce,kr)"
    changed = _run(["tradeoff-train", "-m", *FAST, "train.epochs=1", *study, other], tmp_path)
    assert changed.returncode != 0
    assert "loss is choice(tau_cce, kr), but Optuna study 's'" in changed.stderr
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert [t.state.name for t in trials] == ["COMPLETE"]  # the study is as it was
    assert len(_jobs(tmp_path / "mlflow.db")) == 1
