"""The IDX reader on small files written by the test."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from tradeoff.data import DatasetFormatError, read_idx
from tradeoff.data.idx import parse_idx, read_idx_dataset


@pytest.mark.parametrize("gz", [True, False])
def test_roundtrip_uint8_images(tmp_path, write_idx, gz):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    out = read_idx(write_idx(tmp_path / "x-idx3-ubyte.gz", images, gz=gz))
    assert out.dtype == np.uint8 and out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, images)


def test_multibyte_types_are_big_endian(tmp_path, write_idx):
    values = np.array([[1, -2, 70000], [3, 4, -5]], dtype=np.int32)
    out = read_idx(write_idx(tmp_path / "v.gz", values))
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, values)


def test_read_idx_dataset_shapes(tmp_path, write_idx):
    rng = np.random.default_rng(0)
    paths = []
    for name, n in (("train", 7), ("test", 3)):
        paths.append(
            write_idx(tmp_path / f"{name}-img.gz", rng.integers(0, 256, (n, 28, 28), "u1"))
        )
        paths.append(write_idx(tmp_path / f"{name}-lbl.gz", np.arange(n, dtype=np.uint8) % 10))
    x_train, y_train, x_test, y_test = read_idx_dataset(*paths)
    assert x_train.shape == (7, 1, 28, 28) and x_test.shape == (3, 1, 28, 28)
    assert y_train.dtype == np.int64 and y_test.tolist() == [0, 1, 2]


def test_label_count_mismatch(tmp_path, write_idx):
    img = write_idx(tmp_path / "img.gz", np.zeros((4, 2, 2), np.uint8))
    lbl = write_idx(tmp_path / "lbl.gz", np.zeros(3, np.uint8))
    with pytest.raises(DatasetFormatError, match="expected 4 labels"):
        read_idx_dataset(img, lbl, img, lbl)


def _idx(array: np.ndarray) -> bytes:
    # Same encoding as conftest.idx_bytes, for the parametrisation below.
    shape = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return bytes([0, 0, 0x08, array.ndim]) + shape + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x1f\x8b\x08\x00junk", "corrupt gzip"),
        (gzip.compress(b"\x00\x00\x08"), "not an IDX file"),  # too short
        (gzip.compress(b"\x01\x00\x08\x01" + b"\x00" * 8), "not an IDX file"),  # bad magic
        (gzip.compress(b"\x00\x00\x07\x01" + b"\x00" * 8), "not an IDX file"),  # bad type
        (gzip.compress(b"\x00\x00\x08\x00"), "not an IDX file"),  # zero dimensions
        (gzip.compress(b"\x00\x00\x08\x03\x00\x00"), "header truncated"),
        (gzip.compress(_idx(np.zeros((2, 3, 3)))[:-1]), r"declares shape \(2, 3, 3\)"),
        (gzip.compress(_idx(np.zeros(5)) + b"\x00"), "data has 14 bytes"),
    ],
    ids=["gzip", "short", "magic", "type", "ndim", "dims", "truncated", "trailing"],
)
def test_malformed_files_raise_a_clear_error(tmp_path, data, match):
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(data)
    with pytest.raises(DatasetFormatError, match=match) as info:
        read_idx(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


def test_helper_encoding_matches_conftest(encode_idx):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert _idx(array) == encode_idx(array)


def test_parse_idx_rejects_non_idx_bytes():
    with pytest.raises(DatasetFormatError, match="<bytes>"):
        parse_idx(b"P5\n28 28\n255\n")
