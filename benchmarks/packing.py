"""Trial packing: K short trials one after another vs the same K trained as one pack.

For each workload and pack size K it trains K configs (a search's worth: lr,
weight decay, dropout ratio and seed sampled per trial, everything else
shared) twice - with ``trainer.train.train`` one after another ("alone"), and
with ``trainer.packed.train_packed`` in one pack - and prints trials per
second both ways and their ratio (packed / alone). Workloads:

(a) the small digits network 64-50-50-10, batch norm and dropout on, on
    ``digits`` (1,150 training and 288 validation samples), 5 epochs, at
    batch 50 and at batch 100, K = 1, 4, 8, 16, 32;
(b) the chapter's 784-100x6-10 network, batch norm and dropout on, on
    ``mnist5k`` with 500 samples (400 train, 100 validation; random data of
    that shape when mnist5k is unavailable), batch 100, 3 epochs,
    K = 1, 4, 8, 16.

Every trial includes what ``train`` does per trial (building the model,
evaluating train and validation each epoch); nothing else (no dispatch or
recording) is counted, so the ratio is what packing gains inside a worker.

Each figure is the median of ``--repeats`` runs; alone and packed runs are
interleaved (alternating which goes first) so machine noise hits both alike.
Wall time gives trials per second; the ratio is also shown in process CPU
time, which other processes on a shared machine disturb less. The last
column is :func:`trainer.packed.pack_pays` for the workload.

One thread, as trial workers run: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and
MKL_NUM_THREADS are set to 1 at the top of this file, before NumPy (or torch)
is imported.

Usage::

    python benchmarks/packing.py                   # the real run (a minute or two)
    python benchmarks/packing.py --backend torch   # the torch backend on its CPU device
    python benchmarks/packing.py --smoke           # tiny sizes, seconds; for tests

It prints figures only and asserts nothing about them.
"""

from __future__ import annotations

import os
import sys

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainer.config import TrainConfig
from trainer.datasets import Dataset, load_dataset, make_synthetic
from trainer.packed import pack_pays, train_packed
from trainer.train import train

HEADER = (
    f"{'K':>4} {'alone trials/s':>15} {'packed trials/s':>16} {'packed/alone':>13} "
    f"{'(cpu time)':>11} {'pack_pays':>10}"
)


@dataclass(frozen=True)
class Workload:
    label: str
    data: Callable[[], tuple[Dataset, str]]
    hidden_sizes: tuple[int, ...]
    batch_size: int
    epochs: int
    pack_sizes: tuple[int, ...]


def digits() -> tuple[Dataset, str]:
    data = load_dataset("digits", seed=0)
    return data, f"digits ({len(data.y_train)} train, {len(data.y_val)} val)"


def mnist_400() -> tuple[Dataset, str]:
    try:
        data = load_dataset("mnist5k", train_samples=500, seed=0)
        return data, f"mnist5k ({len(data.y_train)} train, {len(data.y_val)} val)"
    except Exception as exc:  # any failure falls back to random data of the same shape
        print(
            f"mnist5k unavailable ({type(exc).__name__}: {exc}); using synthetic data",
            file=sys.stderr,
        )
        data = make_synthetic(625, n_features=784, n_classes=10, seed=0)
        return data, f"synthetic 784 features ({len(data.y_train)} train, {len(data.y_val)} val)"


def tiny() -> tuple[Dataset, str]:
    data = make_synthetic(200, n_features=12, n_classes=3, seed=0)
    return data, f"synthetic ({len(data.y_train)} train, {len(data.y_val)} val)"


FULL = [
    Workload("(a) digits 64-50-50-10 +BN +dropout, batch 50", digits, (50, 50), 50, 5,
             (1, 4, 8, 16, 32)),
    Workload("(a) digits 64-50-50-10 +BN +dropout, batch 100", digits, (50, 50), 100, 5,
             (1, 4, 8, 16, 32)),
    Workload("(b) 784-100x6-10 +BN +dropout, batch 100", mnist_400, (100,) * 6, 100, 3,
             (1, 4, 8, 16)),
]  # fmt: skip
SMOKE = [
    Workload("(smoke) 12-8-8-3 +BN +dropout, batch 20", tiny, (8, 8), 20, 1, (1, 2)),
]


def sample_configs(workload: Workload, k: int, *, backend: str, seed: int) -> list[TrainConfig]:
    """K trials as a search samples them: lr, weight decay, dropout and seed vary."""
    rng = np.random.default_rng(seed)
    base = TrainConfig(
        hidden_sizes=workload.hidden_sizes,
        batchnorm=True,
        optimizer="sgd",
        epochs=workload.epochs,
        batch_size=workload.batch_size,
        backend=backend,
        dtype="float32",
    )
    return [
        base.replace(
            lr=float(10 ** rng.uniform(-3, -0.5)),
            weight_decay=float(10 ** rng.uniform(-8, -4)),
            dropout_ratio=float(rng.uniform(0.1, 0.5)),
            seed=int(rng.integers(2**31)),
        )
        for _ in range(k)
    ]


def timed(run: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(configs: list[TrainConfig], data: Dataset, repeats: int) -> tuple[float, float, float]:
    """Median alone and packed trials/s (wall) and the median CPU-time ratio."""
    alone_wall, packed_wall, alone_cpu, packed_cpu = [], [], [], []

    def alone() -> None:
        for config in configs:
            train(config, data)

    def packed() -> None:
        train_packed(configs, data)

    for repeat in range(repeats):
        order = [(alone, alone_wall, alone_cpu), (packed, packed_wall, packed_cpu)]
        if repeat % 2:
            order.reverse()
        for run, walls, cpus in order:
            wall, cpu = timed(run)
            walls.append(wall)
            cpus.append(cpu)
    k = len(configs)
    alone_rate = k / statistics.median(alone_wall)
    packed_rate = k / statistics.median(packed_wall)
    cpu_ratio = statistics.median(alone_cpu) / statistics.median(packed_cpu)
    return alone_rate, packed_rate, cpu_ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; runs in seconds")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed runs per figure (default 5; smoke 1)"
    )
    parser.add_argument(
        "--backend", choices=("numpy", "torch"), default="numpy", help="default numpy"
    )
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (1 if args.smoke else 5)
    if args.backend == "torch":
        import torch

        torch.set_num_threads(1)
    workloads = SMOKE if args.smoke else FULL

    print(
        f"trial packing, {args.backend} backend, float32, sgd, 1 thread; "
        f"median of {repeats} interleaved runs; trials/s in wall time"
    )
    for workload in workloads:
        data, source = workload.data()
        print()
        print(f"{workload.label}, {workload.epochs} epochs, {source}")
        print(HEADER)
        for k in workload.pack_sizes:
            configs = sample_configs(workload, k, backend=args.backend, seed=k)
            train(configs[0], data)  # warm caches and imports outside the timing
            train_packed(configs[:2], data)
            alone_rate, packed_rate, cpu_ratio = measure(configs, data, repeats)
            pays = "yes" if pack_pays(configs[0], data.n_features, data.n_classes) else "no"
            print(
                f"{k:>4} {alone_rate:>15.1f} {packed_rate:>16.1f} "
                f"{packed_rate / alone_rate:>13.2f} {cpu_ratio:>11.2f} {pays:>10}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
