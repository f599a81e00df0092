"""The coarse-to-fine narrowing loop: sample in a box, keep the best, narrow, repeat.

Round r asks ``trials_per_round`` trials inside box r (Optuna sampler, see
:mod:`hpsearch.sampling`), runs them on the executor while keeping every
worker's queue full, records each as it finishes, then the round rule
(:mod:`hpsearch.round_rule`) decides box r+1 from the finished trials so far
and records why. The loop ends after the last round, or when the box is a
single point.

All state lives in the database, so a run can resume and several drivers can
share one study (on a server database): a round's trials are claimed under
the study's lock, never more than the round asks for; the round is closed,
and the next box written, once, by whichever driver gets there first; trials
left RUNNING by a driver that is gone (its process is dead, or its heartbeat
is older than :data:`STALE_AFTER` seconds) are marked FAIL ``stale`` and redone.

Finished trials are recorded in batches, one transaction per batch, at most
:data:`RECORD_DELAY` seconds after they finish, and always before a round
closes, on a clean stop (Ctrl-C) and on an error. What a crash of the driver
(kill -9, power loss) can cost, at most: the trials that were running and those
finished in the last :data:`RECORD_DELAY` seconds; they stay RUNNING in the
database, are marked stale by the next run and redone. Nothing recorded is lost.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os
import socket
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from optuna.samplers import BaseSampler, QMCSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch import internals, metric_scale, ranking, records, round_rule, space
from hpsearch.config import ParamSpec, StudyConfig
from hpsearch.errors import ObjectiveError
from hpsearch.objective import UserCode
from hpsearch.proposer import BatchTPEProposer
from hpsearch.records import STALE_PREFIX, RoundRecord
from hpsearch.round_rule import MetricScale
from hpsearch.sampling import sample_params
from hpsearch.storage import StudyStore
from hpsearch.worker import TrialOutcome, TrialTask, final_eval_seed, trial_seed

logger = logging.getLogger(__name__)

STALE_AFTER = 60.0
"""Seconds without a heartbeat after which another host's driver counts as gone."""
HEARTBEAT_EVERY = 5.0
RECORD_DELAY = 0.25
"""Seconds a finished trial may wait to be recorded together with others."""
RECORD_BATCH = 64
"""Finished trials recorded at once at most (one transaction)."""
SHORT_TRIAL = 0.25
"""Median training seconds under which unpacked trials are chained."""
CHAIN_AFTER = 8
"""Finished trials the driver sees before deciding whether to chain."""
CHAIN_SIZE = 4
"""Unpacked short trials sent to a worker in one call (run one after another)."""
BLIND_TRIALS = 8
"""With a sampler that learns from finished trials (TPE), at most one call per
worker or this many trials, whichever is more, are in flight."""


BATCHED_FROM = 500
"""TPE proposes through :mod:`hpsearch.proposer` (a batch per fit) once its box
holds this many finished trials; below, Optuna's TPESampler is asked one trial
at a time. Optuna's per-trial cost grows with the trials it fits (about 15 ms
per trial at 500 here, 34 ms at 1,000-1,500, benchmarks/RESULTS.md), while on
the search-quality benchmark the batched proposer's one-round test accuracy was
0.004-0.008 below TPESampler's on every problem measured (each within ~1.5 SEM,
but all of one sign): studies of hundreds of trials keep Optuna's exact TPE,
tens of thousands get a flat cost."""


class Executor(Protocol):
    """What the loop needs from the execution layer (:class:`~hpsearch.cluster.RayExecutor`)."""

    @property
    def capacity(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def low_water(self) -> int: ...

    def submit(self, task: TrialTask) -> None: ...

    def submit_pack(self, tasks: list[TrialTask]) -> None: ...

    def wait(self, timeout: float | None = None) -> list[TrialOutcome]: ...

    def in_flight_tasks(self) -> list[TrialTask]: ...

    def cancel_all(self) -> None: ...


class SearchObserver:
    """Receives progress events; the CLI draws them. Every method is optional."""

    def round_started(self, record: RoundRecord, total_rounds: int) -> None: ...

    def trials_finished(
        self, round_index: int, done: int, total: int, running: int, best: float | None
    ) -> None: ...

    def round_finished(self, record: RoundRecord) -> None: ...

    def waiting_for_others(self, round_index: int, running: int) -> None: ...

    def final_eval_started(self, seeds: int) -> None: ...


@dataclass
class SearchResult:
    """What a run produced (everything is also in the database)."""

    rounds: list[RoundRecord]
    best_trial: FrozenTrial | None
    stop_reason: str
    final_eval: dict[str, Any] | None = None
    already_finished: bool = False
    interrupted: bool = False
    stale_marked: int = 0
    trials_run: int = 0


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def is_stale(trial: FrozenTrial) -> bool:
    reason = trial.user_attrs.get(records.TRIAL_FAIL_REASON, "")
    return trial.state == TrialState.FAIL and str(reason).startswith(STALE_PREFIX)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def driver_gone(info: dict[str, Any] | None, *, now: float, host: str) -> bool:
    """True when the driver described by ``info`` can no longer finish its trials."""
    if not info:
        return True
    if info.get("state") == "stopped":
        return True
    if info.get("host") == host and not _pid_alive(int(info.get("pid", -1))):
        return True
    return now - float(info.get("heartbeat", 0.0)) > STALE_AFTER


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
        driver_id: str | None = None,
        first_box: dict[str, ParamSpec] | None = None,
        enqueue: list[dict[str, Any]] | None = None,
        scale: MetricScale | None = None,
        batched: bool = True,
    ) -> None:
        self.config = config
        self.store = store
        self.executor = executor
        self.sampler = sampler
        self.observer = observer or SearchObserver()
        self._sampler_learns = not isinstance(sampler, (RandomSampler, QMCSampler))
        asked = config.final_eval.enabled if final_eval is None else final_eval
        self.final_eval = asked and config.builtin  # the test accuracy of the built-in MLP
        self.driver_id = driver_id or uuid.uuid4().hex[:12]
        self._host = socket.gethostname()
        self._started = _now()
        self._last_beat = 0.0
        self._maximize = store.study.direction == StudyDirection.MAXIMIZE
        # Trials record the region's distributions: a box may move past the
        # study file's ranges, up to the hard limits.
        self._region = space.region(config.space, config.limits)
        self._full_distributions = space.distributions(self._region)
        # The metric's floor and noise (hpsearch.metric_scale.builtin_scale for
        # the built-in objective); unknown noise is estimated from the curves.
        self._scale = scale or MetricScale()
        # The sampler learns only once some trial in its box beat chance
        # (hpsearch.sampling, hpsearch.proposer); unknown floor: every trial counts.
        threshold = round_rule.signal_threshold(self._scale, maximize=self._maximize)
        self._informative = ranking.informative_trials(threshold, maximize=self._maximize)
        self._trials_run = 0
        self._stop_requested = False
        self._cancel_requested = False
        self._first_box = first_box
        self._enqueue = list(enqueue or [])
        self._unrecorded: list[TrialOutcome] = []
        self._train_seconds: list[float] = []
        # Chaining is for unpacked trials on an executor that can chain.
        self._chain_decided = getattr(executor, "pack_size", 1) > 1 or not hasattr(
            executor, "chain_size"
        )
        self._unrecorded_since = 0.0
        store.metric = config.metric
        # TPE proposes a batch per fit from an incremental, bounded view of the
        # finished trials (hpsearch.proposer); batched=False, or Optuna
        # internals it cannot use, ask the sampler one trial at a time.
        settings = internals.tpe_settings(sampler) if batched else None
        self._proposer = (
            BatchTPEProposer(
                settings,
                seed=config.seed,
                maximize=self._maximize,
                threshold=threshold,
            )
            if settings is not None
            else None
        )
        # A user's objective (None: the built-in MLP, whose tasks carry a TrainConfig).
        self._user = UserCode.of(config)

    # -- control ---------------------------------------------------------
    def request_stop(self, *, cancel: bool = False) -> None:
        """Stop dispatching; running trials finish and are recorded (first Ctrl-C).

        ``cancel=True`` (SIGTERM, a second Ctrl-C): the running trials are
        abandoned too, by a KeyboardInterrupt out of :meth:`run`. The signal
        handler raises one itself, but Python drops an exception raised while a
        finalizer or weakref callback runs ("Exception ignored in ..."); the loop
        then raises it at its next pass (within about a second), so the run
        never quietly waits for its trials instead.
        """
        self._stop_requested = True
        self._cancel_requested = self._cancel_requested or cancel

    def _raise_if_cancelled(self) -> None:
        if self._cancel_requested:
            raise KeyboardInterrupt

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def _beat(self, *, force: bool = False, state: str = "running") -> None:
        now = time.time()
        if not force and now - self._last_beat < HEARTBEAT_EVERY:
            return
        self._last_beat = now
        self.store.beat(
            self.driver_id,
            {
                "host": self._host,
                "pid": os.getpid(),
                "heartbeat": now,
                "started": self._started,
                "state": state,
            },
        )

    # -- helpers ---------------------------------------------------------
    def _better_first(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        return sorted(trials, key=lambda t: (-t.value if self._maximize else t.value, t.number))

    def _round_trials(self, index: int) -> list[FrozenTrial]:
        return [
            t
            for t in self.store.trials()
            if t.user_attrs.get(records.TRIAL_ROUND) == index and not is_stale(t)
        ]

    def mark_stale(self) -> int:
        """Mark FAIL (stale) every RUNNING trial whose driver is gone; return how many."""
        running = self.store.trials(states=(TrialState.RUNNING, TrialState.WAITING))
        if not running:
            return 0
        drivers = self.store.drivers()
        now = time.time()
        count = 0
        for trial in running:
            owner = trial.user_attrs.get(records.TRIAL_DRIVER)
            if owner == self.driver_id:
                continue
            if driver_gone(drivers.get(owner), now=now, host=self._host):
                self.store.fail_trial(
                    self.store.trial_id(trial),
                    f"{STALE_PREFIX} left {trial.state.name} by driver {owner} that stopped; "
                    "redone",
                )
                count += 1
        if count:
            logger.warning("marked %d stale trial(s) FAIL; their work is redone", count)
        return count

    def _tasks(self, batch: list[dict[str, Any]], round_index: int, limit: int) -> list[TrialTask]:
        created = self.store.create_running_trials(
            [(params, round_index) for params in batch],
            self._full_distributions,
            round_limit=limit,
            driver=self.driver_id,
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
                    config=None if self._user else self.config.train_config(params, seed),
                    metric=self.config.metric,
                    user=self._user,
                )
            )
        return tasks

    def _dispatch(self, tasks: list[TrialTask]) -> None:
        """Submit tasks, packing compatible ones when the executor packs, and
        chaining short unpacked ones (see :meth:`_learn_trial_length`)."""
        pack_size = getattr(self.executor, "pack_size", 1)
        # Spread the batch over the workers: never a call larger than a fair share.
        workers = max(1, getattr(self.executor, "workers", 1))
        fair = -(-len(tasks) // workers)
        if pack_size <= 1 or len(tasks) < 2:
            chain = min(getattr(self.executor, "chain_size", 1), fair)
            if chain <= 1:
                for task in tasks:
                    self.executor.submit(task)
                return
            for start in range(0, len(tasks), chain):
                self.executor.submit_chain(tasks[start : start + chain])
            return
        from trainer.packed import group_packable

        cap = max(1, min(pack_size, fair))
        for group in group_packable([t.config for t in tasks], max_pack_size=cap):
            self.executor.submit_pack([tasks[i] for i in group])

    def _in_flight_limit(self) -> int:
        """Trials that may be in flight. A learning sampler (TPE) proposes blind
        while nothing has finished: with packs of 16 queued 3 deep on 2 workers
        the executor holds 96, more than a round, and TPE drew whole rounds at
        random. For it, one call per worker (or :data:`BLIND_TRIALS`) is enough."""
        capacity = self.executor.capacity
        if not self._sampler_learns:
            return capacity
        return min(capacity, max(self.executor.low_water, BLIND_TRIALS))

    def _preload_pruner(self) -> None:
        preload = getattr(self.executor, "preload_pruner", None)
        if preload is None:
            return
        items = []
        for t in self.store.trials(states=(TrialState.COMPLETE, TrialState.PRUNED)):
            items.append((t.number, t.state.name, t.value, dict(t.intermediate_values)))
        preload(items)

    # -- the loop --------------------------------------------------------
    def run(self) -> SearchResult:
        self.store.check_distributions(self._full_distributions)
        self._beat(force=True)
        stale = self.mark_stale()
        attrs = self.store.user_attrs()
        status = attrs.get(records.STATUS_KEY)
        if status and status.get("state") == "finished":
            final = attrs.get(records.FINAL_EVAL_KEY)
            if self.final_eval and not final:  # asked for, or interrupted before it ended
                final = self._final_evaluation()
            self._beat(force=True, state="stopped")
            return SearchResult(
                rounds=self.store.rounds(),
                best_trial=self._best(),
                stop_reason=status.get("reason", "finished"),
                final_eval=final,
                already_finished=True,
                stale_marked=stale,
            )
        self._preload_pruner()
        rounds = self.store.rounds()
        if rounds and rounds[-1].ended_at is None:
            current = rounds.pop()
        else:
            current = self.store.start_first_round(
                RoundRecord(
                    index=0,
                    box=space.box_to_record(self._first_box or self.config.space),
                    n_trials=self.config.narrowing.trials_per_round,
                    started_at=_now(),
                )
            )
        total_rounds = self.config.narrowing.rounds
        try:
            while True:
                self.observer.round_started(current, total_rounds)
                self._run_round(current)
                if current.index == 0 and self._user is not None:
                    self._check_first_round()
                if self._stop_requested:
                    self._raise_if_cancelled()
                    self._beat(force=True, state="stopped")
                    return SearchResult(
                        rounds=[*rounds, current],
                        best_trial=self._best(),
                        stop_reason="interrupted; run the same command again to resume",
                        interrupted=True,
                        stale_marked=stale,
                        trials_run=self._trials_run,
                    )
                ended, following, reason = self._close(current)
                rounds.append(ended)
                self.observer.round_finished(ended)
                if following is None:
                    stop_reason = reason
                    break
                current = following
        except BaseException:
            self._abandon_in_flight("cancelled")
            raise
        final = None
        if self.final_eval and not self.store.user_attrs().get(records.FINAL_EVAL_KEY):
            final = self._final_evaluation()
        self._beat(force=True, state="stopped")
        return SearchResult(
            rounds=rounds,
            best_trial=self._best(),
            stop_reason=stop_reason,
            final_eval=final or self.store.user_attrs().get(records.FINAL_EVAL_KEY),
            stale_marked=stale,
            trials_run=self._trials_run,
        )

    def _check_first_round(self) -> None:
        """A user's objective that failed every trial of the first round would fail
        every other one too: stop, naming the first failure (the trials stay recorded)."""
        trials = sorted(self._round_trials(0), key=lambda t: t.number)
        if not trials or any(t.state != TrialState.FAIL for t in trials):
            return
        first = trials[0]
        reason = first.user_attrs.get(records.TRIAL_FAIL_REASON, "no reason recorded")
        self._beat(force=True, state="stopped")
        raise ObjectiveError(
            f"every trial of round 1 failed ({len(trials)}); the first, trial {first.number}: "
            f"{reason}"
        )

    def _abandon_in_flight(self, why: str) -> None:
        """Cancel running trials and mark them stale so a resume redoes them."""
        tasks_of = getattr(self.executor, "in_flight_tasks", None)
        if tasks_of is None:
            return
        tasks = [t for t in tasks_of() if t.trial_id >= 0]
        try:
            self.executor.cancel_all()
        except Exception:  # pragma: no cover - best effort while stopping
            logger.debug("cancel failed", exc_info=True)
        for task in tasks:
            try:
                self.store.fail_trial(task.trial_id, f"{STALE_PREFIX} {why}; redone on resume")
            except Exception:  # pragma: no cover - already finished
                logger.debug("could not mark trial %d", task.number, exc_info=True)
        try:
            self._beat(force=True, state="stopped")
        except Exception:  # pragma: no cover
            pass

    def _learn_trial_length(self, outcomes: list[TrialOutcome]) -> None:
        """Chain short trials: once :data:`CHAIN_AFTER` trials have run unpacked
        and their median training time is under :data:`SHORT_TRIAL` seconds,
        the executor gets up to :data:`CHAIN_SIZE` trials per call."""
        if self._chain_decided:
            return
        self._train_seconds.extend(o.train_seconds for o in outcomes if o.state == "COMPLETE")
        if len(self._train_seconds) >= CHAIN_AFTER:
            self._chain_decided = True
            if statistics.median(self._train_seconds) < SHORT_TRIAL:
                self.executor.chain_size = CHAIN_SIZE

    def _record_wait(self) -> float:
        """How long the loop may block for results before the buffer is due."""
        if not self._unrecorded:
            return 1.0
        return max(0.0, self._unrecorded_since + RECORD_DELAY - time.monotonic())

    def _record_due(self) -> bool:
        if not self._unrecorded:
            return False
        return (
            len(self._unrecorded) >= RECORD_BATCH
            or time.monotonic() - self._unrecorded_since >= RECORD_DELAY
            or not self.executor.in_flight
        )

    def _record_finished(self) -> None:
        """Write every finished, not yet recorded trial in one transaction."""
        if self._unrecorded:
            self.store.finish_trials(self._unrecorded)
            self._unrecorded, self._unrecorded_since = [], 0.0

    def _run_round(self, record: RoundRecord) -> None:
        """Run this driver's share of a round until every trial of it is finished.

        Finished trials are recorded in batches (one transaction each), at most
        :data:`RECORD_DELAY` seconds after the first of a batch finished, and
        always before this returns or raises.
        """
        try:
            self._run_round_trials(record)
        except BaseException:
            try:
                self._record_finished()
            except Exception:  # the database failed too: say what is lost, raise the first error
                lost = sorted(o.number for o in self._unrecorded)
                logger.error("could not record finished trial(s) %s; a resume redoes them", lost)
                self._unrecorded = []
            raise
        self._record_finished()

    def _run_round_trials(self, record: RoundRecord) -> None:
        box: dict[str, ParamSpec] = space.box_from_record(record.box)
        index, total = record.index, record.n_trials
        executor = self.executor
        known = self._round_trials(index)
        if self._proposer is not None:
            self._proposer.reset(
                box, self.store.trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
            )
        done = sum(1 for t in known if t.state.is_finished())
        best = self._best_value(known)
        # Warm start: round 0 first runs the enqueued parameters (those not yet run).
        queued = list(self._enqueue[len(known) :]) if index == 0 else []
        may_claim = True
        claimed = len(known)  # live trials of the round as far as we know
        while True:
            self._raise_if_cancelled()
            self._beat()
            # Never sample more than the round still needs: the sampler's stream
            # (and so every trial's parameters) must not depend on queue sizes.
            room = min(self._in_flight_limit() - executor.in_flight, total - claimed)
            if (
                may_claim
                and not self._stop_requested
                and room > 0
                and (executor.in_flight <= executor.low_water)
            ):
                batch = queued[:room]
                queued = queued[room:]
                batch += self._propose(box, room - len(batch))
                tasks = self._tasks(batch, index, total)
                self._dispatch(tasks)
                claimed += len(tasks)
                if len(tasks) < room or claimed >= total:
                    may_claim = False  # the round is fully claimed (by us or others)
            if executor.in_flight:
                outcomes = executor.wait(timeout=self._record_wait())
                if outcomes:
                    self._learn_trial_length(outcomes)
                    self._observe(outcomes)
                    self._unrecorded.extend(outcomes)
                    self._unrecorded_since = self._unrecorded_since or time.monotonic()
                    self._trials_run += len(outcomes)
                    done += len(outcomes)
                    for o in outcomes:
                        if (
                            o.state == "COMPLETE"
                            and o.value is not None
                            and (
                                best is None
                                or (o.value > best if self._maximize else o.value < best)
                            )
                        ):
                            best = o.value
                    self.observer.trials_finished(index, done, total, executor.in_flight, best)
                if self._record_due():
                    self._record_finished()
                continue
            self._record_finished()
            if self._stop_requested:
                return
            # Nothing of ours is running and we can claim no more: wait for the
            # other drivers' trials of this round, redoing those of dead drivers.
            trials = self._round_trials(index)
            running = [t for t in trials if not t.state.is_finished()]
            if len(trials) >= total and not running:
                return
            if self.mark_stale() or len(trials) < total:
                may_claim = True
                claimed = len(self._round_trials(index))
                continue
            self.observer.waiting_for_others(index, len(running))
            time.sleep(0.5)

    def _propose(self, box: dict[str, ParamSpec], count: int) -> list[dict[str, Any]]:
        """``count`` new trials' parameters inside ``box``."""
        if self._proposer is not None and self._proposer.seen >= BATCHED_FROM:
            running = [(t.number, t.params) for t in self.executor.in_flight_tasks()]
            return self._proposer.propose(count, running)
        return [
            sample_params(self.sampler, self.store.study, box, informative=self._informative)
            for _ in range(count)
        ]

    def _observe(self, outcomes: list[TrialOutcome]) -> None:
        """Hand finished trials to the batched proposer (its incremental view)."""
        if self._proposer is None:
            return
        for o in outcomes:
            steps = len(o.history.get("records", ())) if o.history else 0
            self._proposer.observe(
                o.number,
                o.params,
                o.state,
                o.value,
                last_step=steps or None,
                last_value=o.value,
            )

    def _close(self, current: RoundRecord) -> tuple[RoundRecord, RoundRecord | None, str]:
        """End the round; the next round's record, or None with the reason to stop.

        The round rule (:func:`hpsearch.round_rule.decide`) decides the next
        box from every finished trial so far; its decision is recorded with
        the round, the last round's too (where a warm start would begin).
        """
        index = current.index
        history = [
            t
            for t in self.store.trials()
            if not is_stale(t) and -1 < int(t.user_attrs.get(records.TRIAL_ROUND, -1)) <= index
        ]
        trials = [t for t in history if t.user_attrs.get(records.TRIAL_ROUND) == index]
        complete = self._better_first([t for t in trials if t.state == TrialState.COMPLETE])
        values = [t.value for t in complete]
        # COMPLETE trials first, then the PRUNED ones that trained longest (see
        # hpsearch.ranking): with a pruner, few trials may complete.
        top = ranking.rank(trials, maximize=self._maximize)[: self.config.narrowing.top_k]
        box = space.box_from_record(current.box)
        points = [p for p in map(ranking.to_point, history) if p is not None]
        decision = None
        if points:
            decision = round_rule.decide(
                box,
                self._region,
                points,
                round_index=index,
                settings=round_rule.RuleSettings(
                    top_k=self.config.narrowing.top_k,
                    margin=self.config.narrowing.margin,
                    maximize=self._maximize,
                ),
                scale=metric_scale.with_curve_noise(self._scale, history),
            )
        ended = dataclasses.replace(
            current,
            top_trials=[t.number for t in top],
            best=complete[0].value if complete else None,
            median=statistics.median(values) if values else None,
            ended_at=_now(),
            decision=decision.action if decision else None,
            reason=decision.reason if decision else None,
            evidence=decision.evidence if decision else {},
            next_box=space.box_to_record(decision.box) if decision else None,
        )
        following: RoundRecord | None = None
        total_rounds = self.config.narrowing.rounds
        if index + 1 >= total_rounds:
            reason = f"all {total_rounds} rounds done"
        elif decision is None:
            reason = f"no trial up to round {index + 1} has a value to rank; stopped"
        elif space.is_point(decision.box):
            reason = f"the box is a single point after round {index + 1}; nothing left to search"
        else:
            reason = ""
            following = RoundRecord(
                index=index + 1,
                box=space.box_to_record(decision.box),
                n_trials=self.config.narrowing.trials_per_round,
                started_at=_now(),
                moved_edges=list(decision.moved_edges),
            )
        status = None if following else {"state": "finished", "reason": reason}
        recorded, wrote = self.store.close_round(ended, following, status)
        if not wrote:  # another driver closed it first: follow its records
            rounds = {r.index: r for r in self.store.rounds()}
            following = rounds.get(index + 1)
            status = self.store.user_attrs().get(records.STATUS_KEY) or {}
            reason = status.get("reason", reason)
        return recorded, following, reason

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
            self._raise_if_cancelled()
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
