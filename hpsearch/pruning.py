"""Pruning across nodes: one oracle holds every trial's curve and decides.

Workers on any node report each epoch's validation metric to a
:class:`PruningOracle` (a Ray actor started by the driver, no CPU reserved)
and stop when it says so. The oracle applies the study's pruner (``median``,
``asha`` = successive halving, ``hyperband``) with the decisions of Optuna's
own pruner of that name (:func:`make_pruner`) as ``Trial.should_prune`` would
make them, but on incremental state: per rung (ASHA, Hyperband) or per epoch
(median) a sorted list of the values that compete there, so judging one
reported epoch costs O(log n) lookups instead of Optuna's scan over every
trial of the study (which made the driver's cost per trial grow with the
study, issue 15). It never touches the results database: the driver records
the outcome (PRUNED with the partial curve) as for any trial.
"""

from __future__ import annotations

import binascii
import bisect
import math
from collections.abc import Iterable

from optuna.pruners import (
    BasePruner,
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    SuccessiveHalvingPruner,
)

from hpsearch.errors import ConfigError

PRUNERS = ("none", "median", "asha", "hyperband")

GRACE_FRACTION = 4
"""The first rung is at ``max_epochs // GRACE_FRACTION`` epochs (see :func:`grace_epochs`)."""

REDUCTION_FACTOR = 3
"""ASHA's and Hyperband's reduction factor: a third of a rung's trials go on."""

MEDIAN_STARTUP_TRIALS = 5
"""The median pruner stops nothing until this many trials completed."""


def grace_epochs(max_epochs: int) -> int:
    """Epochs every trial trains before any pruner may stop it (ASHA's and
    Hyperband's first rung, the median pruner's warm-up): a quarter of a full
    trial, at least 1.

    The first epochs of SGD from a fresh init say little. In the chapter's
    search (mnist5k, 784-100x6-10, SGD, batch 100, 50 epochs) every lr of the
    first range 1e-6..1e-2 sits at chance accuracy for the first ~6 epochs; the
    trials that end best (lr ~ 5e-3 with batch norm) only pull away from chance
    after 9-12 epochs. With an eighth (6 epochs; rungs at 6 and 18) ASHA
    pruned on noise and the narrowing collapsed onto lr that never learn in 2 of
    5 study seeds (issue 8's search-quality run); with a quarter (12 epochs;
    rungs at 12 and 36), and pruned trials ranked in the narrowing
    (:mod:`hpsearch.ranking`), it found the good region in every seed.
    """
    return max(1, max_epochs // GRACE_FRACTION)


def make_pruner(name: str, *, max_epochs: int, grace: int | None = None) -> BasePruner:
    """The Optuna pruner called ``name`` in the study file, whose decisions
    :class:`PruningOracle` makes (tests hold the two to the same decisions).

    ``grace``: epochs before any trial may be pruned (the study's
    ``prune_after``); default :func:`grace_epochs`.
    """
    grace = grace if grace is not None else grace_epochs(max_epochs)
    if name == "none":
        return NopPruner()
    if name == "median":
        return MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=grace)
    if name == "asha":
        return SuccessiveHalvingPruner(min_resource=grace, reduction_factor=REDUCTION_FACTOR)
    if name == "hyperband":
        return HyperbandPruner(
            min_resource=grace, max_resource=max_epochs, reduction_factor=REDUCTION_FACTOR
        )
    raise ConfigError(f"study.pruner: got {name!r}; allowed: {', '.join(PRUNERS)}")


class _Running:
    """What the oracle keeps of a trial until it finishes."""

    __slots__ = ("bracket", "rung", "steps")

    def __init__(self, bracket: int) -> None:
        self.steps: dict[int, float] = {}
        self.rung = 0  # rungs this trial has recorded a value at
        self.bracket = bracket


class _Rungs:
    """Successive halving (Optuna's SuccessiveHalvingPruner, bootstrap 0) over
    one set of trials: the values recorded at each rung, kept sorted."""

    def __init__(self, min_resource: int, early_stopping_rate: int, maximize: bool) -> None:
        self.min_resource = min_resource
        self.rate = early_stopping_rate
        self.maximize = maximize
        self.values: list[list[float]] = []

    def judge(self, trial: _Running, value: float, step: int) -> bool:
        """True: stop the trial, whose value at its last ``step`` is ``value``."""
        while step >= self.min_resource * REDUCTION_FACTOR ** (self.rate + trial.rung):
            if len(self.values) <= trial.rung:
                self.values.append([])
            rung = self.values[trial.rung]
            # Optuna: every trial's value at this rung, this trial's included, sorted;
            # the trial goes on if it is within the best len // factor (at least one).
            others_better = (
                len(rung) - bisect.bisect_right(rung, value)
                if self.maximize
                else bisect.bisect_left(rung, value)
            )
            bisect.insort(rung, value)
            trial.rung += 1
            if others_better > max(0, len(rung) // REDUCTION_FACTOR - 1):
                return True
        return False


class _Median:
    """Optuna's MedianPruner (interval 1, at least one value at the step) over
    the completed trials' values at each epoch, kept sorted."""

    def __init__(self, warmup: int, maximize: bool) -> None:
        self.warmup = warmup
        self.maximize = maximize
        self.completed = 0
        self.at_step: dict[int, list[float]] = {}

    def judge(self, trial: _Running, step: int) -> bool:
        if self.completed < MEDIAN_STARTUP_TRIALS or step < self.warmup:
            return False
        values = self.at_step.get(step)
        if not values:
            return False
        best = max(trial.steps.values()) if self.maximize else min(trial.steps.values())
        n = len(values)
        if n % 2:
            median = values[n // 2]
        else:  # numpy.percentile's linear interpolation, to the bit
            low, high = values[n // 2 - 1], values[n // 2]
            median = high - (high - low) * 0.5
        return best < median if self.maximize else best > median

    def add_completed(self, steps: dict[int, float]) -> None:
        self.completed += 1
        for step, value in steps.items():
            bisect.insort(self.at_step.setdefault(step, []), value)


class PruningOracle:
    """Decides, per reported epoch, whether a trial should stop.

    Args:
        pruner_name: One of :data:`PRUNERS`.
        direction: ``maximize`` or ``minimize`` (the study's).
        study_name: Hyperband assigns a trial's bracket from it and the
            trial's number (as Optuna does), so a study's brackets are
            the same on every run.
        max_epochs: Epochs of a full trial (hyperband's max resource).
        grace: Epochs before any trial may be pruned (default: :func:`grace_epochs`).

    Memory: the current curve of each running trial, one float per rung a
    trial reached (ASHA, Hyperband) or per epoch of each completed trial
    (median), and the numbers of finished trials.
    """

    def __init__(
        self,
        pruner_name: str,
        direction: str,
        study_name: str,
        max_epochs: int,
        grace: int | None = None,
    ) -> None:
        make_pruner(pruner_name, max_epochs=max_epochs, grace=grace)  # checks the name
        grace = grace if grace is not None else grace_epochs(max_epochs)
        maximize = direction == "maximize"
        self._name = pruner_name
        self._study_name = study_name
        self._running: dict[int, _Running] = {}
        self._finished: set[int] = set()
        self._median = _Median(grace, maximize) if pruner_name == "median" else None
        self._brackets: list[_Rungs] = []
        self._budgets: list[int] = []
        if pruner_name == "asha":
            self._brackets = [_Rungs(grace, 0, maximize)]
        elif pruner_name == "hyperband":
            # Optuna's HyperbandPruner: brackets s = 0..n-1, bracket s starting to
            # stop trials at rung s, sized ceil(n * factor**(n-1-s) / (n-s)).
            n = math.floor(math.log(max_epochs / grace, REDUCTION_FACTOR)) + 1
            self._brackets = [_Rungs(grace, s, maximize) for s in range(n)]
            self._budgets = [
                math.ceil(n * REDUCTION_FACTOR ** (n - 1 - s) / (n - s)) for s in range(n)
            ]

    def _bracket(self, number: int) -> int:
        """Hyperband's bracket for trial ``number`` (Optuna's rule, by CRC32)."""
        if not self._budgets:
            return 0
        rest = binascii.crc32(f"{self._study_name}_{number}".encode()) % sum(self._budgets)
        for bracket, budget in enumerate(self._budgets):
            rest -= budget
            if rest < 0:
                return bracket
        raise AssertionError("unreachable: the budgets sum to the modulus")

    def report(self, number: int, epoch: int, value: float) -> bool:
        """Record ``value`` at ``epoch`` for trial ``number``; True means stop it."""
        if number in self._finished or not math.isfinite(value):
            return False
        trial = self._running.get(number)
        if trial is None:
            trial = self._running[number] = _Running(self._bracket(number))
        trial.steps[epoch] = value
        last = max(trial.steps)  # Optuna judges the trial at its last step
        if self._median is not None:
            return self._median.judge(trial, last)
        if self._brackets:
            return self._brackets[trial.bracket].judge(trial, trial.steps[last], last)
        return False

    def finish(self, number: int, state: str, value: float | None) -> None:
        """Mark trial ``number`` finished (COMPLETE, PRUNED or FAIL)."""
        if number in self._finished:
            return
        trial = self._running.pop(number, None)
        self._finished.add(number)
        if self._median is not None and state == "COMPLETE" and value is not None:
            self._median.add_completed(trial.steps if trial is not None else {})

    def preload(self, trials: Iterable[tuple[int, str, float | None, dict[int, float]]]) -> int:
        """Seed the oracle with recorded trials ``(number, state, value, {epoch: value})``:
        each curve is replayed epoch by epoch, so a resumed study's rungs hold what
        its earlier trials reached, then the trial is finished."""
        count = 0
        for number, state, value, steps in trials:
            if number in self._finished or number in self._running:
                continue
            for epoch, v in sorted(steps.items()):
                self.report(number, epoch, v)
            self.finish(number, state, value)
            count += 1
        return count

    def ping(self) -> bool:
        return True
