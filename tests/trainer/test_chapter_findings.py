"""The chapter's findings, reproduced with the NumPy backend on real MNIST (mnist5k).

These runs evaluate on the test split on purpose: the train-test gap IS the
experiment here; nothing is tuned on it.

Margins were checked on more seeds than the tests run (numbers below were
observed with the NumPy backend, float32, on mnist5k); the tests themselves
run seeds 0 and 1 to stay fast (the whole file takes ~10 s on one core).
"""

from __future__ import annotations

import functools

import pytest

from trainer.config import TrainConfig
from trainer.datasets import load_dataset
from trainer.history import History
from trainer.train import train

pytestmark = pytest.mark.slow

SEEDS = [0, 1]

# --------------------------------------------------------------------------- batch norm

# The book's batch-norm experiment: 784-100x5-10, the first 1,000 training
# images, SGD lr 0.01, batch 100, 20 epochs, a too-small weight-init std.
#
# Observed final train accuracy (seeds 0, 1, 2, 3):
#   std 0.01  without BN 0.107 0.110 0.111 0.114   with BN 0.998 1.000 1.000 1.000
#   std 0.05  without BN 0.130 0.111 0.114 0.114   with BN 0.959 0.956 0.952 0.950
# (the same picture with 6x100: without BN <= 0.114, with BN >= 0.958).
# Without batch norm the signal dies out in the deep stack and the network
# stays at chance; with it, the same network learns.


@functools.cache
def _batchnorm_run(std: float, batchnorm: bool, seed: int) -> History:
    data = load_dataset("mnist5k", train_samples=1000, val_fraction=0.0, seed=seed)
    config = TrainConfig(
        hidden_sizes=(100,) * 5,
        weight_init=std,
        batchnorm=batchnorm,
        optimizer="sgd",
        lr=0.01,
        batch_size=100,
        epochs=20,
        seed=seed,
    )
    return train(config, data)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("std", [0.01, 0.05])
def test_batchnorm_trains_a_deep_network_despite_a_poor_weight_init(std: float, seed: int) -> None:
    without = _batchnorm_run(std, False, seed)
    with_bn = _batchnorm_run(std, True, seed)
    assert not without.diverged and not with_bn.diverged
    plain_acc = without.records[-1].train_accuracy
    bn_acc = with_bn.records[-1].train_accuracy
    assert plain_acc < 0.3  # observed <= 0.130
    assert bn_acc > 0.85  # observed >= 0.950
    assert bn_acc > plain_acc + 0.5  # observed difference >= 0.82


# --------------------------------------------------------------------------- overfitting

# The book's overfitting experiment: 784-100x6-10 on only 300 training images
# (no validation split), SGD lr 0.01, batch 100, 200 epochs (the book's own
# settings; ~0.7 s a run). Observed (seeds 0..5):
#
#   plain         train 1.000 (all)                  test 0.764 0.799 0.817 0.814 0.789 0.799
#                 accuracy gap 0.236 0.201 0.183 0.186 0.211 0.201
#                 loss gap     0.86  0.69  0.61  0.69  0.76  0.71
#   lambda 0.1    train 0.947 0.917 0.890 0.897 0.940 0.900
#                 accuracy gap 0.201 0.137 0.172 0.103 0.159 0.123  (shrinks by >= 0.011)
#                 loss gap     0.36  0.29  0.31  0.28  0.35  0.29   (<= 0.51 x plain)
#   dropout 0.2   train 0.930 0.893 0.817 0.870 0.913 0.897
#                 accuracy gap 0.190 0.142 0.171 0.159 0.182 0.145  (shrinks by >= 0.012)
#                 loss gap     0.44  0.38  0.41  0.38  0.50  0.38   (<= 0.67 x plain)
#                 (lowest test accuracy of a regularised run: 0.646)
#
# Backend revisions that only reorder float32 sums moved single numbers here
# by up to ~0.01 (mostly the dropout runs); the margins below allow for that.
#
# ("loss gap" is test loss minus train loss.) The accuracy gap shrinks in every
# seed but sometimes only by ~1 point (seed 2: the regularised nets lose test
# accuracy as well), so the margin-bearing assertion is on the loss gap, which
# roughly halves; the accuracy gap is only required to shrink. Longer training
# (300 epochs) lets dropout 0.2 reach 0.95-0.99 train accuracy again and its
# accuracy gap then shrinks by 0.000-0.04 only (mean 0.014), so keep 200.

REGULARIZERS = {
    "plain": {},
    "weight_decay": {"weight_decay": 0.1},
    "dropout": {"dropout_ratio": 0.2},
}


@functools.cache
def _overfit_run(variant: str, seed: int) -> History:
    data = load_dataset("mnist5k", train_samples=300, val_fraction=0.0, seed=seed)
    config = TrainConfig(
        hidden_sizes=(100,) * 6,
        optimizer="sgd",
        lr=0.01,
        batch_size=100,
        epochs=200,
        seed=seed,
        **REGULARIZERS[variant],
    )
    history = train(config, data, evaluate_test=True)
    assert not history.diverged and history.epochs_completed == 200
    return history


def _accuracy_gap(history: History) -> float:
    return history.records[-1].train_accuracy - history.test_accuracy


def _loss_gap(history: History) -> float:
    return history.test_loss - history.records[-1].train_loss


@pytest.mark.parametrize("seed", SEEDS)
def test_a_small_training_set_overfits(seed: int) -> None:
    plain = _overfit_run("plain", seed)
    assert plain.records[-1].train_accuracy >= 0.99  # observed 1.000
    assert plain.test_accuracy < 0.88  # observed <= 0.817
    assert _accuracy_gap(plain) > 0.12  # observed >= 0.183
    assert _loss_gap(plain) > 0.4  # observed >= 0.61


@pytest.mark.parametrize("variant", ["weight_decay", "dropout"])
@pytest.mark.parametrize("seed", SEEDS)
def test_regularization_shrinks_the_train_test_gap(variant: str, seed: int) -> None:
    plain = _overfit_run("plain", seed)
    regularized = _overfit_run(variant, seed)
    # It no longer fits the training set perfectly (observed <= 0.947) ...
    assert regularized.records[-1].train_accuracy < plain.records[-1].train_accuracy - 0.03
    # ... but still learns (observed test accuracy >= 0.646) ...
    assert regularized.test_accuracy > 0.55
    # ... and generalises more like it trains.
    assert _accuracy_gap(regularized) < _accuracy_gap(plain)
    assert _loss_gap(regularized) < 0.8 * _loss_gap(plain)
