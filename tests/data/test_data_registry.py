"""Names and arguments of load_dataset."""

from __future__ import annotations

import pytest

from tradeoff.data import available, load_dataset

NAMES = ["cifar10", "digits", "fashion_mnist", "kmnist", "mnist", "mnist5k"]


def test_available():
    assert available() == NAMES


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset 'mnsit'") as info:
        load_dataset("mnsit")
    for name in NAMES:
        assert name in str(info.value)


def test_name_spelling_is_forgiving():
    assert load_dataset("Digits", val_size=0).name == "digits"


@pytest.mark.parametrize("val_size", [-0.1, 1.0, 1.5, -1, True, "0.1", None, float("nan")])
def test_bad_val_size(val_size):
    with pytest.raises(ValueError, match=r"val_size.*\[0, 1\)"):
        load_dataset("digits", val_size=val_size)


@pytest.mark.parametrize("val_size", [1437, 5000, 5, 0.001])
def test_val_size_that_does_not_fit_the_training_set(val_size):
    with pytest.raises(ValueError, match="val_size"):
        load_dataset("digits", val_size=val_size)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "0"])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        load_dataset("digits", seed=seed)


def test_split_repr_is_short():
    ds = load_dataset("digits", val_size=0)
    assert repr(ds.test) == "Split(x=torch.float32[360, 1, 8, 8], y=torch.int64[360])"
