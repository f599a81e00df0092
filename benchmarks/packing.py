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

(c) Through hpsearch's driver (``--driver``, on by default outside smoke
    mode): the same search of the digits network (+BN, dropout U(0, 0.5), lr
    and weight decay log-uniform, batch 50, 5 epochs) run by
    ``hpsearch.runner.run_study`` with 2 Ray workers, unpacked and packed up to
    8, 16 and 32 per call: trials per second of the search itself (from the round's
    start, workers already up; sampling, dispatch and recording included) and
    of the whole run (start-up included), and packed / unpacked.

Usage::

    python benchmarks/packing.py                   # the real run (a few minutes)
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


DRIVER_STUDY = """
[study]
name = "{name}"
seed = 0
sampler = "random"

[data]
dataset = "{dataset}"
{train_samples}
val_fraction = 0.2

[model]
hidden_sizes = {hidden}
epochs = {epochs}
batch_size = {batch}
batchnorm = true

[search.lr]
low = 1e-3
high = 0.3
log = true

[search.weight_decay]
low = 1e-8
high = 1e-4
log = true

[search.dropout_ratio]
low = 0.0
high = 0.5

[narrowing]
rounds = 1
trials_per_round = {trials}
top_k = 5

[resources]
workers = 2
pack_size = {pack}
"""


def driver_run(study: str, trials: int, pack: int, directory: str, tag: str) -> tuple[float, float]:
    """One search through hpsearch's driver; (search seconds, whole-run seconds)."""
    import optuna

    from hpsearch.config import parse_study
    from hpsearch.runner import run_study
    from hpsearch.search import SearchObserver

    class Clock(SearchObserver):
        def round_started(self, record: object, total_rounds: int) -> None:
            self.start = time.perf_counter()

    config = parse_study(study.format(name=tag, trials=trials, pack=pack))
    url = f"sqlite:///{directory}/{tag}.db"
    clock = Clock()
    whole = time.perf_counter()
    run_study(config, url, observer=clock, wait_for_workers=True, final_eval=False)
    end = time.perf_counter()
    done = optuna.load_study(study_name=tag, storage=url).get_trials()
    finished = [t for t in done if t.state.is_finished()]
    if len(finished) != trials:
        raise RuntimeError(f"{tag}: expected {trials} finished trials, found {len(finished)}")
    return end - clock.start, end - whole


def through_driver(*, smoke: bool, repeats: int) -> None:
    """Part (c): packed vs unpacked through hpsearch's driver on 2 Ray workers."""
    import logging
    import tempfile

    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if smoke:
        trials, packs = 8, (1, 2)
        study = DRIVER_STUDY.replace("{dataset}", "synthetic").replace("{train_samples}", "")
        fields = {"hidden": "[8, 8]", "epochs": 1, "batch": 20}
    else:
        trials, packs = 400, (1, 8, 16, 32)
        study = DRIVER_STUDY.replace("{dataset}", "digits").replace("{train_samples}", "")
        fields = {"hidden": "[50, 50]", "epochs": 5, "batch": 50}
    study = study.replace("{hidden}", fields["hidden"])
    study = study.replace("{epochs}", str(fields["epochs"])).replace(
        "{batch}", str(fields["batch"])
    )
    print()
    print(
        f"(c) through hpsearch's driver: {trials} trials of {fields['hidden']} +BN +dropout, "
        f"batch {fields['batch']}, {fields['epochs']} epochs, 2 Ray workers, SQLite; "
        f"median of {repeats} interleaved runs"
    )
    started = not ray.is_initialized()
    if started:
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING
        )
    runs: dict[int, list[tuple[float, float]]] = {p: [] for p in packs}
    try:
        with tempfile.TemporaryDirectory(prefix="packing-driver-") as directory:
            for repeat in range(repeats):
                order = packs if repeat % 2 == 0 else tuple(reversed(packs))
                for pack in order:
                    runs[pack].append(
                        driver_run(study, trials, pack, directory, f"p{pack}r{repeat}")
                    )
    finally:
        if started:
            ray.shutdown()
    base_search = statistics.median(trials / s for s, _ in runs[packs[0]])
    base_whole = statistics.median(trials / w for _, w in runs[packs[0]])
    print(
        f"{'pack':>5} {'search trials/s':>16} {'vs unpacked':>12} "
        f"{'whole-run trials/s':>19} {'vs unpacked':>12}"
    )
    for pack in packs:
        search_rate = statistics.median(trials / s for s, _ in runs[pack])
        whole_rate = statistics.median(trials / w for _, w in runs[pack])
        print(
            f"{pack:>5} {search_rate:>16.1f} {search_rate / base_search:>12.2f} "
            f"{whole_rate:>19.1f} {whole_rate / base_whole:>12.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; runs in seconds")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed runs per figure (default 5; smoke 1)"
    )
    parser.add_argument(
        "--backend", choices=("numpy", "torch"), default="numpy", help="default numpy"
    )
    parser.add_argument(
        "--driver",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run part (c) through hpsearch's driver on Ray (default: on, numpy only)",
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
    driver = args.driver if args.driver is not None else args.backend == "numpy"
    if driver:
        through_driver(smoke=args.smoke, repeats=repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
