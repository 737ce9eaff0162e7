"""Checkpoints of a training run, so that a run stopped by a signal (SLURM preemption) goes on
from where it stopped instead of from its first epoch.

A checkpoint holds the model, the optimiser, the schedule, every random state (torch's, CUDA's
and the run's own generator, which orders the batches and draws the augmentation), and the
loop's `Progress`: the epochs done, the batch reached within the epoch in progress, the budget
spent, the history of epoch metrics. Restored, the run computes the same steps it would have
computed without the stop. Files are written atomically (a temporary file renamed over the
old one), so a kill during a write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "FORMAT",
    "CheckpointError",
    "Progress",
    "capture",
    "checkpoint_path",
    "load",
    "remove",
    "restore",
    "save",
]

FORMAT = 1  # bumped when the layout changes; other formats are refused by name


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the run."""


@dataclass
class Progress:
    """How far the loop got: whole epochs, and the epoch in progress (`order` is its batch
    order, None between epochs; `batch` the next batch; `loss_sum` and `count` its loss so
    far). `seconds` and `budget_elapsed` are the wall clock of fit and of its training loop
    before this process took over."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    epochs_done: float = 0.0
    train_seconds: float = 0.0
    images: int = 0
    seconds: float = 0.0
    budget_elapsed: float = 0.0
    estimating: bool = False
    schedule_steps: int | None = None
    order: torch.Tensor | None = None
    batch: int = 0
    loss_sum: float = 0.0
    count: int = 0
    epoch_seconds: float = 0.0
    done: bool = False  # training is over (epochs or budget): only the test remains
    stopped_at_budget: bool = False

    @property
    def mid_epoch(self) -> bool:
        return self.order is not None


_SCHEDULER_KEYS = ("last_epoch", "_step_count", "_last_lr", "base_lrs", "total_steps")


def capture(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    progress: Progress,
    **meta: Any,
) -> dict[str, Any]:
    """Everything needed to go on training, as tensors and plain values (`meta`: who the
    checkpoint belongs to, e.g. its MLflow run)."""
    state = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": None,
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "progress": dataclasses.asdict(progress),
        "meta": dict(meta),
    }
    if scheduler is not None:
        state["scheduler"] = {k: getattr(scheduler, k) for k in _SCHEDULER_KEYS}
    return state


def restore(
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
) -> Progress:
    """Load `state` (from `capture`) into the run's objects; return the loop's progress."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if (scheduler is None) != (state["scheduler"] is None):
        raise CheckpointError("the checkpoint's schedule does not match the run's")
    if scheduler is not None:
        for key, value in state["scheduler"].items():
            setattr(scheduler, key, value)
        for group, lr in zip(optimizer.param_groups, scheduler._last_lr, strict=True):
            group["lr"] = lr
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return Progress(**state["progress"])


def checkpoint_path(folder: str | os.PathLike[str], experiment: str, config_hash: str) -> Path:
    """`<folder>/<experiment>/<config hash>.pt`: the same command (experiment and config)
    finds the same file, whatever Hydra output folder it runs in."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"
    return Path(folder) / safe / f"{config_hash}.pt"


def save(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically: into a temporary file beside it, synced, then
    renamed over `path`."""
    for attempt in range(3):  # another run's `remove` may take the empty folder meanwhile
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load(path: Path) -> dict[str, Any] | None:
    """The checkpoint at `path` (its tensors on the CPU: `restore` moves them where the run's
    are); None if there is none."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        cause = (str(exc).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}: {cause}); "
            "delete it to start the run over"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format {found!r}, this version reads {FORMAT}; "
            "delete it to start the run over"
        )
    return state


def remove(path: Path) -> None:
    """Delete the checkpoint and the folders it leaves empty (its experiment's, then the
    checkpoint folder itself)."""
    path.unlink(missing_ok=True)
    for folder in (path.parent, path.parent.parent):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (another run's checkpoint), or gone
