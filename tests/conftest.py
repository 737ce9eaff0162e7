"""Shared test settings."""

from __future__ import annotations

import os

import torch

torch.set_num_threads(int(os.environ.get("TRADEOFF_TEST_THREADS", "1")))
