"""`tradeoff-bench`: the command line (see docs/bench.md)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from ..allocator import tune_allocator
from ..zoo import CONVNET_WIDTHS
from .layer_families import bench_families
from .models import LIPCONVNET_VARIANTS, SEED_CONV_VARIANTS, torchlip_status
from .report import Row, check_targets, format_table, machine_info, write_json
from .sections import SECTIONS, Settings, bench_certificates, bench_model, bench_sweep

__all__ = ["main", "parser"]

# Repetitions per section (full run / --quick): a seed_conv round is cheap, a lipconvnet round
# is not, a sweep "repetition" is a whole job.
REPEATS = {"seed_conv": 20, "lipconvnet": 5, "families": 5, "certificates": 10, "sweep": 3}
QUICK_REPEATS = {"seed_conv": 2, "lipconvnet": 1, "families": 1, "certificates": 2, "sweep": 1}
# The families section's convnet: width 8 (as layers_compared), depth 1, down to a 1×1 map (five
# blocks on 28×28), which every family builds and a 2-core CPU times in minutes; --quick: width 4.
CONVNET = {"size": "xs", "width": 8, "depth": 1, "blocks": None}
QUICK_CONVNET = {"size": "xs", "width": 4, "depth": 1, "blocks": None}


def _sections(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {', '.join(unknown) or text!r}; choose from {', '.join(SECTIONS)}"
        )
    return list(dict.fromkeys(names))  # each section once, in the order given


def parser() -> argparse.ArgumentParser:
    """The argument parser (public so the docs and tests can show its help)."""
    p = argparse.ArgumentParser(
        prog="tradeoff-bench",
        description=(
            "Time tradeoff's 1-Lipschitz layers against the same unconstrained network and "
            "deel-torchlip, in one process: warm-up, interleaved repetitions, medians."
        ),
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward passes")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument(
        "--repeats",
        type=int,
        help="timed rounds in every section (default: "
        + ", ".join(f"{k} {v}" for k, v in REPEATS.items())
        + "; sweep counts jobs after the first)",
    )
    p.add_argument("--warmup", type=int, help="untimed rounds first (default 2, --quick 1)")
    p.add_argument("--batch", type=int, help="batch of the train/eval steps (default 256)")
    p.add_argument("--width", type=int, help="lipconvnet width (default 32)")
    p.add_argument("--depth", type=int, help="lipconvnet convolutions per stage (default 2)")
    p.add_argument("--stages", type=int, help="lipconvnet downsamplings (default 3)")
    p.add_argument(
        "--size",
        choices=tuple(CONVNET_WIDTHS),
        help="families: convnet size, base width "
        + ", ".join(f"{k} {v}" for k, v in CONVNET_WIDTHS.items())
        + " (default xs)",
    )
    p.add_argument(
        "--convnet-width",
        type=int,
        help="families: convnet width (default 8; with --size, the size's)",
    )
    p.add_argument("--convnet-depth", type=int, help="families: convs per block (default 1)")
    p.add_argument(
        "--convnet-blocks", type=int, help="families: blocks (default: down to a 1×1 map)"
    )
    p.add_argument("--cert-samples", type=int, help="samples certified (default 10000)")
    p.add_argument("--cert-batch", type=int, help="eval batch for certificates (default 2048)")
    p.add_argument(
        "--only",
        type=_sections,
        default=list(SECTIONS),
        help=f"comma-separated sections to run, from {','.join(SECTIONS)} (default all)",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes and 1-2 rounds (tests)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write every row as JSON")
    return p


def _device(p: argparse.ArgumentParser, name: str) -> torch.device:
    if name != "cpu" and not name.startswith("cuda"):
        p.error(f"--device must be cpu, cuda or cuda:N (got {name!r})")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no GPU visible"
            p.error(
                f"--device {name}: CUDA is not available (torch {torch.__version__}, {build}); "
                "run on a machine with an NVIDIA GPU and a CUDA build of torch "
                "(https://pytorch.org/get-started/locally/), or use --device cpu"
            )
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            p.error(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    return torch.device(name)


def _settings(p: argparse.ArgumentParser, a: argparse.Namespace) -> Settings:
    for key in (
        "threads",
        "repeats",
        "warmup",
        "batch",
        "width",
        "depth",
        "cert_samples",
        "cert_batch",
        "convnet_width",
        "convnet_depth",
    ):
        value = getattr(a, key)
        if value is not None and value < (0 if key == "warmup" else 1):
            p.error(f"--{key.replace('_', '-')} must be >= {0 if key == 'warmup' else 1}")
    for key in ("stages", "convnet_blocks"):
        if getattr(a, key) is not None and getattr(a, key) < 0:
            p.error(f"--{key.replace('_', '-')} must be >= 0")
    q = a.quick

    def pick(value: int | None, full: int, quick: int) -> int:
        return value if value is not None else (quick if q else full)

    base = QUICK_REPEATS if q else REPEATS
    return Settings(
        device=_device(p, a.device),
        bf16=a.bf16,
        threads=a.threads,
        warmup=pick(a.warmup, 2, 1),
        repeats={k: a.repeats if a.repeats is not None else v for k, v in base.items()},
        batch=pick(a.batch, 256, 8),
        lipconvnet={
            "width": pick(a.width, 32, 4),
            "depth": pick(a.depth, 2, 1),
            "stages": pick(a.stages, 3, 1),
        },
        convnet=_convnet(a, QUICK_CONVNET if q else CONVNET),
        cert_samples=pick(a.cert_samples, 10_000, 64),
        cert_batch=pick(a.cert_batch, 2048, 32),
        quick=q,
    )


def _convnet(a: argparse.Namespace, defaults: dict[str, object]) -> dict[str, object]:
    """The families section's convnet options: those given on the command line, else defaults
    (a --size given without --convnet-width takes the size's base width)."""
    if a.size is not None:
        defaults = {**defaults, "width": None}
    given = {
        "size": a.size,
        "width": a.convnet_width,
        "depth": a.convnet_depth,
        "blocks": a.convnet_blocks,
    }
    return {k: v if v is not None else defaults[k] for k, v in given.items()}


def _convnet_text(options: dict[str, object]) -> str:
    """The families section's convnet in words, for the printed header."""
    width = options["width"] or f"{CONVNET_WIDTHS[str(options['size'])]} (the size's)"
    blocks = options["blocks"] if options["blocks"] is not None else "down to 1×1"
    return f"size {options['size']}, width {width}, depth {options['depth']}, blocks {blocks}"


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`tradeoff-bench`)."""
    p = parser()
    a = p.parse_args(argv)
    s = _settings(p, a)
    torch.set_num_threads(s.threads)
    allocator = tune_allocator()
    torchlip = torchlip_status()
    machine = machine_info(s.device, torchlip[1])
    machine["allocator"] = allocator
    precision = "bf16 autocast" if s.bf16 else "fp32"
    print(
        f"tradeoff-bench: {s.device}, {s.threads} threads, {precision}, batch {s.batch}, "
        f"warm-up {s.warmup}, allocator {allocator}, sections {', '.join(a.only)}",
        flush=True,
    )
    started = time.perf_counter()
    rows: list[Row] = []
    for section in a.only:
        t0 = time.perf_counter()
        print(f"  {section} ...", end="", flush=True)
        if section == "seed_conv":
            rows += bench_model(section, SEED_CONV_VARIANTS, (1, 28, 28), s, torchlip)
        elif section == "lipconvnet":
            rows += bench_model(
                section, LIPCONVNET_VARIANTS, (3, 32, 32), s, torchlip, **s.lipconvnet
            )
        elif section == "families":
            rows += bench_families(s)
        elif section == "certificates":
            rows += bench_certificates(s)
        elif section == "sweep":
            rows += bench_sweep(s)
        print(f" {time.perf_counter() - t0:.1f} s", flush=True)
    if hasattr(os, "getloadavg"):
        machine["load_average_end"] = list(os.getloadavg())
    targets = check_targets(rows)
    print()
    print(
        f"machine: {machine['cpu']} | {machine['cores']} cores ({machine['cores_usable']} usable)"
        f" | torch {machine['torch']}, {s.threads} threads | python {machine['python']}"
        + (f" | GPU {machine['gpu']}" if "gpu" in machine else "")
    )
    print(f"deel-torchlip: {machine['deel_torchlip']} | GroupSort2: {machine['groupsort2']}")
    print(f"spectral layers: {machine['spectral']}")
    print(
        "variants: [torch] plain-torch references only, [NumPy] also the spectral layers' "
        "eigenvalue forms with NumPy loops (an install without a C compiler), [C] also the C "
        "kernels; no suffix: whatever is built"
    )
    load, end = machine["load_average"], machine.get("load_average_end")
    if load and end:
        print(
            f"load average (1 min): {load[0]:.2f} at start, {end[0]:.2f} at end; "
            f"wall time {time.perf_counter() - started:.0f} s"
        )
    if "lipconvnet" in a.only:
        lc = s.lipconvnet
        print(
            f"lipconvnet: width {lc['width']}, depth {lc['depth']}, stages {lc['stages']}, "
            "3×32×32; seed_conv: 1×28×28"
        )
    if "families" in a.only:
        print(f"families: convnet {_convnet_text(s.convnet)}, 1×28×28, every registered family")
    print()
    print(format_table(rows))
    print()
    for section, text in s.checks.items():
        print(f"{section} equivalence: {text}")
    print("targets (issue 6):")
    for t in targets:
        print(t.line())
    if a.json is not None:
        settings = {
            "device": str(s.device),
            "bf16": s.bf16,
            "threads": s.threads,
            "warmup": s.warmup,
            "repeats": s.repeats,
            "batch": s.batch,
            "lipconvnet": s.lipconvnet,
            "convnet": s.convnet,
            "cert_samples": s.cert_samples,
            "cert_batch": s.cert_batch,
            "quick": s.quick,
            "sections": a.only,
        }
        write_json(a.json, rows, machine, settings, targets, s.checks)
        print(f"wrote {a.json}")
    sys.stdout.flush()
