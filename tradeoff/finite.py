"""Refusing NaN and ±inf where certificates and training take their numbers in.

A certificate of a NaN input or of NaN logits is meaningless (argmax picks class 0 and the
radius is NaN), and one NaN batch poisons every weight of a run; so inputs and logits are
checked per sample, and the error names how many samples and which.
"""

from __future__ import annotations

import torch

__all__ = ["NonFiniteError", "logits_problem", "require_finite", "require_finite_logits"]

SHOWN = 10  # indices named in a message


class NonFiniteError(ValueError):
    """Inputs or logits hold NaN or ±inf."""


def _bad_rows(values: torch.Tensor) -> torch.Tensor:
    if values.ndim == 0:
        return ~torch.isfinite(values).view(1)
    return ~torch.isfinite(
        values.reshape(len(values), values[0].numel() if len(values) else 0)
    ).all(dim=1)


def _where(bad: torch.Tensor, index: torch.Tensor | None) -> tuple[int, str]:
    rows = bad.nonzero().flatten()
    if index is not None:
        rows = index.to(rows.device)[rows]
    shown = ", ".join(str(int(i)) for i in rows[:SHOWN])
    more = f", … ({len(rows) - SHOWN} more)" if len(rows) > SHOWN else ""
    return len(rows), f"[{shown}{more}]"


def require_finite(
    values: torch.Tensor, what: str, fix: str, index: torch.Tensor | None = None
) -> None:
    """Raise `NonFiniteError` if any sample (row) of `values` holds NaN or ±inf.

    `index` maps rows to the sample numbers the message names (a batch's place in its data).
    """
    bad = _bad_rows(values)
    if bool(bad.any()):
        count, where = _where(bad, index)
        raise NonFiniteError(
            f"{count} of {len(bad)} {what} hold NaN or ±inf (samples {where}); {fix}"
        )


def require_finite_logits(
    logits: torch.Tensor, inputs: torch.Tensor | None = None, index: torch.Tensor | None = None
) -> None:
    """Raise `NonFiniteError` if the logits of any sample hold NaN or ±inf: finite inputs too
    large for the model's arithmetic, or weights that are not finite."""
    problem = logits_problem(logits, inputs, index)
    if problem:
        raise NonFiniteError(
            f"{problem}: the inputs overflow the model's arithmetic or its weights are not "
            "finite; scale the inputs to the range the model was trained on, or retrain a "
            "diverged model"
        )


def logits_problem(
    logits: torch.Tensor, inputs: torch.Tensor | None = None, index: torch.Tensor | None = None
) -> str:
    """'' when every sample's logits are finite, else which samples' are not (with the largest
    |x| among their `inputs` when given)."""
    bad = _bad_rows(logits)
    if not bool(bad.any()):
        return ""
    count, where = _where(bad, index)
    largest = ""
    if inputs is not None:
        rows = inputs[bad.to(inputs.device)].abs()
        largest = f" (largest |x| among them {float(rows.max()):.3g})" if rows.numel() else ""
    return f"the logits of {count} of {len(bad)} samples {where} are NaN or ±inf{largest}"
