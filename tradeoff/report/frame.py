"""Finished MLflow job runs as a pandas DataFrame, their Pareto front and its hypervolume.

One row per FINISHED job run (tag `tradeoff.role=job`), with the columns `mlflow.search_runs`
would give (`params.loss.tau`, `metrics.test/accuracy`, `tags.loss_family`, ...) plus a few
plain ones (`run_id`, `experiment`, `status`, `run_name`, `loss_family`, `config`, `on_front`).
Runs whose configs differ only in `train.seed` share `config` (the config hash without the seed):
they are seed repeats, which `seed_repeats` folds into one row of means and spreads. The front
and hypervolume, of two objectives or more, come from `moocore`. Accuracy and robustness
metrics are maximised; what a run spent (`train/seconds`, `train/peak_memory_mb`,
`model/params`) and losses are minimised (`maximised`), so `--x train/seconds` draws the front
of accuracy against cost.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import moocore
import numpy as np
import pandas as pd

from .. import stores
from ..degenerate import TAG as DEGENERATE
from ..losses import FAMILIES

__all__ = [
    "COST_METRICS",
    "DEFAULT_X",
    "DEFAULT_Y",
    "REFERENCE",
    "SEED_PARAM",
    "ReportError",
    "RunSelection",
    "check_store",
    "cra_columns",
    "default_reference",
    "front_table",
    "hyperparameters",
    "hypervolume",
    "load_runs",
    "maximised",
    "metric_column",
    "nondominated",
    "pareto_front",
    "radius_label",
    "seed_repeats",
    "select_runs",
    "spread_column",
    "varying_params",
]

DEFAULT_X = "test/mean_certificate"
DEFAULT_Y = "test/accuracy"
# Hypervolume reference point: the worst possible corner for two maximised objectives that are
# both >= 0 (accuracy, certificate radius, CRA). Points not better than it contribute nothing.
REFERENCE: tuple[float, float] = (0.0, 0.0)
# What a run spent, logged by every run since the recipe's cost metrics: the report's cost axes.
COST_METRICS = ("train/seconds", "train/peak_memory_mb", "model/params")
# Metrics where less is better, besides losses; every other metric is maximised.
_MINIMISED = ("train/seconds", "train/epoch_seconds", "train/peak_memory_mb", "model/params")

# The param that tells seed repeats of one config apart.
SEED_PARAM = "train.seed"
DATA_PARAM = "params.data.name"

_PAGE = 1000  # runs per search page


class ReportError(ValueError):
    """A problem with what the report was asked to read: the message says what and how to fix."""


@dataclass
class RunSelection:
    """The FINISHED job runs of some experiments, and what was left out of them and why."""

    runs: pd.DataFrame
    experiments: list[str]
    tracking_uri: str
    parent: str | None = None
    # experiment -> {status: count} of job runs that are not FINISHED (not counted).
    not_finished: dict[str, dict[str, int]] = field(default_factory=dict)
    client: Any = None  # the MlflowClient that read them, for artifacts and metric histories
    # FINISHED runs tagged degenerate (robust by doing nothing), left out of `runs` unless
    # asked for; their reason is in the column `degenerate`.
    degenerate: pd.DataFrame = field(default_factory=pd.DataFrame)
    # The param the experiments' sweeps group their runs by (`sweep.group_by`), when they agree.
    group_by: str | None = None


# -- store access ------------------------------------------------------------------------------


def _resolve_uri(tracking_uri: str | None) -> str:
    """`tracking_uri`, else $MLFLOW_TRACKING_URI, else MLflow's default sqlite:///mlflow.db."""
    from ..tracking import resolve_tracking_uri  # imported here: it imports mlflow

    return resolve_tracking_uri(tracking_uri)


def _check_store(uri: str) -> None:
    """A local store must exist: opening a missing sqlite file would silently create one."""
    parsed = urlparse(uri)
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
    elif parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else uri)
    else:
        return
    if not path.exists():
        raise ReportError(
            f"no MLflow store at {uri!r} ({path} does not exist); run the report where the "
            "sweep ran or pass --tracking-uri"
        )


def check_store(uri: str) -> None:
    """A usable store, in seconds: known scheme, reachable server, an existing MLflow file."""
    try:
        stores.check_store(uri, "--tracking-uri", create=False)
    except stores.StoreError as exc:
        raise ReportError(str(exc)) from None
    _check_store(uri)


def _numeric_or_str(values: pd.Series) -> pd.Series:
    """Params are strings in MLflow: make a column numeric when every value is a number."""
    converted = pd.to_numeric(values, errors="coerce")
    if converted[values.notna()].notna().all() and values.notna().any():
        return converted
    return values


def _rows(
    client, experiment_ids: list[str], parent: str | None, where: Mapping[str, str]
) -> list[dict]:
    """Every job run of the experiments (any status) whose params match `where`, one flat dict
    each, with `config`: the hash of its params without the seed, as `tracking.config_hash`
    hashes a run's config."""
    from ..tracking import config_hash

    filters = ["tags.`tradeoff.role` = 'job'"]
    if parent:
        filters.append(f"tags.`mlflow.parentRunId` = '{parent}'")
    filters += [f"params.`{key}` = '{value}'" for key, value in where.items()]
    rows: list[dict] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=" and ".join(filters),
            max_results=_PAGE,
            page_token=token,
        )
        for run in page:
            info, data = run.info, run.data
            tags = data.tags
            row: dict = {
                "run_id": info.run_id,
                "experiment_id": info.experiment_id,
                "status": info.status,
                "run_name": info.run_name or tags.get("mlflow.runName", ""),
                "loss_family": tags.get("loss_family") or data.params.get("loss.family", ""),
                "config": config_hash({k: v for k, v in data.params.items() if k != SEED_PARAM}),
                "parent_run_id": tags.get("mlflow.parentRunId"),
                "start_time": pd.to_datetime(info.start_time, unit="ms", utc=True),
                "end_time": pd.to_datetime(info.end_time, unit="ms", utc=True)
                if info.end_time
                else pd.NaT,
            }
            row.update({f"params.{k}": v for k, v in data.params.items()})
            row.update({f"metrics.{k}": v for k, v in data.metrics.items()})
            row.update({f"tags.{k}": v for k, v in tags.items()})
            rows.append(row)
        token = page.token
        if not token:
            return rows


def select_runs(
    experiments: str | Sequence[str],
    tracking_uri: str | None = None,
    parent: str | None = None,
    *,
    include_degenerate: bool = False,
    where: Mapping[str, str] | None = None,
) -> RunSelection:
    """Read the job runs of `experiments` whose params match `where` (e.g. `{"data.name":
    "fashion_mnist"}`); raise ReportError for an unknown experiment, an unknown parent run, or
    an experiment without any FINISHED job run. Runs tagged degenerate are set aside
    (`RunSelection.degenerate`) unless `include_degenerate`. Runs on several datasets are
    reported with a warning: their fronts are not comparable."""
    names = [experiments] if isinstance(experiments, str) else list(dict.fromkeys(experiments))
    if not names:
        raise ReportError("give at least one experiment name")
    where = dict(where or {})
    for key, value in where.items():
        if not key or "`" in key or "'" in str(value):
            raise ReportError(
                f"where {key}={value!r}: a param name without backticks and a value without "
                "quotes, e.g. data.name=fashion_mnist"
            )
    uri = _resolve_uri(tracking_uri)
    check_store(uri)
    from ..tracking import GROUP_BY, open_client  # imported here: mlflow is slow to import

    client = open_client(uri)
    ids: dict[str, str] = {}
    grouping: set[str | None] = set()
    for name in names:
        exp = client.get_experiment_by_name(name)
        if exp is None or exp.lifecycle_stage == "deleted":
            known = sorted(e.name for e in client.search_experiments() if e.name != "Default")
            hint = ", ".join(known) if known else "none"
            state = "is deleted" if exp is not None else "not found"
            raise ReportError(f"experiment {name!r} {state} in {uri}; experiments there: {hint}")
        ids[name] = exp.experiment_id
        grouping.add(exp.tags.get(GROUP_BY) or None)
    if parent:
        from mlflow.exceptions import MlflowException

        try:
            parent_run = client.get_run(parent)
        except MlflowException:
            raise ReportError(f"parent run {parent!r} not found in {uri}") from None
        if parent_run.info.experiment_id not in ids.values():
            raise ReportError(
                f"parent run {parent!r} belongs to experiment id {parent_run.info.experiment_id}, "
                f"not to {', '.join(names)}"
            )
    rows = _rows(client, list(ids.values()), parent, where)
    by_id = {v: k for k, v in ids.items()}
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["run_id", "experiment_id", "status"])
    frame.insert(1, "experiment", frame["experiment_id"].map(by_id))
    not_finished: dict[str, dict[str, int]] = {}
    for name in names:
        mine = frame[frame["experiment"] == name]
        others = mine[mine["status"] != "FINISHED"]["status"].value_counts()
        not_finished[name] = {str(k): int(v) for k, v in others.items()}
        if not (mine["status"] == "FINISHED").any():
            scope = f" under parent run {parent}" if parent else ""
            scope += "".join(f" with {k}={v}" for k, v in where.items())
            what = ", ".join(f"{v} {k}" for k, v in not_finished[name].items()) or "none at all"
            raise ReportError(
                f"experiment {name!r} has no FINISHED job runs{scope} (job runs: {what}); "
                "run a sweep into it first, e.g. `tradeoff-sweep quick`"
            )
    finished = frame[frame["status"] == "FINISHED"].copy()
    order = {name: i for i, name in enumerate(names)}
    finished["_order"] = finished["experiment"].map(order)
    finished = finished.sort_values(["_order", "start_time"], kind="stable").drop(columns="_order")
    finished = finished.dropna(axis=1, how="all").reset_index(drop=True)
    _warn_mixed_data(finished)
    for col in [c for c in finished.columns if c.startswith("params.")]:
        finished[col] = _numeric_or_str(finished[col])
    for col in [c for c in finished.columns if c.startswith("metrics.")]:
        finished[col] = _infinite(finished[col])
    reason = finished.get(f"tags.{DEGENERATE}", pd.Series(np.nan, index=finished.index))
    finished["degenerate"] = reason.where(reason.notna() & (reason != ""), None)
    flagged = finished["degenerate"].notna()
    degenerate = finished[flagged].reset_index(drop=True)
    if not include_degenerate:
        finished = finished[~flagged].reset_index(drop=True)
        for name in names:
            if not (finished["experiment"] == name).any():
                raise ReportError(
                    f"every FINISHED job run of experiment {name!r} is degenerate (at or below "
                    "chance accuracy, or certificates beyond the inputs' diameter); "
                    "--include-degenerate draws them anyway"
                )
    group_by = grouping.pop() if len(grouping) == 1 else None
    return RunSelection(finished, names, uri, parent, not_finished, client, degenerate, group_by)


def _warn_mixed_data(runs: pd.DataFrame) -> None:
    datasets = sorted(runs.get(DATA_PARAM, pd.Series(dtype=object)).dropna().astype(str).unique())
    if len(datasets) > 1:
        logging.getLogger("tradeoff.report").warning(
            "warning: the runs were trained on %d datasets (%s), whose fronts are not "
            "comparable; choose one with --where data.name=%s",
            len(datasets),
            ", ".join(datasets),
            datasets[0],
        )


def _infinite(values: pd.Series) -> pd.Series:
    """Metric values with MLflow's stand-ins for ±inf (it stores ±1.797e308) made ±inf again:
    such a run is then skipped for that metric, not drawn 300 digits out."""
    numbers = pd.to_numeric(values, errors="coerce")
    huge = np.finfo(float).max
    return numbers.mask(numbers >= huge, np.inf).mask(numbers <= -huge, -np.inf)


# -- metrics, front, hypervolume ---------------------------------------------------------------


def metric_column(df: pd.DataFrame, name: str, *, required: bool = True) -> str:
    """The column of metric `name` (`test/accuracy` or `metrics.test/accuracy`); ReportError
    naming the available metrics when no run has it (with `required=False`: when there is no
    such column at all, so an empty selection is not an error)."""
    for col in (name, f"metrics.{name}"):
        if col in df.columns and (not required or df[col].notna().any()):
            return col
    available = sorted(c.removeprefix("metrics.") for c in df.columns if c.startswith("metrics."))
    shown = [m for m in available if m.startswith("test/")] or available
    raise ReportError(
        f"no run has metric {name.removeprefix('metrics.')!r}; metrics the runs have: "
        + (", ".join(shown) or "none")
    )


def maximised(metric: str) -> bool:
    """Whether more of `metric` is better: False for cost (seconds, memory, parameters) and
    losses, True for accuracy, certificates, CRA and throughput (`train/images_per_second`)."""
    name = metric.removeprefix("metrics.")
    return not (name in _MINIMISED or name.endswith("/loss"))


def default_reference(df: pd.DataFrame, *metrics: str) -> tuple[float, ...]:
    """The hypervolume's reference point for objectives `metrics`: 0 on a maximised axis (the
    worst accuracy or radius), and 1.1 × the largest value on a minimised one (cost has no
    natural worst value)."""
    _, points = _points(df, *metrics)
    ref = []
    for i, metric in enumerate(metrics):
        worst = float(points[:, i].max()) if len(points) else 0.0
        ref.append(0.0 if maximised(metric) else 1.1 * worst if worst > 0 else 1.0)
    return tuple(ref)


def _points(df: pd.DataFrame, *metrics: str) -> tuple[np.ndarray, np.ndarray]:
    """(finite-row mask, the n×k array of those rows' values of the k `metrics`)."""
    columns = [metric_column(df, m, required=False) for m in metrics]
    values = df[columns].astype(float).to_numpy()
    mask = np.isfinite(values).all(axis=1) if len(values) else np.zeros(0, dtype=bool)
    return mask, values[mask]


def nondominated(df: pd.DataFrame, objectives: Sequence[str]) -> pd.Series:
    """True for the runs no other run dominates in `objectives` (two or more), each maximised
    or minimised as `maximised` says.

    Rows missing a metric are False. Duplicated points are all kept (neither dominates the
    other), so runs with identical results are all marked.
    """
    mask, points = _points(df, *objectives)
    out = np.zeros(len(df), dtype=bool)
    if len(points):
        directions = [maximised(m) for m in objectives]
        out[mask] = moocore.is_nondominated(points, maximise=directions, keep_weakly=True)
    return pd.Series(out, index=df.index, name="on_front")


def pareto_front(df: pd.DataFrame, x: str, y: str) -> pd.Series:
    """True for the runs no other run dominates in `x` and `y` (`nondominated` of the two)."""
    return nondominated(df, (x, y))


def hypervolume(
    df: pd.DataFrame,
    x: str,
    y: str,
    reference: Iterable[float] | None = REFERENCE,
    *,
    z: Sequence[str] = (),
) -> float:
    """Area (volume, with further objectives `z`) dominated by the runs' (x, y, *z), each
    maximised or minimised as `maximised` says, and bounded by `reference`, one value per
    objective (None: `default_reference`).

    The default reference (0, 0) is the worst corner for accuracy and certificate radii;
    points not strictly better than the reference in every objective add nothing.
    """
    objectives = (x, y, *z)
    if reference is None:
        reference = default_reference(df, *objectives)
    ref = [float(v) for v in reference]
    if len(ref) != len(objectives) or not all(math.isfinite(v) for v in ref):
        raise ReportError(
            f"the hypervolume reference must be {len(objectives)} finite numbers, one per "
            f"objective ({', '.join(objectives)}), got {ref}"
        )
    _, points = _points(df, *objectives)
    if not len(points):
        return 0.0
    directions = [maximised(m) for m in objectives]
    return float(moocore.hypervolume(points, ref=ref, maximise=directions))


def spread_column(column: str) -> str:
    """The column `seed_repeats` gives the standard deviation of metric column `column`."""
    return "std." + column.removeprefix("metrics.")


def seed_repeats(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per config: the runs of one experiment that differ only in their seed (same
    `config`, distinct `train.seed`) become one row of the means of their metrics, with
    `spread_column` holding each metric's sample standard deviation (NaN for a single run),
    `seeds` how many runs and `seed_run_ids` their ids; the other columns are those of the
    config's first run. A config with one seed keeps its row, and so do runs that repeat a seed
    (or logged none): they are not seed repeats.

    A metric one repeat lacks (or logged as ±inf) is averaged over the repeats that have it."""
    seed = f"params.{SEED_PARAM}"
    if runs.empty or "config" not in runs or seed not in runs:
        return runs.assign(seeds=1, seed_run_ids=runs.get("run_id", pd.Series(dtype=str)))
    metrics = [c for c in runs.columns if c.startswith("metrics.")]
    keys = [c for c in ("experiment", "config") if c in runs]
    rows = []
    for _, group in runs.groupby(keys, sort=False, dropna=False):
        seeds = group[seed].astype(str).where(group[seed].notna())
        if len(group) > 1 and (seeds.isna().any() or seeds.duplicated().any()):
            for _, single in group.iterrows():  # not seed repeats: each run its own row
                rows.append(single.copy())
                rows[-1]["seeds"], rows[-1]["seed_run_ids"] = 1, single["run_id"]
            continue
        row = group.iloc[0].copy()
        row["seeds"] = len(group)
        row["seed_run_ids"] = ",".join(group["run_id"].astype(str))
        values = group[metrics].astype(float).where(np.isfinite(group[metrics].astype(float)))
        if len(group) > 1:
            row[metrics] = values.mean().where(values.notna().any(), group.iloc[0][metrics])
        for col, std in values.std(ddof=1).items():
            row[spread_column(col)] = std
        rows.append(row)
    order = {run_id: i for i, run_id in enumerate(runs["run_id"])}
    out = pd.DataFrame(rows).infer_objects()
    out = out.iloc[np.argsort([order[r] for r in out["run_id"]], kind="stable")]
    out["seeds"] = out["seeds"].astype(int)
    return out.reset_index(drop=True)


def load_runs(
    experiments: str | Sequence[str],
    tracking_uri: str | None = None,
    parent: str | None = None,
    *,
    x: str = DEFAULT_X,
    y: str = DEFAULT_Y,
    include_degenerate: bool = False,
    where: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One row per FINISHED job run of `experiments` (children of `parent` if given, with the
    params `where` gives), without the runs tagged degenerate unless `include_degenerate`
    (their reason: column `degenerate`).

    Columns: run_id, experiment, experiment_id, status, run_name, loss_family, `config` (the
    config's hash without `train.seed`: seed repeats share it; `seed_repeats` folds them into
    one row each), parent_run_id, start_time, end_time, `params.*` (numeric where every value
    is a number), `metrics.*` (the last value logged), `tags.*`, and `on_front`: whether the
    run is on the Pareto front of (`x`, `y`) over all the runs (False when `x` or `y` is
    missing). Raises ReportError.
    """
    runs = select_runs(
        experiments, tracking_uri, parent, include_degenerate=include_degenerate, where=where
    ).runs
    for name in (x, y):
        metric_column(runs, name)
    runs["on_front"] = pareto_front(runs, x, y)
    return runs


# -- labels and the front table ----------------------------------------------------------------


def _fmt(value: object) -> str:
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return f"{float(value):.3g}"
    return str(value)


def varying_params(runs: pd.DataFrame) -> list[str]:
    """The params besides the loss's that tell `runs` apart: `optim.lr`, `model.layer`, ... —
    what front labels add to the loss's. Left out: what does not change a run's result (as
    the config hash, `tracking.semantic`), the seed once seed repeats are folded into one row
    (`seed_repeats`), and a param unset in some runs where that alone tells nothing: a null
    value (a key newer runs log with its default), or an option of one choice of its config
    group when the choice itself differs (`schedule.div_factor` beside `schedule.name`)."""
    from ..tracking import semantic  # imported here: it imports mlflow, slow to import

    folded = "seeds" in runs and bool((runs["seeds"] > 1).any())
    text = {
        col.removeprefix("params."): runs[col].astype(str).where(runs[col].notna(), "None")
        for col in sorted(c for c in runs.columns if c.startswith("params."))
    }
    out = []
    for key, values in text.items():
        if key.startswith("loss.") or not semantic(key) or (folded and key == SEED_PARAM):
            continue
        if values.nunique() < 2:
            continue
        group = key.rsplit(".", 1)[0] if "." in key else ""
        choice = [text.get(f"{group}.{k}") for k in ("name", "_target_")]
        chosen = any(c is not None and c.nunique() > 1 for c in choice)
        if chosen and key.rsplit(".", 1)[-1] not in ("name", "_target_"):
            values = values[values != "None"]  # compare where this option exists
        if values.nunique() > 1:
            out.append(key)
    return out


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """`optim.lr` → `lr`, `optim._target_` → `optim`, `schedule.name` → `schedule`; the whole
    key where two would clash."""
    short = {k: k.removesuffix("._target_").removesuffix(".name").rsplit(".", 1)[-1] for k in keys}
    clashes = {n for n in short.values() if list(short.values()).count(n) > 1}
    return {k: (k if n in clashes else n) for k, n in short.items()}


def hyperparameters(row: pd.Series, greek: bool = False, extra: Sequence[str] = ()) -> str:
    """The run's loss hyperparameters in a few characters: `tau=3`, `m=1 a=30` (τ, α if greek),
    then its values of the params `extra` (`varying_params`: what else tells the runs apart),
    e.g. `tau=10 lr=1e+03`."""
    family = str(row.get("loss_family", ""))
    described = FAMILIES.get(family)
    parts = []
    if described is None:  # unknown family: the run name without the family
        name = str(row.get("run_name", "")).removeprefix(family).strip()
        parts += [name] if name else []
    for hp in described.hyperparameters if described else ():
        value = row.get(f"params.{hp.param}")
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            parts.append(f"{hp.symbol if greek else hp.short}={_fmt(value)}")
    for key, name in _short_names(list(extra)).items():
        value = row.get(f"params.{key}")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        text = str(value).rsplit(".", 1)[-1] if key.endswith("._target_") else _fmt(value)
        parts.append(f"{name}={text}")
    if not parts:
        return "—" if greek else ""
    return ", ".join(parts) if greek else " ".join(parts)


def radius_label(eps: float) -> str:
    """`36/255` for radii that are a whole number of 8-bit pixel steps, else `0.5`."""
    steps = eps * 255
    plain = f"{eps:g}"
    if len(plain.replace("0.", "").replace(".", "")) > 3 and abs(steps - round(steps)) < 1e-3:
        return f"{round(steps)}/255"
    return plain


def cra_columns(df: pd.DataFrame, split: str = "test") -> list[tuple[float, str]]:
    """(radius, column) of every `metrics.<split>/cra_eps_<e>` column some run has, by radius."""
    prefix = f"metrics.{split}/cra_eps_"
    out = []
    for col in df.columns:
        if col.startswith(prefix) and df[col].notna().any():
            try:
                out.append((float(col.removeprefix(prefix)), col))
            except ValueError:
                continue
    return sorted(out)


def front_table(runs: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The runs on the front of (x, y), most accurate first: run id, experiment, loss,
    hyperparameters, y, x and the certified robust accuracy at each radius. For rows that fold
    seed repeats (`seed_repeats`, some with `seeds` > 1): the number of seeds after the
    hyperparameters, and each metric's standard deviation over the seeds after the CRAs."""
    x_col, y_col = metric_column(runs, x), metric_column(runs, y)
    front = runs[pareto_front(runs, x, y)]
    front = front.sort_values([y_col, x_col], ascending=[False, True], kind="stable")
    table = pd.DataFrame(
        {
            "run_id": front["run_id"],
            "experiment": front["experiment"],
            "run_name": front["run_name"],
            "loss_family": front["loss_family"],
            "hyperparameters": [
                hyperparameters(r, extra=varying_params(runs)) for _, r in front.iterrows()
            ],
            y_col.removeprefix("metrics."): front[y_col].astype(float),
            x_col.removeprefix("metrics."): front[x_col].astype(float),
        }
    )
    for _, col in cra_columns(runs):
        name = col.removeprefix("metrics.")
        if name not in table.columns:
            table[name] = front[col].astype(float) if col in front else np.nan
    if "seeds" in runs and (runs["seeds"] > 1).any():
        table.insert(table.columns.get_loc("hyperparameters") + 1, "seeds", front["seeds"])
        for name in [c for c in table.columns if "/" in c]:
            spread = spread_column(name)
            table[spread] = front[spread].astype(float) if spread in front else np.nan
    return table.reset_index(drop=True)
