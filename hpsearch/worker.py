"""What a worker does with one trial: train it and describe the outcome.

Pure Python (no Ray, no database): :mod:`hpsearch.cluster` runs
:func:`run_trial` inside Ray actors, tests call it directly. A worker gets a
:class:`TrialTask` and the dataset and gives back a :class:`TrialOutcome`;
nothing it does touches the results database.
"""

from __future__ import annotations

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
    """

    number: int
    trial_id: int
    round: int
    params: dict[str, Any]
    seed: int
    config: TrainConfig
    metric: str
    final: bool = False
    attempt: int = 0


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
        backend=task.config.backend,
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
