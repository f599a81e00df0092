"""The torch backend: reproducible, same formulas as documented, same results as NumPy."""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trainer.backend import build_model  # noqa: E402
from trainer.config import OPTIMIZERS, TrainConfig  # noqa: E402
from trainer.datasets import Dataset  # noqa: E402
from trainer.errors import BackendUnavailableError, ConfigError  # noqa: E402
from trainer.history import History  # noqa: E402
from trainer.init import initial_affine_params  # noqa: E402
from trainer.seeding import run_seeds  # noqa: E402
from trainer.torch_backend import TorchModel  # noqa: E402
from trainer.train import train  # noqa: E402

pytestmark = pytest.mark.torch

N_FEATURES = 8
N_CLASSES = 3
# A learning rate per optimizer that makes visible progress in a few epochs
# without diverging on the blobs below.
LR = {
    "sgd": 0.1,
    "momentum": 0.05,
    "nesterov": 0.05,
    "adagrad": 0.05,
    "rmsprop": 0.005,
    "adam": 0.005,
}


def blobs(n_train: int = 200, n_val: int = 60, seed: int = 0) -> Dataset:
    """Three overlapping Gaussian blobs in 8 dimensions, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    centers = rng.random((N_CLASSES, N_FEATURES))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, N_CLASSES, n)
        x = np.clip(centers[y] + 0.25 * rng.standard_normal((n, N_FEATURES)), 0.0, 1.0)
        return x.astype(np.float32), y.astype(np.int64)

    x_train, y_train = draw(n_train)
    x_val, y_val = draw(n_val)
    return Dataset(
        name="blobs",
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_val[:0],
        y_test=y_val[:0],
        n_classes=N_CLASSES,
    )


def small_config(**changes: object) -> TrainConfig:
    values: dict[str, object] = dict(
        hidden_sizes=(16, 12), epochs=3, batch_size=32, lr=0.1, backend="torch"
    )
    values.update(changes)
    return TrainConfig(**values)


def without_times(history: History) -> dict:
    """The History as a dict with every wall-time field removed."""
    out = history.to_dict()
    out.pop("seconds")
    for record in out["records"]:
        record.pop("seconds")
    return out


# -- reproducibility through trainer.train ---------------------------------------


def test_same_seed_gives_identical_history() -> None:
    data = blobs()
    config = small_config(batchnorm=True, dropout_ratio=0.3, weight_decay=1e-3, seed=7)
    first, second = train(config, data), train(config, data)
    assert first.epochs_completed == config.epochs
    assert without_times(first) == without_times(second)


def test_different_seed_gives_different_history() -> None:
    data = blobs()
    config = small_config(batchnorm=True, dropout_ratio=0.3, seed=7)
    assert without_times(train(config, data)) != without_times(train(config.replace(seed=8), data))


def test_training_learns_the_blobs() -> None:
    history = train(small_config(epochs=10), blobs())
    assert history.final.val_accuracy > 0.8
    assert history.final.train_loss < history.records[0].train_loss


def test_divergence_is_reported_not_raised() -> None:
    history = train(small_config(lr=100.0, weight_decay=1.0, epochs=5), blobs())
    assert history.diverged
    assert history.epochs_completed < 5


# -- the documented formulas, checked against an independent torch.nn recomputation --


def reference_step_params(
    config: TrainConfig, x: np.ndarray, y: np.ndarray, n_steps: int
) -> tuple[list[np.ndarray], list[float]]:
    """Parameters after ``n_steps`` steps on one batch, by ``torch.nn`` modules for the
    gradients and the update rules of trainer/config.py written out in NumPy (float64)."""
    layers: list[torch.nn.Module] = []
    affine = initial_affine_params(
        config, N_FEATURES, N_CLASSES, np.random.default_rng(run_seeds(config.seed).init)
    )
    linears = []
    for i, (w, b) in enumerate(affine):
        linear = torch.nn.Linear(w.shape[0], w.shape[1], dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.T))
            linear.bias.copy_(torch.from_numpy(b))
        linears.append(linear)
        layers.append(linear)
        if i < len(affine) - 1:
            if config.batchnorm:
                layers.append(
                    torch.nn.BatchNorm1d(w.shape[1], eps=1e-5, momentum=0.1, dtype=torch.float64)
                )
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers).train()
    params = list(net.parameters())
    state = [[np.zeros(tuple(p.shape)) for p in params] for _ in range(2)]
    xt, yt = torch.from_numpy(x.astype(np.float64)), torch.from_numpy(y)
    losses = []
    lr, mom, wd = config.lr, config.momentum, config.weight_decay
    for t in range(1, n_steps + 1):
        penalty = sum((lin.weight**2).sum() for lin in linears)
        loss = torch.nn.functional.cross_entropy(net(xt), yt) + wd / 2 * penalty
        losses.append(loss.item())
        net.zero_grad()
        loss.backward()
        for k, p in enumerate(params):
            w, g = p.detach().numpy().copy(), p.grad.numpy().copy()
            v, h = state[0][k], state[1][k]
            if config.optimizer == "sgd":
                w -= lr * g
            elif config.optimizer == "momentum":
                v[:] = mom * v - lr * g
                w += v
            elif config.optimizer == "nesterov":
                v[:] = mom * v - lr * g
                w += mom * v - lr * g
            elif config.optimizer == "adagrad":
                h += g * g
                w -= lr * g / (np.sqrt(h) + 1e-7)
            elif config.optimizer == "rmsprop":
                h[:] = 0.99 * h + 0.01 * g * g
                w -= lr * g / (np.sqrt(h) + 1e-7)
            else:  # adam
                v += (1 - 0.9) * (g - v)
                h += (1 - 0.999) * (g * g - h)
                w -= lr * math.sqrt(1 - 0.999**t) / (1 - 0.9**t) * v / (np.sqrt(h) + 1e-7)
            with torch.no_grad():
                p.copy_(torch.from_numpy(w))
    net.eval()
    with torch.no_grad():
        logits = net(xt).numpy()
    return [logits], losses


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_updates_follow_the_documented_rules(optimizer: str, batchnorm: bool) -> None:
    config = small_config(
        optimizer=optimizer,
        batchnorm=batchnorm,
        lr=LR[optimizer],
        weight_decay=0.01,
        dtype="float64",
    )
    data = blobs()
    x, y = data.x_train[:40].astype(np.float64), data.y_train[:40]
    (expected_logits,), expected_losses = reference_step_params(config, x, y, n_steps=5)

    model = TorchModel(config, N_FEATURES, N_CLASSES, run_seeds(config.seed))
    losses = [model.train_step(x, y) for _ in range(5)]

    np.testing.assert_allclose(losses, expected_losses, rtol=1e-10, atol=1e-12)
    # Inference mode: running statistics (BN) and no dropout.
    np.testing.assert_allclose(model.predict(x), expected_logits, rtol=1e-7, atol=1e-9)


def test_starts_from_the_shared_initial_weights() -> None:
    config = small_config(dtype="float64", weight_init="xavier", activation="tanh")
    x = blobs().x_val.astype(np.float64)
    h = x
    params = initial_affine_params(
        config, N_FEATURES, N_CLASSES, np.random.default_rng(run_seeds(config.seed).init)
    )
    for w, b in params[:-1]:
        h = np.tanh(h @ w + b)
    expected = h @ params[-1][0] + params[-1][1]
    model = TorchModel(config, N_FEATURES, N_CLASSES, run_seeds(config.seed))
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-12, atol=1e-12)


def test_loss_includes_weight_decay_and_evaluate_does_not() -> None:
    config = small_config(dtype="float64", weight_decay=0.5)
    data = blobs()
    x, y = data.x_train.astype(np.float64), data.y_train
    seeds = run_seeds(config.seed)
    model = TorchModel(config, N_FEATURES, N_CLASSES, seeds)
    eval_loss, _ = model.evaluate(x, y)
    penalty = sum(
        float((w**2).sum())
        for w, _ in initial_affine_params(
            config, N_FEATURES, N_CLASSES, np.random.default_rng(seeds.init)
        )
    )
    assert model.train_step(x, y) == pytest.approx(eval_loss + 0.25 * penalty, rel=1e-12)


def test_evaluate_matches_predict() -> None:
    config = small_config(batchnorm=True, dropout_ratio=0.5)
    data = blobs()
    model = TorchModel(config, N_FEATURES, N_CLASSES, run_seeds(0))
    for begin in range(0, 200, 32):
        model.train_step(data.x_train[begin : begin + 32], data.y_train[begin : begin + 32])
    logits = model.predict(data.x_val)
    assert logits.shape == (len(data.y_val), N_CLASSES)
    np.testing.assert_array_equal(logits, model.predict(data.x_val))  # no dropout at inference
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss, accuracy = model.evaluate(data.x_val, data.y_val)
    assert loss == pytest.approx(
        -log_probs[np.arange(len(data.y_val)), data.y_val].mean(), rel=1e-5
    )
    assert accuracy == np.mean(logits.argmax(axis=1) == data.y_val)


def dropout_probe(seed: int, *, training: bool) -> np.ndarray:
    """Outputs of a 2000-unit layer whose units are all 8 before dropout.

    Column 0 is the mean of the units after dropout; columns 1 and 2 are units 0
    and 1 themselves; 200 rows.
    """
    config = small_config(hidden_sizes=(2000,), dropout_ratio=0.3, dtype="float64")
    model = TorchModel(config, N_FEATURES, N_CLASSES, run_seeds(seed))
    with torch.no_grad():
        model.weights[0].fill_(1.0)  # relu(sum of 8 ones) = 8
        model.weights[1].zero_()
        model.weights[1][:, 0] = 1.0 / 2000
        model.weights[1][0, 1] = 1.0
        model.weights[1][1, 2] = 1.0
    x = np.ones((200, N_FEATURES))
    if not training:
        return model.predict(x)
    with torch.no_grad():
        return model._forward(torch.from_numpy(x), training=True).numpy()


def test_dropout_is_inverted_and_seeded() -> None:
    out = dropout_probe(0, training=True)
    # Kept units are scaled by 1 / (1 - p); dropped ones are 0.
    assert set(np.round(out[:, 1:].ravel(), 9)) == {0.0, round(8.0 / 0.7, 9)}
    # So the expectation is unchanged: 400,000 units with mean 8 (std of the mean ~0.01).
    assert out[:, 0].mean() == pytest.approx(8.0, rel=0.01)
    assert np.array_equal(out, dropout_probe(0, training=True))  # same seed, same masks
    assert not np.array_equal(out, dropout_probe(1, training=True))
    # Inference: every unit, unscaled.
    np.testing.assert_allclose(dropout_probe(0, training=False)[:, :2], 8.0, rtol=1e-12)


def test_read_only_inputs_work_without_warnings() -> None:
    data = blobs()
    x, y = data.x_train.copy(), data.y_train.copy()
    x.flags.writeable = False
    y.flags.writeable = False
    model = TorchModel(small_config(), N_FEATURES, N_CLASSES, run_seeds(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.train_step(x, y)
        model.evaluate(x, y)
        model.predict(x)


def test_batch_of_one_keeps_batchnorm_statistics_finite() -> None:
    data = blobs()
    model = TorchModel(small_config(batchnorm=True), N_FEATURES, N_CLASSES, run_seeds(0))
    model.train_step(data.x_train[:32], data.y_train[:32])
    assert math.isfinite(model.train_step(data.x_train[:1], data.y_train[:1]))
    assert np.isfinite(model.predict(data.x_val)).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_follows_the_config(dtype: str) -> None:
    model = TorchModel(
        small_config(dtype=dtype, batchnorm=True), N_FEATURES, N_CLASSES, run_seeds(0)
    )
    assert {p.dtype for p in model.params} == {getattr(torch, dtype)}
    data = blobs()
    model.train_step(data.x_train[:32], data.y_train[:32])  # float32 input is converted
    assert model.predict(data.x_val).dtype == np.dtype(dtype)


def test_does_not_change_the_thread_count() -> None:
    before = torch.get_num_threads()
    train(small_config(epochs=1), blobs())
    assert torch.get_num_threads() == before


# -- devices ----------------------------------------------------------------------


def test_explicit_cpu_device() -> None:
    model = TorchModel(small_config(device="cpu"), N_FEATURES, N_CLASSES, run_seeds(0))
    assert all(p.device.type == "cpu" for p in model.params)
    data = blobs()
    assert math.isfinite(model.train_step(data.x_train[:32], data.y_train[:32]))


@pytest.mark.parametrize("index", [None, 1])
def test_unavailable_cuda_is_a_config_error(index: int | None) -> None:
    # Without CUDA any cuda device is unavailable; with CUDA, one past the last device is.
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        device = f"cuda:{count + (index or 0)}"
        expected = rf"device: got '{device}' but only {count} CUDA device\(s\) exist"
    else:
        device = "cuda" if index is None else f"cuda:{index}"
        expected = rf"device: got '{device}'.*CUDA is not available"
    with pytest.raises(ConfigError, match=expected):
        TorchModel(small_config(device=device), N_FEATURES, N_CLASSES, run_seeds(0))


def test_unknown_device_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="device: got 'gpu0'"):
        TorchModel(small_config(device="gpu0"), N_FEATURES, N_CLASSES, run_seeds(0))


@pytest.mark.cuda
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device; this machine has none"
)
def test_cuda_matches_cpu() -> None:
    data = blobs()
    histories = [
        train(small_config(device=d, dtype="float64", batchnorm=True), data)
        for d in ("cpu", "cuda")
    ]
    for cpu, gpu in zip(*(h.records for h in histories), strict=True):
        assert cpu.val_loss == pytest.approx(gpu.val_loss, abs=1e-6)


def test_missing_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(BackendUnavailableError, match=r"\.\[torch\]"):
        build_model(small_config(), N_FEATURES, N_CLASSES, run_seeds(0))


# -- parity with the NumPy backend --------------------------------------------------


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_same_history_as_numpy_in_float64(optimizer: str, batchnorm: bool) -> None:
    config = small_config(
        optimizer=optimizer,
        batchnorm=batchnorm,
        lr=LR[optimizer],
        weight_decay=1e-3,
        dtype="float64",
        dropout_ratio=0.0,
        epochs=4,
    )
    data = blobs()
    by_torch = train(config, data)
    by_numpy = train(config.replace(backend="numpy"), data)
    assert not by_torch.diverged and by_torch.epochs_completed == config.epochs
    assert by_numpy.epochs_completed == by_torch.epochs_completed
    for t_rec, n_rec in zip(by_torch.records, by_numpy.records, strict=True):
        t_values = dataclasses.asdict(t_rec)
        n_values = dataclasses.asdict(n_rec)
        for field in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert t_values[field] == pytest.approx(n_values[field], abs=1e-6), (
                f"epoch {t_rec.epoch} {field}: torch {t_values[field]!r} numpy {n_values[field]!r}"
            )


def test_same_history_as_numpy_with_a_trailing_batch_of_one() -> None:
    # 193 = 6 * 32 + 1: every epoch ends with a one-sample batch, which batch norm
    # normalizes with its own statistics without touching the running ones.
    config = small_config(batchnorm=True, dtype="float64", optimizer="momentum", lr=0.05)
    data = blobs(n_train=193)
    by_torch = train(config, data)
    by_numpy = train(config.replace(backend="numpy"), data)
    assert by_torch.epochs_completed == by_numpy.epochs_completed == config.epochs
    for t_rec, n_rec in zip(by_torch.records, by_numpy.records, strict=True):
        assert t_rec.val_loss == pytest.approx(n_rec.val_loss, abs=1e-6)
        assert t_rec.train_accuracy == pytest.approx(n_rec.train_accuracy, abs=1e-6)
