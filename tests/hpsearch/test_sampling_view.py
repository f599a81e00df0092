"""What the sampler learns from: trials at chance teach it nothing (no Ray, no database)."""

from __future__ import annotations

import math

import optuna

from hpsearch import ranking, round_rule
from hpsearch.config import FloatRange
from hpsearch.round_rule import MetricScale
from hpsearch.sampling import make_sampler, sample_params
from hpsearch.space import distributions

REGION = {"lr": FloatRange(low=1e-6, high=1.0, log=True)}
CHANCE = MetricScale(floor=0.1, noise=0.03, floor_source="chance", noise_source="binomial")


def _informative():
    threshold = round_rule.signal_threshold(CHANCE, maximize=True)
    assert threshold == 0.1 + round_rule.Z * 0.03
    return ranking.informative_trials(threshold, maximize=True)


def _study_with_dead_trials(n: int = 40) -> optuna.Study:
    """A first, small box (lr 1e-6..1e-5) where every trial stayed at chance,
    its values the noise of a small validation split."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    dists = distributions(REGION)
    for i in range(n):
        lr = 10 ** (-6 + (i % 10) / 10)
        value = 0.1 + 0.03 * math.sin(i)  # within the noise of chance
        study.add_trial(optuna.trial.create_trial(params={"lr": lr}, distributions=dists,
                                                  value=value))  # fmt: skip
    return study


def _draws(study: optuna.Study, informative, n: int = 20) -> list[float]:
    sampler = make_sampler("tpe", 0)
    return [sample_params(sampler, study, REGION, informative=informative)["lr"] for _ in range(n)]


def test_trials_at_chance_teach_tpe_nothing():
    # Before, TPE fit its model to these 40 trials: its "good" ones were the
    # luckiest noise. Now it draws what it draws on an empty study.
    dead = _study_with_dead_trials()
    empty = optuna.create_study(direction="maximize")
    assert _draws(dead, _informative()) == _draws(empty, None)
    assert _draws(dead, None) != _draws(empty, None)  # without the rule it modelled the noise


def test_one_trial_that_learned_brings_every_trial_back_into_view():
    study = _study_with_dead_trials()
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 0.1}, distributions=distributions(REGION), value=0.9
        )
    )
    informative = _informative()
    assert informative(study.trials[-1]) and not informative(study.trials[0])
    assert _draws(study, informative) == _draws(study, None)
    empty = optuna.create_study(direction="maximize")
    assert _draws(study, informative) != _draws(empty, None)


def test_a_pruned_trial_counts_by_its_last_value_and_unknown_floors_hide_nothing():
    informative = _informative()
    dists = distributions(REGION)
    learned = optuna.trial.create_trial(
        params={"lr": 0.1}, distributions=dists, state=optuna.trial.TrialState.PRUNED,
        intermediate_values={12: 0.7},
    )  # fmt: skip
    at_chance = optuna.trial.create_trial(
        params={"lr": 0.1}, distributions=dists, state=optuna.trial.TrialState.PRUNED,
        intermediate_values={12: 0.11},
    )  # fmt: skip
    assert informative(learned) and not informative(at_chance)
    assert round_rule.signal_threshold(MetricScale(noise=0.03), maximize=True) is None
    assert ranking.informative_trials(None, maximize=True) is None
    minimized = ranking.informative_trials(
        round_rule.signal_threshold(MetricScale(floor=2.3, noise=0.1), maximize=False),
        maximize=False,
    )
    loss = optuna.trial.create_trial(params={"lr": 0.1}, distributions=dists, value=1.0)
    assert minimized(loss)
