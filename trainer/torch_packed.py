"""K torch networks of one architecture trained as one stacked computation.

The torch side of trial packing (:mod:`trainer.packed`), and the way a pack
uses a GPU: one small network leaves most of a GPU idle, while K of them
stacked along a model axis run as a few batched kernels per layer. Only this
module (and :mod:`trainer.torch_backend`) imports torch.

Layout: Affine weights are (K, n_in, n_out) leaf tensors, biases, gamma and
beta (K, n); activations (K, batch, n). Per-model hyperparameters (lr, weight
decay, dropout ratio, momentum) are (K, 1, ...) columns that broadcast.

Each member computes what :class:`~trainer.torch_backend.TorchModel` computes
for its config alone:

* initial weights from ``initial_affine_params`` with its own ``seeds.init``;
* ``torch.baddbmm`` per layer (per model the same product and bias addition as
  ``torch.addmm``);
* batch norm with the model's own gamma, beta and running statistics (updated
  in place; not for a training batch of one);
* dropout masks from the model's own ``torch.Generator`` (seeded with
  ``seeds.dropout``), one ``torch.rand((batch, n))`` per layer and step, in the
  single model's order; a model with ratio 0 draws nothing;
* the same cross-entropy gradient (the mean over each model's batch);
* weight decay and the optimizer rules of :mod:`trainer.config` with the
  single model's operations, a per-model scalar becoming a column
  (``add(g, alpha=-lr)`` as ``addcmul(g, -lr)``, ``addcdiv`` as the same
  multiply, divide and add).

Where a batched kernel rounds differently from the lone model's (see
``batched`` in :class:`PackedTorchModel`), the CPU default runs that step per
model, so on the CPU packed Histories equal ``TorchModel``'s bit for bit (the
training losses returned per step are summed per model in one call and may
differ in the last bits; only their finiteness is used). On a GPU everything
is batched and results agree within float tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from trainer.config import TrainConfig
from trainer.init import initial_affine_params
from trainer.seeding import RunSeeds
from trainer.torch_backend import (
    _ACTIVATIONS,
    _DTYPES,
    ADAM_BETA1,
    ADAM_BETA2,
    BN_EPS,
    BN_MOMENTUM,
    OPTIMIZER_EPS,
    RMSPROP_DECAY,
    resolve_device,
)

__all__ = ["PackedTorchModel"]

#: torch's CPU baddbmm computes products with fewer than this many
#: multiply-adds per matrix with a naive loop instead of BLAS.
BMM_NAIVE = 400


class PackedTorchModel:
    """K torch networks of one architecture, stacked along a leading model axis.

    Implements :class:`trainer.packed.PackedModel`.

    Args:
        configs: One config per model, all packable (same architecture,
            optimizer, batch size, dtype and device).
        n_features: Input width.
        n_classes: Number of classes.
        seeds: The run seeds of each model (``init`` and ``dropout`` are used).
        batched: Run every step of all models as batched kernels: batch norm
            in one ``torch.batch_norm`` call on the (batch, K * n) view,
            ``baddbmm`` for every product, one sigmoid call. Otherwise (the
            CPU default) the few steps whose batched kernel rounds differently
            from the lone model's - batch norm's input gradient (it depends on
            the channel count), products below :data:`BMM_NAIVE` multiply-adds
            or with a dimension of one, CPU sigmoid - run per model, and a
            packed model matches ``TorchModel`` bit for bit. Batched (the GPU
            default, where kernel launches are what packing saves) it matches
            within float tolerance, which in float32 an adaptive optimizer
            can amplify through the BN-cancelled bias gradients.

    Raises:
        ConfigError: The configs' device is not available.
    """

    def __init__(
        self,
        configs: Sequence[TrainConfig],
        n_features: int,
        n_classes: int,
        seeds: Sequence[RunSeeds],
        *,
        batched: bool | None = None,
    ) -> None:
        if not configs or len(configs) != len(seeds):
            raise ValueError("PackedTorchModel: need one RunSeeds per config and at least one")
        first = configs[0]
        self.device = resolve_device(first.device)
        self.dtype = _DTYPES[first.dtype]
        self._np_dtype = np.dtype(first.dtype)
        self._activation = _ACTIVATIONS[first.activation]
        self.optimizer = first.optimizer
        self.batchnorm = first.batchnorm
        if batched is None:
            batched = self.device.type != "cpu"
        self.batched = bool(batched)
        n_hidden = len(first.hidden_sizes)
        self._n_hidden = n_hidden

        affine = [
            initial_affine_params(c, n_features, n_classes, np.random.default_rng(s.init))
            for c, s in zip(configs, seeds, strict=True)
        ]

        def stack(values: list[np.ndarray]) -> torch.Tensor:
            return torch.tensor(np.stack(values), dtype=self.dtype, device=self.device)

        n_layers = n_hidden + 1
        weights = [stack([a[i][0] for a in affine]) for i in range(n_layers)]
        biases = [stack([a[i][1] for a in affine]) for i in range(n_layers)]
        k = len(configs)
        gammas, betas = [], []
        self.running_means: list[torch.Tensor] = []
        self.running_vars: list[torch.Tensor] = []
        if self.batchnorm:
            for size in first.hidden_sizes:
                gammas.append(torch.ones(k, size, dtype=self.dtype, device=self.device))
                betas.append(torch.zeros(k, size, dtype=self.dtype, device=self.device))
                self.running_means.append(
                    torch.zeros(k, size, dtype=self.dtype, device=self.device)
                )
                self.running_vars.append(torch.ones(k, size, dtype=self.dtype, device=self.device))
        # Every trainable stack, weights first (their gradients get weight decay).
        self.params = [p.requires_grad_() for p in (*weights, *biases, *gammas, *betas)]
        self._n_weights = n_layers

        self.lrs = [c.lr for c in configs]
        self.weight_decays = [c.weight_decay for c in configs]
        self.momentums = [c.momentum for c in configs]
        self.dropout_ratios = [c.dropout_ratio for c in configs]
        self.generators: list[torch.Generator | None] = []
        for config, seed in zip(configs, seeds, strict=True):
            generator = None
            if config.dropout_ratio > 0.0:
                generator = torch.Generator(device=self.device)
                generator.manual_seed(seed.dropout)
            self.generators.append(generator)
        self.state: list[list[torch.Tensor]] = []
        if self.optimizer in ("momentum", "nesterov", "adagrad", "rmsprop"):
            self.state = [[torch.zeros_like(p) for p in self.params]]
        elif self.optimizer == "adam":
            self.state = [[torch.zeros_like(p) for p in self.params] for _ in range(2)]
        self.step_count = 0
        self._rebuild()

    # -- stacking ----------------------------------------------------------------

    @property
    def n_models(self) -> int:
        """How many models the stack holds now."""
        return int(self.params[0].shape[0])

    @property
    def weights(self) -> list[torch.Tensor]:
        return self.params[: self._n_weights]

    @property
    def biases(self) -> list[torch.Tensor]:
        return self.params[self._n_weights : 2 * self._n_weights]

    @property
    def gammas(self) -> list[torch.Tensor]:
        n = self._n_hidden if self.batchnorm else 0
        return self.params[2 * self._n_weights : 2 * self._n_weights + n]

    @property
    def betas(self) -> list[torch.Tensor]:
        n = self._n_hidden if self.batchnorm else 0
        return self.params[2 * self._n_weights + n :]

    def _column(self, values: list[float], like: torch.Tensor) -> torch.Tensor:
        """A (K, 1, ...) tensor of per-model values that broadcasts against ``like``."""
        shape = (len(values),) + (1,) * (like.dim() - 1)
        return torch.tensor(values, dtype=self.dtype, device=self.device).reshape(shape)

    def _rebuild(self) -> None:
        """The per-model columns and flags of the current stack."""
        self._neg_lr = [self._column([-lr for lr in self.lrs], p) for p in self.params]
        self._momentum = [self._column(self.momentums, p) for p in self.params]
        self._wd = [self._column(self.weight_decays, w) for w in self.weights]
        self.decay_rows = [m for m, wd in enumerate(self.weight_decays) if wd > 0.0]
        self.dropout = any(p > 0.0 for p in self.dropout_ratios)
        column = torch.tensor(self.dropout_ratios, dtype=self.dtype, device=self.device)
        self._drop_p = column.reshape(-1, 1, 1)
        self._drop_scale = torch.tensor(
            [1.0 / (1.0 - p) for p in self.dropout_ratios], dtype=self.dtype, device=self.device
        ).reshape(-1, 1, 1)

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only the models at ``rows`` (positions in the current stack), in order."""
        rows = [int(r) for r in rows]
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        with torch.no_grad():
            self.params = [p.index_select(0, index).requires_grad_() for p in self.params]
            self.state = [[s.index_select(0, index) for s in group] for group in self.state]
            self.running_means = [r.index_select(0, index) for r in self.running_means]
            self.running_vars = [r.index_select(0, index) for r in self.running_vars]
        for name in ("lrs", "weight_decays", "momentums", "dropout_ratios", "generators"):
            values = getattr(self, name)
            setattr(self, name, [values[m] for m in rows])
        self._rebuild()

    # -- data --------------------------------------------------------------------

    def _as_tensor(self, x: np.ndarray, dtype: np.dtype) -> torch.Tensor:
        array = np.ascontiguousarray(x, dtype=dtype)
        if not array.flags.writeable:
            array = array.copy()
        return torch.from_numpy(array).to(self.device)

    # -- forward -----------------------------------------------------------------

    def _affine(self, h: torch.Tensor, i: int) -> torch.Tensor:
        """``h[k] @ W[k] + b[k]`` for every model, (K, rows, n_out)."""
        w, b = self.weights[i], self.biases[i]
        rows, n_in, n_out = h.shape[1], w.shape[1], w.shape[2]
        if self.batched or (min(rows, n_in, n_out) > 1 and rows * n_in * n_out >= BMM_NAIVE):
            return torch.baddbmm(b.unsqueeze(1), h, w)
        # On the CPU, baddbmm runs tiny products (and addmm matrix-vector
        # ones) with other kernels that round differently: run the single
        # model's addmm per model.
        return torch.stack([torch.addmm(b[m], h[m], w[m]) for m in range(w.shape[0])])

    def _activate(self, h: torch.Tensor) -> torch.Tensor:
        if not self.batched and self._activation is torch.sigmoid:
            # CPU sigmoid rounds an element differently depending on where it
            # falls in the vectorized loop: run it on each model's own array.
            return torch.stack([torch.sigmoid(h[m]) for m in range(h.shape[0])])
        return self._activation(h)

    def _batchnorm(self, h: torch.Tensor, i: int, *, training: bool) -> torch.Tensor:
        """Batch norm of each model's (batch, n) slice of the (K, batch, n) stack."""
        k, batch, n = h.shape
        update_running = not training or batch > 1
        means = self.running_means[i] if update_running else None
        variances = self.running_vars[i] if update_running else None
        if self.batched:
            # One call: model k's units are the channels k*n .. k*n + n - 1.
            out = torch.batch_norm(
                h.transpose(0, 1).reshape(batch, k * n),
                self.gammas[i].reshape(-1),
                self.betas[i].reshape(-1),
                None if means is None else means.view(-1),
                None if variances is None else variances.view(-1),
                training,
                BN_MOMENTUM,
                BN_EPS,
                False,
            )
            return out.reshape(batch, k, n).transpose(0, 1)
        return torch.stack(
            [
                torch.batch_norm(
                    h[m],
                    self.gammas[i][m],
                    self.betas[i][m],
                    None if means is None else means[m],
                    None if variances is None else variances[m],
                    training,
                    BN_MOMENTUM,
                    BN_EPS,
                    False,
                )
                for m in range(k)
            ]
        )

    def _dropout_mask(self, shape: tuple[int, int, int]) -> torch.Tensor:
        """(K, batch, n) masks of 0 or 1 / (1 - p), one draw per model with p > 0."""
        _, batch, n = shape
        draws = []
        for generator in self.generators:
            if generator is None:
                # Never below p = 0: kept, scaled by 1.
                draws.append(torch.ones(batch, n, dtype=self.dtype, device=self.device))
            else:
                draws.append(
                    torch.rand(
                        (batch, n), generator=generator, dtype=self.dtype, device=self.device
                    )
                )
        mask = torch.stack(draws)
        return mask.ge_(self._drop_p).mul_(self._drop_scale)

    def _forward(self, x: torch.Tensor, *, training: bool) -> torch.Tensor:
        """Logits (K, batch, C); ``x`` is (K, batch, d) or shared (batch, d)."""
        k = self.n_models
        h = x if x.dim() == 3 else x.expand(k, *x.shape)
        for i in range(self._n_hidden):
            h = self._affine(h, i)
            if self.batchnorm:
                h = self._batchnorm(h, i, training=training)
            h = self._activate(h)
            if training and self.dropout:
                h = h * self._dropout_mask(tuple(h.shape))
        return self._affine(h, self._n_hidden)

    # -- PackedModel protocol ------------------------------------------------------

    def train_step(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Forward, backward and one optimizer update of every model.

        Args:
            x: (K, batch, n_features) inputs, model ``k``'s batch in ``x[k]``.
            y: (K, batch) integer labels.

        Returns:
            (K,) float64 losses: each model's mean cross-entropy plus
            ``weight_decay / 2 * sum(W**2)`` (weights before this step), equal
            to ``TorchModel.train_step``'s up to rounding; non-finite when it is.
        """
        inputs = self._as_tensor(x, self._np_dtype)
        labels = self._as_tensor(y, np.dtype(np.int64))
        k, batch = labels.shape
        logits = self._forward(inputs, training=True)
        per_sample = F.cross_entropy(
            logits.reshape(k * batch, -1), labels.reshape(-1), reduction="none"
        )
        losses = per_sample.reshape(k, batch).mean(dim=1)
        grads = list(torch.autograd.grad(losses.sum(), self.params))
        with torch.no_grad():
            values = losses.double().cpu().numpy()
            if self.decay_rows:
                norms = torch.stack([torch.linalg.vector_norm(w, dim=(1, 2)) for w in self.weights])
                squares = norms.square().sum(dim=0).double().cpu().numpy()
                for m in self.decay_rows:
                    values[m] += 0.5 * self.weight_decays[m] * squares[m]
                self._add_decay(grads)
            self._update(grads)
        return values

    def _add_decay(self, grads: list[torch.Tensor]) -> None:
        """``g += weight_decay * W`` for the models with decay (as ``add(alpha=wd)``)."""
        n = self._n_weights
        if len(self.decay_rows) == self.n_models:
            for g, w, wd in zip(grads[:n], self.weights, self._wd, strict=True):
                g.addcmul_(w, wd)
            return
        for m in self.decay_rows:
            wd = self.weight_decays[m]
            for g, w in zip(grads[:n], self.weights, strict=True):
                g[m].add_(w[m], alpha=wd)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inference-mode mean cross-entropy (no decay) and accuracy per model.

        Returns:
            Two (K,) float64 arrays; NaN when ``y`` is empty.
        """
        k, n = self.n_models, len(y)
        if n == 0:
            return np.full(k, math.nan), np.full(k, math.nan)
        labels = self._as_tensor(y, np.dtype(np.int64))
        with torch.inference_mode():
            logits = self._forward(self._as_tensor(x, self._np_dtype), training=False)
            losses = torch.stack([F.cross_entropy(logits[m], labels) for m in range(k)])
            correct = (logits.argmax(dim=2) == labels).sum(dim=1)
            return losses.double().cpu().numpy(), correct.cpu().numpy() / n

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Inference-mode logits of every model for shared inputs, (K, n, C), NumPy."""
        with torch.inference_mode():
            return self._forward(self._as_tensor(x, self._np_dtype), training=False).cpu().numpy()

    # -- optimizers (rules in trainer.config, TorchModel's operations) --------------

    def _update(self, grads: list[torch.Tensor]) -> None:
        params = self.params
        name = self.optimizer
        if name == "sgd":
            # W -= lr * g
            for p, g, neg_lr in zip(params, grads, self._neg_lr, strict=True):
                p.addcmul_(g, neg_lr)
        elif name == "momentum":
            # v = momentum * v - lr * g;  W += v
            (v,) = self.state
            for p, g, vi, mom, neg_lr in zip(
                params, grads, v, self._momentum, self._neg_lr, strict=True
            ):
                vi.mul_(mom).addcmul_(g, neg_lr)
                p.add_(vi)
        elif name == "nesterov":
            # v = momentum * v - lr * g;  W += momentum * v - lr * g
            (v,) = self.state
            for p, g, vi, mom, neg_lr in zip(
                params, grads, v, self._momentum, self._neg_lr, strict=True
            ):
                vi.mul_(mom).addcmul_(g, neg_lr)
                step = vi * mom
                step.addcmul_(g, neg_lr)
                p.add_(step)
        elif name in ("adagrad", "rmsprop"):
            # h += g * g (adagrad) or h = 0.99 h + 0.01 g * g;  W -= lr * g / (sqrt(h) + eps)
            (h,) = self.state
            for p, g, hi, neg_lr in zip(params, grads, h, self._neg_lr, strict=True):
                if name == "rmsprop":
                    hi.mul_(RMSPROP_DECAY).addcmul_(g, g, value=1.0 - RMSPROP_DECAY)
                else:
                    hi.addcmul_(g, g)
                denom = hi.sqrt().add_(OPTIMIZER_EPS)
                p.add_(g.mul(neg_lr).div_(denom))
        else:
            # adam: t += 1;  m += 0.1 (g - m);  v += 0.001 (g * g - v)
            #       W -= lr * sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (sqrt(v) + eps)
            m1, v = self.state
            self.step_count += 1
            t = self.step_count
            root, bias = math.sqrt(1.0 - ADAM_BETA2**t), 1.0 - ADAM_BETA1**t
            neg_lr_t = [-(lr * root / bias) for lr in self.lrs]
            for p, g, mi, vi in zip(params, grads, m1, v, strict=True):
                mi.lerp_(g, 1.0 - ADAM_BETA1)
                vi.lerp_(g * g, 1.0 - ADAM_BETA2)
                denom = vi.sqrt().add_(OPTIMIZER_EPS)
                p.add_(mi.mul(self._column(neg_lr_t, p)).div_(denom))
