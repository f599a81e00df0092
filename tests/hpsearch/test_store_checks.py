"""StudyStore's writes keep Optuna's conventions, and its resume check sees every trial."""

from __future__ import annotations

import datetime
import sqlite3
import time

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from hpsearch import records
from hpsearch.errors import HPSearchError
from hpsearch.storage import StudyStore

LR = FloatDistribution(1e-4, 1.0, log=True)
DROPOUT = FloatDistribution(0.0, 0.5)


def _store(tmp_path, name: str = "s") -> StudyStore:
    store, existed = StudyStore.open(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        name,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        create=True,
    )
    assert not existed
    return store


@pytest.fixture
def kolkata(monkeypatch):
    """The process's local time is UTC+5:30 for the test (restored afterwards)."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    assert time.localtime().tm_gmtoff == 5.5 * 3600, "the tz database lacks Asia/Kolkata"
    yield
    monkeypatch.undo()
    time.tzset()


def _raw_times(tmp_path) -> list[tuple[datetime.datetime, datetime.datetime]]:
    """The trials' start and completion times as the database holds them."""
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        rows = conn.execute("SELECT datetime_start, datetime_complete FROM trials").fetchall()
    return [tuple(datetime.datetime.fromisoformat(v) for v in row) for row in rows]


def test_fail_trial_records_naive_utc_like_every_other_write(tmp_path, kolkata):
    store = _store(tmp_path)
    [(trial_id, _)] = store.create_running_trials([({"lr": 0.01}, 0)], {"lr": LR})
    assert store.fail_trial(trial_id, "stale: a test")
    utc_now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    # Local time here is 5 h 30 min ahead of UTC: a time written in the wrong
    # zone is 330 minutes off in the column.
    [(started, completed)] = _raw_times(tmp_path)
    for stamp in (started, completed):
        assert abs(stamp - utc_now) < datetime.timedelta(minutes=10), (stamp, utc_now)
    assert started <= completed
    # Optuna reads both columns the same way (as local time), so they stay in order.
    [trial] = store.trials()
    assert trial.state == TrialState.FAIL
    assert trial.datetime_start <= trial.datetime_complete
    assert trial.datetime_complete - trial.datetime_start < datetime.timedelta(minutes=10)


def test_fail_trial_leaves_a_finished_trial_alone(tmp_path):
    store = _store(tmp_path)
    [(trial_id, _)] = store.create_running_trials([({"lr": 0.01}, 0)], {"lr": LR})
    assert store.fail_trial(trial_id, "stale: first")
    assert not store.fail_trial(trial_id, "stale: second")
    [trial] = store.trials()
    assert trial.user_attrs[records.TRIAL_FAIL_REASON] == "stale: first"


def _add(store: StudyStore, params: dict, distributions: dict) -> None:
    store.study.add_trial(
        optuna.trial.create_trial(params=params, distributions=distributions, value=0.5)
    )


def test_check_distributions_looks_past_the_first_trial(tmp_path):
    store = _store(tmp_path)
    # Dropout was searched only from the second trial on (the study file gained it).
    _add(store, {"lr": 0.01}, {"lr": LR})
    _add(store, {"lr": 0.02, "dropout_ratio": 0.1}, {"lr": LR, "dropout_ratio": DROPOUT})
    store.check_distributions({"lr": LR, "dropout_ratio": DROPOUT})  # unchanged: fine
    changed = {"lr": LR, "dropout_ratio": CategoricalDistribution([0.0, 0.25])}
    with pytest.raises(HPSearchError, match=r"search\.dropout_ratio: the recorded study"):
        store.check_distributions(changed)


def test_check_distributions_catches_changed_choices_seen_only_in_later_trials(tmp_path):
    store = _store(tmp_path)
    _add(store, {"lr": 0.01}, {"lr": LR})
    _add(store, {"lr": 0.01}, {"lr": LR})
    both = CategoricalDistribution([True, False])
    _add(store, {"lr": 0.02, "batchnorm": True}, {"lr": LR, "batchnorm": both})
    store.check_distributions({"lr": LR, "batchnorm": both})
    with pytest.raises(HPSearchError, match=r"search\.batchnorm: the recorded study samples it"):
        store.check_distributions({"lr": LR, "batchnorm": CategoricalDistribution([True])})


def test_a_round_never_gets_more_live_trials_than_it_asks_for(tmp_path):
    """Claims are counted per round without scanning the study: stale trials free
    their place, numbers stay Optuna's (dense, in creation order)."""
    store = _store(tmp_path)
    batch = [({"lr": 0.01}, 0)] * 4
    first = store.create_running_trials(batch, {"lr": LR}, round_limit=6)
    second = store.create_running_trials(batch, {"lr": LR}, round_limit=6)
    assert [n for _, n in first + second] == list(range(6))  # cut to the round's 6
    assert store.create_running_trials(batch, {"lr": LR}, round_limit=6) == []
    assert store.fail_trial(first[0][0], "stale: driver gone")
    assert store.fail_trial(first[1][0], "diverged: not stale")  # still counts
    assert store.count_round(0) == 5
    third = store.create_running_trials(batch, {"lr": LR}, round_limit=6)
    assert [n for _, n in third] == [6]
    fourth = store.create_running_trials([({"lr": 0.02}, 1)] * 2, {"lr": LR}, round_limit=6)
    assert [n for _, n in fourth] == [7, 8]  # another round has its own count
    assert len(store.trials()) == 9


def test_round_counts_of_a_study_recorded_without_them_are_counted_once(tmp_path):
    store = _store(tmp_path)
    for value in (0.01, 0.02, 0.03):
        store.study.add_trial(
            optuna.trial.create_trial(
                params={"lr": value}, distributions={"lr": LR}, value=0.5,
                user_attrs={records.TRIAL_ROUND: 0},
            )
        )  # fmt: skip
    created = store.create_running_trials([({"lr": 0.04}, 0)] * 5, {"lr": LR}, round_limit=5)
    assert [n for _, n in created] == [3, 4]
    assert store.user_attrs()[records.claimed_key(0)] == 5
