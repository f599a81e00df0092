"""hpsearch.storage_url: validate, mask and open results-database URLs."""

from __future__ import annotations

import optuna
import pytest

from hpsearch.errors import StorageError
from hpsearch.storage_url import (
    ALLOWED_FORMS,
    close_storage,
    mask_url,
    open_storage,
    opened_storage,
    parse_storage_url,
)
from tests.hpsearch.fake_study import postgres_database


@pytest.mark.parametrize(
    "url, masked",
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("postgresql+psycopg://u:p%40ss@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("postgresql://u:we@ird/pw@host/db", "postgresql://u:***@host/db"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        (
            "postgresql://host/db?password=x&sslmode=require",
            "postgresql://host/db?password=***&sslmode=require",
        ),
        ("sqlite:///hpsearch.db", "sqlite:///hpsearch.db"),
        ("not a url at all", "not a url at all"),
    ],
)
def test_mask_url_hides_passwords(url, masked):
    assert mask_url(url) == masked


def test_sqlite_paths_relative_and_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_storage_url("sqlite:///rel/x.db").sqlite_path == tmp_path / "rel" / "x.db"
    assert parse_storage_url(f"sqlite:///{tmp_path}/abs.db").sqlite_path == tmp_path / "abs.db"
    assert parse_storage_url("sqlite:////tmp/abs.db").sqlite_path.as_posix() == "/tmp/abs.db"
    assert parse_storage_url("sqlite://").sqlite_path is None


def test_plain_postgresql_gets_an_installed_driver():
    spec = parse_storage_url("postgresql://me:pw@db.example:5433/hp")
    assert spec.dialect == "postgresql"
    assert spec.sqlalchemy_url.startswith(("postgresql+psycopg://", "postgresql+psycopg2://"))
    assert spec.masked == "postgresql://me:***@db.example:5433/hp"
    explicit = parse_storage_url("postgresql+psycopg://me@db.example/hp")
    assert explicit.sqlalchemy_url == "postgresql+psycopg://me@db.example/hp"


@pytest.mark.parametrize(
    "url, words",
    [
        ("", "empty"),
        ("hpsearch.db", "cannot be parsed"),
        ("postgres://u:pw@h/db", "spelled postgresql://"),
        ("mysql://u:pw@h/db", "unsupported database 'mysql'"),
        ("sqlite://host/x.db", "three slashes"),
        ("postgresql://u:pw@h", "needs a database name"),
        ("sqlite:///file:x.db?mode=ro", "not supported"),
    ],
)
def test_malformed_urls_name_the_url_and_the_allowed_forms(url, words):
    with pytest.raises(StorageError) as info:
        parse_storage_url(url)
    message = str(info.value)
    assert words in message
    assert ALLOWED_FORMS in message
    assert ":pw@" not in message
    assert "\n" not in message


def test_create_makes_the_file_and_tables_then_readers_open_it_read_only(tmp_path):
    db = tmp_path / "with space {and braces}.db"
    url = f"sqlite:///{db}"
    writer = open_storage(url, create=True)
    try:
        optuna.create_study(storage=writer, study_name="s")
    finally:
        close_storage(writer)
    assert db.is_file()
    reader = open_storage(url, create=False)
    try:
        assert [s.study_name for s in reader.get_all_studies()] == ["s"]
        with pytest.raises(Exception, match=r"(?i)readonly|read-only|commit"):
            optuna.create_study(storage=reader, study_name="t")
    finally:
        close_storage(reader)


def test_reading_a_missing_file_or_memory_is_an_error_and_creates_nothing(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path / 'no.db'}", create=False)
    with pytest.raises(StorageError, match="is not a file"):
        open_storage(f"sqlite:///{tmp_path}", create=False)
    with pytest.raises(StorageError, match="in-memory"):
        open_storage("sqlite://", create=False)
    assert list(tmp_path.iterdir()) == []


def test_writing_into_a_missing_directory_is_an_error(tmp_path):
    with pytest.raises(StorageError, match=r"directory .* does not exist"):
        open_storage(f"sqlite:///{tmp_path / 'no' / 'x.db'}", create=True)
    assert list(tmp_path.iterdir()) == []


def test_in_memory_storage_for_writing():
    storage = open_storage("sqlite://", create=True)
    try:
        optuna.create_study(storage=storage, study_name="m")
        assert storage.get_study_id_from_name("m") >= 0
    finally:
        close_storage(storage)


def test_opened_storage_closes_what_it_opened_and_rejects_other_objects(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    close_storage(open_storage(url, create=True))
    with opened_storage(url) as storage:
        assert storage.get_all_studies() == []
    memory = optuna.storages.InMemoryStorage()
    with opened_storage(memory) as same:
        assert same is memory
    with pytest.raises(StorageError, match="expected a URL string"):
        with opened_storage(42):  # type: ignore[arg-type]
            pass


def test_unreachable_server_is_one_line(tmp_path):
    with pytest.raises(StorageError) as info:
        open_storage("postgresql+psycopg://me:pw@127.0.0.1:9/db", create=False, timeout=2)
    message = str(info.value)
    assert "cannot be opened" in message and "me:***@127.0.0.1:9" in message
    assert "\n" not in message


@pytest.mark.postgres
def test_postgresql_create_makes_tables_and_readers_see_them():
    with postgres_database() as url:
        with pytest.raises(StorageError, match="no Optuna results tables"):
            open_storage(url, create=False)
        writer = open_storage(url, create=True)
        try:
            optuna.create_study(storage=writer, study_name="pg")
        finally:
            close_storage(writer)
        with opened_storage(url) as reader:
            assert [s.study_name for s in reader.get_all_studies()] == ["pg"]
