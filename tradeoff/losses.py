"""Classification losses for 1-Lipschitz networks, with deel-lip's (TensorFlow) conventions.

The formulas, defaults and hyperparameter meanings follow deel-lip (TF) exactly, so that numbers
from the TF seed experiments carry over (e.g. HKR's ``alpha`` is unbounded: the seed uses 50 and
30). Every loss is an ``nn.Module`` taking ``logits`` of shape (N, C) and integer class ids of
shape (N,), and returns the mean over the batch as a scalar tensor.

Notation: f = logits, C = number of classes, y = true class.

- `TauCrossEntropy`: softmax cross-entropy at temperature 1/tau, rescaled by 1/tau.
- `MulticlassKR`: the one-vs-rest Kantorovich-Rubinstein (Wasserstein-1 dual) estimate, +KR
  (a quantity to maximise; also usable as a metric). `NegKR` is the loss −KR.
- `MulticlassHinge`: deel-lip's one-vs-rest hinge with margin ``min_margin / 2`` per side.
- `MulticlassHKR`: −KR + alpha·Hinge.
- `OffsetCrossEntropy`: Prach & Lampert (2022, AOL) cross-entropy with the true logit lowered by
  an offset, at a temperature.

Each loss family describes itself once, in `FAMILIES`: its class, its hyperparameters (config
key, short name for run names, symbol and axis label for the report) and its colour. Run names
(`tradeoff.tracking.run_name`) and the report's labels, columns and pages derive from it, so a
new loss touches only this module and its `conf/loss/<family>.yaml`. `LOSSES` maps the family
names to the classes; `create` builds one.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FAMILIES",
    "KR_EPS",
    "LOSSES",
    "Hyperparameter",
    "LossFamily",
    "MulticlassHKR",
    "MulticlassHinge",
    "MulticlassKR",
    "NegKR",
    "OffsetCrossEntropy",
    "TauCrossEntropy",
    "create",
    "multiclass_hinge",
    "multiclass_hkr",
    "multiclass_kr",
    "offset_cross_entropy",
    "tau_cross_entropy",
]

KR_EPS = 1e-7
"""deel-lip's epsilon in the KR class averages (a class absent from the batch gives 0/eps = 0)."""

_DEFAULT_OFFSET = math.sqrt(2.0)
_DEFAULT_TEMPERATURE = 0.25


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------


def _check_param(
    name: str,
    value: Any,
    *,
    positive: bool,
    allow_inf: bool = False,
    meaning: str,
) -> float:
    """Return ``value`` as a float, or raise naming the parameter, the value and the range.

    ``positive`` selects (0, ...) instead of [0, ...); ``allow_inf`` admits +inf.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(
            f"{name} must be a real number (got {value!r} of type "
            f"{type(value).__name__}); {meaning}"
        )
    v = float(value)
    low = "(0" if positive else "[0"
    high = "inf]" if allow_inf else "inf)"
    rule = f"{'> 0' if positive else '>= 0'}{'' if allow_inf else ' and finite'}"
    ok = not math.isnan(v) and (v > 0 if positive else v >= 0) and (allow_inf or math.isfinite(v))
    if not ok:
        raise ValueError(f"{name} must be {rule}, i.e. in {low}, {high} (got {value!r}); {meaning}")
    return v


_TAU_MEANING = (
    "tau is the softmax temperature factor: the loss is cross_entropy(tau * logits, y) / tau"
)
_MARGIN_MEANING = (
    "min_margin is the hinge margin between the true logit and each other logit "
    "(each side must clear min_margin / 2)"
)
_ALPHA_MEANING = (
    "alpha weighs the hinge against KR in -KR + alpha * hinge (unbounded, as in deel-lip TF; "
    "alpha = inf means hinge only, alpha = 0 means -KR only)"
)
_TEMPERATURE_MEANING = (
    "temperature divides the offset logits inside the softmax and multiplies the loss"
)
_OFFSET_MEANING = "offset is subtracted from the true-class logit before the softmax"


def _check_inputs(logits: Tensor, target: Tensor) -> Tensor:
    """Check shapes, dtypes and label range cheaply; return ``target`` as int64.

    The range check is one vectorised reduction (one host sync); it turns what would be an
    opaque indexing error (or a device-side assert on GPU) into a clear message.
    """
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise TypeError(
            f"logits and target must be tensors (got {type(logits).__name__} and "
            f"{type(target).__name__})"
        )
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got shape {tuple(logits.shape)}")
    n, c = logits.shape
    if c < 2:
        raise ValueError(f"logits must have C >= 2 classes, got shape {tuple(logits.shape)}")
    if n == 0:
        raise ValueError("the batch is empty (logits of shape (0, C)); the mean loss is undefined")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if target.ndim != 1 or target.shape[0] != n:
        raise ValueError(
            f"target must hold class ids of shape (N,) = ({n},) to match logits of shape "
            f"{tuple(logits.shape)}, got shape {tuple(target.shape)} (one-hot or probability "
            "targets are not accepted)"
        )
    if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
        raise ValueError(f"target must be integer class ids (int64), got dtype {target.dtype}")
    target = target.long()
    if bool(((target < 0) | (target >= c)).any()):
        raise ValueError(
            f"target holds class ids outside [0, {c}) (min {int(target.min())}, "
            f"max {int(target.max())}) for logits with C = {c} classes"
        )
    return target


def _compute_dtype(logits: Tensor) -> Tensor:
    """Upcast half precision to float32, so that KR_EPS (1e-7) does not underflow to 0."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        return logits.float()
    return logits


# ---------------------------------------------------------------------------------------------
# Kernels (inputs already checked)
# ---------------------------------------------------------------------------------------------


def _tau_ce(f: Tensor, y: Tensor, tau: float) -> Tensor:
    return F.cross_entropy(tau * f, y) / tau


def _kr(f: Tensor, y: Tensor) -> Tensor:
    f = _compute_dtype(f)
    onehot = F.one_hot(y, f.shape[1]).to(f.dtype)
    rest = 1.0 - onehot
    avg_pos = (onehot * f).sum(dim=0) / (onehot.sum(dim=0) + KR_EPS)
    avg_neg = (rest * f).sum(dim=0) / (rest.sum(dim=0) + KR_EPS)
    return (avg_pos - avg_neg).mean()


def _hinge(f: Tensor, y: Tensor, min_margin: float) -> Tensor:
    f = _compute_dtype(f)
    c = f.shape[1]
    onehot = F.one_hot(y, c).to(f.dtype)
    sign = 2.0 * onehot - 1.0
    per_class = F.relu(min_margin / 2.0 - sign * f)
    weight = 1.0 + (c - 2.0) * onehot  # (C - 1) on the true class, 1 elsewhere
    return (per_class * weight).mean(dim=1).mean()


def _hkr(f: Tensor, y: Tensor, alpha: float, min_margin: float) -> Tensor:
    if math.isinf(alpha):
        return _hinge(f, y, min_margin)
    if alpha == 0.0:
        return -_kr(f, y)
    return alpha * _hinge(f, y, min_margin) - _kr(f, y)


def _offset_ce(f: Tensor, y: Tensor, offset: float, temperature: float) -> Tensor:
    onehot = F.one_hot(y, f.shape[1]).to(f.dtype)
    return temperature * F.cross_entropy((f - offset * onehot) / temperature, y)


# ---------------------------------------------------------------------------------------------
# Functional API
# ---------------------------------------------------------------------------------------------


def tau_cross_entropy(logits: Tensor, target: Tensor, tau: float) -> Tensor:
    """``cross_entropy(tau * logits, target) / tau`` (deel-lip's TauCategoricalCrossentropy)."""
    tau = _check_param("tau", tau, positive=True, meaning=_TAU_MEANING)
    return _tau_ce(logits, _check_inputs(logits, target), tau)


def multiclass_kr(logits: Tensor, target: Tensor) -> Tensor:
    """+KR: mean over classes of (mean f_c on class c − mean f_c on the other classes).

    Class averages use deel-lip's one-hot masks with ``KR_EPS`` in the denominators, so for a
    class absent from the batch the positive average is 0 (its negative average is still the
    mean of f_c over the whole batch). Higher is better; use it as a metric.
    """
    return _kr(logits, _check_inputs(logits, target))


def multiclass_hinge(logits: Tensor, target: Tensor, min_margin: float = 1.0) -> Tensor:
    """deel-lip's MulticlassHinge: mean_c relu(min_margin/2 − s_c f_c), true term × (C − 1)."""
    min_margin = _check_param("min_margin", min_margin, positive=False, meaning=_MARGIN_MEANING)
    return _hinge(logits, _check_inputs(logits, target), min_margin)


def multiclass_hkr(
    logits: Tensor, target: Tensor, alpha: float = 10.0, min_margin: float = 1.0
) -> Tensor:
    """−KR + alpha·Hinge (deel-lip TF MulticlassHKR; alpha = inf: hinge only)."""
    alpha = _check_param("alpha", alpha, positive=False, allow_inf=True, meaning=_ALPHA_MEANING)
    min_margin = _check_param("min_margin", min_margin, positive=False, meaning=_MARGIN_MEANING)
    return _hkr(logits, _check_inputs(logits, target), alpha, min_margin)


def offset_cross_entropy(
    logits: Tensor,
    target: Tensor,
    offset: float = _DEFAULT_OFFSET,
    temperature: float = _DEFAULT_TEMPERATURE,
) -> Tensor:
    """``temperature * cross_entropy((logits − offset·onehot(y)) / temperature, y)``."""
    offset = _check_param("offset", offset, positive=False, meaning=_OFFSET_MEANING)
    temperature = _check_param(
        "temperature", temperature, positive=True, meaning=_TEMPERATURE_MEANING
    )
    return _offset_ce(logits, _check_inputs(logits, target), offset, temperature)


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


class _LossBase(nn.Module):
    """Common plumbing: input checks in `forward`, `hparams`, and an `extra_repr` from them."""

    family: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()

    def hparams(self) -> dict[str, float]:
        """The hyperparameters, as plain floats, in the constructor's order."""
        return {name: getattr(self, name) for name in _constructor_params(type(self))}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean loss over the batch; ``logits`` (N, C) float, ``target`` (N,) class ids."""
        return self._loss(logits, _check_inputs(logits, target))

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class TauCrossEntropy(_LossBase):
    """Softmax cross-entropy on ``tau * logits``, divided by tau (deel-lip TF convention).

    Large tau pushes towards large margins (closer to a hinge); dividing by tau keeps the
    gradient scale comparable across tau.
    """

    family: ClassVar[str] = "tau_cce"

    def __init__(self, tau: float) -> None:
        super().__init__()
        self.tau = _check_param("tau", tau, positive=True, meaning=_TAU_MEANING)

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return _tau_ce(logits, target, self.tau)


class MulticlassKR(_LossBase):
    """+KR, the one-vs-rest Kantorovich-Rubinstein estimate (a quantity to MAXIMISE).

    For each class c: mean of f_c over samples of class c minus mean of f_c over the others,
    computed with one-hot masks and ``KR_EPS`` as deel-lip does; the value is the mean over c.
    A class absent from the batch has positive average 0 (0 / eps), and its negative average is
    the batch mean of f_c. Use as a metric; `NegKR` (family ``kr``) is the loss to minimise, and
    `MulticlassHKR` uses −KR.
    """

    family: ClassVar[str] = "kr"

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return _kr(logits, target)


class NegKR(_LossBase):
    """−KR, the KR term alone as a loss to minimise (what ``create('kr')`` returns)."""

    family: ClassVar[str] = "kr"

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return -_kr(logits, target)


class MulticlassHinge(_LossBase):
    """deel-lip's multiclass hinge: per sample, mean over classes of relu(m/2 − s_c·f_c).

    s_c = +1 for the true class and −1 otherwise, and the true-class term is multiplied by
    (C − 1) so that it balances the C − 1 others; m = ``min_margin``. Mean over samples.
    """

    family: ClassVar[str] = "hinge"

    def __init__(self, min_margin: float = 1.0) -> None:
        super().__init__()
        self.min_margin = _check_param(
            "min_margin", min_margin, positive=False, meaning=_MARGIN_MEANING
        )

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return _hinge(logits, target, self.min_margin)


class MulticlassHKR(_LossBase):
    """−KR + alpha·Hinge with alpha UNBOUNDED, as in deel-lip (TensorFlow).

    ``alpha = inf`` gives the hinge alone (no inf·0 NaN) and ``alpha = 0`` gives −KR alone.
    Note: deel-torchlip rescales alpha into [0, 1] ((1 − alpha)·(−KR) + alpha·Hinge); this
    project keeps the TF seed's meaning (the seed uses alpha = 50 and 30).
    """

    family: ClassVar[str] = "hkr"

    def __init__(self, alpha: float = 10.0, min_margin: float = 1.0) -> None:
        super().__init__()
        self.alpha = _check_param(
            "alpha", alpha, positive=False, allow_inf=True, meaning=_ALPHA_MEANING
        )
        self.min_margin = _check_param(
            "min_margin", min_margin, positive=False, meaning=_MARGIN_MEANING
        )

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return _hkr(logits, target, self.alpha, self.min_margin)


class OffsetCrossEntropy(_LossBase):
    """Offset cross-entropy (Prach & Lampert 2022, AOL).

    ``temperature * cross_entropy((f − offset·onehot(y)) / temperature, y)``: the true logit is
    lowered by ``offset`` so the loss keeps pushing until the margin exceeds it, and the
    temperature sharpens the softmax. The defaults (offset = √2, temperature = 1/4) are those of
    the public AOL-style implementations; tune them like tau.
    """

    family: ClassVar[str] = "offset_ce"

    def __init__(
        self, offset: float = _DEFAULT_OFFSET, temperature: float = _DEFAULT_TEMPERATURE
    ) -> None:
        super().__init__()
        self.offset = _check_param("offset", offset, positive=False, meaning=_OFFSET_MEANING)
        self.temperature = _check_param(
            "temperature", temperature, positive=True, meaning=_TEMPERATURE_MEANING
        )

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return _offset_ce(logits, target, self.offset, self.temperature)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter of a loss family, and how runs and reports name it."""

    key: str  # the constructor argument and config key (`loss.<key>`)
    short: str  # in run names and plain-text labels: `tau=3`, `m=1 a=30`
    symbol: str  # in the report's labels: `τ=3`, `m=1, α=30`
    label: str  # the report's axis name

    @property
    def param(self) -> str:
        """The MLflow param that holds it: `loss.<key>`."""
        return f"loss.{self.key}"


@dataclass(frozen=True)
class LossFamily:
    """A loss family as configs, run names and the report know it: its name (`loss.family`),
    its class, its hyperparameters in label order and its colour on every report page."""

    name: str
    loss: type[_LossBase]
    colour: str
    hyperparameters: tuple[Hyperparameter, ...] = ()

    def __post_init__(self) -> None:
        keys = sorted(h.key for h in self.hyperparameters)
        accepted = sorted(_constructor_params(self.loss))
        if keys != accepted:
            raise ValueError(
                f"loss family {self.name!r} describes hyperparameters {keys}, but "
                f"{self.loss.__name__} takes {accepted}; describe each constructor argument once"
            )


def _constructor_params(cls: type) -> list[str]:
    """The keyword arguments of `cls.__init__`, in order."""
    signature = inspect.signature(cls.__init__).parameters
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p for p in signature if p != "self" and signature[p].kind in named]


_MARGIN = Hyperparameter("min_margin", "m", "m", "min_margin")
_FAMILIES = (
    LossFamily(
        "tau_cce",
        TauCrossEntropy,
        "#1f77b4",
        (Hyperparameter("tau", "tau", "τ", "τ (cross-entropy temperature)"),),
    ),
    LossFamily("hkr", MulticlassHKR, "#ff7f0e", (_MARGIN, Hyperparameter("alpha", "a", "α", "α"))),
    LossFamily("kr", NegKR, "#2ca02c"),
    LossFamily("hinge", MulticlassHinge, "#d62728", (_MARGIN,)),
    LossFamily(
        "offset_ce",
        OffsetCrossEntropy,
        "#9467bd",
        (
            Hyperparameter("offset", "o", "o", "offset"),
            Hyperparameter("temperature", "T", "T", "temperature"),
        ),
    ),
)
FAMILIES: dict[str, LossFamily] = {f.name: f for f in _FAMILIES}
"""Loss-family name (as used in configs) → its description; the order is the report's."""

LOSSES: dict[str, type[_LossBase]] = {f.name: f.loss for f in _FAMILIES}
"""Loss-family name → loss class. ``kr`` is `NegKR` (−KR, minimised)."""


def create(family: str, **params: Any) -> nn.Module:
    """Build the loss of ``family`` with keyword hyperparameters, e.g. ``create('hkr', alpha=50)``.

    Raises ValueError for an unknown family or parameter, listing what is accepted.
    """
    try:
        cls = LOSSES[family]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown loss family {family!r}; valid families: {', '.join(sorted(LOSSES))}"
        ) from None
    signature = inspect.signature(cls.__init__).parameters
    accepted = _constructor_params(cls)
    missing = [
        p for p in accepted if signature[p].default is inspect.Parameter.empty and p not in params
    ]
    if missing:
        raise ValueError(f"loss family {family!r} requires parameter(s) {', '.join(missing)}")
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for loss family {family!r}; "
            f"accepted: {', '.join(accepted) if accepted else '(none)'}"
        )
    return cls(**params)
