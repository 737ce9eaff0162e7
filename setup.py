"""Builds tradeoff's optional C kernels; all other metadata is in pyproject.toml.

- `tradeoff.nn._pairsort`: fused GroupSort2 (`tradeoff.nn.activations.FUSED_GROUPSORT`);
- `tradeoff.nn._spectral`: the spectral layers' small dense loops (scalar recursions, whole
  map of small weights, the convolution cap's block bounds;
  `tradeoff.nn.bjorck.spectral_implementation()`).

They are accelerators, not requirements: without a C compiler, Python headers or OpenMP the
install goes on, and the layers run on torch and NumPy with the same results.
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP = {"msvc": (["/O2", "/openmp"], [])}
OPENMP_DEFAULT = (["-O3", "-fopenmp"], ["-fopenmp"])
NO_OPENMP = {"msvc": (["/O2"], [])}
NO_OPENMP_DEFAULT = (["-O3"], [])
OPENMP_EXTENSIONS = {"tradeoff.nn._pairsort"}
HEADERS = ["tradeoff/nn/_kernels.h"]  # shipped in the sdist through MANIFEST.in


FALLBACKS = {
    "tradeoff.nn._pairsort": "GroupSort2 will run on torch ops (same results, slower)",
    "tradeoff.nn._spectral": "spectral layers will run on torch ops and NumPy (slower)",
}


class OptionalBuildExt(build_ext):
    """Compile with OpenMP (the loops share torch's threads), else without, else skip."""

    def build_extension(self, ext: Extension) -> None:
        kind = self.compiler.compiler_type
        attempts = [NO_OPENMP.get(kind, NO_OPENMP_DEFAULT)]
        if ext.name in OPENMP_EXTENSIONS:
            attempts.insert(0, OPENMP.get(kind, OPENMP_DEFAULT))
        for flags in attempts:
            ext.extra_compile_args, ext.extra_link_args = flags
            try:
                super().build_extension(ext)
                return
            except Exception as exc:  # compiler missing or failing: try the next flags
                error = exc
        print(
            f"warning: tradeoff's C kernel {ext.name} was not built ({error}); "
            f"{FALLBACKS[ext.name]}",
            file=sys.stderr,
        )


setup(
    ext_modules=[
        Extension("tradeoff.nn._pairsort", ["tradeoff/nn/_pairsort.c"], depends=HEADERS),
        Extension("tradeoff.nn._spectral", ["tradeoff/nn/_spectral.c"], depends=HEADERS),
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
