"""Layers of the NumPy backend: numerical gradient checks and conventions."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from trainer.numpy_backend.layers import (
    Affine,
    BatchNorm,
    Dropout,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
    Tanh,
    dropout_threshold,
    dropout_words,
    softmax_cross_entropy,
)

TOL = 1e-6


def numerical_gradient(f: Callable[[], float], a: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Central differences of ``f()`` with respect to ``a`` (perturbed in place)."""
    grad = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + h
        plus = f()
        a[idx] = old - h
        minus = f()
        a[idx] = old
        grad[idx] = (plus - minus) / (2 * h)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``||a - n|| / (||a|| + ||n||)``; 0 when both are zero."""
    denom = np.linalg.norm(analytic) + np.linalg.norm(numeric)
    return 0.0 if denom == 0 else float(np.linalg.norm(analytic - numeric) / denom)


def check_layer(layer, x: np.ndarray, params: dict[str, tuple[np.ndarray, str]]) -> None:
    """Gradient check of ``sum(forward(x) * R)`` w.r.t. x and each named parameter.

    ``params`` maps a name to (the parameter array, the name of its gradient
    attribute on the layer).
    """
    rng = np.random.default_rng(1)
    out = layer.forward(x, True)
    weights = rng.standard_normal(out.shape)
    dx = layer.backward(weights.copy()).copy()
    analytic = {name: getattr(layer, grad).copy() for name, (_, grad) in params.items()}

    def f() -> float:
        return float(np.sum(layer.forward(x, True) * weights))

    assert relative_error(dx, numerical_gradient(f, x)) < TOL
    for name, (array, _) in params.items():
        err = relative_error(analytic[name], numerical_gradient(f, array))
        assert err < TOL, f"{name}: relative error {err:.2e}"


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Normal draws with |x| >= 0.1, so a ReLU kink is never crossed by h."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.1, 0.1 * np.sign(x) + x, x)


def test_affine_gradients() -> None:
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 3)), rng.standard_normal(3)
    layer = Affine(w, b)
    check_layer(layer, rng.standard_normal((5, 4)), {"W": (w, "dW"), "b": (b, "db")})


def test_affine_without_input_grad_still_computes_parameter_grads() -> None:
    rng = np.random.default_rng(0)
    x, dout = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    layer = Affine(rng.standard_normal((4, 3)), np.zeros(3), input_grad=False)
    layer.forward(x, True)
    assert layer.backward(dout) is None
    np.testing.assert_allclose(layer.dW, x.T @ dout)
    np.testing.assert_allclose(layer.db, dout.sum(axis=0))


def test_batchnorm_gradients_in_train_mode() -> None:
    rng = np.random.default_rng(0)
    gamma, beta = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
    layer = BatchNorm(gamma, beta)
    x = 3 * rng.standard_normal((6, 4)) + 1
    check_layer(layer, x, {"gamma": (gamma, "dgamma"), "beta": (beta, "dbeta")})


@pytest.mark.parametrize("layer_class", [Relu, Sigmoid, Tanh])
def test_activation_gradients(layer_class: type) -> None:
    rng = np.random.default_rng(0)
    check_layer(layer_class(), away_from_zero(rng, (5, 4)), {})


def test_dropout_gradient_with_fixed_mask() -> None:
    rng = np.random.default_rng(0)
    layer = Dropout(0.4, np.random.default_rng(1))
    layer.fixed_mask = rng.random((5, 4)) >= 0.4
    check_layer(layer, rng.standard_normal((5, 4)), {})
    np.testing.assert_array_equal(layer.mask, layer.fixed_mask / 0.6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_mask_folded_into_dropout_gives_the_same_numbers(dtype: type) -> None:
    """ReLU then dropout with the ReLU's gradient mask carried by dropout's:
    the same output and input gradient, bit for bit, as the two layers apart."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 30)).astype(dtype)
    dout = rng.standard_normal((50, 30)).astype(dtype)
    results = []
    for fold in (False, True):
        relu = Relu(grad_mask_downstream=fold)
        dropout = Dropout(0.3, np.random.default_rng(4), relu_mask=fold)
        out = dropout.forward(relu.forward(x, True), True)
        dx = relu.backward(dropout.backward(dout.copy()))
        results.append((out, dx))
    (out, dx), (out_fold, dx_fold) = results
    assert out_fold.dtype == dx_fold.dtype == dtype
    np.testing.assert_array_equal(out_fold, out)
    np.testing.assert_array_equal(dx_fold, dx)
    np.testing.assert_array_equal(np.signbit(dx_fold), np.signbit(dx))
    assert np.count_nonzero(dx) < dx.size  # both masks zeroed something


def test_relu_mask_needs_a_dropout_ratio() -> None:
    # A folded ReLU passes its training input through; dropout must apply it.
    with pytest.raises(ValueError, match="relu_mask"):
        Dropout(0.0, relu_mask=True)


def test_softmax_with_loss_gradient() -> None:
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    layer = SoftmaxWithLoss()
    layer.forward(x, t)
    dx = layer.backward(1.0)
    numeric = numerical_gradient(lambda: float(layer.forward(x, t)), x)
    assert relative_error(dx, numeric) < TOL


def test_softmax_with_loss_is_mean_cross_entropy_and_stable() -> None:
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((6, 3)), rng.integers(0, 3, 6)
    probs = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(probs[np.arange(6), t]))
    assert float(SoftmaxWithLoss().forward(x, t)) == pytest.approx(expected, rel=1e-12)

    huge = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]])
    probs, loss = softmax_cross_entropy(huge, np.array([1, 1]))
    assert np.isfinite(probs).all()
    assert float(loss) == pytest.approx((2000.0 + np.log1p(np.exp(-1.0))) / 2)


def test_dropout_preserves_expected_value_and_drops_ratio() -> None:
    p = 0.3
    layer = Dropout(p, np.random.default_rng(0))
    x = np.ones((2000, 50), dtype=np.float32)
    out = layer.forward(x, True)
    assert out.dtype == np.float32
    assert set(np.unique(out)) == {np.float32(0), np.float32(1 / (1 - p))}
    assert np.mean(out == 0) == pytest.approx(p, abs=0.01)
    assert float(out.mean()) == pytest.approx(1.0, abs=0.01)


def test_dropout_backward_uses_the_forward_mask() -> None:
    layer = Dropout(0.5, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((8, 6))
    out = layer.forward(x, True)
    dx = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx, (out != 0) * 2.0)


def test_dropout_is_identity_at_inference_and_with_ratio_zero() -> None:
    x = np.random.default_rng(0).standard_normal((4, 5))
    np.testing.assert_array_equal(Dropout(0.5, np.random.default_rng(0)).forward(x, False), x)
    np.testing.assert_array_equal(Dropout(0.0).forward(x, True), x)
    np.testing.assert_array_equal(Dropout(0.0).backward(x.copy()), x)


def test_dropout_masks_follow_the_generator_seed() -> None:
    x = np.ones((10, 10))
    first = Dropout(0.5, np.random.default_rng(7)).forward(x, True)
    again = Dropout(0.5, np.random.default_rng(7)).forward(x, True)
    other = Dropout(0.5, np.random.default_rng(8)).forward(x, True)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_dropout_rejects_bad_ratio_and_mask_shape() -> None:
    with pytest.raises(ValueError, match="dropout_ratio"):
        Dropout(1.0, np.random.default_rng(0))
    layer = Dropout(0.5, np.random.default_rng(0))
    layer.fixed_mask = np.ones((2, 2))
    with pytest.raises(ValueError, match="fixed_mask"):
        layer.forward(np.ones((3, 2)), True)


def test_batchnorm_train_mode_normalizes_and_updates_running_stats() -> None:
    rng = np.random.default_rng(0)
    x = 2 * rng.standard_normal((8, 3)) + 5
    layer = BatchNorm(np.ones(3), np.zeros(3))
    out = layer.forward(x, True)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(out, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5))
    np.testing.assert_allclose(layer.running_mean, 0.1 * x.mean(axis=0))
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * x.var(axis=0, ddof=1))


def test_batchnorm_inference_is_per_sample() -> None:
    rng = np.random.default_rng(0)
    layer = BatchNorm(rng.uniform(0.5, 1.5, 4), rng.standard_normal(4))
    for _ in range(5):
        layer.forward(3 * rng.standard_normal((10, 4)) + 1, True)
    x = rng.standard_normal((6, 4))
    batch = layer.forward(x, False)
    for i in range(len(x)):
        np.testing.assert_allclose(layer.forward(x[i : i + 1], False), batch[i : i + 1])
    expected = (x - layer.running_mean) / np.sqrt(layer.running_var + 1e-5)
    np.testing.assert_allclose(batch, layer.gamma * expected + layer.beta)


def test_batchnorm_training_batch_of_one_keeps_running_stats() -> None:
    beta = np.array([0.5, -1.0, 2.0])
    layer = BatchNorm(np.array([2.0, 3.0, 4.0]), beta)
    out = layer.forward(np.array([[1.0, 2.0, 3.0]]), True)
    np.testing.assert_array_equal(out, [beta])
    np.testing.assert_array_equal(layer.running_mean, 0)
    np.testing.assert_array_equal(layer.running_var, 1)
    np.testing.assert_array_equal(layer.backward(np.ones((1, 3))), 0)
    np.testing.assert_array_equal(layer.dbeta, 1)


def test_backward_before_training_forward_is_an_error() -> None:
    layer = Relu()
    layer.forward(np.ones((2, 2)), False)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones((2, 2)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Affine(np.ones((4, 3), np.float32), np.zeros(3, np.float32)),
        lambda: BatchNorm(np.ones(4, np.float32), np.zeros(4, np.float32)),
        Relu,
        Sigmoid,
        Tanh,
        lambda: Dropout(0.5, np.random.default_rng(0)),
    ],
)
def test_float32_stays_float32(make: Callable[[], object]) -> None:
    layer = make()
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    for train in (True, False):
        out = layer.forward(x, train)
        assert out.dtype == np.float32
    out = layer.forward(x, True)
    assert layer.backward(np.ones_like(out)).dtype == np.float32
    for name in ("dW", "db", "dgamma", "dbeta", "running_mean", "running_var"):
        if hasattr(layer, name):
            assert getattr(layer, name).dtype == np.float32
    probs, loss = softmax_cross_entropy(x, np.array([0, 1, 2, 3, 0]))
    assert probs.dtype == np.float32 and loss.dtype == np.float32


def test_dropout_keeps_units_whose_16_bit_words_reach_the_threshold() -> None:
    # The documented stream (packed training draws the same): 16-bit words of
    # the generator's raw 64-bit output, a unit kept when word >= ceil(p * 2**16).
    p = 0.3
    layer = Dropout(p, np.random.default_rng(5))
    out = layer.forward(np.ones((7, 9), dtype=np.float32), True)
    raw = np.random.default_rng(5).bit_generator.random_raw(16)  # ceil(63 / 4)
    words = raw.astype("<u8").view("<u2")[:63].reshape(7, 9)
    assert dropout_threshold(p) == math.ceil(p * 2**16)
    np.testing.assert_array_equal(out != 0, words >= math.ceil(p * 2**16))
    np.testing.assert_array_equal(dropout_words(np.random.default_rng(5), (7, 9)), words)
    assert dropout_threshold(0.999999) == 2**16 - 1  # some units are still kept
