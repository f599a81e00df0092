"""The scale of a study's metric: what a trial that learned nothing scores, and the noise.

The round rule (:mod:`hpsearch.round_rule`) only narrows on trials that are
clearly better than a trial that learned nothing. Two numbers say what
"clearly" means:

* the *floor*: for the built-in objective's accuracy metrics, the accuracy of
  always predicting the validation split's most frequent class (a network at
  chance does about that or worse); for ``val_loss``, ln(number of classes),
  the loss of a uniform prediction. Other metrics have no known floor (the
  rule then uses the round's median).
* the *noise*: for accuracy on ``n`` validation samples, the largest binomial
  standard error, ``0.5 / sqrt(n)`` (0.05 on the chapter's 100 samples); for
  any other metric it is estimated from the trials' curves: the robust
  spread of the second differences ``v[t+1] - 2 v[t] + v[t-1]`` in the second
  half of each curve, 1.4826 x their median absolute value / sqrt(6) (the
  standard deviation of one value if the values scatter independently about
  a locally straight curve; second differences cancel a steady trend, which
  first differences would count as noise).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

import numpy as np
from optuna.trial import FrozenTrial

from hpsearch.round_rule import MetricScale
from trainer.datasets import Dataset

ACCURACY_METRICS = ("val_accuracy", "best_val_accuracy")
MIN_CHANGES = 8
"""Second differences needed before the curves' noise estimate is used."""


def builtin_scale(metric: str, data: Dataset) -> MetricScale:
    """The floor and noise of a built-in metric on ``data``'s validation split."""
    n_val = len(data.y_val)
    if metric in ACCURACY_METRICS and n_val > 0:
        counts = np.bincount(np.asarray(data.y_val, dtype=np.int64), minlength=data.n_classes)
        majority = float(counts.max()) / n_val
        return MetricScale(
            floor=majority,
            noise=0.5 / math.sqrt(n_val),
            floor_source="chance (the most frequent validation class)",
            noise_source=f"binomial, {n_val} validation samples",
        )
    if metric == "val_loss" and data.n_classes > 1:
        return MetricScale(
            floor=math.log(data.n_classes),
            floor_source=f"chance (ln {data.n_classes}, a uniform prediction)",
        )
    return MetricScale()


def curve_noise(trials: Iterable[FrozenTrial]) -> float | None:
    """Noise of one value, from the second half of each trial's intermediate values;
    None when fewer than :data:`MIN_CHANGES` changes were reported."""
    changes: list[float] = []
    for trial in trials:
        steps = sorted(trial.intermediate_values)
        values = [trial.intermediate_values[s] for s in steps[len(steps) // 2 :]]
        values = [v for v in values if v is not None and math.isfinite(v)]
        changes.extend(
            abs(a - 2 * b + c) for a, b, c in zip(values, values[1:], values[2:], strict=False)
        )
    if len(changes) < MIN_CHANGES:
        return None
    return 1.4826 * statistics.median(changes) / math.sqrt(6)


def with_curve_noise(scale: MetricScale, trials: Iterable[FrozenTrial]) -> MetricScale:
    """``scale`` with the noise estimated from the curves when it does not know it."""
    if scale.noise is not None:
        return scale
    noise = curve_noise(trials)
    if noise is None:
        return scale
    return MetricScale(
        floor=scale.floor,
        noise=noise,
        floor_source=scale.floor_source,
        noise_source="second differences of the trials' curves",
    )
