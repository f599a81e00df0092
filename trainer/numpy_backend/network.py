"""The multi-layer network of the "training techniques" chapter, in NumPy.

Per hidden layer ``Affine -> [BatchNorm] -> activation -> [Dropout]``; the
last layer is ``Affine -> SoftmaxWithLoss``. The loss is the mean
cross-entropy plus ``weight_decay / 2 * sum(W**2)`` over the Affine weights
only (not biases, gamma or beta); their gradients get ``weight_decay * W``.

All parameters live in one flat array (``flat_params``) and all gradients
in another (``flat_grads``); ``params`` and ``grads`` are dicts of views into
them named ``W1, b1, gamma1, beta1, ..., W{L}, b{L}``. The Affine weights come
first in the flat arrays, so the decay term and its gradient are one
operation each, and an element-wise optimizer can update the whole network
with a single call on the flat arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import DTypeLike

from trainer.numpy_backend.layers import (
    Affine,
    BatchNorm,
    Dropout,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
    Tanh,
    update_running_stats,
)

__all__ = ["ACTIVATION_LAYERS", "MultiLayerNet"]

ACTIVATION_LAYERS = {"relu": Relu, "sigmoid": Sigmoid, "tanh": Tanh}

Layer = Affine | BatchNorm | Relu | Sigmoid | Tanh | Dropout


class MultiLayerNet:
    """A fully connected network with optional batch norm, dropout and weight decay.

    Args:
        sizes: ``[n_features, *hidden_sizes, n_classes]``
            (:func:`trainer.init.layer_sizes`).
        affine_params: The initial ``(W, b)`` of every Affine layer, W of
            shape (n_in, n_out) (:func:`trainer.init.initial_affine_params`);
            copied (and cast to ``dtype``).
        activation: ``relu``, ``sigmoid`` or ``tanh``.
        batchnorm: Batch norm between every hidden Affine and its activation
            (gamma starts at 1, beta at 0, running mean 0, running var 1).
        dropout_ratio: Inverted dropout after every hidden activation; 0
            disables it.
        weight_decay: L2 strength lambda >= 0.
        dtype: float32 for training, float64 for gradient checks.
        dropout_rng: The Generator of the dropout masks (needed when
            ``dropout_ratio > 0``).

    Attributes:
        running_mean, running_var: Every batch-norm layer's running
            statistics side by side (each layer's are views into them);
            empty without batch norm.
    """

    def __init__(
        self,
        *,
        sizes: Sequence[int],
        affine_params: Sequence[tuple[np.ndarray, np.ndarray]],
        activation: str = "relu",
        batchnorm: bool = False,
        dropout_ratio: float = 0.0,
        weight_decay: float = 0.0,
        dtype: DTypeLike = np.float32,
        dropout_rng: np.random.Generator | None = None,
    ) -> None:
        sizes = [int(s) for s in sizes]
        n_affine = len(sizes) - 1
        if n_affine < 1:
            raise ValueError(f"sizes: got {sizes!r}; expected at least [n_features, n_classes]")
        if activation not in ACTIVATION_LAYERS:
            raise ValueError(
                f"activation: got {activation!r}; allowed: {', '.join(ACTIVATION_LAYERS)}"
            )
        if len(affine_params) != n_affine:
            raise ValueError(
                f"affine_params: got {len(affine_params)} (W, b) pairs; sizes {sizes} "
                f"need {n_affine}"
            )
        if weight_decay < 0:
            raise ValueError(f"weight_decay: got {weight_decay!r}; expected a number >= 0")
        self.sizes = sizes
        self.activation = activation
        self.batchnorm = bool(batchnorm)
        self.dropout_ratio = float(dropout_ratio)
        self.weight_decay = float(weight_decay)
        self.dtype = np.dtype(dtype)

        # Flat layout: every W, then every b, then gamma/beta of each BN layer.
        shapes: list[tuple[str, tuple[int, ...]]] = []
        for i in range(n_affine):
            shapes.append((f"W{i + 1}", (sizes[i], sizes[i + 1])))
        for i in range(n_affine):
            shapes.append((f"b{i + 1}", (sizes[i + 1],)))
        if self.batchnorm:
            for i in range(n_affine - 1):
                shapes.append((f"gamma{i + 1}", (sizes[i + 1],)))
                shapes.append((f"beta{i + 1}", (sizes[i + 1],)))
        total = sum(int(np.prod(shape)) for _, shape in shapes)
        self.flat_params = np.zeros(total, dtype=self.dtype)
        self.flat_grads = np.zeros(total, dtype=self.dtype)
        self.n_weights = sum(sizes[i] * sizes[i + 1] for i in range(n_affine))
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        offset = 0
        for name, shape in shapes:
            size = int(np.prod(shape))
            self.params[name] = self.flat_params[offset : offset + size].reshape(shape)
            self.grads[name] = self.flat_grads[offset : offset + size].reshape(shape)
            offset += size

        for i, (w, b) in enumerate(affine_params):
            w_shape, b_shape = self.params[f"W{i + 1}"].shape, self.params[f"b{i + 1}"].shape
            if np.shape(w) != w_shape or np.shape(b) != b_shape:
                raise ValueError(
                    f"affine_params[{i}]: got W {np.shape(w)} and b {np.shape(b)}; "
                    f"sizes {sizes} need W {w_shape} and b {b_shape}"
                )
            self.params[f"W{i + 1}"][...] = w
            self.params[f"b{i + 1}"][...] = b
        if self.batchnorm:
            for i in range(n_affine - 1):
                self.params[f"gamma{i + 1}"][...] = 1

        # Batch norm's running statistics and each step's batch statistics, all
        # layers side by side, so one call updates every layer's running values.
        n_norm = sum(sizes[1:-1]) if self.batchnorm else 0
        self.running_mean = np.zeros(n_norm, dtype=self.dtype)
        self.running_var = np.ones(n_norm, dtype=self.dtype)
        self._batch_mean = np.zeros(n_norm, dtype=self.dtype)
        self._batch_var = np.zeros(n_norm, dtype=self.dtype)
        norm_offsets = np.cumsum([0, *sizes[1:-1]])

        self.layers: list[Layer] = []
        self.dropout_layers: list[Dropout] = []
        self.batchnorm_layers: list[BatchNorm] = []
        for i in range(1, n_affine + 1):
            self.layers.append(
                Affine(
                    self.params[f"W{i}"],
                    self.params[f"b{i}"],
                    dW=self.grads[f"W{i}"],
                    db=self.grads[f"b{i}"],
                    input_grad=i > 1,
                )
            )
            if i == n_affine:
                break
            if self.batchnorm:
                lo, hi = norm_offsets[i - 1], norm_offsets[i]
                bn = BatchNorm(
                    self.params[f"gamma{i}"],
                    self.params[f"beta{i}"],
                    dgamma=self.grads[f"gamma{i}"],
                    dbeta=self.grads[f"beta{i}"],
                    running_mean=self.running_mean[lo:hi],
                    running_var=self.running_var[lo:hi],
                    batch_stats=(self._batch_mean[lo:hi], self._batch_var[lo:hi]),
                )
                self.layers.append(bn)
                self.batchnorm_layers.append(bn)
            # ReLU then dropout: the dropout mask carries the ReLU's gradient mask.
            fold = activation == "relu" and self.dropout_ratio > 0
            if fold:
                self.layers.append(Relu(grad_mask_downstream=True))
            else:
                self.layers.append(ACTIVATION_LAYERS[activation]())
            if self.dropout_ratio > 0:
                dropout = Dropout(self.dropout_ratio, dropout_rng, relu_mask=fold)
                self.layers.append(dropout)
                self.dropout_layers.append(dropout)
        self.last_layer = SoftmaxWithLoss()
        self._decay_scratch: np.ndarray | None = None

    def predict(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Class scores (logits), shape (batch, n_classes).

        ``train=True`` uses batch statistics and draws dropout masks (and
        caches for :meth:`backward`); ``train=False`` is inference mode.
        """
        m = x.shape[0]
        for layer in self.layers:
            x = layer.forward(x, train)
        if train and self.batchnorm_layers:
            update_running_stats(
                self.running_mean, self.running_var, self._batch_mean, self._batch_var, m
            )
        return x

    def decay_loss(self) -> float:
        """``weight_decay / 2 * sum(W**2)`` over the Affine weights."""
        if self.weight_decay == 0.0:
            return 0.0
        weights = self.flat_params[: self.n_weights]
        return 0.5 * self.weight_decay * float(np.dot(weights, weights))

    def loss(self, x: np.ndarray, t: np.ndarray, train: bool = True) -> float:
        """Mean cross-entropy plus the weight decay term."""
        logits = self.predict(x, train)
        return float(self.last_layer.forward(logits, t, train)) + self.decay_loss()

    def loss_and_gradient(
        self, x: np.ndarray, t: np.ndarray
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Training-mode loss and the gradient of every parameter.

        Returns:
            ``(loss, grads)``: the loss with the decay term, and :attr:`grads`
            (views into :attr:`flat_grads`, overwritten by the next call).
        """
        loss = self.loss(x, t, train=True)
        self.backward()
        return loss, self.grads

    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """The gradient of :meth:`loss` (training mode) for every parameter."""
        return self.loss_and_gradient(x, t)[1]

    def backward(self) -> None:
        """Back-propagate the last training-mode :meth:`loss` into :attr:`grads`."""
        dout = self.last_layer.backward(1.0)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        if self.weight_decay != 0.0:
            n = self.n_weights
            if self._decay_scratch is None:
                self._decay_scratch = np.empty(n, dtype=self.dtype)
            decay = np.multiply(self.flat_params[:n], self.weight_decay, out=self._decay_scratch)
            self.flat_grads[:n] += decay
