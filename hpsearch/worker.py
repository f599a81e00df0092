"""What a worker does with one trial: train it and describe the outcome.

No database, and no Ray outside :func:`run_call` (the Ray task that
:mod:`hpsearch.cluster` submits): tests call :func:`run_trial` directly. A worker gets a
:class:`TrialTask` and the dataset and gives back a :class:`TrialOutcome`;
nothing it does touches the results database.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainer.config import TrainConfig
from trainer.datasets import Dataset
from trainer.history import EpochRecord, History
from trainer.train import train

METRICS = ("val_accuracy", "best_val_accuracy", "val_loss")


def trial_seed(study_seed: int, trial_number: int) -> int:
    """The recorded seed of trial ``trial_number``: derived, never drawn globally."""
    state = np.random.SeedSequence([study_seed, trial_number]).generate_state(1, dtype=np.uint32)
    return int(state[0])


def final_eval_seed(study_seed: int, index: int) -> int:
    """Seed of the ``index``-th final-evaluation run (a stream apart from trials)."""
    state = np.random.SeedSequence([study_seed, 1, index]).generate_state(1, dtype=np.uint32)
    return int(state[0])


def metric_value(history: History, metric: str) -> float:
    """The study metric of a finished run (NaN when no epoch completed)."""
    if not history.records:
        return math.nan
    if metric == "val_accuracy":
        return history.records[-1].val_accuracy
    if metric == "best_val_accuracy":
        return history.best_val_accuracy
    if metric == "val_loss":
        return history.records[-1].val_loss
    raise ValueError(f"metric: got {metric!r}; allowed: {', '.join(METRICS)}")


@dataclass(frozen=True)
class TrialTask:
    """One trial as sent to a worker.

    ``final`` marks a final-evaluation run: train on train+validation and
    evaluate on the test split. Tuning trials never read the test split.
    ``user`` is the user's objective (:class:`hpsearch.objective.UserCode`);
    None for the built-in MLP, whose trials carry their ``config``.
    """

    number: int
    trial_id: int
    round: int
    params: dict[str, Any]
    seed: int
    config: TrainConfig | None
    metric: str
    final: bool = False
    attempt: int = 0
    user: Any = None


@dataclass(frozen=True)
class TrialOutcome:
    """What came back from a worker for one trial.

    Attributes:
        state: ``COMPLETE``, ``PRUNED`` or ``FAIL``.
        value: The metric (None unless COMPLETE, or PRUNED with a last value).
        history: The run's :class:`History` as a dict (partial when stopped).
        fail_reason: Why the trial failed (``diverged: ...``, an exception).
        node: Where it ran (Ray node id when known, else the host name).
        train_seconds: The trainer's own wall time.
    """

    number: int
    trial_id: int
    round: int
    seed: int
    params: dict[str, Any]
    state: str
    value: float | None
    history: dict[str, Any] = field(default_factory=dict)
    diverged: bool = False
    fail_reason: str | None = None
    node: str = ""
    backend: str = ""
    train_seconds: float = 0.0
    retries: int = 0


def epoch_metric(record: EpochRecord, metric: str) -> float:
    """The per-epoch value a pruner watches (and the intermediate value recorded)."""
    return record.val_loss if metric == "val_loss" else record.val_accuracy


StopCheck = Callable[[int, int, float], bool]
"""``should_stop(trial_number, epoch, value) -> bool`` asked after every epoch."""


def device_for(config: TrainConfig, gpu_ids: list[Any]) -> TrainConfig:
    """Train torch trials on the GPU Ray assigned (it is ``cuda:0`` in the worker,
    whose CUDA_VISIBLE_DEVICES Ray restricts); CPU when none was assigned."""
    if config.backend != "torch" or config.device != "cpu" or not gpu_ids:
        return config
    return config.replace(device="cuda:0")


def _common(task: TrialTask, node: str) -> dict[str, Any]:
    return dict(
        number=task.number,
        trial_id=task.trial_id,
        round=task.round,
        seed=task.seed,
        params=task.params,
        node=node,
        backend=task.config.backend if task.config is not None else "",
        retries=task.attempt,
    )


def _error_outcome(task: TrialTask, node: str, exc: Exception, seconds: float) -> TrialOutcome:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return TrialOutcome(
        **_common(task, node),
        state="FAIL",
        value=None,
        fail_reason=f"error: {last}",
        train_seconds=seconds,
    )


def outcome_of(
    task: TrialTask, history: History, node: str, *, seconds: float | None = None
) -> TrialOutcome:
    """The outcome a finished run's History means for ``task``.

    Diverged: FAIL marked ``diverged``; stopped by the pruner: PRUNED with the
    last epoch's metric; otherwise COMPLETE with the study metric (FAIL if it
    is not finite). ``seconds`` overrides the trainer time recorded (a packed
    trial records its share of the pack's time).
    """
    common = _common(task, node)
    seconds = history.seconds if seconds is None else seconds
    if history.diverged:
        return TrialOutcome(
            **common,
            state="FAIL",
            value=None,
            history=history.to_dict(),
            diverged=True,
            fail_reason=(
                f"diverged: loss became NaN or infinite in epoch {history.diverged_at_epoch}"
            ),
            train_seconds=seconds,
        )
    if history.stopped and history.records:
        return TrialOutcome(
            **common,
            state="PRUNED",
            value=float(epoch_metric(history.records[-1], task.metric)),
            history=history.to_dict(),
            train_seconds=seconds,
        )
    value = history.test_accuracy if task.final else metric_value(history, task.metric)
    if not math.isfinite(value):
        return TrialOutcome(
            **common,
            state="FAIL",
            value=None,
            history=history.to_dict(),
            fail_reason=f"metric {task.metric} is {value}",
            train_seconds=seconds,
        )
    return TrialOutcome(
        **common,
        state="COMPLETE",
        value=float(value),
        history=history.to_dict(),
        train_seconds=seconds,
    )


def _callback(task: TrialTask, should_stop: StopCheck | None) -> Any:
    if should_stop is None:
        return None
    return lambda r: should_stop(task.number, r.epoch, epoch_metric(r, task.metric))


def run_trial(
    task: TrialTask,
    data: Dataset,
    *,
    node: str | None = None,
    should_stop: StopCheck | None = None,
) -> TrialOutcome:
    """Train ``task`` on ``data`` and return its outcome; never raises.

    With ``should_stop`` (a pruner), a trial it stops is PRUNED with its
    partial curve and the last epoch's metric as its value.
    """
    node = node or socket.gethostname()
    start = time.perf_counter()
    try:
        if task.final:
            history = train(task.config, data.with_validation_merged(), evaluate_test=True)
        else:
            history = train(task.config, data, callback=_callback(task, should_stop))
    except Exception as exc:  # a worker never raises: the trial is recorded as FAIL
        return _error_outcome(task, node, exc, time.perf_counter() - start)
    return outcome_of(task, history, node)


def run_pack(
    tasks: list[TrialTask],
    data: Dataset,
    *,
    node: str | None = None,
    should_stop: StopCheck | None = None,
) -> list[TrialOutcome]:
    """Train compatible tuning trials as one stacked computation (trial packing).

    Each trial's History is the one it would have alone with its seed
    (:func:`trainer.packed.train_packed`); each records ``1/K`` of the pack's
    wall time as its own. Never raises: if the pack fails as a whole, every
    trial is recorded FAIL with the reason.
    """
    from trainer.packed import train_packed

    node = node or socket.gethostname()
    if len(tasks) == 1:
        return [run_trial(tasks[0], data, node=node, should_stop=should_stop)]
    start = time.perf_counter()
    try:
        histories = train_packed(
            [t.config for t in tasks],
            data,
            callbacks=[_callback(t, should_stop) for t in tasks],
        )
    except Exception as exc:
        seconds = (time.perf_counter() - start) / len(tasks)
        return [_error_outcome(t, node, exc, seconds) for t in tasks]
    share = (time.perf_counter() - start) / len(tasks)
    return [outcome_of(t, h, node, seconds=share) for t, h in zip(tasks, histories, strict=True)]


# Limit BLAS/OpenMP threads in workers: one trial per CPU, no oversubscription.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# Per worker process: the thread count applied last, and whether torch is set up.
_process: dict[str, Any] = {"threads": None, "torch": None, "limits": None}


def _prepare_process(threads: int, torch_needed: bool) -> None:
    """Apply the thread limit once per worker process (again only if it changes)."""
    import os

    if _process["threads"] != threads:
        for var in _THREAD_VARS:
            os.environ[var] = str(threads)
        try:
            from threadpoolctl import threadpool_limits

            _process["limits"] = threadpool_limits(threads)
        except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
            pass
        _process["threads"] = threads
    if torch_needed and _process["torch"] != threads:
        import torch

        torch.set_num_threads(threads)
        _process["torch"] = threads


def run_call(
    data: Dataset,
    tasks: list[TrialTask],
    stacked: bool = True,
    threads: int = 1,
    oracle: Any = None,
    code: tuple[str, Any] | None = None,
) -> list[TrialOutcome]:
    """The Ray task :class:`hpsearch.cluster.RayExecutor` submits: one trial, a
    pack of compatible tuning trials trained as one stacked computation, or
    (``stacked`` false) a chain of trials trained one after another.

    Ray runs it in one of its worker processes, already started and reused from
    call to call; the dataset comes zero-copy from the node's object store. It
    lives here, not in :mod:`hpsearch.cluster`, so a worker process imports only
    the trainer and this module (not Optuna or the driver); PyTorch is
    imported, and its thread count set, only when a torch trial arrives.
    ``oracle`` is the pruning actor, or None without pruning. ``code`` is a
    user's study folder, ``(digest, object ref of its zip archive)``
    (:func:`hpsearch.objective.pack_folder`), unpacked once per node.
    """
    import ray

    user = tasks[0].user
    _prepare_process(threads, user is None and tasks[0].config.backend == "torch")
    node = ray.get_runtime_context().get_node_id()
    if user is not None:  # a user's objective: one trial after another
        return _run_user_call(tasks, user, node, oracle, code)
    gpu_ids = ray.get_gpu_ids()
    tasks = [
        dataclasses.replace(t, config=c)
        if (c := device_for(t.config, gpu_ids)) is not t.config
        else t
        for t in tasks
    ]
    stop: StopCheck | None = None
    if oracle is not None and not tasks[0].final:

        def stop(number: int, epoch: int, value: float) -> bool:
            return bool(ray.get(oracle.report.remote(number, epoch, value)))

    if len(tasks) == 1 or not stacked:
        outcomes = [run_trial(t, data, node=node, should_stop=stop) for t in tasks]
    else:
        outcomes = run_pack(tasks, data, node=node, should_stop=stop)
    if stop is not None:  # in order after this call's reports (same caller)
        for outcome in outcomes:
            oracle.finish.remote(outcome.number, outcome.state, outcome.value)
    return outcomes


def _run_user_call(
    tasks: list[TrialTask], user: Any, node: str, oracle: Any, code: tuple[str, Any] | None
) -> list[TrialOutcome]:
    """Trials of a user's objective (:mod:`hpsearch.objective`), reporting to
    ``oracle``, run from this node's copy of the study folder (``code``)."""
    import os

    import ray

    from hpsearch.objective import run_user_trial, unpack_folder

    if code is not None:
        digest, ref = code
        folder = unpack_folder(digest, lambda: ray.get(ref))
        user = dataclasses.replace(user, folder=folder)
        if os.getcwd() != folder:  # as Ray's working_dir: relative paths from the folder
            os.chdir(folder)

    report = None
    if oracle is not None:

        def report(number: int, step: int, value: float) -> bool:
            return bool(ray.get(oracle.report.remote(number, step, value)))

    outcomes = []
    for task in tasks:
        outcome = run_user_trial(task, user, node=node, reporter=report)
        if oracle is not None:
            oracle.finish.remote(outcome.number, outcome.state, outcome.value)
        outcomes.append(outcome)
    return outcomes


def warm_up(threads: int = 1) -> str:
    """A Ray task that readies a worker process (imports, thread limit); its node."""
    import ray

    _prepare_process(threads, False)
    return ray.get_runtime_context().get_node_id()
