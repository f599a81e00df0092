"""Datasets: train / validation / test splits as float32 in [0, 1].

Every loader returns a :class:`Dataset`. Images are flattened to vectors;
labels are int64 class indices 0..n_classes-1. The test split is held out
before anything else and never depends on the run seed; the validation split
is ``val_fraction`` of the (optionally subsetted) training data, taken after a
seeded shuffle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Dataset:
    """Arrays of one dataset, split three ways.

    Attributes:
        name: The spec it was loaded from, e.g. ``digits`` or ``npz:/data/x.npz``.
        x_train, y_train: Training split (float32 (n, d); int64 (n,)).
        x_val, y_val: Validation split used for tuning (may be empty).
        x_test, y_test: Held-out test split, never used for tuning (may be empty).
        n_classes: Number of classes.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def with_validation_merged(self) -> Dataset:
        """Train on train+validation (for a final evaluation); no validation split."""
        return Dataset(
            name=self.name,
            x_train=np.concatenate([self.x_train, self.x_val]),
            y_train=np.concatenate([self.y_train, self.y_val]),
            x_val=self.x_val[:0],
            y_val=self.y_val[:0],
            x_test=self.x_test,
            y_test=self.y_test,
            n_classes=self.n_classes,
        )
