"""`tradeoff-report --by PARAM`: a config param's values, not the loss family, colour the runs,
get a front each, title the legends and a summary row; without it nothing changes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from test_report_frame import _page_text, synthetic_data, synthetic_runs

from tradeoff.report import ReportError, hypervolume, pareto_front
from tradeoff.report.data import GROUP
from tradeoff.report.pages.front import page_front
from tradeoff.report.pages.summary import page_summary
from tradeoff.report.style import GROUP_COLOURS, family_colour

LAYERS = ("aol", "cayley", "lot")


def _by_layer() -> tuple:
    """Synthetic runs of two loss families spread over three layer families, grouped by layer."""
    runs = synthetic_runs()
    runs["params.model.layer"] = [LAYERS[i % len(LAYERS)] for i in range(len(runs))]
    data = synthetic_data(runs)
    return data, dataclasses.replace(data, by="model.layer")


def _legend_entries(fig) -> dict[str, str]:
    """Legend label -> colour of the point entries (headings have no marker)."""
    out = {}
    for legend in fig.legends:
        for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
            if getattr(handle, "get_marker", lambda: "")() == "o" and text.get_text() != (
                "overall front"
            ):
                out[text.get_text()] = to_hex(handle.get_color())
    return out


def test_default_groups_are_the_loss_families_in_their_colours():
    plain, _ = _by_layer()
    assert plain.group_title == "loss family"
    assert plain.groups() == plain.families() == ["tau_cce", "hkr"]
    assert list(plain.runs[GROUP]) == list(plain.runs["loss_family"])
    legend = _legend_entries(page_front(plain))
    assert legend == {f: to_hex(family_colour(f)) for f in ("tau_cce", "hkr")}


def test_by_a_param_colours_titles_and_fronts_by_its_values():
    _, data = _by_layer()
    assert data.groups() == list(LAYERS)
    assert data.group_title == "model.layer"
    fig = page_front(data)
    assert _legend_entries(fig) == {g: GROUP_COLOURS[i] for i, g in enumerate(LAYERS)}
    text = _page_text(fig)
    assert "model.layer" in text and "front of a model.layer" in text
    assert "colour = model.layer" in text
    # One dashed front per layer, through exactly that layer's own Pareto-optimal runs.
    ax = fig.axes[0]
    dashed = {to_hex(line.get_color()): line for line in ax.get_lines() if line.get_ls() == "--"}
    assert set(dashed) == set(GROUP_COLOURS[: len(LAYERS)])
    for i, layer in enumerate(LAYERS):
        sub = data.runs[data.runs["params.model.layer"] == layer]
        best = sub[pareto_front(sub, data.x_col, data.y_col)]
        xs = np.sort(dashed[GROUP_COLOURS[i]].get_xdata().astype(float))
        np.testing.assert_allclose(xs, np.sort(best[data.x_col].to_numpy(float)))


def test_summary_has_a_row_per_group_with_its_best_runs():
    _, data = _by_layer()
    runs = data.runs.assign(**{"metrics.train/images_per_second": 100.0})
    data = dataclasses.replace(data, runs=runs)
    text = _page_text(page_summary(data))
    assert "Per model.layer" in text and "Per family" not in text
    for layer in LAYERS:
        sub = data.runs[data.runs["params.model.layer"] == layer]
        acc = sub["metrics.test/accuracy"].max()
        cert = sub["metrics.test/mean_certificate"].max()
        hv = hypervolume(sub, data.x_col, data.y_col, data.reference)
        assert (
            f"{layer}: best test accuracy {acc:.4g}, best test mean certificate {cert:.4g}, "
            f"hypervolume {hv:.4f} ({len(sub)} runs), 100 images/s"
        ) in text
    assert "FINISHED job runs (aol 7, cayley 6, lot 6)" in text


def test_by_a_param_no_run_logged_is_refused_naming_the_params_they_did():
    plain, _ = _by_layer()
    with pytest.raises(ReportError, match=r"--by model\.lay: .* model\.layer"):
        dataclasses.replace(plain, by="model.lay")


def test_runs_without_the_param_form_a_group_named_none():
    runs = synthetic_runs()
    runs["params.model.layer"] = pd.Series(["aol"] * 5 + [None] * (len(runs) - 5))
    data = dataclasses.replace(synthetic_data(runs), by="model.layer")
    assert data.groups() == ["None", "aol"]
