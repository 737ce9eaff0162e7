"""Builds tradeoff's optional C kernel (fused GroupSort2); all other metadata is in pyproject.toml.

The kernel is an accelerator, not a requirement: without a C compiler, Python headers or
OpenMP the install goes on, and GroupSort2 runs on torch ops with identical results
(`tradeoff.nn.activations.FUSED_GROUPSORT` says which one is in use).
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP = {"msvc": (["/O2", "/openmp"], [])}
OPENMP_DEFAULT = (["-O3", "-fopenmp"], ["-fopenmp"])
NO_OPENMP = {"msvc": (["/O2"], [])}
NO_OPENMP_DEFAULT = (["-O3"], [])


class OptionalBuildExt(build_ext):
    """Compile with OpenMP (the loops share torch's threads), else without, else skip."""

    def build_extension(self, ext: Extension) -> None:
        kind = self.compiler.compiler_type
        for flags in (OPENMP.get(kind, OPENMP_DEFAULT), NO_OPENMP.get(kind, NO_OPENMP_DEFAULT)):
            ext.extra_compile_args, ext.extra_link_args = flags
            try:
                super().build_extension(ext)
                return
            except Exception as exc:  # compiler missing or failing: try the next flags
                error = exc
        print(
            f"warning: tradeoff's fused GroupSort2 kernel was not built ({error}); "
            "GroupSort2 will run on torch ops (same results, slower)",
            file=sys.stderr,
        )


setup(
    ext_modules=[Extension("tradeoff.nn._pairsort", ["tradeoff/nn/_pairsort.c"])],
    cmdclass={"build_ext": OptionalBuildExt},
)
