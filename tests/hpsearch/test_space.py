"""The narrowing rule and sampling inside a box."""

from __future__ import annotations

import math

import optuna
import pytest

from hpsearch.config import Choice, FloatRange, IntRange
from hpsearch.sampling import make_sampler, sample_params
from hpsearch.space import (
    box_from_record,
    box_to_record,
    contains,
    distributions,
    inside,
    narrow,
    narrow_spec,
)

LR = FloatRange(low=1e-6, high=1e-2, log=True)


def test_log_range_narrows_to_top_values_padded_in_log10_space():
    spec, moved = narrow_spec(LR, [1e-4, 1e-3], margin=0.1)
    # width 4 decades: pad 0.4 decade each side of [-4, -3]
    assert math.log10(spec.low) == pytest.approx(-4.4)
    assert math.log10(spec.high) == pytest.approx(-2.6)
    assert spec.log and moved == []


def test_narrowing_is_clipped_to_the_current_box():
    spec, _ = narrow_spec(LR, [2e-6, 9e-3], margin=0.5)
    assert (spec.low, spec.high) == (LR.low, LR.high)


def test_linear_range_narrows_linearly():
    spec, _ = narrow_spec(FloatRange(low=0.0, high=0.5), [0.1, 0.2], margin=0.1)
    assert (spec.low, spec.high) == pytest.approx((0.05, 0.25))


def test_int_range_rounds_outwards_on_its_step_grid():
    spec, _ = narrow_spec(IntRange(low=32, high=256, step=32), [96, 128], margin=0.1)
    assert isinstance(spec, IntRange)
    assert spec.low <= 96 and spec.high >= 128
    assert (spec.low - 32) % 32 == 0 and (spec.high - 32) % 32 == 0


def test_categorical_keeps_the_values_seen_among_the_top_trials():
    spec, _ = narrow_spec(Choice(choices=(True, False)), [True, True], margin=0.1)
    assert spec == Choice(choices=(True,))


def test_a_crowded_edge_moves_out_up_to_the_hard_limit():
    # The best trials sit at the top of 1e-6..1e-2, as in the chapter's search.
    spec, moved = narrow_spec(LR, [5e-3, 8e-3, 1e-2], margin=0.1, limit=(1e-8, 1.0))
    assert moved == ["high"]
    assert spec.high > LR.high  # extended past the edge
    assert math.log10(spec.high) == pytest.approx(-2 + 0.25 * 4)  # by max(margin, .25) x width
    assert spec.low > LR.low  # the box slides: the far edge follows
    assert math.log10(spec.high / spec.low) == pytest.approx(4.0)  # keeping its width
    for _ in range(20):  # keep crowding the top: the edge climbs to the limit, never past
        spec, moved = narrow_spec(spec, [spec.high], margin=0.1, limit=(1e-8, 1.0))
        assert spec.high <= 1.0
        if not moved:
            break
    assert spec.high == pytest.approx(1.0)


def test_no_hard_limit_means_the_box_only_shrinks():
    spec, moved = narrow_spec(LR, [9e-3, 1e-2], margin=0.1)
    assert spec.high == LR.high and moved == []


def test_narrow_reports_which_edges_moved():
    box = {"lr": LR, "dropout_ratio": FloatRange(low=0.0, high=0.5)}
    top = [{"lr": 1e-2, "dropout_ratio": 0.2}, {"lr": 9e-3, "dropout_ratio": 0.3}]
    new, moved = narrow(box, top, 0.1, {"lr": (1e-8, 1.0)})
    assert moved == ["lr.high"]
    assert not inside(new, box)
    new2, moved2 = narrow(box, top, 0.1)
    assert moved2 == [] and inside(new2, box)


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
