"""The training loop shared by every backend.

Each epoch is a shuffled pass over the training split without replacement
(a fresh permutation from the run's ``shuffle`` seed). After each epoch the
loop evaluates train and validation loss and accuracy in inference mode,
records them with the epoch's wall time, and calls ``callback(record)``; a
truthy return stops the run. A NaN or infinite training loss stops the run and
marks it diverged; nothing raises out of the loop for it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from trainer.backend import Model, build_model
from trainer.config import TrainConfig
from trainer.datasets import Dataset
from trainer.history import EpochRecord, History
from trainer.seeding import run_seeds

EpochCallback = Callable[[EpochRecord], object]


def _evaluate(model: Model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(y) == 0:
        return math.nan, math.nan
    loss, accuracy = model.evaluate(x, y)
    return float(loss), float(accuracy)


def train(
    config: TrainConfig,
    data: Dataset,
    *,
    callback: EpochCallback | None = None,
    evaluate_test: bool = False,
) -> History:
    """Train one model and return its :class:`History`.

    Args:
        config: The validated run configuration (its seed fixes every draw).
        data: The splits; only train and validation are read unless
            ``evaluate_test`` is true.
        callback: Called after every epoch with its record; returning a truthy
            value stops the run (``History.stopped``).
        evaluate_test: Also evaluate the final model on the test split. Never
            set this during tuning.
    """
    history, _ = train_model(config, data, callback=callback, evaluate_test=evaluate_test)
    return history


def train_model(
    config: TrainConfig,
    data: Dataset,
    *,
    callback: EpochCallback | None = None,
    evaluate_test: bool = False,
) -> tuple[History, Model]:
    """Like :func:`train`, and also return the trained model."""
    start = time.perf_counter()
    dtype = np.dtype(config.dtype)
    x_train = np.ascontiguousarray(data.x_train, dtype=dtype)
    x_val = np.ascontiguousarray(data.x_val, dtype=dtype)
    y_train = np.asarray(data.y_train, dtype=np.int64)
    y_val = np.asarray(data.y_val, dtype=np.int64)
    seeds = run_seeds(config.seed)
    model = build_model(config, data.n_features, data.n_classes, seeds)
    shuffle_rng = np.random.default_rng(seeds.shuffle)
    n = len(y_train)

    records: list[EpochRecord] = []
    stopped_at: int | None = None
    diverged_at: int | None = None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for epoch in range(1, config.epochs + 1):
            epoch_start = time.perf_counter()
            order = shuffle_rng.permutation(n)
            for begin in range(0, n, config.batch_size):
                batch = order[begin : begin + config.batch_size]
                loss = model.train_step(x_train[batch], y_train[batch])
                if not math.isfinite(loss):
                    diverged_at = epoch
                    break
            if diverged_at is not None:
                break
            train_loss, train_acc = _evaluate(model, x_train, y_train)
            val_loss, val_acc = _evaluate(model, x_val, y_val)
            if not (math.isfinite(train_loss) or len(y_train) == 0):
                diverged_at = epoch
                break
            record = EpochRecord(
                epoch=epoch,
                train_loss=train_loss,
                train_accuracy=train_acc,
                val_loss=val_loss,
                val_accuracy=val_acc,
                seconds=time.perf_counter() - epoch_start,
            )
            records.append(record)
            if callback is not None and callback(record) and epoch < config.epochs:
                stopped_at = epoch
                break

        test_loss = test_acc = math.nan
        if evaluate_test and diverged_at is None:
            x_test = np.ascontiguousarray(data.x_test, dtype=dtype)
            test_loss, test_acc = _evaluate(model, x_test, np.asarray(data.y_test, dtype=np.int64))

    history = History(
        records=tuple(records),
        stopped=stopped_at is not None,
        stopped_at_epoch=stopped_at,
        diverged=diverged_at is not None,
        diverged_at_epoch=diverged_at,
        seconds=time.perf_counter() - start,
        test_loss=test_loss,
        test_accuracy=test_acc,
    )
    return history, model
