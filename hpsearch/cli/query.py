"""``hpsearch ls | show | trials | export``: read the results database.

The commands mirror :mod:`hpsearch.results`. Tables go to stdout as plain
aligned text (rounds numbered from 1, as hpsearch run prints them); notes go to stderr.
Errors (bad URL, missing database or study, bad option) are raised as
:class:`~hpsearch.errors.HPSearchError` and shown by :func:`hpsearch.cli.main`
as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping
from typing import Any

DEFAULT_STORAGE = "sqlite:///hpsearch.db"

_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
_FORMATS = ("csv", "parquet", "json")
_TABLES = ("trials", "curves", "rounds")
_METRIC_COLUMNS = {"value", "best", "median", "best_value", "accuracy"}
_SECONDS_COLUMNS = {"duration", "train_seconds", "wall_seconds", "wall_s"}
_TRIAL_DEFAULT_HIDDEN = {"datetime_complete", "backend", "stopped"}


def register(subparsers: Any) -> None:
    """Add ``ls``, ``show``, ``trials`` and ``export`` to an argparse subparsers object.

    Each command's handler is set as ``func`` and returns the exit code.
    """
    ls = subparsers.add_parser(
        "ls",
        help="list the studies in the results database",
        description="List the studies: trials by state, rounds, best value, start and end.",
    )
    _storage_option(ls)
    ls.set_defaults(func=ls_command)

    show = subparsers.add_parser(
        "show",
        help="a study's rounds, best trial and final evaluation",
        description="Show each round's box, trials, best and median metric and wall time; "
        "the best trial's parameters; the final evaluation if one ran.",
    )
    show.add_argument("name", metavar="NAME", help="study name")
    _storage_option(show)
    show.set_defaults(func=show_command)

    tr = subparsers.add_parser(
        "trials",
        help="a study's trials as a table",
        description="List the trials of a study.",
    )
    tr.add_argument("name", metavar="NAME", help="study name")
    _storage_option(tr)
    tr.add_argument(
        "--state",
        type=str.upper,
        choices=_STATES,
        action="append",
        help="only trials in this state (repeatable)",
    )
    tr.add_argument(
        "--sort",
        metavar="COLUMN",
        default="number",
        help="sort by this column; 'value' puts the best first (default: number)",
    )
    tr.add_argument("--limit", metavar="N", type=_positive_int, help="show at most N trials")
    tr.add_argument(
        "--columns",
        metavar="A,B,...",
        help="columns to show, comma-separated (default: the useful ones; 'all' for every one)",
    )
    tr.set_defaults(func=trials_command)

    ex = subparsers.add_parser(
        "export",
        help="write a study's trials (or curves, rounds) to CSV, Parquet or JSON",
        description="Write a table of a study to a file that pandas reads back with the same "
        "columns and dtypes (hpsearch.results.read_export).",
    )
    ex.add_argument("name", metavar="NAME", help="study name")
    _storage_option(ex)
    ex.add_argument(
        "--format",
        type=str.lower,
        choices=_FORMATS,
        help="file format (default: from the file suffix)",
    )
    ex.add_argument("-o", "--output", metavar="FILE", required=True, help="file to write")
    ex.add_argument(
        "--table", choices=_TABLES, default="trials", help="which table (default: trials)"
    )
    ex.set_defaults(func=export_command)


def _storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        metavar="URL",
        default=DEFAULT_STORAGE,
        help=f"results database URL (default: {DEFAULT_STORAGE})",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {value}; expected a whole number >= 1")
    return value


# --- commands ---------------------------------------------------------------------------


def ls_command(args: argparse.Namespace) -> int:
    from hpsearch import results
    from hpsearch.storage_url import mask_url

    frame = results.studies(args.storage)
    if frame.empty:
        print(f"hpsearch: no studies in {mask_url(args.storage)}", file=sys.stderr)
        return 0
    frame = frame.rename(columns={"datetime_start": "started", "datetime_end": "ended"})
    _out(format_table(frame))
    return 0


def show_command(args: argparse.Namespace) -> int:
    from hpsearch import results

    info = results.study_info(args.storage, args.name)
    rounds = results.rounds(args.storage, args.name)
    trials = results.trials(args.storage, args.name)
    metric = info.metric or "value"

    counts = trials["state"].value_counts()
    label = {"FAIL": "failed"}
    parts = [
        f"{int(counts.get(s, 0))} {label.get(s, s.lower())}" for s in _STATES if counts.get(s, 0)
    ]
    lines = [
        f"study: {info.name}  ({info.direction} {metric}; {len(trials)} trials"
        + (f": {', '.join(parts)}" if parts else "")
        + ")"
    ]
    if info.status:
        reason = info.status.get("reason")
        lines.append(
            f"status: {info.status.get('state', '?')}" + (f" ({reason})" if reason else "")
        )
    lines.append("")
    if rounds.empty:
        lines.append("rounds: none recorded")
    else:
        lines.append("rounds:")
        lines.append(format_table(rounds_summary(rounds)))
        decided = [
            (int(r["round"]), r["decision"], r["reason"])
            for _, r in rounds.iterrows()
            if not _missing(r["decision"])
        ]
        if decided:
            lines.append("")
            lines.append("round rule (what it decided after each round, and why):")
            last = int(rounds["round"].max())
            for index, decision, reason in decided:
                then = "the next box" if index < last else "a warm start's first box (--from)"
                lines.append(f"  after round {index}: {decision} -> {then}: {reason}")
    lines.append("")

    best = results.pick_best(trials, info.direction)
    if best.empty:
        lines.append("best: no trial completed")
    else:
        row = best.iloc[0]
        where = f", round {row['round']}" if not _missing(row["round"]) else ""
        lines.append(f"best: trial {row['number']}{where}  {metric}={_fmt_metric(row['value'])}")
        for pname in _param_columns(trials):
            lines.append(f"  {pname:<16} {_fmt_cell(pname, row[pname])}")
    fe = info.final_eval
    if fe:
        lines.append("")
        lines.append(format_final_eval(fe))
    _out("\n".join(lines))
    return 0


def trials_command(args: argparse.Namespace) -> int:
    from hpsearch import results
    from hpsearch.errors import HPSearchError

    frame = results.trials(args.storage, args.name)
    if args.state:
        frame = frame[frame["state"].isin(args.state)]
    if args.sort not in frame.columns:
        raise HPSearchError(
            f"--sort: got {args.sort!r}; allowed columns: {', '.join(frame.columns)}"
        )
    if args.sort == "value":
        info = results.study_info(args.storage, args.name)
        ascending = info.direction.split(",")[0] == "minimize"
        frame = frame.sort_values(
            ["value", "number"], ascending=[ascending, True], na_position="last", kind="stable"
        )
    else:
        frame = frame.sort_values([args.sort, "number"], na_position="last", kind="stable")
    if args.limit is not None:
        frame = frame.head(args.limit)
    frame = frame[_trial_columns(frame, args.columns)]
    if "node" in frame.columns and args.columns is None:
        frame = frame.assign(node=frame["node"].map(_short_node, na_action="ignore"))
    if frame.empty:
        print("hpsearch: no trials match", file=sys.stderr)
        return 0
    _out(format_table(frame))
    return 0


def export_command(args: argparse.Namespace) -> int:
    from hpsearch import results

    path = results.export(args.storage, args.name, args.output, args.format, table=args.table)
    print(f"hpsearch: wrote the {args.table} of {args.name!r} to {path}", file=sys.stderr)
    return 0


# --- formatting ----------------------------------------------------------------------------


def _out(text: str) -> None:
    sys.stdout.write(text.rstrip("\n") + "\n")


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists and other containers
        return False


def _fmt_metric(value: Any) -> str:
    return "-" if _missing(value) else f"{float(value):.4f}"


def _fmt_cell(column: str, value: Any) -> str:
    """One cell as text: metrics 4 decimals, seconds 2, other floats 4 significant digits."""
    import pandas as pd

    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt_cell("", v) for v in value) if value else "-"
    if _missing(value):
        return "-"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return str(bool(value))
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        number = float(value)
        if column in _METRIC_COLUMNS:
            return f"{number:.4f}"
        if column in _SECONDS_COLUMNS:
            return f"{number:.2f}"
        return f"{number:.4g}" if math.isfinite(number) else str(number)
    return str(value)


def _short_node(node: str) -> str:
    """Ray node ids are 56 hex digits: show the first 12, like a short git hash."""
    if len(node) > 16 and all(c in "0123456789abcdef" for c in node.lower()):
        return node[:12]
    return node


def format_table(frame: Any) -> str:
    """A DataFrame as plain aligned text (no index), missing values as ``-``."""
    import pandas as pd

    text = pd.DataFrame(
        {c: [_fmt_cell(str(c), v) for v in frame[c].tolist()] for c in frame.columns},
        columns=list(frame.columns),
    )
    return text.to_string(index=False)


def _param_columns(trials: Any) -> list[str]:
    from hpsearch.results import TRIAL_LEADING_COLUMNS, TRIAL_TRAILING_COLUMNS

    fixed = set(TRIAL_LEADING_COLUMNS) | set(TRIAL_TRAILING_COLUMNS)
    return [c for c in trials.columns if c not in fixed]


def _trial_columns(frame: Any, wanted: str | None) -> list[str]:
    from hpsearch.errors import HPSearchError

    if wanted is None:
        return [c for c in frame.columns if c not in _TRIAL_DEFAULT_HIDDEN]
    if wanted.strip() == "all":
        return list(frame.columns)
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in frame.columns]
    if unknown or not names:
        raise HPSearchError(
            f"--columns: got {wanted!r}; allowed columns: {', '.join(frame.columns)} (or 'all')"
        )
    return names


def rounds_summary(rounds: Any) -> Any:
    """The rounds table for display: round, trials, best, median, wall, top, one box column
    per parameter (``low..high`` or ``a|b``)."""
    import pandas as pd

    out = pd.DataFrame(
        {
            "round": rounds["round"],
            "trials": rounds["n_trials"],
            "best": rounds["best"],
            "median": rounds["median"],
            "wall_s": rounds["wall_seconds"],
            "top": rounds["top_trials"],
        }
    )
    from hpsearch.results import ROUND_COLUMNS

    for column in [c for c in rounds.columns if c not in ROUND_COLUMNS]:
        pname, _, part = column.rpartition("_")
        if part == "low":
            lows, highs = rounds[column], rounds[f"{pname}_high"]
            out[pname] = [
                "-" if _missing(lo) or _missing(hi) else f"{lo:.3g}..{hi:.3g}"
                for lo, hi in zip(lows, highs, strict=True)
            ]
        elif part == "choices":
            out[pname] = ["-" if v is None else "|".join(str(c) for c in v) for v in rounds[column]]
    if rounds["moved_edges"].map(bool).any():
        out["moved"] = rounds["moved_edges"]
    if "decision" in rounds and rounds["decision"].notna().any():
        out["then"] = ["-" if _missing(d) else d for d in rounds["decision"]]
    return out


def format_final_eval(fe: Mapping[str, Any]) -> str:
    """One line for a recorded final evaluation (mean ± std of test accuracy over seeds)."""
    mean, std = fe.get("mean"), fe.get("std")
    seeds = fe.get("seeds") or []
    if mean is None:
        return "final evaluation: no seed finished"
    text = f"final evaluation: test accuracy {float(mean):.4f}"
    if std is not None:
        text += f" ± {float(std):.4f}"
    if seeds:
        text += f" over {len(seeds)} seeds"
    if fe.get("trial") is not None:
        text += f" (trial {fe['trial']} retrained on train+validation)"
    return text
