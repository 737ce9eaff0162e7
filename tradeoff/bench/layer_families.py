"""The `families` section: every registered layer family on the zoo's `convnet`, against the
plain twin of the same convnet (`layer=plain, activation=relu`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..nn import families
from .memory import MIB, cuda_peak_bytes, saved_for_backward_bytes
from .models import build
from .report import Row
from .sections import Settings, eval_forward, rows_against_plain, train_step
from .timing import Case, interleaved

__all__ = ["CONVNET_SHAPE", "bench_families"]

SECTION = "families"
CONVNET_SHAPE = (1, 28, 28)  # MNIST and Fashion-MNIST, what the layers_compared sweep trains


def _built(family: str, options: dict[str, Any]) -> tuple[nn.Module | None, str]:
    """A fresh, seeded convnet of `family`, or None and the one-line reason it cannot build."""
    torch.manual_seed(0)
    try:
        return build("convnet", family, CONVNET_SHAPE, **options), ""
    except (ValueError, RuntimeError, NotImplementedError) as exc:
        return None, f"skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}"


def _memory_note(params: int, saved: float, peak: float | None) -> str:
    text = f"{params:,} params; saved for backward {saved:.1f} MiB"
    return text + (f"; CUDA peak {peak:.1f} MiB" if peak is not None else "")


def bench_families(s: Settings) -> list[Row]:
    """Train step and eval forward of `convnet` in every registered family, interleaved with its
    plain twin, plus each family's parameters and training-step memory.

    Families are read from `tradeoff.nn.families.names()`, so a new family is benchmarked
    without a change here; one that cannot build at this shape gets rows saying why. Memory is
    measured on two extra, untimed training steps of each model: on CUDA the first step's peak
    (parameters, gradients, Adam's state, activations), on any device what autograd saves for
    backward in the second.
    """
    device, options = s.device, s.convnet
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((s.batch, *CONVNET_SHAPE), generator=gen).to(device)
    y = torch.randint(0, 10, (s.batch,), generator=gen).to(device)
    variants = ["plain", *(f for f in families.names() if f != "plain")]
    skipped: dict[str, str] = {}
    steps: dict[str, Callable[[], None]] = {}
    forwards: dict[str, Callable[[], None]] = {}
    sizes: dict[str, tuple[int, float, float | None]] = {}
    for variant in variants:
        trained, why = _built(variant, options)
        evaluated, _ = _built(variant, options)
        if trained is None or evaluated is None:
            skipped[variant] = why
            continue
        params = sum(p.numel() for p in trained.parameters())
        steps[variant] = train_step(trained.to(device), x, y, s)
        forwards[variant] = eval_forward(evaluated.to(device), x, s)
        # The first step, untimed: it allocates the gradients and Adam's state.
        peak = cuda_peak_bytes(steps[variant], device)
        saved = saved_for_backward_bytes(steps[variant]) / MIB
        if peak is not None:  # the parameters, allocated before the step, are part of it
            peak += sum(p.numel() * p.element_size() for p in trained.parameters())
        sizes[variant] = (params, saved, None if peak is None else peak / MIB)
    if "plain" in skipped:
        raise ValueError(f"the plain convnet does not build with {options}: {skipped['plain']}")
    cases = [Case(f"{v}|train step", fn) for v, fn in steps.items()]
    cases += [Case(f"{v}|eval forward", fn) for v, fn in forwards.items()]
    samples = interleaved(cases, repeats=s.repeats[SECTION], warmup=s.warmup, device=device)
    rows = rows_against_plain(SECTION, variants, samples, skipped)
    for row in rows:
        if row.median_ms is not None:
            row.params, row.saved_mib, row.peak_mib = sizes[row.name]
            if row.what == "train step":
                row.note = _memory_note(*sizes[row.name])
    return rows
