"""What a run spends: peak memory of the training device and the model's parameter count.

On CUDA the peak is `torch.cuda.max_memory_allocated` since `reset_peak_memory` (tensors only,
not the caching allocator's reserve). On CPU it is the process's peak resident set size
(`resource.getrusage`), which the kernel never resets: it includes loading the data, and in a
multirun whose jobs share one process a job reports the largest peak of the jobs so far.
"""

from __future__ import annotations

import math
import sys

import torch
from torch import nn

__all__ = ["parameter_count", "peak_memory_mb", "reset_peak_memory"]


def reset_peak_memory(device: torch.device) -> None:
    """Start the peak over (CUDA only; a CPU process's peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: CUDA tensors on `device`, else this process's peak RSS (NaN where
    the platform has no `resource` module)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return math.nan
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def parameter_count(model: nn.Module) -> int:
    """Trainable numbers of `model`: the free parameters under every constraint."""
    return sum(p.numel() for p in model.parameters())
