"""The one place that talks to MLflow: experiments, sweep parent runs, job runs and artifacts.

Every experiment is tagged as model training (`mlflow.experimentKind`) and carries its sweep's
description. A sweep is an MLflow parent run opened in the launching process
(`SweepCallback`), its jobs are child runs (`mlflow.parentRunId`); running the same sweep again
reopens the same parent, and at the end the parent gets the sweep's summary metrics. Each job
logs its whole resolved config as params, its metrics per epoch, the test metrics, per-sample
certificates, the model and its vanilla export.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import pandas as pd
import torch
from hydra.experimental.callback import Callback
from mlflow.entities import Metric, Run, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from . import signals
from .claims import Claim, local_store_path, try_claim
from .losses import FAMILIES
from .stores import StoreError, check_store
from .watchdog import pid_alive

log = logging.getLogger(__name__)

__all__ = [
    "PARENT_RUN_ENV",
    "RunTracker",
    "SweepCallback",
    "check_tracking_uri",
    "config_hash",
    "experiment_name",
    "flatten",
    "git_commit",
    "resolve_tracking_uri",
    "run_name",
]

PARENT_RUN_ENV = "TRADEOFF_PARENT_RUN_ID"
PARENT_RUN_FILE = "mlflow_parent_run.json"
# Server stores: a job claiming a config looks for older claims twice, this far apart.
CLAIM_SETTLE_SECONDS = 2.0
# Keys that do not change what a run computes: left out of the config hash.
NON_SEMANTIC = (
    "tracking",
    "sweep",
    "hydra",
    "train.threads",
    "train.progress",
    "train.device",
    "train.compile",
    "train.checkpoint_every",
    "train.checkpoint_dir",
)
# The experiment of runs outside a named sweep (also their multirun folder: multirun/adhoc/).
ADHOC_EXPERIMENT = "adhoc"
ADHOC_DESCRIPTION = (
    "Runs of `tradeoff-train` outside a named sweep: one run per `tradeoff-train`, one parent "
    "run per `tradeoff-train -m` with its jobs as child runs. `tracking.experiment=NAME` files "
    "runs elsewhere."
)
# The experiment's kind for MLflow 3.x. The 3.17 UI shows an experiment by its own GenAI / Model
# training switch instead, so links to it say workflowType=machine_learning (runs_page).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
NOTE = "mlflow.note.content"  # the description MLflow shows for an experiment or a run
GROUP_BY = "tradeoff.group_by"  # experiment tag: the param its report groups runs by
RESUMED = "tradeoff.resumed"  # how often a job run went on from a checkpoint

T = TypeVar("T")


# -- configuration facts -----------------------------------------------------------------------


def resolve_tracking_uri(configured: str | None) -> str:
    """`tracking.uri`, else $MLFLOW_TRACKING_URI, else MLflow's default (sqlite:///mlflow.db)."""
    if configured:
        return str(configured)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return "sqlite:///mlflow.db"


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail early, before any training, if the tracking store cannot be used: an unknown
    scheme, an unreachable server, an unwritable folder, a file that is not an MLflow database
    (`tradeoff.stores.check_store`; raises its StoreError, a ValueError)."""
    check_store(uri, "tracking.uri", timeout=timeout)


def experiment_name(cfg: DictConfig) -> str:
    """`tracking.experiment`, else the sweep's name, else "adhoc" (runs outside a sweep)."""
    return cfg.tracking.get("experiment") or cfg.get("sweep", {}).get("name") or ADHOC_EXPERIMENT


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → {"loss.tau": "3.0", ...} with MLflow-safe string values."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out


def config_hash(cfg: DictConfig | Mapping[str, Any]) -> str:
    """Short hash of what a run computes (data, model, loss, optimiser, training, evaluation)."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat = flatten(plain)
    kept = {
        k: v
        for k, v in flat.items()
        if not any(k == p or k.startswith(p + ".") for p in NON_SEMANTIC)
    }
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


@functools.cache
def git_commit() -> str:
    """The commit of the tradeoff checkout, or "unknown" outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_name(loss_cfg: Mapping[str, Any]) -> str:
    """A readable run name from the loss config: `tau_cce tau=3`, `hkr m=1 a=30`, with the short
    names the loss family gives its hyperparameters (`tradeoff.losses.FAMILIES`)."""
    name = str(loss_cfg.get("family", "loss"))
    described = FAMILIES.get(name)
    parts = [name]
    for hp in described.hyperparameters if described else ():
        if hp.key in loss_cfg:
            parts.append(f"{hp.short}={_fmt(loss_cfg[hp.key])}")
    return " ".join(parts)


# -- resilience --------------------------------------------------------------------------------


def _is_transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) or any(
        s in text
        for s in ("database is locked", "database is busy", "connection reset", "timed out")
    )


def with_retries(fn: Callable[..., T], *args: Any, attempts: int = 8, **kwargs: Any) -> T:
    """Call `fn`, retrying with jittered exponential backoff on transient store errors. A
    SIGTERM or SIGINT meanwhile takes effect once the call is done (`signals.deferred`)."""
    with signals.deferred():
        for attempt in range(attempts):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if attempt == attempts - 1 or not _is_transient(exc):
                    raise
                delay = min(0.2 * 2**attempt, 10.0) * (0.5 + random.random())
                log.warning("MLflow store busy (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
    raise AssertionError("unreachable")


def ensure_experiment(
    client: MlflowClient,
    name: str,
    description: str | None = None,
    *,
    default_description: str | None = None,
    group_by: str | None = None,
) -> str:
    """Id of experiment `name`, created if missing (restored if deleted), tagged as model
    training; `description` becomes its note, `default_description` only when it has none,
    and `group_by` the param its report groups runs by (tag GROUP_BY).

    Tags are written only when they differ, so the jobs of a sweep add no store writes.
    """
    tags = dict(EXPERIMENT_KIND)
    if description:
        tags[NOTE] = description
    if group_by:
        tags[GROUP_BY] = group_by
    exp = with_retries(client.get_experiment_by_name, name)
    if exp is None:
        if default_description and NOTE not in tags:
            tags[NOTE] = default_description
        try:
            return with_retries(client.create_experiment, name, tags=tags)
        except mlflow.exceptions.MlflowException:
            exp = with_retries(client.get_experiment_by_name, name)  # created concurrently
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        with_retries(client.restore_experiment, exp.experiment_id)
    if default_description and not exp.tags.get(NOTE):
        tags.setdefault(NOTE, default_description)
    for key, value in tags.items():
        if exp.tags.get(key) != value:
            with_retries(client.set_experiment_tag, exp.experiment_id, key, value)
    return exp.experiment_id


def open_experiment(client: MlflowClient, cfg: DictConfig) -> str:
    """Id of the experiment `cfg` logs to (`experiment_name`), with the sweep's description."""
    sweep = cfg.get("sweep") or {}
    return ensure_experiment(
        client,
        experiment_name(cfg),
        sweep.get("description"),
        default_description=None if sweep.get("name") else ADHOC_DESCRIPTION,
        group_by=sweep.get("group_by"),
    )


_OPENED: set[str] = set()  # sqlite stores this process has opened (created or migrated)


def open_client(uri: str) -> MlflowClient:
    """The MlflowClient for `uri`, the one way every part of tradeoff opens a store (runs,
    sweeps, the Optuna sweeper, reports): a new sqlite store is created (or migrated) by one
    process at a time, and the schema migration's INFO records are kept off the console."""
    for name in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    path = uri.removeprefix("sqlite:///").split("?")[0]
    if not uri.startswith("sqlite:///") or uri in _OPENED or path in ("", ":memory:"):
        return MlflowClient(tracking_uri=uri)
    # Opening a sqlite store creates or migrates its schema: several processes doing that at
    # once to a new file corrupt it ("table _alembic_tmp_tags already exists"), so they take
    # turns on a lock file beside it. Later writes need no lock (MLflow waits on sqlite's own).
    try:
        lock = open(f"{path}.lock", "a")  # noqa: SIM115 - held across the client's creation
    except OSError:  # a folder we may only read (a report of someone's store): nothing to migrate
        return MlflowClient(tracking_uri=uri)
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=uri)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _OPENED.add(uri)
    return client


# -- crash recovery ----------------------------------------------------------------------------


def _process_tags() -> dict[str, str]:
    return {"tradeoff.host": socket.gethostname(), "tradeoff.pid": str(os.getpid())}


def reap_dead_runs(
    client: MlflowClient,
    experiment_id: str,
    *,
    status: str = "FAILED",
    reason: str = "died while the run was RUNNING",
    parent: str | None = None,
) -> list[str]:
    """Mark `status` the RUNNING runs whose process, on this host, no longer exists (only the
    children of run `parent`, if given), with an `error` tag saying why.

    Runs of other hosts are left alone (their process may be alive: several machines can
    share one store); a run of this host is judged by its recorded pid.
    """
    host = socket.gethostname()
    query = f"attributes.status = 'RUNNING' and tags.`tradeoff.host` = {quote_filter(host)}"
    if parent:
        query += f" and tags.`mlflow.parentRunId` = {quote_filter(parent)}"
    runs = with_retries(client.search_runs, [experiment_id], filter_string=query, max_results=5000)
    reaped = []
    for run in runs:
        pid = run.data.tags.get("tradeoff.pid", "")
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            note = f"process {pid} on {host} {reason}"
            with_retries(client.set_tag, run.info.run_id, "error", note)
            with_retries(client.set_terminated, run.info.run_id, status)
            reaped.append(run.info.run_id)
    if reaped:
        log.warning("marked %d run(s) of dead processes as %s", len(reaped), status)
    return reaped


def find_finished(client: MlflowClient, experiment_id: str, cfg_hash: str) -> Run | None:
    """A FINISHED job run of this experiment with config hash `cfg_hash`, if any."""
    runs = with_retries(
        client.search_runs,
        [experiment_id],
        filter_string=(
            f"attributes.status = 'FINISHED' and tags.config_hash = '{cfg_hash}' "
            "and tags.`tradeoff.role` = 'job'"
        ),
        max_results=1,
        order_by=["attributes.end_time DESC"],
    )
    return runs[0] if runs else None


# -- sweeps ------------------------------------------------------------------------------------


def quote_filter(value: str) -> str:
    """`value` as a string literal of an MLflow search filter."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def semantic(key: str) -> bool:
    """Whether `key` (or an override of it) can change what a run computes (see NON_SEMANTIC)."""
    return not any(key == p or key.startswith((p + ".", p + "/")) for p in NON_SEMANTIC)


def sweep_key(config: DictConfig) -> tuple[str, str]:
    """(key, label) of a grid sweep: what makes a later invocation the same sweep.

    The key hashes the sweep's name, the fixed command-line overrides that change what the jobs
    compute, and the names of the swept keys (not their values, so a grid may grow, and a
    resumed sweep is the same sweep). The label lists the fixed overrides, e.g.
    `data=fashion_mnist`, for the parent run's name.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    name = (config.get("sweep") or {}).get("name") or ADHOC_EXPERIMENT
    swept = {str(k) for k in config.hydra.sweeper.get("params") or {}}
    fixed = []
    for override in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task)):
        key = override.key_or_group
        if key == "sweeps" or not semantic(key):
            continue
        if override.is_sweep_override() or key in swept:
            swept.add(key)
        else:
            fixed.append(str(override.input_line or key))
    blob = json.dumps([name, sorted(fixed), sorted(swept)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16], " ".join(fixed)


def _find_parent(
    client: MlflowClient, experiment_id: str, identity: Mapping[str, str]
) -> str | None:
    """The oldest live run of the experiment carrying every tag of `identity`."""
    query = " and ".join(f"tags.`{k}` = {quote_filter(v)}" for k, v in identity.items())
    runs = with_retries(
        client.search_runs,
        [experiment_id],
        filter_string=query,
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def open_parent_run(
    client: MlflowClient,
    experiment_id: str,
    identity: Mapping[str, str],
    *,
    run_name: str,
    tags: Mapping[str, str],
    new_tags: Mapping[str, str] | None = None,
) -> tuple[str, bool]:
    """The sweep parent run carrying the tags `identity`, reopened as RUNNING, else a new one
    (with `new_tags` too); returns (run id, whether this call created it).

    `tags`, this process's host and pid and the git commit are set either way, so they describe
    the latest invocation; the `error` tag of an earlier failed invocation is removed. When two
    processes create the same parent at once, both keep the oldest.
    """
    identity = {"tradeoff.role": "sweep", **identity}
    commit = git_commit()
    latest = {**tags, **_process_tags(), "git_commit": commit, "mlflow.source.git.commit": commit}
    found = _find_parent(client, experiment_id, identity)
    if found is None:
        all_tags = {**identity, **(new_tags or {}), **latest}
        mine = with_retries(
            client.create_run, experiment_id, run_name=run_name[:250], tags=all_tags
        ).info.run_id
        found = _find_parent(client, experiment_id, identity) or mine
        if found == mine:
            return mine, True
        with_retries(client.delete_run, mine)
    with_retries(client.update_run, found, status="RUNNING")
    with_retries(client.log_batch, found, tags=[RunTag(k, str(v)) for k, v in latest.items()])
    if "error" in with_retries(client.get_run, found).data.tags:
        with_retries(client.delete_tag, found, "error")
    return found, False


def close_parent_run(
    client: MlflowClient, run_id: str, status: str, *, experiment: str, created: bool
) -> None:
    """End a sweep's parent run, first logging the sweep's summary metrics on it (runs, runs on
    the front, hypervolume, best accuracy and certificate: `tradeoff.report.summary`).

    A parent this invocation created that holds no job run, because every job had a FINISHED
    twin elsewhere, is deleted instead: running a finished sweep again adds no empty run.
    """
    experiment_id = with_retries(client.get_run, run_id).info.experiment_id
    children = with_retries(
        client.search_runs,
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = {quote_filter(run_id)}",
        max_results=1,
    )
    if created and not children:
        with_retries(client.delete_run, run_id)
        log.info("every job was done already: the new sweep run %s is deleted", run_id)
        return
    try:
        from .report.summary import sweep_summary

        now = int(time.time() * 1000)
        metrics = sweep_summary(experiment, run_id, client.tracking_uri)
        batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        with_retries(client.log_batch, run_id, metrics=batch)
    except Exception as exc:  # the jobs' runs are safe: a summary is not worth failing over
        log.warning("could not log the summary of sweep run %s: %s", run_id, exc)
    with_retries(client.set_terminated, run_id, status)
    log.info("browse the runs: %s", runs_page(client.tracking_uri, experiment_id))


def runs_page(uri: str, experiment_id: str) -> str:
    """The MLflow UI page of an experiment's runs, every run listed (sorted by test accuracy,
    so child runs are not folded under their parent) in the UI's model-training mode.

    For a local store the address is `mlflow ui`'s default, http://127.0.0.1:5000.
    """
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    query = (
        "workflowType=machine_learning&orderByKey=metrics.%60test%2Faccuracy%60&orderByAsc=false"
    )
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"


def write_parent_file(
    sweep_dir: str | os.PathLike[str], run_id: str, experiment_id: str, uri: str
) -> None:
    """`mlflow_parent_run.json` in the sweep folder: how job processes find their parent run."""
    folder = Path(sweep_dir)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"run_id": run_id, "experiment_id": experiment_id, "uri": uri}
    (folder / PARENT_RUN_FILE).write_text(json.dumps(record))


class SweepCallback(Callback):
    """Hydra callback: the sweep's MLflow parent run, opened before any job starts and given the
    sweep's summary metrics after the last one ends.

    Running the same sweep again (same name, fixed overrides and swept keys: `sweep_key`)
    reopens its parent: a resumed sweep's jobs join the runs of the first invocation. Opening the
    store and the experiment here, once, also avoids several job processes migrating a fresh
    sqlite database at the same time.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if os.environ.get(PARENT_RUN_ENV):
            return  # an outer process already made the parent run
        uri = resolve_tracking_uri(config.tracking.get("uri"))
        try:
            check_tracking_uri(uri)
        except StoreError as exc:  # one line, before any job, as paths.OutputDirCheck does
            print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
            sys.exit(2)
        if config.hydra.sweeper.get("manages_mlflow_parent", False):
            # The sweeper (e.g. the Optuna study sweeper) makes its own parent run, once it has
            # checked its own settings: a refused sweep leaves no new store behind.
            return
        client = open_client(uri)
        exp_id = open_experiment(client, config)
        sweep = config.get("sweep") or {}
        name = sweep.get("name") or ADHOC_EXPERIMENT
        key, label = sweep_key(config)
        run_id, created = open_parent_run(
            client,
            exp_id,
            {"sweep": name, "tradeoff.sweep_key": key},
            run_name=f"sweep {name} {label}".strip(),
            tags={"sweep_dir": str(config.hydra.sweep.dir), NOTE: sweep.get("description") or ""},
        )
        os.environ[PARENT_RUN_ENV] = run_id
        reap_dead_runs(client, exp_id)
        write_parent_file(config.hydra.sweep.dir, run_id, exp_id, uri)
        self._run_id, self._client, self._created = run_id, client, created
        self._experiment = experiment_name(config)
        # Hydra skips on_multirun_end when a job failed (the sweep raises at the end): the
        # parent run is then closed as FAILED at exit, after every job has run.
        atexit.register(self._close_failed)
        log.info(
            "MLflow sweep run %s (%s) in experiment %r (%s)",
            run_id,
            "new" if created else "reopened",
            self._experiment,
            uri,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if getattr(self, "_run_id", None) is None:
            return
        atexit.unregister(self._close_failed)
        self._close("FINISHED")
        os.environ.pop(PARENT_RUN_ENV, None)

    def _close(self, status: str) -> None:
        run_id, self._run_id = self._run_id, None
        close_parent_run(
            self._client, run_id, status, experiment=self._experiment, created=self._created
        )

    def _close_failed(self) -> None:
        """At exit after a failed job, or a signal (`tradeoff.signals`): the parent FAILED, or
        KILLED with the job runs a launcher killed with it (joblib SIGKILLs its workers)."""
        run_id = getattr(self, "_run_id", None)
        if run_id is None:
            return
        status, note = "FAILED", "at least one job of the sweep failed; see the FAILED child runs"
        if signals.received() is not None:
            name = signal.Signals(signals.received()).name
            status, note = "KILLED", f"the sweep process was stopped by {name}"
        try:
            if status == "KILLED":
                experiment_id = with_retries(self._client.get_run, run_id).info.experiment_id
                reap_dead_runs(
                    self._client,
                    experiment_id,
                    status="KILLED",
                    reason=f"was stopped with its sweep ({name})",
                    parent=run_id,
                )
            with_retries(self._client.set_tag, run_id, "error", note)
            self._close(status)
        except Exception as exc:  # at interpreter exit: report, never raise
            log.warning("could not close sweep run %s: %s", run_id, exc)


def parent_run_id(sweep_dir: str | None) -> str | None:
    """The sweep's parent run: from the environment, else from the sweep directory."""
    if os.environ.get(PARENT_RUN_ENV):
        return os.environ[PARENT_RUN_ENV]
    if sweep_dir:
        path = Path(sweep_dir) / PARENT_RUN_FILE
        if path.exists():
            return json.loads(path.read_text())["run_id"]
    return None


# -- one job -----------------------------------------------------------------------------------


class RunTracker:
    """An MLflow run for one training job: start, log as training goes, end with a status."""

    def __init__(
        self,
        cfg: DictConfig,
        *,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.uri = resolve_tracking_uri(cfg.tracking.get("uri"))
        self.client = open_client(self.uri)
        self.parent_run_id = parent_run_id
        self.tags = dict(tags or {})
        self.run_id: str | None = None

    @functools.cached_property
    def experiment_id(self) -> str:
        return open_experiment(self.client, self.cfg)

    @functools.cached_property
    def config_hash(self) -> str:
        return config_hash(OmegaConf.to_container(self.cfg, resolve=True))

    def finished_twin(self) -> Run | None:
        """A FINISHED run of the same config in this experiment (what resume skips to)."""
        return find_finished(self.client, self.experiment_id, self.config_hash)

    def claim(self) -> Claim | str:
        """Claim this config for this process, so that a concurrent sweep does not train it
        too: a Claim to release once the run has ended, or who holds it ("pid 12 on host").

        A local store is claimed with a lock file beside it (`tradeoff.claims`); on a server
        store the Claim holds no lock and the store decides after `start` (`contested`)."""
        store = local_store_path(self.uri)
        if store is None:
            return Claim(None, None)
        return try_claim(store, self.experiment_id, self.config_hash)

    def contested(self, settle: float = CLAIM_SETTLE_SECONDS) -> str | None:
        """On a server store, after `start`: whether another run holds this config (a FINISHED
        one, or an older RUNNING one, oldest by start time then run id); if so this run is
        deleted and the other's id returned. Checked twice, `settle` seconds apart, so that a
        run created a moment earlier but not yet visible is seen."""
        for attempt in range(2):
            holder = self._older_twin()
            if holder is not None:
                while mlflow.active_run() is not None:
                    mlflow.end_run("KILLED")
                with_retries(self.client.delete_run, self.run_id)
                log.info("run %s deleted: run %s holds this config", self.run_id, holder)
                self.run_id = None
                return holder
            if attempt == 0 and settle > 0:
                time.sleep(settle)
        return None

    def _older_twin(self) -> str | None:
        runs = with_retries(
            self.client.search_runs,
            [self.experiment_id],
            filter_string=(
                f"tags.config_hash = {quote_filter(self.config_hash)} "
                "and tags.`tradeoff.role` = 'job'"
            ),
            max_results=1000,
        )
        runs = [r for r in runs if r.info.status in ("RUNNING", "FINISHED")]
        mine = next((r for r in runs if r.info.run_id == self.run_id), None)
        key = (mine.info.start_time, mine.info.run_id) if mine else (math.inf, "")
        for run in runs:
            if run.info.run_id == self.run_id:
                continue
            if run.info.status == "FINISHED" or (run.info.start_time, run.info.run_id) < key:
                return run.info.run_id
        return None

    def start(self) -> str:
        plain = OmegaConf.to_container(self.cfg, resolve=True)
        exp_id = self.experiment_id
        reap_dead_runs(self.client, exp_id)
        sweep = self.cfg.get("sweep", {}).get("name") or ""
        tags = {
            "sweep": sweep,
            "loss_family": str(self.cfg.loss.get("family", "")),
            "dataset": str(self.cfg.data.name),
            "model": str(self.cfg.model.name),
            "config_hash": self.config_hash,
            "git_commit": git_commit(),
            "mlflow.source.git.commit": git_commit(),
            "tradeoff.role": "job",
            **_process_tags(),
            **self.tags,
        }
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        trial = self.cfg.get("sweep", {}).get("trial")
        if trial is not None:
            tags["optuna.trial"] = str(trial)
        run = with_retries(
            self.client.create_run, exp_id, run_name=run_name(plain["loss"]), tags=tags
        )
        self.run_id = run.info.run_id
        params = [
            mlflow.entities.Param(k, v[:6000])
            for k, v in flatten(plain).items()
            if not k.startswith("hydra.")
        ]
        for i in range(0, len(params), 100):
            with_retries(self.client.log_batch, self.run_id, params=params[i : i + 100])
        with_retries(
            self.client.log_text,
            self.run_id,
            OmegaConf.to_yaml(self.cfg, resolve=True),
            "config.yaml",
        )
        # The run is also made MLflow's active run: `mlflow.pytorch.log_model` logs to it.
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.start_run(run_id=self.run_id)
        return self.run_id

    def resume(self, run_id: str) -> str:
        """Reopen run `run_id` (stopped earlier, with a checkpoint) as this process's RUNNING
        run: its `error` tag and note are removed, `tradeoff.host`/`tradeoff.pid` become this
        process's, `tradeoff.resumed` counts the resumptions, and the parent run and Optuna
        trial are those of this job. Params are not logged again: the config is the same."""
        reap_dead_runs(self.client, self.experiment_id)
        run = with_retries(self.client.get_run, run_id)
        for key in ("error", NOTE):
            if key in run.data.tags:
                with_retries(self.client.delete_tag, run_id, key)
        count = int(run.data.tags.get(RESUMED, "0")) + 1
        tags = {**_process_tags(), RESUMED: str(count)}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        trial = self.cfg.get("sweep", {}).get("trial")
        if trial is not None:  # an Optuna trial re-queued after its run was stopped
            tags["optuna.trial"] = str(trial)
        for key, value in tags.items():
            with_retries(self.client.set_tag, run_id, key, value)
        with_retries(self.client.update_run, run_id, status="RUNNING")
        self.run_id = run_id
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.start_run(run_id=run_id)
        return run_id

    def logged_steps(self, key: str) -> set[int]:
        """The steps at which this run has logged metric `key`."""
        history = with_retries(self.client.get_metric_history, self.run_id, key)
        return {m.step for m in history}

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [
            mlflow.entities.Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if math.isfinite(float(v))
        ]
        with_retries(self.client.log_batch, self.run_id, metrics=batch)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags known only once training is over (e.g. `stopped_by`: budget or epochs)."""
        for key, value in tags.items():
            with_retries(self.client.set_tag, self.run_id, key, str(value))

    def log_certificates(self, split: str, evaluation: Any) -> None:
        """Per-sample certificates with label, prediction and correctness, as parquet."""
        frame = pd.DataFrame(
            {
                "label": evaluation.labels.numpy(),
                "prediction": evaluation.predictions.numpy(),
                "correct": evaluation.correct.numpy(),
                "certificate": evaluation.radii.numpy(),
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{split}.parquet"
            frame.to_parquet(path)
            with_retries(self.client.log_artifact, self.run_id, str(path), "certificates")

    def log_models(self, model: torch.nn.Module, vanilla: torch.nn.Module) -> None:
        """The model (loadable with mlflow.pytorch.load_model) and its vanilla export."""
        from importlib.metadata import version

        reqs = [f"torch>={torch.__version__.split('+')[0]}", f"tradeoff=={version('tradeoff')}"]
        # Pickle format: the model keeps its parametrizations (LipNet pickles as recipe +
        # state_dict); MLflow's default "pt2" traces a graph, which the data-dependent
        # power-iteration loop cannot be.
        quiet = logging.getLogger("mlflow.pytorch")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # its warning about pickle is for untrusted sources
        try:
            for name, module in (("model", model), ("vanilla", vanilla)):
                mlflow.pytorch.log_model(
                    module.cpu(), name=name, pip_requirements=reqs, serialization_format="pickle"
                )
        finally:
            quiet.setLevel(level)

    def end(self, status: str = "FINISHED", error: BaseException | None = None) -> None:
        """Terminate the run; a failure records the error as a tag and in the run's note."""
        if self.run_id is None:
            return
        if error is not None:
            message = f"{type(error).__name__}: {error}"
            with_retries(self.client.set_tag, self.run_id, "error", message[:5000])
            with_retries(self.client.set_tag, self.run_id, "mlflow.note.content", message[:5000])
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            mlflow.end_run(status)
        with_retries(self.client.set_terminated, self.run_id, status)


__all__ += [
    "ADHOC_EXPERIMENT",
    "RunStatus",
    "close_parent_run",
    "ensure_experiment",
    "find_finished",
    "open_client",
    "open_experiment",
    "open_parent_run",
    "parent_run_id",
    "quote_filter",
    "reap_dead_runs",
    "runs_page",
    "sweep_key",
    "with_retries",
    "write_parent_file",
]
