"""The layers of the multi-layer network, one small class per layer.

In the style of the book's ``common/layers.py``: every layer has
``forward(x, train)`` and ``backward(dout)``, and keeps what the backward pass
needs in caches named and declared in ``__init__``.

Conventions shared by every layer:

* Arrays are 2-D, ``(batch, features)``. A layer computes in the dtype of its
  input and parameters: scalars are Python floats (which NumPy treats as
  "weak"), so float32 stays float32 and float64 stays float64.
* ``forward(x, train)`` never modifies ``x`` and returns a new array (or ``x``
  itself for identity layers). With ``train=True`` it caches what
  ``backward`` needs; with ``train=False`` (inference) it caches nothing.
* ``backward(dout)`` returns the gradient with respect to the layer's input
  and writes parameter gradients into the layer's ``d*`` arrays in place (so
  they can be views into one flat gradient buffer). It may overwrite ``dout``:
  pass a copy if you still need it.
* Layers written for one network; stacking several trials along a leading
  axis ("trial packing") would replace ``axis=0`` reductions with ``axis=-2``
  and ``.T`` with ``swapaxes(-1, -2)``.
"""

from __future__ import annotations

import math

import numpy as np

try:  # NumPy's einsum without its Python wrapper (about 2 us less per call)
    from numpy._core.multiarray import c_einsum as _einsum
except ImportError:  # NumPy < 2
    from numpy import einsum as _einsum

__all__ = [
    "Affine",
    "BatchNorm",
    "Dropout",
    "Relu",
    "Sigmoid",
    "SoftmaxWithLoss",
    "Tanh",
    "softmax_cross_entropy",
    "update_running_stats",
]


def _ones_for(ones: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """``ones`` if it is a vector of ones of x's batch size and dtype, else a new one.

    Sums over the batch are taken as ``np.dot(ones, x)`` (a BLAS
    matrix-vector product, about 3x faster than ``np.add.reduce(x, axis=0)``
    on (100, 100) float32, but not always rounded the same). Every batch sum
    of a network is taken this way, and the packed model takes the same
    product per model, so both round alike.
    """
    if ones is None or ones.shape[0] != x.shape[0] or ones.dtype != x.dtype:
        ones = np.ones(x.shape[0], x.dtype)
    return ones


def _not_trained(layer: object) -> RuntimeError:
    return RuntimeError(
        f"{type(layer).__name__}.backward: call forward(x, train=True) before backward"
    )


class Affine:
    """Fully connected layer ``out = x @ W + b``.

    Args:
        W: Weights, shape (n_in, n_out). Used by reference (updated in place
            by the optimizer).
        b: Biases, shape (n_out,).
        dW, db: Where backward writes the gradients (C-contiguous, same dtype
            and shape as W and b); allocated when not given.
        input_grad: Whether backward computes the gradient with respect to
            ``x``. The first layer of a network does not need it, which saves
            its largest matrix product; backward then returns None.
    """

    def __init__(
        self,
        W: np.ndarray,
        b: np.ndarray,
        *,
        dW: np.ndarray | None = None,
        db: np.ndarray | None = None,
        input_grad: bool = True,
    ) -> None:
        self.W = W
        self.b = b
        self.dW = np.zeros_like(W) if dW is None else dW
        self.db = np.zeros_like(b) if db is None else db
        self.input_grad = input_grad
        # Cache: the input of the last training-mode forward.
        self.x: np.ndarray | None = None
        # Scratch: ones of the last batch size, for the bias gradient.
        self._ones: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        out = np.matmul(x, self.W)
        out += self.b
        self.x = x if train else None
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        x = self.x
        if x is None:
            raise _not_trained(self)
        np.matmul(x.T, dout, out=self.dW)
        ones = self._ones = _ones_for(self._ones, dout)
        np.dot(ones, dout, out=self.db)
        if not self.input_grad:
            return None
        W = self.W
        if min(dout.shape[0], W.shape[0], W.shape[1]) > 1:
            # The transposed view: OpenBLAS's "NT" product gives the same
            # numbers as the "NN" product with a contiguous copy of W.T, and
            # saves the copy (about 5 us on (100, 100) float32).
            return np.matmul(dout, W.T)
        # A dimension of 1 takes a matrix-vector path, whose rounding may
        # depend on the layout: keep the contiguous copy there.
        return np.matmul(dout, np.ascontiguousarray(W.T))


class BatchNorm:
    """Batch normalization over the batch axis, then ``gamma * x_hat + beta``.

    Matches ``torch.nn.BatchNorm1d`` (its momentum 0.1 is our 0.9):

    * Training: normalize with the batch mean and the *biased* batch variance,
      ``x_hat = (x - mean) / sqrt(var + eps)``, and update the running
      statistics ``running = momentum * running + (1 - momentum) * batch``,
      where the running variance takes the *unbiased* batch variance
      ``var * m / (m - 1)``. A training batch of one sample has no unbiased
      variance: it is normalized with its own statistics (so its output is
      ``beta`` and its input gradient 0) and leaves the running statistics
      unchanged, as the torch backend does.
    * Inference: normalize with ``running_mean`` and ``running_var``, so a
      sample's output does not depend on the rest of its batch.

    Args:
        gamma, beta: Scale and shift, shape (n,); used by reference.
        dgamma, dbeta: Where backward writes their gradients.
        running_mean, running_var: Initial running statistics (default 0
            and 1, like torch); updated in place.
        momentum: Weight of the old running value, default 0.9.
        eps: Added to the variance, default 1e-5.
        batch_stats: Optional ``(mean, var)`` arrays of shape (n,). When
            given, a training-mode forward writes the batch mean and biased
            variance there and leaves the running statistics alone; the
            owner then applies :func:`update_running_stats` to them (a
            network keeps every layer's statistics in one flat array, so the
            update is six NumPy calls per step instead of six per layer -
            the same element-wise operations, so the same values).
    """

    def __init__(
        self,
        gamma: np.ndarray,
        beta: np.ndarray,
        *,
        dgamma: np.ndarray | None = None,
        dbeta: np.ndarray | None = None,
        running_mean: np.ndarray | None = None,
        running_var: np.ndarray | None = None,
        momentum: float = 0.9,
        eps: float = 1e-5,
        batch_stats: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.gamma = gamma
        self.beta = beta
        self.dgamma = np.zeros_like(gamma) if dgamma is None else dgamma
        self.dbeta = np.zeros_like(beta) if dbeta is None else dbeta
        self.running_mean = np.zeros_like(gamma) if running_mean is None else running_mean
        self.running_var = np.ones_like(gamma) if running_var is None else running_var
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.batch_stats = batch_stats
        # Caches of the last training-mode forward: the centred input
        # x - mean and 1 / sqrt(batch variance + eps) (x_hat is their product).
        self.xc: np.ndarray | None = None
        self.inv_std: np.ndarray | None = None
        # ... and gamma * inv_std, the scale it applied.
        self.scale: np.ndarray | None = None
        # Scratch: 1 / m and eps as arrays, for the last batch size and dtype.
        self._const_key: tuple[int, np.dtype] | None = None
        self._const: tuple[np.ndarray, np.ndarray] = (gamma, gamma)
        # Scratch: ones of the last batch size, for the sums over the batch.
        self._ones: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        if not train:
            self.xc = self.inv_std = self.scale = None
            scale = self.running_var + self.eps
            np.sqrt(scale, out=scale)
            np.divide(self.gamma, scale, out=scale)
            shift = self.running_mean * scale
            np.subtract(self.beta, shift, out=shift)
            out = np.multiply(x, scale)
            out += shift
            return out

        m = x.shape[0]
        inv_m, eps = self._constants(m, x.dtype)
        stats = self.batch_stats
        ones = self._ones = _ones_for(self._ones, x)
        if stats is None:
            mean = np.dot(ones, x)
        else:
            mean = np.dot(ones, x, out=stats[0])
        np.multiply(mean, inv_m, out=mean)
        xc = np.subtract(x, mean)
        if stats is None:
            var = _einsum("ij,ij->j", xc, xc)
        else:
            var = _einsum("ij,ij->j", xc, xc, out=stats[1])
        np.multiply(var, inv_m, out=var)
        inv_std = np.add(var, eps)
        np.sqrt(inv_std, out=inv_std)
        np.reciprocal(inv_std, out=inv_std)

        if stats is None:
            update_running_stats(
                self.running_mean, self.running_var, mean, var, m, momentum=self.momentum
            )

        # out = gamma * x_hat + beta = xc * (gamma * inv_std) + beta
        scale = np.multiply(self.gamma, inv_std)
        out = np.multiply(xc, scale)
        out += self.beta
        self.xc = xc
        self.inv_std = inv_std
        self.scale = scale
        return out

    def _constants(self, m: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """``1 / m`` and ``eps`` as (n,) arrays of ``dtype``.

        The same values as the Python floats cast to ``dtype``, but NumPy
        multiplies two short arrays about 3x faster than an array by a
        Python scalar (it resolves the scalar's dtype on every call).
        """
        key = (m, dtype)
        if self._const_key != key:
            n = self.gamma.shape[0]
            self._const_key = key
            self._const = (np.full(n, 1.0 / m, dtype), np.full(n, self.eps, dtype))
        return self._const

    def backward(self, dout: np.ndarray) -> np.ndarray:
        xc, inv_std, a = self.xc, self.inv_std, self.scale
        if xc is None or inv_std is None or a is None:
            raise _not_trained(self)
        # With x_hat = xc * inv_std and a = gamma * inv_std (cached by forward):
        #   dbeta = sum(dout), dgamma = sum(dout * x_hat),
        #   dx = a * (dout - (dbeta + x_hat * dgamma) / m)
        #      = a * dout - xc * (a * inv_std * dgamma / m) - a * dbeta / m.
        m = dout.shape[0]
        inv_m, _ = self._constants(m, dout.dtype)
        dbeta, dgamma = self.dbeta, self.dgamma
        ones = self._ones = _ones_for(self._ones, dout)
        np.dot(ones, dout, out=dbeta)
        np.multiply(_einsum("ij,ij->j", dout, xc), inv_std, out=dgamma)
        a_m = np.multiply(a, inv_m)
        coef = np.multiply(a_m, inv_std)
        np.multiply(coef, dgamma, out=coef)
        tmp = np.multiply(xc, coef)
        dx = np.multiply(dout, a, out=dout)
        dx -= tmp
        dx -= np.multiply(a_m, dbeta, out=a_m)
        return dx


def update_running_stats(
    running_mean: np.ndarray,
    running_var: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    m: int,
    *,
    momentum: float = 0.9,
) -> None:
    """Batch norm's running statistics after a training batch of ``m`` samples.

    ``running = momentum * running + (1 - momentum) * batch``, the variance
    taking the unbiased ``var * m / (m - 1)``; nothing changes when ``m == 1``.
    Works on any shapes that broadcast (one layer, or all layers' statistics
    side by side). Overwrites ``mean`` and ``var``.
    """
    if m <= 1:
        return
    keep = float(momentum)
    running_mean *= keep
    mean *= 1.0 - keep
    running_mean += mean
    running_var *= keep
    var *= (1.0 - keep) * m / (m - 1)
    running_var += var


class Relu:
    """``out = max(x, 0)``; the gradient passes where ``out > 0``.

    The maximum is taken against an array of zeros rather than the scalar 0:
    the same values, but NumPy's vectorized loop for two arrays is about 3x
    faster than its scalar-broadcast loop on (100, 100) float32.

    Args:
        grad_mask_downstream: Set when the next layer is a
            ``Dropout(..., relu_mask=True)``, which zeroes its output and the
            gradient where this layer's input is not positive, together with
            its own mask (one multiply instead of three). A training-mode
            forward then returns ``x`` itself (the dropout applies the ReLU)
            and backward returns ``dout`` unchanged; inference is unchanged.
    """

    def __init__(self, *, grad_mask_downstream: bool = False) -> None:
        self.grad_mask_downstream = grad_mask_downstream
        # Cache: the output of the last training-mode forward.
        self.out: np.ndarray | None = None
        # Scratch: zeros of the last input's shape and dtype (never written).
        self._zeros: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        if train and self.grad_mask_downstream:
            self.out = x
            return x
        zeros = self._zeros
        if zeros is None or zeros.shape != x.shape or zeros.dtype != x.dtype:
            zeros = self._zeros = np.zeros(x.shape, x.dtype)
        out = np.maximum(x, zeros)
        self.out = out if train else None
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self.out is None:
            raise _not_trained(self)
        if self.grad_mask_downstream:
            return dout
        # bool -> float copy then a same-type multiply: about half the time of
        # multiplying by the bool array directly (a mixed-type loop).
        mask = np.greater(self.out, self._zeros)
        dout *= mask.astype(dout.dtype)
        return dout


class Sigmoid:
    """``out = 1 / (1 + exp(-x))``; the gradient is ``dout * out * (1 - out)``.

    Stable for any input: ``exp(-x)`` overflowing to inf gives exactly 0.
    """

    def __init__(self) -> None:
        # Cache: the output of the last training-mode forward.
        self.out: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        out = np.negative(x)
        with np.errstate(over="ignore"):
            np.exp(out, out=out)
        out += 1
        np.reciprocal(out, out=out)
        self.out = out if train else None
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        out = self.out
        if out is None:
            raise _not_trained(self)
        slope = np.subtract(1, out)
        slope *= out
        dout *= slope
        return dout


class Tanh:
    """``out = tanh(x)``; the gradient is ``dout * (1 - out**2)``."""

    def __init__(self) -> None:
        # Cache: the output of the last training-mode forward.
        self.out: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        out = np.tanh(x)
        self.out = out if train else None
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        out = self.out
        if out is None:
            raise _not_trained(self)
        slope = np.square(out)
        np.subtract(1, slope, out=slope)
        dout *= slope
        return dout


#: Random bits per unit of a dropout mask.
DROPOUT_BITS = 16
_WORDS_PER_RAW = 64 // DROPOUT_BITS


def dropout_threshold(dropout_ratio: float) -> np.uint16:
    """The 16-bit threshold: a unit is kept when its word is >= it."""
    return np.uint16(min(math.ceil(dropout_ratio * 2**DROPOUT_BITS), 2**DROPOUT_BITS - 1))


def dropout_words(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """One 16-bit random word per unit of ``shape``, from one ``random_raw`` call.

    ``ceil(n / 4)`` raw 64-bit draws, each split into four little-endian
    16-bit words (the same on any platform).
    """
    n = math.prod(shape)
    raw = rng.bit_generator.random_raw(-(-n // _WORDS_PER_RAW))
    return raw.astype("<u8", copy=False).view("<u2")[:n].reshape(shape)


class Dropout:
    """Inverted dropout with ratio p.

    Training: each unit is kept with probability 1 - p and scaled by
    1 / (1 - p), so the expected output equals the input; inference: the
    identity (equal in expectation to the book's "scale by 1 - p at test").
    ``p = 0`` is the identity in both modes.

    Masks come from ``rng`` only (never the global RNG): 16-bit draws ``u``
    (each 64-bit output of its bit generator, ``bit_generator.random_raw``,
    split into four little-endian 16-bit words, one per unit, in order), a
    unit kept when ``u >= ceil(p * 2**16)``: the keep probability is 1 - p to
    within 2**-16 (at least 2**-16 for p near 1). Drawing the raw words is
    most of dropout's cost, so 16 bits per unit instead of 32 (or a float)
    halves it; :data:`DROPOUT_BITS` is 16.

    Args:
        dropout_ratio: p in [0, 1).
        rng: The Generator masks are drawn from (needed when p > 0).
        relu_mask: The layer before is ``Relu(grad_mask_downstream=True)``,
            whose training-mode forward passes its input through: the mask is
            also 0 where the input is not positive, so the one multiply
            ``x * mask`` applies the ReLU (``max(x, 0) * mask``, the same
            numbers except that a negative input gives -0.0 rather than 0.0),
            and backward's one multiply its gradient mask too (the same
            numbers as the separate multiplies, ``dout * s * 1``,
            ``dout * 0 * ...``).

    Attributes:
        fixed_mask: When set (0/1 or bool, the shape of the input), forward
            uses it as the keep mask instead of drawing one, still scaled by
            1 / (1 - p); for gradient checks and cross-backend tests.
    """

    def __init__(
        self,
        dropout_ratio: float,
        rng: np.random.Generator | None = None,
        *,
        relu_mask: bool = False,
    ) -> None:
        p = float(dropout_ratio)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout_ratio: got {dropout_ratio!r}; expected a number in [0, 1)")
        if p > 0.0 and rng is None:
            raise ValueError("Dropout: a numpy Generator is needed when dropout_ratio > 0")
        if relu_mask and p == 0.0:  # the identity would leave the ReLU unapplied
            raise ValueError("Dropout: relu_mask needs dropout_ratio > 0")
        self.dropout_ratio = p
        self.rng = rng
        self.relu_mask = relu_mask
        self.scale = 1.0 / (1.0 - p)
        self.threshold = dropout_threshold(p)
        self.fixed_mask: np.ndarray | None = None
        # Cache: the scaled keep mask (0 or 1 / (1 - p)) of the last
        # training-mode forward; None when the layer was the identity.
        self.mask: np.ndarray | None = None
        # Scratch: zeros of the last input's shape and dtype (never written).
        self._zeros: np.ndarray | None = None
        # Scratch: ``scale`` as a 0-d array of the last input's dtype (the
        # same value as the Python float, multiplied about 0.3 us faster).
        self._scale = np.array(self.scale)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        if not train or self.dropout_ratio == 0.0:
            self.mask = None
            return x
        if self.fixed_mask is not None:
            if self.fixed_mask.shape != x.shape:
                raise ValueError(
                    f"Dropout.fixed_mask: shape {self.fixed_mask.shape} does not match the "
                    f"input's {x.shape}"
                )
            keep = np.not_equal(self.fixed_mask, 0)
        else:  # self.rng is set when p > 0 (checked in __init__)
            keep = np.greater_equal(dropout_words(self.rng, x.shape), self.threshold)
        if self.relu_mask:
            zeros = self._zeros
            if zeros is None or zeros.shape != x.shape or zeros.dtype != x.dtype:
                zeros = self._zeros = np.zeros(x.shape, x.dtype)
            keep &= np.greater(x, zeros)
        # bool -> float copy, then scale: faster than comparing into a float
        # array (a casting loop); 1 * scale and 0 * scale are the same numbers.
        mask = keep.astype(x.dtype)
        if self._scale.dtype != x.dtype:
            self._scale = np.array(self.scale, x.dtype)
        mask *= self._scale
        self.mask = mask
        return np.multiply(x, mask)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self.dropout_ratio == 0.0:
            return dout
        if self.mask is None:
            raise _not_trained(self)
        dout *= self.mask
        return dout


_ARANGE: list[np.ndarray] = [np.arange(0)]


def _arange(m: int) -> np.ndarray:
    """``np.arange(m)`` (read-only, kept for the next call of the same ``m``)."""
    r = _ARANGE[0]
    if r.shape[0] != m:
        r = _ARANGE[0] = np.arange(m)
        r.flags.writeable = False
    return r


def softmax_cross_entropy(x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax of the scores and the mean cross-entropy with integer labels.

    Numerically stable: the row maximum is subtracted before ``exp`` and the
    loss is ``log(sum(exp(z))) - z[t]`` with ``z = x - max(x)``. Works on the
    transposed scores, (n_classes, batch), because NumPy reduces over the
    leading axis several times faster than over a short trailing one.

    Args:
        x: Scores (logits), shape (batch, n_classes).
        t: Integer labels, shape (batch,).

    Returns:
        ``(probs, loss)``: the softmax, shape of ``x`` (a transposed view),
        and the mean cross-entropy, a NumPy scalar of ``x``'s dtype.
    """
    m = x.shape[0]
    zt = np.ascontiguousarray(x.T)
    zt -= np.maximum.reduce(zt, axis=0)
    probs_t = np.exp(zt)
    total = np.add.reduce(probs_t, axis=0)
    probs_t /= total
    np.log(total, out=total)
    loss = (np.add.reduce(total) - np.add.reduce(zt[t, _arange(m)])) * (1.0 / m)
    return probs_t.T, loss


class SoftmaxWithLoss:
    """Softmax and mean cross-entropy over the batch, with integer labels.

    ``forward(x, t, train)`` returns the mean cross-entropy (a 0-d array of
    the input's dtype); ``backward(dout=1)`` returns ``dout * (softmax(x) -
    onehot(t)) / batch``.
    """

    def __init__(self) -> None:
        # Caches of the last training-mode forward: softmax output, labels.
        self.probs: np.ndarray | None = None
        self.t: np.ndarray | None = None

    def forward(self, x: np.ndarray, t: np.ndarray, train: bool = True) -> np.ndarray:
        probs, loss = softmax_cross_entropy(x, t)
        if train:
            self.probs, self.t = probs, t
        else:
            self.probs = self.t = None
        return loss

    def backward(self, dout: float = 1.0) -> np.ndarray:
        probs, t = self.probs, self.t
        if probs is None or t is None:
            raise _not_trained(self)
        m = probs.shape[0]
        dx = probs.copy()
        dx[_arange(m), t] -= 1
        dx *= float(dout) / m
        return dx
