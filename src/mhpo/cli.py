"""The `mhpo` command line."""

from __future__ import annotations

import argparse
import pathlib
import sys

from .objectives import list_objectives


def _objective_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in list_objectives()]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown objective(s) {', '.join(unknown)}; choose from {', '.join(list_objectives())}"
        )
    return names


def _cmd_plot_weights(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .weights_plot import plot_weights, weight_table

    if not 0 < args.r_min < 1 < args.r_max:
        raise SystemExit("mhpo plot-weights: need 0 < --r-min < 1 < --r-max so that the plot spans r = 1.")
    names = args.objectives or list_objectives()
    console = Console(width=max(Console().width, 100))
    console.print(weight_table(names))
    path = plot_weights(pathlib.Path(args.out), names, r_min=args.r_min, r_max=args.r_max)
    console.print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mhpo",
        description="Stable policy optimisation for GRPO-style RL: objectives, plots and studies.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    plot = sub.add_parser(
        "plot-weights",
        help="plot and tabulate every objective's gradient weight w against the ratio r",
        description="Write a PNG of w(r) for A > 0 and A < 0 at default hyperparameters, and print a table.",
    )
    plot.add_argument("--out", default="results/weights.png", help="PNG path to write (default: %(default)s)")
    plot.add_argument(
        "--objectives", type=_objective_list, default=None, help="comma-separated names (default: all registered)"
    )
    plot.add_argument("--r-min", type=float, default=0.05, help="smallest ratio on the x-axis (default: %(default)s)")
    plot.add_argument("--r-max", type=float, default=20.0, help="largest ratio on the x-axis (default: %(default)s)")
    plot.set_defaults(func=_cmd_plot_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
