"""The NumPy network, its optimizers and NumpyModel."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.trainer.test_numpy_layers import numerical_gradient, relative_error
from trainer.config import TrainConfig
from trainer.datasets import Dataset
from trainer.init import initial_affine_params, layer_sizes
from trainer.numpy_backend import MultiLayerNet, NumpyModel, make_optimizer
from trainer.numpy_backend.layers import BatchNorm
from trainer.seeding import RunSeeds, run_seeds
from trainer.train import train

SIZES = [6, 5, 4, 3]


def make_net(
    *,
    activation: str = "relu",
    batchnorm: bool = True,
    dropout_ratio: float = 0.3,
    weight_decay: float = 0.1,
    dtype: type = np.float64,
    seed: int = 0,
) -> MultiLayerNet:
    config = TrainConfig(hidden_sizes=tuple(SIZES[1:-1]), activation=activation)
    params = initial_affine_params(config, SIZES[0], SIZES[-1], np.random.default_rng(seed))
    net = MultiLayerNet(
        sizes=SIZES,
        affine_params=params,
        activation=activation,
        batchnorm=batchnorm,
        dropout_ratio=dropout_ratio,
        weight_decay=weight_decay,
        dtype=dtype,
        dropout_rng=np.random.default_rng(seed + 1),
    )
    rng = np.random.default_rng(seed + 2)
    for name, value in net.params.items():  # non-trivial biases, gamma and beta
        if not name.startswith("W"):
            value += 0.3 * rng.standard_normal(value.shape)
    return net


def fix_masks(net: MultiLayerNet, batch: int, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    for i, layer in enumerate(net.dropout_layers):
        layer.fixed_mask = rng.random((batch, SIZES[i + 1])) >= net.dropout_ratio


def batch(n: int = 8, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, SIZES[0])), rng.integers(0, SIZES[-1], n)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_network_gradient_with_batchnorm_dropout_and_weight_decay(activation: str) -> None:
    net = make_net(activation=activation)
    x, t = batch()
    fix_masks(net, len(x))
    _, grads = net.loss_and_gradient(x, t)
    analytic = {name: g.copy() for name, g in grads.items()}
    numeric = {
        name: numerical_gradient(lambda: net.loss(x, t, train=True), p)
        for name, p in net.params.items()
    }
    everything = relative_error(
        np.concatenate([a.ravel() for a in analytic.values()]),
        np.concatenate([numeric[name].ravel() for name in analytic]),
    )
    assert everything < 1e-6
    for name in analytic:
        if name[0] == "b" and name[1:].isdigit() and name != f"b{len(SIZES) - 1}":
            # A bias right before batch norm cannot change the loss.
            np.testing.assert_allclose(analytic[name], 0, atol=1e-12)
            np.testing.assert_allclose(numeric[name], 0, atol=1e-8)
        else:
            err = relative_error(analytic[name], numeric[name])
            assert err < 1e-6, f"{name}: relative error {err:.2e}"


def test_parameter_names_and_flat_layout() -> None:
    net = make_net()
    assert set(net.params) == {"W1", "W2", "W3", "b1", "b2", "b3"} | {
        f"{kind}{i}" for kind in ("gamma", "beta") for i in (1, 2)
    }
    assert net.params["W2"].shape == (5, 4) and net.params["gamma2"].shape == (4,)
    for name, value in net.params.items():
        assert np.shares_memory(value, net.flat_params), name
        assert np.shares_memory(net.grads[name], net.flat_grads), name
    assert net.n_weights == 6 * 5 + 5 * 4 + 4 * 3
    plain = make_net(batchnorm=False)
    assert not any(name.startswith(("gamma", "beta")) for name in plain.params)


def test_weight_decay_applies_to_affine_weights_only() -> None:
    lam = 0.5
    x, t = batch()
    plain, decayed = make_net(weight_decay=0.0), make_net(weight_decay=lam)
    fix_masks(plain, len(x))
    fix_masks(decayed, len(x))
    loss_plain, grads_plain = plain.loss_and_gradient(x, t)
    loss_decayed, grads_decayed = decayed.loss_and_gradient(x, t)
    weights = [p for name, p in decayed.params.items() if name.startswith("W")]
    penalty = lam / 2 * sum(float(np.sum(w**2)) for w in weights)
    assert loss_decayed == pytest.approx(loss_plain + penalty, rel=1e-12)
    for name, g in grads_decayed.items():
        expected = grads_plain[name]
        if name.startswith("W"):
            expected = expected + lam * decayed.params[name]
        np.testing.assert_allclose(g, expected, rtol=1e-12, atol=1e-15, err_msg=name)


def hand_updates(name: str, p: np.ndarray, grads: list[np.ndarray]) -> list[np.ndarray]:
    """The rules of trainer.config's docstring, written out step by step."""
    lr, mom = 0.1, 0.8
    out = []
    v = np.zeros_like(p)
    h = np.zeros_like(p)
    m = np.zeros_like(p)
    p = p.copy()
    for t, g in enumerate(grads, start=1):
        if name == "sgd":
            p = p - lr * g
        elif name == "momentum":
            v = mom * v - lr * g
            p = p + v
        elif name == "nesterov":
            v = mom * v - lr * g
            p = p + mom * v - lr * g
        elif name == "adagrad":
            h = h + g * g
            p = p - lr * g / (np.sqrt(h) + 1e-7)
        elif name == "rmsprop":
            h = 0.99 * h + 0.01 * g * g
            p = p - lr * g / (np.sqrt(h) + 1e-7)
        elif name == "adam":
            m = m + (1 - 0.9) * (g - m)
            v = v + (1 - 0.999) * (g * g - v)
            p = p - lr * math.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-7)
        out.append(p.copy())
    return out


OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_steps_follow_the_config_formulas(name: str) -> None:
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    steps = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(3)]
    expected = {k: hand_updates(name, v, [g[k] for g in steps]) for k, v in params.items()}
    optimizer = make_optimizer(name, lr=0.1, momentum=0.8)
    for i, grads in enumerate(steps):
        optimizer.update(params, grads)
        for k, value in params.items():
            np.testing.assert_allclose(value, expected[k][i], rtol=1e-12, err_msg=f"{k} {i}")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_on_flat_array_equals_per_parameter_and_keeps_float32(name: str) -> None:
    net_a, net_b = make_net(dtype=np.float32), make_net(dtype=np.float32)
    flat, per_key = make_optimizer(name, lr=0.01), make_optimizer(name, lr=0.01)
    for seed in range(3):
        x, t = batch(seed=seed)
        for net in (net_a, net_b):
            fix_masks(net, len(x), seed)
            net.loss_and_gradient(x.astype(np.float32), t)
        flat.update({"all": net_a.flat_params}, {"all": net_a.flat_grads})
        per_key.update(net_b.params, net_b.grads)
    assert net_a.flat_params.dtype == np.float32
    np.testing.assert_allclose(net_a.flat_params, net_b.flat_params, rtol=1e-6, atol=1e-7)


def test_unknown_optimizer_is_rejected() -> None:
    with pytest.raises(ValueError, match="optimizer: got 'lbfgs'"):
        make_optimizer("lbfgs", lr=0.1)


def blobs(n: int = 300, d: int = 10, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = 2 * rng.standard_normal((k, d))
    y = rng.integers(0, k, n)
    x = centers[y] + rng.standard_normal((n, d))
    return x.astype(np.float32), y


SMALL = TrainConfig(
    hidden_sizes=(16, 16),
    batchnorm=True,
    dropout_ratio=0.2,
    weight_decay=1e-3,
    optimizer="adam",
    lr=0.01,
    batch_size=32,
)


def run_steps(model: NumpyModel, steps: int = 5) -> list[float]:
    x, y = blobs()
    return [
        model.train_step(x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]) for i in range(steps)
    ]


def test_model_same_seeds_same_results_different_seeds_differ() -> None:
    x, _ = blobs()
    state = np.random.get_state()[1].copy()
    a = NumpyModel(SMALL, 10, 3, run_seeds(1))
    b = NumpyModel(SMALL, 10, 3, run_seeds(1))
    losses_a, losses_b = run_steps(a), run_steps(b)
    assert losses_a == losses_b
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # global RNG untouched

    assert run_steps(NumpyModel(SMALL, 10, 3, run_seeds(2))) != losses_a
    seeds = run_seeds(1)
    other_dropout = RunSeeds(init=seeds.init, shuffle=seeds.shuffle, dropout=seeds.dropout + 1)
    assert run_steps(NumpyModel(SMALL, 10, 3, other_dropout)) != losses_a


def test_model_starts_from_the_shared_initial_weights() -> None:
    seeds = run_seeds(5)
    model = NumpyModel(SMALL, 10, 3, seeds)
    expected = initial_affine_params(SMALL, 10, 3, np.random.default_rng(seeds.init))
    assert model.network.sizes == layer_sizes(SMALL, 10, 3)
    for i, (w, b) in enumerate(expected, start=1):
        np.testing.assert_array_equal(model.network.params[f"W{i}"], w.astype(np.float32))
        np.testing.assert_array_equal(model.network.params[f"b{i}"], b.astype(np.float32))


def test_model_types_and_evaluate() -> None:
    model = NumpyModel(SMALL, 10, 3, run_seeds(0))
    x, y = blobs()
    loss = model.train_step(x[:32], y[:32])
    assert type(loss) is float
    logits = model.predict(x)
    assert logits.shape == (300, 3) and logits.dtype == np.float32
    val_loss, accuracy = model.evaluate(x, y)
    assert type(val_loss) is float and type(accuracy) is float
    net = model.network
    expected = net.loss(x, y, train=False) - net.decay_loss()
    assert val_loss == pytest.approx(expected, rel=1e-5)
    assert accuracy == pytest.approx(np.mean(np.argmax(logits, axis=1) == y))
    assert model.evaluate(x[:0], y[:0])[0] != model.evaluate(x[:0], y[:0])[0]  # NaN


def test_model_learns_a_small_problem() -> None:
    x, y = blobs()
    model = NumpyModel(SMALL, 10, 3, run_seeds(0))
    before, _ = model.evaluate(x, y)
    rng = np.random.default_rng(0)
    for _ in range(10):
        order = rng.permutation(len(y))
        for i in range(0, len(y) - 1, 32):
            model.train_step(x[order[i : i + 32]], y[order[i : i + 32]])
    after, accuracy = model.evaluate(x, y)
    assert after < 0.3 * before
    assert accuracy > 0.95


@pytest.mark.parametrize(
    "changes",
    [{}, {"activation": "sigmoid", "optimizer": "momentum", "lr": 0.1}, {"dtype": "float64"}],
)
def test_trains_through_the_training_loop(changes: dict) -> None:
    x, y = blobs(400)
    data = Dataset(
        name="blobs",
        x_train=x[:300],
        y_train=y[:300],
        x_val=x[300:],
        y_val=y[300:],
        x_test=x[:0],
        y_test=y[:0],
        n_classes=3,
    )
    config = SMALL.replace(epochs=5, batch_size=30, **changes)
    history = train(config, data)
    assert not history.diverged and len(history.records) == 5
    first, last = history.records[0], history.records[-1]
    assert last.train_loss < first.train_loss
    assert last.val_accuracy > 0.9


@pytest.mark.parametrize("m", [1, 8])
def test_network_running_statistics_match_standalone_batchnorm_layers(m: int) -> None:
    # The network updates every layer's running statistics in one call on
    # flat arrays; the values must be those each BatchNorm computes alone.
    net = make_net(dropout_ratio=0.0)
    alone = [
        BatchNorm(bn.gamma.copy(), bn.beta.copy(), running_mean=bn.running_mean.copy())
        for bn in net.batchnorm_layers
    ]
    x, _ = batch(m)
    for _ in range(3):
        net.predict(x, train=True)
        h = x
        for layer in net.layers:
            if isinstance(layer, BatchNorm):
                h = alone[net.batchnorm_layers.index(layer)].forward(h, True)
            else:
                h = layer.forward(h, False)
    for bn, single in zip(net.batchnorm_layers, alone, strict=True):
        np.testing.assert_array_equal(bn.running_mean, single.running_mean)
        np.testing.assert_array_equal(bn.running_var, single.running_var)
    if m == 1:  # a one-sample batch leaves the running statistics unchanged
        np.testing.assert_array_equal(net.running_mean, 0.0)
        np.testing.assert_array_equal(net.running_var, 1.0)
    else:
        assert not np.array_equal(net.running_var, 1.0)
