"""Training and evaluation loops in plain PyTorch (no Hydra, no MLflow).

Datasets are small enough to live as tensors on the device, so batches are slices of a
shuffled index rather than a DataLoader. Evaluation computes the logits once and turns them
into certificates with constants computed once per evaluation (`Certifier`).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .certificates import Certifier, summarize

__all__ = [
    "EpochEnd",
    "Evaluation",
    "FitResult",
    "TrainingDiverged",
    "evaluate",
    "fit",
    "minibatches",
    "resolve_device",
    "train_epoch",
]

log = logging.getLogger(__name__)

EpochEnd = Callable[[int, dict[str, float]], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the run cannot go on."""


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one split, with the per-sample certificates and correctness behind them."""

    metrics: dict[str, float]
    radii: torch.Tensor
    correct: torch.Tensor
    labels: torch.Tensor
    predictions: torch.Tensor


@dataclass
class FitResult:
    """Per-epoch history (one dict of metrics per epoch) and the final test evaluation."""

    history: list[dict[str, float]] = field(default_factory=list)
    test: Evaluation | None = None
    seconds: float = 0.0


def resolve_device(device: str) -> torch.device:
    """`cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available) as a torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={device!r} but CUDA is not available; use cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"train.device must be cpu, cuda or auto (got {device!r})")
    return torch.device(device)


def minibatches(
    n: int, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """Index tensors of consecutive batches; shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    yield from order.split(batch_size)


def train_epoch(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    generator: torch.Generator,
    progress: tqdm | None = None,
) -> float:
    """One pass over (x, y) in shuffled batches; returns the mean training loss."""
    model.train()
    total, count = torch.zeros((), device=x.device), 0
    for idx in minibatches(len(x), batch_size, generator):
        idx = idx.to(x.device)
        xb, yb = x[idx], y[idx]
        loss = loss_fn(model(xb), yb)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the training loss became {float(loss)} after {count} samples; lower the "
                "learning rate (optim.lr) or check the loss hyperparameters"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(idx)
        count += len(idx)
        if progress is not None:
            progress.update(len(idx))
    return float(total) / max(count, 1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: Sequence[float] = (),
    batch_size: int = 2048,
    certifier: Certifier | None = None,
) -> Evaluation:
    """Accuracy and certificates of `model` (eval mode) on (x, y)."""
    model.eval()
    if certifier is None:
        certifier = Certifier.from_model(model, tuple(x.shape[1:]))
    logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    radii = certifier.radii(logits)
    metrics = summarize(logits, y, radii, eps)
    metrics["lipschitz_bound"] = certifier.lipschitz
    pred = logits.argmax(dim=1)
    return Evaluation(metrics, radii.cpu(), (pred == y).cpu(), y.cpu(), pred.cpu())


def _progress(total: int, epoch: int, epochs: int, show: bool | None) -> tqdm | None:
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return None
    return tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="img", leave=False)


def fit(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    eps: Sequence[float] = (),
    on_epoch_end: EpochEnd | None = None,
    progress: bool | None = None,
) -> FitResult:
    """Train for `epochs`, evaluating on `val` after each epoch and on `test` at the end.

    Per epoch: `train/loss`, `val/<metric>` for every metric of `evaluate`. `on_epoch_end`
    receives (epoch, metrics) as soon as they exist, so a tracker never loses a finished epoch.
    Raises `TrainingDiverged` on a non-finite loss.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1 (got {epochs})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = train
    result = FitResult()
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        bar = _progress(len(x_train), epoch, epochs, progress)
        t0 = time.perf_counter()
        try:
            loss = train_epoch(
                model,
                loss_fn,
                optimizer,
                x_train,
                y_train,
                batch_size=batch_size,
                generator=generator,
                progress=bar,
            )
        finally:
            if bar is not None:
                bar.close()
        metrics = {"train/loss": loss, "train/epoch_seconds": time.perf_counter() - t0}
        if val is not None and len(val[0]):
            ev = evaluate(model, *val, eps=eps)
            metrics.update({f"val/{k}": v for k, v in ev.metrics.items()})
        result.history.append(metrics)
        log.info(
            "epoch %d/%d  %s",
            epoch,
            epochs,
            "  ".join(f"{k}={v:.4g}" for k, v in metrics.items() if math.isfinite(v)),
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
    if test is not None:
        result.test = evaluate(model, *test, eps=eps)
    result.seconds = time.perf_counter() - start
    return result
