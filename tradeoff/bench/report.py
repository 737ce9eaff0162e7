"""Rows, the machine they were measured on, the printed table, the issue's targets, JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..nn.activations import groupsort2_implementation
from ..nn.bjorck import spectral_implementation
from .timing import Stats

__all__ = ["Row", "check_targets", "format_table", "machine_info", "write_json"]


@dataclass
class Row:
    """One measurement. `ratio_to_plain` is against the unconstrained network doing the same
    thing (None where there is none); `ratio_to_forward` (certificates only) is against the
    same model's forward pass without certificates. `params`, `saved_mib` (what autograd
    saves for backward) and `peak_mib` (CUDA only) describe a model's training step."""

    section: str
    name: str
    what: str
    median_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    n: int = 0
    ratio_to_plain: float | None = None
    ratio_to_forward: float | None = None
    note: str = ""
    params: int | None = None
    saved_mib: float | None = None
    peak_mib: float | None = None

    @classmethod
    def measured(cls, section: str, name: str, what: str, stats: Stats, note: str = "") -> Row:
        return cls(
            section, name, what, stats.median_ms, stats.min_ms, stats.max_ms, stats.n, note=note
        )

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.section, self.name, self.what)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: torch.device, torchlip: str) -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, threads, versions, GPU, load."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "deel_torchlip": torchlip,
        "groupsort2": groupsort2_implementation(),
        "spectral": spectral_implementation(),
        "device": str(device),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        from ..tracking import git_commit

        info["tradeoff_commit"] = git_commit()
    except Exception:  # the benchmark does not need MLflow to say where it ran
        info["tradeoff_commit"] = "unknown"
    return info


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.1f}" if v >= 10 else f"{v:.2f}"


def _fmt_ratio(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def format_table(rows: list[Row]) -> str:
    """Plain-text table, one line per row, a blank line between sections."""
    head = ["section", "variant", "what", "median ms", "min ms", "max ms", "×plain", "n", "note"]
    lines: list[list[str]] = []
    previous = None
    for r in rows:
        if previous is not None and r.section != previous:
            lines.append([])
        previous = r.section
        note = r.note
        if r.ratio_to_forward is not None:
            note = f"{r.ratio_to_forward:.2f}× its forward alone" + (f"; {note}" if note else "")
        lines.append(
            [
                r.section,
                r.name,
                r.what,
                _fmt_ms(r.median_ms),
                _fmt_ms(r.min_ms),
                _fmt_ms(r.max_ms),
                _fmt_ratio(r.ratio_to_plain),
                str(r.n),
                note,
            ]
        )
    widths = [max(len(head[i]), *(len(x[i]) for x in lines if x)) for i in range(len(head) - 1)]
    right = {3, 4, 5, 6, 7}

    def fmt(cells: list[str]) -> str:
        out = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i])
            for i, c in enumerate(cells[:-1])
        ]
        return ("  ".join(out) + "  " + cells[-1]).rstrip()

    text = [fmt(head), fmt(["-" * w for w in widths] + ["----"])]
    text += [fmt(x) if x else "" for x in lines]
    return "\n".join(text)


@dataclass
class Target:
    """One of issue 6's targets, with the measured figure (None when not measured)."""

    label: str
    limit: float
    value: float | None
    unit: str = "×"
    met: bool | None = field(init=False)

    def __post_init__(self) -> None:
        self.met = None if self.value is None else self.value <= self.limit

    def line(self) -> str:
        if self.value is None:
            return f"  {self.label} ≤ {self.limit:g}{self.unit}: not measured"
        verdict = "met" if self.met else "MISSED"
        return f"  {self.label} ≤ {self.limit:g}{self.unit}: {self.value:.2f}{self.unit}  {verdict}"


def check_targets(rows: list[Row]) -> list[Target]:
    """Issue 6's targets, evaluated on the rows of this run."""
    by = {r.key: r for r in rows}

    def median(key: tuple[str, str, str]) -> float | None:
        row = by.get(key)
        return row.median_ms if row is not None else None

    targets: list[Target] = []
    lip = median(("seed_conv", "deel-torchlip", "train step"))
    for family, variant in (("spectral", "spectral [C]"), ("aol", "aol")):
        row = by.get(("seed_conv", variant, "train step"))
        mine = row.median_ms if row else None
        targets.append(
            Target(
                f"seed_conv {family} train step / plain",
                1.15,
                row.ratio_to_plain if row else None,
            )
        )
        targets.append(
            Target(
                f"seed_conv {family} train step / deel-torchlip",
                0.65,
                mine / lip if mine is not None and lip else None,
            )
        )
    for family in ("spectral", "aol"):
        row = by.get(("certificates", family, "forward + certificates"))
        targets.append(
            Target(
                f"{family} eval with certificates / forward alone",
                1.1,
                row.ratio_to_forward if row else None,
            )
        )
    overhead = median(("sweep", "job", "overhead"))
    targets.append(
        Target("sweep-job overhead", 2.0, overhead / 1000 if overhead is not None else None, " s")
    )
    return targets


def write_json(
    path: Path,
    rows: list[Row],
    machine: dict[str, Any],
    settings: dict[str, Any],
    targets: list[Target],
    checks: dict[str, str],
) -> None:
    """Every row, the machine, the settings and the targets, as one JSON document."""
    doc = {
        "tool": "tradeoff-bench",
        "argv": sys.argv[1:],
        "machine": machine,
        "settings": settings,
        "checks": checks,
        "rows": [asdict(r) for r in rows],
        "targets": [asdict(t) for t in targets],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
