"""The small interface every training backend implements, and the factory.

A backend model owns its parameters, optimizer state and dropout RNG. The
training loop (:mod:`trainer.train`) owns batching, shuffling, evaluation and
stopping, so both backends see the same batches in the same order.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from trainer.config import TrainConfig
from trainer.errors import BackendUnavailableError
from trainer.seeding import RunSeeds


class Model(Protocol):
    """A multi-layer network that can take a training step and be evaluated."""

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """Forward, backward and one optimizer update on a mini-batch.

        Args:
            x: Inputs, shape (batch, n_features), the config's dtype.
            y: Integer class labels, shape (batch,).

        Returns:
            The batch's training loss (cross-entropy plus the weight decay
            term); NaN or infinite when training diverged.
        """
        ...

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Inference-mode (running BN statistics, no dropout) mean
        cross-entropy without the weight decay term, and accuracy."""
        ...

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Inference-mode class scores (logits), shape (n, n_classes), numpy."""
        ...


def build_model(config: TrainConfig, n_features: int, n_classes: int, seeds: RunSeeds) -> Model:
    """Build the config's backend model with weights drawn from ``seeds.init``."""
    if config.backend == "numpy":
        from trainer.numpy_backend.model import NumpyModel

        return NumpyModel(config, n_features, n_classes, seeds)
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            "backend: got 'torch' but PyTorch is not installed; install the extra with "
            "pip install -e '.[torch]' or use backend = 'numpy'"
        ) from exc
    from trainer.torch_backend import TorchModel

    return TorchModel(config, n_features, n_classes, seeds)
