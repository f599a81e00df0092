"""Results-database URLs: validate, mask for display, open as Optuna RDB storage.

Allowed forms (:data:`ALLOWED_FORMS`):

* ``sqlite:///relative/path.db`` -- relative to the current directory;
* ``sqlite:////absolute/path.db`` -- four slashes for an absolute path;
* ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE``, also with an explicit
  driver: ``postgresql+psycopg://`` (psycopg 3) or ``postgresql+psycopg2://``.
  A plain ``postgresql://`` uses psycopg2 when it is installed, else psycopg 3.

Reading (``create=False``) never creates anything: a SQLite file that does not
exist, or a database without Optuna's tables, is a :class:`StorageError`.
SQLite is then opened read-only (``mode=ro``) with a busy timeout, so readers
never write and wait politely for the writer. Writing (``create=True``) creates
the SQLite file (its directory must exist) and Optuna's tables as needed.

Every error message shows the URL with its password masked
(``postgresql://user:***@host/db``) and is one line.

Importing this module imports neither Optuna's storage engine nor Ray; both
SQLAlchemy and Optuna are imported when a storage is opened.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from hpsearch.errors import StorageError

if TYPE_CHECKING:
    from optuna.storages import BaseStorage, RDBStorage

ALLOWED_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE "
    "(or postgresql+psycopg://, postgresql+psycopg2://)"
)

DEFAULT_TIMEOUT = 30.0
"""Seconds a SQLite connection waits for a lock; seconds to connect to PostgreSQL."""

_SQLITE_DRIVERS = ("sqlite", "sqlite+pysqlite")
_POSTGRES_DRIVERS = ("postgresql", "postgresql+psycopg", "postgresql+psycopg2")
_PASSWORD_QUERY = re.compile(r"(?i)(password=)[^&]*")


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for display.

    Works on malformed URLs too (it never parses strictly):
    ``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``;
    a ``password=...`` query parameter is masked as well.
    """
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if sep:
        at = rest.rfind("@")
        if at >= 0:
            user, colon, _password = rest[:at].partition(":")
            if colon:
                rest = f"{user}:***{rest[at:]}"
        text = f"{scheme}{sep}{rest}"
    return _PASSWORD_QUERY.sub(r"\1***", text)


@dataclass(frozen=True)
class StorageURL:
    """A validated results-database URL.

    Attributes:
        url: The URL as given.
        dialect: ``"sqlite"`` or ``"postgresql"``.
        sqlalchemy_url: The URL handed to SQLAlchemy (driver resolved).
        sqlite_path: The database file for SQLite (None for in-memory or
            PostgreSQL), relative paths resolved against the current directory.
    """

    url: str
    dialect: str
    sqlalchemy_url: str
    sqlite_path: Path | None

    @property
    def masked(self) -> str:
        return mask_url(self.url)


class StorageUnreachableError(StorageError):
    """The database server does not answer (connection refused or timed out).

    Unlike the other storage errors this is not something wrong with the
    input: ``hpsearch run`` exits 1 for it, as for any service that does not
    answer within a bounded wait.
    """


def _bad(url: str, reason: str) -> StorageError:
    return StorageError(
        f"storage URL {mask_url(url)!r} is not valid: {reason}; allowed forms: {ALLOWED_FORMS}"
    )


def parse_storage_url(url: str) -> StorageURL:
    """Validate ``url`` without touching any database.

    Raises:
        StorageError: The URL is malformed or names an unsupported database;
            the message shows the masked URL and the allowed forms.
    """
    if not isinstance(url, str) or not url.strip():
        raise _bad(str(url), "it is empty")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise _bad(url, "it cannot be parsed as a database URL") from exc

    driver = parsed.drivername
    if driver in _SQLITE_DRIVERS:
        if parsed.host or parsed.username or parsed.port:
            raise _bad(url, "a SQLite URL has no host; use three slashes before the path")
        database = parsed.database
        if not database or database == ":memory:":
            return StorageURL(url, "sqlite", "sqlite://", None)
        if database.startswith("file:"):
            raise _bad(url, "SQLite URI filenames (file:...) are not supported; give a path")
        return StorageURL(url, "sqlite", url, Path(database).expanduser().absolute())

    if driver in _POSTGRES_DRIVERS or driver == "postgres":
        if driver == "postgres":
            raise _bad(url, "the scheme is spelled postgresql://, not postgres://")
        if not parsed.host:
            raise _bad(url, "a PostgreSQL URL needs a host")
        if not parsed.database:
            raise _bad(url, "a PostgreSQL URL needs a database name after the host")
        if driver == "postgresql":
            parsed = parsed.set(drivername=_default_postgres_driver(url))
        return StorageURL(url, "postgresql", parsed.render_as_string(hide_password=False), None)

    raise _bad(url, f"unsupported database {driver!r}")


def _default_postgres_driver(url: str) -> str:
    if importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2"
    if importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg"
    raise StorageError(
        f"storage {mask_url(url)}: no PostgreSQL driver is installed; "
        "install one with: pip install 'hpsearch[postgres]'"
    )


def _first_line(exc: BaseException, url: str | None = None) -> str:
    """The first line of an error's message, with the password of ``url`` masked."""
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the DB-API error
    text = str(orig if orig is not None else exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return _scrub(line, url) if url else line


def _scrub(text: str, url: str) -> str:
    """``text`` with the password of ``url`` (if any, as given or URL-encoded) as ``***``."""
    from urllib.parse import unquote

    _scheme, sep, rest = url.partition("://")
    userinfo = rest[: rest.rfind("@")] if sep and "@" in rest else ""
    _user, colon, password = userinfo.partition(":")
    for secret in {password, unquote(password)} if colon else ():
        if secret:
            text = text.replace(secret, "***")
    return mask_url(text)


_UNREACHABLE = (
    "connection refused",
    "timeout expired",
    "timed out",
    "no route to host",
    "network is unreachable",
    "server closed the connection unexpectedly",
    "could not connect to server",
)


def _connection_error(spec: StorageURL, cause: BaseException) -> StorageError | None:
    """A one-line error with a fix for a PostgreSQL connection failure, or None."""
    detail = _first_line(cause, spec.url)
    lowered = detail.lower()
    orig = getattr(cause, "orig", cause)
    if type(orig).__name__ == "ConnectionTimeout" or any(w in lowered for w in _UNREACHABLE):
        return StorageUnreachableError(
            f"storage {spec.masked} cannot be opened: the database server does not answer "
            f"({detail}); start it, or check HOST:PORT in --storage"
        )
    if "failed to resolve host" in lowered or "could not translate host name" in lowered:
        return StorageError(
            f"storage {spec.masked} cannot be opened: unknown host ({detail}); check the host "
            "name in --storage"
        )
    if "authentication failed" in lowered or ("role" in lowered and "does not exist" in lowered):
        return StorageError(
            f"storage {spec.masked} cannot be opened: {detail}; check USER and PASSWORD in "
            "--storage"
        )
    if "database" in lowered and "does not exist" in lowered:
        return StorageError(
            f"storage {spec.masked} cannot be opened: {detail}; create the database first "
            "(e.g. createdb -h HOST -U USER DATABASE) or name an existing one"
        )
    return None


def open_storage(
    url: str, *, create: bool, timeout: float = DEFAULT_TIMEOUT, **rdb_kwargs: Any
) -> RDBStorage:
    """Open the results database at ``url`` as an Optuna ``RDBStorage`` (a
    :class:`~hpsearch.lean_reads.LeanRDBStorage`, trial reads as plain SQL,
    unless :mod:`hpsearch.internals` turned Optuna's fast paths off).

    Args:
        url: A URL in one of the :data:`ALLOWED_FORMS`.
        create: True to write: create the SQLite file and Optuna's tables if
            missing. False to read: the database must already hold Optuna's
            tables; SQLite is opened read-only and nothing is ever created.
        timeout: SQLite busy timeout in seconds (how long to wait for another
            connection's lock); PostgreSQL connect timeout in seconds.
        **rdb_kwargs: Passed on to ``optuna.storages.RDBStorage`` (e.g.
            ``heartbeat_interval``); ``engine_kwargs`` are merged with ours.

    Returns:
        The storage. Call :func:`close_storage` when done with it.

    Raises:
        StorageError: Malformed URL, missing SQLite file (when reading) or
            directory (when writing), unreachable server, missing driver, not
            an Optuna database, or an incompatible Optuna schema. One line,
            password masked.
    """
    spec = parse_storage_url(url)
    engine_kwargs: dict[str, Any] = dict(rdb_kwargs.pop("engine_kwargs", None) or {})
    connect_args: dict[str, Any] = dict(engine_kwargs.pop("connect_args", None) or {})

    if spec.dialect == "sqlite":
        connect_args.setdefault("timeout", timeout)
        sqlalchemy_url = _sqlite_url(spec, create=create)
    else:
        connect_args.setdefault("connect_timeout", max(1, round(timeout)))
        sqlalchemy_url = spec.sqlalchemy_url
    engine_kwargs["connect_args"] = connect_args

    from hpsearch import internals

    if internals.optuna_fast():
        from hpsearch.lean_reads import LeanRDBStorage as storage_class
    else:  # an untested Optuna: its own reads (hpsearch.internals)
        from optuna.storages import RDBStorage as storage_class

    # RDBStorage formats the URL with str.format (for {SCHEMA_VERSION}): escape braces.
    escaped = sqlalchemy_url.replace("{", "{{").replace("}", "}}")
    try:
        opened = storage_class(
            escaped,
            engine_kwargs=engine_kwargs,
            skip_table_creation=not create,
            **rdb_kwargs,
        )
        internals.check_storage(opened)  # the schema revision, once per process
        return opened
    except ImportError as exc:
        raise StorageError(
            f"storage {spec.masked}: the database driver is not installed "
            f"({_first_line(exc, url)}); "
            "for PostgreSQL: pip install 'hpsearch[postgres]'"
        ) from exc
    except RuntimeError as exc:  # Optuna's schema-version check
        raise StorageError(f"storage {spec.masked}: {_first_line(exc, url)}") from exc
    except Exception as exc:
        cause = _database_error(exc)
        if cause is None:
            raise
        detail = _first_line(cause, url)
        lowered = detail.lower()
        if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
            raise StorageError(
                f"storage {spec.masked} holds no Optuna results tables (not a results "
                "database, or nothing was run into it yet)"
            ) from exc
        if "not a database" in lowered:
            raise StorageError(
                f"storage {spec.masked}: {spec.sqlite_path} is not a SQLite database"
            ) from exc
        if spec.dialect == "postgresql":
            problem = _connection_error(spec, cause)
            if problem is not None:
                raise problem from exc
        raise StorageError(f"storage {spec.masked} cannot be opened: {detail}") from exc


CHECK_TIMEOUT = 10.0
"""Seconds :func:`check_storage` waits for a PostgreSQL server to answer."""

_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_storage(url: str, *, timeout: float = CHECK_TIMEOUT) -> StorageURL:
    """Check, without writing anything, that ``url`` can be opened for writing.

    Meant to run before a command writes anything, so that a bad database is
    reported while nothing has been created yet:

    * SQLite: the file's directory exists, the path is not a directory, and
      an existing file is a SQLite database (or empty). The file is neither
      created nor opened.
    * PostgreSQL: the server answers within ``timeout`` seconds and the
      database exists (one connection, ``SELECT 1``; no table is created).

    Returns:
        The parsed URL.

    Raises:
        StorageUnreachableError: The server does not answer (refused, timed out).
        StorageError: Anything else; one line, password masked, with a fix.
    """
    spec = parse_storage_url(url)
    if spec.dialect == "sqlite":
        path = spec.sqlite_path
        if path is None:
            return spec
        if not path.parent.is_dir():
            what = "is not a directory" if path.parent.exists() else "does not exist"
            raise StorageError(
                f"storage {spec.masked}: directory {path.parent} {what}; create it first "
                "or give another path"
            )
        if path.exists() and not path.is_file():
            raise StorageError(
                f"storage {spec.masked}: {path} is a directory, not a database file; "
                "give the path of a .db file"
            )
        if path.is_file():
            try:
                with path.open("rb") as handle:
                    head = handle.read(len(_SQLITE_MAGIC))
            except OSError as exc:
                raise StorageError(
                    f"storage {spec.masked}: cannot read {path}: {exc.strerror or exc}"
                ) from exc
            if head and head != _SQLITE_MAGIC:
                raise StorageError(
                    f"storage {spec.masked}: {path} is not a SQLite database; give the path "
                    "of a results database or of a file that does not exist yet"
                )
        return spec

    import sqlalchemy
    from sqlalchemy.pool import NullPool

    try:
        engine = sqlalchemy.create_engine(
            spec.sqlalchemy_url,
            poolclass=NullPool,
            connect_args={"connect_timeout": max(1, round(timeout))},
        )
    except ImportError as exc:
        raise StorageError(
            f"storage {spec.masked}: the database driver is not installed "
            f"({_first_line(exc, url)}); for PostgreSQL: pip install 'hpsearch[postgres]'"
        ) from exc
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.SQLAlchemyError as exc:
        problem = _connection_error(spec, exc)
        if problem is None:
            problem = StorageError(
                f"storage {spec.masked} cannot be opened: {_first_line(exc, url)}"
            )
        raise problem from exc
    finally:
        engine.dispose()
    return spec


def _database_error(exc: BaseException) -> BaseException | None:
    """The SQLAlchemy error behind ``exc`` (Optuna wraps them), or None."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import SQLAlchemyError

    seen: BaseException | None = exc
    found: BaseException | None = None
    while seen is not None:
        if isinstance(seen, SQLAlchemyError):
            return seen
        if isinstance(seen, StorageInternalError):
            found = seen
        seen = seen.__cause__ or seen.__context__
    return found


def _sqlite_url(spec: StorageURL, *, create: bool) -> str:
    path = spec.sqlite_path
    if path is None:
        if not create:
            raise StorageError(
                f"storage {spec.masked}: an in-memory SQLite database holds no results to read; "
                "give the path of a results database, e.g. sqlite:///hpsearch.db"
            )
        return "sqlite://"
    if create:
        if not path.parent.is_dir():
            raise StorageError(f"storage {spec.masked}: directory {path.parent} does not exist")
        if path.exists() and not path.is_file():
            raise StorageError(f"storage {spec.masked}: {path} is not a file")
        from sqlalchemy.engine import URL

        return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise StorageError(
            f"storage {spec.masked}: no results database, {path} {what} "
            "(run a study first or pass --storage)"
        )
    from sqlalchemy.engine import URL

    # Read-only URI filename: this connection can never write (or create) the file.
    return URL.create(
        "sqlite",
        database="file:" + quote(str(path)),
        query={"mode": "ro", "uri": "true"},
    ).render_as_string(hide_password=False)


def close_storage(storage: BaseStorage) -> None:
    """Release the connections of a storage opened by :func:`open_storage`."""
    remove = getattr(storage, "remove_session", None)
    if callable(remove):
        remove()
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


@contextmanager
def opened_storage(storage: str | BaseStorage, *, create: bool = False) -> Iterator[BaseStorage]:
    """Yield a storage for ``storage`` (a URL or an Optuna storage).

    A URL is opened with :func:`open_storage` and closed on exit; a storage
    object is yielded as is and left open (its owner closes it).
    """
    if isinstance(storage, str):
        opened = open_storage(storage, create=create)
        try:
            yield opened
        finally:
            close_storage(opened)
    else:
        from optuna.storages import BaseStorage as _Base

        if not isinstance(storage, _Base):
            raise StorageError(
                f"storage: got {type(storage).__name__}; expected a URL string "
                f"({ALLOWED_FORMS}) or an optuna storage"
            )
        yield storage
