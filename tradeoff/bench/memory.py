"""Memory of one call: what autograd keeps for backward (any device), the peak (CUDA)."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["MIB", "cuda_peak_bytes", "saved_for_backward_bytes"]

MIB = 2**20


def saved_for_backward_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd saves for backward while `fn` runs.

    On a CPU, where torch keeps no allocation statistics, this is the measurable part of a
    training step's memory that grows with the batch and the layers' forms: the activations,
    Fourier blocks, series terms and normalised weights kept between forward and backward.
    A storage saved several times (a weight used by many operations) counts once.
    """
    seen: dict[tuple[torch.device, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[(t.device, storage.data_ptr())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def cuda_peak_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes `fn` allocates on `device` above what was allocated before it ran (None off
    CUDA): other models held on the device do not count, what `fn` creates (on a model's
    first training step: its gradients and optimiser state) does."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before
