"""Text on the pages: metric names as axis labels, numbers, wrapped paragraphs."""

from __future__ import annotations

import math
import textwrap

from .frame import maximised, radius_label

__all__ = ["CERTIFICATE_UNIT", "axis_hint", "metric_label", "number", "wrap", "wrap_words"]

_METRIC_NAMES = {
    "accuracy": "accuracy",
    "mean_certificate": "mean certificate",
    "mean_certificate_correct": "mean certificate of correct samples",
    "lipschitz_bound": "Lipschitz bound",
    "loss": "loss",
    "seconds": "seconds (wall clock)",
    "peak_memory_mb": "peak memory (MiB)",
    "params": "parameters",
    "images_per_second": "images per second",
}


# What a certificate is, said on every axis that shows one.
CERTIFICATE_UNIT = "L2 radius, input pixel scale"


def metric_label(name: str, unit: bool = False) -> str:
    """A readable axis label: `test/cra_eps_0.5` → `test CRA at ε = 0.5`; with `unit`, a
    certificate metric says what it measures: `test mean certificate (L2 radius, input pixel
    scale)`."""
    base = name.removeprefix("metrics.")
    split, _, key = base.rpartition("/")
    if key.startswith("cra_eps_"):
        try:
            text = f"CRA at ε = {radius_label(float(key.removeprefix('cra_eps_')))}"
        except ValueError:
            text = key
    else:
        text = _METRIC_NAMES.get(key, key.replace("_", " "))
    if unit and "certificate" in key:
        text += f" ({CERTIFICATE_UNIT})"
    return f"{split} {text}".strip()


def axis_hint(metric: str, more: str) -> str:
    """The axis hint of `metric`: `→  more <more>` when maximised, `←  less` when minimised."""
    return f"  →  more {more}" if maximised(metric) else "  ←  less (better)"


def number(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def wrap_words(text: str, width: int) -> str:
    """Wrap at spaces only: headers such as `hyperparameters` stay whole."""
    return "\n".join(textwrap.wrap(text, width, break_long_words=False)) or text


def wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.fill(p, width) for p in text.split("\n"))
