"""Batched TPE (hpsearch.proposer): proposals inside the box, seeded, learning from results."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from hpsearch import internals, space
from hpsearch.config import Choice, FloatRange, IntRange
from hpsearch.proposer import BEST_KEPT, RECENT_KEPT, BatchTPEProposer
from hpsearch.sampling import make_sampler

BOX = {
    "lr": FloatRange(low=1e-5, high=1e-1, log=True),
    "dropout_ratio": FloatRange(low=0.0, high=0.5),
    "batch_size": IntRange(low=16, high=256, step=16),
    "batchnorm": Choice(choices=(True, False)),
    "activation": Choice(choices=("relu",)),
}


def settings() -> internals.TPESettings:
    found = internals.tpe_settings(make_sampler("tpe", 0))
    assert found is not None, "the installed Optuna should be one the proposer was tested with"
    return found


def score(params) -> float:
    """Best at lr = 1e-2, dropout 0.1, batchnorm on."""
    return (
        -((math.log10(params["lr"]) + 2.0) ** 2)
        - (params["dropout_ratio"] - 0.1) ** 2
        + (0.5 if params["batchnorm"] else 0.0)
    )


def run(proposer: BatchTPEProposer, trials: int, batch: int = 8) -> list[dict]:
    proposed = []
    number = 0
    while number < trials:
        for params in proposer.propose(min(batch, trials - number)):
            proposed.append(params)
            proposer.observe(number, params, "COMPLETE", score(params))
            number += 1
    return proposed


@pytest.mark.parametrize("seen", [0, 40])
def test_every_proposal_lies_inside_the_box(seen):
    proposer = BatchTPEProposer(settings(), seed=1, maximize=True)
    proposer.reset(BOX, [])
    run(proposer, seen)
    proposals = proposer.propose(200)
    assert len(proposals) == 200
    for params in proposals:
        assert list(params) == list(BOX)
        assert space.contains(BOX, params), params
        assert params["batch_size"] % 16 == 0
        assert params["activation"] == "relu"


def test_same_seed_same_proposals_other_seed_others():
    def proposals(seed):
        proposer = BatchTPEProposer(settings(), seed=seed, maximize=True)
        proposer.reset(BOX, [])
        return run(proposer, 60)

    assert proposals(3) == proposals(3)
    assert proposals(3) != proposals(4)


def test_finished_trials_draw_proposals_to_the_good_region():
    proposer = BatchTPEProposer(settings(), seed=0, maximize=True)
    proposer.reset(BOX, [])
    proposed = run(proposer, 300)
    first = [abs(math.log10(p["lr"]) + 2.0) for p in proposed[:10]]  # random start-up
    last = [abs(math.log10(p["lr"]) + 2.0) for p in proposed[-100:]]
    assert np.median(last) < 0.5
    assert np.median(last) < np.median(first)
    assert sum(p["batchnorm"] for p in proposed[-100:]) > 70


def test_minimize_learns_the_other_way():
    proposer = BatchTPEProposer(settings(), seed=0, maximize=False)
    proposer.reset(BOX, [])
    number = 0
    for _ in range(40):
        for params in proposer.propose(8):
            proposer.observe(number, params, "COMPLETE", -score(params))
            number += 1
    last = proposer.propose(100)
    assert np.median([abs(math.log10(p["lr"]) + 2.0) for p in last]) < 0.5


def test_the_view_is_bounded_and_keeps_the_best():
    proposer = BatchTPEProposer(settings(), seed=0, maximize=True)
    proposer.reset(BOX, [])
    rng = np.random.default_rng(0)
    values = rng.normal(size=5000)
    params = {"lr": 1e-3, "dropout_ratio": 0.2, "batch_size": 32, "batchnorm": True,
              "activation": "relu"}  # fmt: skip
    for number, value in enumerate(values):
        proposer.observe(number, params, "COMPLETE", float(value))
    view = proposer.view()
    assert len(view) <= BEST_KEPT + RECENT_KEPT
    numbers = {entry[0][3] for entry in view}
    assert set(np.argsort(-values)[:25].tolist()) <= numbers  # TPE's l(x) set
    assert set(range(5000 - RECENT_KEPT, 5000)) <= numbers
    assert proposer.seen == 5000


def test_trials_outside_the_box_and_failed_ones_are_not_seen():
    proposer = BatchTPEProposer(settings(), seed=0, maximize=True)
    proposer.reset(BOX, [])
    inside = {"lr": 1e-3, "dropout_ratio": 0.2, "batch_size": 32, "batchnorm": True,
              "activation": "relu"}  # fmt: skip
    proposer.observe(0, {**inside, "lr": 0.5}, "COMPLETE", 1.0)
    proposer.observe(1, inside, "FAIL", None)
    proposer.observe(2, inside, "COMPLETE", float("nan"))
    proposer.observe(3, inside, "PRUNED", 0.3, last_step=2, last_value=0.3)
    proposer.observe(4, inside, "COMPLETE", 0.1)
    assert [entry[0][3] for entry in proposer.view()] == [3, 4]


def test_reset_reads_the_finished_trials_of_the_study():
    study = optuna.create_study(direction="maximize")
    dists = space.distributions(BOX)
    for number in range(12):
        params = {"lr": 10 ** (-5 + number * 0.3), "dropout_ratio": 0.1, "batch_size": 64,
                  "batchnorm": True, "activation": "relu"}  # fmt: skip
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=dists, value=float(number))
        )
    proposer = BatchTPEProposer(settings(), seed=0, maximize=True)
    proposer.reset(BOX, study.trials)
    assert proposer.seen == 12  # past TPE's 10 start-up trials: it learns from them
    assert len(proposer.view()) == 12


def test_samplers_the_proposer_cannot_stand_in_for_fall_back():
    assert internals.tpe_settings(make_sampler("random", 0)) is None
    assert internals.tpe_settings(make_sampler("qmc", 0)) is None
    assert internals.tpe_settings(optuna.samplers.TPESampler(multivariate=True)) is None
    assert internals.tpe_settings(make_sampler("tpe", 0)) is not None


def test_an_untested_optuna_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(internals, "TESTED_OPTUNA", ("0.0",))
    internals.reset()
    try:
        with caplog.at_level("WARNING", logger="hpsearch.internals"):
            assert internals.tpe_settings(make_sampler("tpe", 0)) is None
            assert internals.tpe_settings(make_sampler("tpe", 0)) is None
    finally:
        internals.reset()
    [record] = caplog.records
    assert "public API" in record.getMessage()


def test_no_learning_until_a_trial_beats_chance():
    """Trials all at chance teach nothing: proposals stay random until one beats the
    threshold, then TPE learns from every trial seen."""
    proposer = BatchTPEProposer(settings(), seed=0, maximize=True, threshold=0.5)
    proposer.reset(BOX, [])
    at_chance = {"lr": 1e-5, "dropout_ratio": 0.5, "batch_size": 256, "batchnorm": False,
                 "activation": "relu"}  # fmt: skip
    for number in range(40):  # all at chance, the same corner of the box
        proposer.observe(number, at_chance, "COMPLETE", 0.1 + number * 1e-4)
    spread = [math.log10(p["lr"]) for p in proposer.propose(200)]
    assert np.std(spread) > 1.0  # uniform over 4 decades (std ~1.15), not drawn to the corner
    proposer.observe(40, {**at_chance, "lr": 1e-2}, "COMPLETE", 0.9)
    learned = [math.log10(p["lr"]) for p in proposer.propose(200)]
    assert np.std(learned) < np.std(spread)
