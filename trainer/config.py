"""The validated, frozen configuration of one training run.

Build it with keywords (``TrainConfig(lr=0.01, ...)``) or from a plain mapping
(``TrainConfig.from_mapping({...})``); either way every field is checked once,
here, and a bad value raises :class:`~trainer.errors.ConfigError` naming the
field, the value and what is allowed.

Optimizer update rules (identical in both backends; ``g`` already includes
``weight_decay * W`` for Affine weights):

    sgd:       W -= lr * g
    momentum:  v = momentum * v - lr * g;  W += v
    nesterov:  v = momentum * v - lr * g;  W += momentum * v - lr * g
    adagrad:   h += g * g;  W -= lr * g / (sqrt(h) + 1e-7)
    rmsprop:   h = 0.99 * h + 0.01 * g * g;  W -= lr * g / (sqrt(h) + 1e-7)
    adam:      t += 1;  m += (1 - 0.9) * (g - m);  v += (1 - 0.999) * (g * g - v)
               W -= lr * sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (sqrt(v) + 1e-7)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainer.errors import ConfigError

ACTIVATIONS = ("relu", "sigmoid", "tanh")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
BACKENDS = ("numpy", "torch")
DTYPES = ("float32", "float64")
NAMED_INITS = ("he", "xavier")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that defines one training run of the multi-layer network.

    Attributes:
        hidden_sizes: Units of each hidden layer, e.g. ``(100,) * 6``.
        activation: ``relu``, ``sigmoid`` or ``tanh``.
        weight_init: ``he`` (std sqrt(2/n_in)), ``xavier`` (std sqrt(1/n_in))
            or a positive float used as the std of every Affine weight.
        batchnorm: Batch norm before the activation of every hidden layer.
        dropout_ratio: Probability p of dropping a hidden unit, in [0, 1);
            inverted dropout after every hidden activation; 0 disables it.
        weight_decay: L2 strength lambda >= 0; loss += lambda/2 * sum(W**2)
            over Affine weights only.
        optimizer: One of ``OPTIMIZERS`` (update rules in the module doc).
        lr: Learning rate > 0.
        momentum: Momentum coefficient in [0, 1) for momentum and nesterov.
        epochs: Passes over the training split, >= 1.
        batch_size: Mini-batch size, >= 1 (the last batch of an epoch may be
            smaller).
        seed: Seed of every random draw of the run (init, shuffling, dropout).
        backend: ``numpy`` or ``torch`` (the ``torch`` extra).
        dtype: ``float32`` (default, for training) or ``float64`` (checks).
        device: Torch device (``cpu``, ``cuda``, ``cuda:1``); numpy needs
            ``cpu``.
    """

    hidden_sizes: tuple[int, ...] = (100, 100, 100, 100, 100, 100)
    activation: str = "relu"
    weight_init: str | float = "he"
    batchnorm: bool = False
    dropout_ratio: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    epochs: int = 10
    batch_size: int = 100
    seed: int = 0
    backend: str = "numpy"
    dtype: str = "float32"
    device: str = "cpu"

    def __post_init__(self) -> None:
        given = hidden = self.hidden_sizes
        if isinstance(hidden, (list, tuple)):
            object.__setattr__(self, "hidden_sizes", tuple(hidden))
            hidden = self.hidden_sizes
        if not isinstance(hidden, tuple) or not hidden:
            raise ConfigError(
                f"hidden_sizes: got {given!r}; expected a non-empty list "
                "of positive integers, e.g. [100, 100]"
            )
        for size in hidden:
            if not _is_int(size) or size < 1:
                raise ConfigError(
                    f"hidden_sizes: got {list(hidden)!r}; every size must be an integer >= 1"
                )
        _choice("activation", self.activation, ACTIVATIONS)
        init = self.weight_init
        if isinstance(init, str):
            _choice("weight_init", init, (*NAMED_INITS, "a positive std"))
        elif not _is_number(init) or not math.isfinite(init) or init <= 0:
            raise ConfigError(
                f"weight_init: got {init!r}; expected 'he', 'xavier' or a positive std"
            )
        else:
            object.__setattr__(self, "weight_init", float(init))
        if not isinstance(self.batchnorm, bool):
            raise ConfigError(f"batchnorm: got {self.batchnorm!r}; expected true or false")
        _number("dropout_ratio", self.dropout_ratio, low=0.0, high=1.0, high_open=True)
        _number("weight_decay", self.weight_decay, low=0.0)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _number("lr", self.lr, low=0.0, low_open=True)
        _number("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _integer("epochs", self.epochs, low=1)
        _integer("batch_size", self.batch_size, low=1)
        _integer("seed", self.seed, low=0)
        _choice("backend", self.backend, BACKENDS)
        _choice("dtype", self.dtype, DTYPES)
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"device: got {self.device!r}; expected e.g. 'cpu' or 'cuda'")
        if self.backend == "numpy" and self.device != "cpu":
            raise ConfigError(
                f"device: got {self.device!r}; the numpy backend runs on 'cpu' only "
                "(use backend = 'torch' for a GPU)"
            )
        for name in ("dropout_ratio", "weight_decay", "lr", "momentum"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; an unknown key is a ConfigError naming it."""
        known = set(cls.field_names())
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"{key}: unknown training option; allowed: {', '.join(sorted(known))}"
                )
        return cls(**dict(values))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hidden_sizes"] = list(self.hidden_sizes)
        return out


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{name}: got {value!r}; allowed: {', '.join(allowed)}")


def _integer(name: str, value: object, *, low: int) -> None:
    if not _is_int(value) or value < low:
        raise ConfigError(f"{name}: got {value!r}; expected an integer >= {low}")


def _number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = _is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        if low is not None and high is not None:
            allowed = f"a number in {lo}, {hi}"
        elif low is not None:
            allowed = f"a number {'>' if low_open else '>='} {low:g}"
        else:
            allowed = "a finite number"
        raise ConfigError(f"{name}: got {value!r}; expected {allowed}")
