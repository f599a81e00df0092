"""Trial packing: train K compatible configs as one stacked computation.

Short trials on a small network are dominated by per-step overhead (a few
dozen NumPy or torch calls on small arrays), not by arithmetic. Training K
trials that share an architecture in one computation - parameters stacked
along a leading model axis, one batched matrix product per layer for all K
models, per-model learning rate, weight decay, dropout ratio, momentum and
seed - pays that overhead once per step instead of K times.

Compatibility (:func:`pack_key`): configs can share a pack when they agree on
everything that fixes the shape or the code path of a training step:
``hidden_sizes``, ``activation``, ``batchnorm``, ``optimizer``,
``batch_size``, ``epochs``, ``dtype``, ``backend`` and ``device``. They may
differ in ``lr``, ``weight_decay``, ``dropout_ratio`` (including 0),
``momentum``, ``weight_init`` and ``seed``.

Guarantee: each member's :class:`~trainer.history.History` is the one
:func:`trainer.train.train` gives for its config alone (same losses and
accuracies per epoch within float tolerance, same divergence and stop
epochs), because each member draws its own initial weights from its own
``seeds.init``, its own permutation each epoch from
``np.random.default_rng(seeds.shuffle)`` (member ``k``'s batch is
``x[perm_k[batch]]``, so the stacked input is gathered per member), its own
dropout masks from ``seeds.dropout`` in the single model's order and shape,
and keeps its own optimizer state and batch-norm statistics. A member whose
training loss becomes non-finite, or whose callback asks to stop, leaves the
pack at that point (its History ends as it would alone) and the stack is
compacted; the others continue.

Wall times: an :class:`~trainer.history.EpochRecord`'s ``seconds`` is the
wall time of the pack's epoch (shared by every member still in it) and
``History.seconds`` the wall time from the start of the pack until the
member left it; the cost per trial is about those divided by the pack size.

Where packing pays (``benchmarks/packing.py``, NumPy, one thread): a lone
small model spends most of each step on per-call overhead, which packing
shares - digits 64-50-50-10 with batch norm and dropout trains about 2x as
many trials per second packed 8-32 at a time at batch 50, about 1.6x at
batch 100; a wide one is bound by its matrix products and memory traffic,
which packing does not reduce - 784-100x6-10 at batch 100 trains about as
fast packed as alone (within +-10%). :func:`pack_pays` states that rule for a
scheduler. A pack of one config is simply :func:`trainer.train.train`.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from trainer.config import TrainConfig
from trainer.datasets import Dataset
from trainer.errors import BackendUnavailableError, ConfigError
from trainer.history import EpochRecord, History
from trainer.seeding import RunSeeds, run_seeds
from trainer.train import train

__all__ = [
    "PACK_FIELDS",
    "PackKey",
    "PackedModel",
    "build_packed_model",
    "group_packable",
    "pack_incompatibility",
    "pack_key",
    "pack_pays",
    "packable",
    "train_packed",
]

EpochCallback = Callable[[EpochRecord], object]

#: The config fields every member of a pack must share.
PACK_FIELDS = (
    "backend",
    "device",
    "dtype",
    "hidden_sizes",
    "activation",
    "batchnorm",
    "optimizer",
    "batch_size",
    "epochs",
)


@dataclass(frozen=True)
class PackKey:
    """What configs of one pack share; equal keys mean packable configs."""

    backend: str
    device: str
    dtype: str
    hidden_sizes: tuple[int, ...]
    activation: str
    batchnorm: bool
    optimizer: str
    batch_size: int
    epochs: int


def pack_key(config: TrainConfig) -> PackKey:
    """The key of the packs ``config`` can join (see :data:`PACK_FIELDS`)."""
    return PackKey(**{name: getattr(config, name) for name in PACK_FIELDS})


def pack_incompatibility(a: TrainConfig, b: TrainConfig) -> str | None:
    """Why ``a`` and ``b`` cannot share a pack, or None when they can.

    The reason names every differing field and both values, e.g.
    ``"batch_size differs (50 vs 100)"``.
    """
    differences = [
        f"{name} differs ({getattr(a, name)!r} vs {getattr(b, name)!r})"
        for name in PACK_FIELDS
        if getattr(a, name) != getattr(b, name)
    ]
    if not differences:
        return None
    return "; ".join(differences) + f"; packed configs must share {', '.join(PACK_FIELDS)}"


def packable(a: TrainConfig, b: TrainConfig) -> bool:
    """Whether ``a`` and ``b`` can be trained in one pack."""
    return pack_key(a) == pack_key(b)


def group_packable(
    configs: Sequence[TrainConfig], *, max_pack_size: int | None = None
) -> list[list[int]]:
    """Indices of ``configs`` grouped into packs of equal :func:`pack_key`.

    Groups keep the configs' order (first appearance of each key first) and
    hold at most ``max_pack_size`` configs each (None: no cap; 1: no packing).
    """
    if max_pack_size is not None and max_pack_size < 1:
        raise ConfigError(f"max_pack_size: got {max_pack_size!r}; expected an integer >= 1")
    groups: dict[PackKey, list[list[int]]] = {}
    order: list[list[int]] = []
    for index, config in enumerate(configs):
        packs = groups.setdefault(pack_key(config), [])
        if not packs or (max_pack_size is not None and len(packs[-1]) >= max_pack_size):
            packs.append([])
            order.append(packs[-1])
        packs[-1].append(index)
    return order


#: Packing pays on the CPU when one model's forward pass over a batch is below
#: this many multiply-adds. Measured (``benchmarks/packing.py``): digits
#: 64-50-50-10 is 0.31 M at batch 50 (about 2x packed) and 0.62 M at batch 100
#: (about 1.6x); 784-100x6-10 at batch 100 is 13 M (about 1x).
PACK_PAYS_MAX_MACS = 4_000_000


def pack_pays(config: TrainConfig, n_features: int, n_classes: int) -> bool:
    """Whether packing configs like this one is expected to raise throughput.

    The rule a scheduler can use before packing: on the CPU, pack when a
    step's forward multiply-adds, ``batch_size * sum(n_in * n_out)``, are
    below :data:`PACK_PAYS_MAX_MACS` - per-call overhead then dominates a lone
    model's step - and otherwise run trials one by one (a pack of a
    matrix-product-bound network is about as fast, not faster); on a GPU
    device always, where one small model uses a sliver of the device.
    """
    if config.backend == "torch" and config.device != "cpu":
        return True
    sizes = [n_features, *config.hidden_sizes, n_classes]
    macs = config.batch_size * sum(a * b for a, b in itertools.pairwise(sizes))
    return macs < PACK_PAYS_MAX_MACS


class PackedModel(Protocol):
    """K stacked models that step together; what :func:`train_packed` drives."""

    @property
    def n_models(self) -> int:
        """How many models the stack holds now."""
        ...

    def train_step(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """One step of every model on its own batch: ``x`` (K, batch, d), ``y``
        (K, batch); the (K,) training losses (non-finite when diverged)."""
        ...

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inference-mode loss and accuracy of every model on the shared ``x``, ``y``."""
        ...

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only the models at ``rows`` of the current stack."""
        ...


def build_packed_model(
    configs: Sequence[TrainConfig], n_features: int, n_classes: int, seeds: Sequence[RunSeeds]
) -> PackedModel:
    """The packed model of the configs' backend (all configs packable)."""
    if configs[0].backend == "numpy":
        from trainer.numpy_backend.packed_model import PackedNumpyModel

        return PackedNumpyModel(configs, n_features, n_classes, seeds)
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            "backend: got 'torch' but PyTorch is not installed; install the extra with "
            "pip install -e '.[torch]' or use backend = 'numpy'"
        ) from exc
    from trainer.torch_packed import PackedTorchModel

    return PackedTorchModel(configs, n_features, n_classes, seeds)


@dataclass
class _Member:
    """Bookkeeping of one config of the pack."""

    callback: EpochCallback | None
    shuffle_rng: np.random.Generator
    records: list[EpochRecord] = field(default_factory=list)
    stopped_at: int | None = None
    diverged_at: int | None = None
    test_loss: float = math.nan
    test_accuracy: float = math.nan
    seconds: float = 0.0


def _check_pack(configs: Sequence[TrainConfig], callbacks: Sequence[Any] | None) -> None:
    if not configs:
        raise ConfigError("configs: got an empty list; train_packed needs at least one config")
    for i, config in enumerate(configs):
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"configs[{i}]: got {type(config).__name__}; expected a TrainConfig")
        reason = pack_incompatibility(configs[0], config)
        if reason is not None:
            raise ConfigError(f"configs[{i}]: cannot be packed with configs[0]: {reason}")
    if callbacks is not None and len(callbacks) != len(configs):
        raise ConfigError(
            f"callbacks: got {len(callbacks)} for {len(configs)} configs; "
            "expected one callback (or None) per config"
        )


def train_packed(
    configs: Sequence[TrainConfig],
    data: Dataset,
    *,
    callbacks: Sequence[EpochCallback | None] | None = None,
    evaluate_test: bool = False,
) -> list[History]:
    """Train packable configs together; one :class:`History` per config, in order.

    Each History is the one :func:`trainer.train.train` returns for that
    config alone (see the module doc); wall times are the pack's.

    Args:
        configs: Configs that are :func:`packable` with each other (one or more).
        data: The splits; only train and validation are read unless
            ``evaluate_test`` is true.
        callbacks: One per config (or None): called after each of that
            config's epochs with its record; a truthy return stops that config
            (the others continue). An exception from a callback propagates
            and ends the whole pack.
        evaluate_test: Also evaluate each final model on the test split (not
            for models that diverged). Never set this during tuning.

    Raises:
        ConfigError: Configs that cannot share a pack (the message names the
            config, the fields and their values), or a callbacks list of the
            wrong length.
    """
    _check_pack(configs, callbacks)
    if len(configs) == 1:
        # A pack of one is the lone run (and the lone loop is leaner).
        callback = None if callbacks is None else callbacks[0]
        return [train(configs[0], data, callback=callback, evaluate_test=evaluate_test)]
    return _train_pack(configs, data, callbacks=callbacks, evaluate_test=evaluate_test)


def _train_pack(
    configs: Sequence[TrainConfig],
    data: Dataset,
    *,
    callbacks: Sequence[EpochCallback | None] | None,
    evaluate_test: bool,
) -> list[History]:
    """The packed loop of :func:`train_packed` (any number of checked configs)."""
    start = time.perf_counter()
    first = configs[0]
    dtype = np.dtype(first.dtype)
    x_train = np.ascontiguousarray(data.x_train, dtype=dtype)
    x_val = np.ascontiguousarray(data.x_val, dtype=dtype)
    y_train = np.asarray(data.y_train, dtype=np.int64)
    y_val = np.asarray(data.y_val, dtype=np.int64)
    seeds = [run_seeds(c.seed) for c in configs]
    model = build_packed_model(configs, data.n_features, data.n_classes, seeds)
    members = [
        _Member(
            callback=None if callbacks is None else callbacks[i],
            shuffle_rng=np.random.default_rng(s.shuffle),
        )
        for i, s in enumerate(seeds)
    ]
    active = list(members)  # active[r] is the member in row r of the stack
    n = len(y_train)
    batch_size = first.batch_size
    x_test = y_test = None
    if evaluate_test:
        x_test = np.ascontiguousarray(data.x_test, dtype=dtype)
        y_test = np.asarray(data.y_test, dtype=np.int64)

    def leave(rows: list[int]) -> None:
        """Take the members at ``rows`` out of the pack (test-evaluated first)."""
        nonlocal active
        if not rows:
            return
        gone = set(rows)
        wanted = [r for r in rows if active[r].diverged_at is None]
        if evaluate_test and wanted and len(y_test) > 0:
            losses, accuracies = model.evaluate(x_test, y_test)
            for r in wanted:
                active[r].test_loss = float(losses[r])
                active[r].test_accuracy = float(accuracies[r])
        now = time.perf_counter() - start
        for r in rows:
            active[r].seconds = now
        keep = [r for r in range(len(active)) if r not in gone]
        if keep:
            model.keep(keep)
        active = [active[r] for r in keep]

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for epoch in range(1, first.epochs + 1):
            if not active:
                break
            epoch_start = time.perf_counter()
            perms = np.stack([m.shuffle_rng.permutation(n) for m in active])
            for begin in range(0, n, batch_size):
                index = perms[:, begin : begin + batch_size]
                losses = model.train_step(x_train[index], y_train[index])
                finite = np.isfinite(losses)
                if not finite.all():
                    bad = [r for r in range(len(active)) if not finite[r]]
                    for r in bad:
                        active[r].diverged_at = epoch
                    leave(bad)
                    if not active:
                        break
                    perms = perms[[r for r in range(len(finite)) if finite[r]]]
            if not active:
                break
            if n:
                train_loss, train_acc = model.evaluate(x_train, y_train)
            else:
                train_loss = train_acc = np.full(len(active), math.nan)
            if len(y_val):
                val_loss, val_acc = model.evaluate(x_val, y_val)
            else:
                val_loss = val_acc = np.full(len(active), math.nan)
            seconds = time.perf_counter() - epoch_start
            leaving = []
            for r, member in enumerate(active):
                if not (math.isfinite(train_loss[r]) or n == 0):
                    member.diverged_at = epoch
                    leaving.append(r)
                    continue
                record = EpochRecord(
                    epoch=epoch,
                    train_loss=float(train_loss[r]),
                    train_accuracy=float(train_acc[r]),
                    val_loss=float(val_loss[r]),
                    val_accuracy=float(val_acc[r]),
                    seconds=seconds,
                )
                member.records.append(record)
                callback = member.callback
                if callback is not None and callback(record) and epoch < first.epochs:
                    member.stopped_at = epoch
                    leaving.append(r)
            leave(leaving)
        leave(list(range(len(active))))

    return [
        History(
            records=tuple(m.records),
            stopped=m.stopped_at is not None,
            stopped_at_epoch=m.stopped_at,
            diverged=m.diverged_at is not None,
            diverged_at_epoch=m.diverged_at,
            seconds=m.seconds,
            test_loss=m.test_loss,
            test_accuracy=m.test_accuracy,
        )
        for m in members
    ]
