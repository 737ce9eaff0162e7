"""The `tradeoff_optuna` Hydra sweeper: unit checks of its parts, then real studies end to end.

The end-to-end tests (marked slow) run `tradeoff-train -m hydra/sweeper=tradeoff_optuna` in a
temporary folder with sqlite stores for MLflow (`mlflow.db`) and Optuna (`optuna.db`), on the
scikit-learn digits with one epoch, so a trial takes a second or two.
"""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState
from sqlite_peek import query

from hydra_plugins.tradeoff_optuna_sweeper._impl import (
    TradeoffOptunaSweeperImpl,
    format_table,
    make_sampler,
    parse_objectives,
)
from hydra_plugins.tradeoff_optuna_sweeper._space import SearchSpace, SweeperConfigError
from hydra_plugins.tradeoff_optuna_sweeper._storage import (
    Heartbeat,
    RetryStale,
    fail_stale,
    open_storage,
    redact,
    retried_numbers,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

# The loss families' keys, as Hydra composes tradeoff/conf/loss/<family>.yaml.
FAMILY_KEYS = {
    "tau_cce": {"_target_", "family", "tau"},
    "hkr": {"_target_", "family", "alpha", "min_margin"},
    "offset_ce": {"_target_", "family", "offset", "temperature"},
}
SPACE = [
    "loss=choice(tau_cce,hkr)",
    "loss.tau=tag(log,interval(0.1,1000))",
    "loss.min_margin=tag(log,interval(0.01,3))",
    "loss.alpha=tag(log,interval(1,1000))",
]
FAST = [
    "data=digits",
    "train.epochs=1",
    "train.threads=1",
    "train.batch_size=128",
    "optim.lr=3e-3",
    "tracking.log_model=false",
]


# -- unit checks (fast) ------------------------------------------------------------------------


def _fake_compose(overrides: list[str]):
    family = overrides[-1].split("=", 1)[1]
    return OmegaConf.create({"loss": dict.fromkeys(FAMILY_KEYS[family], 1.0)})


def _space(overrides: list[str]) -> SearchSpace:
    base = OmegaConf.create({"loss": {"family": "tau_cce", "tau": 10.0}, "train": {"epochs": 1}})
    return SearchSpace.parse(
        overrides,
        compose=_fake_compose,
        group_options=lambda g: list(FAMILY_KEYS) if g == "loss" else [],
        base=base,
    )


def test_conditional_space_samples_only_the_family_params():
    space = _space([*SPACE, "train.epochs=3"])
    assert space.params[0].name == "loss"  # the family is sampled first
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        overrides = space.suggest(trial)
        family = trial.params["loss"]
        seen.add(family)
        assert set(trial.params) == {"loss"} | {f"loss.{k}" for k in FAMILY_KEYS[family]} - {
            "loss._target_",
            "loss.family",
        }
        assert overrides[0] == f"loss={family}" and "train.epochs=3" in overrides
        study.tell(trial, 0.0)
    assert seen == {"tau_cce", "hkr"}


def test_override_grammar_maps_to_optuna_distributions():
    space = _space(
        [
            "train.epochs=range(1,5)",
            "loss.tau=int(interval(1,10))",
            "+train.extra=choice(a,'b c',[1,2])",
            "++train.rate=interval(0.5,1.5)",
        ]
    )
    by = {p.name: p for p in space.params}
    ints = by["train.epochs"].distribution
    assert (ints.low, ints.high, ints.step) == (1, 4, 1)  # range() excludes its stop
    assert isinstance(by["loss.tau"].distribution, optuna.distributions.IntDistribution)
    assert by["train.extra"].render("b c") == "+train.extra=b\\ c"
    assert by["train.extra"].render("[1,2]") == "+train.extra=[1,2]"
    assert by["train.rate"].render(0.75) == "++train.rate=0.75"
    # A shuffled sweep gets the same choices in the same order every time (resumable).
    orders = {_space(["train.epochs=shuffle(range(1,9))"]).params[0].distribution.choices}
    orders |= {_space(["train.epochs=shuffle(range(1,9))"]).params[0].distribution.choices}
    assert orders == {tuple(range(1, 9))}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss=choice(tau_cce,nope)"], "nope do not exist; loss options: hkr"),
        (["loss=choice(tau_cce,hkr)", "loss.taus=interval(1,2)"], "not a key of any loss option"),
        (["train.epoch=range(1,3)"], "Did you mean train.epochs"),
        (["loss.tau=tag(log,interval(0,10))"], "not a valid distribution"),
        (["train.epochs=glob(*)"], "not supported"),
    ],
)
def test_bad_search_space_is_named(overrides, message):
    with pytest.raises(SweeperConfigError, match=message.replace("(", r"\(")):
        _space(overrides)


def test_config_errors_name_the_value_and_the_fix(tmp_path):
    with pytest.raises(SweeperConfigError, match="valid samplers: tpe, nsgaii, random, gp"):
        TradeoffOptunaSweeperImpl(objectives=[{"val/accuracy": "maximize"}], sampler="cmaes")
    with pytest.raises(SweeperConfigError, match="use maximize or minimize"):
        parse_objectives([{"val/accuracy": "up"}])
    assert parse_objectives(["val/accuracy:max", {"test/accuracy": "minimize"}]) == [
        ("val/accuracy", "maximize"),
        ("test/accuracy", "minimize"),
    ]
    with pytest.raises(SweeperConfigError, match="do not fit TPESampler"):
        make_sampler("tpe", 0, {"bogus": 1}, n_objectives=2, n_trials=10)
    assert isinstance(
        make_sampler("gp", 0, {}, n_objectives=2, n_trials=10), optuna.samplers.GPSampler
    )
    retry = RetryStale(1)
    missing = f"sqlite:///{tmp_path}/no/such/dir/optuna.db"
    with pytest.raises(SweeperConfigError, match="does not exist") as err:
        open_storage(missing, heartbeat_interval=60, grace_period=None, on_stale=retry)
    assert "\n" not in str(err.value)
    with pytest.raises(SweeperConfigError, match="cannot be opened"):
        open_storage("nosuchdb://x/y", heartbeat_interval=60, grace_period=None, on_stale=retry)
    with pytest.raises(SweeperConfigError, match="not an Optuna storage"):
        open_storage("optuna.db", heartbeat_interval=60, grace_period=None, on_stale=retry)
    journal = open_storage(
        str(tmp_path / "j.log"), heartbeat_interval=1, grace_period=None, on_stale=retry
    )
    assert isinstance(journal, optuna.storages.JournalStorage)
    assert redact("postgresql://me:secret@db:5432/optuna") == "postgresql://me:***@db:5432/optuna"


def _journal_study(tmp_path: Path, retry: RetryStale):
    """(storage, study, its first trial, RUNNING) in a journal file, heartbeats every 1 s,
    stale after 2 s."""
    storage = open_storage(
        f"journal:{tmp_path / 'study.log'}", heartbeat_interval=1, grace_period=2, on_stale=retry
    )
    study = optuna.create_study(storage=storage, study_name="j", directions=["maximize"])
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    return storage, study, trial


@pytest.mark.slow  # waits out a grace period (~6 s)
def test_journal_heartbeat_fails_and_requeues_a_dead_trial_once(tmp_path):
    retry = RetryStale(max_retry=1)
    storage, study, trial = _journal_study(tmp_path, retry)
    with Heartbeat(storage, 1) as heartbeat:
        heartbeat.add([trial._trial_id])  # beats at once, then every second
        time.sleep(2.5)
        fail_stale(study, heartbeat_interval=1, grace_period=2, on_stale=retry)
        assert study.trials[0].state == TrialState.RUNNING  # alive: its beat is fresh
        heartbeat.discard([trial._trial_id])  # as if its process had died
        time.sleep(3.5)
        fail_stale(study, heartbeat_interval=1, grace_period=2, on_stale=retry)
    dead, queued = study.trials
    assert dead.state == TrialState.FAIL and queued.state == TrialState.WAITING
    assert queued.params == dead.params and queued.system_attrs["failed_trial"] == 0
    again = study.ask()  # the queued parameters come back first
    assert again.params == dead.params
    study.tell(again, state=TrialState.FAIL)
    assert retried_numbers(study.trials) == {0}


def test_objectives_the_jobs_do_not_log_are_refused_before_any_trial():
    from hydra import compose, initialize_config_dir

    from hydra_plugins.tradeoff_optuna_sweeper._checks import check_objectives
    from tradeoff.paths import conf_dir

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        config = compose("config", overrides=["data=digits"])
    check_objectives(["val/accuracy", "test/cra_eps_0.5", "train/seconds"], config)
    with pytest.raises(SweeperConfigError) as err:
        check_objectives(["val/acc"], config)
    message = str(err.value)
    assert message.startswith("hydra.sweeper.objectives: the jobs do not log 'val/acc'; did you")
    assert "val/accuracy" in message and "\n" not in message
    check_objectives(["anything"], OmegaConf.create({"x": 1}))  # not tradeoff's task: no check


def test_a_resume_the_study_does_not_fit_is_refused_and_changes_nothing():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from hydra_plugins.tradeoff_optuna_sweeper._checks import check_resume

    study = optuna.create_study(directions=["maximize"])
    family = CategoricalDistribution(["tau_cce", "hkr"])
    study.add_trial(
        optuna.create_trial(
            params={"loss": "hkr", "loss.tau": 3.0},
            distributions={"loss": family, "loss.tau": FloatDistribution(0.1, 10, log=True)},
            values=[0.5],
        )
    )
    # a float's range may change (Optuna allows it), not its log scale nor the choices
    check_resume(study, _space(["loss=choice(tau_cce,hkr)", "loss.tau=tag(log,interval(1,99))"]))
    with pytest.raises(SweeperConfigError, match=r"loss\.tau is float \[1\.0, 99\.0\], but"):
        check_resume(study, _space(["loss.tau=interval(1,99)"]))
    with pytest.raises(SweeperConfigError) as err:
        check_resume(study, _space(["loss=choice(tau_cce,hkr,offset_ce)"]))
    assert "loss is choice(tau_cce, hkr, offset_ce), but Optuna study" in str(err.value)
    assert "has it as choice(tau_cce, hkr) and cannot change it" in str(err.value)
    study.enqueue_trial({"loss": "offset_ce"})
    with pytest.raises(SweeperConfigError, match=r"queued trial 1 .* loss='offset_ce'"):
        check_resume(study, _space(["loss=choice(tau_cce,hkr)"]))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.WAITING]


def test_a_trial_asked_for_but_never_run_is_void_and_its_queue_entry_kept():
    from hydra_plugins.tradeoff_optuna_sweeper._checks import void_numbers, void_trial

    study = optuna.create_study(directions=["maximize"])
    study.enqueue_trial({"x": 0.25})
    queued = study.ask()
    fresh = study.ask()
    void_trial(study, queued)
    void_trial(study, fresh)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.WAITING]
    assert void_numbers(trials) == {0, 1}
    assert study.ask().suggest_float("x", 0, 1) == 0.25  # the queued parameters come back


def test_a_stale_trial_records_why_and_which_run(tmp_path):
    from hydra_plugins.tradeoff_optuna_sweeper._storage import HEARTBEAT_ATTR

    retry = RetryStale(max_retry=1)
    storage, study, trial = _journal_study(tmp_path, retry)
    storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time() - 60)
    failed = fail_stale(
        study,
        heartbeat_interval=1,
        grace_period=2,
        on_stale=retry,
        describe=lambda t: {"mlflow_run_id": f"run-of-{t.number}"},
    )
    assert failed == [0]
    dead, queued = study.trials
    assert dead.state == TrialState.FAIL and queued.state == TrialState.WAITING
    assert dead.user_attrs == {
        "fail_reason": "no heartbeat for 2 s: its process died or hung",
        "mlflow_run_id": "run-of-0",
    }
    assert "fail_reason" not in queued.user_attrs and queued.params == dead.params

    # The same through an RDB storage's heartbeat table (its last beat set long ago).
    db = tmp_path / "optuna.db"
    storage = open_storage(f"sqlite:///{db}", heartbeat_interval=1, grace_period=2, on_stale=retry)
    study = optuna.create_study(storage=storage, study_name="r", directions=["maximize"])
    with pytest.warns(UserWarning, match="Heartbeat of storage"):  # as the sweeper, which beats
        trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00.000000'")
    describe = lambda t: {"mlflow_run_id": "abc"}  # noqa: E731
    assert fail_stale(
        study, heartbeat_interval=1, grace_period=2, on_stale=retry, describe=describe
    ) == [0]
    assert study.trials[0].user_attrs["mlflow_run_id"] == "abc"
    assert study.trials[0].user_attrs["fail_reason"].startswith("no heartbeat for 2 s")


def test_failed_missing_and_nan_objectives_are_failures():
    sweeper = TradeoffOptunaSweeperImpl(
        objectives=[{"val/accuracy": "maximize"}, {"val/mean_certificate": "maximize"}]
    )

    def job(status, value):
        ret = JobReturn(status=status)
        ret.return_value = value
        return ret

    ok = {"val/accuracy": 0.9, "val/mean_certificate": 0.2}
    assert sweeper._values(job(JobStatus.COMPLETED, ok)) == ([0.9, 0.2], "")
    values, why = sweeper._values(job(JobStatus.FAILED, ValueError("train.epochs=0 bad")))
    assert values is None and "ValueError: train.epochs=0 bad" in why
    values, why = sweeper._values(job(JobStatus.COMPLETED, {"val/accuracy": 0.9}))
    assert values is None and "'val/mean_certificate' is not among" in why
    values, why = sweeper._values(job(JobStatus.COMPLETED, {**ok, "val/accuracy": math.nan}))
    assert values is None and "is nan" in why
    table = format_table(
        "s", [{"trial": 3, "values": ok, "params": {"loss": "hkr"}}], list(ok), {"complete": 1}
    )
    assert "loss=hkr" in table and "0.9000" in table


# -- end to end through the CLI (slow) ---------------------------------------------------------


def _env() -> dict[str, str]:
    env = {**os.environ, "TRADEOFF_TEST_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for key in ("MLFLOW_TRACKING_URI", "TRADEOFF_PARENT_RUN_ID", "HYDRA_FULL_ERROR"):
        env.pop(key, None)
    return env


def _study_cmd(name: str, n_trials: int, run: str, *extra: str) -> list[str]:
    return [
        "tradeoff-train",
        "-m",
        "hydra/sweeper=tradeoff_optuna",
        *FAST,
        f"tracking.experiment={name}",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.seed=0",
        f"hydra.sweep.dir=multirun/{name}/{run}",
        *extra,
    ]


def _cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def _study(cwd: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'optuna.db'}")


def _runs(cwd: Path, experiment: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=[experiment])


def _family_ok(params: dict) -> bool:
    family = params["loss"]
    wanted = {f"loss.{k}" for k in FAMILY_KEYS[family] - {"_target_", "family"}}
    return set(params) - {"loss"} == wanted


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("optuna")


@pytest.mark.slow
def test_study_with_conditional_space_finishes_then_resumes(workspace):
    # One test for both runs: under pytest-xdist a shared first run would be made per worker.
    proc = _cli(_study_cmd("pareto", 6, "first", *SPACE), workspace)
    trials = _study(workspace, "pareto").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert all(_family_ok(t.params) for t in trials), [t.params for t in trials]
    assert {t.params["loss"] for t in trials} == {"tau_cce", "hkr"}
    assert len(trials[0].values) == 2
    runs = _runs(workspace, "pareto")
    parents = runs[runs["tags.tradeoff.role"] == "sweep"]
    children = runs[runs["tags.tradeoff.role"] == "job"]
    assert len(parents) == 1 and len(children) == 6
    parent = parents.iloc[0]
    assert parent["status"] == "FINISHED"
    assert parent["tags.optuna.study_name"] == "pareto"
    assert parent["tags.optuna.directions"] == "maximize,maximize"
    assert parent["tags.optuna.storage"] == f"sqlite:///{workspace / 'optuna.db'}"
    assert set(children["tags.mlflow.parentRunId"]) == {parent["run_id"]}
    assert set(children["status"]) == {"FINISHED"}
    assert sorted(children["tags.optuna.trial"].astype(int)) == list(range(6))
    by_trial = {int(r["tags.optuna.trial"]): r for _, r in children.iterrows()}
    for t in trials:  # each MLflow run carries exactly its trial's parameters
        run = by_trial[t.number]
        assert run["tags.loss_family"] == t.params["loss"]
        for key, value in t.params.items():
            if key != "loss":
                assert float(run[f"params.{key}"]) == pytest.approx(value)
        assert run["metrics.val/accuracy"] == pytest.approx(t.values[0])
        assert t.user_attrs["mlflow_run_id"] == run["run_id"]
    pareto = yaml.safe_load((workspace / "multirun/pareto/first/pareto.yaml").read_text())
    best = {t.number for t in _study(workspace, "pareto").best_trials}
    assert {row["trial"] for row in pareto["pareto"]} == best
    assert pareto["mlflow"]["parent_run_id"] == parent["run_id"]
    for row in pareto["pareto"]:
        assert set(row["values"]) == {"val/accuracy", "val/mean_certificate"}
        assert row["mlflow_run_id"] == by_trial[row["trial"]]["run_id"]
    assert "Pareto set of Optuna study 'pareto'" in proc.stdout
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent["run_id"])}
    assert {"pareto.json", "pareto.yaml"} <= artifacts
    # The study's parent holds the sweep's summary, from the report's frame and front code.
    from tradeoff.report import load_runs

    jobs = load_runs("pareto", tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    assert parent["metrics.sweep/runs"] == 6
    assert parent["metrics.sweep/front_runs"] == jobs["on_front"].sum()
    assert parent["metrics.sweep/best_test_accuracy"] == jobs["metrics.test/accuracy"].max()
    kind = mlflow.MlflowClient().get_experiment_by_name("pareto").tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"

    # The same command with n_trials=8 adds exactly the 2 missing trials.
    _cli(_study_cmd("pareto", 8, "second", *SPACE), workspace)
    after = _study(workspace, "pareto").trials
    assert len(after) == 8 and all(t.state == TrialState.COMPLETE for t in after)
    assert [t.params for t in after[:6]] == [t.params for t in trials]  # nothing retrained
    assert all(_family_ok(t.params) for t in after)
    # The resumed sampler (seed offset by the study's size) did not re-draw earlier parameters.
    assert len({tuple(sorted(t.params.items())) for t in after}) == 8
    runs = _runs(workspace, "pareto")
    parents = runs[runs["tags.tradeoff.role"] == "sweep"]
    children = runs[runs["tags.tradeoff.role"] == "job"]
    assert list(parents["run_id"]) == [parent["run_id"]], "the parent is reopened, not duplicated"
    assert parents.iloc[0]["status"] == "FINISHED"
    assert parents.iloc[0]["metrics.sweep/runs"] == 8  # the summary covers the resumed trials
    assert sorted(children["tags.optuna.trial"].astype(int)) == list(range(8))
    assert set(children["tags.mlflow.parentRunId"]) == {parent["run_id"]}


def _states(db: Path, study: str) -> dict[int, str]:
    """Trial number → state in Optuna's sqlite file."""
    rows = query(
        db,
        "SELECT t.number, t.state FROM trials t JOIN studies s ON t.study_id = s.study_id "
        "WHERE s.study_name = ?",
        study,
    )
    return {int(n): str(s) for n, s in rows}


def _training(db: Path, trial: int) -> bool:
    """Whether an MLflow run of `trial` is RUNNING in MLflow's sqlite file (its job trains)."""
    rows = query(
        db,
        "SELECT r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE t.key = 'optuna.trial' AND t.value = ?",
        str(trial),
    )
    return ("RUNNING",) in rows


@pytest.mark.slow
def test_killed_study_resumes_without_duplicates(workspace):
    name = "killed"
    fast_heartbeat = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]
    cmd = _study_cmd(name, 5, "first", *SPACE, *fast_heartbeat)
    log = (workspace / "killed.log").open("w")
    proc = subprocess.Popen(cmd, cwd=workspace, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    killed = None
    mlflow_db = workspace / "mlflow.db"
    try:
        deadline = time.monotonic() + 180
        while killed is None and time.monotonic() < deadline:
            assert proc.poll() is None, (workspace / "killed.log").read_text()[-3000:]
            states = _states(workspace / "optuna.db", name)
            running = [n for n, s in states.items() if s == "RUNNING"]
            # Kill it inside a job: a trial is RUNNING and its MLflow run is training.
            if "COMPLETE" in states.values() and running and _training(mlflow_db, running[0]):
                proc.send_signal(signal.SIGKILL)
                killed = running[0]
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
        log.close()
    assert killed is not None, "no trial was caught RUNNING"
    assert _states(workspace / "optuna.db", name)[killed] == "RUNNING"
    checkpointed = any((workspace / "checkpoints" / name).glob("*.pt"))

    _cli(_study_cmd(name, 5, "resumed", *SPACE, *fast_heartbeat), workspace)
    trials = _study(workspace, name).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == 5 and [t.number for t in failed] == [killed]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    retries = [t for t in complete if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].params == failed[0].params  # re-queued once
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 5  # no duplicates
    runs = _runs(workspace, name)
    parents = runs[runs["tags.tradeoff.role"] == "sweep"]
    children = runs[runs["tags.tradeoff.role"] == "job"]
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    done = children[children["status"] == "FINISHED"]
    assert sorted(done["tags.optuna.trial"].astype(int)) == sorted(t.number for t in complete)
    assert failed[0].user_attrs["fail_reason"].startswith("no heartbeat for 3 s")
    if checkpointed:
        # The retry went on from the killed trial's checkpoint, in the killed trial's run.
        (again,) = [t for t in complete if t.system_attrs.get("failed_trial") == killed]
        run = children[children["run_id"] == failed[0].user_attrs["mlflow_run_id"]].iloc[0]
        assert run["status"] == "FINISHED" and run["tags.tradeoff.resumed"] == "1"
        assert run["tags.optuna.trial"] == str(again.number) and len(children) == 5
        return
    # The killed trial's MLflow run is closed (KILLED by the sweeper when it finds the trial
    # stale, or FAILED by a later job that finds its process dead), not left RUNNING.
    dead = children[children["tags.optuna.trial"] == str(killed)]
    assert len(dead) == 1 and dead.iloc[0]["status"] in ("KILLED", "FAILED")
    # The stale-failed trial says which run it was.
    assert failed[0].user_attrs["mlflow_run_id"] == dead.iloc[0]["run_id"]


@pytest.mark.slow
def test_a_cost_is_a_third_objective(workspace):
    """Accuracy, mean certificate and the run's training time: a study of 3 objectives, each
    trial told the three values its run logged, the Pareto set over all three."""
    objectives = [
        ("val/accuracy", "maximize"),
        ("val/mean_certificate", "maximize"),
        ("train/seconds", "minimize"),
    ]
    listed = ",".join(f"{name}:{direction}" for name, direction in objectives)
    space = "loss.tau=tag(log,interval(0.1,100))"
    args = _study_cmd("cost", 3, "first", space, f"hydra.sweeper.objectives=[{listed}]")
    proc = _cli(args, workspace)
    study = _study(workspace, "cost")
    assert [d.name.lower() for d in study.directions] == [d for _, d in objectives]
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    runs = _runs(workspace, "cost")
    children = runs[runs["tags.tradeoff.role"] == "job"]
    by_trial = {int(r["tags.optuna.trial"]): r for _, r in children.iterrows()}
    for t in trials:
        run = by_trial[t.number]
        assert t.values == pytest.approx([run[f"metrics.{name}"] for name, _ in objectives])
    (parent,) = runs[runs["tags.tradeoff.role"] == "sweep"].to_dict("records")
    assert parent["tags.optuna.directions"] == "maximize,maximize,minimize"
    assert parent["tags.optuna.objectives"] == "val/accuracy,val/mean_certificate,train/seconds"
    pareto = yaml.safe_load((workspace / "multirun/cost/first/pareto.yaml").read_text())
    assert pareto["objectives"] == [{n: d} for n, d in objectives]
    assert {row["trial"] for row in pareto["pareto"]} == {t.number for t in study.best_trials}
    for row in pareto["pareto"]:
        assert list(row["values"]) == [name for name, _ in objectives]
    header = next(ln for ln in proc.stdout.splitlines() if ln.lstrip().startswith("trial"))
    assert header.split()[1:4] == [name for name, _ in objectives]


@pytest.mark.slow
def test_failing_trial_does_not_stop_the_study(workspace):
    name = "failing"
    cmd = _study_cmd(
        name,
        4,
        "only",
        "train.epochs=choice(0,1)",  # train.py rejects epochs=0 inside the job (ConfigError)
        "loss.tau=tag(log,interval(1,100))",
        "hydra.sweeper.sampler=random",
        "hydra.sweeper.seed=1",
        "hydra.sweeper.objectives=[val/accuracy:maximize]",  # single objective
    )
    proc = _cli(cmd, workspace)
    trials = _study(workspace, name).trials
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert failed and complete
    assert all(t.params["train.epochs"] == 0 for t in failed)
    assert all(t.params["train.epochs"] == 1 and len(t.values) == 1 for t in complete)
    assert all("train.epochs=0" in t.user_attrs["fail_reason"] for t in failed)
    assert "FAILED" in proc.stderr + proc.stdout
    pareto = yaml.safe_load((workspace / f"multirun/{name}/only/pareto.yaml").read_text())
    assert {row["trial"] for row in pareto["pareto"]} <= {t.number for t in complete}


@pytest.mark.slow
def test_retry_that_reuses_a_finished_run_is_linked_to_it(workspace):
    """A sweeper killed after a trial's job FINISHED but before it recorded the values: on
    resume the trial is failed as stale and re-queued, the retry's job finds the FINISHED run
    of the same config and skips training, and the retry is linked to that run (Optuna's
    retry carries the original trial's user attributes, `mlflow_run_id` among them)."""
    name = "told_late"
    heartbeat = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2"]
    _cli(_study_cmd(name, 2, "first", *SPACE, *heartbeat), workspace)
    db = workspace / "optuna.db"
    with sqlite3.connect(db) as con:  # trial 1 back to RUNNING, its last heartbeat long ago
        (trial_id,) = con.execute(
            "SELECT t.trial_id FROM trials t JOIN studies s ON t.study_id = s.study_id "
            "WHERE s.study_name = ? AND t.number = 1",
            (name,),
        ).fetchone()
        con.execute(
            "UPDATE trials SET state = 'RUNNING', datetime_complete = NULL WHERE trial_id = ?",
            (trial_id,),
        )
        con.execute("DELETE FROM trial_values WHERE trial_id = ?", (trial_id,))
        con.execute("DELETE FROM trial_heartbeats WHERE trial_id = ?", (trial_id,))
        con.execute(
            "INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?, ?)",
            (trial_id, "2000-01-01 00:00:00.000000"),
        )
    before = _runs(workspace, name)
    original = before[before["tags.optuna.trial"] == "1"]
    assert len(original) == 1 and original.iloc[0]["status"] == "FINISHED"

    proc = _cli(_study_cmd(name, 2, "resumed", *SPACE, *heartbeat), workspace)
    trials = _study(workspace, name).trials
    retry = trials[-1]
    assert retry.state == TrialState.COMPLETE and retry.system_attrs["failed_trial"] == 1
    assert retry.params == trials[1].params
    assert retry.user_attrs["mlflow_run_id"] == original.iloc[0]["run_id"]
    after = _runs(workspace, name)
    assert len(after) == len(before)  # no training, no new run
    assert "skipping: this config already has FINISHED run" in proc.stdout + proc.stderr
