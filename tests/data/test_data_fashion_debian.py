"""Fashion-MNIST from Debian's dataset-fashion-mnist package (no download)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tradeoff.data import load_dataset
from tradeoff.data.files import REGISTRY, fetch

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.skipif(
    not DEBIAN_DIR.is_dir(),
    reason=f"{DEBIAN_DIR} absent: `apt-get install dataset-fashion-mnist` to run these tests",
)


def test_debian_files_are_found_and_verified(tmp_path):
    found = fetch("fashion_mnist", tmp_path, download=False)
    remote = REGISTRY["fashion_mnist"]
    for f in found:
        assert f.path.parent == DEBIAN_DIR and f.sha256 in remote.accepted(f.name)


def test_full_fashion_mnist(tmp_path):
    ds = load_dataset("fashion_mnist", root=tmp_path, download=False, val_size=0)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (60000, 0, 10000)
    assert ds.input_shape == (1, 28, 28) and ds.train.x.shape == (60000, 1, 28, 28)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert torch.bincount(ds.train.y).tolist() == [6000] * 10
    assert torch.bincount(ds.test.y).tolist() == [1000] * 10
    assert ds.test.x.dtype == torch.float32 and float(ds.test.x.max()) == 1.0
    split = load_dataset("fashion_mnist", root=tmp_path, download=False, val_size=0.1)
    assert (len(split.train), len(split.val)) == (54000, 6000)
    assert torch.bincount(split.val.y).tolist() == [600] * 10
    assert list(tmp_path.iterdir()) == []
