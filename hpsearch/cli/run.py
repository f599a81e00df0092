"""``hpsearch run``: run (or resume) a study from its study file."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from hpsearch.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated
from hpsearch.errors import ConfigError, HPSearchError

if TYPE_CHECKING:
    from hpsearch.search import SearchResult

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a study file: sample, train on Ray, narrow, record",
        description="Run (or resume) the study described by STUDY.toml.",
    )
    p.add_argument("study_file", metavar="STUDY.toml", help="the study file (TOML)")
    p.add_argument(
        "--storage",
        default=None,
        help="results database URL (default sqlite:///hpsearch.db in the current directory)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join: 'auto' or ray://HOST:PORT (default: start Ray locally)",
    )
    p.add_argument("--workers", type=int, default=None, help="parallel trials (default: CPUs)")
    p.add_argument("--name", default=None, help="study name (default: the study file's)")
    p.add_argument("--seed", type=int, default=None, help="study seed (default: the file's)")
    p.add_argument("--rounds", type=int, default=None, help="override narrowing.rounds")
    p.add_argument(
        "--trials-per-round", type=int, default=None, help="override narrowing.trials_per_round"
    )
    p.add_argument("--top-k", type=int, default=None, help="override narrowing.top_k")
    p.add_argument(
        "--final-eval",
        action="store_true",
        default=None,
        help="retrain the best configuration on train+validation and report test accuracy",
    )
    p.add_argument(
        "--from",
        dest="from_study",
        metavar="NAME",
        default=None,
        help="warm start from finished study NAME in the same storage: its best region "
        "as the first box, its top trials run first",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="if the study exists, start a new one named NAME-2, NAME-3, ... instead of resuming",
    )
    p.add_argument(
        "--report",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="write the HTML report at the end (default directory reports/NAME/)",
    )
    p.add_argument("--quiet", action="store_true", help="no live progress on stderr")
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    # SIGTERM (ray job stop, Kubernetes, Slurm) from here on ends the run cleanly
    # (see _Signals); ray.init installs its own handler, so it is set again after.
    signals = _Signals()
    previous_term = signal.signal(signal.SIGTERM, signals.on_sigterm)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = signals.unraisable_hook(previous_hook)
    try:
        return _run(args, signals)
    except KeyboardInterrupt as exc:
        if signals.terminated and not isinstance(exc, Terminated):
            raise Terminated from None  # Ray passed our SIGTERM on as a plain one
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        sys.unraisablehook = previous_hook


def _run(args: argparse.Namespace, signals: _Signals) -> int:
    # Everything that can be wrong with the input is checked before anything
    # is written: the study file, the overrides, the storage URL, the data.
    from hpsearch.config import load_study
    from hpsearch.storage import DEFAULT_STORAGE
    from hpsearch.storage_url import parse_storage_url

    config = load_study(args.study_file)
    config = config.with_overrides(
        name=args.name,
        seed=args.seed,
        rounds=args.rounds,
        trials_per_round=args.trials_per_round,
        top_k=args.top_k,
        workers=args.workers,
    )
    url = args.storage or DEFAULT_STORAGE
    parse_storage_url(url)
    from hpsearch.cluster import resolve_address

    address, address_source = resolve_address(args.address)
    if address is not None and not address.strip():
        raise ConfigError(
            f"{address_source}: got {address!r}; expected 'auto', HOST:PORT or ray://HOST:PORT"
        )
    if args.report:
        _check_report_dir(args.report)

    from hpsearch import api

    # The user's objective: its module imports and holds the callable, or its
    # command is executable, and its folder is small enough to ship.
    api.check(config)
    if args.final_eval and not config.builtin:
        raise ConfigError(
            "--final-eval: the final evaluation (test accuracy of the built-in MLP) needs the "
            f"built-in objective; this study's objective is a {config.objective.kind}"
        )
    data = api.load_data(config, where=args.study_file)

    # Services last (they may make us wait, boundedly): the database must be
    # usable and a cluster must answer at --address (or RAY_ADDRESS), still
    # before any write.
    from hpsearch.cluster import check_address
    from hpsearch.storage_url import StorageUnreachableError, check_storage

    try:
        check_storage(url)
    except StorageUnreachableError as exc:  # a service that does not answer: exit 1
        print(f"hpsearch: error: {exc}", file=sys.stderr)
        return 1
    if not args.fresh:
        _check_recorded_study(url, config)
    if address is not None:
        check_address(address, source=address_source)

    from hpsearch.cluster import ray_session

    warm = None
    if args.from_study:  # checked before anything is written
        from hpsearch.storage_url import opened_storage
        from hpsearch.warmstart import warm_start

        with opened_storage(url, create=False) as reader:
            warm = warm_start(reader, args.from_study, config)

    err = sys.stderr
    if args.fresh:
        config = config.with_overrides(name=_free_name(url, config.name))
    # Ray next, and whether one trial fits on a node of it (a trial larger than
    # every node is an error, or a wait for the autoscaler), before the study
    # is written: bad resources leave nothing behind either.
    with ray_session(address, source=address_source) as started:
        signal.signal(signal.SIGTERM, signals.on_sigterm)  # ray.init set its own
        executor = api.make_executor(
            config, data, on_wait=lambda message: print(f"hpsearch: {message}", file=err)
        )
        # Our own session ends with the run, and its end stops the running trials:
        # a stop then needs no ray.cancel, which can crash Ray's core worker
        # (RayExecutor.cancel_all).
        executor.session_ends_with_run = started
        try:
            result = _search(
                args,
                config,
                url,
                executor,
                signals,
                warm=warm,
                scale=api.metric_scale_of(config, data),
                ray_where=_ray_where(executor, address, address_source, started),
            )
        finally:
            executor.close()
    if isinstance(result, int):
        return result

    out = sys.stdout
    if result.already_finished:
        print(f"hpsearch: study {config.name!r} already finished ({result.stop_reason})", file=err)
    from hpsearch.cli.progress import summary_table

    print(summary_table(result.rounds), file=out)
    print(f"stopped: {result.stop_reason}", file=out)
    best = result.best_trial
    if best is None:
        print("best: no trial completed", file=out)
    else:
        params = "  ".join(f"{k}={_fmt_param(v)}" for k, v in best.params.items())
        print(f"best: trial {best.number}  {config.metric}={best.value:.4f}  {params}", file=out)
    if result.final_eval and result.final_eval.get("mean") is not None:
        fe = result.final_eval
        print(
            f"final evaluation: test accuracy {fe['mean']:.4f} ± {fe['std']:.4f} "
            f"over {len(fe['seeds'])} seeds",
            file=out,
        )
    if args.report is not None:
        from hpsearch.report import write_report

        page = write_report(url, config.name, args.report or None)
        print(f"report: {page}", file=out)
    return 0


def _search(
    args: argparse.Namespace,
    config: Any,
    url: str,
    executor: Any,
    signals: _Signals,
    *,
    warm: Any,
    scale: Any,
    ray_where: str,
) -> SearchResult | int:
    """Open (or create) the study and run the search on ``executor``.

    Returns the :class:`~hpsearch.search.SearchResult`, or the exit code of a
    run stopped by Ctrl-C or SIGTERM (after saying how to resume).
    """
    from hpsearch import records, space
    from hpsearch.cli.progress import ProgressDisplay, format_box
    from hpsearch.sampling import make_sampler
    from hpsearch.search import NarrowingSearch, SearchObserver, driver_gone
    from hpsearch.storage import StudyStore
    from hpsearch.storage_url import mask_url
    from hpsearch.worker import trial_seed

    err = sys.stderr
    sampler = make_sampler(config.sampler, config.seed)
    store, existed = StudyStore.open(
        url, config.name, direction=config.direction, sampler=sampler, create=True
    )
    print(f"hpsearch: storage {mask_url(url)}", file=err)  # after its errors: one line
    driver_id = uuid.uuid4().hex[:12]
    resume = (
        f"Resume with the same command: hpsearch run {args.study_file} --name {config.name} "
        f"--storage {mask_url(url)}"
    )
    try:
        # Say we are here before choosing the sampler's stream: two drivers that
        # start together on one study then both see each other.
        host = socket.gethostname()
        store.beat(
            driver_id,
            {"host": host, "pid": os.getpid(), "heartbeat": time.time(), "state": "starting"},
        )
        others = [
            d
            for d, info in store.drivers().items()
            if d != driver_id and not driver_gone(info, now=time.time(), host=host)
        ]
        if others:
            # Another driver is working on this study: sample a different stream.
            seed = trial_seed(config.seed, int(driver_id, 16) % (2**31))
            sampler = make_sampler(config.sampler, seed)
            store.study.sampler = sampler
            print(f"hpsearch: sharing the study with {len(others)} running driver(s)", file=err)
        if existed:
            attrs = store.user_attrs()
            n = len(store.trials())
            print(
                f"hpsearch: study {config.name!r} exists ({n} trials recorded); resuming",
                file=err,
            )
            if attrs.get(records.STUDY_FILE_KEY) not in (None, config.source_text):
                logger.warning(
                    "the study file differs from the one recorded for %r; the recorded rounds "
                    "are kept (use --fresh for a new study)",
                    config.name,
                )
        else:
            from hpsearch.api import record_new_study

            record_new_study(store, config)
            print(
                f"hpsearch: study {config.name!r}: {config.narrowing.rounds} rounds x "
                f"{config.narrowing.trials_per_round} trials, sampler {config.sampler}, "
                f"pruner {_pruner_text(config)}, metric {config.metric} ({config.direction})",
                file=err,
            )

        first_box, enqueue = None, None
        if warm is not None and existed:
            logger.warning("study %r exists: resuming it; --from is ignored", config.name)
        elif warm is not None:
            first_box, enqueue = warm.box, warm.enqueue
            store.set_study_attr(records.WARM_START_KEY, warm.to_record())
            print(
                f"hpsearch: warm start from {warm.source!r}: first box "
                f"{format_box(space.box_to_record(warm.box))}; {len(enqueue)} of its top "
                "trials run first",
                file=err,
            )

        print(
            f"hpsearch: {ray_where} with {executor.info.nodes} node(s), "
            f"{executor.info.cpus:g} CPUs; {executor.workers} workers"
            + (f", packing up to {executor.pack_size} trials" if executor.pack_size > 1 else ""),
            file=err,
        )
        observer: SearchObserver = SearchObserver() if args.quiet else ProgressDisplay(err)
        search = NarrowingSearch(
            config,
            store,
            executor,
            sampler,
            observer=observer,
            final_eval=args.final_eval,
            driver_id=driver_id,
            first_box=first_box,
            enqueue=enqueue,
            scale=scale,
        )
        signals.search, signals.executor = search, executor
        previous = signal.signal(signal.SIGINT, signals.on_sigint)
        try:
            if signals.cancelling:  # a signal came before and its exception was dropped
                raise KeyboardInterrupt
            result = search.run()
        finally:
            signal.signal(signal.SIGINT, previous)
            signals.search = None
    except KeyboardInterrupt:
        # Second Ctrl-C or SIGTERM: the search cancelled its running trials and
        # marked them stale; a trial claimed but not yet sent (or collected but
        # not yet recorded) when the signal came is released here too.
        signals.cancelling = True
        terminated = signals.terminated
        why = "cancelled by SIGTERM" if terminated else "cancelled by Ctrl-C"
        _release_running(store, driver_id, why)
        recorded, cancelled = _counts(store, driver_id)
        what = "terminated (SIGTERM)" if terminated else "interrupted"
        print(
            f"\nhpsearch: {what}; {cancelled} running trial(s) cancelled, to be redone; the "
            f"database is consistent ({recorded} trials recorded in this run). {resume}",
            file=err,
        )
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED

    if signals.terminated:  # its exception was dropped after the trials had ended
        print(
            f"hpsearch: terminated (SIGTERM); the database is consistent "
            f"({result.trials_run} trials recorded in this run). {resume}",
            file=err,
        )
        return EXIT_TERMINATED
    if result.interrupted:
        print(
            f"hpsearch: interrupted; the database is consistent ({result.trials_run} trials "
            f"recorded in this run). {resume}",
            file=err,
        )
        return EXIT_INTERRUPTED
    return result


class _Signals:
    """What Ctrl-C and SIGTERM do during ``hpsearch run``.

    Ctrl-C once: stop dispatching, let the running trials finish (the search's
    :meth:`~hpsearch.search.NarrowingSearch.request_stop`); twice: cancel
    them (KeyboardInterrupt). SIGTERM: cancel at once, as a second Ctrl-C
    (:class:`~hpsearch.cli.Terminated`); before the search starts nothing runs
    and the run just ends. Once cancelling, further signals are ignored so that
    the clean-up (a few database writes) is not cut short.

    The exception a handler raises lands wherever Python happens to be; in a
    finalizer or weakref callback Python drops it. The search is therefore
    also told to cancel (it raises at its next pass), and
    :meth:`unraisable_hook` keeps the dropped exception's traceback off stderr.
    """

    def __init__(self) -> None:
        self.search: Any = None
        self.executor: Any = None
        self.cancelling = False
        self.terminated = False

    def on_sigint(self, _signum: int, _frame: Any) -> None:
        if self.cancelling:
            return
        if self.search is None or self.search.stop_requested:
            self.cancelling = True
            if self.search is not None:
                self.search.request_stop(cancel=True)
            raise KeyboardInterrupt
        self.search.request_stop()
        running = self.executor.in_flight if self.executor is not None else 0
        print(
            f"\nhpsearch: stopping: waiting for {running} running trial(s) to finish "
            "(Ctrl-C again to cancel them)",
            file=sys.stderr,
        )

    def on_sigterm(self, _signum: int, _frame: Any) -> None:
        if self.cancelling:
            return
        self.cancelling = self.terminated = True
        if self.search is not None:
            self.search.request_stop(cancel=True)
        raise Terminated

    def unraisable_hook(self, previous: Any) -> Any:
        """``sys.unraisablehook`` for the run: our own interrupt, dropped by Python
        because it was raised inside a finalizer or callback, is not printed (the
        search raises it again); anything else goes to ``previous``."""

        def hook(unraisable: Any) -> None:
            if self.cancelling and isinstance(unraisable.exc_value, KeyboardInterrupt):
                logger.debug("interrupt raised in %r; the search raises it", unraisable.object)
                return
            previous(unraisable)

        return hook


def _release_running(store: Any, driver_id: str, why: str) -> int:
    """Mark FAIL (stale) every trial this driver left RUNNING; a resume redoes them."""
    from optuna.trial import TrialState

    from hpsearch import records

    count = 0
    for trial in store.trials(states=(TrialState.RUNNING, TrialState.WAITING)):
        if trial.user_attrs.get(records.TRIAL_DRIVER) == driver_id:
            reason = f"{records.STALE_PREFIX} {why}; redone on resume"
            count += bool(store.fail_trial(store.trial_id(trial), reason))
    return count


def _counts(store: Any, driver_id: str) -> tuple[int, int]:
    """This driver's trials: (recorded with a result, cancelled and marked stale)."""
    from hpsearch import records
    from hpsearch.search import is_stale

    mine = [t for t in store.trials() if t.user_attrs.get(records.TRIAL_DRIVER) == driver_id]
    stale = sum(1 for t in mine if is_stale(t))
    return sum(1 for t in mine if t.state.is_finished()) - stale, stale


def _ray_where(executor: Any, address: str | None, source: str, started: bool) -> str:
    """Which Ray the run uses and why: ``Ray cluster at H:P (from RAY_ADDRESS)``,
    ``Ray started locally``, or the session this process already had."""
    if not started:
        return f"Ray session at {executor.info.address} (already open in this process)"
    if address in (None, "local"):
        return "Ray started locally"
    return f"Ray cluster at {executor.info.address} (from {source})"


def _check_recorded_study(url: str, config: Any) -> None:
    """A study already recorded under ``config.name`` must optimize the same way and
    sample every parameter the same kind of way (read-only; no database yet, or no
    such study, is fine). The same checks as StudyStore.open and NarrowingSearch.run,
    made before anything is written or started."""
    from optuna.distributions import check_distribution_compatibility

    from hpsearch import space
    from hpsearch.storage_url import mask_url, opened_storage

    name, direction = config.name, config.direction
    try:
        with opened_storage(url, create=False) as storage:
            try:
                study_id = storage.get_study_id_from_name(name)
            except KeyError:
                return
            recorded = storage.get_study_directions(study_id)
            trials = storage.get_all_trials(study_id, deepcopy=False)
    except HPSearchError:  # no database (or no results tables) yet
        return
    found = ",".join(d.name.lower() for d in recorded)
    if found != direction:
        raise HPSearchError(
            f"study {name!r} in {mask_url(url)} has direction {found}, the study file says "
            f"{direction}; use --name to start a new study"
        )
    wanted = space.distributions(config.space)
    checked: set[str] = set()
    for trial in trials:
        for pname, dist in trial.distributions.items():
            if pname in wanted and pname not in checked:
                checked.add(pname)
                try:
                    check_distribution_compatibility(dist, wanted[pname])
                except ValueError as exc:
                    raise HPSearchError(
                        f"search.{pname}: the recorded study {name!r} samples it as {dist}, "
                        f"the study file as {wanted[pname]} ({exc}); use --name to start a "
                        "new study"
                    ) from exc


def _check_report_dir(path: str) -> None:
    """``--report DIR`` must be a directory or creatable as one (checked, not created)."""
    from pathlib import Path

    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise ConfigError(
            f"--report: {path} exists and is not a directory; give a directory for the report"
        )
    parent = next((p for p in (target, *target.parents) if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(
            f"--report: {parent} is a file, so {path} cannot be created; give another directory"
        )


def _free_name(url: str, name: str) -> str:
    """``name`` if no study has it yet, else the first free ``name-2``, ``name-3``, ..."""
    from hpsearch.storage_url import opened_storage

    try:
        with opened_storage(url, create=False) as storage:
            taken = {s.study_name for s in storage.get_all_studies()}
    except HPSearchError:  # no database yet: every name is free
        return name
    if name not in taken:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def _fmt_param(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _pruner_text(config: Any) -> str:
    """``asha (judges from epoch 12)``: the pruner and its first rung."""
    if config.pruner == "none":
        return "none"
    from hpsearch.pruning import grace_epochs

    steps = int(config.model.get("epochs", 1)) if config.builtin else config.objective.max_steps
    grace = config.prune_after or grace_epochs(steps or 1)  # as the run
    if not config.builtin:
        return f"{config.pruner} (judges from step {grace})"
    return f"{config.pruner} (judges from epoch {grace})"
