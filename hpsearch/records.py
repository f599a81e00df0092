"""How a study is recorded in Optuna's RDB storage (the results database).

Everything lives in Optuna's own tables so ``optuna.load_study`` and
optuna-dashboard read it unchanged. Parameter names are the study file's
(``lr``, ``weight_decay``, ``dropout_ratio``, ``batchnorm``, ...).

Study user attributes:
    ``hpsearch:study_file``  the study file's TOML text, verbatim;
    ``hpsearch:overrides``   dict of the CLI overrides applied to it;
    ``hpsearch:metric``      metric name, e.g. ``val_accuracy``;
    ``hpsearch:round:NNNN``  JSON :class:`RoundRecord` of round NNNN (0-based);
    ``hpsearch:final_eval``  dict of the final evaluation (test accuracy
                             mean/std/per seed), when one ran;
    ``hpsearch:status``      ``{"state": "finished", "reason": ...}`` once
                             the last round ended;
    ``hpsearch:warm_start``  ``{"from", "box", "enqueued_from_trials"}`` for a
                             study started with ``--from``;
    ``hpsearch:driver:ID``   ``{"host", "pid", "heartbeat" (unix time),
                             "started"}`` of each driver that ran the study;
                             a RUNNING trial whose driver is gone is stale.

Trial user attributes (``TRIAL_*`` constants):
    ``seed`` int, ``round`` int, ``node`` str (Ray node id or host),
    ``backend`` str, ``diverged`` bool, ``train_seconds`` float (trainer's own
    wall time), ``epochs_completed`` int, ``stopped`` bool,
    ``fail_reason`` str (FAIL only; ``stale: ...`` for a trial left RUNNING
    by a driver that died, redone on resume and not counted in its round),
    ``curve`` dict of :class:`Curve`, ``driver`` str (the driver that
    created it), ``retries`` int (times it was re-run after losing its worker;
    absent when 0).
    With a user's objective (``backend`` is ``function`` or ``command``):
    ``curve`` is ``{"step": [...], name: [...]}``, one column per metric it
    reported (None where a point lacked it); ``epochs_completed`` counts the
    steps that reported the study metric; ``stdout_tail`` / ``stderr_tail``
    (a command's last lines, kept when it failed or gave no metric);
    ``returned`` (the numbers of a dict a function returned).
Trial intermediate values: the per-epoch metric (validation accuracy, or validation
loss for a ``val_loss`` study) after each epoch, step = epoch; pruners watch it.
A user's objective: the study metric at each reported step.
Trial value: the metric; state COMPLETE, PRUNED or FAIL.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

STUDY_FILE_KEY = "hpsearch:study_file"
OVERRIDES_KEY = "hpsearch:overrides"
METRIC_KEY = "hpsearch:metric"
ROUND_KEY_PREFIX = "hpsearch:round:"
FINAL_EVAL_KEY = "hpsearch:final_eval"
STATUS_KEY = "hpsearch:status"
DRIVER_KEY_PREFIX = "hpsearch:driver:"
WARM_START_KEY = "hpsearch:warm_start"
CLAIMED_KEY_PREFIX = "hpsearch:claimed:"
"""Per round: how many live (not stale) trials it has, kept by the driver's writes so a
claim costs O(1) however large the study (see hpsearch.storage.StudyStore)."""
STALE_PREFIX = "stale:"

TRIAL_SEED = "seed"
TRIAL_ROUND = "round"
TRIAL_NODE = "node"
TRIAL_BACKEND = "backend"
TRIAL_DIVERGED = "diverged"
TRIAL_TRAIN_SECONDS = "train_seconds"
TRIAL_EPOCHS = "epochs_completed"
TRIAL_STOPPED = "stopped"
TRIAL_FAIL_REASON = "fail_reason"
TRIAL_CURVE = "curve"
TRIAL_DRIVER = "driver"
TRIAL_RETRIES = "retries"
TRIAL_STDOUT_TAIL = "stdout_tail"
TRIAL_STDERR_TAIL = "stderr_tail"
TRIAL_RETURNED = "returned"

CURVE_FIELDS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")


def round_key(index: int) -> str:
    return f"{ROUND_KEY_PREFIX}{index:04d}"


def claimed_key(index: int) -> str:
    return f"{CLAIMED_KEY_PREFIX}{index:04d}"


def _nan_to_none(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


@dataclass(frozen=True)
class Curve:
    """Per-epoch metrics of one trial, column-wise; index i is epoch i+1."""

    train_loss: tuple[float, ...] = ()
    train_accuracy: tuple[float, ...] = ()
    val_loss: tuple[float, ...] = ()
    val_accuracy: tuple[float, ...] = ()
    seconds: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, list[float | None]]:
        """JSON-ready; NaN becomes None (JSON has no NaN)."""
        return {k: [_nan_to_none(v) for v in getattr(self, k)] for k in CURVE_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Curve:
        return cls(
            **{
                k: tuple(math.nan if v is None else float(v) for v in data.get(k, ()))
                for k in CURVE_FIELDS
            }
        )


@dataclass(frozen=True)
class RoundRecord:
    """One round of the narrowing loop.

    Attributes:
        index: 0-based round number.
        box: Per parameter, ``{"low", "high", "log"}`` for numbers or
            ``{"choices": [...]}`` for categoricals: where this round sampled.
        n_trials: Trials this round asked for.
        top_trials: Trial numbers of the top-k finished trials (best first).
        best: Best metric of the round (None when no trial finished).
        median: Median metric of the round's finished trials.
        started_at, ended_at: ISO-8601 UTC timestamps.
        moved_edges: Edges of this box that extended past the previous box
            (``["lr.high", ...]``); empty for a box that only shrank.
        decision: What the round rule decided after this round
            (:data:`hpsearch.round_rule.ACTIONS`: shrink, hold, grow, slide,
            restart); None while the round runs, and for rounds recorded
            before the rule recorded its decisions.
        reason: The rule's reason, one sentence with the evidence.
        evidence: The numbers behind it (floor, noise, threshold, informative
            trials, best values, the trials that spanned the next box).
        next_box: The box the rule chose after this round (the next round's
            box; for the last round, where a warm start from it begins).
    """

    index: int
    box: dict[str, dict[str, Any]]
    n_trials: int
    top_trials: list[int] = field(default_factory=list)
    best: float | None = None
    median: float | None = None
    started_at: str | None = None
    ended_at: str | None = None
    moved_edges: list[str] = field(default_factory=list)
    decision: str | None = None
    reason: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    next_box: dict[str, dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundRecord:
        return cls(**data)
