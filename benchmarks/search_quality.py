"""Search quality: better hyperparameters for less training? (not a test)

Runs the chapter's hyperparameter search on ``mnist5k`` -- 500 training
samples with 20 % held out for validation, the 784-100x6-10 ReLU network,
plain SGD, batch 100, 50 epochs, lr 10^U(-6,-2), weight decay 10^U(-8,-4),
dropout U(0, 0.5), batch norm on/off -- under these strategies, each through
the real driver (``parse_study``, ``StudyStore.open`` on SQLite in a
temporary directory, ``RayExecutor`` with 2 workers, ``NarrowingSearch``):

1. ``baseline``: the chapter's random search, 100 trials x 50 epochs, one round;
2. ``narrow-random``: the narrowing loop with the random sampler;
3. ``narrow-tpe``: the narrowing loop with TPE;
4. ``narrow-tpe-asha``: the narrowing loop with TPE and ASHA pruning;
5. ``narrow-tpe-hb``: the narrowing loop with TPE and Hyperband pruning;
6. ``shipped`` (only with ``--strategies ...,6``): the sampler and pruner
   ``studies/mnist_ch6.toml`` ships (or ``--sampler``/``--pruner``), run exactly
   as ``hpsearch run`` runs them.

Strategies 2-6 run the same total number of trials as the baseline; their
rounds, trials per round, top-k, margin and hard limits (``hard_low`` /
``hard_high``: how far the box may move past the first range) are the ones
``studies/mnist_ch6.toml`` ships, unless overridden on the command line. Every
strategy runs once per study seed (``--seeds``, default 5); the study seed
also draws the 400/100 train/validation split, so all strategies of one seed
see the same data. Studies without a pruner share one pool of Ray workers per
seed; a pruned study gets its own (its pruning oracle holds its curves).

Every strategy uses the sampler and pruner exactly as ``hpsearch run`` makes
them (``make_sampler``; the executor's pruning oracle). With a pruner, the
narrowing ranks PRUNED trials too (:mod:`hpsearch.ranking`), and the first rung
is at :func:`hpsearch.pruning.grace_epochs` of the 50 epochs.

Epoch accounting: a study's cost is the sum over its trials of
``epochs_completed`` (pruned and diverged trials count the epochs they
trained). Anytime performance is the best validation accuracy (the study's
metric, final-epoch validation accuracy of COMPLETE trials) reached so far as
a function of the cumulative epochs trained, trials taken in order of
completion (``datetime_complete``). Each strategy's best configuration is then
retrained by the driver's final evaluation (``NarrowingSearch(final_eval=True)``,
5 seeds, on train+validation) and scored on mnist5k's 1,000 held-out test
images; the test split is read there and nowhere else.

It prints, per strategy (mean ± std over study seeds): the final best
validation accuracy, the total epochs, the epochs needed to reach the
baseline's final best of the same seed (within 0.005), the best validation
accuracy reached after a range of epoch budgets, and the test accuracy of
the best configuration (mean ± std over all seeds' retrainings); then
whether strategy 4 meets the issue's goal. It writes the anytime curves
(mean over seeds with a ± std band) to ``benchmarks/search_quality.png``.

    python benchmarks/search_quality.py                  # the full run (~25-40 min on 2 cores)
    python benchmarks/search_quality.py --seeds 3        # fewer seeds
    python benchmarks/search_quality.py --strategies 1,4 --rounds 4 --top-k 5
    python benchmarks/search_quality.py --save runs.json # keep the raw runs ...
    python benchmarks/search_quality.py --replot runs.json  # ... and redo table and figure
    python benchmarks/search_quality.py --reuse runs.json --strategies 1,4 --margin 0.2
    python benchmarks/search_quality.py --smoke          # tiny sizes, seconds, for the tests
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

SHIPPED_STUDY = ROOT / "studies" / "mnist_ch6.toml"
DEFAULT_FIGURE = ROOT / "benchmarks" / "search_quality.png"
REACH_TOLERANCE = 0.005
"""A strategy reaches the baseline's best when its best is >= that best - 0.005."""
GOAL_FRACTION = 1 / 3
"""The issue's goal: strategy 4 reaches the baseline's best within 1/3 of its epochs."""
BUDGET_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 1 / 3, 0.5, 1.0)
"""Epoch budgets of the anytime table, as fractions of the baseline's total epochs."""

STUDY = """
[study]
name = "{name}"
metric = "val_accuracy"
seed = {seed}
sampler = "{sampler}"
pruner = "{pruner}"

[data]
dataset = "mnist5k"
train_samples = {train_samples}
val_fraction = 0.2

[model]
backend = "numpy"
hidden_sizes = {hidden}
activation = "relu"
weight_init = "he"
optimizer = "sgd"
epochs = {epochs}
batch_size = {batch_size}

[search.lr]
low = 1e-6
high = 1e-2
log = true
{lr_limits}
[search.weight_decay]
low = 1e-8
high = 1e-4
log = true
{wd_limits}
[search.dropout_ratio]
low = 0.0
high = 0.5

[search.batchnorm]
choices = [true, false]

[narrowing]
rounds = {rounds}
trials_per_round = {trials_per_round}
top_k = {top_k}
margin = {margin}

[resources]
workers = {workers}

[final_eval]
enabled = true
seeds = {final_seeds}
"""


@dataclass(frozen=True)
class Sizes:
    """How big one study is."""

    train_samples: int = 500
    hidden: tuple[int, ...] = (100,) * 6
    epochs: int = 50
    batch_size: int = 100
    trials: int = 100
    final_seeds: int = 5
    workers: int = 2


FULL = Sizes()
SMOKE = Sizes(train_samples=60, hidden=(16, 16), epochs=3, batch_size=20, trials=6, final_seeds=2)


@dataclass(frozen=True)
class Strategy:
    """One way to search: sampler, pruner and the narrowing loop's settings."""

    number: int
    key: str
    label: str
    sampler: str
    pruner: str
    rounds: int
    trials_per_round: int
    top_k: int
    margin: float
    lr_limits: tuple[float, float] | None = None
    wd_limits: tuple[float, float] | None = None

    def describe(self) -> str:
        limits = []
        for name, lim in (("lr", self.lr_limits), ("weight_decay", self.wd_limits)):
            if lim:
                limits.append(f"{name} hard {lim[0]:g}..{lim[1]:g}")
        return (
            f"{self.rounds} round(s) x {self.trials_per_round} trials, top-k {self.top_k}, "
            f"margin {self.margin:g}, sampler {self.sampler}, pruner {self.pruner}"
            + (f", {', '.join(limits)}" if limits else ", no hard limits")
        )

    def study_text(self, name: str, seed: int, sizes: Sizes) -> str:
        def limits(lim: tuple[float, float] | None) -> str:
            return f"hard_low = {lim[0]!r}\nhard_high = {lim[1]!r}\n" if lim else ""

        return STUDY.format(
            name=name,
            seed=seed,
            sampler=self.sampler,
            pruner=self.pruner,
            train_samples=sizes.train_samples,
            hidden=list(sizes.hidden),
            epochs=sizes.epochs,
            batch_size=sizes.batch_size,
            lr_limits=limits(self.lr_limits),
            wd_limits=limits(self.wd_limits),
            rounds=self.rounds,
            trials_per_round=self.trials_per_round,
            top_k=self.top_k,
            margin=self.margin,
            workers=sizes.workers,
            final_seeds=sizes.final_seeds,
        )


def shipped_narrowing() -> dict[str, Any]:
    """The narrowing settings and hard limits ``studies/mnist_ch6.toml`` ships."""
    from hpsearch.config import parse_study

    config = parse_study(SHIPPED_STUDY.read_text())
    return {
        "rounds": config.narrowing.rounds,
        "trials_per_round": config.narrowing.trials_per_round,
        "top_k": config.narrowing.top_k,
        "margin": config.narrowing.margin,
        "lr_limits": config.limits.get("lr"),
        "wd_limits": config.limits.get("weight_decay"),
        "sampler": config.sampler,
        "pruner": config.pruner,
    }


def build_strategies(args: argparse.Namespace, sizes: Sizes) -> list[Strategy]:
    shipped = shipped_narrowing()
    rounds = args.rounds or shipped["rounds"]
    per_round = args.trials_per_round or max(1, sizes.trials // rounds)
    top_k = min(args.top_k or shipped["top_k"], per_round)
    margin = shipped["margin"] if args.margin is None else args.margin
    lr_limits = shipped["lr_limits"]
    if args.lr_hard_high is not None:
        lr_limits = None if args.lr_hard_high <= 1e-2 else (1e-6, args.lr_hard_high)
    wd_limits = shipped["wd_limits"]
    if args.wd_hard_high is not None:
        wd_limits = None if args.wd_hard_high <= 1e-4 else (1e-8, args.wd_hard_high)
    sampler = args.sampler or shipped["sampler"]
    pruner = args.pruner or shipped["pruner"]
    narrowing = dict(
        rounds=rounds,
        trials_per_round=per_round,
        top_k=top_k,
        margin=margin,
        lr_limits=lr_limits,
        wd_limits=wd_limits,
    )
    return [
        Strategy(
            1, "baseline", "1 baseline: random, 1 round", "random", "none",
            rounds=1, trials_per_round=sizes.trials, top_k=min(5, sizes.trials), margin=0.1,
        ),
        Strategy(2, "narrow-random", "2 narrowing, random", "random", "none", **narrowing),
        Strategy(3, "narrow-tpe", "3 narrowing, TPE", "tpe", "none", **narrowing),
        Strategy(4, "narrow-tpe-asha", "4 narrowing, TPE + ASHA", "tpe", "asha", **narrowing),
        Strategy(5, "narrow-tpe-hb", "5 narrowing, TPE + Hyperband", "tpe", "hyperband",
                 **narrowing),
        Strategy(6, "shipped", f"6 mnist_ch6.toml: {sampler}"
                 + (f" + {pruner}" if pruner != "none" else ""), sampler, pruner, **narrowing),
    ]  # fmt: skip


# --------------------------------------------------------------------------- running


class Executors:
    """RayExecutors for one study seed's data: one shared by consecutive studies
    without a pruner (worker start-up takes seconds on a busy machine), a fresh
    one per pruned study (its pruning oracle holds that study's curves). Only
    one exists at a time: its workers hold all the CPUs."""

    def __init__(self) -> None:
        self._shared: Any = None

    def get(self, config: Any, data: Any) -> tuple[Any, bool]:
        """(executor, whether the caller closes it after the study)."""
        from hpsearch.cluster import RayExecutor

        if config.pruner == "none" and self._shared is not None:
            return self._shared, False
        self.close()  # its workers hold the CPUs a new executor needs
        executor = RayExecutor(
            data,
            workers=config.resources.workers,
            pruner=config.pruner,
            direction=config.direction,
            study_name=config.name,
            max_epochs=int(config.model["epochs"]),
        )
        executor.ready()
        if config.pruner == "none":
            self._shared = executor
            return executor, False
        return executor, True

    def close(self) -> None:
        if self._shared is not None:
            self._shared.close()
            self._shared = None


def run_study(
    strategy: Strategy,
    seed: int,
    sizes: Sizes,
    directory: str,
    executors: Executors,
) -> dict[str, Any]:
    """One study through the real driver; its trials, rounds and final evaluation."""
    from hpsearch import results
    from hpsearch.config import parse_study
    from hpsearch.sampling import make_sampler
    from hpsearch.search import NarrowingSearch
    from hpsearch.storage import StudyStore
    from trainer.datasets import load_dataset

    name = f"{strategy.key}-s{seed}"
    config = parse_study(strategy.study_text(name, seed, sizes))
    data = load_dataset(
        config.data.dataset,
        train_samples=config.data.train_samples,
        val_fraction=config.data.val_fraction,
        seed=config.seed,
    )
    sampler = make_sampler(config.sampler, config.seed)
    url = f"sqlite:///{directory}/{name}.db"
    store, _ = StudyStore.open(
        url, config.name, direction=config.direction, sampler=sampler, create=True
    )
    executor, close = executors.get(config, data)
    start = time.perf_counter()
    try:
        outcome = NarrowingSearch(config, store, executor, sampler, final_eval=True).run()
    finally:
        if close:
            executor.close()
    wall = time.perf_counter() - start
    trials = results.trials(url, name)
    trials = trials[trials["state"] != "RUNNING"].sort_values(["datetime_complete", "number"])
    rounds = results.rounds(url, name).sort_values("round")
    final = outcome.final_eval or {}
    best = outcome.best_trial
    return {
        "strategy": strategy.key,
        "seed": seed,
        "wall_seconds": wall,
        "stop_reason": outcome.stop_reason,
        "states": [str(s) for s in trials["state"]],
        "values": [None if math.isnan(v) else float(v) for v in trials["value"]],
        "epochs": [int(e) for e in trials["epochs_completed"].fillna(0)],
        "rounds": [
            {
                "round": int(r["round"]),
                "lr": [float(r["lr_low"]), float(r["lr_high"])],
                "best": None if math.isnan(r["best"]) else float(r["best"]),
                "moved": list(r["moved_edges"] or []),
            }
            for _, r in rounds.iterrows()
        ],
        "best_params": dict(best.params) if best else None,
        "best_value": float(best.value) if best else None,
        "test_accuracy": [a for a in final.get("test_accuracy", []) if a is not None],
        "params": [
            {k: (bool(v) if k == "batchnorm" else float(v)) for k, v in row.items()}
            for row in trials[list(config.space)].to_dict("records")
        ],
    }  # fmt: skip


# --------------------------------------------------------------------------- analysis


def anytime(run: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative epochs after each trial, best COMPLETE value so far; NaN before one)."""
    cumulative = np.cumsum(np.asarray(run["epochs"], dtype=float))
    best = np.full(len(cumulative), np.nan)
    so_far = -math.inf
    for i, (state, value) in enumerate(zip(run["states"], run["values"], strict=True)):
        if state == "COMPLETE" and value is not None:
            so_far = max(so_far, value)
        if so_far > -math.inf:
            best[i] = so_far
    return cumulative, best


def best_within(run: dict[str, Any], budget: float) -> float:
    """Best validation accuracy reached with at most ``budget`` epochs trained (NaN: none)."""
    cumulative, best = anytime(run)
    inside = np.nonzero(cumulative <= budget + 1e-9)[0]
    return float(best[inside[-1]]) if len(inside) else math.nan


def epochs_to_reach(run: dict[str, Any], target: float) -> float:
    """Cumulative epochs when the best first reaches ``target`` - tolerance (inf: never)."""
    cumulative, best = anytime(run)
    hit = np.nonzero(best >= target - REACH_TOLERANCE - 1e-12)[0]
    return float(cumulative[hit[0]]) if len(hit) else math.inf


def total_epochs(run: dict[str, Any]) -> int:
    return int(sum(run["epochs"]))


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(mean: float, std: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarize(
    strategies: list[Strategy], runs: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per-strategy figures and the printed report's lines."""
    by = {s.key: sorted((r for r in runs if r["strategy"] == s.key), key=lambda r: r["seed"])
          for s in strategies}  # fmt: skip
    base = {r["seed"]: r for r in by.get("baseline", [])}
    stats: dict[str, dict[str, Any]] = {}
    for s in strategies:
        mine = by[s.key]
        reach = [
            epochs_to_reach(r, base[r["seed"]]["best_value"])
            for r in mine
            if r["seed"] in base and base[r["seed"]]["best_value"] is not None
        ]
        tests = [a for r in mine for a in r["test_accuracy"]]
        stats[s.key] = {
            "best": mean_std([r["best_value"] or math.nan for r in mine]),
            "epochs": mean_std([float(total_epochs(r)) for r in mine]),
            "reach": reach,
            "test": mean_std(tests),
            "n_tests": len(tests),
            "seeds": len(mine),
            "pruned": statistics.fmean(r["states"].count("PRUNED") for r in mine) if mine else 0,
            "failed": statistics.fmean(r["states"].count("FAIL") for r in mine) if mine else 0,
            "wall": statistics.fmean(r["wall_seconds"] for r in mine) if mine else math.nan,
        }
    lines = []
    head = (
        f"{'strategy':<30} {'best val acc':>14} {'total epochs':>15} "
        f"{'epochs to baseline best':>24} {'test acc (best config)':>23} "
        f"{'pruned':>6} {'failed':>6} {'wall s':>6}"
    )
    lines += [head, "-" * len(head)]
    for s in strategies:
        st = stats[s.key]
        reached = [e for e in st["reach"] if math.isfinite(e)]
        if not st["reach"]:
            reach_text = "n/a"
        elif not reached:
            reach_text = "never"
        else:
            m, d = mean_std(reached)
            reach_text = f"{m:.0f} ± {d:.0f} ({len(reached)}/{len(st['reach'])})"
        lines.append(
            f"{s.label:<30} {fmt(*st['best']):>14} {fmt(*st['epochs'], digits=0):>15} "
            f"{reach_text:>24} {fmt(*st['test']):>23} "
            f"{st['pruned']:>6.1f} {st['failed']:>6.1f} {st['wall']:>6.1f}"
        )
    if base:
        base_total = statistics.fmean(total_epochs(r) for r in base.values())
        budgets = [f * base_total for f in BUDGET_FRACTIONS]
        lines += ["", "anytime: best validation accuracy reached within E epochs (mean over seeds)"]
        lines.append(f"{'E (epochs)':<30}" + "".join(f"{b:>8.0f}" for b in budgets))
        lines.append(
            f"{'E / baseline epochs':<30}" + "".join(f"{f:>8.2f}" for f in BUDGET_FRACTIONS)
        )
        for s in strategies:
            row = []
            for budget in budgets:
                values = [best_within(r, budget) for r in by[s.key]]
                finite = [v for v in values if not math.isnan(v)]
                row.append(
                    f"{statistics.fmean(finite):>8.3f}" if len(finite) == len(values) and finite
                    else f"{'-':>8}"
                )  # fmt: skip
            lines.append(f"{s.label:<30}" + "".join(row))
    return stats, lines


def goal_lines(
    strategies: list[Strategy], runs: list[dict[str, Any]], stats: dict[str, dict[str, Any]]
) -> tuple[bool | None, list[str]]:
    """Whether strategy 4 meets the issue's goal, and why."""
    if "baseline" not in stats or "narrow-tpe-asha" not in stats:
        return None, ["goal: not evaluated (needs strategies 1 and 4)"]
    base = {r["seed"]: r for r in runs if r["strategy"] == "baseline"}
    asha = [r for r in runs if r["strategy"] == "narrow-tpe-asha" and r["seed"] in base]
    per_seed = []
    for r in asha:
        limit = GOAL_FRACTION * total_epochs(base[r["seed"]])
        needed = epochs_to_reach(r, base[r["seed"]]["best_value"])
        per_seed.append((r["seed"], needed, limit, needed <= limit))
    fast = all(ok for *_, ok in per_seed) and bool(per_seed)
    (t4, _), (t1, s1) = stats["narrow-tpe-asha"]["test"], stats["baseline"]["test"]
    good = not math.isnan(t4) and t4 >= t1 - s1
    lines = [
        "goal: strategy 4 reaches the baseline's final best (same seed, within "
        f"{REACH_TOLERANCE}) with <= 1/3 of the baseline's epochs in every seed, at a test "
        "accuracy >= the baseline's mean - one baseline std",
    ]
    for seed, needed, limit, ok in per_seed:
        shown = "never" if math.isinf(needed) else f"{needed:.0f} epochs"
        lines.append(f"  seed {seed}: {shown} (limit {limit:.0f}) -> {'yes' if ok else 'NO'}")
    lines.append(
        f"  test accuracy: strategy 4 {t4:.3f} vs baseline {t1:.3f} - {s1:.3f} = "
        f"{t1 - s1:.3f} -> {'yes' if good else 'NO'}"
    )
    met = fast and good
    lines.append(f"goal {'MET' if met else 'NOT MET'}")
    return met, lines


# --------------------------------------------------------------------------- figure


def write_figure(
    strategies: list[Strategy], runs: list[dict[str, Any]], out: Path, title: str
) -> None:
    """Left: each strategy's anytime curve, mean ± std over seeds. Right: every
    seed of the pruned strategies on its own (a mean hides a search that failed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {s.key: [r for r in runs if r["strategy"] == s.key] for s in strategies}
    top = max((total_epochs(r) for r in runs), default=1)
    grid = np.unique(np.geomspace(1, max(top, 2), 400).round())
    fig, (ax, ax_seeds) = plt.subplots(
        1, 2, figsize=(13, 5.2), dpi=110, gridspec_kw={"width_ratios": [3, 2]}, sharey=True
    )
    colors = {
        "baseline": "0.35",
        "narrow-random": "tab:blue",
        "narrow-tpe": "tab:orange",
        "narrow-tpe-asha": "tab:green",
        "narrow-tpe-hb": "tab:purple",
        "shipped": "black",
    }
    base_runs = by.get("baseline", [])
    for s in strategies:
        mine = by[s.key]
        if not mine:
            continue
        end = max(total_epochs(r) for r in mine)
        xs = grid[grid <= end]
        curves = np.array([[best_within(r, x) for x in xs] for r in mine])
        color = colors.get(s.key)
        if s.pruner != "none" or s.key == "baseline":
            for i, curve in enumerate(curves):
                ax_seeds.step(xs, curve, where="post", color=color, lw=1.1, alpha=0.75,
                              label=s.label if i == 0 else None)  # fmt: skip
        full = ~np.isnan(curves).any(axis=0)
        xs, curves = xs[full], curves[:, full]
        if not len(xs):
            continue
        mean, std = curves.mean(axis=0), curves.std(axis=0)
        ax.plot(xs, mean, color=color, label=f"{s.label} ({len(mine)} seeds)", lw=1.8)
        ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.15, lw=0)
    for axis in (ax, ax_seeds):
        if base_runs:
            base_best = statistics.fmean(r["best_value"] for r in base_runs)
            base_total = statistics.fmean(total_epochs(r) for r in base_runs)
            axis.axhline(base_best, color="0.35", ls=":", lw=1,
                         label="baseline's final best (mean)")  # fmt: skip
            axis.axvline(base_total * GOAL_FRACTION, color="tab:red", ls="--", lw=1,
                         label="1/3 of the baseline's epochs")  # fmt: skip
        axis.set_xscale("log")
        axis.set_xlabel("cumulative epochs trained (pruned trials count their partial epochs)")
        axis.grid(True, which="both", alpha=0.25)
        axis.legend(loc="upper left", fontsize=7.5)
    ax.set_ylabel("best validation accuracy so far")
    ax.set_title("mean ± std over study seeds", fontsize=9)
    ax_seeds.set_title("each seed: baseline and the pruned strategies", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=int, help="study seeds per strategy (default 5; --smoke: 1)"
    )
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--strategies", default="1,2,3,4,5", help="which, e.g. 1,4 or 1,2,6")
    parser.add_argument("--trials", type=int, help="trials per study (default 100)")
    parser.add_argument("--rounds", type=int, help="narrowing rounds (default: the study's)")
    parser.add_argument("--trials-per-round", type=int, help="default: trials / rounds")
    parser.add_argument("--top-k", type=int, help="default: the study's")
    parser.add_argument("--margin", type=float, help="default: the study's")
    parser.add_argument(
        "--lr-hard-high", type=float, help="lr hard limit of strategies 2-4; 0.01 = none"
    )
    parser.add_argument(
        "--wd-hard-high", type=float, help="weight-decay hard limit of 2-4; 1e-4 = none"
    )
    parser.add_argument("--sampler", help="strategy 6's sampler (default: the study's)")
    parser.add_argument("--pruner", help="strategy 6's pruner (default: the study's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_FIGURE, help="figure path")
    parser.add_argument("--save", type=Path, help="write the raw runs to this JSON file")
    parser.add_argument("--replot", type=Path, help="table and figure from saved runs; no runs")
    parser.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        help="saved runs to reuse where strategy, sizes and seed match (repeatable)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    args = parser.parse_args(argv)

    sizes = SMOKE if args.smoke else FULL
    if args.seeds is None:
        args.seeds = 1 if args.smoke else 5
    if args.trials:
        sizes = dataclasses.replace(sizes, trials=args.trials)
    wanted = {int(x) for x in args.strategies.split(",") if x.strip()}
    strategies = [s for s in build_strategies(args, sizes) if s.number in wanted]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))

    if args.replot:
        strategies, sizes, runs = load_saved(args.replot)
        seeds = sorted({r["seed"] for r in runs})
    else:
        import optuna
        import ray

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        import warnings

        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        started = not ray.is_initialized()
        if started:
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
        runs = []
        reusable: dict[tuple[Strategy, int], dict[str, Any]] = {}
        for path in args.reuse:
            old_strategies, old_sizes, old_runs = load_saved(path)
            if old_sizes == sizes:
                keys = {s.key: s for s in old_strategies}
                reusable.update({(keys[r["strategy"]], r["seed"]): r for r in old_runs})
        t0 = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="search_quality-") as directory:
                for seed in seeds:  # seeds outermost: partial results cover every strategy
                    executors = Executors()
                    try:
                        for s in strategies:
                            run = reusable.get((s, seed))
                            if run is None:
                                run = run_study(s, seed, sizes, directory, executors)
                                progress(run, time.perf_counter() - t0)
                            runs.append(run)
                            if args.save:
                                save(args.save, strategies, sizes, runs)
                    finally:
                        executors.close()
        finally:
            if started:
                ray.shutdown()

    print(
        "search quality on mnist5k: "
        f"{sizes.train_samples} training samples (20% validation), "
        f"784-{network(sizes.hidden)}-10 ReLU, SGD, batch {sizes.batch_size}, "
        f"{sizes.epochs} epochs per full trial, {sizes.trials} trials per study, "
        f"{sizes.workers} workers; {len(seeds)} study seeds ({', '.join(map(str, seeds))}); "
        f"test accuracy: best config retrained {sizes.final_seeds}x on train+validation"
        + ("  [SMOKE: tiny sizes, numbers mean nothing]" if args.smoke else "")
    )
    for s in strategies:
        print(f"  {s.label}: {s.describe()}")
    print()
    stats, lines = summarize(strategies, runs)
    print("\n".join(lines))
    print()
    _, goal = goal_lines(strategies, runs, stats)
    print("\n".join(goal))
    title = (
        f"search quality: mnist5k, {sizes.train_samples} samples (20% validation), "
        f"784-{network(sizes.hidden)}-10 SGD, {sizes.trials} trials x <= {sizes.epochs} epochs "
        f"per study, {len(seeds)} study seeds"
    )
    write_figure(strategies, runs, args.out, title)
    print(f"\nfigure: {args.out}")
    return 0


def network(hidden: tuple[int, ...]) -> str:
    """``(100,) * 6`` -> ``100x6``; ``(16, 32)`` -> ``16-32``."""
    if len(set(hidden)) == 1 and len(hidden) > 1:
        return f"{hidden[0]}x{len(hidden)}"
    return "-".join(map(str, hidden))


def load_saved(path: Path) -> tuple[list[Strategy], Sizes, list[dict[str, Any]]]:
    """What :func:`save` wrote."""
    saved = json.loads(path.read_text())

    def limits(value: Any) -> tuple[float, float] | None:
        return tuple(value) if value else None  # type: ignore[return-value]

    strategies = [
        Strategy(**{**s, "lr_limits": limits(s["lr_limits"]), "wd_limits": limits(s["wd_limits"])})
        for s in saved["strategies"]
    ]
    sizes = Sizes(**{**saved["sizes"], "hidden": tuple(saved["sizes"]["hidden"])})
    return strategies, sizes, saved["runs"]


def progress(run: dict[str, Any], elapsed: float) -> None:
    """One line per finished study on stderr."""
    boxes = ", ".join(f"{r['lr'][0]:.2g}..{r['lr'][1]:.2g}" for r in run["rounds"])
    test = f"{statistics.fmean(run['test_accuracy']):.3f}" if run["test_accuracy"] else "n/a"
    best = "n/a" if run["best_value"] is None else f"{run['best_value']:.3f}"
    print(
        f"[{elapsed:7.1f}s] {run['strategy']} seed {run['seed']}: best val {best}, "
        f"{total_epochs(run)} epochs, {run['wall_seconds']:.1f}s, test {test}; lr boxes {boxes}; "
        f"{run['stop_reason']}",
        file=sys.stderr,
        flush=True,
    )


def save(path: Path, strategies: list[Strategy], sizes: Sizes, runs: list[dict[str, Any]]) -> None:
    path.write_text(
        json.dumps(
            {
                "strategies": [dataclasses.asdict(s) for s in strategies],
                "sizes": dataclasses.asdict(sizes),
                "runs": runs,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
