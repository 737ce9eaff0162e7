"""Each accelerator against its plain-torch reference, through the public layers: the spectral
layers' eigenvalue forms (scalar loops in NumPy or C, small weights wholly in C, dense steps
mixed by the n × n factor) and the fused GroupSort2 give deel-lip's iterations' outputs,
gradients and power vectors. `native.limited_to` picks the path, as `tradeoff-bench` does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tradeoff.nn import GroupSort2, SpectralConv2d, SpectralLinear, bjorck, native
from tradeoff.nn.activations import groupsort2_implementation

ACCELERATED = [a for a in native.ACCELERATORS[1:] if native.available(a)]


def _seed_like(dtype: torch.dtype) -> nn.Sequential:
    """The seed model's layer kinds at a small size: spectral kernels (16×9, 32×144), GroupSort2,
    a dense layer taking the factored step (8 rows < 288) and a small head."""
    torch.manual_seed(0)
    return nn.Sequential(
        SpectralConv2d(1, 16, 3, input_size=(6, 6)),
        GroupSort2(),
        SpectralConv2d(16, 32, 3, input_size=(6, 6)),
        GroupSort2(),
        nn.Flatten(),
        SpectralLinear(32 * 36, 40),
        GroupSort2(),
        SpectralLinear(40, 10),
    ).to(dtype)


def _step(accelerator: str, dtype: torch.dtype, training: bool) -> list[torch.Tensor]:
    """Outputs, input gradient, weight gradients and updated power vectors of one step."""
    model = _seed_like(dtype).train(training)
    x = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(1)).to(dtype)
    x.requires_grad_()
    with native.limited_to(accelerator):
        out = model(x)
        out.square().sum().backward()
    grads = [p.grad for p in model.parameters()]
    us = [b for name, b in model.named_buffers() if name.endswith(".u")]
    return [out.detach(), x.grad, *grads, *us]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("accelerator", ACCELERATED)
def test_accelerated_layers_match_the_torch_reference(accelerator, training):
    reference = _step("torch", torch.float64, training)
    mine = _step(accelerator, torch.float64, training)
    assert len(mine) == len(reference)
    for a, b in zip(mine, reference, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("accelerator", ACCELERATED)
def test_accelerated_float32_step_stays_within_float32_rounding(accelerator):
    """In float32 the accelerated paths compute the map in float64 and the reference in the
    weight's dtype: both are within float32 rounding of the float64 step."""
    exact = _step("torch", torch.float64, True)
    reference = _step("torch", torch.float32, True)
    mine = _step(accelerator, torch.float32, True)
    for a, b, e in zip(mine, reference, exact, strict=True):
        scale = e.abs().max().item() + 1e-30
        assert (a.double() - e).abs().max().item() <= 1e-4 * scale
        assert (b.double() - e).abs().max().item() <= 1e-4 * scale


def test_the_dispatch_follows_the_limit():
    weight, u = torch.randn(16, 9, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    x = torch.randn(4, 9, dtype=torch.float64)
    wide = torch.randn(40, 300, dtype=torch.float64)
    with native.limited_to("torch"):
        assert bjorck._path(weight, u) == bjorck.REFERENCE
        assert bjorck._path(wide, u[:1].expand(40).contiguous(), x) == bjorck.REFERENCE
        assert "reference" in bjorck.spectral_implementation()
        assert groupsort2_implementation().startswith("torch ops")
    with native.limited_to("numpy"):
        assert bjorck._path(weight, u) == bjorck.GRAM
        assert "NumPy" in bjorck.spectral_implementation()
    wide_u = torch.randn(40, dtype=torch.float64)
    assert bjorck._path(wide, wide_u, torch.randn(4, 300, dtype=torch.float64)) == bjorck.FACTORED
    if native.available("c"):
        assert bjorck._path(weight, u) == bjorck.SMALL
        assert groupsort2_implementation().startswith("fused C kernel")


def test_an_unknown_accelerator_is_refused_naming_the_choices():
    refused = pytest.raises(ValueError, match=r"one of \('torch', 'numpy', 'c'\) \(got 'cuda'\)")
    with refused, native.limited_to("cuda"):
        pass
