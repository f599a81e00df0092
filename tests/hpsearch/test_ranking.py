"""Ranking pruned trials with the complete ones, and narrowing on them."""

from __future__ import annotations

import datetime
import math
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from hpsearch import ranking
from hpsearch.config import parse_study
from hpsearch.records import TRIAL_ROUND
from hpsearch.search import NarrowingSearch
from hpsearch.space import box_from_record
from hpsearch.storage import StudyStore
from hpsearch.worker import TrialOutcome, TrialTask


def _trial(number: int, state: TrialState, curve: list[float], value: float | None = None):
    return FrozenTrial(
        number=number,
        state=state,
        value=value,
        datetime_start=datetime.datetime(2026, 1, 1),
        datetime_complete=datetime.datetime(2026, 1, 1),
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values=dict(enumerate(curve, start=1)),
        trial_id=number,
    )


def _numbers(trials: list[FrozenTrial]) -> list[int]:
    return [t.number for t in trials]


def test_complete_trials_rank_first_then_pruned_ones_by_depth_then_value() -> None:
    trials = [
        _trial(0, TrialState.PRUNED, [0.1, 0.9]),  # stopped at 2 with a high value
        _trial(1, TrialState.COMPLETE, [0.1, 0.2, 0.3, 0.3], value=0.3),
        _trial(2, TrialState.PRUNED, [0.1, 0.2, 0.25]),  # survived a rung longer than 0
        _trial(3, TrialState.PRUNED, [0.1, 0.2, 0.5]),
        _trial(4, TrialState.COMPLETE, [0.1, 0.2, 0.3, 0.6], value=0.6),
        _trial(5, TrialState.FAIL, [0.1]),  # diverged: never ranked
        _trial(6, TrialState.RUNNING, [0.1, 0.2, 0.3]),
    ]
    ranked = ranking.rank(trials, maximize=True)
    # a trial stopped early never outranks one that trained longer, even with a
    # higher value at the epoch it stopped (the pruner judged it at that rung)
    assert _numbers(ranked) == [4, 1, 3, 2, 0]


def test_minimize_ranks_lower_values_first_at_equal_depth() -> None:
    trials = [
        _trial(0, TrialState.PRUNED, [2.0, 1.5]),
        _trial(1, TrialState.PRUNED, [2.0, 0.9]),
        _trial(2, TrialState.COMPLETE, [2.0, 1.0, 0.8], value=0.8),
        _trial(3, TrialState.COMPLETE, [2.0, 1.0, 0.4], value=0.4),
    ]
    assert _numbers(ranking.rank(trials, maximize=False)) == [3, 2, 1, 0]


def test_ties_and_partial_curves_are_ranked_deterministically() -> None:
    trials = [
        _trial(7, TrialState.PRUNED, [0.2, 0.4]),
        _trial(3, TrialState.PRUNED, [0.3, 0.4]),  # same depth and value as 7: lower number first
        _trial(5, TrialState.PRUNED, []),  # pruned before any epoch was recorded: no evidence
        _trial(4, TrialState.PRUNED, [0.3, math.nan]),  # last value NaN: its last finite one counts
        _trial(9, TrialState.COMPLETE, [0.5], value=math.nan),  # no usable value: last complete
        _trial(8, TrialState.COMPLETE, [0.5, 0.5], value=0.5),
    ]
    ranked = ranking.rank(trials, maximize=True)
    assert _numbers(ranked) == [8, 9, 3, 7, 4, 5]
    assert _numbers(ranking.rank(reversed(trials), maximize=True)) == _numbers(ranked)


# --------------------------------------------------------------------------- narrowing

STUDY = """
[study]
name = "all-pruned"
seed = 3
pruner = "asha"

[data]
dataset = "digits"

[model]
hidden_sizes = [8]
epochs = 6

[search.lr]
low = 1e-5
high = 1.0
log = true

[narrowing]
rounds = 3
trials_per_round = 12
top_k = 3
margin = 0.1
"""

OPTIMUM = -2.0  # log10 of the best lr of the fake objective


def _quality(lr: float) -> float:
    """1 at lr = 1e-2, falling linearly in log10(lr) to 0 five decades away."""
    return max(0.0, 1.0 - abs(math.log10(lr) - OPTIMUM) / 5.0)


class PruneEverything:
    """Trains nothing: every trial is PRUNED, the better its lr the later, and its
    validation accuracy rises with the epochs and with its quality."""

    capacity = 4
    low_water = 4

    def __init__(self) -> None:
        self._pending: list[TrialTask] = []

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def submit(self, task: TrialTask) -> None:
        self._pending.append(task)

    def submit_pack(self, tasks: list[TrialTask]) -> None:
        self._pending.extend(tasks)

    def in_flight_tasks(self) -> list[TrialTask]:
        return list(self._pending)

    def cancel_all(self) -> None:
        self._pending.clear()

    def wait(self, timeout: float | None = None) -> list[TrialOutcome]:
        done, self._pending = self._pending, []
        return [self._outcome(task) for task in done]

    @staticmethod
    def _outcome(task: TrialTask) -> TrialOutcome:
        q = _quality(task.params["lr"])
        stopped_at = 1 + min(4, int(q * 5))  # epochs 1..5 of 6: none completes
        records = [
            {
                "epoch": e,
                "train_loss": 1.0,
                "train_accuracy": 0.5,
                "val_loss": 1.0,
                "val_accuracy": 0.1 + 0.8 * q * e / 6,
                "seconds": 0.01,
            }
            for e in range(1, stopped_at + 1)
        ]
        return TrialOutcome(
            number=task.number,
            trial_id=task.trial_id,
            round=task.round,
            seed=task.seed,
            params=task.params,
            state="PRUNED",
            value=records[-1]["val_accuracy"],
            history={"records": records, "stopped": True, "stopped_at_epoch": stopped_at},
        )


def test_a_study_whose_every_trial_is_pruned_still_narrows_toward_the_best_region(tmp_path):
    config = parse_study(STUDY)
    sampler = optuna.samplers.RandomSampler(seed=config.seed)
    store, _ = StudyStore.open(
        f"sqlite:///{tmp_path / 'p.db'}", config.name, direction="maximize", sampler=sampler,
        create=True,
    )  # fmt: skip
    result = NarrowingSearch(config, store, PruneEverything(), sampler, final_eval=False).run()

    assert len(result.rounds) == 3, result.stop_reason  # not stopped for want of COMPLETE trials
    trials = store.trials()
    assert all(t.state == TrialState.PRUNED for t in trials)
    boxes = [box_from_record(r.box)["lr"] for r in result.rounds]
    widths = [math.log10(b.high) - math.log10(b.low) for b in boxes]
    assert widths[1] < widths[0] and widths[2] < widths[1]
    for box in boxes[1:]:
        assert math.log10(box.low) <= OPTIMUM <= math.log10(box.high)
    # each round's top trials are its deepest pruned ones
    for record in result.rounds:
        mine = [t for t in trials if t.user_attrs[TRIAL_ROUND] == record.index]
        deepest = max(len(t.intermediate_values) for t in mine)
        top = [t for t in mine if t.number in record.top_trials]
        assert len(top) == config.narrowing.top_k
        assert len(top[0].intermediate_values) == deepest
        assert record.best is None  # no COMPLETE trial: no metric to report as best
    last = [t for t in trials if t.user_attrs[TRIAL_ROUND] == 2]
    first = [t for t in trials if t.user_attrs[TRIAL_ROUND] == 0]
    assert _mean_quality(last) > _mean_quality(first) + 0.2


def _mean_quality(trials: list[Any]) -> float:
    return sum(_quality(t.params["lr"]) for t in trials) / len(trials)


def test_pruned_top_trials_fill_in_only_when_too_few_complete() -> None:
    complete = [_trial(i, TrialState.COMPLETE, [0.1, 0.2], value=0.2 + i / 100) for i in range(4)]
    pruned = [_trial(10 + i, TrialState.PRUNED, [0.1, 0.95]) for i in range(4)]
    top = _numbers(ranking.rank(complete + pruned, maximize=True)[:3])
    assert top == [3, 2, 1]  # enough COMPLETE trials: exactly the rule without a pruner
    top = _numbers(ranking.rank(complete[:1] + pruned, maximize=True)[:3])
    assert top == [0, 10, 11]


@pytest.mark.parametrize("maximize", [True, False])
def test_rank_ignores_failed_and_running_trials(maximize: bool) -> None:
    trials = [_trial(0, TrialState.FAIL, [0.5]), _trial(1, TrialState.WAITING, [])]
    assert ranking.rank(trials, maximize=maximize) == []
