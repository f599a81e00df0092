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


def last_value(trial: FrozenTrial) -> tuple[int, float] | None:
    """``(epoch, value)`` of the last finite intermediate value, or None."""
    for step in sorted(trial.intermediate_values, reverse=True):
        value = trial.intermediate_values[step]
        if value is not None and math.isfinite(value):
            return step, float(value)
    return None


def rank_key(trial: FrozenTrial, *, maximize: bool) -> tuple[int, float, float, int]:
    """Sort key (ascending = better first) of a COMPLETE or PRUNED trial."""
    sign = -1.0 if maximize else 1.0
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        value = float(trial.value)
        if math.isfinite(value):
            return (0, 0.0, sign * value, trial.number)
        return (0, 0.0, math.inf, trial.number)
    last = last_value(trial)
    if last is None:
        return (2, 0.0, math.inf, trial.number)
    step, value = last
    return (1, -float(step), sign * value, trial.number)


def rankable(trial: FrozenTrial) -> bool:
    """COMPLETE with a value, or PRUNED: the trials :func:`rank` orders."""
    if trial.state == TrialState.COMPLETE:
        return trial.value is not None
    return trial.state == TrialState.PRUNED


def rank(trials: Iterable[FrozenTrial], *, maximize: bool) -> list[FrozenTrial]:
    """COMPLETE and PRUNED trials, best first (see the module docstring)."""
    return sorted((t for t in trials if rankable(t)), key=lambda t: rank_key(t, maximize=maximize))
