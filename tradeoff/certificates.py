"""Certificates: per-sample L2 radii within which the predicted class cannot change.

For logits f = h(body(x)) with a linear head h(z) = Wz + b and predicted class k, the margin
f_k − f_j changes by at most ‖W_k − W_j‖·K_body·‖δ‖ under a perturbation δ, so the radius is
min_j (f_k − f_j) / (‖W_k − W_j‖·K_body), the formula of deel-lip's `Certificate_Multiclass`
evaluated with the current weights. Without a linear head it is (f_k − f_j) / (√2·K).
Radii are in the input's own pixel space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .bounds import (
    LINEAR_CLASSES,
    REL_SLACK,
    NotLipschitzError,
    class_of,
    eval_mode,
    layer_bounds,
    leaves,
    lipschitz_bound,
)
from .finite import require_finite, require_finite_logits
from .rounding import PrecisionError, arithmetic, forward_error
from .tightness import empirical_lipschitz, jacobian_norm, margin_slopes

__all__ = [
    "Certifier",
    "NotLipschitzError",
    "PrecisionError",
    "audit",
    "certified_robust_accuracy",
    "certify",
    "certify_logits",
    "lipschitz_bound",
    "summarize",
]


@dataclass(frozen=True)
class Certifier:
    """The constants that turn logits into radii, computed once for fixed weights.

    `pair_norms[k, j]` is the Lipschitz constant of f_k − f_j: ‖W_k − W_j‖·K_body for a linear
    head, √2·K otherwise. The logits are computed in `dtype`, whose rounding moves them by at
    most `rounding_offset + rounding_slope·‖x‖` (`tradeoff.rounding`): radii hold for the
    logits as computed, in that dtype and with the float32 precision settings of `from_model`.
    """

    pair_norms: torch.Tensor
    lipschitz: float
    rounding_offset: float = 0.0
    rounding_slope: float = 0.0
    dtype: torch.dtype | None = None

    @classmethod
    def from_model(cls, model: nn.Module, input_shape: tuple[int, ...] | None = None) -> Certifier:
        """Constants of `model` as it runs in eval mode; `PrecisionError` for float16, bfloat16
        and autocast, `NotLipschitzError` for what `tradeoff.bounds` cannot bound."""
        # The walk refuses what it cannot bound (a container whose forward is not its
        # children's composition included); its last leaf is the last map the model applies.
        named = list(leaves(model))
        head = named[-1][1] if len(named) > 1 else None
        shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
        with eval_mode(model):
            error = forward_error(model, shape)
            rounding = {"rounding_offset": error.offset, "rounding_slope": error.slope}
            rounding["dtype"] = error.dtype
            if class_of(head) in LINEAR_CLASSES:
                body = math.prod(error.bounds[:-1])
                w = head.weight.detach().to(torch.float64)
                diff = _row_distances(w) * (1 + REL_SLACK)
                total = body * float(torch.linalg.matrix_norm(w, ord=2)) * (1 + REL_SLACK)
                return cls(pair_norms=(diff * body).float(), lipschitz=total, **rounding)
            total = error.lipschitz
        k = _num_outputs(model, shape)
        pair = torch.full((k, k), math.sqrt(2.0) * total)
        return cls(pair_norms=pair, lipschitz=total, **rounding)

    def radii(self, logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Per-sample certificate of the predicted class from the logits (N, K) the model
        computed on `inputs` (N, ...).

        The logits at x and at any x' within the radius are each off by at most
        e(x) = offset + slope·‖x‖, so a margin m leaves (m − 2√2·e(x) − √2·slope·r)/pair = r.
        """
        if self.dtype is not None and logits.dtype != self.dtype:
            raise PrecisionError(
                f"tradeoff.certificates: the logits are {logits.dtype} but the Certifier bounds "
                f"the rounding of {self.dtype}; compute them with the model in {self.dtype}, "
                "outside autocast"
            )
        norms = inputs.detach().flatten(1).to(torch.float64).norm(dim=1).to(logits.device)
        slack = math.sqrt(2.0) * (1 + REL_SLACK)
        deduction = 2 * slack * (self.rounding_offset + self.rounding_slope * norms)
        pair = self.pair_norms.to(logits.device, torch.float64) + slack * self.rounding_slope
        return certify_logits(logits, pair, deduction)


def _row_distances(w: torch.Tensor, block: int = 1 << 22) -> torch.Tensor:
    """‖w_k − w_j‖ for every pair of rows, each a difference then a norm in float64.

    `torch.cdist` switches above 25 rows to ‖a‖² + ‖b‖² − 2a·b, which cancels for nearly
    equal rows (to zero, or +60%), so the distances are formed directly, `block` elements of
    differences at a time, over the upper triangle, then mirrored.
    """
    w = w.detach().to(torch.float64)
    k = len(w)
    out = w.new_zeros((k, k))
    step = max(1, block // max(w.numel(), 1))
    for i in range(0, k, step):
        rows = w[i : i + step, None, :]
        out[i : i + step, i:] = torch.linalg.vector_norm(rows - w[None, i:, :], dim=-1)
    return out.triu() + out.triu(1).t()


def _num_outputs(model: nn.Module, input_shape: tuple[int, ...] | None) -> int:
    shape = input_shape if input_shape is not None else model.input_shape
    param = next(model.parameters())
    with torch.no_grad(), eval_mode(model):
        return int(model(torch.zeros((1, *shape), device=param.device)).shape[-1])


def certify_logits(
    logits: torch.Tensor, pair_norms: torch.Tensor, deduction: torch.Tensor | None = None
) -> torch.Tensor:
    """Radii min_{j≠k} (f_k − f_j − deduction) / pair_norms[k, j] with k the predicted class
    (vectorised; margins in float64, radii in the logits' dtype). `deduction` (N,) is what
    rounding may take off each margin (`Certifier.radii`)."""
    dtype, logits = logits.dtype, logits.detach()
    require_finite_logits(logits)
    if not bool((pair_norms >= 0).all()):  # NaN or negative: no radius can be trusted
        raise ValueError(
            "the certificate constants hold NaN or negative values: the model's weights are not "
            "finite; retrain or reload a model that did not diverge"
        )
    pred = logits.argmax(dim=1, keepdim=True)
    logits = logits.to(torch.float64)
    margins = logits.gather(1, pred) - logits
    if deduction is not None:
        margins = margins - deduction.to(margins)[:, None]
    denom = pair_norms[pred.squeeze(1)].to(logits.dtype)
    ratio = torch.where(
        denom > 0,
        margins / denom.clamp_min(torch.finfo(logits.dtype).tiny),
        torch.where(margins > 0, math.inf, 0.0),
    )
    ratio.scatter_(1, pred, math.inf)
    radii = ratio.min(dim=1).values.clamp_min(0.0)
    rounded = radii.to(dtype)
    return torch.where(rounded.to(radii) > radii, rounded.nextafter(rounded.new_zeros(())), rounded)


def certify(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Per-sample L2 certificate of `model` (eval mode, current weights) on inputs `x`.

    Refuses (`NonFiniteError`) inputs holding NaN or ±inf, and finite inputs whose logits are
    not finite, naming the samples.
    """
    require_finite(x, "inputs", "certificates exist only for finite inputs: drop or repair them")
    arithmetic(model, x)  # PrecisionError for float16, bfloat16 and autocast
    certifier = Certifier.from_model(model, tuple(x.shape[1:]))
    with torch.no_grad(), eval_mode(model):
        logits = torch.cat([model(batch) for batch in x.split(batch_size)])
    require_finite_logits(logits, x)
    return certifier.radii(logits, x)


def certified_robust_accuracy(
    radii: torch.Tensor, correct: torch.Tensor, eps: float | Sequence[float]
) -> float | list[float]:
    """Share of samples that are correct and certified beyond `eps` (CRA@eps)."""
    if isinstance(eps, (int, float)):
        return float(((radii > eps) & correct).float().mean())
    return [certified_robust_accuracy(radii, correct, e) for e in eps]


def summarize(
    logits: torch.Tensor, y: torch.Tensor, radii: torch.Tensor, eps: Sequence[float] = ()
) -> dict[str, float]:
    """Accuracy, mean certificate (all samples), mean certificate (0 when wrong) and CRA@eps."""
    correct = logits.argmax(dim=1) == y
    out = {
        "accuracy": float(correct.float().mean()),
        "mean_certificate": float(radii.mean()),
        "mean_certificate_correct": float((radii * correct).mean()),
    }
    for e in eps:
        out[f"cra_eps_{e:g}"] = certified_robust_accuracy(radii, correct, float(e))
    return out


def audit(
    model: nn.Module,
    input_shape: tuple[int, ...] | None = None,
    *,
    x: torch.Tensor | None = None,
    n_iter: int = 50,
    seed: int = 0,
) -> list[dict[str, object]]:
    """Each layer's bound against an empirical lower bound, the same for the whole model, and
    given samples `x`, for the margins that set their certificates.

    `ratio` = bound / lower bound ≥ 1 is how loose the bound can be (`tradeoff.tightness`):
    near 1 it is tight; large, the certificates are likely smaller than they could be. Lower
    bounds: a layer's, power iteration at a random point (exact for linear layers); the
    model's ("model"), power iteration at random points and at the first samples of `x`;
    the margins' ("margins"), at the sample of `x` (first 256) whose certificate's margin
    f_k − f_j has the steepest gradient against its certified constant, that gradient's norm.
    """
    shape = tuple(input_shape if input_shape is not None else model.input_shape)
    if x is not None:
        require_finite(x, "samples", "audit them only once they are finite")
    gen = torch.Generator().manual_seed(seed)
    param = next(model.parameters(), None)
    like = param.detach() if param is not None else torch.zeros(())
    rows: list[dict[str, object]] = []
    with eval_mode(model):
        for row in layer_bounds(model, shape):
            start = torch.rand((1, *row.input_shape), generator=gen, dtype=like.dtype)
            lower = jacobian_norm(row.module, start.to(like.device), n_iter, gen)
            rows.append(
                _audit_row(row.name, type(row.module).__name__, row.input_shape, row.bound, lower)
            )
        total = lipschitz_bound(model, shape)
        lower = empirical_lipschitz(model, input_shape=shape, n_iter=n_iter, seed=seed)
        if x is not None:
            lower = max(lower, empirical_lipschitz(model, x, n_iter=n_iter, seed=seed))
        rows.append(_audit_row("model", type(model).__name__, shape, total, lower))
        if x is not None:
            pair = Certifier.from_model(model, shape).pair_norms
            constant, slope = margin_slopes(model, x[:256].to(like.device), pair)
            steepness = torch.where(constant > 0, slope / constant, -math.inf)
            i = int(steepness.argmax())
            if constant[i] > 0:
                rows.append(
                    _audit_row("margins", "certificate", shape, float(constant[i]), float(slope[i]))
                )
    return rows


def _audit_row(name: str, kind: str, shape, bound: float, lower: float) -> dict[str, object]:
    return {
        "layer": name,
        "type": kind,
        "input_shape": tuple(shape),
        "bound": bound,
        "empirical": lower,
        "ratio": bound / lower if lower > 0 else math.inf,
    }
