"""The training loop: determinism, callbacks, stopping, divergence, config, test isolation."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pytest

from trainer.config import OPTIMIZERS, TrainConfig
from trainer.datasets import Dataset, make_synthetic
from trainer.errors import ConfigError
from trainer.history import EpochRecord, History
from trainer.train import train

SMALL = TrainConfig(hidden_sizes=(16, 16), epochs=4, batch_size=32, lr=0.1, seed=0)


@pytest.fixture(scope="module")
def data() -> Dataset:
    """400 samples, 10 features, 3 classes: 256 train, 64 validation, 80 test."""
    return make_synthetic(400, n_features=10, n_classes=3, seed=0)


def _without_wall_time(history: History) -> dict[str, Any]:
    out = history.to_dict()
    out.pop("seconds")
    for record in out["records"]:
        record.pop("seconds")
    return out


# --------------------------------------------------------------------------- determinism

VARIANTS = {
    "plain": {},
    "batchnorm-dropout-decay": {"batchnorm": True, "dropout_ratio": 0.3, "weight_decay": 1e-3},
    "adam-tanh": {"optimizer": "adam", "lr": 0.01, "activation": "tanh"},
}


@pytest.mark.parametrize("changes", VARIANTS.values(), ids=VARIANTS.keys())
def test_same_seed_gives_an_identical_history(data: Dataset, changes: dict) -> None:
    config = SMALL.replace(**changes)
    first = train(config, data, evaluate_test=True)
    second = train(config, data, evaluate_test=True)
    assert first.epochs_completed == config.epochs
    assert _without_wall_time(first) == _without_wall_time(second)


@pytest.mark.parametrize("changes", VARIANTS.values(), ids=VARIANTS.keys())
def test_different_seed_gives_a_different_history(data: Dataset, changes: dict) -> None:
    config = SMALL.replace(**changes)
    first = train(config, data)
    second = train(config.replace(seed=1), data)
    assert _without_wall_time(first) != _without_wall_time(second)
    assert first.records[-1].train_loss != second.records[-1].train_loss


# --------------------------------------------------------------------------- callback


def test_callback_sees_every_epoch_once_in_order(data: Dataset) -> None:
    seen: list[EpochRecord] = []
    history = train(SMALL.replace(epochs=5), data, callback=seen.append)
    assert [r.epoch for r in seen] == [1, 2, 3, 4, 5]
    assert tuple(seen) == history.records
    assert all(isinstance(r, EpochRecord) for r in seen)
    assert not history.stopped and history.stopped_at_epoch is None
    for record in seen:
        assert 0.0 <= record.train_accuracy <= 1.0 and 0.0 <= record.val_accuracy <= 1.0
        assert math.isfinite(record.train_loss) and math.isfinite(record.val_loss)
        assert record.seconds >= 0.0


@pytest.mark.parametrize("answer", [True, 1, "stop", [0]])
def test_a_truthy_callback_return_stops_the_run(data: Dataset, answer: object) -> None:
    calls: list[int] = []

    def stop_after_two(record: EpochRecord) -> object:
        calls.append(record.epoch)
        return answer if record.epoch == 2 else None

    history = train(SMALL.replace(epochs=10), data, callback=stop_after_two)
    assert calls == [1, 2]
    assert history.stopped and history.stopped_at_epoch == 2
    assert history.epochs_completed == 2 and not history.diverged


@pytest.mark.parametrize("answer", [None, False, 0, "", []])
def test_a_falsy_callback_return_keeps_going(data: Dataset, answer: object) -> None:
    history = train(SMALL.replace(epochs=3), data, callback=lambda record: answer)
    assert history.epochs_completed == 3 and not history.stopped


def test_asking_to_stop_after_the_last_epoch_is_not_an_early_stop(data: Dataset) -> None:
    history = train(SMALL.replace(epochs=3), data, callback=lambda record: True)
    # Asking to stop after epoch 1 already ends the run there ...
    assert history.stopped and history.stopped_at_epoch == 1
    # ... but a stop request after the final epoch changes nothing.
    last_only = train(SMALL.replace(epochs=3), data, callback=lambda record: record.epoch == 3)
    assert last_only.epochs_completed == 3 and not last_only.stopped


def test_a_stopped_run_matches_the_prefix_of_a_full_run(data: Dataset) -> None:
    full = train(SMALL.replace(epochs=4), data)
    stopped = train(SMALL.replace(epochs=4), data, callback=lambda record: record.epoch == 2)
    assert _without_wall_time(stopped)["records"] == _without_wall_time(full)["records"][:2]


# --------------------------------------------------------------------------- divergence


@pytest.mark.timeout(60)
@pytest.mark.parametrize("lr", [1e4, 1e8])
def test_a_huge_learning_rate_diverges_without_raising(data: Dataset, lr: float) -> None:
    config = SMALL.replace(lr=lr, activation="relu", epochs=20)
    seen: list[EpochRecord] = []
    history = train(config, data, callback=seen.append, evaluate_test=True)
    assert history.diverged
    assert history.diverged_at_epoch is not None and 1 <= history.diverged_at_epoch <= 20
    # The epoch it diverged in is not recorded; every recorded loss is finite.
    assert history.epochs_completed == history.diverged_at_epoch - 1
    assert all(math.isfinite(r.train_loss) for r in history.records)
    assert seen == list(history.records)
    assert not history.stopped
    assert math.isnan(history.test_accuracy)  # a diverged model is not evaluated


@pytest.mark.timeout(60)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_a_huge_learning_rate_with_saturating_units_ends_cleanly(
    data: Dataset, activation: str
) -> None:
    # Saturating units bound the hidden activations, so with a log-softmax loss
    # the loss grows with lr (about 1.8e4 at lr=1e4) but stays finite: the run
    # need not be marked diverged, but it must end without raising and show
    # the blow-up.
    history = train(SMALL.replace(lr=1e4, activation=activation, epochs=5), data)
    chance = math.log(data.n_classes)
    assert history.diverged or min(r.train_loss for r in history.records) > 100 * chance


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"lr": -0.01}, "lr", "-0.01"),
        ({"lr": 0}, "lr", "0"),
        ({"lr": float("nan")}, "lr", "nan"),
        ({"dropout_ratio": 1.0}, "dropout_ratio", "1.0"),
        ({"dropout_ratio": -0.1}, "dropout_ratio", "-0.1"),
        ({"weight_decay": -1e-4}, "weight_decay", "-0.0001"),
        ({"hidden_sizes": []}, "hidden_sizes", "non-empty"),
        ({"hidden_sizes": (100, 0)}, "hidden_sizes", "0"),
        ({"optimizer": "adamw"}, "optimizer", "'adamw'"),
        ({"activation": "gelu"}, "activation", "'gelu'"),
        ({"epochs": 0}, "epochs", "0"),
        ({"epochs": 2.5}, "epochs", "2.5"),
        ({"batch_size": 0}, "batch_size", "0"),
        ({"weight_init": "lecun"}, "weight_init", "'lecun'"),
        ({"weight_init": -0.01}, "weight_init", "-0.01"),
        ({"weight_init": 0.0}, "weight_init", "0.0"),
        ({"momentum": 1.0}, "momentum", "1.0"),
        ({"batchnorm": "yes"}, "batchnorm", "'yes'"),
        ({"seed": -1}, "seed", "-1"),
        ({"backend": "jax"}, "backend", "'jax'"),
        ({"dtype": "float16"}, "dtype", "'float16'"),
        ({"device": "cuda"}, "device", "'cuda'"),
    ],
)
def test_invalid_config_values_name_the_field_and_value(
    changes: dict, field: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(**changes)
    message = str(info.value)
    assert message.startswith(f"{field}:")
    assert value in message


def test_numpy_backend_runs_on_cpu_only() -> None:
    with pytest.raises(ConfigError, match=r"device: got 'cuda'.*numpy backend"):
        TrainConfig(backend="numpy", device="cuda")


def test_from_mapping_rejects_an_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"^learning_rate: unknown training option.*\blr\b"):
        TrainConfig.from_mapping({"learning_rate": 0.1})


def test_from_mapping_validates_values_too() -> None:
    with pytest.raises(ConfigError, match=r"^epochs: got 0"):
        TrainConfig.from_mapping({"epochs": 0})
    config = TrainConfig.from_mapping({"hidden_sizes": [10, 10], "lr": 1})
    assert config.hidden_sizes == (10, 10) and config.lr == 1.0
    assert TrainConfig.from_mapping(config.to_dict()) == config


def test_config_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        TrainConfig(lr=-1)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SMALL.lr = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------- test split


def test_training_never_touches_the_test_split(data: Dataset) -> None:
    poisoned = dataclasses.replace(
        data,
        x_test=np.full_like(data.x_test, np.nan),
        y_test=np.full_like(data.y_test, -1),
    )
    history = train(SMALL, poisoned)
    assert history.epochs_completed == SMALL.epochs and not history.diverged
    assert math.isnan(history.test_accuracy) and math.isnan(history.test_loss)
    # The poison has no effect on anything that was recorded.
    assert _without_wall_time(history) == _without_wall_time(train(SMALL, data))


def test_evaluate_test_reports_the_test_split(data: Dataset) -> None:
    history = train(SMALL, data, evaluate_test=True)
    assert 0.0 <= history.test_accuracy <= 1.0 and math.isfinite(history.test_loss)
    assert history.test_accuracy > 0.6  # chance is 1/3


def test_no_validation_split_records_nan(data: Dataset) -> None:
    history = train(SMALL, data.with_validation_merged())
    assert all(math.isnan(r.val_accuracy) and math.isnan(r.val_loss) for r in history.records)
    assert math.isnan(history.best_val_accuracy)
    assert all(math.isfinite(r.train_loss) for r in history.records)


# --------------------------------------------------------------------------- optimizers

OPTIMIZER_LR = {
    "sgd": 0.2,
    "momentum": 0.05,
    "nesterov": 0.05,
    "adagrad": 0.05,
    "rmsprop": 0.003,
    "adam": 0.003,
}


def test_every_optimizer_is_covered() -> None:
    assert set(OPTIMIZER_LR) == set(OPTIMIZERS)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_reduces_the_loss(data: Dataset, optimizer: str) -> None:
    config = SMALL.replace(optimizer=optimizer, lr=OPTIMIZER_LR[optimizer], epochs=8)
    history = train(config, data)
    losses = [r.train_loss for r in history.records]
    chance = math.log(data.n_classes)  # the loss of a uniform guess
    assert not history.diverged and len(losses) == 8
    assert losses[-1] < losses[0]
    assert losses[-1] < 0.6 * chance
    assert history.records[-1].train_accuracy > 0.8
    assert history.records[-1].val_accuracy > 0.7


# --------------------------------------------------------------------------- History


def test_history_round_trips_through_a_dict_and_json(data: Dataset) -> None:
    history = train(
        SMALL.replace(epochs=5), data, callback=lambda r: r.epoch == 3, evaluate_test=False
    )
    assert history.stopped and math.isnan(history.test_accuracy)
    # (NaN != NaN, so compare the JSON text, where NaN is written as NaN.)
    again = History.from_dict(history.to_dict())
    assert json.dumps(again.to_dict()) == json.dumps(history.to_dict())
    through_json = History.from_dict(json.loads(json.dumps(history.to_dict())))
    assert json.dumps(through_json.to_dict()) == json.dumps(history.to_dict())
    assert through_json.records == history.records
    assert (through_json.stopped, through_json.stopped_at_epoch) == (True, 3)
    assert through_json.final_val_accuracy == history.final_val_accuracy


def test_history_round_trips_a_diverged_run() -> None:
    history = History(
        records=(EpochRecord(1, 0.9, 0.5, 1.0, 0.4, 0.01),),
        diverged=True,
        diverged_at_epoch=2,
        seconds=0.02,
        test_loss=0.7,
        test_accuracy=0.75,
    )
    assert History.from_dict(history.to_dict()) == history
    assert History.from_dict(json.loads(json.dumps(history.to_dict()))) == history
