"""Write a realistic recorded study into a results database, for tests.

The study is laid out exactly as :mod:`hpsearch.records` says (the run loop's
format) but written through Optuna's public API only (``create_study``,
``set_user_attr``, ``add_trial``), with no Ray and no training, in well under
a second. :class:`FakeStudy` says what was written so tests can check readers
against it.

Layout of ``write_fake_study(url, rounds=3, trials_per_round=6, epochs=4)``:

* parameters ``lr`` and ``weight_decay`` (log floats), ``dropout_ratio``
  (float), ``batchnorm`` (bool choice), ``batch_size`` (int), ``activation``
  (str choice); each round samples inside its box, and the box narrows around
  the previous round's top 3 (recorded as ``hpsearch:round:NNNN``);
* in every round the trial at position 1 is PRUNED (stopped after
  ``epochs - 1`` epochs, with a value); in round 0 the trial at position 2
  FAILs because its loss diverged in epoch 3 (two recorded epochs,
  ``diverged`` true); in round 1 the trial at position 2 FAILs because its
  worker died (no curve); every other trial is COMPLETE with ``epochs``
  epochs; ``running`` extra trials are left RUNNING with intermediate values
  only;
* the value is the final validation accuracy (``maximize``) or the final
  validation loss (``minimize``);
* trial ``k`` starts at ``START + 2.5 k`` s and lasts ``1.25 + 0.1 * position`` s
  (UTC); study attributes hold the study file, overrides, metric and, when
  ``final_eval``, a final evaluation.

Options for the studies real runs leave behind (the report's robustness tests):
``box`` (the first round's box instead of :data:`FULL_BOX`, e.g. a categorical
with one choice or a range with ``low == high``), ``states`` (the state of the
trial at each position of every round instead of the layout above, cycled;
``DIVERGED`` is a FAIL whose last recorded epoch has NaN losses), ``values``
(each finished trial's value from its number, e.g. all equal),
``curve_nan`` (NaN losses and accuracies in epoch 2 of every curve),
``recorded_box`` (the distributions every trial records, as hpsearch records
the study file's ranges while a box that slid past an edge samples beyond
them: values outside them are written as they are) and ``open_round`` (with
``running``, the running round's record too, started but not ended).

:func:`postgres_database` makes a fresh PostgreSQL database for one test and
drops it afterwards (skipping the test when no server answers, a failure in
CI: see tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from hpsearch import records
from hpsearch.storage_url import close_storage, open_storage

START = dt.datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=dt.UTC)
TRIAL_SPACING = 2.5
PARAMS = ("lr", "weight_decay", "dropout_ratio", "batchnorm", "batch_size", "activation")
TOP_K = 3
_STATES = ("COMPLETE", "PRUNED", "FAIL", "DIVERGED")
MARGIN = 0.1

FULL_BOX: dict[str, dict[str, Any]] = {
    "lr": {"low": 1e-6, "high": 1e-2, "log": True},
    "weight_decay": {"low": 1e-8, "high": 1e-4, "log": True},
    "dropout_ratio": {"low": 0.0, "high": 0.5, "log": False},
    "batchnorm": {"choices": [True, False]},
    "batch_size": {"low": 16, "high": 256, "log": False, "int": True},
    "activation": {"choices": ["relu", "tanh"]},
}

STUDY_FILE = """\
[study]
name = "{name}"
direction = "{direction}"
metric = "{metric}"
seed = {seed}
sampler = "random"

[data]
dataset = "digits"
train_samples = 500
val_fraction = 0.2

[model]
backend = "numpy"
hidden = [100, 100]
epochs = {epochs}

[search]
lr = {{ low = 1e-6, high = 1e-2, log = true }}
weight_decay = {{ low = 1e-8, high = 1e-4, log = true }}
dropout_ratio = {{ low = 0.0, high = 0.5 }}
batchnorm = {{ choices = [true, false] }}
batch_size = {{ low = 16, high = 256, int = true }}
activation = {{ choices = ["relu", "tanh"] }}

[narrowing]
rounds = {rounds}
trials_per_round = {trials_per_round}
top_k = 3
margin = 0.1
"""


@dataclass(frozen=True)
class FakeTrial:
    """What was written for one trial."""

    number: int
    round: int
    position: int
    state: str
    value: float | None
    params: dict[str, Any]
    seed: int
    epochs: int
    diverged: bool
    stopped: bool
    fail_reason: str | None
    start: dt.datetime
    complete: dt.datetime | None
    curve: records.Curve | None
    intermediate: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FakeStudy:
    """What :func:`write_fake_study` wrote."""

    name: str
    direction: str
    metric: str
    trials: tuple[FakeTrial, ...]
    rounds: tuple[records.RoundRecord, ...]
    final_eval: dict[str, Any] | None
    study_file: str

    def numbers(self, state: str) -> list[int]:
        return [t.number for t in self.trials if t.state == state]

    @property
    def best(self) -> FakeTrial:
        done = [t for t in self.trials if t.state == "COMPLETE"]
        sign = -1.0 if self.direction == "maximize" else 1.0
        return min(done, key=lambda t: (sign * t.value, t.number))

    @property
    def n_curve_epochs(self) -> int:
        """Total recorded epochs over all curves (curves() has twice as many rows)."""
        return sum(t.epochs for t in self.trials if t.curve is not None)


def _sample(box: dict[str, dict[str, Any]], rng: np.random.Generator) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, spec in box.items():
        if "choices" in spec:
            params[name] = spec["choices"][int(rng.integers(len(spec["choices"])))]
        elif spec.get("int"):
            params[name] = int(rng.integers(int(spec["low"]), int(spec["high"]) + 1))
        elif spec["log"]:
            params[name] = float(
                10 ** rng.uniform(math.log10(spec["low"]), math.log10(spec["high"]))
            )
        else:
            params[name] = float(rng.uniform(spec["low"], spec["high"]))
    return params


def _distributions(
    box: dict[str, dict[str, Any]], full: dict[str, dict[str, Any]]
) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for name, spec in box.items():
        if "choices" in spec:
            # Optuna needs the same choices in every trial: always the full set.
            out[name] = CategoricalDistribution(full[name]["choices"])
        elif spec.get("int"):
            out[name] = IntDistribution(int(spec["low"]), int(spec["high"]))
        else:
            out[name] = FloatDistribution(spec["low"], spec["high"], log=spec["log"])
    return out


def _narrow(box: dict[str, dict[str, Any]], top: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The next box: top trials' min-max (log10 for log params) + margin, clipped."""
    new: dict[str, dict[str, Any]] = {}
    for name, spec in box.items():
        values = [p[name] for p in top]
        if "choices" in spec:
            new[name] = {"choices": [c for c in spec["choices"] if c in values]}
            continue
        log = spec["log"]
        to = math.log10 if log else float
        lo, hi = min(to(v) for v in values), max(to(v) for v in values)
        pad = MARGIN * max(hi - lo, 1e-9)
        blo, bhi = to(spec["low"]), to(spec["high"])
        lo, hi = max(lo - pad, blo), min(hi + pad, bhi)
        back = (lambda x: 10**x) if log else float
        entry: dict[str, Any] = {"low": back(lo), "high": back(hi), "log": log}
        if spec.get("int"):
            entry = {"low": math.floor(back(lo)), "high": math.ceil(back(hi)), "log": False}
            entry["int"] = True
        new[name] = entry
    return new


def _public_box(box: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The box as a RoundRecord stores it: {"low","high","log"} or {"choices"}."""
    return {
        name: (
            {"choices": list(s["choices"])}
            if "choices" in s
            else {"low": s["low"], "high": s["high"], "log": bool(s["log"])}
        )
        for name, s in box.items()
    }


def _curve(
    params: dict[str, Any],
    epochs: int,
    rng: np.random.Generator,
    *,
    nan_epochs: tuple[int, ...] = (),
    nan_accuracy: bool = False,
) -> records.Curve:
    """A plausible curve; losses (and with ``nan_accuracy`` accuracies) NaN in ``nan_epochs``."""
    lr = float(params.get("lr", 1e-3))
    quality = 0.95 - 0.04 * abs(math.log10(lr) + 3) - 0.2 * float(params.get("dropout_ratio", 0))
    quality += 0.02 if params.get("batchnorm") else 0.0
    rows = {k: [] for k in records.CURVE_FIELDS}
    for e in range(1, epochs + 1):
        frac = 1 - 0.5**e
        val_acc = float(np.clip(quality * frac + rng.normal(0, 0.01), 0, 1))
        rows["train_accuracy"].append(float(np.clip(val_acc + 0.03, 0, 1)))
        rows["val_accuracy"].append(val_acc)
        rows["train_loss"].append(float(2.3 * (1 - frac) + 0.1 + rng.uniform(0, 0.01)))
        rows["val_loss"].append(float(2.3 * (1 - frac) + 0.2 + rng.uniform(0, 0.01)))
        rows["seconds"].append(0.25)
        if e in nan_epochs:
            names = records.CURVE_FIELDS if nan_accuracy else ("train_loss", "val_loss")
            for k in names:
                if k != "seconds":
                    rows[k][-1] = math.nan
    return records.Curve(**{k: tuple(v) for k, v in rows.items()})


def write_fake_study(
    storage: str | optuna.storages.BaseStorage,
    name: str = "fake",
    *,
    direction: str = "maximize",
    rounds: int = 3,
    trials_per_round: int = 6,
    epochs: int = 4,
    seed: int = 0,
    running: int = 0,
    final_eval: bool = True,
    node: str = "node-a",
    backend: str = "numpy",
    box: Mapping[str, Mapping[str, Any]] | None = None,
    states: Sequence[str] | None = None,
    values: Callable[[int], float] | None = None,
    curve_nan: bool = False,
    recorded_box: Mapping[str, Mapping[str, Any]] | None = None,
    open_round: bool = False,
) -> FakeStudy:
    """Record a finished (or, with ``running``, unfinished) search in ``storage``.

    ``storage`` is a URL (opened with ``create=True`` and closed afterwards) or
    an Optuna storage. Deterministic for a given ``seed``. The options after
    ``backend`` are described in the module docstring; ``states`` entries are
    ``COMPLETE``, ``PRUNED``, ``FAIL`` (worker died, no curve) and ``DIVERGED``.
    """
    for state in states or ():
        if state not in _STATES:
            raise ValueError(f"states: got {state!r}; allowed: {', '.join(_STATES)}")
    own = isinstance(storage, str)
    rdb = fast_writer(storage) if own else storage
    try:
        return _write(
            rdb,
            name,
            direction=direction,
            rounds=rounds,
            trials_per_round=trials_per_round,
            epochs=epochs,
            seed=seed,
            running=running,
            final_eval=final_eval,
            node=node,
            backend=backend,
            box={k: dict(v) for k, v in (box or FULL_BOX).items()},
            states=tuple(states) if states else None,
            value_of=values,
            curve_nan=curve_nan,
            recorded_box=recorded_box,
            open_round=open_round,
        )
    finally:
        if own:
            close_storage(rdb)


def fast_writer(url: str) -> optuna.storages.RDBStorage:
    """Open ``url`` for writing; on SQLite without fsync (tests only: fast, not durable).

    Close it with :func:`hpsearch.storage_url.close_storage`.
    """
    rdb = open_storage(url, create=True)
    if rdb.engine.name == "sqlite":
        import sqlalchemy

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA synchronous=OFF")

        sqlalchemy.event.listen(rdb.engine, "connect", on_connect)
        rdb.engine.dispose()
    return rdb


def _write(
    rdb: optuna.storages.BaseStorage,
    name: str,
    *,
    direction: str,
    rounds: int,
    trials_per_round: int,
    epochs: int,
    seed: int,
    running: int,
    final_eval: bool,
    node: str,
    backend: str,
    box: dict[str, dict[str, Any]],
    states: tuple[str, ...] | None,
    value_of: Callable[[int], float] | None,
    curve_nan: bool,
    recorded_box: Mapping[str, Mapping[str, Any]] | None,
    open_round: bool,
) -> FakeStudy:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metric = "val_accuracy" if direction == "maximize" else "val_loss"
    rng = np.random.default_rng(seed)
    study = optuna.create_study(storage=rdb, study_name=name, direction=direction)
    study_file = STUDY_FILE.format(
        name=name,
        direction=direction,
        metric=metric,
        seed=seed,
        epochs=epochs,
        rounds=rounds,
        trials_per_round=trials_per_round,
    )
    study.set_user_attr(records.STUDY_FILE_KEY, study_file)
    study.set_user_attr(records.OVERRIDES_KEY, {"rounds": rounds})
    study.set_user_attr(records.METRIC_KEY, metric)

    written: list[FakeTrial] = []
    round_records: list[records.RoundRecord] = []
    full = {k: dict(v) for k, v in box.items()}
    fixed = _distributions(dict(recorded_box), dict(recorded_box)) if recorded_box else None
    number = 0
    for r in range(rounds):
        dists = fixed or _distributions(box, full)
        this_round: list[FakeTrial] = []
        for pos in range(trials_per_round):
            params = _sample(box, rng)
            state = states[pos % len(states)] if states else None
            fake = _make_trial(
                number,
                r,
                pos,
                params,
                epochs,
                direction,
                seed,
                rng,
                state=state,
                curve_nan=curve_nan,
            )
            if value_of is not None and fake.value is not None:
                fake = dataclasses.replace(fake, value=float(value_of(number)))
            this_round.append(fake)
            _add(study, fake, dists, node=node, backend=backend)
            number += 1
        written.extend(this_round)
        finished = [t for t in this_round if t.state in ("COMPLETE", "PRUNED")]
        sign = -1.0 if direction == "maximize" else 1.0
        ranked = sorted(finished, key=lambda t: (sign * t.value, t.number))
        top = ranked[:TOP_K]
        values = [t.value for t in finished]
        rec = records.RoundRecord(
            index=r,
            box=_public_box(box),
            n_trials=trials_per_round,
            top_trials=[t.number for t in top],
            best=top[0].value if top else None,
            median=float(np.median(values)) if values else None,
            started_at=this_round[0].start.isoformat(),
            ended_at=max(t.complete for t in this_round if t.complete).isoformat()
            if this_round
            else None,
            moved_edges=[],
        )
        study.set_user_attr(records.round_key(r), rec.to_dict())
        round_records.append(rec)
        if top:
            box = _narrow(box, [t.params for t in top])

    dists = fixed or _distributions(box, full)
    if running and open_round:
        rec = records.RoundRecord(
            index=rounds,
            box=_public_box(box),
            n_trials=trials_per_round,
            started_at=(START + dt.timedelta(seconds=TRIAL_SPACING * number)).isoformat(),
        )
        study.set_user_attr(records.round_key(rounds), rec.to_dict())
        round_records.append(rec)
    for pos in range(running):
        params = _sample(box, rng)
        start = START + dt.timedelta(seconds=TRIAL_SPACING * number)
        inter = {1: 0.5, 2: 0.6}
        fake = FakeTrial(
            number=number,
            round=rounds,
            position=pos,
            state="RUNNING",
            value=None,
            params=params,
            seed=seed * 1000 + number,
            epochs=0,
            diverged=False,
            stopped=False,
            fail_reason=None,
            start=start,
            complete=None,
            curve=None,
            intermediate=inter,
        )
        _add(study, fake, dists, node=node, backend=backend)
        written.append(fake)
        number += 1

    evaluation = None
    if final_eval and any(t.state == "COMPLETE" for t in written):
        # The run loop's layout (hpsearch.search): best trial retrained per seed.
        best_trial = FakeStudy(name, direction, metric, tuple(written), (), None, "").best
        accs = [0.91, 0.93, 0.92]
        evaluation = {
            "trial": best_trial.number,
            "params": dict(best_trial.params),
            "seeds": [101, 102, 103],
            "test_accuracy": accs,
            "mean": float(np.mean(accs)),
            "std": float(np.std(accs, ddof=1)),
            "seconds": 4.5,
        }
        study.set_user_attr(records.FINAL_EVAL_KEY, evaluation)
    if not running:
        status = {"state": "finished", "reason": "last round done"}
        study.set_user_attr(getattr(records, "STATUS_KEY", "hpsearch:status"), status)
    return FakeStudy(
        name=name,
        direction=direction,
        metric=metric,
        trials=tuple(written),
        rounds=tuple(round_records),
        final_eval=evaluation,
        study_file=study_file,
    )


def _make_trial(
    number: int,
    r: int,
    pos: int,
    params: dict[str, Any],
    epochs: int,
    direction: str,
    seed: int,
    rng: np.random.Generator,
    *,
    state: str | None = None,
    curve_nan: bool = False,
) -> FakeTrial:
    """Trial ``number``; ``state`` None follows the module's default layout."""
    start = START + dt.timedelta(seconds=TRIAL_SPACING * number)
    complete = start + dt.timedelta(seconds=1.25 + 0.1 * pos)
    common = dict(
        number=number,
        round=r,
        position=pos,
        params=params,
        seed=seed * 1000 + number,
        start=start,
        complete=complete,
    )
    nan_epochs = (2,) if curve_nan else ()
    if state == "DIVERGED":
        curve = _curve(params, 3, rng, nan_epochs=(3,), nan_accuracy=True)
        return FakeTrial(
            **common,
            state="FAIL",
            value=None,
            epochs=3,
            diverged=True,
            stopped=False,
            fail_reason="diverged: loss became NaN or infinite in epoch 3",
            curve=curve,
        )
    if state is None and r == 0 and pos == 2:
        curve = _curve(params, 2, rng)
        return FakeTrial(
            **common,
            state="FAIL",
            value=None,
            epochs=2,
            diverged=True,
            stopped=False,
            fail_reason="training loss diverged (nan) in epoch 3",
            curve=curve,
        )
    if (state is None and r == 1 and pos == 2) or state == "FAIL":
        return FakeTrial(
            **common,
            state="FAIL",
            value=None,
            epochs=0,
            diverged=False,
            stopped=False,
            fail_reason="worker died: node-b lost",
            curve=None,
        )
    pruned = state == "PRUNED" if state is not None else pos == 1
    n = max(1, epochs - 1) if pruned else epochs
    curve = _curve(params, n, rng, nan_epochs=nan_epochs, nan_accuracy=True)
    value = curve.val_accuracy[-1] if direction == "maximize" else curve.val_loss[-1]
    return FakeTrial(
        **common,
        state="PRUNED" if pruned else "COMPLETE",
        value=value,
        epochs=n,
        diverged=False,
        stopped=pruned,
        fail_reason=None,
        curve=curve,
    )


def _add(
    study: optuna.Study,
    fake: FakeTrial,
    dists: dict[str, BaseDistribution],
    *,
    node: str,
    backend: str,
) -> None:
    attrs: dict[str, Any] = {records.TRIAL_ROUND: fake.round, records.TRIAL_SEED: fake.seed}
    intermediate = dict(fake.intermediate)
    if fake.state != "RUNNING" and not (fake.state == "FAIL" and fake.curve is None):
        attrs.update(
            {
                records.TRIAL_NODE: node,
                records.TRIAL_BACKEND: backend,
                records.TRIAL_DIVERGED: fake.diverged,
                records.TRIAL_TRAIN_SECONDS: round(fake.epochs * 0.25, 6),
                records.TRIAL_EPOCHS: fake.epochs,
                records.TRIAL_STOPPED: fake.stopped,
            }
        )
    if fake.curve is not None:
        attrs[records.TRIAL_CURVE] = fake.curve.to_dict()
        intermediate = {e + 1: v for e, v in enumerate(fake.curve.val_accuracy)}
    if fake.fail_reason:
        attrs[records.TRIAL_FAIL_REASON] = fake.fail_reason
    frozen = FrozenTrial(
        number=-1,
        state=TrialState[fake.state],
        value=fake.value,
        datetime_start=fake.start,
        datetime_complete=fake.complete,
        params=fake.params,
        distributions={k: dists[k] for k in fake.params},
        user_attrs=attrs,
        system_attrs={},
        intermediate_values=intermediate,
        trial_id=-1,
    )
    if all(
        d._contains(d.to_internal_repr(fake.params[k])) for k, d in frozen.distributions.items()
    ):
        study.add_trial(frozen)
    else:  # a value outside its recorded range, as hpsearch writes it: Optuna's check is skipped
        study._storage.create_new_trial(study._study_id, template_trial=frozen)


# --- PostgreSQL ---------------------------------------------------------------------

PG_HOST = "127.0.0.1"
PG_PORT = int(os.environ.get("HPSEARCH_TEST_PG_PORT", "5432"))
"""The server's port; ``HPSEARCH_TEST_PG_PORT`` points the tests elsewhere (e.g. at a
port where nothing listens, to see that CI fails loudly without PostgreSQL)."""
PG_USER = "postgres"


@contextmanager
def postgres_database(prefix: str = "hpsearch_test_") -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; yields its URL.

    Creates ``<prefix><random>`` on the server at 127.0.0.1:5432 (user
    ``postgres``, trust auth) and drops it afterwards, even if connections are
    still open. Skips the calling test, with the reason, when psycopg is not
    installed or no server answers.
    """
    import pytest

    psycopg = pytest.importorskip("psycopg", reason="psycopg (the postgres extra) is needed")
    admin = None
    errors = []
    for dbname in ("postgres", "test"):
        try:
            admin = psycopg.connect(
                host=PG_HOST,
                port=PG_PORT,
                user=PG_USER,
                dbname=dbname,
                autocommit=True,
                connect_timeout=3,
            )
            break
        except psycopg.OperationalError as exc:
            errors.append(" ".join(str(exc).split()))
    if admin is None:
        pytest.skip(f"no PostgreSQL server answers on {PG_HOST}:{PG_PORT}: {errors[-1]}")
    name = f"{prefix}{secrets.token_hex(6)}"
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()
