"""Fixtures of the layer tests."""

from __future__ import annotations

import pytest

from tradeoff.nn import bjorck


@pytest.fixture(params=["C", "C scalars", "NumPy"])
def spectral_implementation(request, monkeypatch):
    """Run a test three ways: small weights wholly in C (`_spectral.c`, with torch's LAPACK),
    torch products with the scalar loops in C, and torch products with the loops in NumPy."""
    if request.param == "C" and not bjorck._SYEVD:
        pytest.skip("no C kernel tradeoff.nn._spectral, or no LAPACK in torch's CPU library")
    if request.param == "C scalars" and bjorck._spectral is None:
        pytest.skip("the C kernel tradeoff.nn._spectral is not built")
    if request.param != "C":
        monkeypatch.setattr(bjorck, "_SYEVD", 0)
    if request.param == "NumPy":
        monkeypatch.setattr(bjorck, "_spectral", None)
    return request.param
