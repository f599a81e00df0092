"""StudyStore's writes keep Optuna's conventions, and its resume check sees every trial.

Every test runs on SQLite and on PostgreSQL (the write paths differ: on
PostgreSQL a batch's writes are one statement, see
:meth:`hpsearch.storage.StudyStore._write_claim_postgres` and
:meth:`~hpsearch.storage.StudyStore._finish_postgres`).
"""

from __future__ import annotations

import datetime
import logging
import math
import threading
import time

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from hpsearch import records
from hpsearch.errors import HPSearchError
from hpsearch.storage import StudyStore
from hpsearch.worker import TrialOutcome
from tests.hpsearch.fake_study import postgres_database

LR = FloatDistribution(1e-4, 1.0, log=True)
DROPOUT = FloatDistribution(0.0, 0.5)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    """A fresh, empty results database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        with postgres_database() as pg_url:
            yield pg_url


def _store(url: str, name: str = "s") -> StudyStore:
    store, existed = StudyStore.open(
        url,
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


def _raw_times(store: StudyStore) -> list[tuple[datetime.datetime, datetime.datetime]]:
    """The trials' start and completion times as the database holds them (SQLite
    keeps text, PostgreSQL a timestamp without time zone)."""
    with store.rdb.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT datetime_start, datetime_complete FROM trials").all()

    def parsed(value):
        return (
            value
            if isinstance(value, datetime.datetime)
            else datetime.datetime.fromisoformat(value)
        )

    return [(parsed(start), parsed(end)) for start, end in rows]


def test_fail_trial_records_naive_utc_like_every_other_write(url, kolkata):
    store = _store(url)
    [(trial_id, _)] = store.create_running_trials([({"lr": 0.01}, 0)], {"lr": LR})
    assert store.fail_trial(trial_id, "stale: a test")
    utc_now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    # Local time here is 5 h 30 min ahead of UTC: a time written in the wrong
    # zone is 330 minutes off in the column.
    [(started, completed)] = _raw_times(store)
    for stamp in (started, completed):
        assert abs(stamp - utc_now) < datetime.timedelta(minutes=10), (stamp, utc_now)
    assert started <= completed
    # Optuna reads both columns the same way (as local time), so they stay in order.
    [trial] = store.trials()
    assert trial.state == TrialState.FAIL
    assert trial.datetime_start <= trial.datetime_complete
    assert trial.datetime_complete - trial.datetime_start < datetime.timedelta(minutes=10)


def test_fail_trial_leaves_a_finished_trial_alone(url):
    store = _store(url)
    [(trial_id, _)] = store.create_running_trials([({"lr": 0.01}, 0)], {"lr": LR})
    assert store.fail_trial(trial_id, "stale: first")
    assert not store.fail_trial(trial_id, "stale: second")
    [trial] = store.trials()
    assert trial.user_attrs[records.TRIAL_FAIL_REASON] == "stale: first"


def _add(store: StudyStore, params: dict, distributions: dict) -> None:
    store.study.add_trial(
        optuna.trial.create_trial(params=params, distributions=distributions, value=0.5)
    )


def test_check_distributions_looks_past_the_first_trial(url):
    store = _store(url)
    # Dropout was searched only from the second trial on (the study file gained it).
    _add(store, {"lr": 0.01}, {"lr": LR})
    _add(store, {"lr": 0.02, "dropout_ratio": 0.1}, {"lr": LR, "dropout_ratio": DROPOUT})
    store.check_distributions({"lr": LR, "dropout_ratio": DROPOUT})  # unchanged: fine
    changed = {"lr": LR, "dropout_ratio": CategoricalDistribution([0.0, 0.25])}
    with pytest.raises(HPSearchError, match=r"search\.dropout_ratio: the recorded study"):
        store.check_distributions(changed)


def test_check_distributions_catches_changed_choices_seen_only_in_later_trials(url):
    store = _store(url)
    _add(store, {"lr": 0.01}, {"lr": LR})
    _add(store, {"lr": 0.01}, {"lr": LR})
    both = CategoricalDistribution([True, False])
    _add(store, {"lr": 0.02, "batchnorm": True}, {"lr": LR, "batchnorm": both})
    store.check_distributions({"lr": LR, "batchnorm": both})
    with pytest.raises(HPSearchError, match=r"search\.batchnorm: the recorded study samples it"):
        store.check_distributions({"lr": LR, "batchnorm": CategoricalDistribution([True])})


def test_a_round_never_gets_more_live_trials_than_it_asks_for(url):
    """Claims are counted per round without scanning the study: stale trials free
    their place, numbers stay Optuna's (dense, in creation order)."""
    store = _store(url)
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


def test_round_counts_of_a_study_recorded_without_them_are_counted_once(url):
    store = _store(url)
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


def _outcome(trial_id: int, number: int, state: str, value: float | None, curve: list[float],
             **extra) -> TrialOutcome:  # fmt: skip
    records_ = [
        {"epoch": e, "train_loss": 1 - a, "train_accuracy": a, "val_loss": 1 - a,
         "val_accuracy": a, "seconds": 0.5}
        for e, a in enumerate(curve, start=1)
    ]  # fmt: skip
    return TrialOutcome(
        number=number, trial_id=trial_id, round=0, seed=100 + number, params={"lr": 0.01},
        state=state, value=value, history={"records": records_}, node="n1", backend="numpy",
        train_seconds=1.5, **extra,
    )  # fmt: skip


def test_finish_trials_records_every_field_and_each_trial_once(url, caplog):
    """One batch: a COMPLETE, a PRUNED and a diverged FAIL trial (NaN in its curve) get
    state, value, intermediate values and attributes as Optuna reads them; a trial
    already marked stale keeps its record, as does a trial reported twice."""
    store = _store(url)
    created = store.create_running_trials([({"lr": 0.01}, 0)] * 4, {"lr": LR}, driver="d1")
    (done, _), (pruned, _), (diverged, _), (stale, _) = created
    assert store.fail_trial(stale, "stale: driver gone")
    outcomes = [
        _outcome(done, 0, "COMPLETE", 0.75, [0.5, 0.75]),
        _outcome(pruned, 1, "PRUNED", 0.25, [0.25]),
        _outcome(
            diverged,
            2,
            "FAIL",
            None,
            [0.5, math.nan],
            diverged=True,
            fail_reason="diverged: loss is nan in epoch 2",
        ),
        _outcome(stale, 3, "COMPLETE", 0.9, [0.9]),
        _outcome(done, 0, "FAIL", None, [], fail_reason="reported twice"),
    ]
    with caplog.at_level(logging.WARNING, logger="hpsearch.storage"):
        store.finish_trials(outcomes)
    assert [r.getMessage() for r in caplog.records if r.name == "hpsearch.storage"] == [
        "trial 3 is not running; not recorded again",
        "trial 0 is not running; not recorded again",
    ]
    by_number = {t.number: t for t in store.trials()}
    assert [by_number[n].state for n in range(4)] == [
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL,
    ]  # fmt: skip
    assert [by_number[n].value for n in range(4)] == [0.75, 0.25, None, None]
    assert by_number[0].intermediate_values == {1: 0.5, 2: 0.75}
    assert by_number[1].intermediate_values == {1: 0.25}
    assert by_number[2].intermediate_values[1] == 0.5
    assert math.isnan(by_number[2].intermediate_values[2])
    assert by_number[3].intermediate_values == {}
    first = by_number[0].user_attrs
    assert first[records.TRIAL_SEED] == 100
    assert first[records.TRIAL_NODE] == "n1"
    assert first[records.TRIAL_EPOCHS] == 2
    assert first[records.TRIAL_TRAIN_SECONDS] == 1.5
    assert first[records.TRIAL_CURVE]["val_accuracy"] == [0.5, 0.75]
    assert first[records.TRIAL_ROUND] == 0 and first[records.TRIAL_DRIVER] == "d1"
    assert records.TRIAL_FAIL_REASON not in first
    assert by_number[2].user_attrs[records.TRIAL_FAIL_REASON].startswith("diverged:")
    assert by_number[2].user_attrs[records.TRIAL_DIVERGED] is True
    assert by_number[2].user_attrs[records.TRIAL_CURVE]["val_accuracy"] == [0.5, None]
    assert by_number[3].user_attrs[records.TRIAL_FAIL_REASON] == "stale: driver gone"
    assert records.TRIAL_CURVE not in by_number[3].user_attrs
    for trial in by_number.values():
        assert trial.params == {"lr": 0.01}
        assert trial.datetime_start <= trial.datetime_complete


def test_concurrent_drivers_never_share_a_number_or_overshoot_a_round(url):
    """Four drivers (each its own connection) ask at once for 5 batches of 4 trials
    each of a round of 50 (80 asked for): every trial gets its own number, numbers
    stay dense, and the round gets exactly 50 (so at least three drivers got some)."""
    stores = [_store(url)] + [
        StudyStore.open(
            url, "s", direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
            create=True,
        )[0]
        for _ in range(3)
    ]  # fmt: skip
    claimed: list[list[int]] = [[] for _ in stores]
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def claim(i: int) -> None:
        try:
            start.wait()
            for _ in range(5):
                created = stores[i].create_running_trials(
                    [({"lr": 0.01}, 0)] * 4, {"lr": LR}, round_limit=50, driver=f"d{i}"
                )
                claimed[i].extend(number for _, number in created)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(n for mine in claimed for n in mine) == list(range(50))
    assert stores[0].count_round(0) == 50
    assert stores[0].user_attrs()[records.claimed_key(0)] == 50
    trials = stores[0].trials()
    assert sorted(t.number for t in trials) == list(range(50))
    for i, mine in enumerate(claimed):
        assert all(
            t.user_attrs[records.TRIAL_DRIVER] == f"d{i}" for t in trials if t.number in mine
        )
        assert sorted(trial.params["lr"] for trial in trials if trial.number in mine) == [
            0.01
        ] * len(mine)
