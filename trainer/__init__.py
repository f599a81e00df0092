"""trainer: train one multi-layer network for one trial, in NumPy or PyTorch.

A library in its own right; it knows nothing of hpsearch, Optuna or Ray.

    >>> from trainer import TrainConfig, load_dataset, train
    >>> data = load_dataset("digits", seed=0)
    >>> history = train(TrainConfig(hidden_sizes=(50, 50), epochs=5, lr=0.1), data)
    >>> history.final_val_accuracy  # doctest: +SKIP
"""

from __future__ import annotations

from trainer.config import TrainConfig
from trainer.datasets import Dataset, load_dataset
from trainer.errors import BackendUnavailableError, ConfigError, DataError, TrainerError
from trainer.history import EpochRecord, History
from trainer.train import train, train_model

__all__ = [
    "BackendUnavailableError",
    "ConfigError",
    "DataError",
    "Dataset",
    "EpochRecord",
    "History",
    "TrainConfig",
    "TrainerError",
    "load_dataset",
    "train",
    "train_model",
]
