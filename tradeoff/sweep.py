"""`tradeoff-sweep NAME [overrides]`: run the named sweep NAME as a Hydra multirun.

A sweep is a file of the config group `sweeps` (`tradeoff/conf/sweeps/NAME.yaml`, or
`./sweeps/NAME.yaml` in the working folder for sweeps of your own): an experiment-style config
(`# @package _global_`) that overrides just what it changes and lists its grid under
`hydra.sweeper.params` (or selects a sweeper plugin). `tradeoff-sweep --list` shows the names
with their descriptions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from .paths import sweep_files, user_sweeps_dir

__all__ = ["available", "describe", "main"]


def available() -> dict[str, str]:
    """Sweep name → one-line description, from the package's sweeps and `./sweeps/`."""
    return {name: describe(path) for name, path in sweep_files().items()}


def describe(path: Path) -> str:
    data = yaml.safe_load(path.read_text()) or {}
    return str((data.get("sweep") or {}).get("description") or "").strip()


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`tradeoff-sweep`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="tradeoff-sweep",
        description="Run a named sweep (tradeoff's own, or ./sweeps/NAME.yaml) as a Hydra "
        "multirun logged to MLflow.",
        epilog="Any further arguments are Hydra overrides, e.g. data=fashion_mnist train.epochs=5",
    )
    parser.add_argument("name", nargs="?", help="sweep name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the sweeps and exit")
    args, overrides = parser.parse_known_args(argv)
    sweeps = available()
    if args.list:
        width = max((len(n) for n in sweeps), default=0)
        for name, text in sweeps.items():
            print(f"{name:<{width}}  {text}")
        return
    if not args.name:
        parser.error("give a sweep name; available: " + ", ".join(sweeps))
    if args.name not in sweeps:
        parser.error(f"unknown sweep {args.name!r}; available: {', '.join(sweeps)}")
    from .train import main as train_main

    user_dir = [f"--config-dir={user_sweeps_dir().parent}"] if user_sweeps_dir().is_dir() else []
    sys.argv = ["tradeoff-sweep", "--multirun", *user_dir, f"+sweeps={args.name}", *overrides]
    train_main()


if __name__ == "__main__":
    main()
