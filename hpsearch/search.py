"""The coarse-to-fine narrowing loop: sample in a box, keep the best, shrink, repeat.

Round r asks ``trials_per_round`` trials inside box r (Optuna sampler, see
:mod:`hpsearch.sampling`), runs them on the executor while keeping every
worker's queue full, records each as it finishes, then derives box r+1 from
its top-k trials (:func:`hpsearch.space.narrow`). The loop ends after the last
round or when the box no longer shrinks.

All state lives in the database, so a run can resume: a round record is
written when the round starts and completed when it ends; trials carry their
round; trials left RUNNING by a dead driver are marked FAIL (``stale``) and
redone.
"""

from __future__ import annotations

import datetime
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from optuna.samplers import BaseSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch import records, space
from hpsearch.config import ParamSpec, StudyConfig
from hpsearch.records import RoundRecord
from hpsearch.sampling import sample_params
from hpsearch.storage import StudyStore
from hpsearch.worker import TrialOutcome, TrialTask, final_eval_seed, trial_seed

logger = logging.getLogger(__name__)

STALE_PREFIX = "stale:"


class Executor(Protocol):
    """What the loop needs from the execution layer (:class:`~hpsearch.cluster.RayExecutor`)."""

    @property
    def capacity(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def low_water(self) -> int: ...

    def submit(self, task: TrialTask) -> None: ...

    def wait(self, timeout: float | None = None) -> list[TrialOutcome]: ...


class SearchObserver:
    """Receives progress events; the CLI draws them. Every method is optional."""

    def round_started(self, record: RoundRecord, total_rounds: int) -> None: ...

    def trials_finished(
        self, round_index: int, done: int, total: int, running: int, best: float | None
    ) -> None: ...

    def round_finished(self, record: RoundRecord) -> None: ...

    def final_eval_started(self, seeds: int) -> None: ...


@dataclass
class SearchResult:
    """What a run produced (everything is also in the database)."""

    rounds: list[RoundRecord]
    best_trial: FrozenTrial | None
    stop_reason: str
    final_eval: dict[str, Any] | None = None
    already_finished: bool = False
    stale_marked: int = 0
    trials_run: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _is_stale(trial: FrozenTrial) -> bool:
    reason = trial.user_attrs.get(records.TRIAL_FAIL_REASON, "")
    return trial.state == TrialState.FAIL and str(reason).startswith(STALE_PREFIX)


class NarrowingSearch:
    """One driver's run of a study's narrowing loop."""

    def __init__(
        self,
        config: StudyConfig,
        store: StudyStore,
        executor: Executor,
        sampler: BaseSampler,
        *,
        observer: SearchObserver | None = None,
        final_eval: bool | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.executor = executor
        self.sampler = sampler
        self.observer = observer or SearchObserver()
        self.final_eval = config.final_eval.enabled if final_eval is None else final_eval
        self._maximize = store.study.direction == StudyDirection.MAXIMIZE
        self._full_distributions = space.distributions(config.space)
        self._trials_run = 0

    # -- helpers ---------------------------------------------------------
    def _better_first(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        return sorted(trials, key=lambda t: (-t.value if self._maximize else t.value, t.number))

    def _round_trials(self, index: int) -> list[FrozenTrial]:
        return [
            t
            for t in self.store.trials()
            if t.user_attrs.get(records.TRIAL_ROUND) == index and not _is_stale(t)
        ]

    def _mark_stale(self) -> int:
        stale = self.store.trials(states=(TrialState.RUNNING, TrialState.WAITING))
        for trial in stale:
            self.store.fail_trial(
                trial._trial_id, f"{STALE_PREFIX} left {trial.state.name} by a driver that stopped"
            )
        if stale:
            logger.warning("marked %d stale trial(s) FAIL; their work is redone", len(stale))
        return len(stale)

    def _tasks(self, batch: list[dict[str, Any]], round_index: int) -> list[TrialTask]:
        created = self.store.create_running_trials(
            [(params, round_index) for params in batch], self._full_distributions
        )
        tasks = []
        for params, (trial_id, number) in zip(batch, created, strict=False):
            seed = trial_seed(self.config.seed, number)
            tasks.append(
                TrialTask(
                    number=number,
                    trial_id=trial_id,
                    round=round_index,
                    params=dict(params),
                    seed=seed,
                    config=self.config.train_config(params, seed),
                    metric=self.config.metric,
                )
            )
        return tasks

    # -- the loop --------------------------------------------------------
    def run(self) -> SearchResult:
        attrs = self.store.user_attrs()
        self.store.check_distributions(self._full_distributions)
        stale = self._mark_stale()
        rounds = self.store.rounds()
        status = attrs.get(records.STATUS_KEY)
        if status and status.get("state") == "finished":
            return SearchResult(
                rounds=rounds,
                best_trial=self._best(),
                stop_reason=status.get("reason", "finished"),
                final_eval=attrs.get(records.FINAL_EVAL_KEY),
                already_finished=True,
                stale_marked=stale,
            )
        if rounds and rounds[-1].ended_at is None:
            current = rounds.pop()
        else:
            current = RoundRecord(
                index=0,
                box=space.box_to_record(self.config.space),
                n_trials=self.config.narrowing.trials_per_round,
                started_at=_now(),
            )
            self.store.save_round(current)
        total_rounds = self.config.narrowing.rounds
        stop_reason = f"all {total_rounds} rounds done"
        while True:
            self.observer.round_started(current, total_rounds)
            ended = self._run_round(current)
            rounds.append(ended)
            self.observer.round_finished(ended)
            if ended.index + 1 >= total_rounds:
                break
            box = space.box_from_record(ended.box)
            if not ended.top_trials:
                stop_reason = f"round {ended.index} finished no trial; stopped"
                break
            top_params = self._params_of(ended.top_trials)
            next_box = space.narrow(box, top_params, self.config.narrowing.margin)
            if next_box == box:
                stop_reason = f"the box stopped shrinking after round {ended.index}"
                break
            current = RoundRecord(
                index=ended.index + 1,
                box=space.box_to_record(next_box),
                n_trials=self.config.narrowing.trials_per_round,
                started_at=_now(),
            )
            self.store.save_round(current)
        final = None
        if self.final_eval:
            final = self._final_evaluation()
        self.store.set_study_attr(records.STATUS_KEY, {"state": "finished", "reason": stop_reason})
        return SearchResult(
            rounds=rounds,
            best_trial=self._best(),
            stop_reason=stop_reason,
            final_eval=final,
            stale_marked=stale,
            trials_run=self._trials_run,
        )

    def _params_of(self, numbers: list[int]) -> list[dict[str, Any]]:
        by_number = {t.number: t for t in self.store.trials(states=(TrialState.COMPLETE,))}
        return [dict(by_number[n].params) for n in numbers if n in by_number]

    def _run_round(self, record: RoundRecord) -> RoundRecord:
        box: dict[str, ParamSpec] = space.box_from_record(record.box)
        index = record.index
        finished = self._round_trials(index)
        done = len(finished)
        to_ask = max(0, record.n_trials - done)
        best = self._best_value(finished)
        executor = self.executor
        while to_ask > 0 or executor.in_flight:
            # Refill in batches (one transaction each) once the queue is down to
            # about one trial per worker; every worker always has work queued.
            room = min(to_ask, executor.capacity - executor.in_flight)
            if room > 0 and (executor.in_flight <= executor.low_water or room == to_ask):
                batch = [sample_params(self.sampler, self.store.study, box) for _ in range(room)]
                for task in self._tasks(batch, index):
                    executor.submit(task)
                to_ask -= room
            outcomes = executor.wait(timeout=1.0)
            if not outcomes:
                continue
            self.store.finish_trials(outcomes)
            self._trials_run += len(outcomes)
            done += len(outcomes)
            for outcome in outcomes:
                if outcome.state == "COMPLETE" and outcome.value is not None:
                    if best is None or (
                        outcome.value > best if self._maximize else outcome.value < best
                    ):
                        best = outcome.value
            self.observer.trials_finished(index, done, record.n_trials, executor.in_flight, best)
        complete = [t for t in self._round_trials(index) if t.state == TrialState.COMPLETE]
        ranked = self._better_first(complete)
        values = [t.value for t in complete]
        ended = RoundRecord(
            index=index,
            box=record.box,
            n_trials=record.n_trials,
            top_trials=[t.number for t in ranked[: self.config.narrowing.top_k]],
            best=ranked[0].value if ranked else None,
            median=statistics.median(values) if values else None,
            started_at=record.started_at,
            ended_at=_now(),
            moved_edges=record.moved_edges,
        )
        self.store.save_round(ended)
        return ended

    def _best_value(self, trials: list[FrozenTrial]) -> float | None:
        values = [t.value for t in trials if t.state == TrialState.COMPLETE]
        if not values:
            return None
        return max(values) if self._maximize else min(values)

    def _best(self) -> FrozenTrial | None:
        complete = self.store.trials(states=(TrialState.COMPLETE,))
        return self._better_first(complete)[0] if complete else None

    def _final_evaluation(self) -> dict[str, Any] | None:
        """Retrain the best configuration on train+validation; test accuracy per seed."""
        best = self._best()
        if best is None:
            return None
        seeds = [final_eval_seed(self.config.seed, i) for i in range(self.config.final_eval.seeds)]
        self.observer.final_eval_started(len(seeds))
        start = time.perf_counter()
        pending = list(seeds)
        results: dict[int, TrialOutcome] = {}
        while pending or self.executor.in_flight:
            while pending and self.executor.in_flight < self.executor.capacity:
                seed = pending.pop(0)
                self.executor.submit(
                    TrialTask(
                        number=best.number,
                        trial_id=-1,
                        round=-1,
                        params=dict(best.params),
                        seed=seed,
                        config=self.config.train_config(best.params, seed),
                        metric=self.config.metric,
                        final=True,
                    )
                )
            for outcome in self.executor.wait(timeout=1.0):
                results[outcome.seed] = outcome
        accuracies = [results[s].value if results[s].value is not None else math.nan for s in seeds]
        ok = [a for a in accuracies if not math.isnan(a)]
        final = {
            "trial": best.number,
            "params": dict(best.params),
            "seeds": seeds,
            "test_accuracy": [None if math.isnan(a) else a for a in accuracies],
            "mean": statistics.fmean(ok) if ok else None,
            "std": statistics.stdev(ok) if len(ok) > 1 else (0.0 if ok else None),
            "seconds": time.perf_counter() - start,
        }
        self.store.set_study_attr(records.FINAL_EVAL_KEY, final)
        return final
