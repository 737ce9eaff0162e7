"""The layer-family registry: one registration per family, found by the zoo and export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tradeoff import zoo
from tradeoff.certificates import lipschitz_bound
from tradeoff.export import export_vanilla
from tradeoff.nn import AOLConv2d, AOLLinear, families


def test_names_list_the_builtin_families_in_order():
    assert families.names()[:4] == ["spectral", "aol", "plain", "sll"]


def test_unknown_family_is_refused_with_the_list():
    with pytest.raises(ValueError, match="layer must be one of spectral, aol, plain, sll"):
        zoo.create("seed_mlp", input_shape=(1, 8, 8), layer="orthogonal")


def test_an_option_the_family_does_not_take_is_refused_listing_those_it_does():
    with pytest.raises(ValueError, match=r"layer=.spectral. does not take option.* aol_side"):
        zoo.create("seed_mlp", input_shape=(1, 8, 8), layer="spectral", aol_side="input")
    # the default value of another family's option is no choice, so it passes
    zoo.create("seed_mlp", input_shape=(1, 8, 8), layer="spectral", aol_side="auto")
    # sll takes its AOL frame's option
    model = zoo.create("convnet", input_shape=(1, 8, 8), layer="sll", width=2, aol_side="input")
    assert model[-1].parametrizations.weight[0].side == "input"
    assert families.options("sll") == {"aol_side": "auto"}


def test_a_width_keeping_family_does_not_fit_models_that_change_the_width():
    with pytest.raises(ValueError, match=r"layer=.sll. does not fit seed_mlp.*convnet"):
        zoo.create("seed_mlp", input_shape=(1, 8, 8), layer="sll")


def test_a_family_registered_elsewhere_is_found_by_the_zoo_and_export():
    """Adding a family touches only its own module: here a test-local one, AOL under another
    name with a fixed dense side, built by convnet and exported."""
    family = families.LayerFamily(
        name="aol_input_test",
        summary="AOL with its rescaling on the input side",
        conv=lambda c_in, c_out, k, s, size: AOLConv2d(c_in, c_out, k, s, "same"),
        linear=lambda fan_in, fan_out, bias: AOLLinear(fan_in, fan_out, bias, side="input"),
    )
    families.register(family)
    try:
        assert "aol_input_test" in families.names()
        model = zoo.create("convnet", input_shape=(1, 8, 8), layer="aol_input_test", width=2)
        assert model[-1].parametrizations.weight[0].side == "input"
        x = torch.rand(4, 1, 8, 8)
        model.eval()
        torch.testing.assert_close(export_vanilla(model)(x), model(x), atol=1e-5, rtol=1e-5)
        assert lipschitz_bound(model) <= 1 + 1e-5
        with pytest.raises(ValueError, match="already registered"):
            families.register(families.LayerFamily(name="aol_input_test", frame="aol"))
    finally:
        families._FAMILIES.pop("aol_input_test")


def test_a_family_without_linear_layers_needs_a_frame():
    with pytest.raises(ValueError, match="name a `frame`"):
        families.LayerFamily(name="blocks_only", block=lambda *a: nn.Identity())
