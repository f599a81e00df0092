"""Training-step throughput of the NumPy and torch backends, against the GEMM limit.

Trains the chapter's 784-100x6-10 network (ReLU, He init, SGD, batch 100,
float32) without batch norm, with batch norm, and with batch norm + dropout 0.5,
in both backends, and prints samples per second of training steps only:
``model.train_step`` on batches prepared up front; no evaluation, shuffling or
copying is timed. Each figure is the median of ``--repeats`` timed runs, and the
NumPy and torch runs are interleaved (alternating which goes first) so machine
noise hits both alike.

It also times the float32 matrix products of one training step alone - per
layer ``x @ W`` (forward), ``dy @ W.T`` and ``x.T @ dy`` (backward), i.e.
3 x 2 x sum(n_in * n_out) x batch FLOPs - in NumPy and in torch, and reports
each backend's throughput as a fraction of the faster of the two: the most a
training step could reach on this machine with these libraries.

One thread everywhere, as trial workers run (DESIGN.md: one BLAS thread per
worker): OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS are set to 1
at the top of this file, before NumPy (or torch) is imported, because a BLAS
reads them once when it loads; and ``torch.set_num_threads(1)``.

Data: ``trainer.datasets.load_dataset("mnist5k")`` when it is available, else
random float32 data of the same shape (see :func:`training_data`); throughput
does not depend on the values.

Usage::

    python benchmarks/trainer_speed.py            # the real run (about a minute)
    python benchmarks/trainer_speed.py --smoke    # tiny sizes, seconds; for tests

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
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainer.backend import build_model
from trainer.config import TrainConfig
from trainer.init import layer_sizes
from trainer.seeding import run_seeds

try:
    import torch
except ImportError:  # the torch extra is optional; its column then reads "-"
    torch = None

HEADER = f"{'config':<28} {'numpy samples/s':>16} {'torch samples/s':>16} {'numpy/torch':>12}"
MNIST_SHAPE = (3200, 784)  # mnist5k: 5000 images - 1000 test = 4000, of which 80% train
N_CLASSES = 10


@dataclass(frozen=True)
class Sizes:
    n_samples: int
    n_features: int
    hidden_sizes: tuple[int, ...]
    batch_size: int
    steps: int
    warmup: int


FULL = Sizes(MNIST_SHAPE[0], MNIST_SHAPE[1], (100,) * 6, 100, 200, 20)
SMOKE = Sizes(200, 20, (8, 8), 20, 5, 1)


def training_data(sizes: Sizes, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """The benchmark's inputs and labels, and where they came from.

    mnist5k's training split when the dataset loader has it (full size only),
    otherwise uniform random float32 inputs and random labels of the same shape.
    """
    if sizes == FULL:
        try:
            from trainer.datasets import load_dataset

            data = load_dataset("mnist5k", seed=seed)
            x = np.ascontiguousarray(data.x_train, dtype=np.float32)
            if x.shape[1] == sizes.n_features and data.n_classes == N_CLASSES:
                return x, np.asarray(data.y_train, dtype=np.int64), f"mnist5k {x.shape}"
        except Exception as exc:  # any failure falls back to random data
            print(
                f"mnist5k unavailable ({type(exc).__name__}: {exc}); using random data",
                file=sys.stderr,
            )
    rng = np.random.default_rng(seed)
    x = rng.random((sizes.n_samples, sizes.n_features), dtype=np.float32)
    y = rng.integers(0, N_CLASSES, sizes.n_samples, dtype=np.int64)
    return x, y, f"random float32 {x.shape}"


def make_batches(
    x: np.ndarray, y: np.ndarray, sizes: Sizes, *, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``sizes.steps`` full mini-batches, copied out up front (cycling the data)."""
    rng = np.random.default_rng(seed)
    batches = []
    order = rng.permutation(len(y))
    position = 0
    for _ in range(sizes.steps):
        if position + sizes.batch_size > len(order):
            order, position = rng.permutation(len(y)), 0
        index = order[position : position + sizes.batch_size]
        batches.append((x[index], y[index]))
        position += sizes.batch_size
    return batches


CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    "cpu": time.process_time,
}


def time_steps(
    model, batches: list[tuple[np.ndarray, np.ndarray]], clock: Callable[[], float]
) -> float:
    """Samples per second of ``model.train_step`` over the batches."""
    start = clock()
    for xb, yb in batches:
        model.train_step(xb, yb)
    elapsed = clock() - start
    return sum(len(yb) for _, yb in batches) / elapsed


def gemm_workload_numpy(shapes: list[tuple[int, int]], batch: int) -> Callable[[], None]:
    rng = np.random.default_rng(0)
    ops = []
    for n_in, n_out in shapes:
        x = rng.random((batch, n_in), dtype=np.float32)
        w = rng.random((n_in, n_out), dtype=np.float32)
        dy = rng.random((batch, n_out), dtype=np.float32)
        ops.append(
            (
                x,
                w,
                dy,
                np.empty((batch, n_out), np.float32),
                np.empty((batch, n_in), np.float32),
                np.empty((n_in, n_out), np.float32),
            )
        )

    def step() -> None:
        for x, w, dy, y_out, dx_out, dw_out in ops:
            np.matmul(x, w, out=y_out)
            np.matmul(dy, w.T, out=dx_out)
            np.matmul(x.T, dy, out=dw_out)

    return step


def gemm_workload_torch(shapes: list[tuple[int, int]], batch: int) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    ops = []
    for n_in, n_out in shapes:
        x = torch.rand(batch, n_in, generator=g)
        w = torch.rand(n_in, n_out, generator=g)
        dy = torch.rand(batch, n_out, generator=g)
        ops.append(
            (
                x,
                w,
                dy,
                torch.empty(batch, n_out),
                torch.empty(batch, n_in),
                torch.empty(n_in, n_out),
            )
        )

    def step() -> None:
        for x, w, dy, y_out, dx_out, dw_out in ops:
            torch.mm(x, w, out=y_out)
            torch.mm(dy, w.T, out=dx_out)
            torch.mm(x.T, dy, out=dw_out)

    return step


def time_workload(
    step: Callable[[], None], steps: int, batch: int, clock: Callable[[], float]
) -> float:
    """Samples per second a training step would reach if it were only this workload."""
    step()
    start = clock()
    for _ in range(steps):
        step()
    return steps * batch / (clock() - start)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_rate(value: float) -> str:
    return "-" if value != value else f"{value:,.0f}"


def fmt_ratio(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; runs in seconds")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per backend and config; the median is shown (default 5)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps per timed run (default 200)"
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time (default); cpu: this process's CPU time, steadier when "
        "other programs load the machine (every computation here is single-threaded)",
    )
    args = parser.parse_args(argv)

    sizes = SMOKE if args.smoke else FULL
    if args.steps is not None:
        sizes = Sizes(
            sizes.n_samples,
            sizes.n_features,
            sizes.hidden_sizes,
            sizes.batch_size,
            args.steps,
            sizes.warmup,
        )
    repeats = args.repeats if args.repeats is not None else (2 if args.smoke else 5)
    backends = ["numpy"] + (["torch"] if torch is not None else [])
    if torch is not None:
        torch.set_num_threads(1)

    x, y, source = training_data(sizes)
    batches = make_batches(x, y, sizes)
    base = TrainConfig(
        hidden_sizes=sizes.hidden_sizes,
        activation="relu",
        weight_init="he",
        optimizer="sgd",
        lr=0.01,
        batch_size=sizes.batch_size,
        dtype="float32",
    )
    arch = "-".join(str(n) for n in layer_sizes(base, sizes.n_features, N_CLASSES))
    if sizes == FULL:
        arch = f"{sizes.n_features}-100x6-{N_CLASSES}"
    rows = [
        (f"{arch}", base),
        (f"{arch} +BN", base.replace(batchnorm=True)),
        (f"{arch} +BN +dropout 0.5", base.replace(batchnorm=True, dropout_ratio=0.5)),
    ]

    clock = CLOCKS[args.clock]
    shapes = list(itertools.pairwise(layer_sizes(base, sizes.n_features, N_CLASSES)))
    flops = 3 * 2 * sum(a * b for a, b in shapes) * sizes.batch_size
    workloads = {"numpy": gemm_workload_numpy(shapes, sizes.batch_size)}
    if torch is not None:
        workloads["torch"] = gemm_workload_torch(shapes, sizes.batch_size)

    print(
        f"data: {source}; batch {sizes.batch_size}, float32, sgd; {sizes.steps} steps per run, "
        f"median of {repeats} interleaved runs; 1 thread; {args.clock} clock"
        + (f"; torch {torch.__version__}" if torch is not None else "; torch not installed")
    )
    # Per row: each backend's training rate, each library's GEMM rate, and each
    # backend's fraction of the GEMM limit, one value per repeat. The GEMM
    # workloads are timed in the same rounds as the training steps, so a
    # fraction compares figures taken under the same machine load.
    train_rates: dict[str, dict[str, list[float]]] = {}
    gemm_rates: dict[str, list[float]] = {b: [] for b in backends}
    fractions: dict[str, dict[str, list[float]]] = {}
    for label, config in rows:
        models = {}
        for backend in backends:
            models[backend] = build_model(
                config.replace(backend=backend), sizes.n_features, N_CLASSES, run_seeds(0)
            )
            for xb, yb in batches[: sizes.warmup]:
                models[backend].train_step(xb, yb)
        train_rates[label] = {b: [] for b in backends}
        fractions[label] = {b: [] for b in backends}
        for repeat in range(repeats):
            order = backends if repeat % 2 == 0 else backends[::-1]
            gemm_now = {}
            for backend in order:
                train_rates[label][backend].append(time_steps(models[backend], batches, clock))
                gemm_now[backend] = time_workload(
                    workloads[backend], sizes.steps, sizes.batch_size, clock
                )
                gemm_rates[backend].append(gemm_now[backend])
            limit_now = max(gemm_now.values())
            for backend in backends:
                fractions[label][backend].append(train_rates[label][backend][-1] / limit_now)

    def row_median(values: dict[str, list[float]], backend: str) -> float:
        return median(values.get(backend, []))

    print()
    print(HEADER)
    for label, _ in rows:
        np_rate = row_median(train_rates[label], "numpy")
        torch_rate = row_median(train_rates[label], "torch")
        print(
            f"{label:<28} {fmt_rate(np_rate):>16} {fmt_rate(torch_rate):>16} "
            f"{fmt_ratio(np_rate / torch_rate):>12}"
        )

    gemm_rate = {b: median(v) for b, v in gemm_rates.items()}
    print()
    print(
        "float32 GEMM limit: one step's matmuls alone (per layer x@W, dy@W.T, x.T@dy; "
        f"3 x 2 x sum(n_in*n_out) x batch = {flops / 1e6:.3g} MFLOP), "
        f"median of {len(gemm_rates['numpy'])} runs"
    )
    for backend in backends:
        gflops = gemm_rate[backend] / sizes.batch_size * flops / 1e9
        print(
            f"  {backend + ' matmul':<26} {fmt_rate(gemm_rate[backend]):>16} samples/s "
            f"({gflops:.1f} GFLOP/s)"
        )
    print()
    print(f"{'fraction of the GEMM limit':<28} {'numpy':>16} {'torch':>16}")
    for label, _ in rows:
        print(
            f"{label:<28} {fmt_ratio(row_median(fractions[label], 'numpy')):>16} "
            f"{fmt_ratio(row_median(fractions[label], 'torch')):>16}"
        )
    print(
        "(limit: the faster library's matmul-only rate in the same round. Both backends "
        "skip the first layer's input gradient, so a fraction a little above 1 is possible.)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
