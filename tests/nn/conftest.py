"""Fixtures of the layer tests."""

from __future__ import annotations

import pytest

from tradeoff.nn import bjorck, native


@pytest.fixture(params=["C", "C scalars", "NumPy"])
def spectral_implementation(request, monkeypatch):
    """Run a test three ways: small weights wholly in C (`_spectral.c`, after torch's eigh),
    torch products with the scalar loops in C, and torch products with the loops in NumPy."""
    if request.param != "NumPy" and native.spectral() is None:
        pytest.skip("the C kernel tradeoff.nn._spectral is not built")
    if request.param != "C":
        monkeypatch.setattr(bjorck, "SMALL_MAX_SIDE", 0)
    with native.limited_to("numpy" if request.param == "NumPy" else "c"):
        yield request.param
