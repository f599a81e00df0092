"""The NumPy network recomputed in PyTorch float64 (micrograd style), within 1e-6.

The torch network is built here from plain modules with the NumPy weights
copied in: ``nn.Linear`` (weight = W.T), ``nn.BatchNorm1d`` (momentum 0.1,
eps 1e-5), the activation, and dropout as multiplication by the same fixed
mask scaled by 1 / (1 - p). The weight decay term is added to the loss by
hand over the Linear weights only.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trainer.config import TrainConfig  # noqa: E402
from trainer.init import initial_affine_params  # noqa: E402
from trainer.numpy_backend import MultiLayerNet  # noqa: E402

pytestmark = pytest.mark.torch

SIZES = [7, 6, 5, 4, 3]
P = 0.3
LAMBDA = 0.05
LR = 0.1


def close(actual: object, expected: object, what: str = "") -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6, err_msg=what)


class TorchTwin:
    """The same network as a MultiLayerNet, in torch float64."""

    def __init__(self, net: MultiLayerNet) -> None:
        act = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}
        self.linears: list[torch.nn.Linear] = []
        self.norms: list[torch.nn.BatchNorm1d] = []
        self.activations = []
        n_affine = len(SIZES) - 1
        for i in range(1, n_affine + 1):
            linear = torch.nn.Linear(SIZES[i - 1], SIZES[i], dtype=torch.float64)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(net.params[f"W{i}"].T.copy()))
                linear.bias.copy_(torch.from_numpy(net.params[f"b{i}"]))
            self.linears.append(linear)
            if i == n_affine:
                break
            if net.batchnorm:
                norm = torch.nn.BatchNorm1d(SIZES[i], momentum=0.1, eps=1e-5, dtype=torch.float64)
                with torch.no_grad():
                    norm.weight.copy_(torch.from_numpy(net.params[f"gamma{i}"]))
                    norm.bias.copy_(torch.from_numpy(net.params[f"beta{i}"]))
                self.norms.append(norm)
            self.activations.append(act[net.activation]())
        self.batchnorm = net.batchnorm
        self.dropout_ratio = net.dropout_ratio
        self.weight_decay = net.weight_decay

    def parameters(self) -> list[torch.Tensor]:
        params = [p for m in self.linears for p in m.parameters()]
        return params + [p for m in self.norms for p in m.parameters()]

    def forward(self, x: np.ndarray, masks: list[np.ndarray] | None, train: bool) -> torch.Tensor:
        for m in self.norms:
            m.train(train)
        h = torch.from_numpy(x)
        for i, linear in enumerate(self.linears):
            h = linear(h)
            if i == len(self.linears) - 1:
                break
            if self.batchnorm:
                h = self.norms[i](h)
            h = self.activations[i](h)
            if train and masks is not None:
                h = h * torch.from_numpy(masks[i].astype(np.float64)) / (1 - self.dropout_ratio)
        return h

    def loss(self, logits: torch.Tensor, t: np.ndarray) -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(t))
        return loss + self.weight_decay / 2 * sum((m.weight**2).sum() for m in self.linears)

    def grads(self) -> dict[str, np.ndarray]:
        out = {}
        for i, linear in enumerate(self.linears, start=1):
            out[f"W{i}"] = linear.weight.grad.numpy().T
            out[f"b{i}"] = linear.bias.grad.numpy()
        for i, norm in enumerate(self.norms, start=1):
            out[f"gamma{i}"] = norm.weight.grad.numpy()
            out[f"beta{i}"] = norm.bias.grad.numpy()
        return out


def make_pair(activation: str, batchnorm: bool, dropout: bool) -> tuple[MultiLayerNet, TorchTwin]:
    config = TrainConfig(hidden_sizes=tuple(SIZES[1:-1]), activation=activation)
    net = MultiLayerNet(
        sizes=SIZES,
        affine_params=initial_affine_params(config, SIZES[0], SIZES[-1], np.random.default_rng(0)),
        activation=activation,
        batchnorm=batchnorm,
        dropout_ratio=P if dropout else 0.0,
        weight_decay=LAMBDA,
        dtype=np.float64,
        dropout_rng=np.random.default_rng(1),
    )
    rng = np.random.default_rng(2)
    for name, value in net.params.items():
        if not name.startswith("W"):
            value += 0.3 * rng.standard_normal(value.shape)
    return net, TorchTwin(net)


def make_batch(seed: int, n: int = 10) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(100 + seed)
    x = 2 * rng.standard_normal((n, SIZES[0])) + 0.5
    t = rng.integers(0, SIZES[-1], n)
    masks = [rng.random((n, width)) >= P for width in SIZES[1:-1]]
    return x, t, masks


def set_masks(net: MultiLayerNet, masks: list[np.ndarray]) -> None:
    for i, layer in enumerate(net.dropout_layers):
        layer.fixed_mask = masks[i]


CASES = [
    ("relu", True, True),
    ("relu", False, True),
    ("relu", True, False),
    ("sigmoid", True, True),
    ("tanh", True, True),
    ("tanh", False, False),
]


@pytest.mark.parametrize(("activation", "batchnorm", "dropout"), CASES)
def test_loss_logits_and_every_gradient_match_torch(
    activation: str, batchnorm: bool, dropout: bool
) -> None:
    net, twin = make_pair(activation, batchnorm, dropout)
    x, t, masks = make_batch(0)
    set_masks(net, masks)
    loss, grads = net.loss_and_gradient(x, t)
    logits = net.last_layer.probs  # softmax cached by the training forward

    torch_logits = twin.forward(x, masks if dropout else None, train=True)
    torch_loss = twin.loss(torch_logits, t)
    torch_loss.backward()

    close(loss, torch_loss.item(), "loss")
    close(logits, torch.softmax(torch_logits, dim=1).detach().numpy(), "softmax")
    close(net.predict(x, train=True), torch_logits.detach().numpy(), "logits")
    expected = twin.grads()
    assert set(grads) == set(expected)
    for name, value in expected.items():
        close(grads[name], value, name)


@pytest.mark.parametrize(("activation", "batchnorm", "dropout"), CASES[:2])
def test_running_stats_and_inference_match_torch_after_training(
    activation: str, batchnorm: bool, dropout: bool
) -> None:
    net, twin = make_pair(activation, batchnorm, dropout)
    torch_params = twin.parameters()
    for step in range(5):
        x, t, masks = make_batch(step, n=10 + step)
        set_masks(net, masks)
        _, grads = net.loss_and_gradient(x, t)
        for name, value in net.params.items():
            value -= LR * grads[name]
        for p in torch_params:
            p.grad = None
        twin.loss(twin.forward(x, masks if dropout else None, train=True), t).backward()
        with torch.no_grad():
            for p in torch_params:
                p -= LR * p.grad

    for i, (bn, norm) in enumerate(zip(net.batchnorm_layers, twin.norms, strict=True), start=1):
        close(bn.running_mean, norm.running_mean.numpy(), f"running_mean{i}")
        close(bn.running_var, norm.running_var.numpy(), f"running_var{i}")
    assert len(net.batchnorm_layers) == (len(SIZES) - 2 if batchnorm else 0)
    for i, linear in enumerate(twin.linears, start=1):
        close(net.params[f"W{i}"], linear.weight.detach().numpy().T, f"W{i}")

    x, t, _ = make_batch(99, n=7)
    with torch.no_grad():
        expected = twin.forward(x, None, train=False)
        expected_loss = torch.nn.functional.cross_entropy(expected, torch.from_numpy(t))
    close(net.predict(x, train=False), expected.numpy(), "inference logits")
    close(net.loss(x, t, train=False) - net.decay_loss(), expected_loss.item(), "inference loss")


def test_float32_network_agrees_with_float64_torch() -> None:
    net64, twin = make_pair("relu", True, True)
    net32 = MultiLayerNet(
        sizes=SIZES,
        affine_params=[
            (net64.params[f"W{i}"], net64.params[f"b{i}"]) for i in range(1, len(SIZES))
        ],
        batchnorm=True,
        dropout_ratio=P,
        weight_decay=LAMBDA,
        dtype=np.float32,
        dropout_rng=np.random.default_rng(1),
    )
    net32.flat_params[...] = net64.flat_params
    x, t, masks = make_batch(0)
    set_masks(net32, masks)
    loss, grads = net32.loss_and_gradient(x.astype(np.float32), t)
    torch_loss = twin.loss(twin.forward(x, masks, train=True), t)
    torch_loss.backward()
    np.testing.assert_allclose(loss, torch_loss.item(), rtol=1e-5)
    for name, value in twin.grads().items():
        assert grads[name].dtype == np.float32
        np.testing.assert_allclose(grads[name], value, rtol=1e-3, atol=1e-5, err_msg=name)
