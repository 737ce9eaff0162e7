"""GroupSort2's hand-written autograd agrees with sorting, in every autograd mode, on both of
its implementations: the fused C loops (`_pairsort.c`) and torch ops."""

from __future__ import annotations

import os
import shutil
import sysconfig

import pytest
import torch

from tradeoff.nn import GroupSort2, activations

needs_kernel = pytest.mark.skipif(
    not activations.FUSED_GROUPSORT, reason="the fused GroupSort2 kernel is not built"
)


@pytest.fixture(params=["fused", "torch-ops"])
def implementation(request, monkeypatch):
    """Every test runs on the C loops and on torch ops (the fallback without a compiler)."""
    if request.param == "fused" and not activations.FUSED_GROUPSORT:
        pytest.skip("the fused GroupSort2 kernel is not built")
    if request.param == "torch-ops":
        monkeypatch.setattr(activations, "_pairsort", None)
    return request.param


def _reference(x: torch.Tensor) -> torch.Tensor:
    return x.unflatten(1, (x.shape[1] // 2, 2)).sort(dim=2).values.flatten(1, 2)


def test_groupsort2_values_in_every_mode(implementation):
    g = GroupSort2()
    x = torch.randn(4, 6, 5, 5, requires_grad=True)
    torch.testing.assert_close(g(x), _reference(x))
    with torch.no_grad():
        torch.testing.assert_close(g(x), _reference(x))
    torch.testing.assert_close(torch.func.vmap(g)(x.detach()[:, None]), _reference(x)[:, None])


def test_groupsort2_gradients(implementation):
    g = GroupSort2()
    x = torch.randn(3, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(g, (x,))
    assert torch.autograd.gradgradcheck(g, (x,))
    v = torch.randn_like(x)
    _, jv = torch.func.jvp(g, (x.detach(),), (v,))
    (expected,) = torch.autograd.functional.jvp(_reference, x.detach(), v)[1:]
    torch.testing.assert_close(jv, expected)
    jac = torch.func.jacrev(g)(x.detach()[:1, :, :1, :1].flatten(1))
    ref = torch.autograd.functional.jacobian(_reference, x.detach()[:1, :, :1, :1].flatten(1))
    torch.testing.assert_close(jac, ref)


def test_groupsort2_gradient_is_an_exact_permutation(implementation):
    """The backward swap moves gradients without arithmetic error, in every float dtype."""
    g = GroupSort2()
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.randn(8, 10, 3, 3).to(dtype)
        x[:, 1] = x[:, 0]  # ties keep their order, as a stable sort does
        x.requires_grad_(True)
        up = torch.randn(8, 10, 3, 3).to(dtype) * 1e30
        (ours,) = torch.autograd.grad(g(x), x, up)
        (ref,) = torch.autograd.grad(_reference(x), x, up)
        assert torch.equal(ours, ref), dtype


def _torch_ops(x: torch.Tensor, monkeypatch) -> tuple[torch.Tensor, torch.Tensor]:
    """GroupSort2 of x and its gradient for upstream gradient 2^i, on torch ops."""
    with monkeypatch.context() as m:
        m.setattr(activations, "_pairsort", None)
        return _value_and_grad(x)


def _value_and_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    y = GroupSort2()(x)
    up = torch.arange(y.numel(), dtype=x.dtype).reshape(y.shape)  # tells every entry apart
    (grad,) = torch.autograd.grad(y, x, up)
    return y.detach(), grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape", [(5, 8), (3, 6, 7), (4, 6, 5, 5), (64, 16, 28, 28), (2, 4, 3, 2, 2)]
)
@pytest.mark.parametrize("threads", [1, 2])
@needs_kernel
def test_fused_and_torch_ops_agree_bit_for_bit(monkeypatch, dtype, shape, threads):
    """Dense, 1-D, 2-D, 3-D outputs; (64, 16, 28, 28) is large enough to use several threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(shape, dtype=dtype)
        x[:, 1] = x[:, 0]  # ties
        y, grad = _value_and_grad(x)
        y_ref, grad_ref = _torch_ops(x, monkeypatch)
        assert torch.equal(y, y_ref)
        assert torch.equal(grad, grad_ref)
        with torch.no_grad():
            assert torch.equal(GroupSort2()(x), y_ref)
    finally:
        torch.set_num_threads(previous)


def test_non_contiguous_tensors(implementation):
    """channels_last inputs and transposed upstream gradients take the right path."""
    x = torch.randn(4, 6, 5, 5).to(memory_format=torch.channels_last).requires_grad_(True)
    y = GroupSort2()(x)
    torch.testing.assert_close(y, _reference(x), rtol=0, atol=0)
    up = torch.randn(4, 6, 5, 5).transpose(2, 3)  # a non-contiguous gradient
    (grad,) = torch.autograd.grad(y, x, up)
    (ref,) = torch.autograd.grad(_reference(x), x, up)
    assert torch.equal(grad, ref)
    z = torch.randn(6, 8).t().requires_grad_(True)  # a non-contiguous dense input
    torch.testing.assert_close(GroupSort2()(z), _reference(z), rtol=0, atol=0)


def test_empty_batch(implementation):
    x = torch.randn(0, 4, 3, 3, requires_grad=True)
    y = GroupSort2()(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape


@needs_kernel
def test_kernel_refuses_bad_sizes():
    from tradeoff.nn import _pairsort

    with pytest.raises(ValueError, match="inner=0"):
        _pairsort.sort_pairs(0, 0, 0, 1, 0, 1, False)
    with pytest.raises(ValueError, match="threads=0"):
        _pairsort.swap_pairs(0, 0, 0, 1, 1, 0, False)


def test_kernel_is_built_where_it_can_be():
    """With a C compiler and Python's headers, `pip install` builds the kernel (setup.py)."""
    headers = os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
    if not (headers and (shutil.which("cc") or shutil.which("gcc"))):
        pytest.skip("no C compiler or Python headers here: the torch-ops path is the one in use")
    assert activations.FUSED_GROUPSORT, (
        "tradeoff/nn/_pairsort.c was not built: reinstall with `pip install -e .` and read "
        "setup.py's warning"
    )


@needs_kernel
def test_single_threaded_build_leaves_multithreaded_work_to_torch(monkeypatch):
    """A kernel built without OpenMP only takes tensors torch would sort on one thread."""
    from tradeoff.nn import _pairsort

    calls = []

    class NoOpenMP:
        OPENMP = 0

        @staticmethod
        def sort_pairs(*args):
            calls.append(args[-2])  # threads
            return _pairsort.sort_pairs(*args)

        swap_pairs = staticmethod(_pairsort.swap_pairs)

    monkeypatch.setattr(activations, "_pairsort", NoOpenMP)
    big, small = torch.randn(64, 16, 28, 28), torch.randn(4, 6, 5, 5)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.no_grad():
            torch.testing.assert_close(GroupSort2()(big), _reference(big), rtol=0, atol=0)
            assert calls == []  # torch ops, on two threads
            torch.testing.assert_close(GroupSort2()(small), _reference(small), rtol=0, atol=0)
            assert calls == [1]  # too small to be worth threads: the C loop
        torch.set_num_threads(1)
        with torch.no_grad():
            torch.testing.assert_close(GroupSort2()(big), _reference(big), rtol=0, atol=0)
        assert calls == [1, 1]
    finally:
        torch.set_num_threads(previous)
