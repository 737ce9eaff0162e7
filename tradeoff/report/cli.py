"""`tradeoff-report EXPERIMENT [EXPERIMENT ...]`: the Pareto report of MLflow experiments as a PDF.

tradeoff-report tau_grid                       # reports/tau_grid.pdf (+ _front.png, _front.csv)
tradeoff-report tau_grid hkr_grid --out reports/losses.pdf
tradeoff-report quick --parent 3f2a... --x test/cra_eps_0.5
tradeoff-report optuna_pareto --z train/seconds  # the hypervolume of three objectives
tradeoff-report fashion_front seed_table --where data.name=fashion_mnist
tradeoff-report layers_compared                # grouped by layer family (its sweep.group_by)
tradeoff-report tau_grid --by optim.lr         # groups, colours and fronts per learning rate

The three files also become artifacts (`report/`) of the sweep parent runs of the runs drawn.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import logging.handlers
import sys
from collections.abc import Iterator

from .. import signals
from ..stores import store_failure
from .frame import DEFAULT_X, DEFAULT_Y, ReportError, _resolve_uri
from .pdf import build_report, outputs

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradeoff-report",
        description="Write a PDF report of the accuracy-robustness Pareto front of the FINISHED "
        "job runs of MLflow experiments (one per sweep), with a PNG of the front and a CSV of "
        "the front table beside it.",
    )
    parser.add_argument(
        "experiments",
        nargs="+",
        metavar="EXPERIMENT",
        help="MLflow experiment name(s), e.g. a sweep name such as tau_grid",
    )
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlflow.db in the current folder)",
    )
    parser.add_argument(
        "--out", metavar="PATH", help="PDF to write (default: reports/<experiment>.pdf)"
    )
    parser.add_argument(
        "--parent", metavar="RUN_ID", help="only the job runs of this sweep parent run"
    )
    parser.add_argument(
        "--x",
        default=DEFAULT_X,
        metavar="METRIC",
        help=f"x objective (default: {DEFAULT_X}): a robustness metric, maximised, or a "
        "cost (train/seconds, train/peak_memory_mb, model/params), minimised",
    )
    parser.add_argument(
        "--y",
        default=DEFAULT_Y,
        metavar="METRIC",
        help=f"y objective (default: {DEFAULT_Y}), maximised; a cost or a loss is minimised",
    )
    parser.add_argument(
        "--z",
        action="append",
        default=[],
        metavar="METRIC",
        help="a further objective (repeat for more), e.g. train/seconds: the summary page gives "
        "the hypervolume of all the objectives (x, y, z...), the pages draw y against x",
    )
    parser.add_argument(
        "--reference",
        nargs="+",
        type=float,
        default=None,
        metavar="V",
        help="hypervolume reference point, one value per objective: X Y, then one per --z "
        "(default: the worst corner: 0 on a maximised axis, 1.1 x the largest value on a "
        "minimised one)",
    )
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        type=_param_equals,
        metavar="PARAM=VALUE",
        help="only the runs whose config has this value (repeat for more), e.g. "
        "data.name=fashion_mnist when an experiment holds runs on several datasets",
    )
    parser.add_argument(
        "--by",
        metavar="PARAM",
        help="group the runs by this config param instead of the loss family, e.g. "
        "model.layer: its values colour the points, get a front each and title the legends "
        "(default: the param the experiments' sweeps name in sweep.group_by, else the loss "
        "family)",
    )
    parser.add_argument(
        "--include-degenerate",
        action="store_true",
        help="draw the runs tagged degenerate too (at or below chance accuracy, or "
        "certificates beyond the inputs' diameter: robust by doing nothing); by default they "
        "are left off the front and listed on the summary page",
    )
    parser.add_argument(
        "--no-attach",
        action="store_true",
        help="do not log the PDF, PNG and CSV as artifacts (report/) of the sweep parent runs",
    )
    return parser


def _param_equals(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not PARAM=VALUE, e.g. data.name=mnist5k")
    return key.strip(), value.strip()


@contextlib.contextmanager
def _held_messages() -> Iterator[logging.handlers.MemoryHandler]:
    """The report's own messages (what was attached where), held until the paths are printed:
    call `flush()` on the handler to print them."""
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(logging.Formatter("      %(message)s"))
    held = logging.handlers.MemoryHandler(1000, logging.CRITICAL + 1, out)
    logger = logging.getLogger("tradeoff.report")
    saved = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(held)
    try:
        yield held
    finally:
        logger.removeHandler(held)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`tradeoff-report`): exit 0 on success, 1 with a message if the
    runs cannot make a report, 2 for a bad command line."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.reference is not None and len(args.reference) != 2 + len(args.z):
        parser.error(
            f"--reference takes one value per objective, {2 + len(args.z)} here (x, y"
            + "".join(f", {z}" for z in args.z)
            + f"), got {len(args.reference)}"
        )
    if argv is None:  # the console command: a stopped report removes its temporary files
        signals.install()
    with _held_messages() as held:
        try:
            pdf = build_report(
                args.experiments,
                args.out,
                tracking_uri=args.tracking_uri,
                parent=args.parent,
                x=args.x,
                y=args.y,
                reference=tuple(args.reference) if args.reference else None,
                z=args.z,
                attach=not args.no_attach,
                include_degenerate=args.include_degenerate,
                where=dict(args.where),
                by=args.by,
            )
        except ReportError as exc:
            print(f"tradeoff-report: error: {exc}", file=sys.stderr)
            sys.exit(1)
        except signals.Interrupted as exc:
            print(f"tradeoff-report: stopped by {exc.name}; no report written", file=sys.stderr)
            sys.exit(exc.exit_code)
        except Exception as exc:
            line = store_failure(exc, args.tracking_uri or _resolve_uri(None))
            if line is None:
                raise
            print(f"tradeoff-report: error: {line}", file=sys.stderr)
            sys.exit(1)
        _, png, csv = outputs(pdf)
        print(f"wrote {pdf}\n      {png}\n      {csv}", flush=True)
        held.flush()


if __name__ == "__main__":
    main()
