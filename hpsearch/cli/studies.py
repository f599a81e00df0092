"""``hpsearch studies | init``: the example study files shipped with hpsearch.

The repository's ``studies/`` folder is installed as the package
``hpsearch.studies`` (``pyproject.toml`` maps it), so a wheel install has the
same study files as a checkout:

* ``hpsearch studies`` lists them on stdout: name, data, rounds × trials per
  round, epochs, sampler and pruner, and the file's first comment line;
* ``hpsearch init NAME [DIR]`` copies ``NAME.toml`` into DIR (default: the
  current directory, created with its parents if missing) and prints the path
  of the copy; ``hpsearch run DIR/NAME.toml`` then runs it.

``init`` never overwrites: an existing file, an unknown NAME or a DIR that
cannot be written is one line on stderr with exit code 2 and nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from hpsearch.errors import HPSearchError

PACKAGE = "hpsearch.studies"
"""The package the repository's ``studies/`` folder is installed as."""


def register(subparsers: Any) -> None:
    """Add ``studies`` and ``init`` to an argparse subparsers object (handler in ``func``)."""
    ls = subparsers.add_parser(
        "studies",
        help="list the example study files shipped with hpsearch",
        description="List the example study files shipped with hpsearch; copy one with "
        "'hpsearch init NAME'.",
    )
    ls.set_defaults(func=studies_command)

    init = subparsers.add_parser(
        "init",
        help="copy an example study file into a directory",
        description="Copy the shipped study file NAME.toml into DIR (default: the current "
        "directory) so it can be edited and run with 'hpsearch run DIR/NAME.toml'.",
    )
    init.add_argument("name", metavar="NAME", help="a study listed by 'hpsearch studies'")
    init.add_argument(
        "directory",
        metavar="DIR",
        nargs="?",
        default=".",
        help="directory to write NAME.toml into (default: the current directory)",
    )
    init.set_defaults(func=init_command)


def bundled() -> dict[str, Traversable]:
    """The shipped study files by name (``quick`` → its ``quick.toml``), sorted by name."""
    folder = resources.files(PACKAGE)
    found = {
        entry.name.removesuffix(".toml"): entry
        for entry in folder.iterdir()
        if entry.name.endswith(".toml") and entry.is_file()
    }
    return dict(sorted(found.items()))


def summary(text: str) -> str:
    """A study file's first comment line without its ``# name:`` prefix ('' if none)."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            return ""
        comment = stripped.lstrip("#").strip()
        head, sep, rest = comment.partition(":")
        return rest.strip() if sep and " " not in head else comment
    return ""


def studies_command(args: argparse.Namespace) -> int:
    import pandas as pd

    from hpsearch.cli.query import format_table
    from hpsearch.config import parse_study

    rows = []
    for name, entry in bundled().items():
        text = entry.read_text(encoding="utf-8")
        config = parse_study(text, source=f"{PACKAGE}/{entry.name}")
        rows.append(
            {
                "name": name,
                "data": config.data.dataset
                + (f" ({config.data.train_samples})" if config.data.train_samples else ""),
                "rounds": f"{config.narrowing.rounds} x {config.narrowing.trials_per_round}",
                "epochs": config.model.get("epochs", "-"),
                "sampler": config.sampler,
                "pruner": config.pruner,
                "about": summary(text),
            }
        )
    if not rows:
        raise HPSearchError(f"studies: no study files are installed in {PACKAGE}")
    frame = pd.DataFrame(rows)
    # The free-text column goes last, left-aligned: it reads as a sentence, not a number.
    table = format_table(frame.drop(columns="about")).splitlines()
    lines = [f"{table[0]}  about"] + [
        f"{line}  {row['about']}" for line, row in zip(table[1:], rows, strict=True)
    ]
    sys.stdout.write("\n".join(line.rstrip() for line in lines) + "\n")
    print("hpsearch: copy one with: hpsearch init NAME [DIR]", file=sys.stderr)
    return 0


def init_command(args: argparse.Namespace) -> int:
    available = bundled()
    entry = available.get(args.name.removesuffix(".toml"))
    if entry is None:
        raise HPSearchError(
            f"init NAME: got {args.name!r}; shipped studies: {', '.join(available)}"
        )
    directory = Path(args.directory)
    target = directory / entry.name
    exists = (
        f"init: {os.fspath(target)} exists; remove it or give another DIR (init never overwrites)"
    )
    if target.exists() or target.is_symlink():
        raise HPSearchError(exists)
    if directory.exists() and not directory.is_dir():
        raise HPSearchError(f"init DIR: got {os.fspath(directory)!r}, a file; expected a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(target, "x", encoding="utf-8") as out:  # "x": never replace a file
            out.write(entry.read_text(encoding="utf-8"))
    except FileExistsError:  # created between the check and the write
        raise HPSearchError(exists) from None
    except OSError as exc:
        raise HPSearchError(
            f"init DIR: cannot write {os.fspath(target)}: {exc.strerror or exc}"
        ) from exc
    print(f"hpsearch: wrote {target}; run it with: hpsearch run {target}", file=sys.stderr)
    print(target)
    return 0
