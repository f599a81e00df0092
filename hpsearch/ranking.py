"""Ranking a round's trials, pruned ones included, to choose the next box.

With a pruner most trials of a round stop early, and the few that complete
are not a sample of the best region: they are the survivors of the early
rungs. Narrowing on the COMPLETE trials alone builds the next box from a
handful of trials (or none). So every finished trial is ranked, COMPLETE and
PRUNED alike, the way a successive-halving pruner itself compares them and the
way Optuna's TPE splits them into good and bad:

1. depth first: a trial that trained more epochs ranks above one stopped
   earlier (COMPLETE trials, which trained every epoch, above all PRUNED
   ones), because surviving a rung *is* the pruner's judgement that it beat
   the trials stopped there;
2. then its value at the last epoch it reached: the study's metric for a
   COMPLETE trial, the last finite intermediate value (the per-epoch
   validation metric the pruner watched) for a PRUNED one; better first, by
   the study's direction;
3. then the trial number (earlier first), so ties are broken the same way on
   every driver.

A PRUNED trial without a finite intermediate value carries no evidence and
ranks last; FAIL and unfinished trials are not ranked. So when at least
top-k trials complete, the top-k are exactly the best COMPLETE trials (the
rule without a pruner); when fewer complete, the deepest pruned trials fill
the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from optuna.trial import FrozenTrial, TrialState

from hpsearch import records
from hpsearch.round_rule import TrialPoint, rank_points


def last_value(trial: FrozenTrial) -> tuple[int, float] | None:
    """``(epoch, value)`` of the last finite intermediate value, or None."""
    for step in sorted(trial.intermediate_values, reverse=True):
        value = trial.intermediate_values[step]
        if value is not None and math.isfinite(value):
            return step, float(value)
    return None


def to_point(trial: FrozenTrial) -> TrialPoint | None:
    """The trial as the round rule sees it, or None when it carries no finite value
    (FAIL, unfinished, a COMPLETE trial without a finite metric, a PRUNED trial
    that reported nothing finite)."""
    round_index = int(trial.user_attrs.get(records.TRIAL_ROUND, -1))
    if trial.state == TrialState.COMPLETE:
        if trial.value is None or not math.isfinite(trial.value):
            return None
        steps = [s for s in trial.intermediate_values]
        depth = int(trial.user_attrs.get(records.TRIAL_EPOCHS, max(steps, default=0)))
        return TrialPoint(trial.number, round_index, trial.params, float(trial.value), depth, True)
    if trial.state != TrialState.PRUNED:
        return None
    last = last_value(trial)
    if last is None:
        return None
    step, value = last
    return TrialPoint(trial.number, round_index, trial.params, value, step, False)


def informative_trials(threshold: float | None, *, maximize: bool):
    """A predicate: the trial's value (a pruned trial's last one) beats
    ``threshold`` (:func:`hpsearch.round_rule.signal_threshold`); None when the
    threshold is not known, so every trial counts."""
    if threshold is None:
        return None
    sign = 1.0 if maximize else -1.0

    def informative(trial: FrozenTrial) -> bool:
        point = to_point(trial)
        return point is not None and sign * (point.value - threshold) > 0

    return informative


def rankable(trial: FrozenTrial) -> bool:
    """COMPLETE with a value, or PRUNED: the trials :func:`rank` orders."""
    if trial.state == TrialState.COMPLETE:
        return trial.value is not None
    return trial.state == TrialState.PRUNED


def rank(trials: Iterable[FrozenTrial], *, maximize: bool) -> list[FrozenTrial]:
    """COMPLETE and PRUNED trials, best first (see the module docstring); those
    without a finite value last, by number."""
    trials = [t for t in trials if rankable(t)]
    by_number = {t.number: t for t in trials}
    points = [p for p in map(to_point, trials) if p is not None]
    ranked = [by_number[p.number] for p in rank_points(points, maximize=maximize)]
    valued = {p.number for p in points}
    no_value = sorted((t for t in trials if t.number not in valued), key=lambda t: t.number)

    def group(complete: bool, among: list[FrozenTrial]) -> list[FrozenTrial]:
        return [t for t in among if (t.state == TrialState.COMPLETE) == complete]

    return (
        group(True, ranked) + group(True, no_value) + group(False, ranked) + group(False, no_value)
    )
