"""Drawing one trial's parameters inside the current box with Optuna's sampler.

The study's distributions in the database stay the study file's full ranges
(so every trial of every round is compatible and optuna-dashboard shows one
space); the *sampler* is asked to sample inside the round's box, and it sees
only the finished trials that lie inside that box, so a model-based sampler
(TPE) builds its model from the region it samples.

While no finished trial in the box is informative (better than chance by more
than the noise, :func:`hpsearch.round_rule.signal_threshold`), the sampler sees
none of them and draws as on an empty study (TPE: at random): a model fit to
trials that are all at chance takes the luckiest noise for "good" and steers
the next proposals by it. On the deep_tanh benchmark, whose first box is all at
chance, 4 of 10 studies ended at chance before this and none after
(benchmarks/RESULTS.md). Once one trial learned, it sees every trial again.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Container, Mapping
from typing import Any

import optuna
from optuna.samplers import BaseSampler, QMCSampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from hpsearch import internals, space
from hpsearch.config import ParamSpec
from hpsearch.errors import ConfigError

SAMPLERS = ("random", "tpe", "qmc")


def make_sampler(name: str, seed: int) -> BaseSampler:
    """The Optuna sampler called ``name`` in the study file, seeded."""
    if name == "random":
        return RandomSampler(seed=seed)
    if name == "tpe":
        return TPESampler(seed=seed)
    if name == "qmc":
        return QMCSampler(seed=seed, scramble=True)
    raise ConfigError(f"study.sampler: got {name!r}; allowed: {', '.join(SAMPLERS)}")


class _BoxView:
    """The study as the sampler should see it: only finished trials in the box."""

    def __init__(
        self,
        study: optuna.Study,
        box: Mapping[str, ParamSpec],
        informative: Callable[[FrozenTrial], bool] | None = None,
    ) -> None:
        self._study = study
        self._box = box
        self._informative = informative

    def _filter(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        seen = [
            t for t in trials if not t.state.is_finished() or space.contains(self._box, t.params)
        ]
        if self._informative is not None and not any(
            t.state.is_finished() and self._informative(t) for t in seen
        ):
            return [t for t in seen if not t.state.is_finished()]
        return seen

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._filter(self._study.get_trials(deepcopy=deepcopy, states=states))

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        return self._filter(
            internals.study_trials(
                self._study, deepcopy=deepcopy, states=states, use_cache=use_cache
            )
        )

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


def _template() -> FrozenTrial:
    return FrozenTrial(
        number=-1,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=-1,
    )


def sample_params(
    sampler: BaseSampler,
    study: optuna.Study,
    box: Mapping[str, ParamSpec],
    *,
    informative: Callable[[FrozenTrial], bool] | None = None,
) -> dict[str, Any]:
    """Parameters for one new trial, each inside ``box``, in the box's order.

    ``informative`` tells a finished trial that learned something from one at
    chance (None: every trial counts); see the module docstring.
    """
    # Study.ask resets Optuna's per-thread trial cache before sampling; we sample
    # without ask, so reset it too, or a model-based sampler (TPE) would keep
    # seeing the trials of its first draw and act as random search.
    internals.reset_trial_cache(study)
    view: Any = _BoxView(study, box, informative)
    template = _template()
    dists = space.distributions(box)
    if isinstance(sampler, QMCSampler):
        relative_names = [n for n, d in dists.items() if not d.single()]
    elif isinstance(sampler, (RandomSampler, TPESampler)) and not internals.samples_relative(
        sampler
    ):
        relative_names = []
    else:
        relative_names = list(sampler.infer_relative_search_space(view, template))
    relative_space = {n: dists[n] for n in relative_names if n in dists}
    relative = sampler.sample_relative(view, template, relative_space) if relative_space else {}
    params: dict[str, Any] = {}
    for name, dist in dists.items():
        if name in relative:
            params[name] = relative[name]
        elif dist.single():
            params[name] = internals.single_value(dist)
        else:
            params[name] = sampler.sample_independent(view, template, name, dist)
    return params
