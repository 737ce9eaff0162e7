"""The dataset registry: names -> in-memory train/val/test tensors with a seeded validation split.

Inputs are float32 pixels in [0, 1] of shape (N, C, H, W), labels int64 class ids. The
train/test split is the dataset's own (fixed for the embedded sets); the validation split is
carved from train, stratified, by ``seed``, and never touches test.
"""

from __future__ import annotations

import functools
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from . import files
from .cifar import read_cifar10
from .embedded import digits_arrays, mnist5k_arrays
from .errors import DatasetFormatError
from .idx import read_idx_dataset

__all__ = ["Dataset", "Split", "available", "load_dataset"]

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class Split:
    """One split: ``x`` float32 (N, C, H, W) in [0, 1], ``y`` int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return f"Split(x={self.x.dtype}{list(self.x.shape)}, y={self.y.dtype}{list(self.y.shape)})"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset loaded in memory, with its train, validation and test splits."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class _Spec:
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    scale: float  # stored pixel value that maps to 1.0
    decode: Callable[[tuple[files.LocalFile, ...]], Arrays]  # verified files -> uint8 arrays
    remote: bool  # files come from files.fetch (else shipped in a package)


def _idx(sources: tuple[files.LocalFile, ...]) -> Arrays:
    return read_idx_dataset(*(s.path for s in sources))


def _cifar(sources: tuple[files.LocalFile, ...]) -> Arrays:
    return read_cifar10(sources[0].path)


_DIGITS = tuple(str(i) for i in range(10))
_FASHION = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_KMNIST = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
_CIFAR10 = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_SPECS: dict[str, _Spec] = {
    "mnist5k": _Spec((1, 28, 28), _DIGITS, 255.0, lambda _: mnist5k_arrays(), remote=False),
    "digits": _Spec((1, 8, 8), _DIGITS, 16.0, lambda _: digits_arrays(), remote=False),
    "mnist": _Spec((1, 28, 28), _DIGITS, 255.0, _idx, remote=True),
    "fashion_mnist": _Spec((1, 28, 28), _FASHION, 255.0, _idx, remote=True),
    "kmnist": _Spec((1, 28, 28), _KMNIST, 255.0, _idx, remote=True),
    "cifar10": _Spec((3, 32, 32), _CIFAR10, 255.0, _cifar, remote=True),
}


def available() -> list[str]:
    """Names accepted by `load_dataset`."""
    return sorted(_SPECS)


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    val_size: float | int = 0.1,
    seed: int = 0,
    download: bool = True,
) -> Dataset:
    """Load dataset ``name`` into memory with a stratified validation split carved from train.

    ``val_size`` is a fraction of train (0 <= v < 1) or a count (int >= 0; 0 = empty val);
    ``seed`` picks the validation examples (same seed, same split). Files are read from
    ``<root>/<name>/`` (``root`` defaults to ``$TRADEOFF_DATA`` or ``~/.cache/tradeoff/data``)
    and downloaded there when missing and ``download`` is true; every file is checked against
    its pinned SHA-256. Raises ``ValueError`` for an unknown name or bad ``val_size``/``seed``,
    `DatasetNotFoundError` for missing files, `DatasetIntegrityError` for a corrupt file."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available())}")
    _check_val_size(val_size)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    spec = _SPECS[key]
    sources = files.fetch(key, root, download=download) if spec.remote else ()
    x_train, y_train, x_test, y_test = _decode(key, sources)
    train_idx, val_idx = _val_split(y_train, val_size, int(seed), len(spec.class_names))
    return Dataset(
        name=key,
        train=_split(x_train, y_train, train_idx, spec.scale),
        val=_split(x_train, y_train, val_idx, spec.scale),
        test=_split(x_test, y_test, None, spec.scale),
        num_classes=len(spec.class_names),
        input_shape=spec.input_shape,
        class_names=spec.class_names,
    )


@functools.lru_cache(maxsize=8)
def _decode(name: str, sources: tuple[files.LocalFile, ...]) -> Arrays:
    """Decoded uint8 arrays, cached per process and per verified file content, so the jobs of a
    multirun decode each dataset once. Marked read-only: every load copies what it returns."""
    spec = _SPECS[name]
    arrays = spec.decode(sources)
    for x, y in (arrays[:2], arrays[2:]):
        if x.shape[1:] != spec.input_shape or x.dtype != np.uint8 or len(x) != len(y):
            raise DatasetFormatError(
                f"dataset {name!r}: decoded {x.dtype.name} images {x.shape} with {len(y)} labels; "
                f"expected uint8 (N, {', '.join(map(str, spec.input_shape))}) and N labels"
            )
        if len(y) and (y.min() < 0 or y.max() >= len(spec.class_names)):
            raise DatasetFormatError(
                f"dataset {name!r}: labels outside 0..{len(spec.class_names) - 1}"
            )
    for a in arrays:
        a.flags.writeable = False
    return arrays


def _check_val_size(val_size: float | int) -> None:
    ok = not isinstance(val_size, bool) and (
        (isinstance(val_size, numbers.Integral) and val_size >= 0)
        or (isinstance(val_size, numbers.Real) and 0 <= val_size < 1)
    )
    if not ok:
        raise ValueError(
            "val_size must be a fraction of the training set in [0, 1) or a count "
            f"(int >= 0, below the training-set size); got {val_size!r}"
        )


def _val_split(
    y: np.ndarray, val_size: float | int, seed: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices into the training set, stratified by class."""
    n = len(y)
    if val_size == 0:
        return np.arange(n), np.arange(0)
    if isinstance(val_size, numbers.Integral) and val_size >= n:
        raise ValueError(
            f"val_size={val_size} must be below the training-set size {n} (or a fraction in [0, 1))"
        )
    try:
        train_idx, val_idx = train_test_split(
            np.arange(n), test_size=val_size, stratify=y, random_state=seed
        )
    except ValueError as exc:  # e.g. fewer validation examples than classes
        raise ValueError(
            f"val_size={val_size!r} cannot be split stratified from {n} training examples of "
            f"{num_classes} classes: {exc}"
        ) from exc
    return np.sort(train_idx), np.sort(val_idx)


def _split(x: np.ndarray, y: np.ndarray, idx: np.ndarray | None, scale: float) -> Split:
    if idx is not None:
        x, y = x[idx], y[idx]
    pixels = x.astype(np.float32)  # a fresh copy: callers may modify it freely
    pixels /= np.float32(scale)
    return Split(torch.from_numpy(pixels), torch.from_numpy(y.astype(np.int64)))
