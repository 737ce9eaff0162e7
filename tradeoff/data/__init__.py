"""Datasets as in-memory tensors: float32 pixels in [0, 1] (N, C, H, W), int64 labels.

``load_dataset(name, root=..., val_size=0.1, seed=0, download=True)`` returns a `Dataset`
with train / val / test `Split`s; `available()` lists the names. Files are verified against
pinned SHA-256 sums (see `tradeoff.data.files`).
"""

from __future__ import annotations

from .errors import DatasetFormatError, DatasetIntegrityError, DatasetNotFoundError
from .files import default_root
from .idx import read_idx
from .registry import Dataset, Split, available, load_dataset

__all__ = [
    "Dataset",
    "DatasetFormatError",
    "DatasetIntegrityError",
    "DatasetNotFoundError",
    "Split",
    "available",
    "default_root",
    "load_dataset",
    "read_idx",
]
