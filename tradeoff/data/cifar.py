"""Reader for the CIFAR-10 "python version" archive (pickled batches inside a tar.gz)."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import PurePosixPath

import numpy as np

from .errors import DatasetFormatError

__all__ = ["CIFAR10_ARCHIVE", "read_cifar10"]

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCH = "test_batch"


def read_cifar10(
    archive: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images as uint8 (N, 3, 32, 32) and labels as int64 (N,), for train and test.

    The batches are read straight from the archive in one pass (nothing is extracted to disk).
    They are pickles, so call this only on an archive whose SHA-256 has been verified."""
    wanted = {*_TRAIN_BATCHES, _TEST_BATCH}
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = PurePosixPath(member.name).name
                if member.isfile() and name in wanted and name not in batches:
                    f = tar.extractfile(member)  # not None: member is a regular file
                    batch = pickle.load(f, encoding="bytes")  # type: ignore[arg-type]
                    batches[name] = _decode_batch(batch, archive, name)
    except (tarfile.TarError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise DatasetFormatError(f"{archive}: unreadable CIFAR-10 archive ({exc})") from exc
    missing = sorted(wanted - batches.keys())
    if missing:
        raise DatasetFormatError(f"{archive}: not a CIFAR-10 python archive, lacks {missing}")
    x_train = np.concatenate([batches[b][0] for b in _TRAIN_BATCHES])
    y_train = np.concatenate([batches[b][1] for b in _TRAIN_BATCHES])
    return x_train, y_train, *batches[_TEST_BATCH]


def _decode_batch(
    batch: object, archive: str | os.PathLike, name: str
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetFormatError(f"{archive}: {name} is not a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise DatasetFormatError(
            f"{archive}: {name} has data {data.shape} and labels {labels.shape}; "
            "expected (N, 3072) and (N,)"
        )
    # Each row is 1024 red, then 1024 green, then 1024 blue values, row-major: CHW already.
    return data.reshape(-1, 3, 32, 32), labels
