"""LeanRDBStorage reads the same FrozenTrials as Optuna's RDBStorage, field for field."""

from __future__ import annotations

import math
import time

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from hpsearch.lean_reads import LeanRDBStorage
from hpsearch.storage_url import open_storage
from tests.hpsearch.fake_study import postgres_database

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _fill(url: str) -> None:
    """Two studies with every kind of trial content Optuna stores."""
    storage = RDBStorage(url)
    study = optuna.create_study(
        study_name="one",
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.enqueue_trial({"lr": 1e-3, "act": "relu", "units": 32})  # WAITING until asked
    for i in range(14):
        trial = study.ask(
            {
                "lr": FloatDistribution(1e-6, 1.0, log=True),
                "wd": FloatDistribution(0.0, 1.0, step=0.25),
                "units": IntDistribution(8, 64, step=8),
                "act": CategoricalDistribution(["relu", "tanh", None, 2.5]),
            }
        )
        trial.set_user_attr("curve", {"epoch": [1, 2], "val": [0.5, math.inf]})
        trial.set_user_attr("round", i % 3)
        trial.storage.set_trial_system_attr(trial._trial_id, "fixed_params", {"lr": 0.1})
        for step, value in enumerate([0.1, math.nan, -math.inf][: i % 4]):
            trial.report(value, step)
        if i % 5 == 0:
            study.tell(trial, 0.5 + i / 100)
        elif i % 5 == 1:
            study.tell(trial, state=TrialState.PRUNED)
        elif i % 5 == 2:
            study.tell(trial, state=TrialState.FAIL)
        elif i % 5 == 3:
            study.tell(trial, math.inf if i % 2 else -math.inf)
        # i % 5 == 4 stays RUNNING
    study.enqueue_trial({"lr": 0.5})
    multi = optuna.create_study(
        study_name="two", storage=storage, directions=["minimize", "maximize"]
    )
    for i in range(4):
        trial = multi.ask({"x": FloatDistribution(-1.0, 1.0)})
        multi.tell(trial, [trial.params["x"], -math.inf if i == 2 else i])
    storage.engine.dispose()


SELECTIONS = [
    (None, set(), -1),
    ((TrialState.COMPLETE,), set(), -1),
    ((TrialState.RUNNING, TrialState.WAITING), set(), -1),
    ((TrialState.PRUNED, TrialState.FAIL), set(), -1),
    (None, set(), 5),
    (None, {1, 3, 4}, 6),
    (None, {2, 9, 40}, 8),
    (None, {1, 2}, -1),
    ((TrialState.COMPLETE,), {2, 3}, 4),
]


def _assert_same_reads(url: str) -> None:
    theirs, ours = RDBStorage(url), LeanRDBStorage(url)
    try:
        studies = theirs.get_all_studies()
        assert len(studies) == 2
        for summary in studies:
            sid = summary._study_id
            for selection in SELECTIONS:
                expected = theirs._get_trials(sid, *selection)
                got = ours._get_trials(sid, *selection)
                assert [t.number for t in got] == [t.number for t in expected], selection
                for a, b in zip(got, expected, strict=True):
                    # FrozenTrial equality compares every field; NaN != NaN, so
                    # compare the reprs of intermediate values separately.
                    assert repr(a.intermediate_values) == repr(b.intermediate_values)
                    a_dict = {**a.__dict__, "intermediate_values": None}
                    b_dict = {**b.__dict__, "intermediate_values": None}
                    assert a_dict == b_dict, (selection, a.number)
            # And through Optuna's trial cache, as samplers and the driver read.
            via_cache = optuna.load_study(study_name=summary.study_name, storage=ours).get_trials()
            assert len(via_cache) == len(theirs.get_all_trials(sid))
        with pytest.raises(KeyError):
            ours._get_trials(10_000, None, set(), -1)
    finally:
        theirs.engine.dispose()
        ours.engine.dispose()


def test_lean_reads_equal_optunas_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _fill(url)
    _assert_same_reads(url)


def test_lean_reads_equal_optunas_in_another_time_zone(tmp_path, monkeypatch):
    """Both turn the stored naive UTC times into the same local times."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _fill(url)
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        _assert_same_reads(url)
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.postgres
def test_lean_reads_equal_optunas_on_postgresql():
    with postgres_database() as url:
        _fill(url)
        _assert_same_reads(url)


def test_more_ids_than_one_query_takes_fall_back_to_reading_the_study(tmp_path, monkeypatch):
    """SQLite caps the variables of one statement; like Optuna, a huge id set
    falls back to reading the study's trials and selecting in Python."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _fill(url)
    ours = LeanRDBStorage(url)
    try:
        sid = ours.get_all_studies()[0]._study_id
        expected = ours._get_trials(sid, None, {1, 2}, 6)
        huge = {1, 2, *range(-200_000, -100_000)}  # more ids than SQLite binds at once
        got = ours._get_trials(sid, None, huge, 6)
        assert [t.number for t in got] == [t.number for t in expected]
    finally:
        ours.engine.dispose()


def test_the_service_opens_the_lean_storage(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}", create=True)
    try:
        assert isinstance(storage, LeanRDBStorage)
    finally:
        storage.engine.dispose()


def test_a_trial_created_during_a_read_is_left_for_the_next_read(tmp_path, monkeypatch):
    """Each table is read by its own SELECT: a trial another driver creates in
    between (visible under READ COMMITTED) must not break the read."""
    import hpsearch.lean_reads as lean

    url = f"sqlite:///{tmp_path / 'r.db'}"
    _fill(url)
    ours, other = LeanRDBStorage(url), RDBStorage(url)
    try:
        sid = ours.get_all_studies()[0]._study_id
        expected = ours._get_trials(sid, None, set(), -1)
        original = lean._rows_of
        calls = []

        def rows_after_a_new_trial(*args, **kwargs):
            if not calls:  # between the trials SELECT and the first table's
                study = optuna.load_study(study_name="one", storage=other)
                study.add_trial(
                    optuna.trial.create_trial(
                        params={"lr": 0.5},
                        distributions={"lr": FloatDistribution(1e-6, 1.0, log=True)},
                        value=0.25,
                        user_attrs={"round": 9},
                    )
                )
            calls.append(args[1])
            return original(*args, **kwargs)

        monkeypatch.setattr(lean, "_rows_of", rows_after_a_new_trial)
        got = ours._get_trials(sid, None, set(), -1)
        assert calls, "the read went through the per-table SELECTs"
        assert got == expected or repr(got) == repr(expected)  # NaN-safe
        monkeypatch.undo()
        assert len(ours._get_trials(sid, None, set(), -1)) == len(expected) + 1
    finally:
        ours.engine.dispose()
        other.engine.dispose()
