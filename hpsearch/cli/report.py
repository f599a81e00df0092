"""``hpsearch report``: write a study's figures and a self-contained HTML page.

``hpsearch report NAME [--storage URL] [-o DIR] [--top N]`` reads the study
through :mod:`hpsearch.results` (never starting Ray), writes PNG figures and
``index.html`` into DIR (default ``reports/NAME/``) and prints the page's
path on stdout; what the report had to leave out goes to stderr. A missing
database or study is one line on stderr with exit code 2 (see
:func:`hpsearch.cli.main`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

DEFAULT_STORAGE = "sqlite:///hpsearch.db"
DEFAULT_TOP = 20


def register(subparsers: Any) -> None:
    """Add ``report`` to an argparse subparsers object (handler in ``func``)."""
    p = subparsers.add_parser(
        "report",
        help="write a study's figures and an HTML page (index.html)",
        description="Write PNG figures (learning curves of the top trials, lr against weight "
        "decay with each round's box, the metric per round, batch norm and dropout, parameter "
        "importances) and one self-contained index.html with the rounds table, the best trial "
        "and the final evaluation.",
    )
    p.add_argument("name", metavar="NAME", help="study name")
    p.add_argument(
        "--storage",
        metavar="URL",
        default=DEFAULT_STORAGE,
        help=f"results database URL (default: {DEFAULT_STORAGE})",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        default=None,
        help="directory to write into (default: reports/NAME/)",
    )
    p.add_argument(
        "--top",
        metavar="N",
        type=_positive_int,
        default=DEFAULT_TOP,
        help=f"trials in the learning-curve figure (default: {DEFAULT_TOP})",
    )
    p.set_defaults(func=report_command)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {value}; expected a whole number >= 1")
    return value


def report_command(args: argparse.Namespace) -> int:
    from hpsearch.report import write_report

    index = write_report(args.storage, args.name, args.output, top=args.top)
    print(f"hpsearch: wrote the report of {args.name!r} to {index.parent}", file=sys.stderr)
    print(index)
    return 0
