"""Degenerate runs: robust by doing nothing.

A run is degenerate when its test accuracy is at or below chance (the share of the test set's
most frequent class: what always answering that class scores), or when a certificate exceeds
the diameter of the box its inputs lie in (the ball then holds every possible input: the model
gives every input the same class). Such a run ends FINISHED but is tagged `degenerate` with the
reason, and reports keep it off fronts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is not imported at run time: the report reads TAG without it
    import torch

__all__ = ["TAG", "chance_accuracy", "diameter", "why_degenerate"]

TAG = "degenerate"  # the run tag holding the reason


def chance_accuracy(labels: torch.Tensor) -> float:
    """The accuracy of always answering the most frequent class of `labels`."""
    if labels.numel() == 0:
        return 0.0
    return float(labels.flatten().long().bincount().max()) / labels.numel()


def diameter(inputs: torch.Tensor) -> float:
    """The L2 diameter of the box [min, max]^d that the samples `inputs` (N × ...) lie in:
    sqrt(d) for pixels in [0, 1]."""
    if inputs.numel() == 0:
        return 0.0
    d = inputs[0].numel()
    return math.sqrt(d) * float(inputs.max() - inputs.min())


def why_degenerate(
    accuracy: float, labels: torch.Tensor, radii: torch.Tensor, box_diameter: float
) -> str | None:
    """The reason a run with this test accuracy, labels and certificates is degenerate, or None."""
    chance = chance_accuracy(labels)
    if accuracy <= chance + 1e-6:  # accuracy is a float32 mean: 37/360 reads 0.1027777791
        return f"test accuracy {accuracy:.4g} is at or below chance ({chance:.4g})"
    largest = float(radii.max()) if radii.numel() else 0.0
    if largest > box_diameter:
        return (
            f"a certificate of {largest:.4g} exceeds the inputs' diameter {box_diameter:.4g} "
            "(the model gives every input one class)"
        )
    return None
