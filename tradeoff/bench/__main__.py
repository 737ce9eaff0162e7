"""`python -m tradeoff.bench`: the same as the `tradeoff-bench` console script."""

from . import main

main()
