"""Composing a config and training its job on real data, as the recipe and checkpoint tests
do: through `tradeoff.train.build` and `tradeoff.loop.fit`, without MLflow."""

from __future__ import annotations

from collections.abc import Callable

import torch
from hydra import compose, initialize_config_dir

from tradeoff.loop import fit
from tradeoff.paths import conf_dir
from tradeoff.train import Job, build


def compose_config(overrides: list[str]):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


def watch_steps(optimizer: torch.optim.Optimizer, model: torch.nn.Module, seen: dict) -> None:
    """Record the learning rate and gradient norm each optimiser step uses."""

    def before_step(opt, args, kwargs) -> None:
        grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
        seen.setdefault("lr", []).append(opt.param_groups[0]["lr"])
        seen.setdefault("grad_norm", []).append(float(torch.stack(grads).norm()))
        if "on_step" in seen:
            seen["on_step"]()

    optimizer.register_step_pre_hook(before_step)


def train_config(
    overrides: list[str],
    *,
    recipe: bool = True,
    seen: dict | None = None,
    prepare: Callable[[Job], None] | None = None,
    **extra,
):
    """Build the config's job and train it; `recipe=False` passes none of the recipe's options
    (the code path of a run before schedules, augmentation and clipping existed); `seen`
    collects what each optimiser step used (`watch_steps`); `prepare(job)` runs before training;
    `extra` overrides fit's arguments."""
    cfg = compose_config(overrides)
    job = build(cfg)
    if seen is not None:
        watch_steps(job.optimizer, job.model, seen)
    if prepare is not None:
        prepare(job)
    d = job.data
    options = {"epochs": cfg.train.epochs, "seed": cfg.train.seed}
    if recipe:
        options.update(schedule=job.schedule, augment=job.augment, grad_clip=cfg.train.grad_clip)
        options.update(autocast=job.amp, train_forward=job.train_forward)
    result = fit(
        job.model,
        job.loss,
        job.optimizer,
        (d.train.x, d.train.y),
        (d.val.x, d.val.y),
        (d.test.x, d.test.y),
        batch_size=cfg.train.batch_size,
        eps=job.eps,
        progress=False,
        **{**options, **extra},
    )
    return job, result
