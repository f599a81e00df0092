"""The PyTorch backend: the same network, loss and optimizers as the NumPy one.

Only this module imports torch (the ``torch`` extra); :func:`trainer.backend.build_model`
imports it lazily when ``backend = "torch"``.

Architecture, per hidden layer: Affine -> [batch norm] -> activation ->
[inverted dropout]; then a last Affine and softmax cross-entropy. Parameters are
plain tensors driven by autograd, not ``nn.Module`` objects, to keep the per-step
overhead low. Conventions, identical to the NumPy backend (see DESIGN.md):

* Weights: ``trainer.init.initial_affine_params`` drawn from ``seeds.init`` in
  float64 and cast to the config's dtype, so both backends start from the same
  numbers. ``W`` keeps NumPy's (n_in, n_out) layout and a layer computes
  ``x @ W + b`` (``nn.Linear`` would store the transpose).
* Batch norm: ``torch.batch_norm`` with eps 1e-5 and momentum 0.1 (NumPy's 0.9
  EMA); the batch is normalized with the biased variance and the running
  variance stores the unbiased one; running mean 0 and running variance 1 at
  the start; gamma 1, beta 0.
* Dropout: inverted; each unit is kept with probability 1 - p and scaled by
  1 / (1 - p) while training; identity at inference. Masks come from a
  ``torch.Generator`` on the model's device seeded with ``seeds.dropout``.
* Weight decay: ``loss += weight_decay / 2 * sum(W**2)`` over Affine weights
  only; their gradients get ``weight_decay * W`` (not the optimizer's built-in
  decay on every parameter).
* Optimizers: the update rules of :mod:`trainer.config`, written out with
  ``torch._foreach_*`` ops under ``torch.no_grad()``; ``torch.optim`` is not
  used, its formulas differ (eps placement, bias correction, Nesterov form).

The model sets no global torch state: no global seed, no default dtype and no
thread count (how many threads a trial uses is the caller's choice).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from trainer.config import TrainConfig
from trainer.errors import ConfigError
from trainer.init import initial_affine_params
from trainer.seeding import RunSeeds

BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # PyTorch's convention for NumPy's running = 0.9 * running + 0.1 * batch
OPTIMIZER_EPS = 1e-7
RMSPROP_DECAY = 0.99
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str) -> torch.device:
    """The torch device named by the config, or a ConfigError if it is unusable.

    Raises:
        ConfigError: The name is not a torch device, or this machine (or this
            torch build) cannot allocate memory on it.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"device: got {name!r}; expected a torch device such as 'cpu', 'cuda' or 'cuda:0'"
        ) from exc
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"device: got {name!r} but CUDA is not available here "
                f"(torch {torch.__version__}); use device = 'cpu'"
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"device: got {name!r} but only {count} CUDA device(s) exist "
                f"(cuda:0..cuda:{count - 1})"
            )
    if device.type != "cpu":
        try:
            torch.empty(1, device=device)
        except (RuntimeError, AssertionError) as exc:
            raise ConfigError(f"device: got {name!r}, which is not usable here: {exc}") from exc
    return device


class TorchModel:
    """The multi-layer network in PyTorch, implementing :class:`trainer.backend.Model`.

    Args:
        config: The run's configuration (architecture, optimizer, dtype, device).
        n_features: Input width.
        n_classes: Number of classes (width of the last Affine layer).
        seeds: The run's seed streams; ``init`` fixes the weights and
            ``dropout`` the dropout masks.

    Raises:
        ConfigError: ``config.device`` is not available.
    """

    def __init__(
        self, config: TrainConfig, n_features: int, n_classes: int, seeds: RunSeeds
    ) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = _DTYPES[config.dtype]
        self._np_dtype = np.dtype(config.dtype)
        self._activation = _ACTIVATIONS[config.activation]
        self._dropout = config.dropout_ratio
        self._weight_decay = config.weight_decay

        def tensor(values: np.ndarray) -> torch.Tensor:
            return torch.tensor(values, dtype=self.dtype, device=self.device)

        rng = np.random.default_rng(seeds.init)
        affine = initial_affine_params(config, n_features, n_classes, rng)
        self.weights: list[torch.Tensor] = [tensor(w).requires_grad_() for w, _ in affine]
        self.biases: list[torch.Tensor] = [tensor(b).requires_grad_() for _, b in affine]
        n_hidden = len(config.hidden_sizes)
        self.gammas: list[torch.Tensor] = []
        self.betas: list[torch.Tensor] = []
        self.running_means: list[torch.Tensor] = []
        self.running_vars: list[torch.Tensor] = []
        if config.batchnorm:
            for size in config.hidden_sizes:
                self.gammas.append(tensor(np.ones(size)).requires_grad_())
                self.betas.append(tensor(np.zeros(size)).requires_grad_())
                self.running_means.append(tensor(np.zeros(size)))
                self.running_vars.append(tensor(np.ones(size)))
        # Every trainable tensor, weights first: their gradients are the ones
        # that get weight decay.
        self.params: list[torch.Tensor] = [
            *self.weights,
            *self.biases,
            *self.gammas,
            *self.betas,
        ]
        self._n_hidden = n_hidden
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(seeds.dropout)
        self._step_count = 0
        self._state: list[list[torch.Tensor]] = []
        if config.optimizer in ("momentum", "nesterov", "adagrad", "rmsprop"):
            self._state = [[torch.zeros_like(p) for p in self.params]]
        elif config.optimizer == "adam":
            self._state = [
                [torch.zeros_like(p) for p in self.params],
                [torch.zeros_like(p) for p in self.params],
            ]
        self._update = getattr(self, f"_update_{config.optimizer}")

    # -- data --------------------------------------------------------------

    def _as_tensor(self, x: np.ndarray, dtype: np.dtype) -> torch.Tensor:
        """Zero-copy on CPU when ``x`` already has the right dtype and layout.

        Read-only arrays (e.g. from a Ray object store) are copied so torch
        never aliases memory it may not write.
        """
        array = np.ascontiguousarray(x, dtype=dtype)
        if not array.flags.writeable:
            array = array.copy()
        return torch.from_numpy(array).to(self.device)

    # -- forward -----------------------------------------------------------

    def _forward(self, x: torch.Tensor, *, training: bool) -> torch.Tensor:
        batchnorm = bool(self.gammas)
        keep = 1.0 - self._dropout
        h = x
        for i in range(self._n_hidden):
            h = torch.addmm(self.biases[i], h, self.weights[i])
            if batchnorm:
                # A training batch of one sample has no unbiased variance: it is
                # normalized with its own statistics but leaves the running
                # ones unchanged (instead of filling them with NaN).
                update_running = not training or h.shape[0] > 1
                h = torch.batch_norm(
                    h,
                    self.gammas[i],
                    self.betas[i],
                    self.running_means[i] if update_running else None,
                    self.running_vars[i] if update_running else None,
                    training,
                    BN_MOMENTUM,
                    BN_EPS,
                    False,
                )
            h = self._activation(h)
            if training and self._dropout > 0.0:
                # Keep a unit when U[0, 1) >= p (probability 1 - p); rand + ge_
                # is several times faster than bernoulli_ on CPU.
                mask = torch.rand(
                    h.shape, generator=self._generator, dtype=h.dtype, device=h.device
                )
                h = h * mask.ge_(self._dropout).mul_(1.0 / keep)
        return torch.addmm(self.biases[-1], h, self.weights[-1])

    # -- Model protocol ----------------------------------------------------

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """Forward, backward and one optimizer update on a mini-batch.

        Returns:
            Mean cross-entropy of the batch plus ``weight_decay / 2 * sum(W**2)``
            (weights before this step's update); NaN or inf when diverged.
        """
        inputs = self._as_tensor(x, self._np_dtype)
        labels = self._as_tensor(y, np.dtype(np.int64))
        logits = self._forward(inputs, training=True)
        loss = F.cross_entropy(logits, labels)
        grads = list(torch.autograd.grad(loss, self.params))
        with torch.no_grad():
            if self._weight_decay > 0.0:
                n_weights = len(self.weights)
                squares = torch.stack(torch._foreach_norm(self.weights)).square().sum()
                loss = loss + 0.5 * self._weight_decay * squares
                torch._foreach_add_(grads[:n_weights], self.weights, alpha=self._weight_decay)
            value = float(loss)
            self._update(grads)
        return value

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Inference-mode mean cross-entropy (no weight decay) and accuracy."""
        labels = self._as_tensor(y, np.dtype(np.int64))
        with torch.inference_mode():
            logits = self._forward(self._as_tensor(x, self._np_dtype), training=False)
            loss = F.cross_entropy(logits, labels)
            correct = (logits.argmax(dim=1) == labels).sum()
            return float(loss), int(correct) / max(len(labels), 1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Inference-mode logits, shape (n, n_classes), as a NumPy array."""
        with torch.inference_mode():
            logits = self._forward(self._as_tensor(x, self._np_dtype), training=False)
            return logits.cpu().numpy()

    # -- optimizers (rules in trainer.config) -------------------------------

    def _update_sgd(self, grads: list[torch.Tensor]) -> None:
        # W -= lr * g
        torch._foreach_add_(self.params, grads, alpha=-self.config.lr)

    def _update_momentum(self, grads: list[torch.Tensor]) -> None:
        # v = momentum * v - lr * g;  W += v
        (v,) = self._state
        torch._foreach_mul_(v, self.config.momentum)
        torch._foreach_add_(v, grads, alpha=-self.config.lr)
        torch._foreach_add_(self.params, v)

    def _update_nesterov(self, grads: list[torch.Tensor]) -> None:
        # v = momentum * v - lr * g;  W += momentum * v - lr * g
        (v,) = self._state
        momentum, lr = self.config.momentum, self.config.lr
        torch._foreach_mul_(v, momentum)
        torch._foreach_add_(v, grads, alpha=-lr)
        step = torch._foreach_mul(v, momentum)
        torch._foreach_add_(step, grads, alpha=-lr)
        torch._foreach_add_(self.params, step)

    def _update_adagrad(self, grads: list[torch.Tensor]) -> None:
        # h += g * g;  W -= lr * g / (sqrt(h) + 1e-7)
        (h,) = self._state
        torch._foreach_addcmul_(h, grads, grads)
        denom = torch._foreach_sqrt(h)
        torch._foreach_add_(denom, OPTIMIZER_EPS)
        torch._foreach_addcdiv_(self.params, grads, denom, value=-self.config.lr)

    def _update_rmsprop(self, grads: list[torch.Tensor]) -> None:
        # h = 0.99 * h + 0.01 * g * g;  W -= lr * g / (sqrt(h) + 1e-7)
        (h,) = self._state
        torch._foreach_mul_(h, RMSPROP_DECAY)
        torch._foreach_addcmul_(h, grads, grads, value=1.0 - RMSPROP_DECAY)
        denom = torch._foreach_sqrt(h)
        torch._foreach_add_(denom, OPTIMIZER_EPS)
        torch._foreach_addcdiv_(self.params, grads, denom, value=-self.config.lr)

    def _update_adam(self, grads: list[torch.Tensor]) -> None:
        # t += 1;  m += (1 - 0.9) * (g - m);  v += (1 - 0.999) * (g * g - v)
        # W -= lr * sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (sqrt(v) + 1e-7)
        m, v = self._state
        self._step_count += 1
        t = self._step_count
        torch._foreach_lerp_(m, grads, 1.0 - ADAM_BETA1)
        torch._foreach_lerp_(v, torch._foreach_mul(grads, grads), 1.0 - ADAM_BETA2)
        lr_t = self.config.lr * math.sqrt(1.0 - ADAM_BETA2**t) / (1.0 - ADAM_BETA1**t)
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, OPTIMIZER_EPS)
        torch._foreach_addcdiv_(self.params, m, denom, value=-lr_t)
