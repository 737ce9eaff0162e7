"""`build_report`: read the runs, fetch what the front pages need, write PDF + PNG + CSV, and
attach them to the sweep parent runs of the runs drawn.

Every output is written to a temporary file in its destination folder and renamed into place
only once all three are complete, so a failure never leaves a half-written or empty report.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages

from ..paths import OutputDirError, writable_dir
from ..watchdog import pid_alive
from .attach import attach_report, sweep_parents
from .data import ReportData, curve_runs
from .frame import (
    DEFAULT_X,
    DEFAULT_Y,
    ReportError,
    RunSelection,
    default_reference,
    front_table,
    hypervolume,
    metric_column,
    nondominated,
    pareto_front,
    seed_repeats,
    select_runs,
)
from .pages import HERO, render
from .style import RC

__all__ = ["build_report", "default_out", "outputs"]

_TEMP_MARK = "~"  # between the writing process's pid and mkstemp's random part


def default_out(experiments: Sequence[str]) -> Path:
    """`reports/<experiment>.pdf`; several experiments are joined with `+`."""
    name = "+".join(experiments).replace(os.sep, "_")
    return Path("reports") / f"{name}.pdf"


def outputs(out: Path) -> tuple[Path, Path, Path]:
    """The PDF and, beside it, `<stem>_front.png` (the front page) and `<stem>_front.csv` (the
    table)."""
    return out, out.with_name(f"{out.stem}_front.png"), out.with_name(f"{out.stem}_front.csv")


def _val_metric(name: str, fallback: str, runs: pd.DataFrame) -> str:
    """The per-epoch validation counterpart of a test metric (test/x → val/x), if logged."""
    if name.startswith("test/"):
        candidate = "val/" + name.removeprefix("test/")
        if f"metrics.{candidate}" in runs:
            return candidate
    return fallback


def _fetch(client, runs: pd.DataFrame, metrics: Iterable[str]) -> tuple[dict, dict]:
    """Per-sample certificates and metric histories of the given runs (None where missing)."""
    from mlflow.exceptions import MlflowException

    certificates: dict[str, pd.DataFrame | None] = {}
    histories: dict[str, dict[str, pd.DataFrame]] = {}
    quiet = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # no progress bar per artifact
    with tempfile.TemporaryDirectory() as tmp, _environ(quiet):
        for run_id in runs["run_id"]:
            try:
                path = client.download_artifacts(run_id, "certificates/test.parquet", tmp)
                frame = pd.read_parquet(path)
                ok = {"correct", "certificate"} <= set(frame.columns)
                certificates[run_id] = frame if ok else None
            except (MlflowException, OSError, ValueError):
                certificates[run_id] = None
            histories[run_id] = {}
            for metric in metrics:
                points = client.get_metric_history(run_id, metric)
                histories[run_id][metric] = pd.DataFrame(
                    {"step": [p.step for p in points], "value": [p.value for p in points]}
                ).sort_values("step")
    return certificates, histories


def _report_data(
    selection: RunSelection,
    x: str,
    y: str,
    reference: Sequence[float] | None,
    table_name: str,
    z: Sequence[str] = (),
    by: str | None = None,
) -> tuple[ReportData, pd.DataFrame]:
    """The pages' data and the front table, before the per-run artifacts are fetched: one row
    per config, its seed repeats folded into their means (`frame.seed_repeats`)."""
    runs = seed_repeats(selection.runs)
    x_col, y_col = metric_column(runs, x), metric_column(runs, y)
    z_cols = tuple(metric_column(runs, m) for m in z)
    x, y = x_col.removeprefix("metrics."), y_col.removeprefix("metrics.")
    runs["on_front"] = pareto_front(runs, x_col, y_col)
    objectives = (x_col, y_col, *z_cols)
    # One value per objective (checked by `hypervolume`); the first two bound the 2-d front's.
    reference_all = tuple(reference or default_reference(runs, *objectives))
    reference = reference_all[:2]
    data = ReportData(
        runs=runs,
        experiments=selection.experiments,
        x=x,
        y=y,
        x_col=x_col,
        y_col=y_col,
        reference=(float(reference[0]), float(reference[1])),
        hypervolume=hypervolume(runs, x_col, y_col, reference),
        tracking_uri=selection.tracking_uri,
        parent=selection.parent,
        not_finished=selection.not_finished,
        curve_metrics=(
            _val_metric(y, "val/accuracy", runs),
            _val_metric(x, "val/mean_certificate", runs),
        ),
        table_name=table_name,
        degenerate=_left_out(selection.degenerate, runs),
        z=tuple(c.removeprefix("metrics.") for c in z_cols),
        z_cols=z_cols,
        reference_all=tuple(float(v) for v in reference_all),
        hypervolume_all=hypervolume(runs, x_col, y_col, reference_all, z=z_cols),
        nondominated_all=int(nondominated(runs, objectives).sum()),
        by=by,
    )
    return data, front_table(runs, x_col, y_col)


def _left_out(degenerate: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The degenerate runs that are not among `runs` (all, unless --include-degenerate)."""
    if degenerate.empty:
        return degenerate
    drawn = set(runs["seed_run_ids"].str.split(",").explode()) if "seed_run_ids" in runs else set()
    return degenerate[~degenerate["run_id"].isin(drawn | set(runs["run_id"]))]


def _fetch_curves(selection: RunSelection, data: ReportData) -> None:
    """The certificates and metric histories of the front runs the radius and curves pages draw."""
    runs, _ = curve_runs(data)
    data.certificates, data.histories = _fetch(selection.client, runs, data.curve_metrics)


def build_report(
    experiments: str | Sequence[str],
    out: str | os.PathLike[str] | None = None,
    *,
    tracking_uri: str | None = None,
    parent: str | None = None,
    x: str = DEFAULT_X,
    y: str = DEFAULT_Y,
    reference: Sequence[float] | None = None,
    attach: bool = True,
    include_degenerate: bool = False,
    z: Sequence[str] = (),
    where: Mapping[str, str] | None = None,
    by: str | None = None,
) -> Path:
    """Write the Pareto report of `experiments` to `out` (default `reports/<experiment>.pdf`)
    with `<stem>_front.png` and `<stem>_front.csv` beside it; return the PDF's path. With
    `attach`, the three files also become artifacts (`report/`) of the sweep parent runs
    whose job runs the report draws (`--parent`'s run alone when given). `reference`: the
    hypervolume's reference point, by default `frame.default_reference` (0 for accuracy and
    robustness, above the largest cost for a cost axis), one value per objective.

    `z`: further objectives (e.g. `train/seconds`); the summary page gives the hypervolume of
    all the objectives, x, y and `z`, and how many runs no other dominates in all of them; the
    pages draw x against y. Seed repeats of a config (runs that differ only in `train.seed`)
    are drawn as one point, their mean, with error bars of one standard deviation.

    Runs tagged degenerate (robust by doing nothing) are left out and listed on the summary
    page, unless `include_degenerate`.

    `where`: only the runs with these params, e.g. `{"data.name": "fashion_mnist"}` when an
    experiment holds runs on several datasets.

    `by`: a param (e.g. `model.layer`) whose values colour the runs, get a front each and
    title the legends, instead of the loss family; the cost page then compares those groups.
    By default the param the experiments' sweeps name (`sweep.group_by`) when they agree,
    else the loss family.

    Raises ReportError for an unknown experiment or parent run, an experiment without
    FINISHED job runs, or a metric no run has; nothing is written then.
    """
    selection = select_runs(
        experiments, tracking_uri, parent, include_degenerate=include_degenerate, where=where
    )
    pdf_path, png_path, csv_path = outputs(Path(out) if out else default_out(selection.experiments))
    by = by or selection.group_by
    data, table = _report_data(selection, x, y, reference, csv_path.name, z, by)
    try:
        writable_dir(pdf_path.parent, "--out")
    except OutputDirError as exc:
        raise ReportError(
            f"--out={str(pdf_path)!r}: its folder cannot be written ({exc.reason}); "
            "choose an --out in a writable folder"
        ) from None
    _fetch_curves(selection, data)
    temps: list[Path] = []
    _remove_stale_temps(pdf_path.parent)
    try:
        with matplotlib.rc_context(RC):
            pages = render(data, table)
            pdf_tmp = _temp(pdf_path, temps)
            with PdfPages(pdf_tmp, metadata=_metadata(data)) as pdf:
                for figures in pages.values():
                    for fig in figures:
                        pdf.savefig(fig)
            png_tmp = _temp(png_path, temps)
            pages[HERO][0].savefig(png_tmp, dpi=150, format="png")
        csv_tmp = _temp(csv_path, temps)
        table.to_csv(csv_tmp, index=False, float_format="%.6g")
        for tmp, final in ((csv_tmp, csv_path), (png_tmp, png_path), (pdf_tmp, pdf_path)):
            os.replace(tmp, final)
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    if attach:
        parents = sweep_parents(selection.runs, selection.parent)
        attach_report(selection.client, parents, (pdf_path, png_path, csv_path))
    return pdf_path


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _temp(final: Path, temps: list[Path]) -> Path:
    """A new empty file beside `final` (same filesystem, so os.replace is atomic), with the
    permissions a plainly created file would get (mkstemp's are owner-only)."""
    fd, name = tempfile.mkstemp(
        prefix=f".{final.stem}.{os.getpid()}{_TEMP_MARK}",
        suffix=f"{final.suffix}.tmp",
        dir=final.parent,
    )
    os.close(fd)
    temps.append(Path(name))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


def _remove_stale_temps(folder: Path) -> None:
    """Remove the temporary files (`.<stem>.<pid>~<random>.<ext>.tmp`) of reports whose process
    died before it could (a SIGKILL); those of live processes are theirs."""
    for ext in ("pdf", "png", "csv"):
        for path in folder.glob(f".*{_TEMP_MARK}*.{ext}.tmp"):
            pid = path.name.split(_TEMP_MARK, 1)[0].rsplit(".", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    path.unlink()


def _metadata(data: ReportData) -> dict[str, str]:
    return {
        "Title": f"tradeoff report: {', '.join(data.experiments)}",
        "Subject": f"Pareto front of {data.y} vs {data.x}",
        "Creator": "tradeoff-report",
    }
