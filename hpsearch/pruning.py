"""Pruning across nodes: one oracle holds every trial's curve and decides.

Workers on any node report each epoch's validation metric to a
:class:`PruningOracle` (a Ray actor started by the driver, no CPU reserved)
and stop when it says so. The oracle keeps an in-memory Optuna study that
mirrors the trials' intermediate values and applies the study's Optuna
pruner (``median``, ``asha`` = successive halving, ``hyperband``) exactly as
``Trial.should_prune`` would. It never touches the results database: the
driver records the outcome (PRUNED with the partial curve) as for any trial.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import optuna
from optuna.pruners import (
    BasePruner,
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    SuccessiveHalvingPruner,
)
from optuna.trial import TrialState

from hpsearch.errors import ConfigError

PRUNERS = ("none", "median", "asha", "hyperband")


GRACE_FRACTION = 4
"""The first rung is at ``max_epochs // GRACE_FRACTION`` epochs (see :func:`grace_epochs`)."""


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
    5 study seeds (benchmarks/search_quality.py); with a quarter (12 epochs;
    rungs at 12 and 36), and pruned trials ranked in the narrowing
    (:mod:`hpsearch.ranking`), it found the good region in every seed.
    """
    return max(1, max_epochs // GRACE_FRACTION)


def make_pruner(name: str, *, max_epochs: int, grace: int | None = None) -> BasePruner:
    """The Optuna pruner called ``name`` in the study file (reduction factor 3).

    ``grace``: epochs before any trial may be pruned (the study's
    ``prune_after``); default :func:`grace_epochs`.
    """
    grace = grace if grace is not None else grace_epochs(max_epochs)
    if name == "none":
        return NopPruner()
    if name == "median":
        return MedianPruner(n_startup_trials=5, n_warmup_steps=grace)
    if name == "asha":
        return SuccessiveHalvingPruner(min_resource=grace, reduction_factor=3)
    if name == "hyperband":
        return HyperbandPruner(min_resource=grace, max_resource=max_epochs, reduction_factor=3)
    raise ConfigError(f"study.pruner: got {name!r}; allowed: {', '.join(PRUNERS)}")


class PruningOracle:
    """Decides, per reported epoch, whether a trial should stop.

    Args:
        pruner_name: One of :data:`PRUNERS`.
        direction: ``maximize`` or ``minimize`` (the study's).
        study_name: Used by hyperband to assign brackets deterministically.
        max_epochs: Epochs of a full trial (hyperband's max resource).
        grace: Epochs before any trial may be pruned (default: :func:`grace_epochs`).
    """

    def __init__(
        self,
        pruner_name: str,
        direction: str,
        study_name: str,
        max_epochs: int,
        grace: int | None = None,
    ) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._storage = optuna.storages.InMemoryStorage()
        self._study = optuna.create_study(
            storage=self._storage,
            study_name=study_name,
            direction=direction,
            pruner=make_pruner(pruner_name, max_epochs=max_epochs, grace=grace),
            sampler=optuna.samplers.RandomSampler(seed=0),
        )
        self._ids: dict[int, int] = {}
        self._study_id = self._storage.get_study_id_from_name(study_name)

    def _trial_id(self, number: int) -> int:
        trial_id = self._ids.get(number)
        if trial_id is None:
            trial_id = self._storage.create_new_trial(self._study_id)
            self._ids[number] = trial_id
        return trial_id

    def report(self, number: int, epoch: int, value: float) -> bool:
        """Record ``value`` at ``epoch`` for trial ``number``; True means stop it."""
        trial_id = self._trial_id(number)
        if not math.isfinite(value):
            return False
        self._storage.set_trial_intermediate_value(trial_id, epoch, value)
        frozen = self._storage.get_trial(trial_id)
        if frozen.state != TrialState.RUNNING:
            return False
        # As Optuna 5.1's Trial.should_prune: the pruner gets the whole study
        # (Hyperband picks the trial's bracket itself).
        return bool(self._study.pruner.prune(self._study, frozen))

    def finish(self, number: int, state: str, value: float | None) -> None:
        """Mark trial ``number`` finished (COMPLETE, PRUNED or FAIL)."""
        trial_id = self._trial_id(number)
        trial_state = TrialState[state]
        values = [value] if value is not None and trial_state == TrialState.COMPLETE else None
        if trial_state == TrialState.COMPLETE and values is None:
            trial_state = TrialState.FAIL
        self._storage.set_trial_state_values(trial_id, trial_state, values)

    def preload(self, trials: Iterable[tuple[int, str, float | None, dict[int, float]]]) -> int:
        """Seed the oracle with recorded trials ``(number, state, value, {epoch: value})``."""
        count = 0
        for number, state, value, steps in trials:
            if number in self._ids:
                continue
            trial_id = self._trial_id(number)
            for epoch, v in sorted(steps.items()):
                if math.isfinite(v):
                    self._storage.set_trial_intermediate_value(trial_id, epoch, v)
            self.finish(number, state, value)
            count += 1
        return count

    def ping(self) -> bool:
        return True
