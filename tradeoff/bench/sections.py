"""The measurements of `tradeoff-bench`: two models' training steps and eval forwards,
certificates against the plain forward pass, and the overhead of one sweep job (the layer
families on `convnet`: `layer_families.py`)."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..certificates import Certifier
from ..nn import native
from .models import PLAIN_GS2, TORCHLIP, check_equivalent, each_variant, split_variant
from .report import Row
from .timing import Case, Stats, interleaved

__all__ = [
    "SECTIONS",
    "Settings",
    "bench_certificates",
    "bench_model",
    "bench_sweep",
    "eval_forward",
    "rows_against_plain",
    "train_step",
]

SECTIONS = ("seed_conv", "lipconvnet", "families", "certificates", "sweep")


@dataclass
class Settings:
    """What every section needs to know; filled in by the command line."""

    device: torch.device
    bf16: bool = False
    threads: int = 2
    warmup: int = 2
    repeats: dict[str, int] = field(default_factory=dict)
    batch: int = 256
    lipconvnet: dict[str, int] = field(default_factory=dict)
    convnet: dict[str, Any] = field(default_factory=dict)
    cert_samples: int = 10_000
    cert_batch: int = 2048
    quick: bool = False
    checks: dict[str, str] = field(default_factory=dict)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast for forward passes when asked for, else nothing."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


# -- train step and eval forward -----------------------------------------------------------------


def _limited(accelerator: str | None, fn: Callable[[], None]) -> Callable[[], None]:
    """`fn` run with the layers limited to `accelerator` (`native.limited_to`), or as it is."""
    if accelerator is None:
        return fn

    def run() -> None:
        with native.limited_to(accelerator):
            fn()

    return run


def _missing(variant: str, torchlip: tuple[bool, str]) -> str | None:
    """Why `variant` cannot run here (deel-torchlip or an accelerator absent), else None."""
    if variant == TORCHLIP and not torchlip[0]:
        return torchlip[1]
    accelerator = split_variant(variant)[1]
    if accelerator is not None and not native.available(accelerator):
        return "the C kernels are not built (see setup.py)"
    return None


def train_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: Settings
) -> Callable[[], None]:
    """Forward, cross-entropy, backward and an Adam step, as in `tradeoff.loop.train_epoch`."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with s.autocast():
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    return step


def eval_forward(model: nn.Module, x: torch.Tensor, s: Settings) -> Callable[[], None]:
    """One forward pass in eval mode without autograd (weights unchanged between calls)."""
    model.eval()

    def forward() -> None:
        with torch.no_grad(), s.autocast():
            model(x)

    return forward


def bench_model(
    section: str,
    variants: Sequence[str],
    input_shape: tuple[int, int, int],
    s: Settings,
    torchlip: tuple[bool, str],
    **options: Any,
) -> list[Row]:
    """Train step and eval forward of every variant of zoo model `section`, interleaved.

    Train-step and eval models are separate instances: the training steps change their weights,
    the eval model keeps its own, so an eval-mode weight cache is measured in its steady state.
    A variant with an accelerator suffix (`spectral [torch]`) runs its steps limited to it.
    """
    device = s.device
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((s.batch, *input_shape), generator=gen).to(device)
    y = torch.randint(0, 10, (s.batch,), generator=gen).to(device)
    missing = {v: why for v in variants if (why := _missing(v, torchlip)) is not None}
    runnable = [v for v in variants if v not in missing]
    factories = each_variant(section, runnable, input_shape, seed=0, **options)
    evals = {v: make() for v, make in factories.items()}
    others = {v: m for v, m in evals.items() if v != "plain"}
    probe = torch.rand((2, *input_shape), generator=gen)
    s.checks[section] = check_equivalent(evals["plain"], others, probe)
    cases: list[Case] = []
    for variant, make in factories.items():
        accelerator = split_variant(variant)[1]
        train = train_step(make().to(device), x, y, s)
        forward = eval_forward(evals[variant].to(device), x, s)
        cases.append(Case(f"{variant}|train step", _limited(accelerator, train)))
        cases.append(Case(f"{variant}|eval forward", _limited(accelerator, forward)))
    samples = interleaved(cases, repeats=s.repeats[section], warmup=s.warmup, device=device)
    rows = rows_against_plain(section, variants, samples, missing)
    for row in rows:
        if row.median_ms is None:
            continue
        twin = _gs2_twin(row.name, samples, row.what)
        if row.name == TORCHLIP:
            row.note = f"deel-torchlip {torchlip[1]}"
        elif twin is not None:
            # What the weight constraints alone cost: against the same activations.
            gs2 = Stats.of(samples[f"{twin}|{row.what}"]).median_ms
            row.note = f"{row.median_ms / gs2:.2f}× {twin}"
    return rows


def rows_against_plain(
    section: str,
    variants: Sequence[str],
    samples: dict[str, list[float]],
    untimed: dict[str, str],
) -> list[Row]:
    """The train-step rows, then the eval-forward rows, of every variant in order, with their
    ratio to "plain"; a variant in `untimed` gets a row with the reason as its note instead."""
    rows: list[Row] = []
    for what in ("train step", "eval forward"):
        plain = Stats.of(samples[f"plain|{what}"]).median_ms
        for variant in variants:
            if variant in untimed:
                rows.append(Row(section, variant, what, note=untimed[variant]))
                continue
            row = Row.measured(section, variant, what, Stats.of(samples[f"{variant}|{what}"]))
            row.ratio_to_plain = row.median_ms / plain
            rows.append(row)
    return rows


def _gs2_twin(variant: str, samples: dict[str, list[float]], what: str) -> str | None:
    """The `plain+gs2` variant whose GroupSort2 runs as `variant`'s does (C or torch ops), when
    measured: "plain+gs2 [torch]" for "spectral [NumPy]", which keeps C out."""
    base, accelerator = split_variant(variant)
    if base in ("plain", PLAIN_GS2, TORCHLIP):
        return None
    gs2 = "C" if accelerator in (None, "c") else "torch"
    twin = f"{PLAIN_GS2} [{gs2}]"
    return twin if f"{twin}|{what}" in samples else None


# -- certificates --------------------------------------------------------------------------------


def bench_certificates(s: Settings, variants: Sequence[str] = ("spectral", "aol")) -> list[Row]:
    """Eval forward over `cert_samples` inputs, alone and with certificates, per layer family.

    As after a training epoch, each repetition starts from weights that changed since the last
    one (an in-place no-op update plus a train→eval switch, outside the timing), so a cached
    constrained weight is recomputed inside the timed region, as `tradeoff.loop.evaluate` pays.
    The certified variant adds `Certifier.from_model` (once) and `radii` on all the logits;
    certificates hold only for float32 logits (`tradeoff.rounding`), so under `--bf16` its
    forward runs in float32.
    """
    device, shape = s.device, (1, 28, 28)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((s.cert_samples, *shape), generator=gen).to(device)
    factories = each_variant("seed_conv", ("plain", *variants), shape, seed=0)
    models = {v: make().to(device) for v, make in factories.items()}

    def forward(model: nn.Module, cast: bool = True) -> torch.Tensor:
        with torch.no_grad(), s.autocast() if cast else contextlib.nullcontext():
            return torch.cat(
                [model(x[i : i + s.cert_batch]) for i in range(0, len(x), s.cert_batch)]
            )

    def fresh(model: nn.Module) -> Callable[[], None]:
        def setup() -> None:
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1.0)  # bumps the version counter, as an optimiser step would
            model.train()
            model.eval()

        return setup

    def plain_pass(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.eval()
            forward(model)

        return run

    def certified_pass(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.eval()
            certifier = Certifier.from_model(model, shape)
            certifier.radii(forward(model, cast=False), x)

        return run

    cases = [Case(f"{v}|forward", plain_pass(m), fresh(m)) for v, m in models.items()]
    cases += [
        Case(f"{v}|forward + certificates", certified_pass(models[v]), fresh(models[v]))
        for v in variants
    ]
    samples = interleaved(cases, repeats=s.repeats["certificates"], warmup=s.warmup, device=device)
    stats = {k: Stats.of(v) for k, v in samples.items()}
    plain = stats["plain|forward"].median_ms
    rows = [
        Row.measured(
            "certificates",
            "plain",
            "forward",
            stats["plain|forward"],
            note=f"{s.cert_samples} samples in batches of {s.cert_batch}",
        )
    ]
    rows[0].ratio_to_plain = 1.0
    for v in variants:
        alone = Row.measured("certificates", v, "forward", stats[f"{v}|forward"])
        cert = Row.measured(
            "certificates", v, "forward + certificates", stats[f"{v}|forward + certificates"]
        )
        for row in (alone, cert):
            row.ratio_to_plain = row.median_ms / plain
        cert.ratio_to_forward = cert.median_ms / alone.median_ms
        if s.bf16:
            cert.note = "its forward in float32: certificates need float32 logits"
        rows += [alone, cert]
    return rows


# -- sweep-job overhead --------------------------------------------------------------------------


class _Pieces:
    """Times named functions while patched in, each exclusive of the others nested inside it
    (the per-epoch metric logging called from `fit` counts as logging, not as training)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.missing: dict[str, str] = {}
        self._stack: list[list[float]] = []

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append([0.0])
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                nested = self._stack.pop()[0]
                self.seconds[label] = self.seconds.get(label, 0.0) + elapsed - nested
                if self._stack:
                    self._stack[-1][0] += elapsed

        return timed

    @contextlib.contextmanager
    def patched(self, targets: Sequence[tuple[object, str, str]]) -> Iterator[None]:
        saved = []
        for owner, attr, label in targets:
            original = getattr(owner, attr, None)
            if original is None:  # renamed in tradeoff.train / tracking: say so, keep going
                self.missing[label] = f"{getattr(owner, '__name__', owner)}.{attr} not found"
                continue
            saved.append((owner, attr, original))
            setattr(owner, attr, self.wrap(label, original))
        try:
            yield
        finally:
            for owner, attr, original in reversed(saved):
                setattr(owner, attr, original)


FIT = "fit (training)"


def _targets() -> list[tuple[object, str, str]]:
    """What `tradeoff.train.run` calls, by the names it calls them under."""
    from .. import data, train, zoo
    from ..tracking import RunTracker

    return [
        (train, "check_tracking_uri", "check store"),
        (train, "build", "build (instantiate, loss, optimiser)"),
        (data, "load_dataset", "load data"),  # Hydra looks `_target_`s up when it calls them
        (zoo, "create", "build model"),
        (RunTracker, "__init__", "tracker client"),
        (RunTracker, "finished_twin", "resume lookup"),
        (RunTracker, "start", "tracker start (run, params, config)"),
        (train, "fit", FIT),
        (RunTracker, "log_metrics", "log metrics"),
        (RunTracker, "log_certificates", "log certificates"),
        (train, "export_vanilla", "vanilla export"),
        (RunTracker, "log_models", "log models"),
        (RunTracker, "end", "end run"),
    ]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's and the trainer's INFO lines and warnings off; no parent run from outside."""
    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic", "tradeoff")]
    levels = [lg.level for lg in loggers]
    parent = os.environ.pop("TRADEOFF_PARENT_RUN_ID", None)
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if parent is not None:
            os.environ["TRADEOFF_PARENT_RUN_ID"] = parent


def bench_sweep(s: Settings) -> list[Row]:
    """Overhead of sweep jobs beyond training: 1-epoch `data=digits` jobs through
    `tradeoff.train.run` on a fresh sqlite store, each config composed with Hydra's API.

    The first job creates the store (a one-off per store, reported apart); the next `repeats`
    jobs give the median. Overhead = composition + `run()` − the training inside `fit`.
    """
    from hydra import compose, initialize_config_dir

    from .. import train
    from ..paths import conf_dir

    jobs = 1 + s.repeats["sweep"]
    per_job: list[dict[str, float]] = []
    missing: dict[str, str] = {}
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="tradeoff-bench-") as tmp, _quiet():
        for i in range(jobs):
            overrides = [
                "data=digits",
                "train.epochs=1",
                f"train.seed={i}",  # a new config each job, as in a sweep
                f"train.threads={s.threads}",
                f"train.device={s.device}",
                "train.progress=false",
                f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                "tracking.experiment=tradeoff-bench",
                "tracking.resume=true",  # the finished-twin lookup a sweep job does
            ]
            if s.quick:  # a smaller model: the test needs the rows, not the figures
                overrides += ["model.filters=[4,8]", "model.hidden=16"]
            start = time.perf_counter()
            with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
                cfg = compose("config", overrides=overrides)
            composed = time.perf_counter()
            pieces = _Pieces()
            with pieces.patched(_targets()):
                metrics = train.run(cfg)
            end = time.perf_counter()
            times = dict(pieces.seconds)
            times["compose config"] = composed - start
            times["rest of run()"] = (end - composed) - sum(pieces.seconds.values())
            times["train/seconds"] = float(metrics.get("train/seconds", float("nan")))
            # Training = fit's own time; its train/seconds metric if fit could not be timed.
            times["overhead"] = (end - start) - pieces.seconds.get(FIT, times["train/seconds"])
            per_job.append(times)
            missing.update(pieces.missing)
    torch.set_num_threads(threads)
    first, warm = per_job[0], per_job[1:]

    def stats(key: str, jobs: list[dict[str, float]]) -> Stats:
        return Stats.of([j.get(key, 0.0) for j in jobs])

    seconds = stats("train/seconds", warm).median_ms / 1000
    rows = [
        Row.measured(
            "sweep",
            "job",
            "overhead",
            stats("overhead", warm),
            note="compose + run() − training; target ≤ 2 s",
        ),
        Row.measured(
            "sweep",
            "job",
            "overhead, first job",
            stats("overhead", [first]),
            note="creates the MLflow store: once per store",
        ),
        Row.measured(
            "sweep",
            "job",
            FIT,
            stats(FIT, warm),
            note=f"1 epoch of digits; its train/seconds metric {seconds:.2f} s",
        ),
    ]
    labels = ["compose config", *(label for _, _, label in _targets()), "rest of run()"]
    rows += [
        Row("sweep", "piece", label, note=missing[label])
        if label in missing
        else Row.measured("sweep", "piece", label, stats(label, warm))
        for label in labels
        if label != FIT
    ]
    return rows
