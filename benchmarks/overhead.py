"""Per-trial overhead of hpsearch on trivially short trials (not a test).

Runs N trials of one epoch on a tiny digits subset through the real driver
(SQLite results database, Ray workers, the narrowing loop) with 1 and with 2
workers (unpacked), and with 2 workers packing up to 8 trials per call, and
prints trials per second and the per-trial overhead:

    overhead = (wall time - sum of the trainers' own time / workers) / trials

i.e. the time per trial the driver, Ray and the database add on top of
training (with 1 worker: wall minus the sum of trainer times, per trial).
Figures are medians of several repeats, measured in this one process.

    python benchmarks/overhead.py            # 200 trials, 3 repeats
    python benchmarks/overhead.py --smoke    # a few seconds, for the tests
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

STUDY = """
[study]
name = "{name}"
seed = 0
sampler = "random"

[data]
dataset = "digits"
train_samples = 60
val_fraction = 0.2

[model]
hidden_sizes = [16]
epochs = 1
batch_size = 48

[search.lr]
low = 1e-3
high = 1.0
log = true

[search.weight_decay]
low = 1e-8
high = 1e-2
log = true

[search.dropout_ratio]
low = 0.0
high = 0.5

[search.batchnorm]
choices = [true, false]

[narrowing]
rounds = 1
trials_per_round = {trials}
top_k = 5

[resources]
workers = {workers}
"""


def run_once(
    trials: int, workers: int, directory: str, tag: str, pack_size: int = 1
) -> tuple[float, float]:
    """One search; (wall s, sum of trainer s). Unpacked unless ``pack_size`` > 1."""
    import optuna

    from hpsearch.config import parse_study
    from hpsearch.runner import run_study
    from hpsearch.search import SearchObserver

    class Clock(SearchObserver):  # the search's own wall time, workers already up
        def round_started(self, record, total_rounds):
            self.start = time.perf_counter()

    config = parse_study(STUDY.format(name=tag, trials=trials, workers=workers))
    url = f"sqlite:///{directory}/{tag}.db"
    clock = Clock()
    run_study(config, url, pack_size=pack_size, observer=clock, wait_for_workers=True)
    wall = time.perf_counter() - clock.start
    done = optuna.load_study(study_name=tag, storage=url).get_trials()
    assert len(done) == trials, f"expected {trials} trials, found {len(done)}"
    train_sum = sum(t.user_attrs.get("train_seconds", 0.0) for t in done)
    return wall, train_sum


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = parser.parse_args(argv)
    if args.smoke:
        args.trials, args.repeats = 12, 1

    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    rows = {}
    try:
        with tempfile.TemporaryDirectory() as directory:
            kinds = {"1": (1, 1), "2": (2, 1), "2 packed": (2, 8)}  # workers, pack size
            samples: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
            for repeat in range(args.repeats):
                for kind, (workers, pack) in kinds.items():  # interleaved: noise hits all
                    tag = f"w{workers}p{pack}r{repeat}"
                    samples[kind].append(run_once(args.trials, workers, directory, tag, pack))
            for kind, runs in samples.items():
                workers = kinds[kind][0]
                walls = [w for w, _ in runs]
                overheads = [(w - t / workers) / args.trials for w, t in runs]
                rows[kind] = (
                    args.trials / statistics.median(walls),
                    statistics.median(overheads) * 1e3,
                    statistics.median(t / args.trials for _, t in runs) * 1e3,
                )
    finally:
        if started:
            ray.shutdown()

    print(f"hpsearch overhead: {args.trials} trials, median of {args.repeats} repeats")
    print(f"{'workers':>8}  {'trials/s':>9}  {'overhead ms/trial':>17}  {'train ms/trial':>14}")
    for kind, (rate, overhead, train) in rows.items():
        print(f"{kind:>8}  {rate:>9.1f}  {overhead:>17.2f}  {train:>14.2f}")
    print(f"throughput ratio 2 workers / 1 worker: {rows['2'][0] / rows['1'][0]:.2f}")
    packed = rows["2 packed"][0] / rows["1"][0]
    print(f"throughput ratio 2 workers packed (8) / 1 worker: {packed:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
