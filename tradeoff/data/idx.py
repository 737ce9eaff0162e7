"""Readers for the IDX format of MNIST, Fashion-MNIST and KMNIST (plain or gzip-compressed)."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import numpy as np

from .errors import DatasetFormatError

__all__ = ["IDX_FILES", "parse_idx", "read_idx", "read_idx_dataset"]

#: The four files of an MNIST-style release: train images, train labels, test images, test labels.
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Third byte of the magic number -> element type (multi-byte types are big-endian).
_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode an uncompressed IDX buffer: magic ``00 00 <type> <ndim>``, ``ndim`` big-endian
    uint32 sizes, then the elements. Raises `DatasetFormatError` when the header or the length
    does not check out, so a truncated or foreign file never turns into silent garbage."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _DTYPES or data[3] == 0:
        raise DatasetFormatError(
            f"{source}: not an IDX file (magic bytes {data[:4].hex() or 'missing'}; expected "
            "00 00, a type code in 08/09/0b/0c/0d/0e and a non-zero number of dimensions)"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetFormatError(f"{source}: IDX header truncated ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[data[2]])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise DatasetFormatError(
            f"{source}: IDX header declares shape {dims} of {dtype.name} ({expected} bytes), "
            f"but the data has {len(data)} bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file, gunzipping it first when it is gzip-compressed."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetFormatError(f"{path}: corrupt gzip stream ({exc})") from exc
    return parse_idx(data, source=os.fspath(path))


def read_idx_dataset(
    train_images: str | os.PathLike,
    train_labels: str | os.PathLike,
    test_images: str | os.PathLike,
    test_labels: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images as uint8 (N, 1, H, W) and labels as int64 (N,), for train and test."""
    out: list[np.ndarray] = []
    for images_path, labels_path in ((train_images, train_labels), (test_images, test_labels)):
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DatasetFormatError(
                f"{images_path}: expected uint8 images of shape (N, H, W), got "
                f"{images.dtype.name} {images.shape}"
            )
        if labels.ndim != 1 or len(labels) != len(images):
            raise DatasetFormatError(
                f"{labels_path}: expected {len(images)} labels, got shape {labels.shape}"
            )
        out += [images[:, None], labels.astype(np.int64)]
    return out[0], out[1], out[2], out[3]
