"""Optuna's RDB storage with trial reads as plain SQL instead of ORM objects.

Every read of trials - the sampler's (through Optuna's trial cache), the
driver's at a round's start and close, :mod:`hpsearch.results` - ends in
``RDBStorage._get_trials``. Optuna builds an ORM object for each of a trial's
~20 rows (parameters, value, attributes, intermediate values) and then a
``FrozenTrial`` from them: about 0.6-0.9 ms per trial here, half the driver's
time per short trial. :class:`LeanRDBStorage` runs the same selection as six
Core ``SELECT``s (one per table, each filtered by the same trial condition)
and builds the same ``FrozenTrial`` objects from the rows - equal field for
field, as the tests check against Optuna's own read.

Writes are Optuna's (and :mod:`hpsearch.storage`'s); only this read changes.
Used only while :mod:`hpsearch.internals` keeps Optuna's fast paths on (a
tested Optuna release and schema); otherwise Optuna's own read runs.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Container, Iterable
from typing import Any

import sqlalchemy
from optuna import distributions
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

from hpsearch import internals
from hpsearch.internals import models

__all__ = ["LeanRDBStorage"]

_TRIALS = models.TrialModel.__table__
_PARAMS = models.TrialParamModel.__table__
_VALUES = models.TrialValueModel.__table__
_USER_ATTRS = models.TrialUserAttributeModel.__table__
_SYSTEM_ATTRS = models.TrialSystemAttributeModel.__table__
_INTERMEDIATE = models.TrialIntermediateValueModel.__table__


def _local(utc: datetime.datetime | None) -> datetime.datetime | None:
    """Naive UTC as stored -> naive local time, as ``TrialModel.datetime_*`` give."""
    if utc is None:
        return None
    return utc.replace(tzinfo=datetime.UTC).astimezone().replace(tzinfo=None)


class LeanRDBStorage(RDBStorage):
    """``RDBStorage`` whose trial reads build ``FrozenTrial`` objects from Core rows."""

    def _get_trials(
        self,
        study_id: int,
        states: Container[Any] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        if not internals.optuna_fast():  # turned off since this storage opened
            return super()._get_trials(study_id, states, included_trial_ids, trial_id_greater_than)
        # The selection is Optuna's: trials of the study (in ``states``), and of
        # those the ones in ``included_trial_ids`` or with a larger id.
        included = {i for i in included_trial_ids if i <= trial_id_greater_than}
        condition = _TRIALS.c.study_id == study_id
        if states is not None:
            assert isinstance(states, Iterable)
            condition = condition & _TRIALS.c.state.in_(list(states))
        if included and trial_id_greater_than > -1:
            condition = condition & sqlalchemy.or_(
                _TRIALS.c.trial_id.in_(sorted(included)),
                _TRIALS.c.trial_id > trial_id_greater_than,
            )
        elif trial_id_greater_than > -1:
            condition = condition & (_TRIALS.c.trial_id > trial_id_greater_than)
        with internals.session(self) as session:
            models.StudyModel.find_or_raise_by_id(study_id, session)
            try:
                return _read(session, condition)
            except sqlalchemy.exc.OperationalError:
                # Too many ids for one IN (SQLite's variable limit), as Optuna
                # falls back: read the study's trials, keep the selection.
                session.rollback()
                wanted = _read(session, _TRIALS.c.study_id == study_id)
                return [
                    t
                    for t in wanted
                    if (states is None or t.state in states)
                    and (
                        trial_id_greater_than == -1
                        or internals.trial_id(t) in included
                        or internals.trial_id(t) > trial_id_greater_than
                    )
                ]


def _rows_of(session: Any, table: sqlalchemy.Table, condition: Any, *columns: str) -> Any:
    """Rows of ``table`` (``trial_id`` first) belonging to the selected trials."""
    chosen = sqlalchemy.select(_TRIALS.c.trial_id).where(condition)
    query = sqlalchemy.select(table.c.trial_id, *(table.c[c] for c in columns)).where(
        table.c.trial_id.in_(chosen)
    )
    return session.execute(query)


def _read(session: Any, condition: Any) -> list[FrozenTrial]:
    trial_rows = session.execute(
        sqlalchemy.select(
            _TRIALS.c.trial_id,
            _TRIALS.c.number,
            _TRIALS.c.state,
            _TRIALS.c.datetime_start,
            _TRIALS.c.datetime_complete,
        )
        .where(condition)
        .order_by(_TRIALS.c.trial_id)
    ).all()
    if not trial_rows:
        return []
    ids = {row.trial_id for row in trial_rows}

    # Each SELECT below re-applies the condition; under READ COMMITTED
    # (PostgreSQL) a trial created since the first one may show up: skip it.
    params: dict[int, list[tuple[int, str, float, str]]] = {i: [] for i in ids}
    for trial_id, param_id, name, value, dist_json in _rows_of(
        session, _PARAMS, condition, "param_id", "param_name", "param_value", "distribution_json"
    ):
        if trial_id in ids:
            params[trial_id].append((param_id, name, value, dist_json))

    values: dict[int, dict[int, float]] = {}
    to_float = models.TrialValueModel.stored_repr_to_value
    for trial_id, objective, value, kind in _rows_of(
        session, _VALUES, condition, "objective", "value", "value_type"
    ):
        if trial_id in ids:
            values.setdefault(trial_id, {})[objective] = to_float(value, kind)

    user_attrs: dict[int, dict[str, Any]] = {i: {} for i in ids}
    for trial_id, key, value_json in _rows_of(session, _USER_ATTRS, condition, "key", "value_json"):
        if trial_id in ids:
            user_attrs[trial_id][key] = json.loads(value_json)
    system_attrs: dict[int, dict[str, Any]] = {i: {} for i in ids}
    for trial_id, key, value_json in _rows_of(
        session, _SYSTEM_ATTRS, condition, "key", "value_json"
    ):
        if trial_id in ids:
            system_attrs[trial_id][key] = json.loads(value_json)

    intermediate: dict[int, dict[int, float]] = {i: {} for i in ids}
    to_value = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
    for trial_id, step, value, kind in _rows_of(
        session, _INTERMEDIATE, condition, "step", "intermediate_value", "intermediate_value_type"
    ):
        if trial_id in ids:
            intermediate[trial_id][step] = to_value(value, kind)

    parsed: dict[str, distributions.BaseDistribution] = {}  # one parse per distinct JSON
    trials = []
    for row in trial_rows:
        trial_params = {}
        trial_dists = {}
        for _, name, value, dist_json in sorted(params[row.trial_id]):
            dist = parsed.get(dist_json)
            if dist is None:
                dist = parsed[dist_json] = distributions.json_to_distribution(dist_json)
            trial_params[name] = dist.to_external_repr(value)
            trial_dists[name] = dist
        by_objective = values.get(row.trial_id)
        trials.append(
            FrozenTrial(
                number=row.number,
                state=row.state,
                value=None,
                values=[by_objective[k] for k in sorted(by_objective)] if by_objective else None,
                datetime_start=_local(row.datetime_start),
                datetime_complete=_local(row.datetime_complete),
                params=trial_params,
                distributions=trial_dists,
                user_attrs=user_attrs[row.trial_id],
                system_attrs=system_attrs[row.trial_id],
                intermediate_values=intermediate[row.trial_id],
                trial_id=row.trial_id,
            )
        )
    return trials
