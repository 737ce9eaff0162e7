"""The CIFAR-10 reader on a tiny fake archive, through the registry's hash check."""

from __future__ import annotations

import dataclasses
import hashlib
import tarfile

import pytest
import torch

from tradeoff.data import DatasetFormatError, DatasetIntegrityError, load_dataset
from tradeoff.data.cifar import CIFAR10_ARCHIVE, read_cifar10
from tradeoff.data.files import REGISTRY


@pytest.fixture
def cifar_root(tmp_path, make_cifar_archive):
    archive = make_cifar_archive(per_batch=10, n_test=10)
    (tmp_path / "root" / "cifar10").mkdir(parents=True)
    return archive.rename(tmp_path / "root" / "cifar10" / CIFAR10_ARCHIVE).parent.parent


def test_fake_archive_with_its_hash_pinned(cifar_root, monkeypatch):
    archive = cifar_root / "cifar10" / CIFAR10_ARCHIVE
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    remote = dataclasses.replace(REGISTRY["cifar10"], sha256={CIFAR10_ARCHIVE: digest})
    monkeypatch.setitem(REGISTRY, "cifar10", remote)
    ds = load_dataset("cifar10", root=cifar_root, val_size=10, seed=0, download=False)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.class_names[0] == "airplane" and ds.class_names[-1] == "truck"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (40, 10, 10)
    assert ds.train.x.shape == (40, 3, 32, 32) and ds.train.x.dtype == torch.float32
    assert sorted(ds.val.y.tolist()) == list(range(10))  # stratified
    assert float(ds.train.x.max()) <= 1.0 and float(ds.train.x.min()) >= 0.0
    # Channel-major layout: pixel (0, 0) of channel c was written as c.
    expected = torch.tensor([0.0, 1.0, 2.0]) / 255
    assert torch.equal(ds.test.x[:, :, 0, 0], expected.expand(10, 3))
    assert ds.test.y.tolist() == [(5 + i) % 10 for i in range(10)]


def test_fake_archive_fails_the_real_pinned_hash(cifar_root):
    with pytest.raises(DatasetIntegrityError) as info:
        load_dataset("cifar10", root=cifar_root, download=False)
    assert CIFAR10_ARCHIVE in str(info.value)
    assert REGISTRY["cifar10"].sha256[CIFAR10_ARCHIVE] in str(info.value)


def test_archive_without_all_batches(tmp_path, make_cifar_archive):
    full = make_cifar_archive()
    partial = tmp_path / "partial.tar.gz"
    with tarfile.open(full) as src, tarfile.open(partial, "w:gz") as dst:
        for member in src:
            if not member.name.endswith("test_batch"):
                dst.addfile(member, src.extractfile(member))
    with pytest.raises(DatasetFormatError, match="test_batch"):
        read_cifar10(partial)


def test_not_an_archive(tmp_path):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(b"garbage")
    with pytest.raises(DatasetFormatError, match="unreadable CIFAR-10 archive"):
        read_cifar10(path)
