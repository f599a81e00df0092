"""The NumPy backend model: a :class:`MultiLayerNet` and its optimizer.

Implements the :class:`trainer.backend.Model` protocol. Initial weights come
from :func:`trainer.init.initial_affine_params` with ``seeds.init`` (so the
torch backend starts from the same weights), cast to the config's dtype;
dropout masks come from a Generator seeded with ``seeds.dropout``. Nothing
uses the global NumPy RNG.
"""

from __future__ import annotations

import numpy as np

from trainer.config import TrainConfig
from trainer.init import initial_affine_params, layer_sizes
from trainer.numpy_backend.layers import softmax_cross_entropy
from trainer.numpy_backend.network import MultiLayerNet
from trainer.numpy_backend.optimizers import make_optimizer
from trainer.seeding import RunSeeds

__all__ = ["NumpyModel"]

#: Rows per forward pass in evaluate/predict (inference is per sample, so
#: chunking changes nothing but memory use).
EVAL_CHUNK = 4096


class NumpyModel:
    """One network of the config, trained with the config's optimizer.

    Args:
        config: The run configuration.
        n_features: Input width.
        n_classes: Number of classes.
        seeds: The run's random streams (``init`` and ``dropout`` are used).
    """

    def __init__(
        self, config: TrainConfig, n_features: int, n_classes: int, seeds: RunSeeds
    ) -> None:
        self.config = config
        self.dtype = np.dtype(config.dtype)
        affine = initial_affine_params(
            config, n_features, n_classes, np.random.default_rng(seeds.init)
        )
        self.network = MultiLayerNet(
            sizes=layer_sizes(config, n_features, n_classes),
            affine_params=[(w.astype(self.dtype), b.astype(self.dtype)) for w, b in affine],
            activation=config.activation,
            batchnorm=config.batchnorm,
            dropout_ratio=config.dropout_ratio,
            weight_decay=config.weight_decay,
            dtype=self.dtype,
            dropout_rng=np.random.default_rng(seeds.dropout),
        )
        # The optimizer updates all parameters at once through the flat arrays;
        # the gradients are scratch, rewritten by every backward pass.
        self.optimizer = make_optimizer(
            config.optimizer, lr=config.lr, momentum=config.momentum, overwrite_grads=True
        )
        self._flat_params = {"params": self.network.flat_params}
        self._flat_grads = {"params": self.network.flat_grads}

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """Forward, backward and one optimizer update; the batch's loss
        (cross-entropy plus the weight decay term, before the update)."""
        x = np.asarray(x, dtype=self.dtype)
        loss = self.network.loss(x, y, train=True)
        self.network.backward()
        self.optimizer.update(self._flat_params, self._flat_grads)
        return loss

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Inference-mode logits, shape (n, n_classes), the config's dtype."""
        x = np.asarray(x, dtype=self.dtype)
        if len(x) <= EVAL_CHUNK:
            return self.network.predict(x, train=False)
        return np.concatenate(
            [
                self.network.predict(x[i : i + EVAL_CHUNK], train=False)
                for i in range(0, len(x), EVAL_CHUNK)
            ]
        )

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Inference-mode mean cross-entropy (no decay term) and accuracy."""
        y = np.asarray(y)
        if len(y) == 0:
            return float("nan"), float("nan")
        logits = self.predict(x)
        _, loss = softmax_cross_entropy(logits, y)
        accuracy = np.count_nonzero(np.argmax(logits, axis=1) == y) / len(y)
        return float(loss), float(accuracy)
