"""Training and evaluation loops in plain PyTorch (no Hydra, no MLflow).

Datasets are small enough to live as tensors on the device, so batches are slices of a
shuffled index rather than a DataLoader. Evaluation computes the logits once and turns them
into certificates with constants computed once per evaluation (`Certifier`).

A run trains for a number of epochs or until a wall-clock budget is spent (`tradeoff.budget`),
with an optional per-batch learning-rate schedule (`tradeoff.schedules`), augmentation of the
training batches (`tradeoff.data.augment`), gradient-norm clipping and autocast; it reports its
cost, and can be checkpointed and resumed between any two steps (`tradeoff.checkpoint`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .budget import Budget
from .certificates import Certifier, summarize
from .checkpoint import Progress, capture, restore
from .cost import parameter_count, peak_memory_mb, reset_peak_memory
from .data.augment import Augment
from .finite import logits_problem, require_finite, require_finite_logits
from .schedules import Schedule, ScheduledLR
from .tightness import empirical_lipschitz

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
StepEnd = Callable[[], bool]


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
    """Per-epoch history (one dict of metrics per epoch, from the first epoch even when the
    run was resumed), the final test evaluation (None when `interrupted`) and what the run
    spent (`cost`: train/seconds, train/images_per_second, train/peak_memory_mb,
    train/steps, train/epochs_done, model/params)."""

    history: list[dict[str, float]] = field(default_factory=list)
    test: Evaluation | None = None
    seconds: float = 0.0
    steps: int = 0
    epochs_done: float = 0.0
    stopped_at_budget: bool = False
    cost: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False


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


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device`, or nothing."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


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
    augment: Augment | None = None,
    grad_clip: float | None = None,
    on_step: StepEnd | None = None,
    position: Progress | None = None,
    autocast: torch.dtype | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """One pass over (x, y) in shuffled batches; returns the mean training loss.

    `augment` maps each batch (drawing from `generator`); `grad_clip` caps the gradient's
    global L2 norm; `on_step()` runs after every optimiser step, and returning False ends the
    epoch there (a budget that is spent, a stop requested). `position` is where the epoch
    stands (its batch order, the next batch, the loss so far): it goes on from there and is
    kept up to date, so that a stopped epoch can be checkpointed and finished later.
    `autocast` runs the forward pass under `torch.autocast` with that dtype (the loss in
    float32); `forward` replaces `model(...)` in the step (a compiled model).
    """
    require_finite(x, "training inputs", "drop or repair them before training")
    model.train()
    position = position if position is not None else Progress()
    if position.order is None:
        position.order = torch.randperm(len(x), generator=generator)
    forward = forward if forward is not None else model
    total = torch.full((), position.loss_sum, device=x.device)  # float32, as before a stop
    for idx in position.order.split(batch_size)[position.batch :]:
        idx = idx.to(x.device)
        xb, yb = x[idx], y[idx]
        if augment is not None:
            xb = augment(xb, generator)
        with _autocast(x.device, autocast):
            logits = forward(xb)
        if autocast:
            logits = logits.float()
        loss = loss_fn(logits, yb)
        if not torch.isfinite(loss):
            problem = logits_problem(logits.detach(), xb, index=idx)
            raise TrainingDiverged(
                f"the training loss became {float(loss.detach())} after {position.count} "
                "samples; "
                + (f"{problem}; " if problem else "")
                + "lower the learning rate (optim.lr), check the loss hyperparameters"
                + (" or scale the inputs" if problem else "")
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        total += loss.detach() * len(idx)
        position.batch += 1
        position.count += len(idx)
        if progress is not None:
            progress.update(len(idx))
        if on_step is not None and not on_step():
            break
    position.loss_sum = float(total)
    return position.loss_sum / max(position.count, 1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: Sequence[float] = (),
    batch_size: int = 2048,
    certifier: Certifier | None = None,
    tightness: bool = False,
) -> Evaluation:
    """Accuracy and certificates of `model` (eval mode) on (x, y); `NonFiniteError` names the
    samples whose inputs or logits hold NaN or ±inf.

    With `tightness`, also `lipschitz_lower`, a lower bound on the model's Lipschitz constant
    measured at the first samples of `x` (`tradeoff.tightness.empirical_lipschitz`), and
    `bound_tightness` = `lipschitz_bound` / `lipschitz_lower`: how loose the bound can be.
    """
    require_finite(x, "inputs", "certificates exist only for finite inputs: drop or repair them")
    model.eval()
    if certifier is None:
        certifier = Certifier.from_model(model, tuple(x.shape[1:]))
    logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    require_finite_logits(logits, x)
    radii = certifier.radii(logits, x)
    metrics = summarize(logits, y, radii, eps)
    metrics["lipschitz_bound"] = certifier.lipschitz
    if tightness:
        lower = empirical_lipschitz(model, x)
        metrics["lipschitz_lower"] = lower
        metrics["bound_tightness"] = certifier.lipschitz / lower if lower > 0 else math.inf
    pred = logits.argmax(dim=1)
    return Evaluation(metrics, radii.cpu(), (pred == y).cpu(), y.cpu(), pred.cpu())


def _progress(total: int, epoch: int, epochs: int | None, show: bool | None) -> tqdm | None:
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return None
    desc = f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}"
    return tqdm(total=total, desc=desc, unit="img", leave=False)


class _AfterStep:
    """Runs after every optimiser step: counts it, moves the schedule, watches the budget and
    whether a stop was requested (`stopped` then says so).

    Under a budget the schedule's length is estimated as the comparison study did: during the
    first epoch from the pace of its steps so far, then once from the whole first epoch
    (training and validation); `cap` (epochs × steps per epoch) bounds it.
    """

    def __init__(
        self,
        scheduler: ScheduledLR | None,
        budget: Budget | None,
        cap: int | None,
        stop_requested: Callable[[], bool] | None = None,
    ):
        self.scheduler, self.budget, self.cap = scheduler, budget, cap
        self.stop_requested = stop_requested
        self.steps = 0
        self.estimating = budget is not None and scheduler is not None
        self.stopped = False

    def lay(self, total: int) -> None:
        """Stretch the schedule over `total` steps (at most `cap`)."""
        if self.scheduler is not None:
            self.scheduler.total_steps = max(1, min(total, self.cap or total))

    def requested(self) -> bool:
        """Whether a stop was requested (a signal); remembered once seen."""
        if not self.stopped and self.stop_requested is not None:
            self.stopped = bool(self.stop_requested())
        return self.stopped

    def __call__(self) -> bool:
        self.steps += 1
        if self.scheduler is not None:
            if self.estimating:
                self.lay(self.budget.steps_for(self.steps, self.budget.elapsed))
            self.scheduler.step()
        if self.requested():
            return False
        return self.budget is None or not self.budget.spent()


Checkpoint = Callable[[dict], None]


def fit(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    epochs: int | None = None,
    batch_size: int,
    seed: int = 0,
    eps: Sequence[float] = (),
    on_epoch_end: EpochEnd | None = None,
    progress: bool | None = None,
    budget_seconds: float | None = None,
    schedule: Schedule | None = None,
    augment: Augment | None = None,
    grad_clip: float | None = None,
    autocast: torch.dtype | None = None,
    train_forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    resume: dict | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 0,
    stop_requested: Callable[[], bool] | None = None,
) -> FitResult:
    """Train for `epochs`, or until `budget_seconds` of wall clock are spent, evaluating on
    `val` after each epoch and on `test` at the end.

    With a budget, `epochs` (if given) is an upper limit; the budget is checked between
    batches, and the epoch it ends is cut there, evaluated on `val` and counted as a fraction
    (`epochs_done`). `schedule` is stepped once per batch over all the run's steps (under a
    budget: the steps it is estimated to buy). Per epoch: `train/loss`, `train/lr`,
    `train/epoch_seconds`, `val/<metric>` for every metric of `evaluate` (on `test` with its
    tightness metrics). `on_epoch_end` receives (epoch, metrics) as soon as they exist, so a
    tracker never loses a finished epoch.

    `autocast` (e.g. torch.bfloat16) runs the training forward passes under autocast and
    `train_forward` replaces the model in them (a compiled model); evaluation and
    certificates always run `model` itself, in float32, outside autocast.

    Checkpoints: `checkpoint(state)` receives a `tradeoff.checkpoint.capture` state every
    `checkpoint_every` epochs (0: never on a schedule), before `on_epoch_end` sees that epoch,
    and whenever `stop_requested()` turns true (checked after every step and epoch); the run
    then returns at once, `interrupted`, without its test evaluation. `resume` (such a state)
    goes on from where it was taken, computing the steps the uninterrupted run would have.

    Raises `NonFiniteError` before any step when a split's inputs hold NaN or ±inf (and when a
    batch's logits do), `TrainingDiverged` on a non-finite loss.
    """
    if epochs is None and budget_seconds is None:
        raise ValueError("give epochs or budget_seconds")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be >= 1 (got {epochs})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    if grad_clip is not None and not (math.isfinite(grad_clip) and grad_clip > 0):
        raise ValueError(f"grad_clip must be a finite number > 0 (got {grad_clip})")
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0 (got {checkpoint_every})")
    for name, split in (("training", train), ("validation", val), ("test", test)):
        if split is not None:
            require_finite(split[0], f"{name} inputs", "drop or repair them before training")
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = train
    device = x_train.device
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    cap = epochs * steps_per_epoch if epochs is not None else None
    scheduler = schedule.build(optimizer, cap or steps_per_epoch) if schedule else None
    state = Progress()
    if resume is not None:
        state = restore(resume, model, optimizer, scheduler, generator)
    budget = None
    if budget_seconds is not None:
        budget = Budget(budget_seconds)
        budget.started -= state.budget_elapsed  # what the run spent before it was stopped
    after_step = _AfterStep(scheduler, budget, cap, stop_requested)
    if resume is not None:
        after_step.steps, after_step.estimating = state.steps, state.estimating
    result = FitResult()
    reset_peak_memory(device)
    start = time.perf_counter() - state.seconds

    def save() -> None:
        if checkpoint is None:
            return
        state.steps, state.estimating = after_step.steps, after_step.estimating
        state.budget_elapsed = budget.elapsed if budget is not None else 0.0
        state.seconds = time.perf_counter() - start
        checkpoint(capture(model, optimizer, scheduler, generator, state))

    while not state.done and (epochs is None or state.epoch < epochs):
        epoch = state.epoch + 1
        bar = _progress(len(x_train), epoch, epochs, progress)
        t0, steps_before, count_before = time.perf_counter(), after_step.steps, state.count
        try:
            train_epoch(
                model,
                loss_fn,
                optimizer,
                x_train,
                y_train,
                batch_size=batch_size,
                generator=generator,
                progress=bar,
                augment=augment,
                grad_clip=grad_clip,
                on_step=after_step,
                position=state,
                autocast=autocast,
                forward=train_forward,
            )
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - t0
        state.epoch_seconds += seconds
        state.train_seconds += seconds
        state.images += state.count - count_before
        state.epochs_done += (after_step.steps - steps_before) / steps_per_epoch
        cut = state.batch < steps_per_epoch
        if cut and after_step.stopped:
            save()
            result.interrupted = True
            return _finish(result, state, after_step.steps, start, device, model)
        metrics = {
            "train/loss": state.loss_sum / max(state.count, 1),
            "train/lr": float(optimizer.param_groups[0]["lr"]),
            "train/epoch_seconds": state.epoch_seconds,
        }
        if val is not None and len(val[0]):
            ev = evaluate(model, *val, eps=eps)
            metrics.update({f"val/{k}": v for k, v in ev.metrics.items()})
        state.history.append(metrics)
        state.epoch, state.order, state.batch = epoch, None, 0
        state.loss_sum, state.count, state.epoch_seconds = 0.0, 0, 0.0
        log.info(
            "epoch %d%s  %s",
            epoch,
            f"/{epochs}" if budget is None else "",
            "  ".join(f"{k}={v:.4g}" for k, v in metrics.items() if math.isfinite(v)),
        )
        if after_step.estimating:  # the whole first epoch's pace, validation included
            after_step.lay(budget.steps_for(after_step.steps, budget.elapsed))
            after_step.estimating = False
        if budget is not None and budget.spent():
            state.done = state.stopped_at_budget = True
            log.info("budget of %.4g s spent after %d steps", budget.seconds, after_step.steps)
        due = checkpoint_every > 0 and epoch % checkpoint_every == 0
        if due or after_step.requested():
            save()  # before the epoch is reported: a kill in between loses none of it
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
        if after_step.requested():
            result.interrupted = True
            return _finish(result, state, after_step.steps, start, device, model)
    state.done = True
    if test is not None:
        result.test = evaluate(model, *test, eps=eps, tightness=True)
        if after_step.requested():  # stopped during the test evaluation: do it again later
            save()
            result.interrupted, result.test = True, None
    return _finish(result, state, after_step.steps, start, device, model)


def _finish(
    result: FitResult,
    state: Progress,
    steps: int,
    start: float,
    device: torch.device,
    model: nn.Module,
) -> FitResult:
    """Fill `result` from the loop's `state`: history, counts and cost."""
    result.history = state.history
    result.seconds = time.perf_counter() - start
    result.steps = state.steps = steps
    result.epochs_done = state.epochs_done
    result.stopped_at_budget = state.stopped_at_budget
    result.cost = {
        "train/seconds": result.seconds,
        "train/images_per_second": (
            state.images / state.train_seconds if state.train_seconds > 0 else math.nan
        ),
        "train/peak_memory_mb": peak_memory_mb(device),
        "train/steps": float(result.steps),
        "train/epochs_done": result.epochs_done,
        "model/params": float(parameter_count(model)),
    }
    return result
