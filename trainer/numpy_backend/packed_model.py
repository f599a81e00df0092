"""K networks of one architecture trained as one stacked NumPy computation.

This is the NumPy side of trial packing (:mod:`trainer.packed`). Parameters,
gradients and optimizer state are (K, ...) stacks - one flat (K, n_params)
array with named views, e.g. model ``k``'s weights ``W1[k]`` of a (K, n_in,
n_out) view - and per-model hyperparameters (lr, weight decay, dropout ratio,
momentum) are (K, 1) columns that broadcast over them, so an optimizer step
is a few element-wise calls for all K models. Activations are batch-major,
(batch, K, n): element-wise work and sums over the batch then run over long
contiguous rows, while one ``np.matmul`` on transposed views runs each
model's matrix product as its own (strided) BLAS call.

Exactness contract: model ``k`` of a pack computes what
:class:`~trainer.numpy_backend.model.NumpyModel` computes for its config
alone - its parameters, batch-norm statistics, dropout masks and evaluation
results are the same numbers:

* the same flat parameter layout and initial weights
  (``initial_affine_params`` with its own ``seeds.init``, cast to the dtype);
* the same element-wise operations in the same order with the same scalars
  (a Python float and a column of that float cast to the dtype round alike);
  in-place variants only where they give the same values;
* the same sums: over the batch as a matrix-vector product with ones, per
  model (BLAS adds a strided view in the same order as a contiguous array),
  ``einsum`` sums of products over the batch axis of the stack (the same
  order as over axis 0 of one model's array); a width of one (where NumPy
  and BLAS take other paths) runs per model on contiguous copies;
* each model's matrix products with the shapes the single model uses - its
  batch, and in evaluation all rows of a split in chunks of
  :data:`~trainer.numpy_backend.model.EVAL_CHUNK` - because BLAS may round a
  product differently when its shape changes (evaluation therefore groups
  models, never rows); products with a dimension of one (matrix-vector
  paths) run per model;
* dropout masks from the model's own ``seeds.dropout`` Generator, one
  :func:`~trainer.numpy_backend.layers.dropout_words` draw (16-bit words from
  one ``bit_generator.random_raw`` call) per dropout layer and step, compared
  with the same threshold as :class:`~trainer.numpy_backend.layers.Dropout`
  (a model with ratio 0 draws nothing; its mask is all ones);
* the ReLU gradient mask ``out > 0`` is read from the layer's output after
  dropout: where dropout kept a unit that output is ``relu * scale``, positive
  exactly when ``relu`` is, and where it dropped one the gradient is already
  ``dout * 0``, which multiplying by 0 or 1 leaves unchanged;
* batch norm per model over its own batch; running statistics updated only
  for batches of more than one sample; inference with the running statistics;
* weight decay added to the gradient only for models with a nonzero decay.

The returned training losses are the exception: the cross-entropy and decay
terms of all models are summed at once, in an order that may round
differently from the single model's (the History never records training-step
losses), but they are finite exactly when the single model's are, which is
all the training loop reads (see :meth:`PackedNumpyModel.train_step`).

On this machine's OpenBLAS the packed Histories are bit-identical to the
single model's; the tests allow float tolerance for other BLAS builds.

Speed: buffers for each batch size are allocated on first use and reused;
element-wise work is in place; evaluation runs a few models at a time so its
(rows, models, units) arrays stay in the CPU cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from trainer.config import TrainConfig
from trainer.init import initial_affine_params, layer_sizes
from trainer.numpy_backend.layers import dropout_threshold, dropout_words
from trainer.numpy_backend.model import EVAL_CHUNK
from trainer.seeding import RunSeeds

__all__ = ["PackedNumpyModel"]

BN_MOMENTUM = 0.9
BN_EPS = 1e-5
OPT_EPS = 1e-7
RMSPROP_DECAY = 0.99
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999

#: Evaluation handles as many models at once as keep one layer's
#: (models, rows, units) activations under this many bytes.
EVAL_BYTES = 1 << 19

# -- stacked primitives on the batch-major (batch, K, n) layout -------------------
#
# Each computes for every model k exactly what the single model computes on its
# contiguous (batch, n) array. A dimension of 1 makes NumPy and BLAS take other
# paths (pairwise sums of one column, matrix-vector products) whose rounding a
# strided stack does not reproduce, so those cases run per model on contiguous
# copies, exactly as the single model does.


def _sum_rows(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.dot(ones, x[:, k])`` per model: (batch, K, n) -> (K, n).

    The single model's sums over the batch (a BLAS matrix-vector product with
    a vector of ones); on a strided (batch, n) view BLAS adds in the same
    order as on the contiguous array, except for a width of one. From a width
    of 4, one ``np.matmul`` of a row of ones with the (K, batch, n) view runs
    those K products in C, adding in the same order (checked here on batches
    of 2-69 rows and up to 1,000, widths 4-39 and up to 784, float32 and
    float64); widths 1-3 round differently, so they keep the loop.
    """
    k, n = x.shape[1], x.shape[2]
    if out is None:
        out = np.empty((k, n), x.dtype)
    ones = np.ones(x.shape[0], x.dtype)
    if n > 3:
        np.matmul(ones[None, :], x.transpose(1, 0, 2), out=out[:, None, :])
        return out
    for model in range(k):
        xk = x[:, model] if n > 1 else np.ascontiguousarray(x[:, model])
        np.dot(ones, xk, out=out[model])
    return out


def _dot_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``np.einsum("ij,ij->j", x[:, k], y[:, k])`` per model: -> (K, n)."""
    if x.shape[2] > 1:
        return np.einsum("ikj,ikj->kj", x, y)
    return np.stack(
        [
            np.einsum("ij,ij->j", np.ascontiguousarray(x[:, k]), np.ascontiguousarray(y[:, k]))
            for k in range(x.shape[1])
        ]
    )


def _sum_classes(zt: np.ndarray) -> np.ndarray:
    """``np.add.reduce(zt[:, :, k], axis=0)`` per model: (C, rows, K) -> (rows, K)."""
    if zt.shape[1] > 1:
        return np.add.reduce(zt, axis=0)
    # One row: add.reduce sums its C values pairwise.
    return np.stack([np.add.reduce(np.ascontiguousarray(zt[:, 0, k])) for k in range(zt.shape[2])])[
        None, :
    ]


def _matmul(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """``out[:, k] = x[:, k] @ w[k]``, x (rows, K, n_in) or shared (rows, n_in)."""
    rows, n_in, n_out = out.shape[0], w.shape[1], w.shape[2]
    if min(rows, n_in, n_out) > 1:
        np.matmul(x if x.ndim == 2 else x.transpose(1, 0, 2), w, out=out.transpose(1, 0, 2))
        return
    for k in range(w.shape[0]):
        xk = x if x.ndim == 2 else np.ascontiguousarray(x[:, k])
        out[:, k] = np.matmul(xk, np.ascontiguousarray(w[k]))


def _matmul_tn(x: np.ndarray, dy: np.ndarray, out: np.ndarray) -> None:
    """``out[k] = x[:, k].T @ dy[:, k]`` (the Affine weight gradient)."""
    rows, n_in, n_out = x.shape[0], x.shape[2], dy.shape[2]
    if min(rows, n_in, n_out) > 1:
        np.matmul(x.transpose(1, 2, 0), dy.transpose(1, 0, 2), out=out)
        return
    tmp = np.empty(out.shape[1:], out.dtype)
    for k in range(out.shape[0]):
        np.matmul(np.ascontiguousarray(x[:, k]).T, np.ascontiguousarray(dy[:, k]), out=tmp)
        out[k] = tmp


class _Buffers:
    """Scratch arrays of one batch size, batch-major (allocated once, reused)."""

    def __init__(self, model: PackedNumpyModel, batch: int) -> None:
        k, dtype = model.n_models, model.dtype
        sizes = model.sizes
        hidden = sizes[1:-1]
        n_classes = sizes[-1]
        # Per hidden layer: the Affine output ``a`` (with batch norm it is
        # centred in place and kept as BN's xc), the layer output ``h``
        # (BN -> activation -> dropout in place; ``a`` itself without BN),
        # the gradient arriving from above, and the activation's slope (the
        # ReLU mask is rebuilt there in the backward pass).
        self.a = [np.empty((batch, k, n), dtype) for n in hidden]
        self.h = [np.empty((batch, k, n), dtype) for n in hidden] if model.batchnorm else self.a
        self.grad = [np.empty((batch, k, n), dtype) for n in hidden]
        self.slope = [np.empty((batch, k, n), dtype) for n in hidden]
        # Dropout: each model's keep flags, model-major (K, batch, n) as drawn
        # (rows of models without dropout stay True), and the scaled mask.
        self.keep: list[np.ndarray] = []
        self.mask: list[np.ndarray] = []
        if model.dropout:
            for n in hidden:
                self.keep.append(np.ones((k, batch, n), bool))
                self.mask.append(np.empty((batch, k, n), dtype))
        self.logits = np.empty((batch, k, n_classes), dtype)
        self.zt = np.empty((n_classes, batch, k), dtype)
        self.dlogits = np.empty((batch, k, n_classes), dtype)
        self.label_scores = np.empty((k, batch), dtype)
        # Flat positions of (model k, sample b, class 0) in zt, (K, batch)
        # ordered, and of (sample b, model k, class 0) in dlogits, (batch, K).
        b = np.arange(batch, dtype=np.intp)
        m = np.arange(k, dtype=np.intp)
        self.score_base = b[None, :] * k + m[:, None]  # + t * batch * k
        self.label_base = (b[:, None] * k + m[None, :]) * n_classes  # + t


class PackedNumpyModel:
    """K NumPy networks of one architecture, stacked along a model axis.

    Implements :class:`trainer.packed.PackedModel`. Parameters are (K, ...)
    stacks; activations are batch-major, (batch, K, n), so that the
    element-wise work and the sums over the batch run over long contiguous
    rows, while each model's matrix product is a strided BLAS call.

    Args:
        configs: One config per model; all :func:`trainer.packed.packable`
            with each other (same architecture, optimizer, batch size, dtype).
        n_features: Input width.
        n_classes: Number of classes.
        seeds: The run seeds of each model (``init`` and ``dropout`` are used).
    """

    def __init__(
        self,
        configs: Sequence[TrainConfig],
        n_features: int,
        n_classes: int,
        seeds: Sequence[RunSeeds],
    ) -> None:
        if not configs or len(configs) != len(seeds):
            raise ValueError("PackedNumpyModel: need one RunSeeds per config and at least one")
        first = configs[0]
        self.dtype = np.dtype(first.dtype)
        self.activation = first.activation
        self.batchnorm = first.batchnorm
        self.optimizer = first.optimizer
        self.sizes = layer_sizes(first, n_features, n_classes)
        sizes = self.sizes
        n_affine = len(sizes) - 1
        self.n_affine = n_affine
        k = len(configs)

        # The flat layout of MultiLayerNet: every W, every b, then gamma/beta.
        self._layout: list[tuple[str, int, tuple[int, ...]]] = []
        offset = 0
        for i in range(n_affine):
            self._layout.append((f"W{i + 1}", offset, (sizes[i], sizes[i + 1])))
            offset += sizes[i] * sizes[i + 1]
        for i in range(n_affine):
            self._layout.append((f"b{i + 1}", offset, (sizes[i + 1],)))
            offset += sizes[i + 1]
        if self.batchnorm:
            for i in range(n_affine - 1):
                for name in ("gamma", "beta"):
                    self._layout.append((f"{name}{i + 1}", offset, (sizes[i + 1],)))
                    offset += sizes[i + 1]
        self.n_params = offset
        self.n_weights = sum(sizes[i] * sizes[i + 1] for i in range(n_affine))

        params = np.zeros((k, offset), self.dtype)
        views = self._views(params)
        for m, config in enumerate(configs):
            affine = initial_affine_params(
                config, n_features, n_classes, np.random.default_rng(seeds[m].init)
            )
            for i, (w, b) in enumerate(affine):
                views[f"W{i + 1}"][m] = w.astype(self.dtype)
                views[f"b{i + 1}"][m] = b.astype(self.dtype)
        if self.batchnorm:
            for i in range(n_affine - 1):
                views[f"gamma{i + 1}"][...] = 1
        self.flat_params = params
        hidden = sizes[1:-1]
        self.running_mean = [np.zeros((k, n), self.dtype) for n in hidden]
        self.running_var = [np.ones((k, n), self.dtype) for n in hidden]

        self.lr_values = [c.lr for c in configs]
        self.weight_decays = [c.weight_decay for c in configs]
        self.momentums = [c.momentum for c in configs]
        self.dropout_ratios = [c.dropout_ratio for c in configs]
        self.dropout_rngs: list[np.random.Generator | None] = [
            np.random.default_rng(s.dropout) if c.dropout_ratio > 0 else None
            for c, s in zip(configs, seeds, strict=True)
        ]
        self.state: list[np.ndarray] = []
        if self.optimizer in ("momentum", "nesterov", "adagrad", "rmsprop"):
            self.state = [np.zeros_like(params)]
        elif self.optimizer == "adam":
            self.state = [np.zeros_like(params), np.zeros_like(params)]
        self.step_count = 0
        self._rebuild()

    # -- stacking ----------------------------------------------------------------

    @property
    def n_models(self) -> int:
        """How many models the stack holds now."""
        return self.flat_params.shape[0]

    def _views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Named views into a (K, n_params) array: W (K, n_in, n_out), vectors (K, n)."""
        k = flat.shape[0]
        out = {}
        for name, offset, shape in self._layout:
            size = int(np.prod(shape))
            out[name] = flat[:, offset : offset + size].reshape(k, *shape)
        return out

    def _rebuild(self) -> None:
        """(Re)make the views, gradients, hyperparameter columns and buffers."""
        dtype = self.dtype
        self.flat_grads = np.zeros_like(self.flat_params)
        self._scratch = np.empty_like(self.flat_params)
        self.params = self._views(self.flat_params)
        self.grads = self._views(self.flat_grads)

        def column(values: list[float]) -> np.ndarray:
            return np.array(values, dtype=dtype).reshape(-1, 1)

        self.lr = column(self.lr_values)
        self.neg_lr = -self.lr
        self.momentum = column(self.momentums)
        self.wd = column(self.weight_decays)
        self.decay_rows = [m for m, wd in enumerate(self.weight_decays) if wd != 0.0]
        self.dropout = any(p > 0.0 for p in self.dropout_ratios)
        # Dropout's 1 / (1 - p) per model (1 without dropout), tiled (K, n) per width.
        scale = np.array(
            [1.0 / (1.0 - p) if p > 0.0 else 1.0 for p in self.dropout_ratios], dtype=dtype
        )
        self.drop_scale = {
            n: np.ascontiguousarray(np.broadcast_to(scale[:, None], (len(scale), n)))
            for n in self.sizes[1:-1]
        }
        self.drop_threshold = [dropout_threshold(p) for p in self.dropout_ratios]
        self.drop_threshold_column = np.array(self.drop_threshold, np.uint16).reshape(-1, 1)
        self.all_dropout = all(p > 0.0 for p in self.dropout_ratios)
        self._buffers: dict[int, _Buffers] = {}

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only the models at ``rows`` (positions in the current stack), in order."""
        rows = [int(r) for r in rows]
        index = np.asarray(rows, dtype=np.intp)
        self.flat_params = self.flat_params[index]
        self.state = [s[index] for s in self.state]
        self.running_mean = [r[index] for r in self.running_mean]
        self.running_var = [r[index] for r in self.running_var]
        for name in ("lr_values", "weight_decays", "momentums", "dropout_ratios", "dropout_rngs"):
            values = getattr(self, name)
            setattr(self, name, [values[m] for m in rows])
        self._rebuild()

    def _buffers_for(self, batch: int) -> _Buffers:
        buffers = self._buffers.get(batch)
        if buffers is None:
            buffers = self._buffers[batch] = _Buffers(self, batch)
        return buffers

    # -- training ----------------------------------------------------------------

    def train_step(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Forward, backward and one optimizer update of every model.

        Args:
            x: (K, batch, n_features) inputs, model ``k``'s batch in ``x[k]``.
                Read during this call only.
            y: (K, batch) integer labels.

        Returns:
            (K,) float64 losses (cross-entropy plus the decay term, before the
            update): each equal to what ``NumpyModel.train_step`` returns up
            to the order of summation of the batch's cross-entropy terms, and
            finite exactly when it is.
        """
        # A batch-major view; the products read each model's rows from it.
        xb = np.asarray(x, dtype=self.dtype).transpose(1, 0, 2)
        t = np.asarray(y)
        buf = self._buffers_for(t.shape[1])
        losses = self._forward(xb, t, buf).astype(np.float64)
        if self.decay_rows:
            losses += self._decay_losses()
        self._backward(xb, t, buf)
        self._update()
        return losses

    def _decay_losses(self) -> np.ndarray:
        """``0.5 * wd * float(dot(W, W))`` per model (0 without decay), float64.

        The sums of squares of all models are taken at once; a model's is
        recomputed with its own ``np.dot`` (as the single model sums it) only
        when it is near the float maximum, where the order of summation could
        decide whether it overflows.
        """
        weights = self.flat_params[:, : self.n_weights]
        squares = np.einsum("kp,kp->k", weights, weights).astype(np.float64)
        limit = np.finfo(self.dtype).max / 4
        for m in np.flatnonzero(~(squares < limit)):
            squares[m] = float(np.dot(weights[m], weights[m]))
        out = np.zeros(len(squares))
        rows = self.decay_rows
        out[rows] = 0.5 * np.array([self.weight_decays[m] for m in rows]) * squares[rows]
        return out

    def _forward(self, x: np.ndarray, t: np.ndarray, buf: _Buffers) -> np.ndarray:
        """Training-mode forward of (batch, K, d) inputs; the (K,) mean cross-entropies."""
        params = self.params
        m = x.shape[0]
        h = x
        self._inv_std: list[np.ndarray] = []
        for i in range(self.n_affine - 1):
            a = buf.a[i]
            _matmul(h, params[f"W{i + 1}"], a)
            a += np.ascontiguousarray(params[f"b{i + 1}"])
            out = buf.h[i]
            if self.batchnorm:
                self._batchnorm(i, a, out, m)
            self._activate(out, buf.slope[i])
            if self.dropout:
                self._dropout(out, buf.keep[i], buf.mask[i])
            h = out
        logits = buf.logits
        _matmul(h, params[f"W{self.n_affine}"], logits)
        logits += np.ascontiguousarray(params[f"b{self.n_affine}"])
        return self._softmax_cross_entropy(logits, t, buf)

    def _batchnorm(self, i: int, a: np.ndarray, out: np.ndarray, m: int) -> None:
        """Training-mode batch norm of ``a`` into ``out``; ``a`` becomes x - mean."""
        mean = _sum_rows(a)
        mean *= 1.0 / m
        a -= mean
        var = _dot_rows(a, a)
        var *= 1.0 / m
        inv_std = var + BN_EPS
        np.sqrt(inv_std, out=inv_std)
        np.reciprocal(inv_std, out=inv_std)
        if m > 1:
            keep = BN_MOMENTUM
            running_mean, running_var = self.running_mean[i], self.running_var[i]
            running_mean *= keep
            mean *= 1.0 - keep
            running_mean += mean
            running_var *= keep
            var *= (1.0 - keep) * m / (m - 1)
            running_var += var
        np.multiply(a, self.params[f"gamma{i + 1}"] * inv_std, out=out)
        out += np.ascontiguousarray(self.params[f"beta{i + 1}"])
        self._inv_std.append(inv_std)

    def _activate(self, x: np.ndarray, slope: np.ndarray) -> None:
        """The activation in place; sigmoid and tanh keep their slope."""
        if self.activation == "relu":
            np.maximum(x, 0, out=x)
        elif self.activation == "sigmoid":
            np.negative(x, out=x)
            np.exp(x, out=x)
            x += 1
            np.reciprocal(x, out=x)
            np.subtract(1, x, out=slope)  # slope = (1 - out) * out
            slope *= x
        else:
            np.tanh(x, out=x)
            np.square(x, out=slope)  # slope = 1 - out**2
            np.subtract(1, slope, out=slope)

    def _dropout(self, x: np.ndarray, keep: np.ndarray, mask: np.ndarray) -> None:
        """Inverted dropout in place: one raw draw per model with p > 0."""
        shape = keep.shape[1:]
        rngs = self.dropout_rngs
        if self.all_dropout:
            words = np.stack([dropout_words(rng, shape) for rng in rngs])
            np.greater_equal(
                words.reshape(len(rngs), -1),
                self.drop_threshold_column,
                out=keep.reshape(len(rngs), -1),
            )
        else:
            for m, rng in enumerate(rngs):
                if rng is not None:
                    np.greater_equal(dropout_words(rng, shape), self.drop_threshold[m], out=keep[m])
        np.copyto(mask, keep.transpose(1, 0, 2))  # 0 or 1
        mask *= self.drop_scale[x.shape[2]]  # 0 or 1 / (1 - p)
        x *= mask

    def _softmax_cross_entropy(
        self, logits: np.ndarray, t: np.ndarray, buf: _Buffers
    ) -> np.ndarray:
        """Softmax (kept in ``buf.zt``, (C, batch, K)) and each model's mean cross-entropy."""
        m, k, _ = logits.shape
        zt = buf.zt
        np.copyto(zt, logits.transpose(2, 0, 1))
        zt -= np.maximum.reduce(zt, axis=0)
        np.take(zt.reshape(-1), buf.score_base + t * (m * k), out=buf.label_scores)
        np.exp(zt, out=zt)
        total = _sum_classes(zt)
        zt /= total
        np.log(total, out=total)
        return self._train_cross_entropy(total, buf, m)

    def _train_cross_entropy(self, log_totals: np.ndarray, buf: _Buffers, m: int) -> np.ndarray:
        """Each model's mean cross-entropy from (batch, K) terms, for the loss check.

        NumPy sums one model's terms pairwise; here all models are summed at
        once in batch order, which may round differently but is finite
        exactly when the pairwise sum is: the ``log_totals`` lie in
        [0, log C] (or are NaN) and the label scores are all <= 0, so a sum
        can only overflow if its value is near the float maximum - those
        rows (and only those) are summed again exactly.
        """
        label_scores = buf.label_scores  # (K, batch)
        loss = np.add.reduce(log_totals, axis=0)
        scores = np.add.reduce(label_scores, axis=1)
        exact = ~(np.abs(scores) < np.finfo(self.dtype).max / 4)
        loss -= scores
        loss *= 1.0 / m
        if exact.any():
            rows = np.flatnonzero(exact)
            loss[rows] = _mean_cross_entropy(
                np.ascontiguousarray(log_totals.T[rows]), label_scores[rows], m
            )
        return loss

    def _backward(self, x: np.ndarray, t: np.ndarray, buf: _Buffers) -> None:
        params, grads = self.params, self.grads
        m = x.shape[0]
        dout = buf.dlogits
        np.copyto(dout, buf.zt.transpose(1, 2, 0))
        flat = dout.reshape(-1)
        flat[buf.label_base + t.T] -= 1
        dout *= 1.0 / m
        for i in range(self.n_affine, 0, -1):
            inputs = x if i == 1 else buf.h[i - 2]
            _matmul_tn(inputs, dout, grads[f"W{i}"])
            _sum_rows(dout, grads[f"b{i}"])
            if i == 1:
                break
            j = i - 2  # the hidden layer below
            dx = buf.grad[j]
            # The transposed view, as Affine.backward multiplies by W.T: the
            # "NT" product rounds differently from "NN" with a copy on some
            # shapes (50x50 here), so both take the same one.
            _matmul(dout, params[f"W{i}"].transpose(0, 2, 1), dx)
            if self.dropout:
                dx *= buf.mask[j]
            if self.activation == "relu":
                np.greater(buf.h[j], 0, out=buf.slope[j])
            dx *= buf.slope[j]
            if self.batchnorm:
                self._batchnorm_backward(j, dx, buf.a[j], m)
            dout = dx
        if self.decay_rows:
            n = self.n_weights
            if len(self.decay_rows) == self.n_models:
                decay = np.multiply(self.flat_params[:, :n], self.wd, out=self._scratch[:, :n])
                self.flat_grads[:, :n] += decay
            else:
                for row in self.decay_rows:
                    decay = np.multiply(
                        self.flat_params[row, :n],
                        self.weight_decays[row],
                        out=self._scratch[row, :n],
                    )
                    self.flat_grads[row, :n] += decay

    def _batchnorm_backward(self, i: int, dout: np.ndarray, xc: np.ndarray, m: int) -> None:
        """Batch-norm backward; ``dout`` becomes the input gradient, ``xc`` scratch."""
        inv_std = self._inv_std[i]
        dbeta = _sum_rows(dout)
        dgamma = _dot_rows(dout, xc)
        dgamma *= inv_std
        self.grads[f"beta{i + 1}"][...] = dbeta
        self.grads[f"gamma{i + 1}"][...] = dgamma
        a = self.params[f"gamma{i + 1}"] * inv_std
        a_m = a * (1.0 / m)
        np.multiply(xc, a_m * inv_std * dgamma, out=xc)
        dout *= a
        dout -= xc
        dout -= np.multiply(a_m, dbeta, out=a_m)

    def _update(self) -> None:
        """One step of the optimizer on every model (rules in :mod:`trainer.config`)."""
        p, g = self.flat_params, self.flat_grads
        tmp = self._scratch
        name = self.optimizer
        if name == "sgd":
            # As NumpyModel's SGD: g *= -lr; W += g (the gradients are scratch).
            g *= self.neg_lr
            p += g
        elif name == "momentum":
            (v,) = self.state
            v *= self.momentum
            v -= np.multiply(g, self.lr, out=tmp)
            p += v
        elif name == "nesterov":
            (v,) = self.state
            np.multiply(g, self.lr, out=tmp)
            v *= self.momentum
            v -= tmp
            p -= tmp
            np.multiply(v, self.momentum, out=tmp)
            p += tmp
        elif name in ("adagrad", "rmsprop"):
            (h,) = self.state
            np.square(g, out=tmp)
            if name == "rmsprop":
                tmp *= 1.0 - RMSPROP_DECAY
                h *= RMSPROP_DECAY
            h += tmp
            np.sqrt(h, out=tmp)
            tmp += OPT_EPS
            np.divide(g, tmp, out=tmp)
            tmp *= self.lr
            p -= tmp
        else:  # adam
            m1, v = self.state
            self.step_count += 1
            t = self.step_count
            correction = math.sqrt(1.0 - ADAM_BETA2**t)
            lr_t = np.array(
                [lr * correction / (1.0 - ADAM_BETA1**t) for lr in self.lr_values],
                dtype=self.dtype,
            ).reshape(-1, 1)
            np.subtract(g, m1, out=tmp)
            tmp *= 1.0 - ADAM_BETA1
            m1 += tmp
            np.square(g, out=tmp)
            tmp -= v
            tmp *= 1.0 - ADAM_BETA2
            v += tmp
            np.sqrt(v, out=tmp)
            tmp += OPT_EPS
            np.divide(m1, tmp, out=tmp)
            tmp *= lr_t
            p -= tmp

    # -- inference ---------------------------------------------------------------

    def _model_groups(self, n_rows: int) -> list[tuple[int, int]]:
        rows = min(max(n_rows, 1), EVAL_CHUNK)
        width = max(self.sizes[1:])
        group = max(1, EVAL_BYTES // (rows * width * self.dtype.itemsize))
        k = self.n_models
        return [(b, min(b + group, k)) for b in range(0, k, group)]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Inference-mode logits of every model for shared inputs, (K, n, n_classes)."""
        x = np.ascontiguousarray(x, dtype=self.dtype)
        out = np.empty((self.n_models, len(x), self.sizes[-1]), self.dtype)
        for begin, end in self._model_groups(len(x)):
            out[begin:end] = self._predict_models(x, begin, end).transpose(1, 0, 2)
        return out

    def _predict_models(self, x: np.ndarray, begin: int, end: int) -> np.ndarray:
        """Logits (n, models, C) of models ``begin:end``, in chunks of EVAL_CHUNK
        rows like ``NumpyModel.predict``."""
        if len(x) <= EVAL_CHUNK:
            return self._predict_chunk(x, begin, end)
        return np.concatenate(
            [
                self._predict_chunk(x[i : i + EVAL_CHUNK], begin, end)
                for i in range(0, len(x), EVAL_CHUNK)
            ]
        )

    def _predict_chunk(self, x: np.ndarray, begin: int, end: int) -> np.ndarray:
        params = {name: p[begin:end] for name, p in self.params.items()}
        n, g = len(x), end - begin
        h = x
        for i in range(self.n_affine):
            w = params[f"W{i + 1}"]
            out = np.empty((n, g, w.shape[2]), self.dtype)
            _matmul(h, w, out)
            out += np.ascontiguousarray(params[f"b{i + 1}"])
            if i == self.n_affine - 1:
                return out
            if self.batchnorm:
                scale = self.running_var[i][begin:end] + BN_EPS
                np.sqrt(scale, out=scale)
                np.divide(params[f"gamma{i + 1}"], scale, out=scale)
                shift = self.running_mean[i][begin:end] * scale
                np.subtract(params[f"beta{i + 1}"], shift, out=shift)
                out *= scale
                out += shift
            if self.activation == "relu":
                np.maximum(out, 0, out=out)
            elif self.activation == "sigmoid":
                np.negative(out, out=out)
                np.exp(out, out=out)
                out += 1
                np.reciprocal(out, out=out)
            else:
                np.tanh(out, out=out)
            h = out
        raise AssertionError("unreachable")

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inference-mode mean cross-entropy (no decay term) and accuracy per model,
        each as ``NumpyModel.evaluate`` computes it.

        Returns:
            Two (K,) float64 arrays; NaN when ``y`` is empty.
        """
        y = np.asarray(y)
        k, n = self.n_models, len(y)
        losses = np.full(k, math.nan)
        accuracies = np.full(k, math.nan)
        if n == 0:
            return losses, accuracies
        x = np.ascontiguousarray(x, dtype=self.dtype)
        rows = np.arange(n)
        for begin, end in self._model_groups(n):
            logits = self._predict_models(x, begin, end)  # (n, g, C)
            # softmax_cross_entropy of each model, on (C, n, g).
            zt = np.ascontiguousarray(logits.transpose(2, 0, 1))
            zt -= np.maximum.reduce(zt, axis=0)
            label_scores = np.ascontiguousarray(zt[y, rows].T)
            np.exp(zt, out=zt)
            total = _sum_classes(zt)
            np.log(total, out=total)
            losses[begin:end] = _mean_cross_entropy(np.ascontiguousarray(total.T), label_scores, n)
            correct = np.count_nonzero(np.argmax(logits, axis=2) == y[:, None], axis=0)
            accuracies[begin:end] = correct / n
        return losses, accuracies


def _mean_cross_entropy(log_totals: np.ndarray, label_scores: np.ndarray, m: int) -> np.ndarray:
    """Per model ``(sum(log_totals[k]) - sum(label_scores[k])) / m`` in the input dtype.

    Each (K, m) row is summed by its own 1-D ``np.add.reduce`` (NumPy's pairwise
    sum), as ``softmax_cross_entropy`` sums one model's batch; a reduction over
    the last axis of the stack may add sequentially and round differently.
    """
    k = log_totals.shape[0]
    loss = np.empty(k, log_totals.dtype)
    scale = 1.0 / m
    for row in range(k):
        loss[row] = (np.add.reduce(log_totals[row]) - np.add.reduce(label_scores[row])) * scale
    return loss
