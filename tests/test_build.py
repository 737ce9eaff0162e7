"""setup.py builds the C kernels (fused GroupSort2 with OpenMP or without it, the spectral layers'
scalar loops), or not at all — and the install never fails because of it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from tradeoff.nn import native

ROOT = Path(__file__).resolve().parents[1]
CC = shutil.which("cc") or shutil.which("gcc")
HEADERS = (Path(sysconfig.get_paths()["include"]) / "Python.h").exists()
needs_compiler = pytest.mark.skipif(not (CC and HEADERS), reason="no C compiler or Python.h")


def _build(tmp_path: Path, compiler: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CC": compiler, "LDSHARED": f"{compiler} -shared"}
    return subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "build_ext",
            "--build-lib",
            str(tmp_path / "lib"),
            "--build-temp",
            str(tmp_path / "tmp"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _load(tmp_path: Path, name: str = "_pairsort"):
    (path,) = (tmp_path / "lib" / "tradeoff" / "nn").glob(f"{name}*")
    spec = importlib.util.spec_from_file_location(name, path)  # PyInit_<name>
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wrapper(tmp_path: Path, body: str) -> str:
    script = tmp_path / "cc"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def _sorts(module) -> bool:
    x = torch.randn(8, 6, 5, 5)
    out = torch.empty_like(x)
    mask = torch.empty(8, 3, 5, 5, dtype=torch.uint8)
    module.sort_pairs(x.data_ptr(), out.data_ptr(), mask.data_ptr(), 24, 25, 1, False)
    ref = x.unflatten(1, (3, 2)).sort(dim=2).values.flatten(1, 2)
    return torch.equal(out, ref) and torch.equal(mask.bool(), x[:, 0::2] > x[:, 1::2])


def _multiplies(module) -> bool:
    from tradeoff.nn.bjorck import _bjorck_multipliers

    lam = torch.linspace(0, 1, 7, dtype=torch.float64) ** 2
    a, diff = torch.empty(7, dtype=torch.float64), torch.empty(7, 7, dtype=torch.float64)
    module.bjorck_multipliers(lam.data_ptr(), 7, 1e-3, 0.5, 15, a.data_ptr(), diff.data_ptr())
    ref_a, ref_diff = _bjorck_multipliers(lam.numpy(), 1e-3, 0.5, 15)
    return torch.allclose(a, torch.from_numpy(ref_a), rtol=1e-13, atol=0) and torch.allclose(
        diff, torch.from_numpy(ref_diff), rtol=1e-12, atol=1e-14
    )


@needs_compiler
def test_builds_with_openmp(tmp_path):
    done = _build(tmp_path, CC)
    assert done.returncode == 0, done.stderr
    module = _load(tmp_path)
    assert module.OPENMP == 1 and _sorts(module)
    spectral = _load(tmp_path, "_spectral")
    assert _multiplies(spectral)
    assert spectral.INTERFACE == native.SPECTRAL_INTERFACE  # the loader accepts this build


@needs_compiler
def test_builds_without_openmp_when_the_compiler_lacks_it(tmp_path):
    compiler = _wrapper(
        tmp_path, f'for a in "$@"; do [ "$a" = -fopenmp ] && exit 1; done\nexec {CC} "$@"'
    )
    done = _build(tmp_path, compiler)
    assert done.returncode == 0, done.stderr
    module = _load(tmp_path)
    assert module.OPENMP == 0 and _sorts(module)
    assert _multiplies(_load(tmp_path, "_spectral"))  # never needed OpenMP


def test_a_failing_compiler_does_not_fail_the_build(tmp_path):
    done = _build(tmp_path, _wrapper(tmp_path, "exit 1"))
    assert done.returncode == 0, done.stderr
    for name, fallback in (("_pairsort", "torch ops"), ("_spectral", "NumPy")):
        assert f"C kernel tradeoff.nn.{name} was not built" in done.stderr
        assert fallback in done.stderr
        assert not list((tmp_path / "lib").rglob(f"{name}*"))


def test_a_build_of_another_interface_is_refused(monkeypatch):
    """A stale `_spectral` binary (an editable install not rebuilt after the source changed)
    would be handed the wrong arguments: it is refused with a warning naming the fix."""
    import types

    stale = types.ModuleType("tradeoff.nn._spectral")  # a build from before INTERFACE existed
    monkeypatch.setitem(sys.modules, "tradeoff.nn._spectral", stale)
    native.spectral.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="pip install -e"):
            assert native.spectral() is None
        stale.INTERFACE = native.SPECTRAL_INTERFACE
        native.spectral.cache_clear()
        assert native.spectral() is stale
    finally:
        native.spectral.cache_clear()


def test_the_sdist_ships_every_header_the_kernels_include(tmp_path):
    """A build from the source archive needs the headers the C files include (MANIFEST.in)."""
    import re
    import tarfile

    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (archive,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        shipped = {Path(name).name for name in tar.getnames()}
    sources = list((ROOT / "tradeoff" / "nn").glob("*.c"))
    included = {h for c in sources for h in re.findall(r'#include "([^"]+)"', c.read_text())}
    assert included and {c.name for c in sources} | included <= shipped
