"""Batched TPE: many trials from one fit, on a bounded view of the finished trials.

Optuna's :class:`~optuna.samplers.TPESampler` refits its two Parzen estimators
on every finished trial for each trial it is asked for, and the driver re-read
the study for each ask: O(n) per trial, O(n^2) per study (77 ms per trial at
3,000 trials, issue 15). :class:`BatchTPEProposer` gives the same kind of
proposals at a cost that does not grow with the study. The driver uses it once
a round's box holds :data:`hpsearch.search.BATCHED_FROM` finished trials
(below, TPESampler itself is cheap enough and scored slightly better on the
search-quality benchmark):

* **One fit per batch.** The driver asks for the trials it is about to send
  (at most the in-flight limit, see :data:`hpsearch.search.BLIND_TRIALS`). Each
  parameter's two estimators (``l(x)`` from the best trials, ``g(x)`` from the
  rest) are fitted once; each proposal takes the best of its own
  ``n_ei_candidates`` draws from ``l(x)`` by ``log l(x) - log g(x)``, exactly as
  TPESampler's independent sampling does for one trial. Between two results
  TPESampler's model does not change either, so a batch is what a run of single
  asks would propose.
* **Incremental view.** Finished trials are handed to :meth:`observe` as the
  driver collects them; the study is read once per round (:meth:`reset`, the
  round's box and the finished trials inside it, what TPESampler sees through
  :mod:`hpsearch.sampling`).
* **Bounded view.** The estimators see the :data:`BEST_KEPT` best trials and
  the :data:`RECENT_KEPT` most recent ones (COMPLETE first by value, then PRUNED
  by how far they got, TPE's own order). Up to ``BEST_KEPT + RECENT_KEPT``
  finished trials in the box that is the whole set, as TPESampler sees it;
  beyond, ``l(x)`` is still TPE's (its best 25 are always kept) and ``g(x)``
  forgets the oldest non-best trials, which TPE's weights already fade
  (weight ~ position / n).

The fit is Optuna's own Parzen estimator, reached through
:mod:`hpsearch.internals`; the driver falls back to per-trial sampling when
that is unavailable. Several drivers on one study see each other's trials
from the next round on (each reads the study at a round's start).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from hpsearch import space
from hpsearch.config import ParamSpec
from hpsearch.internals import TPESettings

BEST_KEPT = 64
"""Best finished trials the estimators always see (TPE's ``l(x)`` uses at most 25)."""
RECENT_KEPT = 256
"""Most recent finished trials the estimators see."""

_Key = tuple[int, float, float, int]


class BatchTPEProposer:
    """Proposes trials inside a round's box by independent TPE, a batch per fit.

    Args:
        settings: The TPE sampler's settings (:func:`hpsearch.internals.tpe_settings`).
        seed: Seeds the proposer's random stream (the study seed).
        maximize: The study's direction.
        best_kept: Best trials always in view.
        recent_kept: Most recent trials in view.
        threshold: The value a trial must beat to be informative
            (:func:`hpsearch.round_rule.signal_threshold`): until one trial in the
            box does, the proposer draws at random, as the sampler sees no trial
            then (:mod:`hpsearch.sampling`); None: every trial counts.
    """

    def __init__(
        self,
        settings: TPESettings,
        *,
        seed: int,
        maximize: bool,
        best_kept: int = BEST_KEPT,
        recent_kept: int = RECENT_KEPT,
        threshold: float | None = None,
    ) -> None:
        self._settings = settings
        self._threshold = threshold
        self._informative = threshold is None
        self._rng = np.random.RandomState(seed % 2**32)
        self._maximize = maximize
        self._best_kept = best_kept
        self._recent: deque[tuple[_Key, dict[str, Any]]] = deque(maxlen=recent_kept)
        self._best: list[tuple[_Key, dict[str, Any]]] = []
        self._box: dict[str, ParamSpec] = {}
        self._dists: dict[str, BaseDistribution] = {}
        self.seen = 0
        """Finished trials in the box so far (TPE samples at random below its startup count)."""

    # -- the view -----------------------------------------------------------
    def reset(self, box: Mapping[str, ParamSpec], finished: Iterable[FrozenTrial]) -> None:
        """A new round: sample in ``box``; ``finished``: the study's finished trials
        (those outside the box, and all but COMPLETE and PRUNED ones, are skipped)."""
        self._box = dict(box)
        self._dists = space.distributions(self._box)
        self._recent.clear()
        self._best = []
        self.seen = 0
        self._informative = self._threshold is None
        for trial in sorted(finished, key=lambda t: t.number):
            steps = trial.intermediate_values
            last = max(steps) if steps else None
            self.observe(
                trial.number,
                trial.params,
                trial.state.name,
                trial.value,
                last_step=last,
                last_value=steps[last] if last is not None else None,
            )

    def observe(
        self,
        number: int,
        params: Mapping[str, Any],
        state: str,
        value: float | None,
        *,
        last_step: int | None = None,
        last_value: float | None = None,
    ) -> None:
        """One finished trial. COMPLETE and PRUNED trials inside the box count;
        others are ignored, as TPE ignores them."""
        key = self._key(number, state, value, last_step, last_value)
        if key is None or not space.contains(self._box, params):
            return
        entry = (key, {name: params[name] for name in self._box})
        self.seen += 1
        if not self._informative:
            shown = value if state == TrialState.COMPLETE.name else last_value
            sign = 1.0 if self._maximize else -1.0
            assert self._threshold is not None
            if shown is not None and math.isfinite(shown):
                self._informative = sign * (shown - self._threshold) > 0
        self._recent.append(entry)
        self._best.append(entry)
        if len(self._best) >= 2 * self._best_kept:
            self._best.sort(key=lambda e: e[0])
            del self._best[self._best_kept :]

    def _key(
        self,
        number: int,
        state: str,
        value: float | None,
        last_step: int | None,
        last_value: float | None,
    ) -> _Key | None:
        """TPE's order: COMPLETE by value (best first), then PRUNED by the last
        step reached (furthest first) and the value there; ties by number."""
        sign = -1.0 if self._maximize else 1.0
        if state == TrialState.COMPLETE.name:
            if value is None or not math.isfinite(value):
                return None
            return (0, 0.0, sign * value, number)
        if state == TrialState.PRUNED.name:
            if last_step is None:
                return (1, 1.0, 0.0, number)
            if last_value is None or math.isnan(last_value):
                return (1, -float(last_step), math.inf, number)
            return (1, -float(last_step), sign * last_value, number)
        return None

    def view(self) -> list[tuple[_Key, dict[str, Any]]]:
        """The finished trials the estimators see, in trial order."""
        chosen = {e[0][3]: e for e in self._best}
        chosen.update({e[0][3]: e for e in self._recent})
        return [chosen[k] for k in sorted(chosen)]

    # -- proposing ----------------------------------------------------------
    def propose(
        self, count: int, running: Iterable[tuple[int, Mapping[str, Any]]] = ()
    ) -> list[dict[str, Any]]:
        """``count`` parameter sets inside the box, in the box's order.

        ``running``: ``(number, params)`` of trials in flight; with TPE's constant
        liar (Optuna 5's default) those inside the box join the worse group.
        """
        if count <= 0:
            return []
        columns: dict[str, list[Any]] = {}
        learn = self._informative and self.seen >= self._settings.n_startup_trials
        if learn:
            trials = self.view()
            n_below = self._settings.gamma(len(trials))
            ranked = sorted(range(len(trials)), key=lambda i: trials[i][0])
            below_set = set(ranked[:n_below])
            below = [trials[i][1] for i in range(len(trials)) if i in below_set]
            above_numbered = [
                (trials[i][0][3], trials[i][1]) for i in range(len(trials)) if i not in below_set
            ]
            if self._settings.constant_liar:
                above_numbered += [
                    (number, params)
                    for number, params in running
                    if space.contains(self._box, params)
                ]
                above_numbered.sort(key=lambda e: e[0])
            above = [params for _, params in above_numbered]
        for name, dist in self._dists.items():
            if dist.single():
                columns[name] = [_single(dist)] * count
            elif not learn:
                columns[name] = [self._uniform(dist) for _ in range(count)]
            else:
                columns[name] = self._tpe(name, dist, below, above, count)
        return [{name: columns[name][i] for name in self._dists} for i in range(count)]

    def _tpe(
        self,
        name: str,
        dist: BaseDistribution,
        below: list[dict[str, Any]],
        above: list[dict[str, Any]],
        count: int,
    ) -> list[Any]:
        one = {name: dist}
        fit = self._settings.fit
        l_x = fit({name: np.asarray([dist.to_internal_repr(p[name]) for p in below])}, one)
        g_x = fit({name: np.asarray([dist.to_internal_repr(p[name]) for p in above])}, one)
        n_ei = self._settings.n_ei_candidates
        samples = l_x.sample(self._rng, count * n_ei)
        score = (l_x.log_pdf(samples) - g_x.log_pdf(samples)).reshape(count, n_ei)
        best = np.argmax(score, axis=1)
        chosen = samples[name].reshape(count, n_ei)[np.arange(count), best]
        return [dist.to_external_repr(v.item()) for v in chosen]

    def _uniform(self, dist: BaseDistribution) -> Any:
        """One draw as Optuna's RandomSampler makes it (TPE's startup trials)."""
        rng = self._rng
        if isinstance(dist, CategoricalDistribution):
            return dist.choices[int(rng.randint(len(dist.choices)))]
        if isinstance(dist, FloatDistribution):
            if dist.log:
                value = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
            elif dist.step is not None:
                steps = round((dist.high - dist.low) / dist.step)
                value = dist.low + int(rng.randint(steps + 1)) * dist.step
            else:
                value = rng.uniform(dist.low, dist.high)
            return float(min(max(value, dist.low), dist.high))
        assert isinstance(dist, IntDistribution)
        if dist.log:
            value = math.exp(rng.uniform(math.log(dist.low - 0.5), math.log(dist.high + 0.5)))
            value = round(value)
        else:
            steps = (dist.high - dist.low) // dist.step
            value = dist.low + int(rng.randint(steps + 1)) * dist.step
        return int(min(max(value, dist.low), dist.high))


def _single(dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[0]
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    return dist.low
