"""The ``hpsearch`` command.

Errors a user can fix (bad study file, option, storage URL, missing study)
print one line ``hpsearch: error: ...`` on stderr and exit 2, with no
traceback; a service that does not answer exits 1, and so does a study whose
objective failed every trial of its first round; unexpected failures exit 1;
Ctrl-C exits 130, SIGTERM 143 (128 + the signal's number, as a shell reports
a process the signal ended). Data goes to stdout, progress and logs to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from hpsearch import __version__
from hpsearch.errors import ClusterError, HPSearchError, ObjectiveError
from hpsearch.storage_url import StorageUnreachableError
from trainer.errors import TrainerError

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """``hpsearch run`` got SIGTERM (``ray job stop``, Kubernetes, Slurm).

    A KeyboardInterrupt: no ``except Exception`` on the way swallows it, and
    Ray's wait loops, which run Python's signal handlers themselves, pass a
    KeyboardInterrupt on (as a plain one: the handler also sets a flag that
    ``hpsearch run`` checks) where any other exception becomes a SystemError.
    """


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(EXIT_USAGE, f"hpsearch: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from hpsearch.cli import query, report, run, studies

    parser = _Parser(
        prog="hpsearch",
        description="Distributed hyperparameter search for neural-network training.",
    )
    parser.add_argument("--version", action="version", version=f"hpsearch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    run.register(sub)
    query.register(sub)
    report.register(sub)
    studies.register(sub)
    # -v after the subcommand too (hpsearch run X.toml -v). SUPPRESS: a
    # subcommand without -v leaves the value set before it alone.
    for command in {id(p): p for p in sub.choices.values()}.values():
        command.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="debug logging on stderr",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="hpsearch: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.DEBUG if args.verbose else optuna.logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (ClusterError, StorageUnreachableError, ObjectiveError) as exc:  # no service; no trial
        print(f"hpsearch: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except (HPSearchError, TrainerError) as exc:
        print(f"hpsearch: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print("hpsearch: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("hpsearch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILURE


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
