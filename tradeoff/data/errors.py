"""Errors raised while finding, verifying and decoding dataset files."""

from __future__ import annotations

__all__ = ["DatasetFormatError", "DatasetIntegrityError", "DatasetNotFoundError"]


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not on disk and could not (or may not) be downloaded."""


class DatasetIntegrityError(ValueError):
    """A dataset file's SHA-256 is not the pinned one: it is corrupt or not the official file."""


class DatasetFormatError(ValueError):
    """A file has the right name but not the expected layout (bad IDX header, bad archive)."""
