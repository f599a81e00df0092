"""hpsearch.results: the pandas view of a recorded study."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from hpsearch import results
from hpsearch.errors import HPSearchError, StorageError, StudyNotFoundError
from hpsearch.storage_url import close_storage, open_storage
from tests.hpsearch.fake_study import (
    START,
    TRIAL_SPACING,
    FakeStudy,
    postgres_database,
    write_fake_study,
)

TIME = "datetime64[us, UTC]"
TRIAL_COLUMNS = {
    "number": "int64",
    "state": "category",
    "value": "float64",
    "round": "Int64",
    "seed": "Int64",
    "lr": "float64",
    "weight_decay": "float64",
    "dropout_ratio": "float64",
    "batchnorm": "boolean",
    "batch_size": "Int64",
    "activation": "string",
    "diverged": "boolean",
    "stopped": "boolean",
    "node": "string",
    "backend": "string",
    "train_seconds": "float64",
    "epochs_completed": "Int64",
    "fail_reason": "string",
    "datetime_start": TIME,
    "datetime_complete": TIME,
    "duration": "float64",
}
READERS = {
    "trials": results.trials,
    "curves": results.curves,
    "rounds": results.rounds,
    "best": results.best,
}


def _dtypes(frame: pd.DataFrame) -> dict[str, str]:
    return {c: str(t) for c, t in frame.dtypes.items()}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[str, FakeStudy, FakeStudy]:
    """A database with a maximize study (one trial still running) and a minimize study."""
    db = tmp_path_factory.mktemp("results") / "results.db"
    url = f"sqlite:///{db}"
    up = write_fake_study(url, "up", running=1)
    down = write_fake_study(url, "down", direction="minimize", rounds=2, seed=3, final_eval=False)
    return url, up, down


# --- import -------------------------------------------------------------------------


def test_importing_results_does_not_import_ray():
    code = "import sys, hpsearch.results, hpsearch.cli.query; print('ray' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


# --- studies ------------------------------------------------------------------------


def test_studies_one_row_per_study_with_counts(recorded):
    url, up, down = recorded
    df = results.studies(url)
    assert list(df.columns) == list(results.STUDY_COLUMNS)
    assert _dtypes(df) == {
        "study": "string",
        "direction": "string",
        "metric": "string",
        "n_trials": "int64",
        "n_complete": "int64",
        "n_pruned": "int64",
        "n_fail": "int64",
        "n_rounds": "int64",
        "best_value": "float64",
        "datetime_start": TIME,
        "datetime_end": TIME,
    }
    assert df["study"].tolist() == ["up", "down"]
    row = df.set_index("study").loc["up"]
    assert row["direction"] == "maximize"
    assert row["metric"] == "val_accuracy"
    assert row["n_trials"] == len(up.trials) == 19
    assert row["n_complete"] == len(up.numbers("COMPLETE"))
    assert row["n_pruned"] == len(up.numbers("PRUNED")) == 3
    assert row["n_fail"] == len(up.numbers("FAIL")) == 2
    assert row["n_rounds"] == 3
    assert row["best_value"] == up.best.value
    assert row["datetime_start"] == pd.Timestamp(START)
    last_end = max(t.complete for t in up.trials if t.complete)
    assert row["datetime_end"] == pd.Timestamp(last_end)
    low = df.set_index("study").loc["down"]
    assert low["direction"] == "minimize"
    assert low["best_value"] == down.best.value


def test_studies_of_an_empty_database_is_empty_with_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    close_storage(open_storage(url, create=True))
    df = results.studies(url)
    assert df.empty
    assert list(df.columns) == list(results.STUDY_COLUMNS)
    assert str(df["datetime_start"].dtype) == TIME


def test_studies_works_on_a_storage_without_sql(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    fake = write_fake_study(storage, "mem", rounds=2)
    df = results.studies(storage)
    assert df["n_trials"].tolist() == [len(fake.trials)]
    assert df["n_fail"].tolist() == [len(fake.numbers("FAIL"))]
    assert df["datetime_start"].tolist() == [pd.Timestamp(START)]


# --- trials -------------------------------------------------------------------------


def test_trials_columns_and_dtypes(recorded):
    url, _, _ = recorded
    df = results.trials(url, "up")
    assert _dtypes(df) == TRIAL_COLUMNS
    assert list(df.columns) == list(TRIAL_COLUMNS)
    assert list(df["state"].cat.categories) == list(results.TRIAL_STATES)
    assert isinstance(df.index, pd.RangeIndex)


def test_trials_hold_what_was_recorded(recorded):
    url, up, _ = recorded
    df = results.trials(url, "up").set_index("number")
    assert df.index.tolist() == [t.number for t in up.trials]
    for t in up.trials:
        row = df.loc[t.number]
        assert row["state"] == t.state
        if t.value is None:
            assert math.isnan(row["value"])
        else:
            assert row["value"] == t.value
        assert row["round"] == t.round + 1  # numbered from 1, stored 0-based
        assert row["seed"] == t.seed
        for name, value in t.params.items():
            assert row[name] == value, (t.number, name)
        assert row["datetime_start"] == pd.Timestamp(t.start)
        if t.complete is None:
            assert pd.isna(row["datetime_complete"]) and math.isnan(row["duration"])
        else:
            assert row["datetime_complete"] == pd.Timestamp(t.complete)
            assert row["duration"] == pytest.approx((t.complete - t.start).total_seconds())
    assert df.loc[0, "datetime_start"] == pd.Timestamp(START)
    assert df.loc[4, "datetime_start"] == pd.Timestamp(
        START + dt.timedelta(seconds=4 * TRIAL_SPACING)
    )


def test_pruned_trials_have_a_value_and_stopped_early(recorded):
    url, up, _ = recorded
    df = results.trials(url, "up")
    pruned = df[df["state"] == "PRUNED"]
    assert pruned["number"].tolist() == up.numbers("PRUNED")
    assert pruned["value"].notna().all()
    assert pruned["stopped"].all()
    assert (pruned["epochs_completed"] == 3).all()


def test_diverged_and_crashed_trials_fail_with_their_reason(recorded):
    url, up, _ = recorded
    df = results.trials(url, "up").set_index("number")
    diverged = [t for t in up.trials if t.diverged]
    assert len(diverged) == 1
    row = df.loc[diverged[0].number]
    assert row["state"] == "FAIL"
    assert bool(row["diverged"]) is True
    assert "diverged" in row["fail_reason"]
    assert row["epochs_completed"] == 2
    assert math.isnan(row["value"])
    crashed = next(t for t in up.trials if t.state == "FAIL" and not t.diverged)
    row = df.loc[crashed.number]
    assert row["fail_reason"].startswith("worker died")
    assert pd.isna(row["diverged"]) and pd.isna(row["node"])  # the worker never reported
    assert df.loc[df["state"] == "COMPLETE", "diverged"].eq(False).all()


def test_running_trial_has_no_end(recorded):
    url, _, _ = recorded
    df = results.trials(url, "up")
    running = df[df["state"] == "RUNNING"]
    assert len(running) == 1
    assert running["datetime_complete"].isna().all()
    assert running["value"].isna().all()


def test_trials_of_a_plain_optuna_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    study = optuna.create_study(storage=url, study_name="plain")
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("n", 1, 3), n_trials=3)
    df = results.trials(url, "plain")
    assert list(df.columns[:7]) == ["number", "state", "value", "round", "seed", "x", "n"]
    assert str(df["x"].dtype) == "float64" and str(df["n"].dtype) == "Int64"
    assert df["round"].isna().all() and df["node"].isna().all()
    assert (df["duration"] >= 0).all()


# --- best ---------------------------------------------------------------------------


def test_best_is_the_highest_complete_trial_when_maximizing(recorded):
    url, up, _ = recorded
    best = results.best(url, "up")
    assert len(best) == 1
    assert _dtypes(best) == TRIAL_COLUMNS
    assert best["number"].item() == up.best.number
    df = results.trials(url, "up")
    complete = df[df["state"] == "COMPLETE"]
    assert best["value"].item() == complete["value"].max()
    # A pruned trial never wins, even when its value would.
    assert best["state"].item() == "COMPLETE"


def test_best_is_the_lowest_complete_trial_when_minimizing(recorded):
    url, _, down = recorded
    best = results.best(url, "down")
    df = results.trials(url, "down")
    assert best["number"].item() == down.best.number
    assert best["value"].item() == df.loc[df["state"] == "COMPLETE", "value"].min()
    assert best["value"].item() < df.loc[df["state"] == "COMPLETE", "value"].max()


def test_best_row_equals_the_trials_row(recorded):
    url, up, _ = recorded
    df = results.trials(url, "up")
    expected = df[df["number"] == up.best.number].reset_index(drop=True)
    assert_frame_equal(results.best(url, "up"), expected)


def test_best_ties_go_to_the_lowest_number():
    frame = pd.DataFrame(
        {
            "number": [0, 1, 2, 3],
            "state": pd.Categorical(["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]),
            "value": [0.5, 0.9, 0.99, 0.9],
        }
    )
    assert results.pick_best(frame, "maximize")["number"].item() == 1
    assert results.pick_best(frame, "minimize")["number"].item() == 0


def test_best_without_a_complete_trial_is_empty_with_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'failing.db'}"
    study = optuna.create_study(storage=url, study_name="failing")
    study.optimize(lambda t: t.suggest_float("lr", 1e-6, 1e-2, log=True) * math.nan, n_trials=2)
    best = results.best(url, "failing")
    assert best.empty
    assert list(best.columns) == list(results.trials(url, "failing").columns)
    assert str(best["lr"].dtype) == "float64"


# --- rounds -------------------------------------------------------------------------


def test_rounds_decode_each_box(recorded):
    url, up, _ = recorded
    df = results.rounds(url, "up")
    assert list(df.columns) == [
        *results.ROUND_COLUMNS,
        "lr_low",
        "lr_high",
        "weight_decay_low",
        "weight_decay_high",
        "dropout_ratio_low",
        "dropout_ratio_high",
        "batchnorm_choices",
        "batch_size_low",
        "batch_size_high",
        "activation_choices",
    ]
    dtypes = _dtypes(df)
    assert dtypes["round"] == "int64" and dtypes["n_trials"] == "Int64"
    assert dtypes["best"] == dtypes["median"] == dtypes["wall_seconds"] == "float64"
    assert dtypes["started_at"] == dtypes["ended_at"] == TIME
    assert dtypes["lr_low"] == dtypes["batch_size_high"] == "float64"
    assert dtypes["top_trials"] == dtypes["batchnorm_choices"] == "object"
    assert df["round"].tolist() == [1, 2, 3]  # numbered from 1, as hpsearch run prints them
    for rec, (_, row) in zip(up.rounds, df.iterrows(), strict=True):
        assert row["n_trials"] == rec.n_trials
        assert row["best"] == rec.best and row["median"] == rec.median
        assert row["top_trials"] == rec.top_trials
        assert row["moved_edges"] == []
        assert row["started_at"] == pd.Timestamp(rec.started_at)
        assert row["wall_seconds"] == pytest.approx(
            (
                dt.datetime.fromisoformat(rec.ended_at) - dt.datetime.fromisoformat(rec.started_at)
            ).total_seconds()
        )
        for name, spec in rec.box.items():
            if "choices" in spec:
                assert row[f"{name}_choices"] == spec["choices"]
            else:
                assert row[f"{name}_low"] == spec["low"]
                assert row[f"{name}_high"] == spec["high"]
    # The first box is the study file's; the narrowing shrank lr's range.
    assert (df.loc[0, "lr_low"], df.loc[0, "lr_high"]) == (1e-6, 1e-2)
    assert df.loc[2, "lr_high"] / df.loc[2, "lr_low"] < 1e4
    assert df.loc[0, "batchnorm_choices"] == [True, False]


def test_rounds_of_a_study_without_rounds_is_empty_with_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    optuna.create_study(storage=url, study_name="plain")
    df = results.rounds(url, "plain")
    assert df.empty
    assert list(df.columns) == list(results.ROUND_COLUMNS)
    assert str(df["started_at"].dtype) == TIME


def test_round_missing_a_parameter_gets_missing_cells(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    study = optuna.create_study(storage=url, study_name="r")
    from hpsearch import records

    study.set_user_attr(
        records.round_key(0),
        records.RoundRecord(0, {"lr": {"low": 1e-5, "high": 1e-3, "log": True}}, 4).to_dict(),
    )
    study.set_user_attr(
        records.round_key(1),
        {**records.RoundRecord(1, {"batchnorm": {"choices": [True]}}, 4).to_dict(), "new": 1},
    )
    df = results.rounds(url, "r")
    assert df["lr_low"].tolist()[0] == 1e-5 and math.isnan(df["lr_low"].tolist()[1])
    assert df["batchnorm_choices"].tolist() == [None, [True]]
    assert df["best"].isna().all() and df["wall_seconds"].isna().all()


# --- curves -------------------------------------------------------------------------


def test_curves_long_format_one_row_per_epoch_and_split(recorded):
    url, up, _ = recorded
    df = results.curves(url, "up")
    assert list(df.columns) == ["trial", "epoch", "split", "loss", "accuracy"]
    assert _dtypes(df) == {
        "trial": "int64",
        "epoch": "int64",
        "split": "category",
        "loss": "float64",
        "accuracy": "float64",
    }
    assert list(df["split"].cat.categories) == ["train", "val"]
    running = [t for t in up.trials if t.state == "RUNNING"]
    assert len(df) == 2 * up.n_curve_epochs + sum(len(t.intermediate) for t in running)
    for t in up.trials:
        rows = df[df["trial"] == t.number]
        if t.curve is None and not t.intermediate:
            assert rows.empty  # the crashed worker recorded nothing
            continue
        if t.curve is None:  # still running: intermediate values as val rows
            assert rows["split"].tolist() == ["val"] * len(t.intermediate)
            assert rows["accuracy"].tolist() == list(t.intermediate.values())
            assert rows["loss"].isna().all()
            continue
        assert len(rows) == 2 * t.epochs
        assert rows["epoch"].tolist() == [e for e in range(1, t.epochs + 1) for _ in (0, 1)]
        assert rows["split"].tolist() == ["train", "val"] * t.epochs
        train, val = rows[rows["split"] == "train"], rows[rows["split"] == "val"]
        assert train["loss"].tolist() == list(t.curve.train_loss)
        assert train["accuracy"].tolist() == list(t.curve.train_accuracy)
        assert val["loss"].tolist() == list(t.curve.val_loss)
        assert val["accuracy"].tolist() == list(t.curve.val_accuracy)
        if t.state == "COMPLETE":
            assert val["accuracy"].iloc[-1] == t.value  # the metric is the final epoch's


def test_curves_pivot_to_wide_form(recorded):
    url, up, _ = recorded
    wide = results.curves(url, "up").pivot_table(
        index=["trial", "epoch"], columns="split", values="accuracy", observed=True
    )
    first = up.trials[0]
    assert wide.loc[(first.number, 1), "val"] == first.curve.val_accuracy[0]


def test_curves_empty_when_nothing_recorded(tmp_path):
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    optuna.create_study(storage=url, study_name="plain").optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=2
    )
    df = results.curves(url, "plain")
    assert df.empty
    assert _dtypes(df) == {
        "trial": "int64",
        "epoch": "int64",
        "split": "category",
        "loss": "float64",
        "accuracy": "float64",
    }


# --- study_info -----------------------------------------------------------------------


def test_study_info_holds_the_study_file_and_final_evaluation(recorded):
    url, up, _ = recorded
    info = results.study_info(url, "up")
    assert info.study_file == up.study_file
    assert info.direction == "maximize" and info.metric == "val_accuracy"
    assert info.final_eval == up.final_eval
    assert info.n_rounds == 3
    assert results.study_info(url, "down").final_eval is None


# --- errors -------------------------------------------------------------------------


@pytest.mark.parametrize("reader", [*READERS, "study_info"])
def test_missing_study_names_it_and_lists_the_existing_ones(recorded, reader):
    url, _, _ = recorded
    fn = READERS.get(reader) or results.study_info
    with pytest.raises(StudyNotFoundError) as info:
        fn(url, "nope")
    message = str(info.value)
    assert "'nope'" in message
    assert "existing studies: up, down" in message
    assert "\n" not in message


def test_missing_study_in_an_empty_database_says_so(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    close_storage(open_storage(url, create=True))
    with pytest.raises(StudyNotFoundError, match="holds no studies"):
        results.trials(url, "x")


@pytest.mark.parametrize(
    "url, words",
    [
        ("hpsearch.db", "cannot be parsed"),
        ("postgres://me:hunter2@db.example/hp", "postgresql://"),
        ("mysql://me:hunter2@db.example/hp", "unsupported database 'mysql'"),
        ("sqlite://relative.db", "three slashes"),
        ("postgresql://me:hunter2@/hp", "needs a host"),
    ],
)
def test_malformed_url_is_a_storage_error_naming_url_and_forms(url, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for fn in (results.studies, lambda u: results.trials(u, "x")):
        with pytest.raises(StorageError) as info:
            fn(url)
        message = str(info.value)
        assert words in message
        assert "hunter2" not in message
        if "hunter2" in url:
            assert "me:***@" in message
        assert "sqlite:///relative/path.db" in message and "postgresql://" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("reader", ["studies", *READERS, "export"])
def test_missing_sqlite_file_is_an_error_and_is_not_created(tmp_path, reader):
    db = tmp_path / "missing.db"
    url = f"sqlite:///{db}"
    with pytest.raises(StorageError) as info:
        if reader == "studies":
            results.studies(url)
        elif reader == "export":
            results.export(url, "x", tmp_path / "out.csv", "csv")
        else:
            READERS[reader](url, "x")
    assert str(db) in str(info.value) and "does not exist" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_database_is_a_storage_error(tmp_path):
    db = tmp_path / "notes.db"
    db.write_text("these are not the tables you are looking for\n" * 20)
    with pytest.raises(StorageError, match="not a SQLite database"):
        results.studies(f"sqlite:///{db}")
    empty = tmp_path / "other.db"
    import sqlite3

    sqlite3.connect(empty).execute("create table t (x)").connection.commit()
    with pytest.raises(StorageError, match="no Optuna results tables"):
        results.studies(f"sqlite:///{empty}")


# --- cost and safety of reading ---------------------------------------------------------


def _statements(url: str, fn) -> int:
    import sqlalchemy

    storage = open_storage(url, create=False)
    count = 0

    def on_execute(*_args):
        nonlocal count
        count += 1

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", on_execute)
    try:
        fn(storage)
    finally:
        close_storage(storage)
    return count


def test_reads_cost_a_fixed_number_of_queries_whatever_the_trial_count(tmp_path):
    small = f"sqlite:///{tmp_path / 'small.db'}"
    large = f"sqlite:///{tmp_path / 'large.db'}"
    write_fake_study(small, "s", rounds=1, trials_per_round=3)
    write_fake_study(large, "s", rounds=2, trials_per_round=12)
    for fn in (
        results.studies,
        lambda s: results.trials(s, "s"),
        lambda s: results.curves(s, "s"),
        lambda s: results.best(s, "s"),
        lambda s: results.rounds(s, "s"),
    ):
        assert _statements(small, fn) == _statements(large, fn)
    assert _statements(large, lambda s: results.trials(s, "s")) < 15


def test_direct_sql_read_equals_optunas_get_all_trials(recorded, monkeypatch):
    url, _, _ = recorded
    fast = {n: (results.trials(url, n), results.curves(url, n)) for n in ("up", "down")}

    def disabled(*_args, **_kwargs):
        raise ValueError("direct read disabled")

    monkeypatch.setattr(results, "_read_trials_sql", disabled)
    for name, (trials, curves) in fast.items():
        assert_frame_equal(results.trials(url, name), trials, check_exact=True)
        assert_frame_equal(results.curves(url, name), curves, check_exact=True)


def test_any_optuna_storage_reads_the_same_as_the_database(recorded):
    url, _, _ = recorded
    memory = optuna.storages.InMemoryStorage()
    write_fake_study(memory, "up", running=1)
    for reader in READERS.values():
        assert_frame_equal(reader(memory, "up"), reader(url, "up"), check_exact=True)


def test_reading_never_writes_the_database(recorded):
    url, _, _ = recorded
    path = Path(url.removeprefix("sqlite:///"))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    results.studies(url)
    for fn in READERS.values():
        fn(url, "up")
    results.study_info(url, "up")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    reader = open_storage(url, create=False)
    try:
        with pytest.raises(Exception, match=r"(?i)readonly|read-only|commit"):
            reader.set_study_user_attr(reader.get_study_id_from_name("up"), "k", 1)
    finally:
        close_storage(reader)


def test_readers_see_a_study_while_it_is_being_written(tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    writer = open_storage(url, create=True)
    try:
        write_fake_study(writer, "live", rounds=1, trials_per_round=3)
        assert len(results.trials(url, "live")) == 3
        study = optuna.load_study(study_name="live", storage=writer)
        study.ask()  # a new RUNNING trial, committed by the writer
        df = results.trials(url, "live")
        assert df["state"].tolist()[-1] == "RUNNING" and len(df) == 4
    finally:
        close_storage(writer)


# --- export -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", results.EXPORT_FORMATS)
@pytest.mark.parametrize("table", results.EXPORT_TABLES)
def test_export_round_trips_columns_dtypes_and_values(recorded, tmp_path, fmt, table):
    url, _, _ = recorded
    path = tmp_path / f"up_{table}.{fmt}"
    written = results.export(url, "up", path, fmt, table=table)
    assert written == path and path.stat().st_size > 0
    expected = READERS[table](url, "up")
    back = results.read_export(path, fmt, table=table)
    assert_frame_equal(back, expected, check_exact=True)


@pytest.mark.parametrize("fmt", results.EXPORT_FORMATS)
def test_export_of_the_trials_round_trips_for_minimize_and_empty_studies(tmp_path, fmt):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    write_fake_study(url, "down", direction="minimize", rounds=2, seed=5)
    optuna.create_study(storage=url, study_name="empty")
    for name in ("down", "empty"):
        path = tmp_path / f"{name}.{fmt}"
        results.export(url, name, path, fmt)
        assert_frame_equal(results.read_export(path, fmt), results.trials(url, name))


def test_export_format_is_inferred_from_the_suffix(recorded, tmp_path):
    url, _, _ = recorded
    for suffix in (".csv", ".parquet", ".json"):
        path = results.export(url, "up", tmp_path / f"t{suffix}")
        assert_frame_equal(results.read_export(path), results.trials(url, "up"))


def test_exports_are_readable_by_plain_pandas(recorded, tmp_path):
    url, up, _ = recorded
    expected = results.trials(url, "up")
    for fmt in results.EXPORT_FORMATS:
        results.export(url, "up", tmp_path / f"t.{fmt}", fmt)
    csv = pd.read_csv(tmp_path / "t.csv")
    assert list(csv.columns) == list(expected.columns)
    np.testing.assert_array_equal(csv["value"].to_numpy(), expected["value"].to_numpy())
    parquet = pd.read_parquet(tmp_path / "t.parquet")
    assert list(parquet.columns) == list(expected.columns)
    assert str(parquet["batchnorm"].dtype) == "boolean"
    table = pd.read_json(tmp_path / "t.json", orient="table")
    assert list(table.columns) == list(expected.columns)
    assert table["number"].tolist() == [t.number for t in up.trials]


def test_export_rejects_unknown_format_and_table_and_missing_study(recorded, tmp_path):
    url, _, _ = recorded
    with pytest.raises(HPSearchError, match="allowed: csv, parquet, json"):
        results.export(url, "up", tmp_path / "t.csv", "xlsx")
    with pytest.raises(HPSearchError, match="cannot infer"):
        results.export(url, "up", tmp_path / "t.txt")
    with pytest.raises(HPSearchError, match="allowed: trials, curves, rounds"):
        results.export(url, "up", tmp_path / "t.csv", "csv", table="params")
    with pytest.raises(StudyNotFoundError):
        results.export(url, "nope", tmp_path / "t.csv", "csv")
    assert list(tmp_path.iterdir()) == []


def test_export_to_a_missing_directory_is_one_clear_error(recorded, tmp_path):
    url, _, _ = recorded
    with pytest.raises(HPSearchError, match="cannot write"):
        results.export(url, "up", tmp_path / "no" / "such" / "dir.csv", "csv")


# --- PostgreSQL ---------------------------------------------------------------------


@pytest.mark.postgres
def test_postgresql_reads_the_same_as_sqlite(tmp_path):
    sqlite_url = f"sqlite:///{tmp_path / 'same.db'}"
    with postgres_database() as pg_url:
        for url in (sqlite_url, pg_url):
            write_fake_study(url, "same", rounds=2, running=1)
            write_fake_study(url, "down", direction="minimize", rounds=1, seed=9)
        assert_frame_equal(results.trials(pg_url, "same"), results.trials(sqlite_url, "same"))
        assert_frame_equal(results.curves(pg_url, "same"), results.curves(sqlite_url, "same"))
        assert_frame_equal(results.rounds(pg_url, "same"), results.rounds(sqlite_url, "same"))
        assert_frame_equal(results.best(pg_url, "down"), results.best(sqlite_url, "down"))
        assert_frame_equal(results.studies(pg_url), results.studies(sqlite_url))
        with pytest.raises(StudyNotFoundError, match="existing studies: same, down"):
            results.trials(pg_url, "nope")


@pytest.mark.postgres
def test_postgresql_database_without_tables_is_an_error_and_stays_empty():
    import psycopg

    with postgres_database() as pg_url:
        with pytest.raises(StorageError, match="no Optuna results tables"):
            results.studies(pg_url)
        dbname = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname=dbname) as conn:
            tables = conn.execute(
                "select count(*) from information_schema.tables where table_schema='public'"
            ).fetchone()[0]
        assert tables == 0


@pytest.mark.postgres
def test_postgresql_errors_mask_the_password():
    with postgres_database() as pg_url:
        bad = pg_url.replace("postgres@", "postgres:s3cret@").rsplit("/", 1)[0] + "/nonexistent_db"
        with pytest.raises(StorageError) as info:
            results.studies(bad)
        assert "s3cret" not in str(info.value)
        assert "postgres:***@" in str(info.value)
        assert "nonexistent_db" in str(info.value)
