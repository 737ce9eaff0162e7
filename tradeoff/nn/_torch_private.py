"""The private torch APIs the layers use, in one place, each with a safe fallback.

torch offers no public way to ask these questions, and the layers' fast paths need the answers:

- whether a torch.func transform (vmap, grad, jvp) is active, and whether a tensor is one of
  its wrappers (whose data NumPy and the C kernels cannot read);
- whether `torch.nn.utils.parametrize.cached()` is on (a layer must then use the cached
  weight instead of its own training-step shortcut);
- `autograd.Function.apply` without the Python binding that only torch.func needs.

Each is looked up once at import. Where a torch release renames or removes one, the layers
take their plain-torch path (slower, the same results) and a warning names the API;
`check()` (run by tests/nn/test_torch_private.py) fails loudly instead, naming the API and
the torch version.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch.nn.utils import parametrize

__all__ = [
    "apply_function",
    "check",
    "functorch_transforms_active",
    "is_functorch_wrapped",
    "missing",
    "parametrize_cache_enabled",
]

_C = torch._C
_transforms_active: Callable[[], bool] | None = getattr(
    _C, "_are_functorch_transforms_active", None
)
_is_wrapped: Callable[[torch.Tensor], bool] | None = getattr(
    getattr(_C, "_functorch", None), "is_functorch_wrapped_tensor", None
)
_raw_apply: Callable[..., object] | None = getattr(
    super(torch.autograd.Function, torch.autograd.Function), "apply", None
)

API_NAMES = {
    "transforms_active": "torch._C._are_functorch_transforms_active",
    "is_wrapped": "torch._C._functorch.is_functorch_wrapped_tensor",
    "raw_apply": "torch._C._FunctionBase.apply (super(torch.autograd.Function, cls).apply)",
    "cache_flag": "torch.nn.utils.parametrize._cache_enabled",
}


def missing() -> list[str]:
    """The private APIs this torch lacks (their full names); empty when all are there."""
    found = {
        "transforms_active": _transforms_active is not None,
        "is_wrapped": _is_wrapped is not None,
        "raw_apply": _raw_apply is not None,
        "cache_flag": isinstance(getattr(parametrize, "_cache_enabled", None), int),
    }
    return [API_NAMES[k] for k, ok in found.items() if not ok]


def functorch_transforms_active() -> bool:
    """Whether a torch.func transform is active (True when this torch cannot say: the safe
    answer, which takes the paths that work under transforms)."""
    return True if _transforms_active is None else bool(_transforms_active())


def is_functorch_wrapped(t: torch.Tensor) -> bool:
    """Whether `t` is a torch.func wrapper without readable data (True when this torch cannot
    say: code that reads data then takes its plain-torch path)."""
    return True if _is_wrapped is None else bool(_is_wrapped(t))


def parametrize_cache_enabled() -> bool:
    """Whether `parametrize.cached()` is on (True when this torch cannot say: layers then use
    the parametrized weight as any `nn.Module` would)."""
    flag = getattr(parametrize, "_cache_enabled", None)
    return True if not isinstance(flag, int) else flag > 0


def apply_function(function: type[torch.autograd.Function], *args: object) -> object:
    """`function.apply(*args)` without the signature binding and wrapper checks that
    `Function.apply` does in Python for torch.func at every call (tens of µs per layer on a
    training step's cold caches); `Function.apply` itself while torch.func transforms are
    active, torch.compile traces, or this torch lacks the direct call."""
    if _raw_apply is None or torch.compiler.is_compiling() or functorch_transforms_active():
        return function.apply(*args)
    return super(torch.autograd.Function, function).apply(*args)


def check() -> None:
    """Raise RuntimeError naming each private API that is gone or behaves differently in this
    torch; used by the tests, so that a torch upgrade that changes one fails loudly."""
    problems = [f"{name} is gone" for name in missing()]
    if not problems:
        problems += _behaviour_problems()
    if problems:
        raise RuntimeError(
            f"torch {torch.__version__} changed private APIs that tradeoff/nn relies on: "
            + "; ".join(problems)
            + ". Update tradeoff/nn/_torch_private.py (the layers meanwhile take their "
            "plain-torch paths)"
        )


def _behaviour_problems() -> list[str]:
    """What each API should answer in a situation whose answer is known."""
    problems: list[str] = []
    x = torch.ones(3)
    seen: dict[str, bool] = {}

    def probe(t: torch.Tensor) -> torch.Tensor:
        seen["active"] = functorch_transforms_active()
        seen["wrapped"] = is_functorch_wrapped(t)
        return t

    torch.func.vmap(probe)(torch.ones(2, 3))
    if functorch_transforms_active() or not seen["active"]:
        problems.append(f"{API_NAMES['transforms_active']} does not follow torch.func.vmap")
    if is_functorch_wrapped(x) or not seen["wrapped"]:
        problems.append(f"{API_NAMES['is_wrapped']} does not tell vmap's wrappers apart")
    with parametrize.cached():
        inside = parametrize_cache_enabled()
    if parametrize_cache_enabled() or not inside:
        problems.append(f"{API_NAMES['cache_flag']} does not follow parametrize.cached()")

    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t: torch.Tensor) -> torch.Tensor:
            return t * 2

        @staticmethod
        def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
            return grad * 2

    leaf = x.clone().requires_grad_()
    out = apply_function(Double, leaf)
    (grad,) = torch.autograd.grad(out.sum(), leaf)
    if not (torch.equal(out, x * 2) and torch.equal(grad, x * 2)):
        problems.append(f"{API_NAMES['raw_apply']} no longer runs forward and backward")
    return problems


if missing():
    warnings.warn(
        f"torch {torch.__version__} lacks {', '.join(missing())}: tradeoff's layers take their "
        "plain-torch paths (same results, slower); update tradeoff/nn/_torch_private.py",
        RuntimeWarning,
        stacklevel=2,
    )
