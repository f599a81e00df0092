"""The results database as the driver writes it: one study, its rounds, its trials.

Optuna's RDB storage is the database (SQLite by default, PostgreSQL for a
cluster); :mod:`hpsearch.records` says where each thing is kept. Writes on the
trial hot path are lean: a batch of trials is created with its parameters in
one transaction and finished (value, state, curve, attributes, intermediate
values) in one transaction per batch of finished trials. On PostgreSQL each of
those writes is one statement (each statement is a round trip to the server,
and the server's per-statement work was most of PostgreSQL's cost per trial).

Durability: on SQLite the database runs in WAL mode with
``synchronous=NORMAL``: a committed trial survives a crash of the driver; a
power loss can lose the last few commits. A crash of the driver costs at most
the trials that were running and those finished but not yet recorded (the
driver batches them, see :data:`hpsearch.search.RECORD_DELAY`): they stay
RUNNING and are redone on resume.
"""

from __future__ import annotations

import datetime
import enum
import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
)
from optuna.storages import RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch import internals, records
from hpsearch.errors import HPSearchError, StorageError
from hpsearch.internals import models
from hpsearch.records import Curve, RoundRecord
from hpsearch.storage_url import mask_url, open_storage
from hpsearch.worker import TrialOutcome

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///hpsearch.db"


def _tune_sqlite(storage: RDBStorage) -> None:
    """WAL (readers never block the writer) and NORMAL sync on every connection."""
    engine = storage.engine
    if engine.name != "sqlite":
        return

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    sqlalchemy.event.listen(engine, "connect", on_connect)
    engine.dispose()  # pooled connections reopen with the pragmas


def _utc_now() -> datetime.datetime:
    """Now as Optuna's RDB storage keeps datetimes: naive UTC."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def _table(model: Any) -> sqlalchemy.Table:
    """The Core table behind an Optuna model: executemany without the ORM's
    per-row bookkeeping (several times cheaper on the trial hot path)."""
    return model.__table__


def _on_postgres(session: Any) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _from_json(name: str, columns: Mapping[str, Any]) -> Any:
    """PostgreSQL's ``json_to_recordset(:name)`` as rows of ``columns`` (name ->
    SQLAlchemy type): any number of rows in one bound parameter (see
    :func:`_json_rows`), read by the server in the statement that uses them."""
    document = sqlalchemy.cast(sqlalchemy.bindparam(name, type_=sqlalchemy.Text), sqlalchemy.JSON)
    return (
        sqlalchemy.func.json_to_recordset(document)
        .table_valued(*(sqlalchemy.column(c, kind) for c, kind in columns.items()))
        .render_derived(name=f"{name}_rows", with_types=True)
    )


def _columns(table: sqlalchemy.Table, *names: str) -> dict[str, Any]:
    return {name: table.c[name].type for name in names}


def _json_rows(rows: list[dict[str, Any]]) -> str:
    """Rows as a JSON array of objects for :func:`_from_json`; an Enum column holds
    the member's name (as SQLAlchemy writes it; an ``IntEnum`` such as ``TrialState``
    would be written as its number, so it never goes in here). NaN or infinity is
    an error, never a silent ``null``: Optuna's storage keeps those as ``None`` plus
    a type column."""
    return json.dumps(rows, default=_enum_name, allow_nan=False)


def _enum_name(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return value.name
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _recorded_value(outcome: TrialOutcome) -> float | None:
    """The value a finished trial records: COMPLETE or PRUNED with one, else None."""
    state = TrialState[outcome.state]
    if outcome.value is not None and state in (TrialState.COMPLETE, TrialState.PRUNED):
        return outcome.value
    return None


def curve_from_history(history: Mapping[str, Any]) -> Curve:
    rows = history.get("records", ())
    return Curve(**{k: tuple(float(r[k]) for r in rows) for k in records.CURVE_FIELDS})


class StudyStore:
    """The driver's handle on one study in the results database."""

    def __init__(self, storage: RDBStorage, study: optuna.Study) -> None:
        self.rdb = storage
        self.study = study
        self.study_id = internals.study_id(study, storage)
        self.metric = "val_accuracy"  # which curve the intermediate values record

    # -- opening ---------------------------------------------------------
    @classmethod
    def open(
        cls,
        url: str,
        name: str,
        *,
        direction: str,
        sampler: optuna.samplers.BaseSampler,
        create: bool,
    ) -> tuple[StudyStore, bool]:
        """Open (or create) study ``name``; returns the store and whether it existed."""
        try:
            rdb = open_storage(url, create=create)
        except StorageError as exc:
            # Two drivers creating Optuna's tables in a fresh database at the same
            # moment: one loses the race; the tables exist now, so open again.
            if not create or ("duplicate key" not in str(exc) and "already exists" not in str(exc)):
                raise
            time.sleep(0.5)
            rdb = open_storage(url, create=create)
        _tune_sqlite(rdb)
        try:
            study = optuna.load_study(study_name=name, storage=rdb, sampler=sampler)
            existed = True
        except KeyError:
            if not create:
                raise
            try:
                study = optuna.create_study(
                    study_name=name, storage=rdb, sampler=sampler, direction=direction
                )
                existed = False
            except optuna.exceptions.DuplicatedStudyError:
                # Another driver created it a moment ago: join it.
                study = optuna.load_study(study_name=name, storage=rdb, sampler=sampler)
                existed = True
        wanted = StudyDirection.MAXIMIZE if direction == "maximize" else StudyDirection.MINIMIZE
        if study.direction != wanted:
            raise HPSearchError(
                f"study {name!r} in {mask_url(url)} has direction "
                f"{study.direction.name.lower()}, the study file says {direction}; "
                "use --name to start a new study"
            )
        if not internals.optuna_fast():  # an untested Optuna: its public API only
            from hpsearch.public_store import PublicStudyStore

            return PublicStudyStore(rdb, study), existed
        return cls(rdb, study), existed

    # -- study-level records --------------------------------------------
    def user_attrs(self) -> dict[str, Any]:
        return self.rdb.get_study_user_attrs(self.study_id)

    def set_study_attr(self, key: str, value: Any) -> None:
        self.rdb.set_study_user_attr(self.study_id, key, value)

    def rounds(self) -> list[RoundRecord]:
        attrs = self.user_attrs()
        keys = sorted(k for k in attrs if k.startswith(records.ROUND_KEY_PREFIX))
        return [RoundRecord.from_dict(attrs[k]) for k in keys]

    def save_round(self, record: RoundRecord) -> None:
        self.set_study_attr(records.round_key(record.index), record.to_dict())

    # -- trials ----------------------------------------------------------
    def trials(self, states: Iterable[TrialState] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=tuple(states) if states else None)

    def check_distributions(self, dists: Mapping[str, BaseDistribution]) -> None:
        """Fail early if the study already records a parameter with another kind of
        distribution (e.g. a resumed study whose file changed a range to a choice).

        Every recorded trial is looked at, not only the first: a parameter may
        first appear in a later trial (a study file that added it on a resume).
        """
        checked: set[tuple[str, BaseDistribution]] = set()  # distributions are hashable
        for trial in self.trials():
            for name, recorded in trial.distributions.items():
                if name not in dists:
                    continue
                key = (name, recorded)
                if key in checked:
                    continue
                checked.add(key)
                try:
                    check_distribution_compatibility(recorded, dists[name])
                except ValueError as exc:
                    raise HPSearchError(
                        f"search.{name}: the recorded study samples it as {recorded}, "
                        f"the study file as {dists[name]} ({exc}); use --name to start "
                        "a new study"
                    ) from exc

    def create_running_trials(
        self,
        batch: list[tuple[Mapping[str, Any], int]],
        distributions: Mapping[str, BaseDistribution],
        *,
        round_limit: int | None = None,
        driver: str | None = None,
    ) -> list[tuple[int, int]]:
        """Create RUNNING trials ``(params, round)``, all in one transaction.

        Returns ``(trial_id, number)`` per trial created, in order. Numbers
        follow Optuna's rule (count of the study's earlier trials). The study
        row is locked first (PostgreSQL ``SELECT ... FOR UPDATE``; SQLite takes
        its write lock), so concurrent drivers never share a number, and with
        ``round_limit`` the round never gets more than that many live
        (non-stale) trials: a batch that would overshoot is cut short.

        O(1) in the study's size: the next number is the last trial's plus one
        (numbers are dense, Optuna's rule), and each round's live trials are a
        counter (:data:`hpsearch.records.CLAIMED_KEY_PREFIX`) kept by this and
        :meth:`fail_trial`, counted from the trials once for a study recorded
        before the counter existed.

        Statements: the lock, one read (the counters and the last number), then
        the writes (on PostgreSQL one statement, :meth:`_write_claim_postgres`;
        each one a round trip to the server).
        """
        if not batch:
            return []
        rounds = list(dict.fromkeys(round_index for _, round_index in batch))
        with internals.session(self.rdb) as session:
            self._lock_study(session)
            # After the lock, in a statement of its own: on PostgreSQL a statement
            # sees what was committed before it began, so these reads see every
            # claim made before this driver got the lock.
            counters, last = self._claim_state(session, rounds)
            live = {
                r: (self._count_round(session, r) if counters[r] is None else int(counters[r]))
                for r in rounds
            }
            if round_limit is not None:
                room = round_limit - live[batch[0][1]]
                batch = batch[: max(0, room)]
                if not batch:
                    return []
            # Under the study lock every earlier trial has a smaller id: the
            # first number is the study's trial count (Optuna's rule), one more
            # than the last trial's number (an index lookup, not a count).
            first = 0 if last is None else int(last) + 1
            claimed = dict(live)
            for _, round_index in batch:
                claimed[round_index] += 1
            new = {r: claimed[r] for r in rounds if claimed[r] != live[r]}
            write = self._write_claim_postgres if _on_postgres(session) else self._write_claim
            return write(
                session,
                batch,
                distributions,
                first=first,
                counters={r: (n, counters[r] is not None) for r, n in new.items()},
                driver=driver,
            )

    def _claim_state(self, session: Any, rounds: list[int]) -> tuple[dict[int, Any], int | None]:
        """Each round's live-trial counter (None: not kept yet) and the study's
        last trial number (None: no trial yet), in one statement."""
        attrs = _table(models.StudyUserAttributeModel)
        trials = _table(models.TrialModel)
        last = (
            sqlalchemy.select(trials.c.number)
            .where(trials.c.study_id == self.study_id)
            .order_by(trials.c.trial_id.desc())
            .limit(1)
            .scalar_subquery()
        )
        counters = [
            sqlalchemy.select(attrs.c.value_json)
            .where(attrs.c.study_id == self.study_id)
            .where(attrs.c.key == records.claimed_key(r))
            .scalar_subquery()
            for r in rounds
        ]
        row = session.execute(sqlalchemy.select(last, *counters)).one()
        values = {
            r: None if v is None else json.loads(v) for r, v in zip(rounds, row[1:], strict=True)
        }
        return values, row[0]

    def _claim_rows(
        self,
        batch: list[tuple[Mapping[str, Any], int]],
        distributions: Mapping[str, BaseDistribution],
        driver: str | None,
        key: str,
        keys: list[Any],
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Parameter and attribute rows of the trials of ``batch``, each tagged
        ``key: keys[i]`` (the trial's id, or its number until ids exist)."""
        dist_json = {name: distribution_to_json(d) for name, d in distributions.items()}
        params_rows: list[dict[str, Any]] = []
        attr_rows: list[dict[str, Any]] = []
        for tag, (params, round_index) in zip(keys, batch, strict=True):
            for name, value in params.items():
                params_rows.append(
                    {
                        key: tag,
                        "param_name": name,
                        "param_value": distributions[name].to_internal_repr(value),
                        "distribution_json": dist_json[name],
                    }
                )
            attr_rows.append(
                {key: tag, "key": records.TRIAL_ROUND, "value_json": json.dumps(round_index)}
            )
            if driver is not None:
                attr_rows.append(
                    {key: tag, "key": records.TRIAL_DRIVER, "value_json": json.dumps(driver)}
                )
        return params_rows, attr_rows

    def _write_claim(
        self,
        session: Any,
        batch: list[tuple[Mapping[str, Any], int]],
        distributions: Mapping[str, BaseDistribution],
        *,
        first: int,
        counters: dict[int, tuple[int, bool]],
        driver: str | None,
    ) -> list[tuple[int, int]]:
        """The writes of a claim, a statement per table (SQLite: no round trips)."""
        for round_index, (count, _) in counters.items():
            self._write_attr(session, records.claimed_key(round_index), count)
        trials = _table(models.TrialModel)
        now = _utc_now()
        ids = (
            session.execute(
                trials.insert().returning(trials.c.trial_id, sort_by_parameter_order=True),
                [
                    {
                        "number": first + offset,
                        "study_id": self.study_id,
                        "state": TrialState.RUNNING,
                        "datetime_start": now,
                    }
                    for offset in range(len(batch))
                ],
            )
            .scalars()
            .all()
        )
        params_rows, attr_rows = self._claim_rows(batch, distributions, driver, "trial_id", ids)
        session.execute(_table(models.TrialParamModel).insert(), params_rows)
        session.execute(_table(models.TrialUserAttributeModel).insert(), attr_rows)
        return [(trial_id, first + offset) for offset, trial_id in enumerate(ids)]

    def _write_claim_postgres(
        self,
        session: Any,
        batch: list[tuple[Mapping[str, Any], int]],
        distributions: Mapping[str, BaseDistribution],
        *,
        first: int,
        counters: dict[int, tuple[int, bool]],
        driver: str | None,
    ) -> list[tuple[int, int]]:
        """The writes of a claim as one PostgreSQL statement (one round trip): the
        trials (``INSERT ... RETURNING`` in number order, so ids grow with numbers,
        as :meth:`create_running_trials` relies on), their parameters and attributes
        joined to the new ids by number, and the round counters, each part a
        data-modifying ``WITH`` query; the rows travel as JSON (:func:`_from_json`).
        """
        trials = _table(models.TrialModel)
        params_table = _table(models.TrialParamModel)
        attrs_table = _table(models.TrialUserAttributeModel)
        study_attrs = _table(models.StudyUserAttributeModel)
        numbers = _from_json("numbers", _columns(trials, "number"))
        created = (
            trials.insert()
            .from_select(
                ["number", "study_id", "state", "datetime_start"],
                sqlalchemy.select(
                    numbers.c.number,
                    sqlalchemy.literal(self.study_id, trials.c.study_id.type),
                    sqlalchemy.literal(TrialState.RUNNING, trials.c.state.type),
                    sqlalchemy.literal(_utc_now(), trials.c.datetime_start.type),
                ).order_by(numbers.c.number),
            )
            .returning(trials.c.trial_id, trials.c.number)
            .cte("created")
        )
        parts = []
        values: dict[str, Any] = {
            "numbers": _json_rows([{"number": first + i} for i in range(len(batch))])
        }
        params_rows, attr_rows = self._claim_rows(
            batch, distributions, driver, "number", [first + i for i in range(len(batch))]
        )
        for name, table, rows, columns in (
            (
                "params",
                params_table,
                params_rows,
                ("param_name", "param_value", "distribution_json"),
            ),
            ("attrs", attrs_table, attr_rows, ("key", "value_json")),
        ):
            source = _from_json(name, {"number": trials.c.number.type, **_columns(table, *columns)})
            values[name] = _json_rows(rows)
            parts.append(
                table.insert()
                .from_select(
                    ["trial_id", *columns],
                    sqlalchemy.select(created.c.trial_id, *(source.c[c] for c in columns)).join(
                        created, created.c.number == source.c.number
                    ),
                )
                .cte(f"{name}_added")
            )
        for i, (round_index, (count, kept)) in enumerate(counters.items()):
            key, value_json = records.claimed_key(round_index), json.dumps(count)
            if kept:
                change = (
                    study_attrs.update()
                    .where(study_attrs.c.study_id == self.study_id)
                    .where(study_attrs.c.key == key)
                    .values(value_json=value_json)
                )
            else:
                change = study_attrs.insert().values(
                    study_id=self.study_id, key=key, value_json=value_json
                )
            parts.append(change.cte(f"counter_{i}"))
        statement = (
            sqlalchemy.select(created.c.trial_id, created.c.number)
            .add_cte(*parts)
            .order_by(created.c.number)
        )
        return [(int(i), int(n)) for i, n in session.execute(statement, values).all()]

    def trial_id(self, trial: FrozenTrial) -> int:
        """The storage id of one of this study's trials (what :meth:`fail_trial` takes)."""
        return internals.trial_id(trial, self.rdb, self.study_id)

    def set_trial_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.rdb.set_trial_user_attr(trial_id, key, value)

    def finish_trials(self, outcomes: list[TrialOutcome]) -> None:
        """Record finished trials (value, state, curve, attributes, intermediate
        values), all in one transaction. A trial already finished is left as is
        (as is a trial's second outcome in one batch).

        The states are set by an ``UPDATE ... WHERE`` the trial is unfinished,
        which also says which trials were (no read first, and a trial that
        another driver, or :meth:`fail_trial`, finished meanwhile gets no second
        record). On PostgreSQL that and the rows are one statement, its own
        transaction, one round trip (:meth:`_finish_postgres`).
        """
        if not outcomes:
            return
        first_of: dict[int, TrialOutcome] = {}
        for outcome in outcomes:
            first_of.setdefault(outcome.trial_id, outcome)
        unique = list(first_of.values())
        now = _utc_now()
        engine = self.rdb.engine
        if engine.dialect.name == "postgresql":
            # One statement is its own transaction: in autocommit mode there is no
            # BEGIN and no COMMIT to wait for, one round trip in all.
            with engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT")
                finished = self._finish_postgres(connection, unique, now)
        else:
            with internals.session(self.rdb) as session:
                finished = self._finish(session, unique, now)
        for outcome in outcomes:
            if outcome.trial_id not in finished or first_of[outcome.trial_id] is not outcome:
                logger.warning("trial %d is not running; not recorded again", outcome.number)

    def _finish(
        self, session: Any, outcomes: list[TrialOutcome], now: datetime.datetime
    ) -> set[int]:
        """:meth:`finish_trials`'s writes, a statement per state and per table; the
        ids of the trials it finished."""
        table = _table(models.TrialModel)
        unfinished = table.c.state.in_((TrialState.RUNNING, TrialState.WAITING))
        ids_by_state: dict[TrialState, list[int]] = {}
        for outcome in outcomes:
            ids_by_state.setdefault(TrialState[outcome.state], []).append(outcome.trial_id)
        finished: set[int] = set()
        for state, ids in ids_by_state.items():
            update = (
                table.update()
                .where(table.c.trial_id.in_(ids))
                .where(unfinished)
                .values(state=state, datetime_complete=now)
            )
            if session.get_bind().dialect.update_returning:
                finished |= set(session.execute(update.returning(table.c.trial_id)).scalars())
                continue
            # No UPDATE ... RETURNING (SQLite before 3.35): read, then update the
            # same rows in this transaction.
            running = sqlalchemy.select(table.c.trial_id).where(table.c.trial_id.in_(ids))
            finished |= set(session.execute(running.where(unfinished)).scalars())
            session.execute(update)
        attr_rows: list[dict[str, Any]] = []
        step_rows: list[dict[str, Any]] = []
        value_rows: list[dict[str, Any]] = []
        for outcome in outcomes:
            if outcome.trial_id in finished:
                self._outcome_rows(outcome, attr_rows, step_rows, value_rows)
        for model, rows in (
            (models.TrialUserAttributeModel, attr_rows),
            (models.TrialIntermediateValueModel, step_rows),
            (models.TrialValueModel, value_rows),
        ):
            if rows:
                session.execute(_table(model).insert(), rows)
        return finished

    def _finish_postgres(
        self, connection: Any, outcomes: list[TrialOutcome], now: datetime.datetime
    ) -> set[int]:
        """:meth:`finish_trials`'s writes as one PostgreSQL statement: the states
        (``UPDATE ... RETURNING`` the trials still unfinished), then the rows of
        those trials only, each table a data-modifying ``WITH`` query; the rows
        travel as JSON (:func:`_from_json`)."""
        trials = _table(models.TrialModel)
        states = _from_json("states", _columns(trials, "trial_id", "state"))
        done = (
            trials.update()
            .where(trials.c.trial_id == states.c.trial_id)
            # By id as well: the planner then reads these rows through the primary
            # key, never the whole study (it cannot see how many rows the JSON holds).
            .where(trials.c.trial_id.in_([o.trial_id for o in outcomes]))
            .where(trials.c.state.in_((TrialState.RUNNING, TrialState.WAITING)))
            .values(state=states.c.state, datetime_complete=now)
            .returning(trials.c.trial_id)
            .cte("done")
        )
        attr_rows: list[dict[str, Any]] = []
        step_rows: list[dict[str, Any]] = []
        value_rows: list[dict[str, Any]] = []
        for outcome in outcomes:
            self._outcome_rows(outcome, attr_rows, step_rows, value_rows)
        values: dict[str, Any] = {
            "states": _json_rows(
                [{"trial_id": o.trial_id, "state": TrialState[o.state].name} for o in outcomes]
            )
        }
        parts = []
        for name, model, rows, columns in (
            ("attrs", models.TrialUserAttributeModel, attr_rows, ("key", "value_json")),
            (
                "steps",
                models.TrialIntermediateValueModel,
                step_rows,
                ("step", "intermediate_value", "intermediate_value_type"),
            ),
            ("values", models.TrialValueModel, value_rows, ("objective", "value", "value_type")),
        ):
            table = _table(model)
            source = _from_json(name, _columns(table, "trial_id", *columns))
            values[name] = _json_rows(rows)
            parts.append(
                table.insert()
                .from_select(
                    ["trial_id", *columns],
                    sqlalchemy.select(source.c.trial_id, *(source.c[c] for c in columns)).where(
                        source.c.trial_id.in_(sqlalchemy.select(done.c.trial_id))
                    ),
                )
                .cte(f"{name}_added")
            )
        statement = sqlalchemy.select(done.c.trial_id).add_cte(*parts)
        return set(connection.execute(statement, values).scalars())

    def _outcome_record(
        self, outcome: TrialOutcome
    ) -> tuple[dict[str, Any], dict[int, float], float | None]:
        """What finishing a trial records: its user attributes, its intermediate
        values (step -> value: epochs 1, 2, ... for the built-in objective) and its
        value (None: none recorded)."""
        history = outcome.history or {}
        if "points" in history:  # a user's objective: whatever it reported
            return self._user_outcome_record(outcome)
        curve = curve_from_history(history)
        attrs: dict[str, Any] = {
            records.TRIAL_SEED: outcome.seed,
            records.TRIAL_NODE: outcome.node,
            records.TRIAL_BACKEND: outcome.backend,
            records.TRIAL_DIVERGED: outcome.diverged,
            records.TRIAL_TRAIN_SECONDS: round(outcome.train_seconds, 6),
            records.TRIAL_EPOCHS: len(curve.val_accuracy),
            records.TRIAL_STOPPED: bool(history.get("stopped", False)),
            records.TRIAL_CURVE: curve.to_dict(),
        }
        if outcome.fail_reason:
            attrs[records.TRIAL_FAIL_REASON] = outcome.fail_reason
        if outcome.retries:
            attrs[records.TRIAL_RETRIES] = outcome.retries
        steps = curve.val_loss if self.metric == "val_loss" else curve.val_accuracy
        return attrs, dict(enumerate(steps, start=1)), _recorded_value(outcome)

    def _user_outcome_record(
        self, outcome: TrialOutcome
    ) -> tuple[dict[str, Any], dict[int, float], float | None]:
        """A user's objective's trial: its reported points as the ``curve``
        (columns by metric name, see :func:`hpsearch.objective.curve_columns`),
        the study metric per reported step as intermediate values."""
        from hpsearch.objective import curve_columns, metric_steps

        history = outcome.history
        points = history.get("points", [])
        steps = metric_steps(points, self.metric)
        attrs: dict[str, Any] = {
            records.TRIAL_SEED: outcome.seed,
            records.TRIAL_NODE: outcome.node,
            records.TRIAL_BACKEND: outcome.backend,
            records.TRIAL_DIVERGED: False,
            records.TRIAL_TRAIN_SECONDS: round(outcome.train_seconds, 6),
            records.TRIAL_EPOCHS: len(steps),
            records.TRIAL_STOPPED: bool(history.get("stopped", False)),
            records.TRIAL_CURVE: curve_columns(points),
        }
        for key in (records.TRIAL_STDOUT_TAIL, records.TRIAL_STDERR_TAIL, records.TRIAL_RETURNED):
            if history.get(key):
                attrs[key] = history[key]
        if outcome.fail_reason:
            attrs[records.TRIAL_FAIL_REASON] = outcome.fail_reason
        if outcome.retries:
            attrs[records.TRIAL_RETRIES] = outcome.retries
        return attrs, dict(sorted(steps.items())), _recorded_value(outcome)

    def _outcome_rows(
        self,
        outcome: TrialOutcome,
        attr_rows: list[dict[str, Any]],
        step_rows: list[dict[str, Any]],
        value_rows: list[dict[str, Any]],
    ) -> None:
        attrs, steps, value = self._outcome_record(outcome)
        trial_id = outcome.trial_id
        attr_rows.extend(
            {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()
        )
        ivm = models.TrialIntermediateValueModel
        for epoch, step_value in steps.items():
            stored, kind = ivm.intermediate_value_to_stored_repr(step_value)
            step_rows.append(
                {
                    "trial_id": trial_id,
                    "step": epoch,
                    "intermediate_value": stored,
                    "intermediate_value_type": kind,
                }
            )
        if value is not None:
            stored, kind = models.TrialValueModel.value_to_stored_repr(value)
            value_rows.append(
                {"trial_id": trial_id, "objective": 0, "value": stored, "value_type": kind}
            )

    # -- coordination between drivers -------------------------------------
    def _lock_study(self, session: Any) -> None:
        """Serialise drivers: lock the study row (SQLite: take the write lock)."""
        if self.rdb.engine.name == "sqlite":
            # A no-op write makes SQLite take its RESERVED lock now, so the
            # reads that follow in this transaction are not stale.
            session.execute(
                sqlalchemy.update(models.StudyModel)
                .where(models.StudyModel.study_id == self.study_id)
                .values(study_name=models.StudyModel.study_name)
            )
        else:
            models.StudyModel.find_or_raise_by_id(self.study_id, session, for_update=True)

    def _count_round(self, session: Any, round_index: int) -> int:
        """Live trials of a round: all but FAIL ones marked stale (redone)."""
        attrs = models.TrialUserAttributeModel
        trial = models.TrialModel
        stale = (
            sqlalchemy.select(attrs.trial_id)
            .where(attrs.key == records.TRIAL_FAIL_REASON)
            .where(attrs.value_json.like('"' + records.STALE_PREFIX + "%"))
        )
        query = (
            sqlalchemy.select(sqlalchemy.func.count(trial.trial_id))
            .join(attrs, attrs.trial_id == trial.trial_id)
            .where(trial.study_id == self.study_id)
            .where(attrs.key == records.TRIAL_ROUND)
            .where(attrs.value_json == json.dumps(round_index))
            .where(trial.trial_id.not_in(stale))
        )
        return int(session.execute(query).scalar_one())

    def count_round(self, round_index: int) -> int:
        with internals.session(self.rdb) as session:
            return self._count_round(session, round_index)

    def _read_attr(self, session: Any, key: str) -> Any:
        model = models.StudyUserAttributeModel
        row = session.execute(
            sqlalchemy.select(model.value_json)
            .where(model.study_id == self.study_id)
            .where(model.key == key)
        ).scalar_one_or_none()
        return None if row is None else json.loads(row)

    def _write_attr(self, session: Any, key: str, value: Any) -> None:
        model = models.StudyUserAttributeModel
        updated = session.execute(
            sqlalchemy.update(model)
            .where(model.study_id == self.study_id)
            .where(model.key == key)
            .values(value_json=json.dumps(value))
        )
        if updated.rowcount == 0:
            session.execute(
                sqlalchemy.insert(model).values(
                    study_id=self.study_id, key=key, value_json=json.dumps(value)
                )
            )

    def start_first_round(self, record: RoundRecord) -> RoundRecord:
        """Write round 0's record unless another driver already did; return the recorded one."""
        with internals.session(self.rdb) as session:
            self._lock_study(session)
            existing = self._read_attr(session, records.round_key(record.index))
            if existing is not None:
                return RoundRecord.from_dict(existing)
            self._write_attr(session, records.round_key(record.index), record.to_dict())
            return record

    def close_round(
        self,
        ended: RoundRecord,
        following: RoundRecord | None,
        status: dict[str, Any] | None,
    ) -> tuple[RoundRecord, bool]:
        """End a round (and start the next, or mark the study finished) atomically.

        The first driver to get here writes its records; any other gets the
        recorded ones back. Returns the authoritative ended round and whether
        this call wrote it.
        """
        with internals.session(self.rdb) as session:
            self._lock_study(session)
            existing = self._read_attr(session, records.round_key(ended.index))
            if existing is not None and existing.get("ended_at"):
                return RoundRecord.from_dict(existing), False
            self._write_attr(session, records.round_key(ended.index), ended.to_dict())
            if following is not None:
                self._write_attr(session, records.round_key(following.index), following.to_dict())
            if status is not None:
                self._write_attr(session, records.STATUS_KEY, status)
            return ended, True

    def beat(self, driver: str, info: dict[str, Any]) -> None:
        """Record that ``driver`` is alive (its host, pid and the time)."""
        self.set_study_attr(records.DRIVER_KEY_PREFIX + driver, info)

    def drivers(self) -> dict[str, dict[str, Any]]:
        prefix = records.DRIVER_KEY_PREFIX
        return {k[len(prefix) :]: v for k, v in self.user_attrs().items() if k.startswith(prefix)}

    def fail_trial(self, trial_id: int, reason: str) -> bool:
        """Mark one unfinished trial FAIL with a reason, in one transaction.

        Returns False (and changes nothing) when it already finished. The
        completion time is written to the column as naive UTC, as every other
        write here does (Core statements, not the ORM attribute: what that
        attribute does with a naive datetime differs between Optuna releases;
        Optuna 5.1 reads it as local time and converts it).

        A stale trial (``reason`` starts with :data:`hpsearch.records.STALE_PREFIX`,
        redone) leaves its round's live count (under the study's lock, as
        :meth:`create_running_trials` keeps it).
        """
        trial_model = models.TrialModel
        stale = reason.startswith(records.STALE_PREFIX)
        with internals.session(self.rdb) as session:
            if stale:
                self._lock_study(session)
            trial = trial_model.find_or_raise_by_id(trial_id, session, for_update=True)
            if trial.state.is_finished():
                return False
            if stale:
                self._leave_round(session, trial_id)
            self._write_trial_attr(session, trial_id, records.TRIAL_FAIL_REASON, reason)
            table = _table(trial_model)
            session.execute(
                table.update()
                .where(table.c.trial_id == trial_id)
                .values(state=TrialState.FAIL, datetime_complete=_utc_now())
            )
            return True

    def _leave_round(self, session: Any, trial_id: int) -> None:
        """One live trial less in the round of ``trial_id`` (when that round keeps a count)."""
        model = models.TrialUserAttributeModel
        round_json = session.execute(
            sqlalchemy.select(model.value_json)
            .where(model.trial_id == trial_id)
            .where(model.key == records.TRIAL_ROUND)
        ).scalar_one_or_none()
        if round_json is None:
            return
        key = records.claimed_key(int(json.loads(round_json)))
        count = self._read_attr(session, key)
        if count is not None:
            self._write_attr(session, key, max(0, int(count) - 1))

    def _write_trial_attr(self, session: Any, trial_id: int, key: str, value: Any) -> None:
        model = models.TrialUserAttributeModel
        updated = session.execute(
            sqlalchemy.update(model)
            .where(model.trial_id == trial_id)
            .where(model.key == key)
            .values(value_json=json.dumps(value))
        )
        if updated.rowcount == 0:
            session.execute(
                sqlalchemy.insert(model).values(
                    trial_id=trial_id, key=key, value_json=json.dumps(value)
                )
            )
