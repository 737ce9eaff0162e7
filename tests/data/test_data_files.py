"""Finding, downloading and verifying dataset files: missing files, offline, corrupt files."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import pooch
import pytest

from tradeoff.data import (
    DatasetIntegrityError,
    DatasetNotFoundError,
    default_root,
    load_dataset,
    read_idx,
)
from tradeoff.data.files import REGISTRY
from tradeoff.data.idx import IDX_FILES


def _patch(monkeypatch, name: str, **changes) -> None:
    monkeypatch.setitem(REGISTRY, name, dataclasses.replace(REGISTRY[name], **changes))


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pooch.retrieve must not be called")

    monkeypatch.setattr(pooch, "retrieve", refuse)


@pytest.mark.parametrize("name", ["mnist", "kmnist", "cifar10"])
def test_missing_files_without_download(tmp_path, no_download, name):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, root=tmp_path, download=False)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for fname in REGISTRY[name].sha256:
        assert fname in msg and REGISTRY[name].url(fname) in msg
    assert str(tmp_path / name) in msg and "download=False" in msg
    assert not (tmp_path / name).exists()


def test_default_root_from_env(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("TRADEOFF_DATA", str(tmp_path / "envroot"))
    assert default_root() == tmp_path / "envroot"
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "envroot" / "kmnist")):
        load_dataset("kmnist", download=False)
    monkeypatch.delenv("TRADEOFF_DATA")
    assert default_root() == Path.home() / ".cache" / "tradeoff" / "data"


def test_unreachable_download_is_not_found(tmp_path, monkeypatch):
    _patch(monkeypatch, "mnist", base_url="http://127.0.0.1:9/")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", root=tmp_path, download=True)
    msg = str(info.value)
    assert "download failed" in msg and str(tmp_path / "mnist") in msg
    for fname in IDX_FILES:  # nothing could be fetched: all four still missing
        assert fname in msg and f"http://127.0.0.1:9/{fname}" in msg
    assert not any((tmp_path / "mnist").glob("*.gz"))


def test_corrupt_local_file_fails_its_hash(tmp_path, no_download):
    folder = tmp_path / "mnist"
    folder.mkdir()
    bad = folder / IDX_FILES[0]
    bad.write_bytes(b"not the MNIST training images")
    actual = hashlib.sha256(bad.read_bytes()).hexdigest()
    for download in (False, True):  # a corrupt file is an error, never silently replaced
        with pytest.raises(DatasetIntegrityError) as info:
            load_dataset("mnist", root=tmp_path, download=download)
        msg = str(info.value)
        assert isinstance(info.value, ValueError)
        assert IDX_FILES[0] in msg and str(bad) in msg
        assert REGISTRY["mnist"].sha256[IDX_FILES[0]] in msg and actual in msg
        assert "delete it" in msg and REGISTRY["mnist"].url(IDX_FILES[0]) in msg
    assert bad.exists()


def test_download_from_server_then_offline(tmp_path, monkeypatch, fake_idx_release, http_server):
    release, hashes = fake_idx_release(n_train=40, n_test=20)
    _patch(monkeypatch, "mnist", base_url=http_server(release), sha256=hashes)
    root = tmp_path / "root"
    ds = load_dataset("mnist", root=root, val_size=0.25, seed=0)
    assert sorted(os.listdir(root / "mnist")) == sorted(IDX_FILES)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 10, 20)
    assert ds.train.x.shape == (30, 1, 28, 28)
    expected = read_idx(release / "t10k-images-idx3-ubyte.gz")[:, None] / np.float32(255)
    np.testing.assert_array_equal(ds.test.x.numpy(), expected.astype(np.float32))
    # Now the files are local: no network needed.
    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: pytest.fail("downloaded again"))
    again = load_dataset("mnist", root=root, val_size=0.25, seed=0, download=False)
    assert bool((again.val.x == ds.val.x).all())


def test_corrupt_download_fails_its_hash(tmp_path, monkeypatch, fake_idx_release, http_server):
    release, hashes = fake_idx_release()
    wrong = "0" * 64
    _patch(
        monkeypatch,
        "mnist",
        base_url=http_server(release),
        sha256={**hashes, IDX_FILES[2]: wrong},
    )
    with pytest.raises(DatasetIntegrityError) as info:
        load_dataset("mnist", root=tmp_path)
    msg = str(info.value)
    assert IDX_FILES[2] in msg and wrong in msg and hashes[IDX_FILES[2]] in msg
    assert not (tmp_path / "mnist" / IDX_FILES[2]).exists()  # pooch deleted the bad download


def test_file_changed_after_a_load_is_caught(tmp_path, monkeypatch, fake_idx_release):
    release, hashes = fake_idx_release()
    _patch(monkeypatch, "mnist", sha256=hashes)
    folder = tmp_path / "mnist"
    release.rename(folder)
    load_dataset("mnist", root=tmp_path, download=False, val_size=0)
    target = folder / IDX_FILES[1]
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(1, 1))  # a different mtime even on coarse-grained file systems
    with pytest.raises(DatasetIntegrityError, match=IDX_FILES[1]):
        load_dataset("mnist", root=tmp_path, download=False, val_size=0)
