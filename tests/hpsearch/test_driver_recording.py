"""The driver records finished trials in batches, and never loses one it holds.

An in-process executor (no Ray) trains each trial for real with
:func:`hpsearch.worker.run_trial` and hands outcomes back in bursts, so the
driver's buffering (:data:`hpsearch.search.RECORD_DELAY`) is exercised
deterministically: the number of write transactions, and what the database
holds after an error in the middle of a round.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpsearch import records, search
from hpsearch.config import load_study
from hpsearch.runner import load_study_data
from hpsearch.sampling import make_sampler
from hpsearch.search import NarrowingSearch
from hpsearch.storage import StudyStore
from hpsearch.worker import TrialOutcome, TrialTask, run_trial
from tests.hpsearch.studies_for_tests import small_study


class InProcessExecutor:
    """Trains queued trials when asked for results, ``burst`` per ``wait``."""

    def __init__(self, data, *, capacity: int = 6, burst: int = 3, fail_after: int | None = None):
        self.data = data
        self.capacity = capacity
        self.low_water = 2
        self.burst = burst
        self.fail_after = fail_after
        self.returned = 0
        self._queue: list[TrialTask] = []

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    def submit(self, task: TrialTask) -> None:
        self._queue.append(task)

    def submit_pack(self, tasks: list[TrialTask]) -> None:
        self._queue.extend(tasks)

    def in_flight_tasks(self) -> list[TrialTask]:
        return list(self._queue)

    def cancel_all(self) -> None:
        self._queue.clear()

    def wait(self, timeout: float | None = None) -> list[TrialOutcome]:
        if self.fail_after is not None and self.returned >= self.fail_after:
            raise KeyboardInterrupt  # the user's second Ctrl-C, mid-round
        done, self._queue = self._queue[: self.burst], self._queue[self.burst :]
        self.returned += len(done)
        return [run_trial(task, self.data) for task in done]


@pytest.fixture()
def study(tmp_path: Path):
    config = load_study(small_study(tmp_path / "s.toml", "rec", epochs=2, rounds=2, trials=9))
    data = load_study_data(config)
    store, _ = StudyStore.open(
        f"sqlite:///{tmp_path / 'r.db'}",
        config.name,
        direction=config.direction,
        sampler=make_sampler(config.sampler, config.seed),
        create=True,
    )
    return config, data, store


def _search(config, store, executor) -> NarrowingSearch:
    sampler = make_sampler(config.sampler, config.seed)
    return NarrowingSearch(config, store, executor, sampler, final_eval=False)


def test_finished_trials_are_written_in_batches_not_one_transaction_each(study, monkeypatch):
    config, data, store = study
    monkeypatch.setattr(search, "RECORD_DELAY", 60.0)  # only size and round end flush
    calls: list[int] = []
    finish = store.finish_trials
    monkeypatch.setattr(store, "finish_trials", lambda o: (calls.append(len(o)), finish(o)))

    result = _search(config, store, InProcessExecutor(data, burst=1)).run()

    assert len(result.rounds) == 2
    assert sum(calls) == 18  # every trial recorded exactly once
    assert len(calls) < 18 / 2  # far fewer transactions than trials
    states = [t.state for t in store.trials()]
    assert states.count(TrialState.COMPLETE) == 18
    assert TrialState.RUNNING not in states


def test_batch_is_written_within_the_delay_even_mid_round(study, monkeypatch):
    config, data, store = study
    monkeypatch.setattr(search, "RECORD_DELAY", 0.0)  # due at once: one write per burst
    calls: list[int] = []
    finish = store.finish_trials
    monkeypatch.setattr(store, "finish_trials", lambda o: (calls.append(len(o)), finish(o)))

    _search(config, store, InProcessExecutor(data, burst=2)).run()

    assert sum(calls) == 18
    assert max(calls) <= 2


def test_an_interrupt_mid_round_records_every_finished_trial_first(study, monkeypatch):
    config, data, store = study
    monkeypatch.setattr(search, "RECORD_DELAY", 60.0)  # nothing written before the error
    executor = InProcessExecutor(data, burst=2, fail_after=4)

    with pytest.raises(KeyboardInterrupt):
        _search(config, store, executor).run()

    trials = store.trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    stale = [t for t in trials if search.is_stale(t)]
    assert len(complete) == 4  # the four trials the workers had finished
    assert all(t.user_attrs[records.TRIAL_CURVE] for t in complete)
    assert len(stale) == len(trials) - 4  # the rest were in flight: marked for redoing
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_resume_after_an_interrupt_completes_the_study_exactly(study, monkeypatch):
    config, data, store = study
    monkeypatch.setattr(search, "RECORD_DELAY", 60.0)
    with pytest.raises(KeyboardInterrupt):
        _search(config, store, InProcessExecutor(data, burst=2, fail_after=4)).run()

    result = _search(config, store, InProcessExecutor(data, burst=3)).run()

    live = [t for t in store.trials() if not search.is_stale(t)]
    assert len(result.rounds) == 2
    assert len(live) == 18
    assert all(t.state == TrialState.COMPLETE for t in live)


def test_start_and_completion_times_are_right_in_any_time_zone(study, monkeypatch):
    """Optuna keeps naive UTC in the database and shows local time: the
    driver's own writes must follow that, or times shift by the UTC offset."""
    import datetime
    import time

    config, data, store = study
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        before = datetime.datetime.now()
        _search(config, store, InProcessExecutor(data, burst=3)).run()
        after = datetime.datetime.now()
        trials = store.trials()
    finally:
        monkeypatch.undo()
        time.tzset()
    assert trials
    slack = datetime.timedelta(seconds=1)
    for t in trials:
        assert before - slack <= t.datetime_start <= t.datetime_complete <= after + slack
