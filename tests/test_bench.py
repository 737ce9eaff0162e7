"""`tradeoff-bench`: the CLI runs on a tiny configuration and writes every row as JSON.

No timing assertions: speed is a printed figure of the benchmark, not a timed test.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from tradeoff.bench.layer_families import bench_families
from tradeoff.bench.memory import saved_for_backward_bytes
from tradeoff.bench.models import (
    LIPCONVNET_VARIANTS,
    PLAIN_MODULES,
    SEED_CONV_VARIANTS,
    TORCHLIP,
    build,
    check_equivalent,
    torchlip_status,
)
from tradeoff.bench.sections import Settings
from tradeoff.bench.timing import Case, interleaved
from tradeoff.nn import families, native

MODEL_WHATS = ("train step", "eval forward")
SWEEP_PIECES = (
    "compose config",
    "check store",
    "build (instantiate, loss, optimiser)",
    "load data",
    "build model",
    "tracker client",
    "resume lookup",
    "tracker start (run, params, config)",
    "log metrics",
    "log certificates",
    "vanilla export",
    "log models",
    "end run",
    "rest of run()",
)


def _expected_rows() -> set[tuple[str, str, str]]:
    rows = {("seed_conv", v, w) for v in SEED_CONV_VARIANTS for w in MODEL_WHATS}
    rows |= {("lipconvnet", v, w) for v in LIPCONVNET_VARIANTS for w in MODEL_WHATS}
    rows |= {("families", v, w) for v in families.names() for w in MODEL_WHATS}
    rows |= {("certificates", v, "forward") for v in ("plain", "spectral", "aol")}
    rows |= {("certificates", v, "forward + certificates") for v in ("spectral", "aol")}
    rows |= {("sweep", "job", w) for w in ("overhead", "overhead, first job", "fit (training)")}
    rows |= {("sweep", "piece", p) for p in SWEEP_PIECES}
    return rows


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "out.json"
    proc = _bench(tmp, "--quick", "--threads", "1", "--json", str(out))
    return json.loads(out.read_text()), proc


def _bench(cwd, *args: str) -> subprocess.CompletedProcess:
    """`python -m tradeoff.bench ARGS` in `cwd` (its own MLflow store), which must succeed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tradeoff.bench", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_quick_run_writes_every_row(quick_run):
    doc, proc = quick_run
    rows = {(r["section"], r["name"], r["what"]): r for r in doc["rows"]}
    assert set(rows) == _expected_rows()
    assert len(rows) == len(doc["rows"])  # no duplicates
    installed, _ = torchlip_status()
    built = native.available("c")
    for key, r in rows.items():
        assert {"name", "what", "median_ms", "min_ms", "max_ms", "ratio_to_plain", "n"} <= set(r)
        if (key[1] == TORCHLIP and not installed) or (key[1].endswith("[C]") and not built):
            assert r["median_ms"] is None and "not" in r["note"]
            continue
        assert r["n"] >= 1
        assert 0 <= r["min_ms"] <= r["median_ms"] <= r["max_ms"] < math.inf
        if key[0] in ("seed_conv", "lipconvnet", "families", "certificates"):
            assert r["ratio_to_plain"] > 0
        if key[1] == "plain":
            assert r["ratio_to_plain"] == pytest.approx(1.0)
    for family in ("spectral", "aol"):
        assert rows[("certificates", family, "forward + certificates")]["ratio_to_forward"] > 0
    # The command's own output: the table, the machine, the equivalence checks, the targets.
    assert "median ms" in proc.stdout and "machine:" in proc.stdout
    assert "seed_conv equivalence:" in proc.stdout and "targets (issue 6):" in proc.stdout
    # Each accelerator beside its torch-only path, in the same run.
    for variant in ("spectral [torch]", "spectral [C]", "plain+gs2 [torch]", "plain+gs2 [C]"):
        assert f"seed_conv     {variant}" in proc.stdout


@pytest.mark.slow
def test_quick_run_describes_machine_settings_and_targets(quick_run):
    doc, _ = quick_run
    machine = doc["machine"]
    keys = ("cpu", "cores", "torch_threads", "torch", "deel_torchlip", "groupsort2", "spectral")
    keys += ("device",)
    for key in (*keys, "allocator"):
        assert machine[key] not in (None, "")
    assert machine["torch_threads"] == 1 and machine["torch"] == torch.__version__
    assert doc["settings"]["quick"] is True and doc["settings"]["device"] == "cpu"
    assert set(doc["checks"]) == {"seed_conv", "lipconvnet"}
    labels = [t["label"] for t in doc["targets"]]
    assert "sweep-job overhead" in labels and len(labels) == 7
    for t in doc["targets"]:
        assert t["met"] in (True, False) or (t["met"] is None and t["value"] is None)


@pytest.mark.slow
def test_quick_run_with_bf16_autocast(tmp_path):
    """`--bf16` on the CPU: every model section runs its forward passes under bf16 autocast
    (the constrained weights stay float32; tests/nn/test_autocast.py) and says so."""
    out = tmp_path / "bf16.json"
    sections = "seed_conv,lipconvnet,certificates"
    args = ("--quick", "--bf16", "--threads", "1", "--only", sections, "--json", str(out))
    proc = _bench(tmp_path, *args)
    assert "bf16 autocast" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["settings"]["bf16"] is True
    sections = {r["section"] for r in doc["rows"]}
    assert sections == {"seed_conv", "lipconvnet", "certificates"}
    installed, _ = torchlip_status()
    for r in doc["rows"]:
        if r["name"] == TORCHLIP and not installed:  # the `bench` extra is absent: untimed
            assert r["median_ms"] is None and "not" in r["note"]
        else:
            assert math.isfinite(r["median_ms"]) and r["median_ms"] > 0


def _families_rows(doc: dict) -> dict[tuple[str, str], dict]:
    return {(r["name"], r["what"]): r for r in doc["rows"] if r["section"] == "families"}


@pytest.mark.slow
def test_every_registered_family_is_timed_against_the_plain_convnet(quick_run):
    """The families section: each family of `families.names()` on the tiny convnet, with its
    time, ratio to the plain twin, parameters and memory (none skipped at this shape)."""
    doc, proc = quick_run
    rows = _families_rows(doc)
    assert doc["settings"]["convnet"] == {"size": "xs", "width": 4, "depth": 1, "blocks": None}
    assert "families: convnet size xs, width 4, depth 1" in proc.stdout
    for family in families.names():
        train, forward = rows[(family, "train step")], rows[(family, "eval forward")]
        for row in (train, forward):
            assert 0 < row["median_ms"] < math.inf and row["ratio_to_plain"] > 0
            assert row["params"] > 0 and row["saved_mib"] > 0 and row["peak_mib"] is None
        assert f"{train['params']:,} params; saved for backward" in train["note"]
        assert re.search(rf"^families +{family} +train step +[\d.,]+ ", proc.stdout, re.M)
    assert rows[("plain", "train step")]["ratio_to_plain"] == pytest.approx(1.0)
    # The constraints keep the plain convnet's parameters, save for the families that add
    # their own (sll's and sandwich's per-channel scales, soc's dense exponential head).
    plain = rows[("plain", "train step")]["params"]
    assert rows[("aol", "train step")]["params"] == plain
    assert rows[("spectral", "train step")]["params"] == plain


@pytest.fixture
def odd_kernels_only():
    """A registered family whose convolutions take odd kernels only (as soc's and lot's
    geometry checks refuse even ones), removed again after the test."""

    def conv(c_in, c_out, kernel_size, stride, input_size):
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size} is even; this family takes odd kernels")
        return families.conv("aol", c_in, c_out, kernel_size, stride, input_size)

    name = "odd_kernels_only"
    families.register(
        families.LayerFamily(
            name=name, conv=conv, linear=lambda i, o, bias: families.linear("aol", i, o, bias)
        )
    )
    yield name
    families._FAMILIES.pop(name)


def test_a_family_that_cannot_build_is_listed_as_skipped(odd_kernels_only):
    """convnet's 2×2 downsamplings are refused by the family: its rows say why, untimed, and
    every other family is timed beside it."""
    s = Settings(
        device=torch.device("cpu"),
        warmup=0,
        repeats={"families": 1},
        batch=2,
        convnet={"size": "xs", "width": 2, "depth": 1, "blocks": 1},
    )
    rows = {(r.name, r.what): r for r in bench_families(s)}
    assert {name for name, _ in rows} == set(families.names())
    for what in MODEL_WHATS:
        skipped = rows[(odd_kernels_only, what)]
        assert skipped.median_ms is None and skipped.ratio_to_plain is None
        assert skipped.note == (
            "skipped: ValueError: kernel_size=2 is even; this family takes odd kernels"
        )
    timed = [r for (name, _), r in rows.items() if name != odd_kernels_only]
    assert all(r.median_ms > 0 and r.ratio_to_plain > 0 for r in timed)


def test_saved_for_backward_counts_each_storage_once():
    w = torch.ones(4, 4, dtype=torch.float64, requires_grad=True)
    x = torch.ones(3, 4, dtype=torch.float64)

    def step() -> None:
        (x @ w @ w).sum().backward()  # w saved twice, x and x @ w once each

    assert saved_for_backward_bytes(step) == (16 + 12 + 12) * 8


def test_plain_seed_conv_is_the_unconstrained_twin():
    x = torch.rand(2, 1, 28, 28)
    plain = build("seed_conv", "plain", (1, 28, 28))
    assert all(isinstance(m, PLAIN_MODULES) for m in plain.children())
    others = {v: build("seed_conv", v, (1, 28, 28)) for v in ("spectral", "aol")}
    if torchlip_status()[0]:
        others[TORCHLIP] = build("seed_conv", TORCHLIP, (1, 28, 28))
    assert "same 10 layer output shapes" in check_equivalent(plain, others, x)


def test_equivalence_check_refuses_a_different_network():
    x = torch.rand(2, 1, 28, 28)
    plain = build("seed_conv", "plain", (1, 28, 28))
    wider = build("seed_conv", "spectral", (1, 28, 28), filters=(8, 32))
    with pytest.raises(AssertionError, match="layer for layer"):
        check_equivalent(plain, {"spectral": wider}, x)
    with pytest.raises(AssertionError, match="non-standard"):
        check_equivalent(wider, {}, x)


def test_interleaved_rounds_rotate_and_skip_warmup():
    calls: list[str] = []
    cases = [Case(n, lambda n=n: calls.append(n)) for n in "abc"]
    samples = interleaved(cases, repeats=2, warmup=1, device=torch.device("cpu"))
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {k: len(v) for k, v in samples.items()} == {"a": 2, "b": 2, "c": 2}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only machine")
def test_cuda_without_gpu_names_the_fix(capsys):
    from tradeoff.bench import main

    with pytest.raises(SystemExit) as exc:
        main(["--device", "cuda"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "--device cpu" in err


def test_unknown_section_is_refused(capsys):
    from tradeoff.bench import main

    with pytest.raises(SystemExit):
        main(["--only", "seed_conv,nope"])
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--convnet-width", "0"], "--convnet-width must be >= 1"),
        (["--convnet-blocks", "-1"], "--convnet-blocks must be >= 0"),
        (["--size", "xl"], "invalid choice: 'xl'"),
    ],
)
def test_bad_convnet_options_are_refused(capsys, args, message):
    from tradeoff.bench import main

    with pytest.raises(SystemExit) as exc:
        main(["--only", "families", *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_help_lists_the_options(capsys):
    from tradeoff.bench import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for option in (
        "--size",
        "--convnet-width",
        "--device",
        "--bf16",
        "--threads",
        "--repeats",
        "--warmup",
        "--quick",
        "--only",
        "--json",
    ):
        assert option in out
