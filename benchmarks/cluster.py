"""What the cluster costs, and what pruning saves (not a test).

1. Throughput: the same search (short digits trials) on a 3-node local
   cluster (``ray.cluster_utils.Cluster``: a head with no CPUs and two 1-CPU
   worker nodes) and on a single 2-CPU node; prints trials/s and the ratio
   cluster / single (goal >= 0.9: the cluster costs almost nothing).
2. Pruning: ``studies/mnist_ch6.toml`` (or its ``--smoke`` miniature) with
   ``pruner = "none"`` and with ``pruner = "asha"``, same seed; prints epochs
   trained and wall time until each reached the best validation accuracy the
   unpruned run reached (within 0.01), and their ratios (goal: pruning trains
   <= 0.5x the epochs for a best within 0.01).

Medians of ``--repeats`` runs, interleaved; figures only, never asserts.

    python benchmarks/cluster.py            # full
    python benchmarks/cluster.py --smoke    # seconds, for the tests
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parent.parent

THROUGHPUT_STUDY = """
[study]
name = "{name}"
seed = 0
[data]
dataset = "digits"
train_samples = 400
[model]
hidden_sizes = [32, 32]
epochs = 2
batch_size = 40
[search.lr]
low = 1e-3
high = 1.0
log = true
[search.dropout_ratio]
low = 0.0
high = 0.5
[narrowing]
rounds = 1
trials_per_round = {trials}
top_k = 3
[resources]
workers = 2
"""


def run_search(study_text: str, directory: str, name: str, *, pruner: str | None = None):
    """Run one study through the real driver; returns (wall seconds, trials)."""
    import optuna

    from hpsearch.config import parse_study
    from hpsearch.runner import run_study

    if pruner is not None:
        study_text = _with_pruner(study_text, pruner)
    config = parse_study(study_text).with_overrides(name=name)
    url = f"sqlite:///{directory}/{name}.db"
    start = time.perf_counter()
    run_study(config, url, workers=config.resources.workers or 2, wait_for_workers=True)
    wall = time.perf_counter() - start
    return wall, optuna.load_study(study_name=name, storage=url).get_trials()


def _with_pruner(text: str, pruner: str) -> str:
    lines = [line for line in text.splitlines() if not line.strip().startswith("pruner")]
    out = []
    for line in lines:
        out.append(line)
        if line.strip() == "[study]":
            out.append(f'pruner = "{pruner}"')
    return "\n".join(out) + "\n"


def throughput(trials: int, repeats: int) -> tuple[float, float]:
    import ray
    from ray.cluster_utils import Cluster

    rates: dict[str, list[float]] = {"cluster": [], "single": []}
    with tempfile.TemporaryDirectory() as directory:
        for r in range(repeats):
            for kind in ("single", "cluster"):
                cluster = None
                if kind == "cluster":
                    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
                    for _ in range(2):
                        cluster.add_node(num_cpus=1)
                    cluster.wait_for_nodes()
                    ray.init(address=cluster.address, logging_level="WARNING")
                else:
                    ray.init(
                        address="local",
                        num_cpus=2,
                        include_dashboard=False,
                        logging_level="WARNING",
                    )
                try:
                    text = THROUGHPUT_STUDY.format(name="t", trials=trials)
                    wall, done = run_search(text, directory, f"{kind}{r}")
                    rates[kind].append(len(done) / wall)
                finally:
                    ray.shutdown()
                    if cluster is not None:
                        cluster.shutdown()
    return statistics.median(rates["cluster"]), statistics.median(rates["single"])


def _epochs_to(trials, target: float) -> tuple[float, float, int]:
    """(epochs, seconds since the first start) until the best val accuracy >= target."""
    done = sorted((t for t in trials if t.datetime_complete), key=lambda t: t.datetime_complete)
    start = min(t.datetime_start for t in done)
    epochs, best = 0, -1.0
    for t in done:
        epochs += int(t.user_attrs.get("epochs_completed", 0))
        if t.state.name == "COMPLETE" and t.value is not None:
            best = max(best, t.value)
        if best >= target:
            return epochs, (t.datetime_complete - start).total_seconds(), 1
    return epochs, (done[-1].datetime_complete - start).total_seconds(), 0


def pruning(study_text: str, repeats: int):
    import ray

    rows = []
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        with tempfile.TemporaryDirectory() as directory:
            for r in range(repeats):
                _, plain = run_search(study_text, directory, f"none{r}", pruner="none")
                _, pruned = run_search(study_text, directory, f"asha{r}", pruner="asha")
                best = max(t.value for t in plain if t.state.name == "COMPLETE")
                target = best - 0.01
                e0, s0, _ = _epochs_to(plain, target)
                e1, s1, reached = _epochs_to(pruned, target)
                total0 = sum(int(t.user_attrs.get("epochs_completed", 0)) for t in plain)
                total1 = sum(int(t.user_attrs.get("epochs_completed", 0)) for t in pruned)
                best1 = max(t.value for t in pruned if t.state.name == "COMPLETE")
                rows.append((best, best1, e0, e1, s0, s1, reached, total0, total1))
    finally:
        ray.shutdown()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=120)
    parser.add_argument("--study", default=str(ROOT / "studies" / "mnist_ch6.toml"))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_text = Path(args.study).read_text()
    if args.smoke:
        args.repeats, args.trials = 1, 8
        study_text = THROUGHPUT_STUDY.format(name="p", trials=8).replace("epochs = 2", "epochs = 4")

    cluster_rate, single_rate = throughput(args.trials, args.repeats)
    print(f"throughput: {args.trials} trials, median of {args.repeats} repeats")
    print(f"  single node (2 CPUs):            {single_rate:8.1f} trials/s")
    print(f"  3-node cluster (0 + 1 + 1 CPUs): {cluster_rate:8.1f} trials/s")
    print(f"  ratio cluster / single: {cluster_rate / single_rate:.2f} (goal >= 0.9)")

    rows = pruning(study_text, args.repeats)
    print(
        f"pruning (asha vs none) on {Path(args.study).name if not args.smoke else 'smoke'}, "
        f"{len(rows)} repeat(s):"
    )
    print(
        f"  {'best none':>9} {'best asha':>9} {'epochs none':>11} {'epochs asha':>11} "
        f"{'s none':>7} {'s asha':>7} {'reached':>7} {'all epochs none/asha':>21}"
    )
    for b0, b1, e0, e1, s0, s1, ok, t0, t1 in rows:
        print(
            f"  {b0:9.4f} {b1:9.4f} {e0:11d} {e1:11d} {s0:7.1f} {s1:7.1f} "
            f"{'yes' if ok else 'no':>7} {t0:>10d}/{t1:<10d}"
        )
    e_ratio = statistics.median(r[3] / r[2] for r in rows)
    s_ratio = statistics.median(r[5] / r[4] for r in rows if r[4] > 0)
    all_ratio = statistics.median(r[8] / r[7] for r in rows)
    print(f"  epochs to reach the unpruned best - 0.01, asha / none: {e_ratio:.2f}")
    print(f"  wall time to reach it, asha / none: {s_ratio:.2f}")
    print(f"  all epochs trained, asha / none: {all_ratio:.2f} (goal <= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
