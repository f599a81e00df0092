"""The test split is read by the final evaluation only, never while tuning.

A study runs through the driver (``NarrowingSearch`` on ``RayExecutor``) on a
dataset whose test split is poison: every test input is NaN and every test
label is class 1. Any tuning step that read it would be visibly damaged (NaN
losses and accuracies, failed trials, a different search). The same study on
the clean dataset is the control: the random sampler and the derived trial
seeds make both searches deterministic, so tuning that never touches the test
split records exactly the same trials and curves in both. Only the final
evaluation differs: it scores the poisoned split (NaN inputs predict class 0,
so not one of the class-1 labels is right).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from hpsearch import results
from hpsearch.cluster import RayExecutor
from hpsearch.config import parse_study
from hpsearch.sampling import make_sampler
from hpsearch.search import NarrowingSearch
from hpsearch.storage import StudyStore
from trainer.datasets import Dataset, load_dataset

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STUDY = """
[study]
name = "{name}"
seed = 7
sampler = "random"

[data]
dataset = "digits"
train_samples = 300
val_fraction = 0.2

[model]
hidden_sizes = [24]
epochs = 3
batch_size = 30

[search.lr]
low = 1e-2
high = 1.0
log = true

[search.dropout_ratio]
low = 0.0
high = 0.3

[search.batchnorm]
choices = [true, false]

[narrowing]
rounds = 2
trials_per_round = 4
top_k = 2

[resources]
workers = 2

[final_eval]
enabled = true
seeds = 2
"""


def _poisoned(data: Dataset) -> Dataset:
    """The same dataset with a test split no tuning step could read unharmed."""
    return dataclasses.replace(
        data,
        x_test=np.full_like(data.x_test, np.nan),
        y_test=np.ones_like(data.y_test),
    )


def _run(tmp_path, name: str, data: Dataset) -> tuple[str, dict]:
    config = parse_study(STUDY.format(name=name))
    url = f"sqlite:///{tmp_path / name}.db"
    sampler = make_sampler(config.sampler, config.seed)
    store, _ = StudyStore.open(
        url, config.name, direction=config.direction, sampler=sampler, create=True
    )
    executor = RayExecutor(data, workers=config.resources.workers)
    try:
        outcome = NarrowingSearch(config, store, executor, sampler).run()
    finally:
        executor.close()
    assert outcome.final_eval is not None
    return url, outcome.final_eval


@pytest.fixture(scope="module")
def studies(tmp_path_factory, ray_local):
    """(url, final-eval record) of the study on clean data and on poisoned data."""
    tmp_path = tmp_path_factory.mktemp("isolation")
    clean = load_dataset("digits", train_samples=300, val_fraction=0.2, seed=7)
    poisoned = _poisoned(clean)
    assert np.isnan(poisoned.x_test).all() and (poisoned.y_test == 1).all()
    return _run(tmp_path, "clean", clean), _run(tmp_path, "poisoned", poisoned)


def _tuning(url: str, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials = results.trials(url, name)
    keep = ["number", "state", "value", "round", "seed", "lr", "dropout_ratio", "batchnorm"]
    trials = trials[keep].sort_values("number").reset_index(drop=True)
    trials["state"] = trials["state"].astype(str)
    curves = results.curves(url, name).sort_values(["trial", "epoch", "split"])
    return trials, curves.reset_index(drop=True)


def test_tuning_trials_are_unharmed_by_a_poisoned_test_split(studies) -> None:
    _, (url, _) = studies
    trials, curves = _tuning(url, "poisoned")
    assert len(trials) == 8
    assert (trials["state"] == "COMPLETE").all(), trials
    assert trials["value"].map(math.isfinite).all()
    assert set(curves["split"].astype(str)) == {"train", "val"}  # no test curve is recorded
    assert np.isfinite(curves[["loss", "accuracy"]].to_numpy()).all()
    assert trials["value"].max() > 0.5  # it really learned digits (chance is 0.1)


def test_tuning_is_identical_with_and_without_the_poison(studies) -> None:
    (clean_url, _), (poisoned_url, _) = studies
    clean_trials, clean_curves = _tuning(clean_url, "clean")
    poisoned_trials, poisoned_curves = _tuning(poisoned_url, "poisoned")
    pd.testing.assert_frame_equal(clean_trials, poisoned_trials)
    pd.testing.assert_frame_equal(clean_curves, poisoned_curves)
    assert results.rounds(clean_url, "clean")["lr_low"].tolist() == pytest.approx(
        results.rounds(poisoned_url, "poisoned")["lr_low"].tolist()
    )


def test_only_the_final_evaluation_sees_the_test_split(studies) -> None:
    (clean_url, clean_final), (poisoned_url, poisoned_final) = studies
    # Both retrain the same best configuration with the same seeds ...
    assert poisoned_final["trial"] == clean_final["trial"]
    assert poisoned_final["params"] == clean_final["params"]
    assert poisoned_final["seeds"] == clean_final["seeds"]
    # ... and score it on their own test split: real digits vs the poison.
    assert all(a is not None and a > 0.5 for a in clean_final["test_accuracy"]), clean_final
    assert all(a is None or a == 0.0 for a in poisoned_final["test_accuracy"]), poisoned_final
    # The final evaluation is recorded on the study, apart from the tuning trials.
    for url, name, final in ((clean_url, "clean", clean_final),
                             (poisoned_url, "poisoned", poisoned_final)):  # fmt: skip
        assert results.study_info(url, name).final_eval["test_accuracy"] == final["test_accuracy"]
        assert len(results.trials(url, name)) == 8  # the retrainings are not trials
