"""The narrowing rule and sampling inside a box."""

from __future__ import annotations

import optuna
import pytest

from hpsearch.config import Choice, FloatRange, IntRange
from hpsearch.sampling import make_sampler, sample_params
from hpsearch.space import (
    box_from_record,
    box_to_record,
    contains,
    distributions,
    is_point,
    region,
)

LR = FloatRange(low=1e-6, high=1e-2, log=True)


def test_the_region_widens_float_ranges_to_their_hard_limits():
    space = {
        "lr": LR,
        "dropout_ratio": FloatRange(low=0.0, high=0.5),
        "batch_size": IntRange(low=32, high=256, step=32),
        "batchnorm": Choice(choices=(True, False)),
    }
    reg = region(space, {"lr": (1e-8, 1.0)})
    assert reg["lr"] == FloatRange(low=1e-8, high=1.0, log=True)
    assert {k: v for k, v in reg.items() if k != "lr"} == {
        k: v for k, v in space.items() if k != "lr"
    }
    assert region(space) == space


def test_a_box_of_single_values_is_a_point():
    assert is_point({"lr": FloatRange(low=0.1, high=0.1), "bn": Choice(choices=(True,))})
    assert not is_point({"lr": FloatRange(low=0.1, high=0.2), "bn": Choice(choices=(True,))})
    assert not is_point({"bn": Choice(choices=(True, False))})


def test_box_records_round_trip():
    box = {
        "lr": LR,
        "batch_size": IntRange(low=32, high=256, step=32),
        "batchnorm": Choice(choices=(True, False)),
    }
    assert box_from_record(box_to_record(box)) == box


@pytest.mark.parametrize("sampler_name", ["random", "tpe", "qmc"])
def test_sampled_parameters_lie_inside_the_box(sampler_name):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    full = {
        "lr": LR,
        "dropout_ratio": FloatRange(low=0.0, high=0.5),
        "batchnorm": Choice(choices=(True, False)),
    }
    box = {
        "lr": FloatRange(low=1e-4, high=1e-3, log=True),
        "dropout_ratio": FloatRange(low=0.1, high=0.2),
        "batchnorm": Choice(choices=(True,)),
    }
    sampler = make_sampler(sampler_name, 0)
    dists = distributions(full)
    for i in range(30):  # earlier trials from the full space, as after a narrowing
        params = sample_params(sampler, study, full if i < 15 else box)
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=dists, value=float(i))
        )
        if i >= 15:
            assert contains(box, params), params
