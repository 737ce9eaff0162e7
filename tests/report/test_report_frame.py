"""The front and hypervolume against brute force, and the pages drawn from a synthetic frame."""

from __future__ import annotations

import colorsys
import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.text import Annotation, Text

from tradeoff.report import (
    FAMILY_COLOURS,
    PAGE_TITLES,
    ReportError,
    front_table,
    hypervolume,
    pareto_front,
)
from tradeoff.report.data import ReportData, curve_runs
from tradeoff.report.frame import cra_columns, hyperparameters, metric_column, radius_label
from tradeoff.report.labels import metric_label
from tradeoff.report.pages import render_pages
from tradeoff.report.pages.curves import page_curves
from tradeoff.report.pages.front import MAX_LABELS, page_front
from tradeoff.report.pages.hyper import page_hyper
from tradeoff.report.pages.radius import page_radius
from tradeoff.report.style import family_colour

# -- brute force -------------------------------------------------------------------------------


def brute_front(points: np.ndarray) -> np.ndarray:
    """O(n²): a point is on the front unless another is >= in both and > in one (maximised)."""
    n = len(points)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if i != j and (points[j] >= points[i]).all() and (points[j] > points[i]).any():
                keep[i] = False
                break
    return keep


def brute_hypervolume(points: np.ndarray, ref: tuple[float, float]) -> float:
    """Sum of rectangles: between consecutive distinct x coordinates right of ref, the height
    of the region dominated there is the best y of the points at least that far right."""
    rx, ry = ref
    xs = sorted({rx, *(float(x) for x in points[:, 0] if x > rx)})
    total = 0.0
    for left, right in itertools.pairwise(xs):
        ys = [y for x, y in points if x >= right and y > ry]
        if ys:
            total += (right - left) * (max(ys) - ry)
    return total


def _frame(points: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"metrics.cert": points[:, 0], "metrics.acc": points[:, 1]})


@pytest.mark.parametrize("seed", range(12))
def test_front_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    # Rounded to one decimal: many exact ties in x, in y and whole duplicated points.
    points = np.round(rng.random((n, 2)), 1)
    if n > 3:
        points[1] = points[0]
    got = pareto_front(_frame(points), "cert", "acc").to_numpy()
    np.testing.assert_array_equal(got, brute_front(points))


def test_front_ignores_rows_missing_a_metric():
    df = pd.DataFrame(
        {"metrics.cert": [0.1, np.nan, 0.5, 0.2], "metrics.acc": [0.9, 1.0, np.nan, 0.1]},
        index=[10, 11, 12, 13],
    )
    front = pareto_front(df, "metrics.cert", "metrics.acc")
    assert front.index.tolist() == [10, 11, 12, 13]
    assert front.tolist() == [True, False, False, True]


@pytest.mark.parametrize("seed", range(12))
def test_hypervolume_matches_sum_of_rectangles(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 50))
    points = np.round(rng.random((n, 2)), 1)
    df = _frame(points)
    assert hypervolume(df, "cert", "acc", (0, 0)) == pytest.approx(
        brute_hypervolume(points, (0.0, 0.0)), abs=1e-12
    )
    # A reference inside the cloud: points not better than it in both add nothing.
    ref = (0.3, 0.2)
    assert hypervolume(df, "cert", "acc", ref) == pytest.approx(
        brute_hypervolume(points, ref), abs=1e-12
    )
    # Only the front matters.
    front = df[pareto_front(df, "cert", "acc")]
    assert hypervolume(front, "cert", "acc") == pytest.approx(hypervolume(df, "cert", "acc"))


def test_hypervolume_known_values():
    df = _frame(np.array([[0.5, 0.5], [0.2, 0.9], [0.1, 0.1]]))
    assert hypervolume(df, "cert", "acc") == pytest.approx(0.5 * 0.5 + 0.2 * 0.9 - 0.2 * 0.5)
    assert hypervolume(df.iloc[0:0], "cert", "acc") == 0.0
    with pytest.raises(ReportError, match="reference"):
        hypervolume(df, "cert", "acc", (0.0, float("nan")))


def test_metric_column_names_the_available_metrics():
    df = pd.DataFrame({"metrics.test/accuracy": [0.9], "metrics.val/accuracy": [0.8]})
    assert metric_column(df, "test/accuracy") == "metrics.test/accuracy"
    assert metric_column(df, "metrics.test/accuracy") == "metrics.test/accuracy"
    with pytest.raises(ReportError, match=r"no run has metric 'test/nope'.*test/accuracy"):
        metric_column(df, "test/nope")


def test_labels():
    assert radius_label(36 / 255) == "36/255"
    assert radius_label(0.2823529412) == "72/255"
    assert radius_label(0.5) == "0.5"
    assert radius_label(1.58) == "1.58"
    assert metric_label("test/cra_eps_0.141176") == "test CRA at ε = 36/255"
    assert metric_label("metrics.test/mean_certificate") == "test mean certificate"
    hkr = pd.Series({"loss_family": "hkr", "params.loss.min_margin": 1.0, "params.loss.alpha": 30})
    assert hyperparameters(hkr) == "m=1 a=30"
    assert hyperparameters(hkr, greek=True) == "m=1, α=30"
    assert hyperparameters(pd.Series({"loss_family": "tau_cce", "params.loss.tau": 3.0})) == "tau=3"
    assert set(FAMILY_COLOURS) == {"tau_cce", "hkr", "kr", "hinge", "offset_ce"}
    assert family_colour("something_new") == family_colour("something_new")


# -- pages from a synthetic frame --------------------------------------------------------------


def synthetic_runs(n_tau: int = 7, n_hkr: int = 12, seed: int = 0) -> pd.DataFrame:
    """Finished runs shaped like `load_runs` output: accuracy falls as robustness rises."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_tau + n_hkr):
        family = "tau_cce" if i < n_tau else "hkr"
        robust = rng.random()
        acc = 0.95 - 0.5 * robust + rng.normal(0, 0.03)
        row = {
            "run_id": f"{i:032x}",
            "experiment": "synthetic",
            "status": "FINISHED",
            "loss_family": family,
            "params.data.name": "digits",
            "params.model.name": "seed_conv",
            "params.train.epochs": 2,
            "metrics.test/accuracy": acc,
            "metrics.test/mean_certificate": 0.05 + 0.4 * robust,
            "start_time": pd.Timestamp("2025-01-01", tz="UTC"),
            "tags.git_commit": "0123456789abcdef",
        }
        for eps in (36 / 255, 72 / 255, 0.5):
            row[f"metrics.test/cra_eps_{eps:g}"] = acc * np.exp(-eps / (0.1 + robust))
        if family == "tau_cce":
            row["params.loss.tau"] = float(10 ** rng.uniform(-0.5, 2.5))
        else:
            row["params.loss.min_margin"] = float(rng.choice([0.1, 1.0]))
            row["params.loss.alpha"] = float(rng.choice([10.0, 100.0]))
        row["run_name"] = f"{family} {hyperparameters(pd.Series(row))}"
        rows.append(row)
    return pd.DataFrame(rows)


def synthetic_data(runs: pd.DataFrame) -> ReportData:
    x, y = "metrics.test/mean_certificate", "metrics.test/accuracy"
    runs = runs.copy()
    runs["on_front"] = pareto_front(runs, x, y)
    return ReportData(
        runs=runs,
        experiments=sorted(runs["experiment"].unique()),
        x="test/mean_certificate",
        y="test/accuracy",
        x_col=x,
        y_col=y,
        reference=(0.0, 0.0),
        hypervolume=hypervolume(runs, x, y),
    )


def _page_text(fig) -> str:
    texts = [t.get_text() for t in fig.findobj(Text)]
    return "\n".join(texts)


def test_pages_render_with_notes_for_missing_data():
    data = synthetic_data(synthetic_runs())
    table = front_table(data.runs, data.x_col, data.y_col)
    figures = render_pages(data, table)
    assert len(figures) == len(PAGE_TITLES)
    for fig, title in zip(figures, PAGE_TITLES, strict=True):
        fig.canvas.draw()  # nothing raises while drawing
        assert fig.get_suptitle().startswith(title)
    # No certificate artifacts and no learning curves were fetched: notes, not failures.
    assert "no per-sample certificate artifact" in _page_text(figures[4])
    assert "history logged" in _page_text(figures[5])
    only_kr = synthetic_runs(n_tau=3, n_hkr=0).assign(loss_family="kr")
    page = page_hyper(synthetic_data(only_kr))
    assert "none of these runs has a loss hyperparameter to draw" in _page_text(page)
    assert "kr (a loss without hyperparameters)" in _page_text(page)


def _panels(fig) -> list:
    fig.canvas.draw()
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


@pytest.mark.parametrize(("n_tau", "n_hkr", "rows"), [(5, 0, 1), (0, 8, 1), (7, 12, 2)])
def test_hyperparameter_page_is_filled_by_the_families_present(n_tau, n_hkr, rows):
    """No empty panel: a sweep of one family gets the whole page, two families a row each."""
    page = page_hyper(synthetic_data(synthetic_runs(n_tau=n_tau, n_hkr=n_hkr)))
    panels = _panels(page)
    assert len(panels) == 2 * rows
    assert all(ax.axison and (ax.collections or ax.lines or ax.images) for ax in panels)
    assert min(ax.get_position().height for ax in panels) > 0.6 / rows
    assert "no HKR runs" not in _page_text(page) and "no tau_cce runs" not in _page_text(page)
    assert len([ax for ax in page.axes if ax.get_label() == "<colorbar>"]) == 2 * (n_hkr > 0)


def test_front_page_of_one_family_draws_no_family_front():
    """With one loss family its front is the overall front: drawn and explained once."""
    one = _page_text(page_front(synthetic_data(synthetic_runs(n_tau=7, n_hkr=0))))
    two = _page_text(page_front(synthetic_data(synthetic_runs())))
    assert "front of a family" not in one and "Thin dashed steps" not in one
    assert "front of a family" in two and "Thin dashed steps" in two


def _curves(data: ReportData) -> ReportData:
    """Per-sample certificates and two epochs of history for every front run."""
    rng = np.random.default_rng(0)
    for _, row in data.front.iterrows():
        radius = rng.exponential(float(row[data.x_col]), 100)
        correct = rng.random(100) < float(row[data.y_col])
        data.certificates[row["run_id"]] = pd.DataFrame({"correct": correct, "certificate": radius})
        data.histories[row["run_id"]] = {
            metric: pd.DataFrame({"step": [1, 2], "value": [v / 2, v]})
            for metric, v in zip(
                data.curve_metrics, (row[data.y_col], row[data.x_col]), strict=True
            )
        }
    return data


def _hue(colour) -> float:
    return colorsys.rgb_to_hls(*to_rgb(colour))[0]


@pytest.mark.parametrize("page", [page_radius, page_curves])
def test_every_front_run_has_its_own_shade_of_its_family_colour(page):
    data = _curves(synthetic_data(synthetic_runs()))
    front, _ = curve_runs(data)  # the front runs drawn (at most MAX_CURVES)
    assert front["loss_family"].value_counts().min() >= 2  # runs of one family to tell apart
    fig = page(data)
    for ax in _panels(fig):
        runs = [line for line in ax.lines if line.get_linewidth() > 1.5 and line.get_ls() != "None"]
        colours = [to_rgb(line.get_color()) for line in runs]
        assert len(runs) == len(front) and len(set(colours)) == len(front)
        for family, colour in zip(front["loss_family"], colours, strict=True):
            assert _hue(colour) == pytest.approx(_hue(family_colour(family)), abs=0.02)
    legend = _page_text(fig)
    assert all(str(r)[:8] in legend for r in front["run_id"])
    assert set(front["loss_family"]) <= set(legend.splitlines())  # a heading per family


def test_certificate_axes_say_what_a_certificate_is():
    unit = "L2 radius, input pixel scale"
    assert metric_label("test/mean_certificate", unit=True) == f"test mean certificate ({unit})"
    assert metric_label("test/accuracy", unit=True) == "test accuracy"
    data = _curves(synthetic_data(synthetic_runs()))
    assert unit in page_front(data).axes[0].get_xlabel()
    assert "L2 distance, input pixel scale" in page_radius(data).axes[0].get_xlabel()
    assert unit in _panels(page_curves(data))[1].get_ylabel()
    assert unit in _panels(page_hyper(data))[1].get_ylabel()


def test_front_labels_do_not_overlap_and_many_points_get_a_subset():
    # 40 runs all on the front (accuracy strictly falls as the certificate rises).
    n = 40
    runs = synthetic_runs(n_tau=n, n_hkr=0)
    runs["metrics.test/mean_certificate"] = np.linspace(0.05, 0.5, n)
    runs["metrics.test/accuracy"] = np.linspace(0.95, 0.4, n)
    data = synthetic_data(runs)
    assert data.runs["on_front"].all()
    fig = page_front(data)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [a for a in fig.axes[0].texts if isinstance(a, Annotation)]
    assert 2 <= len(labels) <= MAX_LABELS
    boxes = [Text.get_window_extent(a, renderer) for a in labels]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    assert f"Labels on {MAX_LABELS} of the {n} front runs" in _page_text(fig).replace("\n", " ")
    # 40 front runs: the table goes on over two pages.
    figures = render_pages(data, front_table(data.runs, data.x_col, data.y_col))
    assert len(figures) == len(PAGE_TITLES) + 1
    assert [f.get_suptitle() for f in figures[-2:]] == [
        f"{PAGE_TITLES[-1]} (1/2)",
        f"{PAGE_TITLES[-1]} (2/2)",
    ]


def test_front_table_columns_and_order():
    data = synthetic_data(synthetic_runs())
    table = front_table(data.runs, data.x_col, data.y_col)
    assert list(table.columns[:7]) == [
        "run_id",
        "experiment",
        "run_name",
        "loss_family",
        "hyperparameters",
        "test/accuracy",
        "test/mean_certificate",
    ]
    assert [c for c in table.columns if "cra" in c] == [
        c.removeprefix("metrics.") for _, c in cra_columns(data.runs)
    ]
    assert set(table["run_id"]) == set(data.runs.loc[data.runs["on_front"], "run_id"])
    assert table["test/accuracy"].is_monotonic_decreasing
