"""Trial packing: K packed configs give the Histories they give alone.

Most tests compare :func:`trainer.packed.train_packed` with
:func:`trainer.train.train` run on each config by itself, for the NumPy and
the torch backend (CPU device): per-epoch losses and accuracies within float
tolerance (1e-9 relative in float64, 1e-5 in float32), and the same epochs,
stop and divergence. (On the machine these tests were written on, both
backends' packs are bit-identical to their lone runs.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from trainer.config import TrainConfig
from trainer.datasets import Dataset, make_synthetic
from trainer.errors import ConfigError
from trainer.history import EpochRecord, History
from trainer.packed import (
    PACK_FIELDS,
    _train_pack,
    group_packable,
    pack_incompatibility,
    pack_key,
    pack_pays,
    packable,
    train_packed,
)
from trainer.seeding import run_seeds
from trainer.train import train

try:
    import torch
except ImportError:  # the torch extra is optional
    torch = None

NEEDS_TORCH = [
    pytest.mark.torch,
    pytest.mark.skipif(torch is None, reason="needs PyTorch (the torch extra)"),
]
BACKENDS = ["numpy", pytest.param("torch", marks=NEEDS_TORCH)]

RTOL = {"float64": 1e-9, "float32": 1e-5}
METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")

BASE = TrainConfig(hidden_sizes=(16, 12), epochs=3, batch_size=30, seed=0)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once per backend (torch on its CPU device)."""
    return request.param


@pytest.fixture(scope="module")
def data() -> Dataset:
    """400 samples, 10 features, 3 classes: 256 train (8 batches of 30 + 16), 64 val, 80 test."""
    return make_synthetic(400, n_features=10, n_classes=3, seed=0)


def four_trials(base: TrainConfig) -> list[TrainConfig]:
    """Four members that differ in every per-model hyperparameter."""
    return [
        base.replace(lr=0.05, seed=1),
        base.replace(lr=0.01, weight_decay=1e-3, dropout_ratio=0.3, seed=2),
        base.replace(lr=0.1, dropout_ratio=0.5, momentum=0.5, seed=3),
        base.replace(lr=0.02, weight_decay=0.01, dropout_ratio=0.1, weight_init=0.05, seed=4),
    ]


def assert_same_history(packed: History, alone: History, *, rtol: float, what: str = "") -> None:
    """Same epochs, stop and divergence; metrics within ``rtol`` (NaN equals NaN)."""
    assert packed.epochs_completed == alone.epochs_completed, what
    assert (packed.stopped, packed.stopped_at_epoch) == (alone.stopped, alone.stopped_at_epoch), (
        what
    )
    assert (packed.diverged, packed.diverged_at_epoch) == (
        alone.diverged,
        alone.diverged_at_epoch,
    ), what
    for mine, theirs in zip(packed.records, alone.records, strict=True):
        assert mine.epoch == theirs.epoch, what
        np.testing.assert_allclose(
            [getattr(mine, m) for m in METRICS],
            [getattr(theirs, m) for m in METRICS],
            rtol=rtol,
            atol=0,
            err_msg=f"{what} epoch {mine.epoch}",
        )
        assert mine.seconds >= 0.0
    np.testing.assert_allclose(
        [packed.test_loss, packed.test_accuracy],
        [alone.test_loss, alone.test_accuracy],
        rtol=rtol,
        atol=0,
        err_msg=f"{what} test split",
    )


def assert_packed_equals_alone(
    configs: Sequence[TrainConfig], data: Dataset, *, evaluate_test: bool = False
) -> list[History]:
    packed = train_packed(configs, data, evaluate_test=evaluate_test)
    assert len(packed) == len(configs)
    for i, (config, history) in enumerate(zip(configs, packed, strict=True)):
        alone = train(config, data, evaluate_test=evaluate_test)
        assert_same_history(history, alone, rtol=RTOL[config.dtype], what=f"member {i}")
    return packed


# --------------------------------------------------------------------------- packed == alone


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batchnorm", [False, True], ids=["no-bn", "bn"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_four_packed_trials_match_their_solo_runs(
    data: Dataset, backend: str, dtype: str, batchnorm: bool, optimizer: str
) -> None:
    base = BASE.replace(backend=backend, dtype=dtype, batchnorm=batchnorm, optimizer=optimizer)
    configs = four_trials(base)
    histories = assert_packed_equals_alone(configs, data, evaluate_test=True)
    assert all(h.epochs_completed == BASE.epochs and not h.diverged for h in histories)
    # The members really differ (a pack of clones would hide mix-ups).
    assert len({h.records[-1].train_loss for h in histories}) == len(configs)


@pytest.mark.parametrize("optimizer", ["nesterov", "adagrad", "rmsprop"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_other_optimizers_and_activations_match(
    data: Dataset, backend: str, optimizer: str, activation: str
) -> None:
    base = BASE.replace(
        backend=backend,
        optimizer=optimizer,
        activation=activation,
        batchnorm=True,
        dtype="float64",
        lr=0.01,
    )
    assert_packed_equals_alone(four_trials(base), data)


@pytest.mark.parametrize(
    ("hidden_sizes", "batch_size"),
    [
        ((16, 12), 17),  # 256 = 15 * 17 + 1: the last batch has one sample (BN keeps its stats)
        ((1, 5), 50),  # a hidden layer one unit wide
        ((6, 1), 255),  # a one-unit layer feeding the output, and a batch of one
        ((8,), 1),  # every batch a single sample
    ],
)
@pytest.mark.parametrize("batchnorm", [False, True], ids=["no-bn", "bn"])
def test_edge_shapes_match(
    data: Dataset, backend: str, hidden_sizes: tuple[int, ...], batch_size: int, batchnorm: bool
) -> None:
    base = BASE.replace(
        backend=backend,
        hidden_sizes=hidden_sizes,
        batch_size=batch_size,
        batchnorm=batchnorm,
        dtype="float64",
    )
    epochs = 1 if batch_size == 1 else 2
    assert_packed_equals_alone(four_trials(base.replace(epochs=epochs, lr=0.01)), data)


def test_tiny_splits_match(backend: str) -> None:
    """17 train, 4 validation and 5 test samples (a batch of one at every epoch's end)."""
    tiny = make_synthetic(26, n_features=4, n_classes=2, seed=1)
    base = BASE.replace(
        backend=backend, hidden_sizes=(3, 3), batch_size=4, batchnorm=True, dtype="float64"
    )
    assert_packed_equals_alone(four_trials(base), tiny, evaluate_test=True)


def test_a_single_trial_pack_equals_train(data: Dataset, backend: str) -> None:
    config = BASE.replace(
        backend=backend, batchnorm=True, dropout_ratio=0.2, weight_decay=1e-3, optimizer="adam"
    )
    alone = train(config, data, evaluate_test=True)
    (packed,) = train_packed([config], data, evaluate_test=True)  # runs train() itself
    assert_same_history(packed, alone, rtol=RTOL["float32"])
    # The packed engine with a stack of one model gives it too.
    (engine,) = _train_pack([config], data, callbacks=None, evaluate_test=True)
    assert_same_history(engine, alone, rtol=RTOL["float32"])


def test_a_pack_of_clones_gives_identical_histories(data: Dataset, backend: str) -> None:
    config = BASE.replace(backend=backend, batchnorm=True, dropout_ratio=0.3)
    first, second = train_packed([config, config], data)
    assert [[getattr(r, m) for m in METRICS] for r in first.records] == [
        [getattr(r, m) for m in METRICS] for r in second.records
    ]


@pytest.mark.parametrize(
    "ratios", [[0.0, 0.5, 0.0, 0.2], [0.1, 0.5, 0.3, 0.2]], ids=["some-without", "all-with"]
)
@pytest.mark.parametrize("batchnorm", [False, True], ids=["no-bn", "bn"])
def test_members_with_and_without_dropout_share_a_pack(
    data: Dataset, backend: str, ratios: list[float], batchnorm: bool
) -> None:
    base = BASE.replace(backend=backend, dtype="float64", batchnorm=batchnorm)
    configs = [base.replace(dropout_ratio=p, seed=s) for s, p in enumerate(ratios)]
    assert_packed_equals_alone(configs, data)


def test_the_packed_numpy_model_takes_the_same_steps() -> None:
    """One step at the model level: parameters and BN statistics equal NumpyModel's."""
    from trainer.numpy_backend.model import NumpyModel
    from trainer.numpy_backend.packed_model import PackedNumpyModel

    configs = four_trials(BASE.replace(batchnorm=True, dtype="float64"))
    seeds = [run_seeds(c.seed) for c in configs]
    packed = PackedNumpyModel(configs, 10, 3, seeds)
    singles = [NumpyModel(c, 10, 3, s) for c, s in zip(configs, seeds, strict=True)]
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.random((len(configs), 30, 10))
        y = rng.integers(0, 3, (len(configs), 30))
        losses = packed.train_step(x, y)
        expected = [m.train_step(x[k], y[k]) for k, m in enumerate(singles)]
        np.testing.assert_allclose(losses, expected, rtol=1e-12)
    for k, single in enumerate(singles):
        np.testing.assert_allclose(packed.flat_params[k], single.network.flat_params, rtol=1e-12)
        for i, bn in enumerate(single.network.batchnorm_layers):
            np.testing.assert_allclose(packed.running_mean[i][k], bn.running_mean, rtol=1e-12)
            np.testing.assert_allclose(packed.running_var[i][k], bn.running_var, rtol=1e-12)
    x_eval = rng.random((7, 10))
    logits = packed.predict(x_eval)
    for k, single in enumerate(singles):
        np.testing.assert_allclose(logits[k], single.predict(x_eval), rtol=1e-12)


# --------------------------------------------------------------------------- leaving the pack


def test_a_diverging_member_leaves_without_disturbing_the_others(
    data: Dataset, backend: str
) -> None:
    configs = four_trials(BASE.replace(backend=backend, epochs=4))
    configs[1] = configs[1].replace(weight_init=1e20)  # activations overflow at once
    alone = train(configs[1], data)
    assert alone.diverged and alone.diverged_at_epoch == 1
    histories = assert_packed_equals_alone(configs, data, evaluate_test=True)
    assert histories[1].diverged and histories[1].records == ()
    assert math.isnan(histories[1].test_loss)
    others = [h for i, h in enumerate(histories) if i != 1]
    assert all(h.epochs_completed == 4 and not h.diverged for h in others)


def test_members_diverging_at_different_epochs(data: Dataset, backend: str) -> None:
    base = BASE.replace(backend=backend, optimizer="momentum", epochs=4)
    configs = [
        base.replace(lr=0.05, seed=1),
        base.replace(lr=3.0, weight_decay=1.0, seed=0),  # diverges in epoch 2
        base.replace(weight_init=1e20, seed=2),  # diverges in epoch 1
        base.replace(lr=0.1, dropout_ratio=0.2, seed=3),
    ]
    histories = assert_packed_equals_alone(configs, data)
    assert histories[1].diverged_at_epoch in (2, 3) and histories[2].diverged_at_epoch == 1
    assert not histories[0].diverged and not histories[3].diverged
    assert histories[0].epochs_completed == histories[3].epochs_completed == 4


def test_all_members_diverging_ends_the_pack(data: Dataset, backend: str) -> None:
    configs = [BASE.replace(backend=backend, weight_init=1e20, seed=s) for s in range(3)]
    histories = assert_packed_equals_alone(configs, data, evaluate_test=True)
    assert all(h.diverged and h.diverged_at_epoch == 1 for h in histories)


def test_a_callback_stops_only_its_member(data: Dataset, backend: str) -> None:
    configs = four_trials(BASE.replace(backend=backend, dtype="float64", epochs=4, batchnorm=True))
    seen: dict[int, list[int]] = {i: [] for i in range(len(configs))}

    def callback_for(i: int, stop_after: int | None):
        def callback(record: EpochRecord) -> bool:
            seen[i].append(record.epoch)
            return stop_after is not None and record.epoch >= stop_after

        return callback

    callbacks = [callback_for(0, None), callback_for(1, 2), None, callback_for(3, 3)]
    histories = train_packed(configs, data, callbacks=callbacks, evaluate_test=True)
    assert seen == {0: [1, 2, 3, 4], 1: [1, 2], 2: [], 3: [1, 2, 3]}
    for i, (config, history) in enumerate(zip(configs, histories, strict=True)):
        solo_callback = (
            None if callbacks[i] is None else callback_for(100 + i, [None, 2, None, 3][i])
        )
        seen[100 + i] = []
        alone = train(config, data, callback=solo_callback, evaluate_test=True)
        assert_same_history(history, alone, rtol=RTOL["float64"], what=f"member {i}")
    assert histories[1].stopped and histories[1].stopped_at_epoch == 2
    assert histories[3].stopped and histories[3].stopped_at_epoch == 3
    assert not histories[0].stopped and histories[0].epochs_completed == 4
    # The stopped member's test metrics are of its model when it stopped.
    assert math.isfinite(histories[1].test_loss)


def test_a_callback_at_the_last_epoch_does_not_mark_a_stop(data: Dataset) -> None:
    histories = train_packed([BASE, BASE.replace(seed=1)], data, callbacks=[lambda r: True, None])
    assert histories[0].epochs_completed == 1 and histories[0].stopped
    histories = train_packed([BASE.replace(epochs=1)], data, callbacks=[lambda r: True])
    assert not histories[0].stopped and histories[0].epochs_completed == 1


# --------------------------------------------------------------------------- compatibility


def test_pack_key_names_the_shared_fields() -> None:
    key = pack_key(BASE)
    assert {f for f in PACK_FIELDS} == set(key.__dataclass_fields__)
    assert pack_key(BASE.replace(lr=0.5, weight_decay=0.1, dropout_ratio=0.3, seed=9)) == key
    assert pack_key(BASE.replace(momentum=0.5, weight_init="xavier")) == key


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hidden_sizes": (16, 16)}, "hidden_sizes"),
        ({"activation": "tanh"}, "activation"),
        ({"batchnorm": True}, "batchnorm"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"batch_size": 50}, "batch_size"),
        ({"epochs": 4}, "epochs"),
        ({"dtype": "float64"}, "dtype"),
        ({"backend": "torch"}, "backend"),
    ],
)
def test_packable_rejects_configs_that_cannot_share_a_step(change: dict, field: str) -> None:
    other = BASE.replace(**change)
    assert not packable(BASE, other)
    reason = pack_incompatibility(BASE, other)
    assert reason is not None
    assert f"{field} differs ({getattr(BASE, field)!r} vs {getattr(other, field)!r})" in reason


def test_packable_accepts_per_model_hyperparameters() -> None:
    other = BASE.replace(lr=1.0, weight_decay=0.5, dropout_ratio=0.4, momentum=0.1, seed=7)
    assert packable(BASE, other)
    assert pack_incompatibility(BASE, other) is None


def test_train_packed_refuses_an_incompatible_pack(data: Dataset) -> None:
    configs = [BASE, BASE.replace(seed=1), BASE.replace(batch_size=50, epochs=2)]
    with pytest.raises(ConfigError) as info:
        train_packed(configs, data)
    message = str(info.value)
    assert "configs[2]" in message
    assert "batch_size differs (30 vs 50)" in message
    assert "epochs differs (3 vs 2)" in message


def test_train_packed_checks_its_arguments(data: Dataset) -> None:
    with pytest.raises(ConfigError, match="empty"):
        train_packed([], data)
    with pytest.raises(ConfigError, match="callbacks: got 1 for 2 configs"):
        train_packed([BASE, BASE], data, callbacks=[None])
    with pytest.raises(ConfigError, match="configs\\[1\\]"):
        train_packed([BASE, {"lr": 0.1}], data)  # type: ignore[list-item]


def test_group_packable_groups_by_key_in_order_and_caps_the_size() -> None:
    a, b = BASE, BASE.replace(batchnorm=True)
    configs = [a, b, a.replace(seed=1), a.replace(seed=2), b.replace(seed=3), a.replace(seed=4)]
    assert group_packable(configs) == [[0, 2, 3, 5], [1, 4]]
    assert group_packable(configs, max_pack_size=2) == [[0, 2], [1, 4], [3, 5]]
    assert group_packable(configs, max_pack_size=1) == [[i] for i in range(6)]
    with pytest.raises(ConfigError, match="max_pack_size"):
        group_packable(configs, max_pack_size=0)


def test_pack_pays_on_small_networks_not_on_gemm_bound_ones() -> None:
    digits = TrainConfig(hidden_sizes=(50, 50), batch_size=100)
    assert pack_pays(digits, 64, 10)
    chapter = TrainConfig(hidden_sizes=(100,) * 6, batch_size=100)
    assert not pack_pays(chapter, 784, 10)


# --------------------------------------------------------------------------- torch specifics


@pytest.mark.parametrize("batched", [False, True], ids=["cpu-default", "batched"])
@pytest.mark.parametrize("batchnorm", [False, True], ids=["no-bn", "bn"])
def test_the_packed_torch_model_takes_the_same_steps(batched: bool, batchnorm: bool) -> None:
    """Model level, explicit device='cpu': parameters and BN statistics after a few
    steps equal TorchModel's, with per-model steps (the CPU default) and with the
    all-batched kernels a GPU runs (within float64 tolerance)."""
    pytest.importorskip("torch")
    from trainer.torch_backend import TorchModel
    from trainer.torch_packed import PackedTorchModel

    configs = four_trials(
        BASE.replace(backend="torch", device="cpu", batchnorm=batchnorm, dtype="float64")
    )
    seeds = [run_seeds(c.seed) for c in configs]
    packed = PackedTorchModel(configs, 10, 3, seeds, batched=batched)
    assert packed.batched is batched
    assert all(p.device.type == "cpu" for p in packed.params)
    singles = [TorchModel(c, 10, 3, s) for c, s in zip(configs, seeds, strict=True)]
    rng = np.random.default_rng(0)
    for batch in (30, 30, 1, 30):
        x = rng.random((len(configs), batch, 10))
        y = rng.integers(0, 3, (len(configs), batch))
        losses = packed.train_step(x, y)
        expected = [m.train_step(x[k], y[k]) for k, m in enumerate(singles)]
        np.testing.assert_allclose(losses, expected, rtol=1e-12)
    for k, single in enumerate(singles):
        for mine, theirs in zip(packed.params, single.params, strict=True):
            # atol: a bias followed by batch norm only collects rounding noise (~1e-18).
            np.testing.assert_allclose(
                mine[k].detach().numpy(), theirs.detach().numpy(), rtol=1e-9, atol=1e-12
            )
        for i in range(len(single.running_means)):
            np.testing.assert_allclose(packed.running_means[i][k], single.running_means[i])
            np.testing.assert_allclose(packed.running_vars[i][k], single.running_vars[i])
    x_eval = rng.random((7, 10))
    logits = packed.predict(x_eval)
    for k, single in enumerate(singles):
        np.testing.assert_allclose(logits[k], single.predict(x_eval), rtol=1e-9)


@pytest.mark.parametrize(
    ("optimizer", "batchnorm"),
    [("sgd", False), ("sgd", True), ("momentum", True), ("adam", False)],
)
def test_the_batched_torch_path_matches_within_tolerance(
    data: Dataset, monkeypatch: pytest.MonkeyPatch, optimizer: str, batchnorm: bool
) -> None:
    """The GPU code path (every step batched), run on device='cpu', over whole runs."""
    pytest.importorskip("torch")
    import trainer.packed
    from trainer.torch_packed import PackedTorchModel

    built: list[PackedTorchModel] = []

    def build_batched(configs, n_features, n_classes, seeds):
        built.append(PackedTorchModel(configs, n_features, n_classes, seeds, batched=True))
        return built[-1]

    monkeypatch.setattr(trainer.packed, "build_packed_model", build_batched)
    base = BASE.replace(
        backend="torch", device="cpu", dtype="float64", optimizer=optimizer, batchnorm=batchnorm
    )
    assert_packed_equals_alone(four_trials(base), data, evaluate_test=True)
    assert built and built[0].batched


@pytest.mark.skipif(
    torch is None or not torch.cuda.is_available(),
    reason="needs a CUDA device; this machine has none",
)
@pytest.mark.torch
@pytest.mark.cuda
def test_a_pack_on_the_gpu_matches_its_solo_runs(data: Dataset) -> None:
    base = BASE.replace(backend="torch", device="cuda", dtype="float64", batchnorm=True)
    assert_packed_equals_alone(four_trials(base.replace(optimizer="momentum")), data)


@pytest.mark.parametrize("backend", BACKENDS)
def test_packable_rejects_other_devices(backend: str) -> None:
    if backend == "numpy":
        a, b = BASE.replace(backend="torch"), BASE.replace(backend="torch", device="cuda:0")
    else:
        a, b = (
            BASE.replace(backend="torch", device="cpu"),
            BASE.replace(backend="torch", device="cuda"),
        )
    assert not packable(a, b)
    assert "device differs" in (pack_incompatibility(a, b) or "")
