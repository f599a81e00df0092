"""The data behind each figure of the report, as plain DataFrames and dicts.

Nothing here draws. Every function takes a :class:`StudyData` (read once with
:func:`load_study_data`) or, for convenience, a storage URL and a study name,
and returns what its figure shows, so tests can check the numbers rather than
pixels. Everything is read through :mod:`hpsearch.results`; parameter
importances also load the study with ``optuna.load_study`` on a read-only
storage. Nothing here starts Ray or writes to the database.

Conventions:
    * Rounds are numbered from 1 (``round`` columns, as :mod:`hpsearch.results`
      gives them and ``hpsearch run`` prints them).
    * "Finished with a value" means state COMPLETE and a finite value, the
      trials a round's best and median are computed from
      (:mod:`hpsearch.search`; hpsearch records a non-finite metric as FAIL,
      a plain Optuna study may hold an infinite one, which the figures could
      not place).
    * "Better" follows the study's direction: the highest value for
      ``maximize``, the lowest for ``minimize``; ties go to the lower trial
      number.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hpsearch import results

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

logger = logging.getLogger(__name__)

__all__ = [
    "MIN_IMPORTANCE_PARAMS",
    "MIN_IMPORTANCE_TRIALS",
    "StudyData",
    "batchnorm_points",
    "complete_trials",
    "dropout_points",
    "finished_with_value",
    "load_study_data",
    "lr_wd_points",
    "metric_label",
    "param_columns",
    "param_importances",
    "round_boxes",
    "round_stats",
    "top_curves",
    "top_trials",
]

MIN_IMPORTANCE_TRIALS = 5
"""Fewest COMPLETE trials (with a value) for parameter importances."""
MIN_IMPORTANCE_PARAMS = 2
"""Fewest parameters, each with at least two distinct values, for importances."""
MAX_IMPORTANCE_TRIALS = 500
"""Most COMPLETE trials fANOVA is fitted on: beyond, a seeded random sample of
this many. Its forest's cost grows faster than the trials (seconds at 500,
minutes at 2,000, hours for a study of 30,000), and the report must finish."""

_FIXED_TRIAL_COLUMNS = frozenset(results.TRIAL_LEADING_COLUMNS) | frozenset(
    results.TRIAL_TRAILING_COLUMNS
)
_METRIC_UNITS = {
    "val_accuracy": "fraction correct",
    "best_val_accuracy": "fraction correct",
    "accuracy": "fraction correct",
    "val_loss": "cross-entropy",
    "loss": "cross-entropy",
}


@dataclass(frozen=True)
class StudyData:
    """One study as the report reads it, loaded once.

    Attributes:
        storage: The storage it was read from (URL or Optuna storage), for
            :func:`param_importances`.
        info: Study-level records (metric, direction, final evaluation, ...).
        trials: :func:`hpsearch.results.trials`.
        rounds: :func:`hpsearch.results.rounds`.
        curves: :func:`hpsearch.results.curves`.
    """

    storage: Any
    info: results.StudyInfo
    trials: pd.DataFrame
    rounds: pd.DataFrame
    curves: pd.DataFrame
    params: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def metric(self) -> str:
        """The metric's name (``value`` for a study that does not record one)."""
        return self.info.metric or "value"

    @property
    def maximize(self) -> bool:
        return self.info.direction.split(",")[0] != "minimize"


def load_study_data(storage: str | BaseStorage, name: str) -> StudyData:
    """Read study ``name`` (info, trials, rounds, curves) through :mod:`hpsearch.results`.

    Raises:
        StudyNotFoundError, StorageError: As :mod:`hpsearch.results`.
    """
    info = results.study_info(storage, name)
    trials = results.trials(storage, name)
    return StudyData(
        storage=storage,
        info=info,
        trials=trials,
        rounds=results.rounds(storage, name),
        curves=results.curves(storage, name),
        params=tuple(param_columns(trials)),
    )


def _data(source: StudyData | str | BaseStorage, name: str | None) -> StudyData:
    if isinstance(source, StudyData):
        return source
    if name is None:
        raise TypeError("give a StudyData, or a storage and a study name")
    return load_study_data(source, name)


def param_columns(trials: pd.DataFrame) -> list[str]:
    """The parameter columns of a :func:`hpsearch.results.trials` frame, in order."""
    return [c for c in trials.columns if c not in _FIXED_TRIAL_COLUMNS]


def metric_label(metric: str) -> str:
    """The metric with its unit for an axis: ``val_accuracy (fraction correct)``."""
    unit = _METRIC_UNITS.get(metric)
    return f"{metric} ({unit})" if unit else metric


def finished_with_value(trials: pd.DataFrame) -> pd.Series:
    """True for the rows of a trials frame that are COMPLETE with a finite value."""
    values = trials["value"].to_numpy(dtype="float64", na_value=np.nan)
    return (trials["state"] == "COMPLETE") & pd.Series(np.isfinite(values), index=trials.index)


def complete_trials(source: StudyData | str | BaseStorage, name: str | None = None) -> pd.DataFrame:
    """COMPLETE trials with a finite value, better first (ties: lower number first)."""
    data = _data(source, name)
    t = data.trials
    done = t[finished_with_value(t)]
    return done.sort_values(
        ["value", "number"], ascending=[not data.maximize, True], kind="stable"
    ).reset_index(drop=True)


# --- figure 1: the chapter's learning curves of the top trials ------------------------


def top_trials(
    source: StudyData | str | BaseStorage, name: str | None = None, *, top: int = 20
) -> pd.DataFrame:
    """The ``top`` best COMPLETE trials, best first.

    Columns: ``rank`` (int64, 1 = best), then the :func:`hpsearch.results.trials`
    columns. Fewer rows when fewer trials completed.
    """
    if top < 1:
        raise ValueError(f"top: got {top}; expected a whole number >= 1")
    done = complete_trials(_data(source, name)).head(top)
    done.insert(0, "rank", np.arange(1, len(done) + 1, dtype="int64"))
    return done


def top_curves(
    source: StudyData | str | BaseStorage, name: str | None = None, *, top: int = 20
) -> pd.DataFrame:
    """Per-epoch training and validation accuracy of the :func:`top_trials`.

    One row per trial and epoch, ordered by rank then epoch. Columns: ``rank``
    (int64), ``trial`` (int64), ``epoch`` (int64, 1-based), ``train_accuracy``
    and ``val_accuracy`` (float64, NaN when that split was not recorded, e.g.
    a trial with intermediate values only, or when the recorded point is NaN:
    such an epoch keeps its row). Top trials without any curve give no rows.
    """
    data = _data(source, name)
    ranked = top_trials(data, top=top)[["rank", "number"]].rename(columns={"number": "trial"})
    columns = ["rank", "trial", "epoch", "train_accuracy", "val_accuracy"]
    curves = data.curves
    if ranked.empty or curves.empty:
        return _typed_empty(columns)
    # groupby keeps an epoch whose accuracy is NaN (pivot_table would drop it), so the
    # figure shows a gap there instead of a line drawn across it.
    wide = (
        curves[curves["trial"].isin(ranked["trial"])]
        .groupby(["trial", "epoch", "split"], observed=True)["accuracy"]
        .mean()
        .unstack("split")
        .reset_index()
    )
    wide.columns.name = None
    for split in results.SPLITS:
        if split not in wide.columns:
            wide[split] = math.nan
    wide = wide.rename(columns={"train": "train_accuracy", "val": "val_accuracy"})
    merged = ranked.merge(wide, on="trial", how="inner")
    merged = merged.sort_values(["rank", "epoch"], kind="stable").reset_index(drop=True)
    out = merged[columns].copy()
    out[["rank", "trial", "epoch"]] = out[["rank", "trial", "epoch"]].astype("int64")
    out[["train_accuracy", "val_accuracy"]] = out[["train_accuracy", "val_accuracy"]].astype(
        "float64"
    )
    return out


def _typed_empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            c: pd.Series([], dtype="int64" if c in ("rank", "trial", "epoch") else "float64")
            for c in columns
        }
    )


# --- figure 2: lr against weight decay, with each round's box ------------------------------


def lr_wd_points(source: StudyData | str | BaseStorage, name: str | None = None) -> pd.DataFrame:
    """Every trial that has both ``lr`` and ``weight_decay``, in any state.

    Columns: ``number`` (int64), ``state`` (category), ``value`` (float64; NaN
    for trials without one), ``round`` (Int64), ``lr``, ``weight_decay``
    (float64). Empty (same columns) when the study does not search both.
    """
    data = _data(source, name)
    t = data.trials
    columns = ["number", "state", "value", "round", "lr", "weight_decay"]
    if "lr" not in t.columns or "weight_decay" not in t.columns:
        return pd.DataFrame(
            {
                "number": pd.Series([], dtype="int64"),
                "state": pd.Series([], dtype=results.STATE_DTYPE),
                "value": pd.Series([], dtype="float64"),
                "round": pd.Series([], dtype="Int64"),
                "lr": pd.Series([], dtype="float64"),
                "weight_decay": pd.Series([], dtype="float64"),
            }
        )
    keep = t["lr"].notna() & t["weight_decay"].notna()
    out = t.loc[keep, columns].reset_index(drop=True)
    out["lr"] = out["lr"].astype("float64")
    out["weight_decay"] = out["weight_decay"].astype("float64")
    return out


def round_boxes(source: StudyData | str | BaseStorage, name: str | None = None) -> pd.DataFrame:
    """Each recorded round's ``lr`` × ``weight_decay`` box.

    Columns: ``round`` (int64, from 1), ``lr_low``, ``lr_high``,
    ``weight_decay_low``, ``weight_decay_high`` (float64). Only rounds whose box
    has numeric ranges for both parameters.
    """
    data = _data(source, name)
    r = data.rounds
    columns = ["round", "lr_low", "lr_high", "weight_decay_low", "weight_decay_high"]
    if not set(columns) <= set(r.columns):
        return pd.DataFrame(
            {c: pd.Series([], dtype="int64" if c == "round" else "float64") for c in columns}
        )
    out = r[columns].dropna().reset_index(drop=True)
    return out.astype({"round": "int64"})


# --- figure 3: the metric per round -----------------------------------------------------------


def round_stats(source: StudyData | str | BaseStorage, name: str | None = None) -> pd.DataFrame:
    """Best, median and spread of the metric in each round.

    One row per round that has a recorded round record or trials, in order.
    Columns: ``round`` (int64, from 1), ``n_trials`` (int64, trials sampled
    in the round, any state), ``n_complete`` (int64, COMPLETE with a value),
    ``best`` (by the study's direction), ``median``, ``q1``, ``q3`` (25th and
    75th percentiles, linear interpolation), ``min``, ``max`` (float64; NaN
    when no trial of the round completed). Trials without a round (a study not
    made by hpsearch) are not counted; such a study gives an empty frame.
    """
    data = _data(source, name)
    t = data.trials
    with_round = t[t["round"].notna()]
    recorded = [int(r) for r in data.rounds["round"]] if not data.rounds.empty else []
    indices = sorted(set(recorded) | {int(r) for r in with_round["round"]})
    rows: dict[str, list[Any]] = {
        k: []
        for k in ("round", "n_trials", "n_complete", "best", "median", "q1", "q3", "min", "max")
    }
    for index in indices:
        in_round = with_round[with_round["round"] == index]
        values = in_round.loc[finished_with_value(in_round), "value"].to_numpy(dtype="float64")
        rows["round"].append(index)
        rows["n_trials"].append(len(in_round))
        rows["n_complete"].append(len(values))
        if len(values):
            q1, median, q3 = np.percentile(values, [25, 50, 75])
            rows["best"].append(float(values.max() if data.maximize else values.min()))
            rows["median"].append(float(median))
            rows["q1"].append(float(q1))
            rows["q3"].append(float(q3))
            rows["min"].append(float(values.min()))
            rows["max"].append(float(values.max()))
        else:
            for k in ("best", "median", "q1", "q3", "min", "max"):
                rows[k].append(math.nan)
    frame = pd.DataFrame(rows)
    return frame.astype(
        {"round": "int64", "n_trials": "int64", "n_complete": "int64"}
        | {k: "float64" for k in ("best", "median", "q1", "q3", "min", "max")}
    )


def round_values(source: StudyData | str | BaseStorage, name: str | None = None) -> pd.DataFrame:
    """The metric of every COMPLETE trial with a round: ``number``, ``round``, ``value``."""
    data = _data(source, name)
    t = data.trials
    keep = finished_with_value(t) & t["round"].notna()
    out = t.loc[keep, ["number", "round", "value"]].reset_index(drop=True)
    return out.astype({"round": "int64"})


# --- figure 4: batch norm and dropout -----------------------------------------------------------


def batchnorm_points(
    source: StudyData | str | BaseStorage, name: str | None = None
) -> pd.DataFrame:
    """The metric of each COMPLETE trial with batch norm on or off.

    Columns: ``number`` (int64), ``batchnorm`` (bool), ``value`` (float64).
    Empty when batch norm is not a searched parameter.
    """
    data = _data(source, name)
    done = complete_trials(data)
    if "batchnorm" not in done.columns:
        return pd.DataFrame(
            {
                "number": pd.Series([], dtype="int64"),
                "batchnorm": pd.Series([], dtype="bool"),
                "value": pd.Series([], dtype="float64"),
            }
        )
    done = done[done["batchnorm"].notna()]
    out = pd.DataFrame(
        {
            "number": done["number"].astype("int64"),
            "batchnorm": done["batchnorm"].astype("bool"),
            "value": done["value"].astype("float64"),
        }
    )
    return out.sort_values("number", kind="stable").reset_index(drop=True)


def dropout_points(source: StudyData | str | BaseStorage, name: str | None = None) -> pd.DataFrame:
    """The metric of each COMPLETE trial against its dropout ratio.

    Columns: ``number`` (int64), ``dropout_ratio`` (float64), ``value``
    (float64) and, when batch norm is searched, ``batchnorm`` (boolean) so the
    figure can colour by it. Empty when dropout is not a searched parameter.
    """
    data = _data(source, name)
    done = complete_trials(data)
    if "dropout_ratio" not in done.columns:
        return pd.DataFrame(
            {
                "number": pd.Series([], dtype="int64"),
                "dropout_ratio": pd.Series([], dtype="float64"),
                "value": pd.Series([], dtype="float64"),
            }
        )
    done = done[done["dropout_ratio"].notna()]
    out = pd.DataFrame(
        {
            "number": done["number"].astype("int64"),
            "dropout_ratio": done["dropout_ratio"].astype("float64"),
            "value": done["value"].astype("float64"),
        }
    )
    if "batchnorm" in done.columns:
        out["batchnorm"] = done["batchnorm"].astype("boolean")
    return out.sort_values("number", kind="stable").reset_index(drop=True)


# --- figure 5: parameter importances ----------------------------------------------------


def param_importances(
    source: StudyData | str | BaseStorage,
    name: str | None = None,
    *,
    min_trials: int = MIN_IMPORTANCE_TRIALS,
    min_params: int = MIN_IMPORTANCE_PARAMS,
    max_trials: int = MAX_IMPORTANCE_TRIALS,
    seed: int = 0,
) -> dict[str, Any]:
    """Parameter importances from Optuna's fANOVA evaluator, or why there are none.

    Loads the study with ``optuna.load_study`` on a read-only storage and calls
    ``optuna.importance.get_param_importances`` with
    ``FanovaImportanceEvaluator(seed=seed)`` (deterministic) over the COMPLETE
    trials with a finite value. Only parameters every such trial has, with at
    least two distinct values, take part. The trials are evaluated in an
    in-memory copy of the study whose distribution per parameter spans every
    recorded distribution *and every value*: a study that recorded each
    round's narrowed box has distributions that differ between trials, which
    Optuna's evaluators would drop, and hpsearch records the study file's
    ranges while a box that slid past an edge (``hard_low``/``hard_high``)
    samples beyond them; fANOVA given a value outside its parameter's range
    computes negative variances and fails an assertion.

    With more than ``max_trials`` such trials, fANOVA is fitted on a random
    sample of ``max_trials`` of them (seeded by ``seed``).

    Returns:
        ``{"importances": {param: share}, "n_trials": int (trials evaluated),
        "of_trials": int (COMPLETE trials with a finite value), "params": [...],
        "skipped": {param: why}, "note": str | None}``. Shares sum to 1, best
        first. ``importances`` is empty and ``note`` says why when there are
        fewer than ``min_trials`` COMPLETE trials, fewer than ``min_params``
        varying parameters, no variation of the metric to explain, or when the
        evaluator fails for any other reason (never raised).
    """
    data = _data(source, name)
    import optuna
    from optuna.trial import TrialState

    from hpsearch.storage_url import opened_storage

    out: dict[str, Any] = {
        "importances": {},
        "n_trials": 0,
        "params": [],
        "skipped": {},
        "note": None,
    }
    with opened_storage(data.storage, create=False) as storage:
        study = optuna.load_study(study_name=data.name, storage=storage)
        frozen = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)
        ]
    out["n_trials"] = out["of_trials"] = len(frozen)
    if len(frozen) > max_trials:
        frozen = sorted(random.Random(seed).sample(frozen, max_trials), key=lambda t: t.number)
        out["n_trials"] = len(frozen)
    if len(frozen) < min_trials:
        out["note"] = (
            f"parameter importances need at least {min_trials} COMPLETE trials; "
            f"this study has {len(frozen)}"
        )
        return out

    names = [p for p in frozen[0].params if all(p in t.params for t in frozen)]
    params: list[str] = []
    dists: dict[str, Any] = {}
    for pname in names:
        values = [t.params[pname] for t in frozen]
        if len({_hashable(v) for v in values}) < 2:
            out["skipped"][pname] = f"one value only ({_fmt_value(values[0])})"
            continue
        spanning = _spanning_distribution([t.distributions[pname] for t in frozen], values)
        if spanning is None:
            out["skipped"][pname] = "its distributions cannot be combined"
            continue
        params.append(pname)
        dists[pname] = spanning
    out["params"] = params
    if len(params) < min_params:
        varying = ", ".join(params) if params else "none"
        out["note"] = (
            f"parameter importances need at least {min_params} parameters that vary "
            f"over the COMPLETE trials; varying: {varying}"
        )
        return out
    metric_values = np.array([t.value for t in frozen], dtype="float64")
    spread = float(metric_values.max() - metric_values.min())
    if spread == 0.0:
        out["note"] = (
            f"every COMPLETE trial has the same {data.metric} ({metric_values[0]:.6g}), so "
            "there is no variation for the parameters to explain"
        )
        return out

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory"
    try:
        evaluated = optuna.create_study(direction=study.direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    try:
        evaluated.add_trials(
            [
                optuna.trial.create_trial(
                    params={p: t.params[p] for p in params},
                    distributions={p: dists[p] for p in params},
                    value=t.value,
                )
                for t in frozen
            ]
        )
        shares = optuna.importance.get_param_importances(
            evaluated,
            evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed),
            params=params,
        )
    except RuntimeError as exc:
        if "zero total variance" not in str(exc):
            return _evaluator_failed(out, exc)
        # Values that differ by rounding noise only: the forest's trees all predict one value.
        out["note"] = (
            f"the {data.metric} of the COMPLETE trials varies by {spread:.3g} only, too little "
            "for fANOVA to attribute to the parameters (Optuna: zero total variance)"
        )
        return out
    except Exception as exc:  # the evaluator's own assertions and complaints: never fatal
        return _evaluator_failed(out, exc)
    result = {p: float(v) for p, v in shares.items()}
    if not result or not all(math.isfinite(v) for v in result.values()):
        out["note"] = (
            "Optuna's fANOVA evaluator returned no usable shares "
            f"({', '.join(f'{p}={v}' for p, v in result.items()) or 'none'})"
        )
        return out
    out["importances"] = result
    return out


def _evaluator_failed(out: dict[str, Any], exc: Exception) -> dict[str, Any]:
    why = " ".join(str(exc).split()) or "no message"
    logger.debug("parameter importances failed", exc_info=exc)
    out["note"] = f"Optuna's fANOVA evaluator failed ({type(exc).__name__}: {why})"
    return out


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, (list, dict)) else value


def _fmt_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _spanning_distribution(dists: Sequence[Any], values: Sequence[Any]) -> Any:
    """One distribution covering all of ``dists`` (same kind) and ``values``, or None.

    A numeric range is widened to the smallest and largest value, and loses a
    ``step`` when it has to grow (fANOVA ignores steps); it stays a log range
    only when every distribution is one and the range stays positive. A
    categorical gets every choice of every distribution, then any value not
    among them.
    """
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    first = dists[0]
    if all(isinstance(d, (FloatDistribution, IntDistribution)) for d in dists):
        kind = type(first)
        if not all(type(d) is kind for d in dists):
            return None
        numbers = [float(v) for v in values]
        low = min(min(d.low for d in dists), min(numbers))
        high = max(max(d.high for d in dists), max(numbers))
        log = all(d.log for d in dists) and low > 0
        same = all(d == first for d in dists)
        if same and low == first.low and high == first.high:
            return first
        if kind is IntDistribution:
            return IntDistribution(math.floor(low), math.ceil(high), log=log)
        return FloatDistribution(low, high, log=log)
    if all(isinstance(d, CategoricalDistribution) for d in dists):
        choices: list[Any] = []
        for c in [c for d in dists for c in d.choices] + list(values):
            if c not in choices:
                choices.append(c)
        if len(choices) == len(first.choices):
            return first
        return CategoricalDistribution(choices)
    return None
