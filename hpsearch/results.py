"""Read the results database with pandas: studies, trials, rounds, curves, best.

Every function takes ``storage``: a URL string (``sqlite:///hpsearch.db``,
``postgresql://user@host/db``; see :mod:`hpsearch.storage_url`) or an Optuna
storage object. A URL is opened read-only (SQLite ``mode=ro`` with a 30 s busy
timeout), read with a fixed number of queries whatever the trial count, and
closed, so a reader never changes a running search and never creates a
database. (Reading a WAL-mode SQLite database read-only may leave its
``-wal``/``-shm`` side files behind; they are harmless.) A storage object is
used as is and left open.

The layout read here is the one :mod:`hpsearch.records` defines. Parameter
columns carry the study file's names (``lr``, ``weight_decay``,
``dropout_ratio``, ``batchnorm``, ...). Times are UTC
(``datetime64[us, UTC]``); durations are seconds (``float64``). Missing values
are ``NaN`` in ``float64`` columns and ``<NA>`` in nullable (``Int64``,
``boolean``, ``string``) columns.

Importing this module does not import Ray.

Errors:
    :class:`~hpsearch.errors.StorageError` for a malformed URL, a SQLite file
    that does not exist, or a database that cannot be read;
    :class:`~hpsearch.errors.StudyNotFoundError` for a study name that is not
    in the database (the message lists the names that are).

Example:
    >>> from hpsearch import results
    >>> results.studies("sqlite:///hpsearch.db")            # doctest: +SKIP
    >>> df = results.trials("sqlite:///hpsearch.db", "mnist_ch6")  # doctest: +SKIP
    >>> df[df.state == "COMPLETE"].sort_values("value").tail()  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hpsearch import records
from hpsearch.errors import HPSearchError, StudyNotFoundError
from hpsearch.storage_url import mask_url, opened_storage

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

logger = logging.getLogger(__name__)

__all__ = [
    "CURVE_COLUMNS",
    "EXPORT_FORMATS",
    "EXPORT_TABLES",
    "ROUND_COLUMNS",
    "STUDY_COLUMNS",
    "TRIAL_STATES",
    "StudyInfo",
    "best",
    "curves",
    "export",
    "metric_curves",
    "pick_best",
    "read_export",
    "rounds",
    "studies",
    "study_info",
    "trials",
]

# --- dtypes ---------------------------------------------------------------

TRIAL_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
"""Categories of the ``state`` column, in this order."""

SPLITS = ("train", "val")
"""Categories of the ``split`` column of :func:`curves`."""

STATE_DTYPE = pd.CategoricalDtype(list(TRIAL_STATES))
SPLIT_DTYPE = pd.CategoricalDtype(list(SPLITS))
TIME_DTYPE = pd.DatetimeTZDtype("us", "UTC")
STRING_DTYPE = pd.StringDtype()  # NA-backed "string"
LIST = "object"  # a column of Python lists

STUDY_COLUMNS: dict[str, Any] = {
    "study": STRING_DTYPE,
    "direction": STRING_DTYPE,
    "metric": STRING_DTYPE,
    "n_trials": "int64",
    "n_complete": "int64",
    "n_pruned": "int64",
    "n_fail": "int64",
    "n_rounds": "int64",
    "best_value": "float64",
    "datetime_start": TIME_DTYPE,
    "datetime_end": TIME_DTYPE,
}
"""Columns and dtypes of :func:`studies`."""

TRIAL_LEADING_COLUMNS: dict[str, Any] = {
    "number": "int64",
    "state": STATE_DTYPE,
    "value": "float64",
    "round": "Int64",
    "seed": "Int64",
}
TRIAL_TRAILING_COLUMNS: dict[str, Any] = {
    "diverged": "boolean",
    "stopped": "boolean",
    "node": STRING_DTYPE,
    "backend": STRING_DTYPE,
    "train_seconds": "float64",
    "epochs_completed": "Int64",
    "fail_reason": STRING_DTYPE,
    "datetime_start": TIME_DTYPE,
    "datetime_complete": TIME_DTYPE,
    "duration": "float64",
}
"""Columns of :func:`trials` before and after the parameter columns."""

CURVE_COLUMNS: dict[str, Any] = {
    "trial": "int64",
    "epoch": "int64",
    "split": SPLIT_DTYPE,
    "loss": "float64",
    "accuracy": "float64",
}
"""Columns and dtypes of :func:`curves`."""

ROUND_COLUMNS: dict[str, Any] = {
    "round": "int64",
    "n_trials": "Int64",
    "best": "float64",
    "median": "float64",
    "top_trials": LIST,
    "started_at": TIME_DTYPE,
    "ended_at": TIME_DTYPE,
    "wall_seconds": "float64",
    "moved_edges": LIST,
    "decision": STRING_DTYPE,
    "reason": STRING_DTYPE,
}
"""Columns of :func:`rounds` before the per-parameter box columns."""

EXPORT_FORMATS = ("csv", "parquet", "json")
EXPORT_TABLES = ("trials", "curves", "rounds")

_STATUS_KEY = getattr(records, "STATUS_KEY", "hpsearch:status")
_TRIAL_FIXED = {**TRIAL_LEADING_COLUMNS, **TRIAL_TRAILING_COLUMNS}
_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json"}


# --- opening ---------------------------------------------------------------


@contextmanager
def _opened(storage: str | BaseStorage) -> Iterator[tuple[BaseStorage, str]]:
    """Yield (storage object, label for messages)."""
    label = mask_url(storage) if isinstance(storage, str) else "the given storage"
    with opened_storage(storage, create=False) as opened:
        yield opened, label


def _study_id(storage: BaseStorage, name: str, label: str) -> int:
    if not isinstance(name, str) or not name:
        raise StudyNotFoundError(f"study name: got {name!r}; expected a non-empty string")
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        pass
    names = [s.study_name for s in storage.get_all_studies()]
    existing = f"existing studies: {', '.join(names)}" if names else "the database holds no studies"
    raise StudyNotFoundError(f"study {name!r} not found in {label}; {existing}")


def _direction(storage: BaseStorage, study_id: int) -> str:
    return ",".join(d.name.lower() for d in storage.get_study_directions(study_id))


@dataclass(slots=True)
class _TrialRecord:
    """The parts of a FrozenTrial the readers use (built straight from SQL rows)."""

    number: int
    state: Any
    values: list[float] | None
    params: dict[str, Any]
    distributions: dict[str, Any]
    user_attrs: dict[str, Any]
    intermediate_values: dict[int, float]
    datetime_start: _dt.datetime | None
    datetime_complete: _dt.datetime | None


def _load_trials(storage: BaseStorage, study_id: int, *, part: str = "table") -> list[Any]:
    """All trials of a study, ordered by number, in a fixed number of queries.

    ``part="table"`` loads what :func:`trials` needs (no curves, no
    intermediate values); ``part="curves"`` loads only the curves (and the
    intermediate values of trials without one).

    On Optuna's RDB storage the rows are read with a handful of plain SELECTs
    (no ORM objects: about 10x faster on thousands of trials); any other
    storage, a schema this code does not know, or an Optuna release
    :mod:`hpsearch.internals` was not tested with goes through
    ``storage.get_all_trials(study_id, deepcopy=False)``.
    """
    from hpsearch import internals

    engine = getattr(storage, "engine", None)
    if engine is not None and internals.optuna_fast():
        try:
            return _read_trials_sql(engine, study_id, part)
        except Exception as exc:
            from sqlalchemy.exc import SQLAlchemyError

            if not isinstance(exc, (SQLAlchemyError, AttributeError, KeyError, ValueError)):
                raise
            logger.debug("direct trial read failed (%s); using get_all_trials", exc)
    trials = storage.get_all_trials(study_id, deepcopy=False)
    return sorted(trials, key=lambda t: t.number)


def _read_trials_sql(engine: Any, study_id: int, part: str) -> list[_TrialRecord]:
    import sqlalchemy as sa
    from optuna.distributions import json_to_distribution

    from hpsearch.internals import models, stores_naive_utc

    trial_t = models.TrialModel.__table__
    param_t = models.TrialParamModel.__table__
    value_t = models.TrialValueModel.__table__
    attr_t = models.TrialUserAttributeModel.__table__
    inter_t = models.TrialIntermediateValueModel.__table__
    # Optuna >= 5 stores naive UTC; older versions stored the writer's naive local time.
    stores_utc = stores_naive_utc()

    def db_time(value: Any) -> _dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = _dt.datetime.fromisoformat(value)
        if value.tzinfo is not None:
            return value.astimezone(_dt.UTC)
        return value.replace(tzinfo=_dt.UTC) if stores_utc else value.astimezone(_dt.UTC)

    def of_study(table: Any) -> Any:
        return (
            sa.select()
            .select_from(table.join(trial_t, table.c.trial_id == trial_t.c.trial_id))
            .where(trial_t.c.study_id == study_id)
        )

    by_id: dict[int, _TrialRecord] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                trial_t.c.trial_id,
                trial_t.c.number,
                trial_t.c.state,
                trial_t.c.datetime_start,
                trial_t.c.datetime_complete,
            ).where(trial_t.c.study_id == study_id)
        )
        for trial_id, number, state, start, complete in rows:
            by_id[trial_id] = _TrialRecord(
                number=number,
                state=state,
                values=None,
                params={},
                distributions={},
                user_attrs={},
                intermediate_values={},
                datetime_start=db_time(start),
                datetime_complete=db_time(complete),
            )
        if part == "table":
            dist_cache: dict[str, Any] = {}
            query = of_study(param_t).add_columns(
                param_t.c.trial_id,
                param_t.c.param_name,
                param_t.c.param_value,
                param_t.c.distribution_json,
            )
            for trial_id, name, value, dist_json in conn.execute(
                query.order_by(param_t.c.param_id)
            ):
                dist = dist_cache.get(dist_json)
                if dist is None:
                    dist = dist_cache[dist_json] = json_to_distribution(dist_json)
                record = by_id[trial_id]
                record.distributions[name] = dist
                record.params[name] = dist.to_external_repr(value)
            values: dict[int, dict[int, float]] = {}
            query = of_study(value_t).add_columns(
                value_t.c.trial_id, value_t.c.objective, value_t.c.value, value_t.c.value_type
            )
            for trial_id, objective, value, kind in conn.execute(query):
                values.setdefault(trial_id, {})[objective] = (
                    models.TrialValueModel.stored_repr_to_value(value, kind)
                )
            for trial_id, objectives in values.items():
                by_id[trial_id].values = [objectives[k] for k in sorted(objectives)]
            attr_filter = attr_t.c.key != records.TRIAL_CURVE
        else:
            attr_filter = attr_t.c.key == records.TRIAL_CURVE
            has_curve = (
                sa.select(attr_t.c.trial_id)
                .where(attr_t.c.key == records.TRIAL_CURVE)
                .where(attr_t.c.trial_id == inter_t.c.trial_id)
                .exists()
            )
            query = (
                of_study(inter_t)
                .add_columns(
                    inter_t.c.trial_id,
                    inter_t.c.step,
                    inter_t.c.intermediate_value,
                    inter_t.c.intermediate_value_type,
                )
                .where(~has_curve)
            )
            to_value = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
            for trial_id, step, value, kind in conn.execute(query):
                by_id[trial_id].intermediate_values[step] = to_value(value, kind)
        query = (
            of_study(attr_t)
            .add_columns(attr_t.c.trial_id, attr_t.c.key, attr_t.c.value_json)
            .where(attr_filter)
        )
        for trial_id, key, value_json in conn.execute(query):
            by_id[trial_id].user_attrs[key] = json.loads(value_json)
    return sorted(by_id.values(), key=lambda t: t.number)


# --- small converters ---------------------------------------------------------


def _utc(value: _dt.datetime | None) -> _dt.datetime | None:
    """Optuna hands out naive local times (stored as UTC); make them aware UTC."""
    if value is None:
        return None
    return value.astimezone(_dt.UTC)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _float_or_nan(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _bool_or_none(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _times(values: list[Any]) -> pd.Series:
    """Aware datetimes, ISO strings or None -> ``datetime64[us, UTC]``."""
    if not values:
        return pd.Series([], dtype=TIME_DTYPE)
    converted = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
    return converted.astype(TIME_DTYPE)


def _frame(columns: Mapping[str, Any], dtypes: Mapping[str, Any]) -> pd.DataFrame:
    """Build a DataFrame from column lists, casting each to its dtype."""
    data: dict[str, Any] = {}
    for name, values in columns.items():
        dtype = dtypes[name]
        if isinstance(dtype, pd.DatetimeTZDtype):
            data[name] = _times(values).reset_index(drop=True)
        elif dtype == LIST:
            data[name] = pd.Series(values, dtype=object)
        else:
            data[name] = pd.Series(pd.array(values, dtype=dtype))
    return pd.DataFrame(data, columns=list(columns))


# --- parameters -------------------------------------------------------------------


def _param_dtype(distributions: list[Any]) -> Any:
    """The column dtype of one parameter from the distributions it was sampled from.

    Float -> ``float64``; Int -> ``Int64``; categorical of bools -> ``boolean``,
    of ints -> ``Int64``, of numbers -> ``float64``, of strings -> ``string``,
    anything else -> ``object``.
    """
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    kinds: set[str] = set()
    for dist in distributions:
        if isinstance(dist, FloatDistribution):
            kinds.add("float")
        elif isinstance(dist, IntDistribution):
            kinds.add("int")
        elif isinstance(dist, CategoricalDistribution):
            for choice in dist.choices:
                if choice is None:
                    continue
                if isinstance(choice, bool):
                    kinds.add("bool")
                elif isinstance(choice, (int, np.integer)):
                    kinds.add("int")
                elif isinstance(choice, (float, np.floating)):
                    kinds.add("float")
                elif isinstance(choice, str):
                    kinds.add("str")
                else:
                    kinds.add("other")
        else:
            kinds.add("other")
    if kinds == {"bool"}:
        return "boolean"
    if kinds == {"int"}:
        return "Int64"
    if kinds and kinds <= {"int", "float"}:
        return "float64"
    if kinds == {"str"}:
        return STRING_DTYPE
    return "object"


def _param_values(values: list[Any], dtype: Any) -> list[Any]:
    if dtype == "float64":
        return [math.nan if v is None else float(v) for v in values]
    return values


def _param_column_name(name: str) -> str:
    """A parameter keeps its name unless it clashes with a fixed column."""
    return f"param_{name}" if name in _TRIAL_FIXED else name


# --- studies ----------------------------------------------------------------------


def studies(storage: str | BaseStorage) -> pd.DataFrame:
    """One row per study in the database, in creation order.

    Columns (dtype):
        study (string): the study name.
        direction (string): ``maximize`` or ``minimize``.
        metric (string): the metric the search optimised (e.g.
            ``val_accuracy``); ``<NA>`` for studies not made by hpsearch.
        n_trials (int64): trials in any state.
        n_complete, n_pruned, n_fail (int64): trials in that state.
        n_rounds (int64): recorded narrowing rounds.
        best_value (float64): best COMPLETE value in the study's direction
            (NaN when none completed).
        datetime_start (datetime64[us, UTC]): start of the first trial.
        datetime_end (datetime64[us, UTC]): end of the last finished trial.

    Cheap on big studies: on an RDB storage the counts come from one grouped
    query, not from loading trials.
    """
    with _opened(storage) as (opened, _label):
        summaries = opened.get_all_studies()
        ids = [_frozen_study_id(opened, s) for s in summaries]
        counts = _trial_counts(opened, ids)
        columns: dict[str, list[Any]] = {name: [] for name in STUDY_COLUMNS}
        for summary, study_id in zip(summaries, ids, strict=True):
            attrs = summary.user_attrs
            c = counts.get(study_id, {})
            columns["study"].append(summary.study_name)
            columns["direction"].append(",".join(d.name.lower() for d in summary.directions))
            columns["metric"].append(_str_or_none(attrs.get(records.METRIC_KEY)))
            columns["n_trials"].append(sum(c.get("n", {}).values()))
            columns["n_complete"].append(c.get("n", {}).get("COMPLETE", 0))
            columns["n_pruned"].append(c.get("n", {}).get("PRUNED", 0))
            columns["n_fail"].append(c.get("n", {}).get("FAIL", 0))
            columns["n_rounds"].append(
                sum(1 for k in attrs if k.startswith(records.ROUND_KEY_PREFIX))
            )
            columns["best_value"].append(
                _best_value(opened, study_id) if c.get("n", {}).get("COMPLETE") else math.nan
            )
            columns["datetime_start"].append(c.get("start"))
            columns["datetime_end"].append(c.get("end"))
    return _frame(columns, STUDY_COLUMNS)


def _frozen_study_id(storage: BaseStorage, summary: Any) -> int:
    from hpsearch import internals

    return internals.frozen_study_id(summary, storage)


def _best_value(storage: BaseStorage, study_id: int) -> float:
    try:
        return float(storage.get_best_trial(study_id).value)
    except (ValueError, RuntimeError, TypeError):  # none complete / multi-objective
        return math.nan


def _trial_counts(storage: BaseStorage, study_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per study: counts by state name, first start and last completion (aware UTC)."""
    from hpsearch import internals

    engine = getattr(storage, "engine", None)
    if engine is not None and internals.optuna_fast():
        try:
            return _trial_counts_sql(engine)
        except Exception as exc:  # an unexpected schema: fall back to the public API
            from sqlalchemy.exc import SQLAlchemyError

            if not isinstance(exc, SQLAlchemyError):
                raise
            logger.debug("grouped trial count failed (%s); loading trials instead", exc)
    out: dict[int, dict[str, Any]] = {}
    for study_id in study_ids:
        n: dict[str, int] = {}
        starts, ends = [], []
        for t in storage.get_all_trials(study_id, deepcopy=False):
            n[t.state.name] = n.get(t.state.name, 0) + 1
            if t.datetime_start is not None:
                starts.append(_utc(t.datetime_start))
            if t.datetime_complete is not None:
                ends.append(_utc(t.datetime_complete))
        out[study_id] = {
            "n": n,
            "start": min(starts) if starts else None,
            "end": max(ends) if ends else None,
        }
    return out


def _trial_counts_sql(engine: Any) -> dict[int, dict[str, Any]]:
    import sqlalchemy as sa

    from hpsearch.internals import models

    table = models.TrialModel.__table__
    query = sa.select(
        table.c.study_id,
        table.c.state,
        sa.func.count(),
        sa.func.min(table.c.datetime_start),
        sa.func.max(table.c.datetime_complete),
    ).group_by(table.c.study_id, table.c.state)
    out: dict[int, dict[str, Any]] = {}
    with engine.connect() as connection:
        for study_id, state, count, start, end in connection.execute(query):
            entry = out.setdefault(study_id, {"n": {}, "start": None, "end": None})
            name = getattr(state, "name", str(state))
            entry["n"][name] = entry["n"].get(name, 0) + int(count)
            # Optuna stores naive UTC in these columns.
            start = _naive_utc(start)
            end = _naive_utc(end)
            if start is not None and (entry["start"] is None or start < entry["start"]):
                entry["start"] = start
            if end is not None and (entry["end"] is None or end > entry["end"]):
                entry["end"] = end
    return out


def _naive_utc(value: Any) -> _dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = _dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=_dt.UTC)
    return value.astimezone(_dt.UTC)


# --- one study ------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyInfo:
    """What the database records about one study as a whole.

    Attributes:
        name: The study name.
        direction: ``maximize`` or ``minimize``.
        metric: The metric name (None for studies not made by hpsearch).
        study_file: The study file's TOML text, verbatim (None if not recorded).
        overrides: The CLI overrides applied to the study file.
        final_eval: The final evaluation (test accuracy mean/std/per seed) when
            one ran, else None.
        n_rounds: Number of recorded narrowing rounds.
        status: The run's status record (``{"state": "finished", "reason":
            ...}``) once the last round ended, else None.
        user_attrs: All study user attributes, raw.
    """

    name: str
    direction: str
    metric: str | None
    study_file: str | None
    overrides: dict[str, Any] = field(default_factory=dict)
    final_eval: dict[str, Any] | None = None
    n_rounds: int = 0
    status: dict[str, Any] | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict, repr=False)


def study_info(storage: str | BaseStorage, name: str) -> StudyInfo:
    """The study-level records of ``name`` (study file, metric, final evaluation)."""
    with _opened(storage) as (opened, label):
        study_id = _study_id(opened, name, label)
        attrs = opened.get_study_user_attrs(study_id)
        direction = _direction(opened, study_id)
    overrides = attrs.get(records.OVERRIDES_KEY)
    final_eval = attrs.get(records.FINAL_EVAL_KEY)
    status = attrs.get(_STATUS_KEY)
    return StudyInfo(
        name=name,
        direction=direction,
        metric=_str_or_none(attrs.get(records.METRIC_KEY)),
        study_file=_str_or_none(attrs.get(records.STUDY_FILE_KEY)),
        overrides=dict(overrides) if isinstance(overrides, Mapping) else {},
        final_eval=dict(final_eval) if isinstance(final_eval, Mapping) else None,
        n_rounds=sum(1 for k in attrs if k.startswith(records.ROUND_KEY_PREFIX)),
        status=dict(status) if isinstance(status, Mapping) else None,
        user_attrs=dict(attrs),
    )


def trials(storage: str | BaseStorage, name: str) -> pd.DataFrame:
    """One row per trial of study ``name``, ordered by trial number.

    Columns (dtype), in this order:
        number (int64): Optuna's trial number (0-based, unique in the study).
        state (category): COMPLETE, PRUNED, FAIL, RUNNING or WAITING
            (categories in that order, see :data:`TRIAL_STATES`).
        value (float64): the metric; NaN when the trial has none (FAIL,
            RUNNING, ...).
        round (Int64): the narrowing round the trial was sampled in,
            numbered from 1 as ``hpsearch run`` prints it (the database
            stores 0-based indices, :mod:`hpsearch.records`).
        seed (Int64): the trial's training seed.
        <one column per parameter>: named as in the study file (``lr``,
            ``weight_decay``, ``dropout_ratio``, ``batchnorm``, ...), in the
            order they were first sampled. Float parameters ``float64``, int
            parameters ``Int64``, boolean choices ``boolean``, string choices
            ``string``, mixed choices ``object``. A parameter whose name
            clashes with a fixed column is prefixed ``param_``.
        diverged (boolean): the training loss became NaN or infinite.
        stopped (boolean): the run was stopped early (e.g. pruned).
        node (string): the worker node that trained it.
        backend (string): ``numpy`` or ``torch``.
        train_seconds (float64): the trainer's own wall time.
        epochs_completed (Int64): epochs the run completed.
        fail_reason (string): why a FAIL trial failed.
        datetime_start, datetime_complete (datetime64[us, UTC]): Optuna's
            start and end times (end is NaT while running).
        duration (float64): ``datetime_complete - datetime_start`` in seconds
            (NaN while running).

    Hpsearch attributes missing from a trial (e.g. a plain Optuna study) are
    ``<NA>``/NaN. Reads all trials in one query.
    """
    with _opened(storage) as (opened, label):
        study_id = _study_id(opened, name, label)
        frozen = _load_trials(opened, study_id)
    return _trials_frame(frozen)


def _trials_frame(frozen: list[Any]) -> pd.DataFrame:
    param_dists: dict[str, list[Any]] = {}
    for t in frozen:
        for pname, dist in t.distributions.items():
            param_dists.setdefault(pname, []).append(dist)
    param_dtypes = {p: _param_dtype(d) for p, d in param_dists.items()}

    lead: dict[str, list[Any]] = {name: [] for name in TRIAL_LEADING_COLUMNS}
    trail: dict[str, list[Any]] = {name: [] for name in TRIAL_TRAILING_COLUMNS}
    params: dict[str, list[Any]] = {p: [] for p in param_dtypes}
    for t in frozen:
        ua = t.user_attrs
        lead["number"].append(t.number)
        lead["state"].append(t.state.name)
        lead["value"].append(_float_or_nan(t.values[0]) if t.values else math.nan)
        stored = _int_or_none(ua.get(records.TRIAL_ROUND))
        lead["round"].append(None if stored is None else stored + 1)
        lead["seed"].append(_int_or_none(ua.get(records.TRIAL_SEED)))
        for pname, column in params.items():
            column.append(t.params.get(pname))
        start, complete = _utc(t.datetime_start), _utc(t.datetime_complete)
        trail["diverged"].append(_bool_or_none(ua.get(records.TRIAL_DIVERGED)))
        trail["stopped"].append(_bool_or_none(ua.get(records.TRIAL_STOPPED)))
        trail["node"].append(_str_or_none(ua.get(records.TRIAL_NODE)))
        trail["backend"].append(_str_or_none(ua.get(records.TRIAL_BACKEND)))
        trail["train_seconds"].append(_float_or_nan(ua.get(records.TRIAL_TRAIN_SECONDS)))
        trail["epochs_completed"].append(_int_or_none(ua.get(records.TRIAL_EPOCHS)))
        trail["fail_reason"].append(_str_or_none(ua.get(records.TRIAL_FAIL_REASON)))
        trail["datetime_start"].append(start)
        trail["datetime_complete"].append(complete)
        trail["duration"].append(
            (complete - start).total_seconds() if start and complete else math.nan
        )

    columns: dict[str, list[Any]] = dict(lead)
    dtypes: dict[str, Any] = dict(TRIAL_LEADING_COLUMNS)
    for pname, values in params.items():
        column = _param_column_name(pname)
        columns[column] = _param_values(values, param_dtypes[pname])
        dtypes[column] = param_dtypes[pname]
    columns.update(trail)
    dtypes.update(TRIAL_TRAILING_COLUMNS)
    return _frame(columns, dtypes)


def best(storage: str | BaseStorage, name: str) -> pd.DataFrame:
    """The best COMPLETE trial of study ``name`` as a one-row DataFrame.

    Same columns and dtypes as :func:`trials`, index reset to 0. Best means
    the highest value for a ``maximize`` study and the lowest for
    ``minimize``; ties go to the lowest trial number; NaN values never win.
    Empty (same columns) when no trial completed with a value.
    """
    with _opened(storage) as (opened, label):
        study_id = _study_id(opened, name, label)
        direction = _direction(opened, study_id)
        frozen = _load_trials(opened, study_id)
    return pick_best(_trials_frame(frozen), direction)


def pick_best(frame: pd.DataFrame, direction: str) -> pd.DataFrame:
    """The best COMPLETE row of a :func:`trials` frame, as :func:`best` picks it.

    Args:
        frame: A frame with :func:`trials`' columns (or a subset of its rows).
        direction: ``maximize`` or ``minimize``.
    """
    done = frame[(frame["state"] == "COMPLETE") & frame["value"].notna()]
    if done.empty:
        return frame.iloc[0:0].reset_index(drop=True)
    ascending = direction.split(",")[0] == "minimize"
    ranked = done.sort_values(["value", "number"], ascending=[ascending, True], kind="stable")
    return ranked.iloc[[0]].reset_index(drop=True)


def rounds(storage: str | BaseStorage, name: str) -> pd.DataFrame:
    """One row per recorded narrowing round of study ``name``, in order.

    Columns (dtype):
        round (int64): the round's number, from 1 (stored 0-based).
        n_trials (Int64): trials the round asked for.
        best, median (float64): best and median metric of the round's
            finished trials (NaN when none finished).
        top_trials (object: list[int]): trial numbers of the top-k, best first.
        started_at, ended_at (datetime64[us, UTC]): the round's start and end.
        wall_seconds (float64): ``ended_at - started_at`` in seconds.
        moved_edges (object: list[str]): box edges that moved outward from
            the previous round's box (``"lr.high"``, ...); empty if it only
            shrank.
        decision (string): what the round rule decided after the round
            (shrink, hold, grow, slide, restart; :mod:`hpsearch.round_rule`);
            missing while the round runs and for studies recorded before
            decisions were.
        reason (string): the rule's reason, with its evidence.
        then per parameter of the box, in the study file's order:
            ``<param>_low`` and ``<param>_high`` (float64) for numeric ranges
            (the bounds as sampled, not log10), or ``<param>_choices``
            (object: list) for categorical parameters. A parameter missing
            from a round's box is NaN / None there.

    Empty (with the fixed columns) when no round was recorded.
    """
    with _opened(storage) as (opened, label):
        study_id = _study_id(opened, name, label)
        attrs = opened.get_study_user_attrs(study_id)
    return _rounds_frame(attrs)


_ROUND_FIELDS = {f.name for f in fields(records.RoundRecord)}


def _round_records(attrs: Mapping[str, Any]) -> list[records.RoundRecord]:
    out = []
    for key in sorted(k for k in attrs if k.startswith(records.ROUND_KEY_PREFIX)):
        data = attrs[key]
        if not isinstance(data, Mapping):
            logger.warning("round record %s is not a mapping; skipped", key)
            continue
        known = {k: v for k, v in data.items() if k in _ROUND_FIELDS}
        try:
            out.append(records.RoundRecord.from_dict(known))
        except TypeError:
            logger.warning("round record %s is incomplete; skipped", key)
    return sorted(out, key=lambda r: r.index)


def _rounds_frame(attrs: Mapping[str, Any]) -> pd.DataFrame:
    recs = _round_records(attrs)
    columns: dict[str, list[Any]] = {name: [] for name in ROUND_COLUMNS}
    for rec in recs:
        columns["round"].append(rec.index + 1)
        columns["n_trials"].append(_int_or_none(rec.n_trials))
        columns["best"].append(_float_or_nan(rec.best))
        columns["median"].append(_float_or_nan(rec.median))
        columns["top_trials"].append([int(n) for n in rec.top_trials or ()])
        columns["started_at"].append(rec.started_at)
        columns["ended_at"].append(rec.ended_at)
        columns["wall_seconds"].append(math.nan)  # computed below
        columns["moved_edges"].append([str(e) for e in rec.moved_edges or ()])
        columns["decision"].append(_str_or_none(rec.decision))
        columns["reason"].append(_str_or_none(rec.reason))

    # Box columns: parameters in first-seen order; absent from a round -> NaN/None.
    boxes = [{p: s for p, s in (rec.box or {}).items() if isinstance(s, Mapping)} for rec in recs]
    dtypes: dict[str, Any] = dict(ROUND_COLUMNS)
    for box in boxes:
        for pname, spec in box.items():
            if "choices" in spec:
                dtypes.setdefault(f"{pname}_choices", LIST)
            else:
                dtypes.setdefault(f"{pname}_low", "float64")
                dtypes.setdefault(f"{pname}_high", "float64")
    for column, dtype in list(dtypes.items())[len(ROUND_COLUMNS) :]:
        pname, _, part = column.rpartition("_")
        values: list[Any] = []
        for box in boxes:
            spec = box.get(pname)
            if dtype == LIST:
                ok = spec is not None and "choices" in spec
                values.append(list(spec["choices"]) if ok else None)
            else:
                ok = spec is not None and "choices" not in spec
                values.append(_float_or_nan(spec.get(part)) if ok else math.nan)
        columns[column] = values

    frame = _frame(columns, dtypes)
    frame["wall_seconds"] = (
        (frame["ended_at"] - frame["started_at"]).dt.total_seconds().astype("float64")
    )
    return frame


def curves(storage: str | BaseStorage, name: str) -> pd.DataFrame:
    """Per-epoch learning curves of study ``name`` in long format.

    One row per trial, epoch and split, ordered by trial, epoch, split.

    Columns (dtype):
        trial (int64): trial number.
        epoch (int64): 1-based epoch (row ``k`` describes the model after
            ``k`` passes).
        split (category: ``train``, ``val``): which split was evaluated.
        loss (float64): mean cross-entropy in inference mode, without the
            weight-decay term (NaN when not recorded).
        accuracy (float64): fraction in [0, 1].

    Trials with a recorded curve give two rows per completed epoch. A trial
    without a curve (e.g. still running) gives its intermediate values as
    ``val`` rows with NaN loss. Empty (same columns) when there are no curves.
    The curves of a user's objective (any metric names) are
    :func:`metric_curves`'s; they give no rows here.

    Wide form: ``curves(...).pivot_table(index=["trial", "epoch"],
    columns="split", values=["loss", "accuracy"], observed=True)``.
    """
    with _opened(storage) as (opened, label):
        study_id = _study_id(opened, name, label)
        frozen = _load_trials(opened, study_id, part="curves")
    return _curves_frame(frozen)


def _curves_frame(frozen: Iterable[Any]) -> pd.DataFrame:
    trial_col: list[int] = []
    epoch_col: list[int] = []
    split_col: list[str] = []
    loss_col: list[float] = []
    acc_col: list[float] = []
    for t in frozen:
        data = t.user_attrs.get(records.TRIAL_CURVE)
        if isinstance(data, Mapping) and "step" in data:
            continue  # a user's objective: see metric_curves
        if isinstance(data, Mapping):
            curve = records.Curve.from_dict(data)
            n = max(
                len(curve.train_loss),
                len(curve.train_accuracy),
                len(curve.val_loss),
                len(curve.val_accuracy),
            )
            for i in range(n):
                for split, loss, acc in (
                    ("train", curve.train_loss, curve.train_accuracy),
                    ("val", curve.val_loss, curve.val_accuracy),
                ):
                    trial_col.append(t.number)
                    epoch_col.append(i + 1)
                    split_col.append(split)
                    loss_col.append(loss[i] if i < len(loss) else math.nan)
                    acc_col.append(acc[i] if i < len(acc) else math.nan)
        elif t.intermediate_values:
            for step in sorted(t.intermediate_values):
                trial_col.append(t.number)
                epoch_col.append(int(step))
                split_col.append("val")
                loss_col.append(math.nan)
                acc_col.append(float(t.intermediate_values[step]))
    return _frame(
        {
            "trial": trial_col,
            "epoch": epoch_col,
            "split": split_col,
            "loss": loss_col,
            "accuracy": acc_col,
        },
        CURVE_COLUMNS,
    )


METRIC_CURVE_COLUMNS: dict[str, Any] = {
    "trial": "int64",
    "step": "int64",
    "metric": STRING_DTYPE,
    "value": "float64",
}
"""Columns and dtypes of :func:`metric_curves`."""


def metric_curves(storage: str | BaseStorage, name: str) -> pd.DataFrame:
    """Every metric each trial reported, per step, in long format: any objective.

    A user's objective gives what it reported (``trial.report(value, step,
    **more)``, or a command's JSON lines), one row per trial, step and metric
    name; the built-in objective gives its curve as ``train_loss``,
    ``train_accuracy``, ``val_loss``, ``val_accuracy`` (step = epoch).

    Columns (dtype): trial (int64), step (int64), metric (string), value
    (float64; NaN where a point lacked the metric). Ordered by trial, step and
    the order the metrics were first reported. Wide form:
    ``metric_curves(...).pivot_table(index=["trial", "step"], columns="metric",
    values="value")``.
    """
    with _opened(storage) as (opened, label):
        study_id = _study_id(opened, name, label)
        frozen = _load_trials(opened, study_id, part="curves")
    cols: dict[str, list[Any]] = {k: [] for k in METRIC_CURVE_COLUMNS}
    for t in sorted(frozen, key=lambda t: t.number):
        data = t.user_attrs.get(records.TRIAL_CURVE)
        if not isinstance(data, Mapping):
            continue
        if "step" in data:
            steps = [int(s) for s in data["step"]]
            names = [k for k in data if k != "step"]
        else:
            steps = list(range(1, len(data.get("val_accuracy", ())) + 1))
            names = [k for k in records.CURVE_FIELDS if k != "seconds"]
        for i, step in enumerate(steps):
            for metric in names:
                column = data.get(metric) or ()
                value = column[i] if i < len(column) else None
                cols["trial"].append(t.number)
                cols["step"].append(step)
                cols["metric"].append(metric)
                cols["value"].append(math.nan if value is None else float(value))
    return _frame(cols, METRIC_CURVE_COLUMNS)


# --- export -----------------------------------------------------------------------------


def _resolve_format(path: Path, format: str | None) -> str:
    if format is None:
        inferred = _SUFFIXES.get(path.suffix.lower())
        if inferred is None:
            raise HPSearchError(
                f"export format: cannot infer it from {path.name!r}; "
                f"give one of {', '.join(EXPORT_FORMATS)}"
            )
        return inferred
    fmt = str(format).lower()
    if fmt not in EXPORT_FORMATS:
        raise HPSearchError(f"export format: got {format!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    return fmt


def _check_table(table: str) -> str:
    if table not in EXPORT_TABLES:
        raise HPSearchError(f"export table: got {table!r}; allowed: {', '.join(EXPORT_TABLES)}")
    return table


def _list_columns(frame: pd.DataFrame, table: str) -> list[str]:
    if table != "rounds":
        return []
    return [
        c for c in frame.columns if c in ("top_trials", "moved_edges") or c.endswith("_choices")
    ]


def export(
    storage: str | BaseStorage,
    name: str,
    path: str | Path,
    format: str | None = None,
    *,
    table: str = "trials",
) -> Path:
    """Write one table of study ``name`` to ``path`` as CSV, Parquet or JSON.

    The default table is :func:`trials`; ``table="curves"`` writes
    :func:`curves` (long format) and ``table="rounds"`` writes :func:`rounds`.
    :func:`read_export` reads any of them back with the same columns and
    dtypes (``pandas.testing.assert_frame_equal`` holds).

    Formats:
        csv: plain CSV with a header row, no index; missing values empty;
            times ISO-8601 with ``+00:00``; floats written exactly; list
            columns (rounds) as JSON arrays. Plain ``pandas.read_csv`` reads
            it; :func:`read_export` also restores the dtypes.
        parquet: via pyarrow (the ``parquet`` extra: ``pip install
            'hpsearch[parquet]'``); dtypes are stored in the file.
        json: pandas' Table Schema layout (``{"schema": ..., "data": [...]}``,
            readable by ``pandas.read_json(path, orient="table")``), floats
            written exactly, NaN/NA as ``null``.

    Args:
        storage: URL or Optuna storage.
        name: Study name.
        path: Output file (overwritten).
        format: ``csv``, ``parquet`` or ``json``; None infers it from the
            suffix (``.csv``, ``.parquet``/``.pq``, ``.json``).
        table: ``trials`` (default), ``curves`` or ``rounds``.

    Returns:
        The path written.

    Raises:
        StudyNotFoundError, StorageError: As the readers.
        HPSearchError: Unknown format or table, Parquet without pyarrow
            installed (before anything is read or written), or the file
            cannot be written.
    """
    out = Path(path)
    fmt = _resolve_format(out, format)
    _check_table(table)
    if fmt == "parquet":
        _require_pyarrow("export")
    reader = {"trials": trials, "curves": curves, "rounds": rounds}[table]
    frame = reader(storage, name)
    try:
        _write(frame, out, fmt, table)
    except OSError as exc:
        raise HPSearchError(f"export: cannot write {out}: {exc.strerror or exc}") from exc
    return out


def _require_pyarrow(action: str) -> None:
    """Raise :class:`HPSearchError` naming the extra to install when pyarrow is missing."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise HPSearchError(
            f"{action} format parquet: needs pyarrow, which is not installed; install the "
            "parquet extra: pip install 'hpsearch[parquet]' (or use csv or json)"
        ) from None


def _write(frame: pd.DataFrame, path: Path, fmt: str, table: str) -> None:
    lists = _list_columns(frame, table)
    if fmt == "csv":
        encoded = frame.copy()
        for column in lists:
            encoded[column] = [None if v is None else json.dumps(v) for v in frame[column]]
        encoded.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False, engine="pyarrow")
    else:
        from pandas.io.json import build_table_schema

        schema = build_table_schema(frame, index=False)
        data = [
            {c: _json_value(v) for c, v in zip(frame.columns, row, strict=True)}
            for row in frame.itertuples(index=False, name=None)
        ]
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"schema": schema, "data": data}, fh, allow_nan=False)


def _json_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value.tolist()]
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    return value


def read_export(
    path: str | Path, format: str | None = None, *, table: str = "trials"
) -> pd.DataFrame:
    """Read a file written by :func:`export` with the documented dtypes restored.

    Args:
        path: The exported file.
        format: ``csv``, ``parquet`` or ``json``; None infers it from the suffix.
        table: Which table the file holds: ``trials`` (default), ``curves`` or
            ``rounds``.

    Returns:
        The same DataFrame the reader function returned when it was exported
        (columns, order, dtypes, values). In CSV, an empty string and a missing
        string cannot be told apart: both read back as ``<NA>``; ``+/-inf`` in
        JSON reads back as NaN (JSON has no infinities).

    Raises:
        HPSearchError: Unknown format or table, Parquet without pyarrow
            installed, or the file cannot be read.
    """
    src = Path(path)
    fmt = _resolve_format(src, format)
    _check_table(table)
    try:
        if fmt == "csv":
            return _read_csv(src, table)
        if fmt == "parquet":
            _require_pyarrow("read_export")
            return _restore_parquet(pd.read_parquet(src, engine="pyarrow"), table)
        return _read_json(src, table)
    except OSError as exc:
        raise HPSearchError(f"read_export: cannot read {src}: {exc.strerror or exc}") from exc


def _fixed_dtypes(table: str) -> dict[str, Any]:
    return {"trials": _TRIAL_FIXED, "curves": CURVE_COLUMNS, "rounds": ROUND_COLUMNS}[table]


def _read_csv(path: Path, table: str) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype=object, keep_default_na=False, na_values=[])
    frame = pd.DataFrame(index=raw.index)
    fixed = _fixed_dtypes(table)
    for column in raw.columns:
        texts = [None if v is None or v == "" else str(v) for v in raw[column].tolist()]
        if column in fixed:
            dtype = fixed[column]
        elif table == "rounds":
            dtype = LIST if column.endswith("_choices") else "float64"
        else:
            dtype = _infer_text_dtype(texts)
        frame[column] = _parse_texts(texts, dtype)
    return frame.reset_index(drop=True)


_INT_TEXT = re.compile(r"[+-]?\d+")


def _infer_text_dtype(texts: list[str | None]) -> Any:
    present = [t for t in texts if t is not None]
    if not present:
        return "float64"
    if all(t in ("True", "False") for t in present):
        return "boolean"
    if all(_INT_TEXT.fullmatch(t) for t in present):
        return "Int64"
    try:
        for t in present:
            float(t)
    except ValueError:
        return STRING_DTYPE
    return "float64"


def _parse_texts(texts: list[str | None], dtype: Any) -> pd.Series:
    if isinstance(dtype, pd.DatetimeTZDtype):
        return _times(texts)
    if dtype == LIST:
        return pd.Series([None if t is None else json.loads(t) for t in texts], dtype=object)
    if dtype == "float64":
        return pd.Series([math.nan if t is None else float(t) for t in texts], dtype="float64")
    if dtype in ("int64", "Int64"):
        return pd.Series(pd.array([None if t is None else int(t) for t in texts], dtype=dtype))
    if dtype == "boolean":
        values = [None if t is None else {"True": True, "False": False}[t] for t in texts]
        return pd.Series(pd.array(values, dtype="boolean"))
    return pd.Series(pd.array(texts, dtype=dtype))


def _read_json(path: Path, table: str) -> pd.DataFrame:
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    try:
        schema_fields = doc["schema"]["fields"]
        names = [f["name"] for f in schema_fields]
        data = doc["data"]
    except (KeyError, TypeError) as exc:
        raise HPSearchError(
            f"read_export: {path} is not a Table Schema JSON file written by export()"
        ) from exc
    raw = {n: [row.get(n) for row in data] for n in names}
    fixed = _fixed_dtypes(table)
    frame = pd.DataFrame(index=pd.RangeIndex(len(data)))
    for spec in schema_fields:
        column = spec["name"]
        values = raw[column]
        if column in fixed:
            dtype = fixed[column]
        elif table == "rounds":
            dtype = LIST if column.endswith("_choices") else "float64"
        else:
            dtype = _schema_dtype(spec)
        frame[column] = _json_column(values, dtype)
    return frame


def _schema_dtype(spec: Mapping[str, Any]) -> Any:
    ext = spec.get("extDtype")
    if ext == "Int64":
        return "Int64"
    if ext == "boolean":
        return "boolean"
    if ext == "string":
        return STRING_DTYPE
    kind = spec.get("type")
    if kind == "number":
        return "float64"
    if kind == "integer":
        return "Int64"
    if kind == "boolean":
        return "boolean"
    return "object"


def _json_column(values: list[Any], dtype: Any) -> pd.Series:
    if isinstance(dtype, pd.DatetimeTZDtype):
        return _times(values)
    if dtype in (LIST, "object"):
        return pd.Series(values, dtype=object)
    if dtype == "float64":
        return pd.Series([math.nan if v is None else float(v) for v in values], dtype="float64")
    return pd.Series(pd.array(values, dtype=dtype))


def _restore_parquet(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Normalise a frame read from Parquet to the documented dtypes."""
    fixed = _fixed_dtypes(table)
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for column in frame.columns:
        series = frame[column].reset_index(drop=True)
        dtype = fixed.get(column)
        if dtype is None and table == "rounds":
            dtype = LIST if column.endswith("_choices") else "float64"
        if dtype == LIST:
            out[column] = pd.Series(
                [v.tolist() if isinstance(v, np.ndarray) else v for v in series], dtype=object
            )
        elif dtype is not None:
            out[column] = series.astype(dtype)
        elif isinstance(series.dtype, pd.StringDtype):
            out[column] = series.astype(STRING_DTYPE)
        else:
            out[column] = series
    return out
