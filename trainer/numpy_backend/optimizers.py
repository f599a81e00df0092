"""Optimizers with exactly the update rules of :mod:`trainer.config`.

``g`` is the gradient (already including ``weight_decay * W`` for Affine
weights); every update is element-wise and in place::

    sgd:       W -= lr * g
    momentum:  v = momentum * v - lr * g;  W += v
    nesterov:  v = momentum * v - lr * g;  W += momentum * v - lr * g
    adagrad:   h += g * g;  W -= lr * g / (sqrt(h) + 1e-7)
    rmsprop:   h = 0.99 * h + 0.01 * g * g;  W -= lr * g / (sqrt(h) + 1e-7)
    adam:      t += 1;  m += (1 - 0.9) * (g - m);  v += (1 - 0.999) * (g * g - v)
               W -= lr * sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (sqrt(v) + 1e-7)

``update(params, grads)`` takes dicts of arrays with the same keys; state
(v, h, m) is kept per key and allocated on first use, in the parameter's
dtype. Because the rules are element-wise, passing one flat array of all
parameters (see :class:`~trainer.numpy_backend.network.MultiLayerNet`) gives
the same result as passing them one by one, in a few NumPy calls per step.
Scalars are Python floats, so float32 parameters stay float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = [
    "SGD",
    "AdaGrad",
    "Adam",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "RMSprop",
    "make_optimizer",
]

EPS = 1e-7


class Optimizer:
    """Base class: per-key state and scratch buffers."""

    def __init__(self, *, lr: float) -> None:
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr: got {lr!r}; expected a number > 0")
        self.lr = float(lr)
        self._scratch: dict[str, np.ndarray] = {}

    def update(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        """Apply one step to every array of ``params`` in place."""
        self._begin_step()
        for key, p in params.items():
            self._update_one(key, p, grads[key])

    def _begin_step(self) -> None:
        pass

    def _update_one(self, key: str, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    def _tmp(self, key: str, like: np.ndarray) -> np.ndarray:
        buf = self._scratch.get(key)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
            buf = self._scratch[key] = np.empty_like(like)
        return buf


def _state(store: dict[str, np.ndarray], key: str, like: np.ndarray) -> np.ndarray:
    value = store.get(key)
    if value is None:
        value = store[key] = np.zeros_like(like)
    return value


class SGD(Optimizer):
    """``W -= lr * g``.

    Args:
        lr: The learning rate.
        overwrite_grads: Compute the step in the gradient arrays themselves,
            ``g *= -lr; W += g`` (the same values, one array fewer to write);
            for callers that do not read the gradients after the update.
    """

    def __init__(self, *, lr: float, overwrite_grads: bool = False) -> None:
        super().__init__(lr=lr)
        self.overwrite_grads = bool(overwrite_grads)

    def _update_one(self, key: str, p: np.ndarray, g: np.ndarray) -> None:
        if self.overwrite_grads:
            # -(lr * g) rounds like lr * g, and W + (-s) is exactly W - s.
            g *= -self.lr
            p += g
            return
        step = np.multiply(g, self.lr, out=self._tmp(key, p))
        p -= step


class Momentum(Optimizer):
    """``v = momentum * v - lr * g;  W += v``."""

    def __init__(self, *, lr: float, momentum: float = 0.9) -> None:
        super().__init__(lr=lr)
        self.momentum = float(momentum)
        self.v: dict[str, np.ndarray] = {}

    def _update_one(self, key: str, p: np.ndarray, g: np.ndarray) -> None:
        v = _state(self.v, key, p)
        v *= self.momentum
        v -= np.multiply(g, self.lr, out=self._tmp(key, p))
        p += v


class Nesterov(Optimizer):
    """``v = momentum * v - lr * g;  W += momentum * v - lr * g``."""

    def __init__(self, *, lr: float, momentum: float = 0.9) -> None:
        super().__init__(lr=lr)
        self.momentum = float(momentum)
        self.v: dict[str, np.ndarray] = {}

    def _update_one(self, key: str, p: np.ndarray, g: np.ndarray) -> None:
        v = _state(self.v, key, p)
        lr_g = np.multiply(g, self.lr, out=self._tmp(key, p))
        v *= self.momentum
        v -= lr_g
        p -= lr_g
        np.multiply(v, self.momentum, out=lr_g)
        p += lr_g


class AdaGrad(Optimizer):
    """``h += g * g;  W -= lr * g / (sqrt(h) + 1e-7)``."""

    def __init__(self, *, lr: float) -> None:
        super().__init__(lr=lr)
        self.h: dict[str, np.ndarray] = {}

    def _update_one(self, key: str, p: np.ndarray, g: np.ndarray) -> None:
        h = _state(self.h, key, p)
        tmp = np.square(g, out=self._tmp(key, p))
        h += tmp
        np.sqrt(h, out=tmp)
        tmp += EPS
        np.divide(g, tmp, out=tmp)
        tmp *= self.lr
        p -= tmp


class RMSprop(Optimizer):
    """``h = 0.99 * h + 0.01 * g * g;  W -= lr * g / (sqrt(h) + 1e-7)``."""

    decay_rate = 0.99

    def __init__(self, *, lr: float) -> None:
        super().__init__(lr=lr)
        self.h: dict[str, np.ndarray] = {}

    def _update_one(self, key: str, p: np.ndarray, g: np.ndarray) -> None:
        h = _state(self.h, key, p)
        tmp = np.square(g, out=self._tmp(key, p))
        tmp *= 1.0 - self.decay_rate
        h *= self.decay_rate
        h += tmp
        np.sqrt(h, out=tmp)
        tmp += EPS
        np.divide(g, tmp, out=tmp)
        tmp *= self.lr
        p -= tmp


class Adam(Optimizer):
    """Adam with the bias correction folded into the step size.

    ``t += 1;  m += (1 - 0.9) * (g - m);  v += (1 - 0.999) * (g * g - v)``;
    ``W -= lr * sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (sqrt(v) + 1e-7)``.
    ``t`` counts calls of :meth:`update`.
    """

    beta1 = 0.9
    beta2 = 0.999

    def __init__(self, *, lr: float) -> None:
        super().__init__(lr=lr)
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}
        self._lr_t = 0.0

    def _begin_step(self) -> None:
        self.t += 1
        t = self.t
        self._lr_t = self.lr * math.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)

    def _update_one(self, key: str, p: np.ndarray, g: np.ndarray) -> None:
        m = _state(self.m, key, p)
        v = _state(self.v, key, p)
        tmp = np.subtract(g, m, out=self._tmp(key, p))
        tmp *= 1.0 - self.beta1
        m += tmp
        np.square(g, out=tmp)
        tmp -= v
        tmp *= 1.0 - self.beta2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += EPS
        np.divide(m, tmp, out=tmp)
        tmp *= self._lr_t
        p -= tmp


def make_optimizer(
    name: str, *, lr: float, momentum: float = 0.9, overwrite_grads: bool = False
) -> Optimizer:
    """The optimizer called ``name`` (one of :data:`trainer.config.OPTIMIZERS`).

    ``overwrite_grads`` lets an optimizer use the gradient arrays as scratch
    (only :class:`SGD` does); pass it when nothing reads them after the update.
    """
    if name == "sgd":
        return SGD(lr=lr, overwrite_grads=overwrite_grads)
    if name == "momentum":
        return Momentum(lr=lr, momentum=momentum)
    if name == "nesterov":
        return Nesterov(lr=lr, momentum=momentum)
    if name == "adagrad":
        return AdaGrad(lr=lr)
    if name == "rmsprop":
        return RMSprop(lr=lr)
    if name == "adam":
        return Adam(lr=lr)
    raise ValueError(
        f"optimizer: got {name!r}; allowed: sgd, momentum, nesterov, adagrad, rmsprop, adam"
    )
