"""Optuna storages, heartbeats of in-flight trials, and failing (then re-queueing) stale ones.

Under ask-and-tell Optuna's own heartbeat thread (part of `Study.optimize`) does not run, so the
sweeper beats for the trials it has in flight. RDB storages (sqlite, PostgreSQL, MySQL) keep the
heartbeats in their heartbeat table, judged by Optuna's own query for stale trials; journal
storages have no heartbeat table, so there the beat is a trial system attribute holding the
wall-clock time, judged by `fail_stale` with the same rules.
"""

from __future__ import annotations

import copy
import inspect
import logging
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from ._space import SweeperConfigError

__all__ = [
    "HEARTBEAT_ATTR",
    "Heartbeat",
    "fail_stale",
    "open_storage",
    "redact",
    "retried_numbers",
]

log = logging.getLogger(__name__)

_CREATE_ATTEMPTS = 4  # opening an RDB storage whose tables another process is creating
HEARTBEAT_ATTR = "tradeoff:heartbeat"  # journal storages: last beat, seconds since the epoch
StaleCallback = Callable[[optuna.Study, FrozenTrial], None]
Describe = Callable[[FrozenTrial], dict[str, str]]  # a stale trial's attrs, e.g. its MLflow run


def redact(url: str | None) -> str:
    """The storage URL without its password, with a relative sqlite or journal path made
    absolute: it names the study's storage in logs and in the MLflow parent run's tags."""
    if not url:
        return "memory"
    if is_journal(url):
        return f"journal:{_journal_path(url).resolve()}"
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        path = url.removeprefix("sqlite:///")
        if path and not path.startswith(":memory:"):
            return f"sqlite:///{Path(path).resolve()}"
        return url
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def is_journal(url: str) -> bool:
    """`journal:PATH`, or a plain file path ending in .log."""
    return url.startswith("journal:") or ("://" not in url and url.endswith(".log"))


def _journal_path(url: str) -> Path:
    path = url.removeprefix("journal:")
    if path.startswith("///"):
        path = path[2:]  # journal:///abs/path.log → /abs/path.log
    return Path(path)


def _quiet(fn: Callable[..., object], *args: object, **kwargs: object) -> object:
    """Call an Optuna function without its experimental/deprecation warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return fn(*args, **kwargs)


# User attributes of one failed attempt that a re-queued trial does not inherit (it keeps
# `mlflow_run_id` until its own job logs: a retry whose job finds the FINISHED run of the same
# config trains nothing and stays linked to that run).
ATTEMPT_ATTRS = ("fail_reason",)


class RetryStale:
    """Failed-stale trial callback: re-queue its parameters (at most `max_retry` times), log it,
    and let the sweeper close the trial's MLflow run (`on_stale`)."""

    def __init__(self, max_retry: int, on_stale: StaleCallback | None = None) -> None:
        self.max_retry = max_retry
        self.on_stale = on_stale

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.requeue(study, trial, "it was RUNNING without heartbeat (its process died?)")
        if self.on_stale is not None:
            try:
                self.on_stale(study, trial)
            except Exception as exc:  # bookkeeping only: never stop the study for it
                log.warning("could not close the MLflow run of trial %d: %s", trial.number, exc)

    def requeue(self, study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
        """Queue the FAILed `trial`'s parameters again unless it used up its retries."""
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        requeued = self.max_retry > 0 and len(history) <= self.max_retry
        if requeued:  # as Optuna's RetryFailedTrialCallback, without the attempt's own attrs
            system_attrs = {"failed_trial": trial.number, **trial.system_attrs}
            system_attrs["retry_history"] = history
            user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ATTEMPT_ATTRS}
            retry = optuna.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs=user_attrs,
                system_attrs=system_attrs,
            )
            study.add_trial(retry)
        log.warning(
            "trial %d marked FAIL: %s; %s",
            trial.number,
            reason,
            "its parameters are queued again" if requeued else "not re-queued (retries used up)",
        )
        return requeued


def open_storage(
    url: str | None,
    *,
    heartbeat_interval: int | None,
    grace_period: int | None,
    on_stale: RetryStale,
) -> BaseStorage | None:
    """The storage behind `hydra.sweeper.storage`; a one-line error if it cannot be opened."""
    if not url:
        return None  # in memory
    if is_journal(url):
        path = _journal_path(url)
        if not path.parent.exists():
            raise SweeperConfigError(
                f"hydra.sweeper.storage={url!r}: folder {str(path.parent)!r} does not exist; "
                "create it or point the journal elsewhere"
            )
        backend_cls = getattr(optuna.storages.journal, "JournalFileBackend", None) or (
            optuna.storages.JournalFileStorage  # optuna < 4.0 name
        )
        try:
            return JournalStorage(_quiet(backend_cls, str(path)))
        except Exception as exc:
            raise SweeperConfigError(
                f"hydra.sweeper.storage={url!r} cannot be opened: {_first_line(exc)}"
            ) from None
    if "://" not in url:
        raise SweeperConfigError(
            f"hydra.sweeper.storage={url!r} is not an Optuna storage; use an RDB URL "
            "(sqlite:///optuna.db, postgresql://user:pass@host/db), journal:PATH or a path "
            "ending in .log, or null for an in-memory study"
        )
    kwargs: dict[str, object] = {"heartbeat_interval": heartbeat_interval, "grace_period": None}
    if heartbeat_interval is not None:
        kwargs["grace_period"] = grace_period
        params = inspect.signature(RDBStorage.__init__).parameters
        key = (
            "heartbeat_stale_trial_callback"
            if "heartbeat_stale_trial_callback" in params
            else "failed_trial_callback"
        )
        kwargs[key] = on_stale
    engine_kwargs = None
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if str(path) not in ("", ":memory:") and not path.parent.exists():
            raise SweeperConfigError(
                f"hydra.sweeper.storage={url!r}: folder {str(path.parent)!r} does not exist; "
                "create it or point the storage elsewhere"
            )
        # Several sweeper processes may share the file: wait for locks instead of failing.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            return _quiet(RDBStorage, url, engine_kwargs=engine_kwargs, **kwargs)
        except Exception as exc:
            # Sweepers started together on a new database race to create its tables: the loser
            # sees a duplicate key or an existing table, and finds them made when it tries again.
            text = str(exc).lower()
            racing = any(s in text for s in ("already exists", "duplicate key", "unique"))
            if racing and attempt < _CREATE_ATTEMPTS - 1:
                time.sleep(1.0 + attempt)
                continue
            raise SweeperConfigError(
                f"hydra.sweeper.storage={redact(url)!r} cannot be opened: {_first_line(exc)}"
            ) from None
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = re.sub(r"\s+", " ", text[0]) if text else ""
    return f"{type(exc).__name__}: {message}"[:300]


def uses_rdb_heartbeat(storage: BaseStorage | None) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return storage is not None and is_heartbeat_enabled(storage)


class Heartbeat:
    """A daemon thread recording a heartbeat every `interval` s for the trials in flight."""

    def __init__(self, storage: BaseStorage | None, interval: int | None) -> None:
        self.storage = storage
        self.interval = interval
        self.enabled = interval is not None and (
            uses_rdb_heartbeat(storage) or isinstance(storage, JournalStorage)
        )
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def add(self, trial_ids: Iterable[int]) -> None:
        """Track these trials, beating for them at once (a trial never beaten is never stale)."""
        ids = list(trial_ids)
        with self._lock:
            self._ids.update(ids)
        for trial_id in ids:
            self._beat(trial_id)

    def discard(self, trial_ids: Iterable[int]) -> None:
        with self._lock:
            self._ids.difference_update(trial_ids)

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = sorted(self._ids)
            for trial_id in ids:
                self._beat(trial_id)

    def _beat(self, trial_id: int) -> None:
        if not self.enabled:
            return
        try:
            if isinstance(self.storage, JournalStorage):
                self.storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
            else:
                self.storage.record_heartbeat(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            self.discard([trial_id])
        except Exception as exc:  # a busy store: the next beat will do
            log.debug("heartbeat of trial id %d failed: %s", trial_id, exc)


def fail_stale(
    study: optuna.Study,
    *,
    heartbeat_interval: int | None,
    grace_period: int | None,
    on_stale: RetryStale,
    describe: Describe | None = None,
) -> list[int]:
    """Mark RUNNING trials whose heartbeat is older than the grace period FAIL, recording why
    (`fail_reason`) and what `describe` adds (its MLflow run), and re-queue their parameters
    (through `on_stale`); return their numbers. Safe to run from several processes at once:
    only one of them wins the FAIL transition of a trial."""
    storage = study._storage
    grace = grace_period or 2 * (heartbeat_interval or 0)  # as open_storage gave the storage
    if uses_rdb_heartbeat(storage):
        stale = storage._get_stale_trial_ids(study._study_id)
    elif isinstance(storage, JournalStorage) and heartbeat_interval is not None:
        stale = _stale_journal_trials(study, grace)
    else:
        return []
    failed = []
    for trial_id in stale:
        trial = storage.get_trial(trial_id)
        attrs = {"fail_reason": f"no heartbeat for {grace:g} s: its process died or hung"}
        if describe is not None:
            attrs.update(describe(trial))
        try:
            for key, value in attrs.items():
                storage.set_trial_user_attr(trial_id, key, value)
            won = storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process failed it first
        if won:
            failed.append(trial.number)
            on_stale(study, copy.deepcopy(storage.get_trial(trial_id)))
    return failed


def _stale_journal_trials(study: optuna.Study, grace: float) -> list[int]:
    """Ids of RUNNING trials of a journal storage whose heartbeat attribute is too old."""
    now = time.time()
    out = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = trial.system_attrs.get(HEARTBEAT_ATTR)
        if beat is not None and now - float(beat) > grace:
            out.append(trial._trial_id)
    return out


def retried_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of trials whose parameters were re-queued (they are superseded by the retry)."""
    out: set[int] = set()
    for trial in trials:
        out.update(int(n) for n in trial.system_attrs.get("retry_history", []))
    return out
