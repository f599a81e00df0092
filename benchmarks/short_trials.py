"""Short trials: hpsearch against Ray Tune and a sequential Optuna loop (not a test).

Runs the same search three ways, for two workloads, in this one script:

1. **hpsearch** with 2 workers through its real driver
   (``hpsearch.runner.run_study``: ``StudyStore.open``, ``RayExecutor``,
   ``ready``, ``NarrowingSearch.run``, ``close``) in this process's Ray
   session: one narrowing round of all the trials, random sampler; unpacked
   (``pack_size=1``, every trial through ``trainer.train.train`` like the other
   ways) and, where hpsearch's automatic packing would pack, also packed.
2. **Ray Tune** with ``OptunaSearch`` backed by an Optuna study in an SQLite
   file, at its fastest settings (printed; with 2 and with 4 concurrent
   trials, the faster counts as Tune's best), and once per workload with its
   defaults.
3. **A sequential Optuna loop**: ``study.optimize`` in this process, random
   sampler, an SQLite file.

Every way samples the same space (lr 10^U(-6,-2), weight decay 10^U(-8,-4),
dropout U(0, 0.5), batch norm on/off) with Optuna's ``RandomSampler(seed=0)``,
trains with ``trainer.train.train`` on the same dataset object, and records
into the same kind of storage: an SQLite file per run in a temporary
directory, opened with the pragmas hpsearch uses (WAL, synchronous=NORMAL, a
busy timeout), so the baselines get no slower database. BLAS/OpenMP threads
are pinned to 1 before NumPy is imported; Ray's workers (hpsearch's and
Tune's) inherit that. Before each run the script waits (untimed) until the
previous run's actors have released Ray's CPUs.

The workloads:

* ``mnist``: the issue's short trial, the 784-100x6-10 network, 3 epochs on
  320 ``mnist5k`` samples, scored on 80 (``train_samples=400``,
  ``val_fraction=0.2``).
* ``digits``: the small 64-50-50-10 network, 5 epochs on scikit-learn's digits
  (1,150 training, 288 validation samples).

It prints trials per minute for each way (wall time from opening the storage
to the last trial recorded, worker start-up included; medians over repeats
that are interleaved, in a rotating order, so machine noise hits every way),
the ratios hpsearch / Ray Tune's best and hpsearch / sequential against the
issue's goals (>= 5x and >= 1.5x; printed, never asserted), and where
hpsearch's driver spends its time per trial: sampling, storage (trial
creation, finishing writes, other), dispatch (task building, Ray submit,
ray.wait), result handling (fetching outcomes, loop bookkeeping), start-up,
measured by wrapping the driver's methods in this process with
``time.perf_counter`` (wall) and ``time.thread_time`` (the driver thread's
CPU). hpsearch's code is not changed.

    python benchmarks/short_trials.py                   # 200 trials, 3 repeats
    python benchmarks/short_trials.py --workloads digits --repeats 5
    python benchmarks/short_trials.py --smoke           # tiny sizes, for the tests

Other work on the same checkout can change hpsearch under a long run (Ray
starts workers that import the code on disk); benchmark a fixed commit, e.g.
``git archive HEAD | tar -x -C DIR`` and run with ``PYTHONPATH=DIR``.
"""

from __future__ import annotations

import os

# Before NumPy (or anything that imports it) is loaded, and before Ray starts
# the worker processes that inherit this environment: one BLAS thread each.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

WORKERS = 2
SEED = 0
METRIC = "val_accuracy"

# The searched space, identical for every way (Optuna names and order).
LR = (1e-6, 1e-2)
WEIGHT_DECAY = (1e-8, 1e-4)
DROPOUT = (0.0, 0.5)
BATCHNORM = (True, False)

# Ray Tune's fastest settings for many short trials, from its docs (Tune
# performance FAQ / scalability notes, TuneConfig, env variables) and sources.
TUNE_FAST_ENV = {
    # no CSV / JSON / TensorBoard logger callbacks per trial
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # experiment-state snapshots only at the end (default "auto": >= every 10 s)
    "TUNE_GLOBAL_CHECKPOINT_S": "1000000",
    # no date sub-directory; no resource warnings
    "TUNE_DISABLE_DATED_SUBDIR": "1",
    "TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S": "0",
}
TUNE_FAST_SETTINGS = (
    "function trainable (tune.with_parameters: the dataset put in the object store once), "
    "tune.with_resources({'cpu': 1}), TuneConfig(reuse_actors=True, "
    "max_concurrent_trials=Q), RunConfig(storage_path=<tmp>, verbose=0, log_to_file=False, "
    "CheckpointConfig(checkpoint_frequency=0, checkpoint_at_end=False), "
    "SyncConfig(sync_artifacts=False), callbacks=[one that keeps each trial's trainer time]), "
    "one result per trial (the function returns it), env "
    + " ".join(f"{k}={v}" for k, v in TUNE_FAST_ENV.items())
    + "; run with Q=2 (one trial per CPU) and Q=4 (two more sampled and waiting, like "
    "hpsearch's queue); Tune's best is the faster of the two"
)
TUNE_DEFAULT_SETTINGS = (
    "Tuner(tune.with_parameters(fn, data=...), TuneConfig(num_samples=N, search_alg=...), "
    "RunConfig(storage_path=<tmp>, verbose=0)); everything else Tune's default "
    "(reuse_actors=False: a new actor per trial; no concurrency cap; logger callbacks on; "
    "1 CPU per trial)"
)


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    dataset: str
    train_samples: int | None
    hidden_sizes: tuple[int, ...]
    epochs: int
    batch_size: int = 100
    val_fraction: float = 0.2

    def model_options(self) -> dict[str, Any]:
        return {
            "hidden_sizes": self.hidden_sizes,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
        }


WORKLOADS = {
    "mnist": Workload(
        "mnist",
        "mnist5k 784-100x6-10, 3 epochs, 320 train / 80 val",
        "mnist5k",
        400,
        (100,) * 6,
        3,
    ),
    "digits": Workload(
        "digits",
        "digits 64-50-50-10, 5 epochs, 1150 train / 288 val",
        "digits",
        None,
        (50, 50),
        5,
    ),
}
SMOKE_WORKLOADS = {
    "mnist": Workload(
        "mnist",
        "mnist5k 784-20x2-10, 1 epoch, 80 train / 20 val (smoke)",
        "mnist5k",
        100,
        (20, 20),
        1,
    ),
    "digits": Workload(
        "digits",
        "digits 64-10-10, 1 epoch, 80 train / 20 val (smoke)",
        "digits",
        100,
        (10, 10),
        1,
    ),
}

STUDY = """
[study]
name = "{name}"
seed = {seed}
sampler = "random"
metric = "{metric}"

[data]
dataset = "{dataset}"
{train_samples}
val_fraction = {val_fraction}

[model]
hidden_sizes = {hidden_sizes}
epochs = {epochs}
batch_size = {batch_size}

[search.lr]
low = {lr_low}
high = {lr_high}
log = true

[search.weight_decay]
low = {wd_low}
high = {wd_high}
log = true

[search.dropout_ratio]
low = {do_low}
high = {do_high}

[search.batchnorm]
choices = [true, false]

[narrowing]
rounds = 1
trials_per_round = {trials}
top_k = {top_k}

[resources]
workers = {workers}
"""


# -- timing ------------------------------------------------------------------------------


@dataclass
class Run:
    """One timed search."""

    way: str
    wall: float
    trials: int
    train_seconds: list[float]
    load: float | None = None  # the machine's 1-minute load average at the end
    settle: float = 0.0  # untimed wait afterwards until Ray's CPUs were free again
    driver_cpu: float | None = None
    profile: dict[str, tuple[float, float]] = field(default_factory=dict)  # wall, cpu

    @property
    def per_minute(self) -> float:
        return self.trials / self.wall * 60.0


@contextlib.contextmanager
def measured() -> Iterator[dict[str, float | None]]:
    """Wall time and driver-process CPU of the block, and the machine's load after it."""
    out: dict[str, float | None] = {}
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        yield out
    finally:
        out["wall"] = time.perf_counter() - t0
        out["driver_cpu"] = time.process_time() - cpu0
        out["load"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None


# -- the shared objective ----------------------------------------------------------------


def _seed_from_params(params: dict[str, Any]) -> int:
    """A trial seed for Ray Tune trials (which do not see Optuna's trial number)."""
    return zlib.crc32(repr(sorted(params.items())).encode()) % (2**31)


def train_once(params: dict[str, Any], seed: int, model: dict[str, Any], data: Any) -> tuple:
    """Train one configuration with ``trainer.train.train``: (metric, trainer seconds)."""
    import math

    from trainer.config import TrainConfig
    from trainer.train import train

    history = train(TrainConfig(**model, **params, seed=seed), data)
    records = history.records
    value = records[-1].val_accuracy if records and not history.diverged else math.nan
    return float(value), float(history.seconds)


def suggest(trial: Any) -> dict[str, Any]:
    return {
        "lr": trial.suggest_float("lr", *LR, log=True),
        "weight_decay": trial.suggest_float("weight_decay", *WEIGHT_DECAY, log=True),
        "dropout_ratio": trial.suggest_float("dropout_ratio", *DROPOUT),
        "batchnorm": trial.suggest_categorical("batchnorm", list(BATCHNORM)),
    }


def optuna_space() -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    return {
        "lr": FloatDistribution(*LR, log=True),
        "weight_decay": FloatDistribution(*WEIGHT_DECAY, log=True),
        "dropout_ratio": FloatDistribution(*DROPOUT),
        "batchnorm": CategoricalDistribution(list(BATCHNORM)),
    }


def sqlite_storage(path: Path) -> Any:
    """An Optuna RDBStorage on an SQLite file with hpsearch's pragmas (WAL, NORMAL)."""
    import optuna
    import sqlalchemy

    storage = optuna.storages.RDBStorage(
        f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 30}}
    )

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()
    return storage


def _count_finished(path: Path, name: str) -> int:
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{path}")
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())


# -- way 1: hpsearch -------------------------------------------------------------------

# Driver methods timed (wrapped only while hpsearch runs): (owner, name) -> category.
PROFILE_ORDER = (
    ("sampling", "sampling (Optuna RandomSampler, sample_params)"),
    ("storage_create", "storage: trial creation (create_running_trials)"),
    ("storage_finish", "storage: finishing writes (finish_trials)"),
    ("storage_other", "storage: other (heartbeat, reads, rounds)"),
    ("dispatch_tasks", "dispatch: task building, packing (_tasks, _dispatch)"),
    ("dispatch_submit", "dispatch: Ray submit (submit, submit_pack)"),
    ("dispatch_wait", "dispatch: ray.wait + queue bookkeeping"),
    ("result_fetch", "result handling: fetch outcome (ray.get)"),
    ("result_loop", "result handling: loop bookkeeping (_run_round)"),
    ("round", "round start/close, run() setup"),
)
# Outside the search loop (storage open, worker start-up, close).
STARTUP_PARTS = (
    ("startup_storage", "start-up: StudyStore.open (SQLite, study)"),
    ("startup_workers", "start-up: RayExecutor + ready() (worker processes, data put)"),
    ("startup_close", "close: executor.close()"),
)
IDLE = "idle"  # driver blocked in ray.wait while workers train


class Profile:
    """Exclusive wall and thread-CPU time per category of wrapped calls.

    A wrapped call's time, minus the time of wrapped calls nested in it, goes
    to its category; so a storage call made inside the sampler counts as
    sampling only if the storage method itself is not wrapped.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._stack: list[list[float]] = []
        self._undo: list[Callable[[], None]] = []
        self.missing: list[str] = []

    def add(self, category: str, wall: float, cpu: float) -> None:
        self.wall[category] += wall
        self.cpu[category] += cpu

    @contextlib.contextmanager
    def block(self, category: str) -> Iterator[None]:
        """Time a block of the benchmark's own code (not nested in wrapped calls)."""
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.add(category, time.perf_counter() - w0, time.thread_time() - c0)

    def timed(self, category: str | Callable[..., str], fn: Callable[..., Any]) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            child = [0.0, 0.0]
            self._stack.append(child)
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
                self._stack.pop()
                name = category(*args, **kwargs) if callable(category) else category
                if name == IDLE:  # blocked: its CPU is dispatch work, the rest is idle
                    self.add("dispatch_wait", cpu - child[1], cpu - child[1])
                    self.add(IDLE, (wall - child[0]) - (cpu - child[1]), 0.0)
                else:
                    self.add(name, wall - child[0], cpu - child[1])
                if self._stack:
                    self._stack[-1][0] += wall
                    self._stack[-1][1] += cpu

        return wrapper

    def patch(
        self,
        owner: Any,
        name: str,
        category: str,
        after: Callable[..., None] | None = None,
    ) -> None:
        """Wrap ``owner.name`` (a function, method or classmethod) until :meth:`restore`.

        ``after(*args)`` runs when the call returns, outside the timing.
        """
        original = (
            owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        )
        is_classmethod = isinstance(original, classmethod)
        function = original.__func__ if is_classmethod else original
        if function is None or not callable(function):
            self.missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
            return
        timed = self.timed(category, function)
        if after is not None:
            inner = timed

            @functools.wraps(function)
            def timed(*args: Any, **kwargs: Any) -> Any:
                result = inner(*args, **kwargs)
                after(*args)
                return result

        setattr(owner, name, classmethod(timed) if is_classmethod else timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


class _TimedRay:
    """Stands in for the ``ray`` module inside one RayExecutor: times wait and get."""

    def __init__(self, ray: Any, profile: Profile) -> None:
        self._ray = ray

        def wait_kind(*args: Any, **kwargs: Any) -> str:
            timeout = kwargs.get("timeout", args[3] if len(args) > 3 else None)
            return "dispatch_wait" if timeout == 0 else IDLE

        self.wait = profile.timed(wait_kind, ray.wait)
        self.get = profile.timed("result_fetch", ray.get)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ray, name)


def _instrument(profile: Profile) -> None:
    """Wrap the driver's methods (class attributes, restored after the run)."""
    import hpsearch.search as search_module
    from hpsearch.cluster import RayExecutor
    from hpsearch.search import NarrowingSearch
    from hpsearch.storage import StudyStore

    profile.patch(search_module, "sample_params", "sampling")
    profile.patch(StudyStore, "open", "startup_storage")
    for name, value in list(vars(StudyStore).items()):
        if (
            name.startswith("_")
            or not callable(value)
            or isinstance(value, classmethod | staticmethod)
        ):
            continue
        category = {
            "create_running_trials": "storage_create",
            "finish_trials": "storage_finish",
        }.get(name, "storage_other")
        profile.patch(StudyStore, name, category)
    profile.patch(NarrowingSearch, "_tasks", "dispatch_tasks")
    profile.patch(NarrowingSearch, "_dispatch", "dispatch_tasks")
    profile.patch(NarrowingSearch, "_run_round", "result_loop")
    for name in ("run", "_close", "_beat", "mark_stale", "_preload_pruner", "_best"):
        profile.patch(NarrowingSearch, name, "round")

    def time_ray_calls(executor: Any) -> None:
        # After ready() (whose ray.get is start-up): time this executor's
        # ray.wait / ray.get by standing in for its ``ray`` module.
        if hasattr(executor, "_ray"):
            executor._ray = _TimedRay(executor._ray, profile)
        else:
            profile.missing.append("RayExecutor._ray")

    profile.patch(RayExecutor, "__init__", "startup_workers")
    profile.patch(RayExecutor, "ready", "startup_workers", after=time_ray_calls)
    profile.patch(RayExecutor, "close", "startup_close")
    profile.patch(RayExecutor, "submit", "dispatch_submit")
    profile.patch(RayExecutor, "submit_pack", "dispatch_submit")
    profile.patch(RayExecutor, "submit_chain", "dispatch_submit")
    profile.patch(RayExecutor, "wait", "dispatch_wait")


def hpsearch_config(w: Workload, trials: int, tag: str) -> Any:
    from hpsearch.config import parse_study

    return parse_study(
        STUDY.format(
            name=tag,
            seed=SEED,
            metric=METRIC,
            dataset=w.dataset,
            train_samples="" if w.train_samples is None else f"train_samples = {w.train_samples}",
            val_fraction=w.val_fraction,
            hidden_sizes=list(w.hidden_sizes),
            epochs=w.epochs,
            batch_size=w.batch_size,
            lr_low=LR[0],
            lr_high=LR[1],
            wd_low=WEIGHT_DECAY[0],
            wd_high=WEIGHT_DECAY[1],
            do_low=DROPOUT[0],
            do_high=DROPOUT[1],
            trials=trials,
            top_k=min(5, trials),
            workers=WORKERS,
        )
    )


def auto_pack_size(w: Workload, data: Any) -> int:
    """The pack size hpsearch picks by itself for this workload (1: no packing)."""
    from hpsearch.cluster import effective_pack_size

    return effective_pack_size(hpsearch_config(w, 1, "probe"), data.n_features, data.n_classes)


def run_hpsearch(
    w: Workload, data: Any, trials: int, directory: Path, tag: str, *, pack_size: int
) -> Run:
    """hpsearch through its driver (``hpsearch.runner.run_study``: StudyStore.open,
    RayExecutor, ready, NarrowingSearch.run, close) in this process's Ray session."""
    import optuna

    from hpsearch.runner import run_study

    config = hpsearch_config(w, trials, tag)
    url = f"sqlite:///{directory / f'{tag}.db'}"
    profile = Profile()
    _instrument(profile)
    try:
        with measured() as m:
            run_study(
                config, url, data=data, workers=WORKERS, pack_size=pack_size, wait_for_workers=True
            )
    finally:
        profile.restore()
    if profile.missing:
        print(f"note: not instrumented (renamed?): {', '.join(profile.missing)}", file=sys.stderr)
    done = optuna.load_study(study_name=tag, storage=url).get_trials()
    finished = [t for t in done if t.state.is_finished()]
    if len(finished) != trials:
        raise RuntimeError(f"hpsearch: expected {trials} finished trials, found {len(finished)}")
    failed = [t for t in finished if t.state.name == "FAIL"]
    broken = [t for t in failed if not t.user_attrs.get("diverged", False)]
    if broken:  # an error or a lost worker, not a diverging run: the figures would lie
        reason = broken[0].user_attrs.get("fail_reason", "?")
        raise RuntimeError(f"hpsearch {tag}: {len(broken)} trial(s) failed, e.g. {reason}")
    if failed:
        print(f"note: hpsearch {tag}: {len(failed)} trial(s) diverged (FAIL)", file=sys.stderr)
    categories = [key for key, _ in PROFILE_ORDER + STARTUP_PARTS] + [IDLE]
    return Run(
        way="hpsearch" if pack_size == 1 else "hpsearch_packed",
        wall=m["wall"],
        trials=trials,
        train_seconds=[float(t.user_attrs.get("train_seconds", 0.0)) for t in finished],
        load=m["load"],
        driver_cpu=m["driver_cpu"],
        profile={k: (profile.wall.get(k, 0.0), profile.cpu.get(k, 0.0)) for k in categories},
    )


# -- way 2: Ray Tune + OptunaSearch ----------------------------------------------------------


def _tune_objective(config: dict[str, Any], data: Any = None, model: Any = None) -> dict:
    """The Tune function trainable: the same training, one final result."""
    params = dict(config)
    value, seconds = train_once(params, _seed_from_params(params), model, data)
    return {METRIC: value, "train_seconds": seconds}


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _train_seconds_callback() -> Any:
    from ray import tune

    class TrainSeconds(tune.Callback):
        """Keeps each trial's trainer time (with the logger callbacks off, the
        ResultGrid has no per-trial metrics to read back)."""

        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            if "train_seconds" in result:
                self.seconds.append(float(result["train_seconds"]))

    return TrainSeconds()


@contextlib.contextmanager
def _quiet_result_fetch(quiet: bool) -> Iterator[None]:
    """With the logger callbacks off, Tune warns at the end that it cannot read
    per-trial metric files; that is expected here."""
    import logging

    log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = log.level
    if quiet:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def run_tune(
    w: Workload, data: Any, trials: int, directory: Path, tag: str, *, queue: int | None
) -> Run:
    """Ray Tune + OptunaSearch: fastest settings with ``queue`` concurrent trials
    (``max_concurrent_trials``), or Tune's defaults when ``queue`` is None."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    fast = queue is not None
    path = directory / f"{tag}.db"
    with _environ(TUNE_FAST_ENV if fast else {}), measured() as m:
        searcher = OptunaSearch(
            space=optuna_space(),
            metric=METRIC,
            mode="max",
            sampler=optuna.samplers.RandomSampler(seed=SEED),
            study_name=tag,
            storage=sqlite_storage(path),
        )
        trainable = tune.with_parameters(_tune_objective, data=data, model=w.model_options())
        collector = _train_seconds_callback()
        if fast:
            trainable = tune.with_resources(trainable, {"cpu": 1})
            tune_config = tune.TuneConfig(
                num_samples=trials,
                search_alg=searcher,
                reuse_actors=True,
                max_concurrent_trials=queue,
            )
            run_config = tune.RunConfig(
                name=tag,
                storage_path=str(directory / "tune"),
                verbose=0,
                log_to_file=False,
                checkpoint_config=tune.CheckpointConfig(
                    checkpoint_frequency=0, checkpoint_at_end=False
                ),
                sync_config=tune.SyncConfig(sync_artifacts=False),
                callbacks=[collector],
            )
        else:
            tune_config = tune.TuneConfig(num_samples=trials, search_alg=searcher)
            run_config = tune.RunConfig(name=tag, storage_path=str(directory / "tune"), verbose=0)
        tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
        # Tune prints its experiment banner even with verbose=0: keep stdout for our table.
        with contextlib.redirect_stdout(sys.stderr), _quiet_result_fetch(fast):
            results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"Ray Tune: {len(results.errors)} trial(s) errored: {results.errors[0]}")
    finished = _count_finished(path, tag)
    if finished != trials:
        raise RuntimeError(f"Ray Tune: expected {trials} finished trials, found {finished}")
    if fast:
        seconds = collector.seconds
    else:
        seconds = [float(r.metrics.get("train_seconds", 0.0)) for r in results]
    return Run(
        way=f"tune_q{queue}" if fast else "tune_default",
        wall=m["wall"],
        trials=trials,
        train_seconds=seconds,
        load=m["load"],
        driver_cpu=m["driver_cpu"],
    )


# -- way 3: a sequential Optuna loop ------------------------------------------------------


def run_sequential(w: Workload, data: Any, trials: int, directory: Path, tag: str) -> Run:
    import optuna

    from hpsearch.worker import trial_seed

    model = w.model_options()
    train_seconds: list[float] = []
    path = directory / f"{tag}.db"

    def objective(trial: optuna.Trial) -> float:
        value, seconds = train_once(suggest(trial), trial_seed(SEED, trial.number), model, data)
        train_seconds.append(seconds)
        return value

    with measured() as m:
        study = optuna.create_study(
            study_name=tag,
            storage=sqlite_storage(path),
            sampler=optuna.samplers.RandomSampler(seed=SEED),
            direction="maximize",
        )
        study.optimize(objective, n_trials=trials)
    finished = _count_finished(path, tag)
    if finished != trials:
        raise RuntimeError(f"sequential: expected {trials} finished trials, found {finished}")
    return Run(
        way="sequential",
        wall=m["wall"],
        trials=trials,
        train_seconds=train_seconds,
        load=m["load"],
        driver_cpu=m["driver_cpu"],
    )


# -- report --------------------------------------------------------------------------------

WAY_TITLES = {
    "hpsearch": f"hpsearch, {WORKERS} workers, unpacked",
    "hpsearch_packed": f"hpsearch, {WORKERS} workers, auto packing",
    "tune_q2": "Ray Tune fastest, max_concurrent 2",
    "tune_q4": "Ray Tune fastest, max_concurrent 4",
    "tune_default": "Ray Tune defaults (1 run)",
    "sequential": "sequential Optuna loop",
}
TUNE_FAST_WAYS = ("tune_q2", "tune_q4")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ms(seconds: float, trials: int) -> float:
    return seconds / trials * 1e3


def _outside_loop(run: Run) -> float:
    return sum(run.profile[key][0] for key, _ in STARTUP_PARTS)


def _ratios(rates: dict[str, float], hp_way: str, best: str) -> None:
    hp = rates[hp_way]
    for way, label, goal in (
        ("tune_best", f"Ray Tune best ({WAY_TITLES[best].split(', ')[-1]})", 5.0),
        ("sequential", "sequential loop", 1.5),
        ("tune_default", "Ray Tune defaults", None),
    ):
        if way not in rates:
            continue
        ratio = hp / rates[way]
        verdict = ""
        if goal is not None:
            verdict = f"   goal >= {goal:g}x: {'met' if ratio >= goal else 'NOT MET'}"
        print(f"  {WAY_TITLES[hp_way]:<33} / {label:<36} {ratio:7.2f}x{verdict}")


def _profile(hp_runs: list[Run], trials: int, title: str, train_ms: float) -> None:
    print(
        f"{title} -- driver time per trial by part (median of {len(hp_runs)} runs; wall = "
        "perf_counter, CPU = the driver thread's thread_time; each part exclusive of the "
        "parts nested in it):"
    )
    print(f"  {'part':<54} {'wall ms':>8} {'CPU ms':>8} {'share':>6}")
    busy = _median([_ms(sum(r.profile[k][0] for k, _ in PROFILE_ORDER), trials) for r in hp_runs])
    busy_cpu = _median(
        [_ms(sum(r.profile[k][1] for k, _ in PROFILE_ORDER), trials) for r in hp_runs]
    )
    for key, label in PROFILE_ORDER:
        wall_ms = _median([_ms(r.profile[key][0], trials) for r in hp_runs])
        cpu_ms = _median([_ms(r.profile[key][1], trials) for r in hp_runs])
        share = wall_ms / busy if busy else float("nan")
        print(f"  {label:<54} {wall_ms:>8.3f} {cpu_ms:>8.3f} {share:>6.0%}")
    print(f"  {'= driver busy in the search loop':<54} {busy:>8.3f} {busy_cpu:>8.3f}")
    for key, label in (*STARTUP_PARTS, (IDLE, "idle: blocked in ray.wait (workers training)")):
        wall_ms = _median([_ms(r.profile[key][0], trials) for r in hp_runs])
        cpu_ms = _median([_ms(r.profile[key][1], trials) for r in hp_runs])
        print(f"  {label:<54} {wall_ms:>8.3f} {cpu_ms:>8.3f}")
    rest = _median(
        [_ms(r.wall - sum(wall for wall, _ in r.profile.values()), trials) for r in hp_runs]
    )
    print(f"  {'not covered (run_study glue, pack-size probe)':<54} {rest:>8.3f}")
    wall_ms = _median([_ms(r.wall, trials) for r in hp_runs])
    loop_ms = _median([_ms(r.wall - _outside_loop(r), trials) for r in hp_runs])
    effective = _median([_ms(r.wall - sum(r.train_seconds) / WORKERS, trials) for r in hp_runs])
    busy_workers = _median(
        [sum(r.train_seconds) / (WORKERS * (r.wall - _outside_loop(r))) for r in hp_runs]
    )
    print(
        f"  wall per trial {wall_ms:.2f} ms, of which the search loop {loop_ms:.2f} ms "
        f"(ideal {train_ms / WORKERS:.2f} ms = trainer time {train_ms:.2f} ms / {WORKERS} "
        "workers);"
    )
    print(
        f"  effective overhead per trial (wall - trainer time / {WORKERS}) / trials = "
        f"{effective:.2f} ms; workers busy training {busy_workers:.0%} of the search loop"
    )


def report(w: Workload, runs: dict[str, list[Run]], pack: int, *, trials: int) -> dict[str, float]:
    """Print one workload's tables; returns the median trials/min of each way."""
    print()
    print(f"== workload {w.key}: {w.title}; {trials} trials per run ==")

    def train_ms(*ways: str) -> float:
        return _median([s for k in ways for r in runs.get(k, []) for s in r.train_seconds]) * 1e3

    seq_train = train_ms("sequential")
    print(
        f"trainer time per trial (median): {seq_train:.1f} ms in the sequential loop, "
        f"{train_ms('hpsearch'):.1f} ms on hpsearch's workers, "
        f"{train_ms(*TUNE_FAST_WAYS):.1f} ms in Tune's trials; ideal for {WORKERS} workers "
        f"with zero overhead: {WORKERS * 60e3 / seq_train:,.0f} trials/min"
    )
    if pack > 1:
        print(
            f"hpsearch's auto packing picks pack_size {pack} here: trials trained {pack} at a "
            "time as one stacked computation (trainer.packed), not trainer.train.train; the "
            "unpacked row is the like-for-like comparison"
        )
    else:
        print("hpsearch's auto packing picks pack_size 1 here (no packing): one hpsearch row")
    print(
        f"  {'way':<38} {'runs':>4} {'trials/min':>10} {'min..max':>15} {'wall s':>7} "
        f"{'driver CPU ms/trial':>19} {'load avg':>8} {'CPUs freed s':>12}"
    )
    rates: dict[str, float] = {}
    for way, title in WAY_TITLES.items():
        rs = runs.get(way) or []
        if not rs:
            continue
        per_min = [r.per_minute for r in rs]
        rates[way] = _median(per_min)
        driver = _median([_ms(r.driver_cpu, r.trials) for r in rs if r.driver_cpu is not None])
        load = _median([r.load for r in rs if r.load is not None])
        settle = max(r.settle for r in rs)
        print(
            f"  {title:<38} {len(rs):>4} {rates[way]:>10,.0f} "
            f"{f'{min(per_min):,.0f}..{max(per_min):,.0f}':>15} "
            f"{_median([r.wall for r in rs]):>7.2f} {driver:>19.1f} {load:>8.1f} {settle:>12.1f}"
        )
    tune_ways = [k for k in TUNE_FAST_WAYS if k in rates]
    best = max(tune_ways, key=rates.__getitem__)
    rates["tune_best"] = rates[best]
    print("ratios (medians of trials/min):")
    hp_ways = [k for k in ("hpsearch", "hpsearch_packed") if k in rates]
    for hp_way in hp_ways:
        _ratios(rates, hp_way, best)
    fastest = {way: max(r.per_minute for r in rs) for way, rs in runs.items() if rs}
    tune_fastest = max(fastest[k] for k in tune_ways)
    print(
        "  (fastest run of each way instead of the median, less sensitive to other jobs on the "
        f"machine: unpacked / Ray Tune best {fastest['hpsearch'] / tune_fastest:.2f}x, "
        f"unpacked / sequential {fastest['hpsearch'] / fastest['sequential']:.2f}x)"
    )
    for hp_way in hp_ways:
        _profile(runs[hp_way], trials, WAY_TITLES[hp_way], train_ms(hp_way))
    return rates


SETTLE_S = 2.0
"""Untimed pause after each run, once the CPUs are free: Ray replaces the worker
processes of killed actors (Tune's trials) with new idle ones, which take about
a second to start on 2 CPUs; every way then starts in a settled session."""


def _free_cpus(timeout: float = 900.0, settle: float = SETTLE_S) -> float:
    """Wait (untimed) until the Ray session's CPUs are all free again, e.g. after
    Tune or hpsearch stopped their actors, then :data:`SETTLE_S`; returns the
    seconds waited for the CPUs."""
    import ray

    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if ray.available_resources().get("CPU", 0.0) >= WORKERS:
            break
        time.sleep(0.1)
    waited = time.perf_counter() - start
    time.sleep(settle)
    return waited


def run_workload(
    w: Workload,
    trials: int,
    repeats: int,
    directory: Path,
    *,
    tune_defaults: bool,
    tune_queues: tuple[int, ...] = (2, 4),
    settle: float = SETTLE_S,
) -> tuple[dict[str, list[Run]], int]:
    """Every way ``repeats`` times, interleaved; and the auto pack size."""
    from trainer.datasets import load_dataset

    data = load_dataset(
        w.dataset, train_samples=w.train_samples, val_fraction=w.val_fraction, seed=SEED
    )
    pack = auto_pack_size(w, data)
    runs: dict[str, list[Run]] = defaultdict(list)

    def tune_way(queue: int) -> tuple[str, Callable[[str], Run]]:
        return f"tune_q{queue}", lambda tag: run_tune(w, data, trials, directory, tag, queue=queue)

    ways: list[tuple[str, Callable[[str], Run]]] = [
        ("hpsearch", lambda tag: run_hpsearch(w, data, trials, directory, tag, pack_size=1)),
        tune_way(tune_queues[0]),
        ("sequential", lambda tag: run_sequential(w, data, trials, directory, tag)),
        *(tune_way(q) for q in tune_queues[1:]),
    ]
    if pack > 1:
        ways.insert(
            2,
            (
                "hpsearch_packed",
                lambda tag: run_hpsearch(w, data, trials, directory, tag, pack_size=pack),
            ),
        )
    plan = []
    for repeat in range(repeats):
        shift = repeat % len(ways)  # rotate the order so no way always goes first
        plan += [(repeat, way, run) for way, run in ways[shift:] + ways[:shift]]
    if tune_defaults:  # once, in the middle of the repeats
        middle = len(plan) // 2
        plan.insert(
            middle,
            (-1, "tune_default", lambda tag: run_tune(w, data, trials, directory, tag, queue=None)),
        )
    for repeat, way, run in plan:
        tag = f"{w.key}-{way}-r{repeat}" if repeat >= 0 else f"{w.key}-{way}"
        result = run(tag)
        result.settle = _free_cpus(settle=settle)
        runs[way].append(result)
        where = f"repeat {repeat + 1}/{repeats}" if repeat >= 0 else "once"
        print(
            f"  [{w.key} {where}] {WAY_TITLES[way]}: {result.per_minute:,.0f} trials/min "
            f"({result.wall:.2f} s, load {result.load or 0:.1f}, CPUs freed after "
            f"{result.settle:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    return runs, pack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="trials per run (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (>= 3)")
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=sorted(WORKLOADS),
        default=None,
        help="which workloads to run (default both; digits only with --smoke)",
    )
    parser.add_argument(
        "--no-tune-defaults",
        action="store_true",
        help="skip the single Ray Tune run with its default settings per workload",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    args = parser.parse_args(argv)
    workloads = WORKLOADS
    tune_queues: tuple[int, ...] = (2, 4)
    if args.smoke:  # every code path once, tiny: one workload, one Tune setting
        args.trials, args.repeats, args.no_tune_defaults = 6, 1, True
        workloads, tune_queues = SMOKE_WORKLOADS, (2,)
        args.workloads = args.workloads or ["digits"]
    args.workloads = args.workloads or ["mnist", "digits"]

    import logging

    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"short trials: hpsearch vs Ray Tune vs a sequential Optuna loop; "
        f"{args.trials} trials per run, {args.repeats} interleaved repeats; "
        f"{os.cpu_count()} CPUs seen, Ray started with num_cpus={WORKERS}"
    )
    import hpsearch

    print(
        f"versions: ray {ray.__version__}, optuna {optuna.__version__}, "
        f"numpy {__import__('numpy').__version__}, python {sys.version.split()[0]}; "
        f"hpsearch from {Path(hpsearch.__file__).parent.parent}"
    )
    print(
        "space: lr 10^U(-6,-2), weight_decay 10^U(-8,-4), dropout_ratio U(0,0.5), "
        "batchnorm {true,false}; RandomSampler(seed=0) in every way; storage: an SQLite file "
        "per run (WAL, synchronous=NORMAL) in a temporary directory; metric: final-epoch "
        "val_accuracy"
    )
    print(
        "hpsearch: the real driver (parse_study, hpsearch.runner.run_study: StudyStore.open, "
        f"RayExecutor, ready, NarrowingSearch.run), one round of {args.trials} trials, "
        f"{WORKERS} workers; unpacked (pack_size=1: trainer.train.train per trial, as the "
        "other ways) and, where hpsearch's auto packing packs, also with its auto pack size"
    )
    print(f"Ray Tune fastest: {TUNE_FAST_SETTINGS}")
    if not args.no_tune_defaults:
        print(f"Ray Tune defaults (one run per workload): {TUNE_DEFAULT_SETTINGS}")
    print("sequential: optuna.create_study(...).optimize(objective, n_trials) in this process")
    print("trials/min: from opening the storage to the last trial recorded (start-up included)")
    sys.stdout.flush()

    started = not ray.is_initialized()
    if started:
        ray.init(
            address="local",
            num_cpus=WORKERS,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    all_runs: dict[str, tuple[dict[str, list[Run]], int]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="short_trials-") as tmp:
            for key in args.workloads:
                all_runs[key] = run_workload(
                    workloads[key],
                    args.trials,
                    args.repeats,
                    Path(tmp),
                    tune_defaults=not args.no_tune_defaults,
                    tune_queues=tune_queues,
                    settle=0.0 if args.smoke else SETTLE_S,
                )
    finally:
        if started:
            ray.shutdown()
    summary = {
        key: report(workloads[key], *all_runs[key], trials=args.trials) for key in args.workloads
    }
    print()
    print("summary (medians of trials/min; goals: >= 5x Ray Tune's best, >= 1.5x sequential):")
    for key, rates in summary.items():
        for hp_way in ("hpsearch", "hpsearch_packed"):
            if hp_way not in rates:
                continue
            hp = rates[hp_way]
            to_tune, to_seq = hp / rates["tune_best"], hp / rates["sequential"]
            print(
                f"  {key:<7} {WAY_TITLES[hp_way]:<33} {hp:>7,.0f}/min; / Ray Tune best "
                f"{to_tune:5.2f}x ({'met' if to_tune >= 5.0 else 'NOT MET'}); / sequential "
                f"{to_seq:5.2f}x ({'met' if to_seq >= 1.5 else 'NOT MET'})"
            )
    print("Figures are printed, never asserted. Load avg: the machine's 1-minute load at the")
    print("end of each run (2 CPUs; other users' jobs count too). CPUs freed s: the longest")
    print("untimed wait after a run until its actors had released the session's CPUs.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
