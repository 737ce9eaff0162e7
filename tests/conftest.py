"""Shared test settings, and the real data most tests train on."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("TRADEOFF_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8×8 digits: 1437 training and 360 test images, no validation split."""
    from tradeoff.data import load_dataset

    return load_dataset("digits", val_size=0, seed=0)
