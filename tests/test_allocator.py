"""The allocator setting keeps freed tensor memory mapped, and yields to the user's own choice.

Each case runs in a fresh interpreter: malloc settings are per process and cannot be undone.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

# Five 20 MB tensors, then freed: resident memory (MB) before, while held, and after.
_HOLD_AND_FREE = """
import os, torch
from tradeoff.allocator import tune_allocator
print(tune_allocator())
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * page >> 20
base = rss()
tensors = [torch.ones(5 << 20) for _ in range(5)]
held = rss()
del tensors
print(base, held, rss())
"""


def _run(code: str, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUN"))}
    clean.pop("TRADEOFF_TUNE_ALLOCATOR", None)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.splitlines()


@glibc
def test_tuned_heap_keeps_freed_tensor_memory_mapped():
    state, rss = _run(_HOLD_AND_FREE)
    assert state == "glibc tuned"
    base, held, after = (int(v) for v in rss.split())
    assert held - base >= 90  # the 100 MB are resident while held
    assert after >= held - 5  # and stay mapped for the next step to reuse


@glibc
def test_default_heap_returns_freed_tensor_memory():
    state, rss = _run(_HOLD_AND_FREE, TRADEOFF_TUNE_ALLOCATOR="0")
    assert state == "default: TRADEOFF_TUNE_ALLOCATOR=0"
    base, held, after = (int(v) for v in rss.split())
    assert held - base >= 90 and after <= base + 10  # unmapped again: the next step faults


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1"),
        ("LD_PRELOAD", "libjemalloc.so.2"),  # a missing library: ld.so warns and runs on
    ],
)
def test_user_allocator_settings_are_left_alone(name, value):
    code = "from tradeoff.allocator import tune_allocator; print(tune_allocator())"
    assert _run(code, **{name: value}) == [f"default: user settings ({name})"]


def test_state_is_decided_once_per_process():
    code = (
        "import os\nfrom tradeoff.allocator import tune_allocator\n"
        "a = tune_allocator()\nos.environ['TRADEOFF_TUNE_ALLOCATOR'] = '0'\n"
        "print(a == tune_allocator())"
    )
    assert _run(code) == ["True"]
