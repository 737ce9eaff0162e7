"""`tradeoff-bench`: how far tradeoff's 1-Lipschitz layers are from the speed limit.

Times, in one process with warm-up, interleaved repetitions and medians, the training step and
eval forward of `seed_conv` and `lipconvnet` in each layer family against the same
unconstrained network (and deel-torchlip when installed), every registered family on the zoo's
`convnet` with its parameters and memory, certificates against the plain
forward pass, and the overhead of one sweep job beyond its training. See docs/bench.md.

    python -m tradeoff.bench --json bench.json
"""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
