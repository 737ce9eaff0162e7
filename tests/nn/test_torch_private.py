"""The private torch APIs of `tradeoff.nn._torch_private`: present and behaving as the layers
expect in this torch, so that an upgrade that changes one fails here, by name, rather than
slowing or breaking a layer somewhere else."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tradeoff.nn import SpectralLinear, _torch_private


def test_every_private_api_is_there_and_behaves_as_expected():
    assert _torch_private.missing() == [], f"torch {torch.__version__}"
    _torch_private.check()  # raises, naming the API and the torch version, if one changed


def test_check_names_the_api_and_the_torch_version(monkeypatch):
    monkeypatch.setattr(_torch_private, "_transforms_active", None)
    with pytest.raises(RuntimeError, match=r"_are_functorch_transforms_active is gone") as exc:
        _torch_private.check()
    assert torch.__version__ in str(exc.value) and "_torch_private.py" in str(exc.value)


def test_a_changed_behaviour_is_reported(monkeypatch):
    monkeypatch.setattr(_torch_private, "_is_wrapped", lambda t: False)
    with pytest.raises(RuntimeError, match="is_functorch_wrapped_tensor does not tell"):
        _torch_private.check()


def test_without_the_apis_the_layers_take_their_plain_torch_paths(monkeypatch):
    """The fallbacks: a spectral layer still trains, with the same values, when this torch
    lacks every private API (each answers its safe value)."""
    torch.manual_seed(0)
    layer = SpectralLinear(40, 8)
    x = torch.randn(5, 40, dtype=torch.float32)
    expected = layer(x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), layer.parametrizations.weight.original)
    torch.manual_seed(0)
    layer = SpectralLinear(40, 8)
    for name in ("_transforms_active", "_is_wrapped", "_raw_apply"):
        monkeypatch.setattr(_torch_private, name, None)
    monkeypatch.setattr(torch.nn.utils.parametrize, "_cache_enabled", None)  # not a counter
    assert len(_torch_private.missing()) == 4
    assert _torch_private.functorch_transforms_active()
    assert _torch_private.is_functorch_wrapped(x) and _torch_private.parametrize_cache_enabled()
    out = layer(x)
    (grad,) = torch.autograd.grad(out.sum(), layer.parametrizations.weight.original)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad, expected_grad, atol=1e-4, rtol=0)


@pytest.mark.slow  # a fresh interpreter imports torch and the package
def test_a_missing_api_warns_at_import_naming_it():
    code = (
        "import warnings, torch\n"
        "del torch._C._are_functorch_transforms_active\n"
        "warnings.simplefilter('error')\n"
        "import tradeoff.nn._torch_private\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "_are_functorch_transforms_active" in proc.stderr and torch.__version__ in proc.stderr
