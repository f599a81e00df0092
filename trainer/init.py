"""Initial weights, drawn once in NumPy so both backends start identically.

Affine weights are ``std * N(0, 1)`` with std = sqrt(2 / n_in) for ``he``,
sqrt(1 / n_in) for ``xavier``, or the given float; biases are zero. Draws are
made in float64 from the run's ``init`` Generator, layer by layer (input to
output), then cast by the backend to its dtype.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from trainer.config import TrainConfig


def layer_sizes(config: TrainConfig, n_features: int, n_classes: int) -> list[int]:
    """``[n_features, *hidden_sizes, n_classes]``."""
    return [n_features, *config.hidden_sizes, n_classes]


def init_std(weight_init: str | float, n_in: int) -> float:
    """The standard deviation of an Affine layer's weights."""
    if weight_init == "he":
        return math.sqrt(2.0 / n_in)
    if weight_init == "xavier":
        return math.sqrt(1.0 / n_in)
    return float(weight_init)


def initial_affine_params(
    config: TrainConfig, n_features: int, n_classes: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(W, b)`` per Affine layer in float64; W has shape (n_in, n_out)."""
    sizes = layer_sizes(config, n_features, n_classes)
    params = []
    for n_in, n_out in itertools.pairwise(sizes):
        w = init_std(config.weight_init, n_in) * rng.standard_normal((n_in, n_out))
        params.append((w, np.zeros(n_out)))
    return params
