"""Search quality: does the narrowing loop earn its keep? (not a test)

What is compared. For each problem -- a study file -- four strategies search
the same region with the same budget:

1. ``random-1``: one round of random sampling, no pruner (the chapter's method);
2. ``plain-1``: one round with the study's sampler and pruner (plain Optuna);
3. ``narrow``: the narrowing loop with the study's sampler, pruner and
   ``[narrowing]`` settings, its first box the whole region;
4. ``shipped``: the study file exactly as a user runs it (its own first box,
   which may move as far as its hard limits).

The *region* is what the study file lets a search reach: per float parameter
``hard_low`` (else ``low``) .. ``hard_high`` (else ``high``), per integer range
its range, per categorical all its choices. Strategies 1-3 sample it from the
start; ``shipped`` starts in its first box and can only move within it.

Why it is fair. Every strategy is built from the problem's study text by
overriding sections (never from hand-copied constants): the region replaces
``[search]``, one-round strategies get ``[narrowing] rounds = 1`` and
``trials_per_round`` = rounds x trials_per_round of the study (``top_k`` 1,
``margin`` 0: with one round nothing is narrowed), ``random-1`` gets
``sampler = "random"`` and ``pruner = "none"``. Everything else -- data,
network, epochs per trial, metric, resources -- is the study's, so all four
train the same number of trials of the same length on the same data, and a
change to the study file changes all four alike. Study seed i is the same for
every strategy and also draws the train/validation split, so the strategies of
one seed see the same data. :func:`check_fair` refuses to run strategies that
differ in region, trial budget, epochs or data (the smoke test checks the same
from the parsed study files). Each study runs through the real driver, the path
``hpsearch run`` takes (:func:`hpsearch.runner.run_study`: the parsed study
text, a ``StudyStore`` on SQLite in a temporary directory, a ``RayExecutor``
and ``NarrowingSearch``), so it measures whatever round rule the code has.

Problems (``--problems``):

* ``mnist_ch6``: ``studies/mnist_ch6.toml``, read from disk at run time, so the
  benchmark follows its defaults (the chapter: mnist5k, 400 + 100 samples,
  784-100x6-10 SGD, 50 epochs);
* ``digits_adam``: ``benchmarks/studies/digits_adam.toml``: the digits
  64-50-50-10 network trained with Adam for 24 steps, whose good learning
  rates (0.02-0.06) lie elsewhere than SGD's, with a search written like
  mnist_ch6's;
* ``deep_tanh``: ``benchmarks/studies/deep_tanh.toml``: a 64-50x8-10 tanh
  network without batch norm, momentum SGD, searching lr, momentum and the
  initial weights' std. A different shape on purpose: no categorical, three
  interacting floats whose good values form a thin ridge (a small std makes
  the signal vanish through 8 tanh layers, a large one saturates them, and
  the workable lr depends on both), so half of the region stays at chance.
  Its first box (std around the chapter's 0.01) lies in that half, below the
  good std: a round rule must find the way out of a box where nearly every
  trial is at chance, without shrinking onto the noise there.

Measured per problem and strategy, over study seeds: the best validation value
(the study's metric; mean, std, worst seed); the test accuracy of the best
configuration (the driver's final evaluation: retrained with 5 seeds on
train+validation, the test split read there and nowhere else; per study the
mean of its retrainings, then mean, std, worst over seeds); the epochs trained
(sum over trials of ``epochs_completed``: pruned and diverged trials count what
they trained); the collapsed studies (best validation value below the worst
seed of ``random-1`` on that problem); the round rule's decisions between
rounds, counted (the rounds' ``decision`` field, when they carry one); the wall
time per study; and the anytime curve
-- the best validation value so far against cumulative epochs, trials taken in
the order they finished -- drawn as mean +- SEM per strategy, one column per
problem (below, zoomed past narrowing's first round), in
``benchmarks/search_quality.png``.

Goal lines (verdicts, never assertions), per problem: narrowing's mean anytime
curve at or above ``plain-1``'s within the SEM of the difference at every budget
from the end of narrowing's first round on (a seed counts its final best after
its study ended, and 0 before its first COMPLETE trial); narrowing's mean test
accuracy higher than ``plain-1``'s by more than the SEM, or within the SEM with
at most 0.8x the epochs; ``shipped`` with no collapsed study and a mean test
accuracy >= ``plain-1``'s - 0.005 (and, on mnist_ch6, a worst seed's best
validation accuracy >= 0.85).

    python benchmarks/search_quality.py                        # everything (hours)
    python benchmarks/search_quality.py --problems digits_adam --seeds 3 --save runs.jsonl
    python benchmarks/search_quality.py --problems mnist_ch6 --strategies narrow,shipped \\
        --seeds-from 10 --seeds 10 --save more.jsonl           # a chunk of a long run
    python benchmarks/search_quality.py --replot runs.jsonl more.jsonl   # table + figure
    python benchmarks/search_quality.py --reuse runs.jsonl --save runs.jsonl  # resume
    python benchmarks/search_quality.py --set narrowing.top_k=5 --set narrowing.margin=0.2
    python benchmarks/search_quality.py --smoke                # tiny sizes, for the tests

``--set KEY=VALUE`` edits the problem's study text before the strategies are
derived from it (``narrowing.top_k=5``, ``search.lr.hard_high=10``), so every
strategy follows and the budgets stay equal; a setting that only the narrowing
loop reads leaves the one-round strategies' text unchanged. ``--save`` appends
each finished study as one JSON line (nothing is lost when a run is stopped);
``--reuse`` takes a saved study instead of running it again when its study text
and the code (the ``hpsearch`` and ``trainer`` sources) are the same;
``--replot`` merges saved runs (the last of a problem, strategy and seed wins)
and redoes the table and figure without running anything.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tomllib  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Iterable, Mapping, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

DEFAULT_FIGURE = ROOT / "benchmarks" / "search_quality.png"
FINAL_EVAL_SEEDS = 5
"""Retrainings of each study's best configuration for its test accuracy."""
EPOCH_RATIO = 0.8
"""Narrowing may tie plain-1's test accuracy only with at most this share of its epochs."""
SHIPPED_TEST_SLACK = 0.005
"""``shipped``'s mean test accuracy may be at most this much below plain-1's."""
SHIPPED_WORST_VAL = {"mnist_ch6": 0.85}
"""Per problem: the worst seed's best validation value ``shipped`` must reach."""
SMOKE_SETS = (
    "model.epochs=2",
    "narrowing.rounds=2",
    "narrowing.trials_per_round=3",
    "narrowing.top_k=2",
)
SMOKE_SEEDS = 2
SMOKE_FINAL_EVAL_SEEDS = 2


@dataclass(frozen=True)
class Problem:
    """A study file to search, and how many study seeds it gets by default."""

    key: str
    path: Path
    seeds: int


PROBLEMS = {
    p.key: p
    for p in (
        Problem("mnist_ch6", ROOT / "studies" / "mnist_ch6.toml", seeds=20),
        Problem("digits_adam", ROOT / "benchmarks" / "studies" / "digits_adam.toml", seeds=10),
        Problem("deep_tanh", ROOT / "benchmarks" / "studies" / "deep_tanh.toml", seeds=10),
    )
}
STRATEGIES = ("random-1", "plain-1", "narrow", "shipped")
LABELS = {
    "random-1": "random-1: one round, random, no pruner, over the region",
    "plain-1": "plain-1: one round, the study's sampler and pruner, over the region",
    "narrow": "narrow: the narrowing loop from the region",
    "shipped": "shipped: the study file as a user runs it (its first box)",
}
COLORS = {"random-1": "0.45", "plain-1": "tab:blue", "narrow": "tab:green", "shipped": "black"}


# --------------------------------------------------------------------------- study text as data


def toml_value(value: Any) -> str:
    """One TOML value (the kinds a study file holds)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"no finite TOML form for {value!r}")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def to_toml(study: Mapping[str, Any]) -> str:
    """A study file's text from its parsed tables (``[search.X]`` as sub-tables)."""
    lines: list[str] = []
    for section, table in study.items():
        nested = section == "search"
        for name, sub in table.items() if nested else [(None, table)]:
            lines.append(f"[{section}.{toml_key(name)}]" if nested else f"[{section}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in sub.items()]
            lines.append("")
    return "\n".join(lines)


def parse_value(raw: str) -> Any:
    """A ``--set`` value: TOML (``5``, ``0.2``, ``true``, ``[1, 2]``), else a plain string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_sets(study: dict[str, Any], sets: Iterable[str]) -> dict[str, Any]:
    """``study`` with each ``section.key=value`` (or ``search.lr.hard_high=10``) applied."""
    study = copy.deepcopy(study)
    for assignment in sets:
        path, sep, raw = assignment.partition("=")
        keys = [k.strip() for k in path.split(".")]
        if not sep or len(keys) < 2 or not all(keys):
            raise ValueError(
                f"--set: got {assignment!r}; expected SECTION.KEY=VALUE, e.g. narrowing.top_k=5"
            )
        table = study
        for key in keys[:-1]:
            table = table.setdefault(key, {})
            if not isinstance(table, dict):
                raise ValueError(f"--set: {path!r}: {key} is not a table")
        table[keys[-1]] = parse_value(raw.strip())
    return study


# --------------------------------------------------------------------------- strategies


def region(search: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ``[search]`` tables that sample the whole region from the first round:
    each float range widened to its hard limits (which it then no longer needs)."""
    out = {}
    for name, spec in search.items():
        spec = dict(spec)
        if "hard_low" in spec:
            spec["low"] = spec.pop("hard_low")
        if "hard_high" in spec:
            spec["high"] = spec.pop("hard_high")
        out[name] = spec
    return out


def trial_budget(study: Mapping[str, Any]) -> int:
    """rounds x trials_per_round of a parsed study (the defaults where it has none)."""
    from hpsearch.config import parse_study

    narrowing = parse_study(to_toml(study)).narrowing
    return narrowing.rounds * narrowing.trials_per_round


def one_round(
    study: Mapping[str, Any], *, trials: int, sampler: str | None, pruner: str | None
) -> dict[str, Any]:
    """One round of ``trials`` over the region; sampler and pruner replaced when given."""
    out = copy.deepcopy(dict(study))
    out["search"] = region(study["search"])
    out["narrowing"] = {"rounds": 1, "trials_per_round": trials, "top_k": 1, "margin": 0.0}
    if sampler is not None:
        out["study"]["sampler"] = sampler
    if pruner is not None:
        out["study"]["pruner"] = pruner
        if pruner == "none":
            out["study"].pop("prune_after", None)
    return out


def build_strategies(
    problem_text: str, sets: Sequence[str] = (), *, final_seeds: int = FINAL_EVAL_SEEDS
) -> dict[str, dict[str, Any]]:
    """Each strategy's study (parsed TOML tables) from a problem's study text.

    The final evaluation is switched on (``final_seeds`` retrainings), then
    ``sets`` are applied, then the strategies are derived (module doc).
    The study's ``name`` and ``seed`` are set per run by :func:`study_text`.
    """
    base = tomllib.loads(problem_text)
    base["final_eval"] = {"enabled": True, "seeds": final_seeds}
    base = apply_sets(base, sets)
    trials = trial_budget(base)
    narrow = copy.deepcopy(base)
    narrow["search"] = region(base["search"])
    return {
        "random-1": one_round(base, trials=trials, sampler="random", pruner="none"),
        "plain-1": one_round(base, trials=trials, sampler=None, pruner=None),
        "narrow": narrow,
        "shipped": copy.deepcopy(base),
    }


def study_text(study: Mapping[str, Any], *, name: str, seed: int) -> str:
    """The study file text of one run: ``study`` named ``name`` with study seed ``seed``."""
    study = copy.deepcopy(dict(study))
    study["study"] = {**study["study"], "name": name, "seed": seed}
    return to_toml(study)


def problem_text(problem: Problem, *, smoke: bool) -> str:
    """The problem's study file text (smoke: shrunk to a few trials of 2 epochs)."""
    text = problem.path.read_text()
    if not smoke:
        return text
    study = apply_sets(tomllib.loads(text), SMOKE_SETS)
    study["study"].pop("prune_after", None)  # the 2 epochs leave room only for the default
    return to_toml(study)


# --------------------------------------------------------------------------- fairness


def reach(config: Any) -> dict[str, tuple[Any, ...]]:
    """Every value a study may ever sample, per parameter: a float range's hard
    limits (its range without them), an integer range's range, all choices."""
    from hpsearch.config import Choice

    out: dict[str, tuple[Any, ...]] = {}
    for name, spec in config.space.items():
        if isinstance(spec, Choice):
            out[name] = tuple(spec.choices)
        else:
            out[name] = tuple(config.limits.get(name, (spec.low, spec.high)))
    return out


def budget(config: Any) -> dict[str, Any]:
    """What a study spends and learns from: trials, the trainer's fixed options
    (epochs among them), its data and its seed."""
    return {
        "trials": config.narrowing.rounds * config.narrowing.trials_per_round,
        "model": dict(config.model),
        "data": (config.data.dataset, config.data.train_samples, config.data.val_fraction),
        "metric": config.metric,
        "seed": config.seed,
        "final_eval": (config.final_eval.enabled, config.final_eval.seeds),
    }


def first_box(config: Any) -> dict[str, tuple[Any, ...]]:
    """Where a study's first round samples, per parameter: (low, high) or the choices."""
    return {
        name: tuple(spec.choices) if hasattr(spec, "choices") else (spec.low, spec.high)
        for name, spec in config.space.items()
    }


def check_fair(configs: Mapping[str, Any]) -> list[str]:
    """What differs between one problem's strategy studies (of one seed) beyond what
    the module doc allows; empty when they are comparable. ``configs`` must hold
    ``shipped``: its reach is the region."""
    shipped = configs["shipped"]
    whole = reach(shipped)
    problems = []
    for key, config in configs.items():
        if reach(config) != whole:
            problems.append(f"{key} may sample {_box_text(reach(config))}, not the region")
        if key != "shipped" and first_box(config) != whole:
            problems.append(f"{key} starts from {_box_text(first_box(config))}, not the region")
        for part, value in budget(config).items():
            if value != budget(shipped)[part]:
                problems.append(f"{key} differs from shipped in {part}: {value}")
    return problems


# --------------------------------------------------------------------------- running


def code_fingerprint() -> str:
    """A hash of the hpsearch and trainer sources: what decides how a study runs."""
    digest = hashlib.sha1()
    for package in ("hpsearch", "trainer"):
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def git_commit() -> str:
    """The checkout's commit (``+dirty`` with uncommitted changes in hpsearch/ or trainer/)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "hpsearch", "trainer"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty.strip() else "")


def finished_trials(url: str, name: str) -> list[dict[str, Any]]:
    """The study's finished trials in the order they were recorded."""
    import optuna

    from hpsearch import records

    trials = [
        t
        for t in optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
        if t.state.is_finished()
    ]
    trials.sort(key=lambda t: (t.datetime_complete, t.number))
    return [
        {
            "number": t.number,
            "round": t.user_attrs.get(records.TRIAL_ROUND),
            "state": t.state.name,
            "value": t.value if t.value is not None and math.isfinite(t.value) else None,
            "epochs": int(t.user_attrs.get(records.TRIAL_EPOCHS) or 0),
            "params": {k: v for k, v in t.params.items()},
        }
        for t in trials
    ]


def run_one(
    problem: str, strategy: str, seed: int, text: str, directory: str, *, code: str, commit: str
) -> dict[str, Any]:
    """One study through the driver; everything the analysis needs, JSON-ready."""
    from hpsearch.config import parse_study
    from hpsearch.runner import run_study

    config = parse_study(text)
    url = f"sqlite:///{directory}/{config.name}.db"
    start = time.perf_counter()
    result = run_study(config, url)
    wall = time.perf_counter() - start
    final = result.final_eval or {}
    best = result.best_trial
    return {
        "problem": problem,
        "strategy": strategy,
        "seed": seed,
        "text": text,
        "code": code,
        "commit": commit,
        "metric": config.metric,
        "maximize": config.direction == "maximize",
        "wall_seconds": wall,
        "stop_reason": result.stop_reason,
        "trials": finished_trials(url, config.name),
        "rounds": [r.to_dict() for r in result.rounds],
        "best_value": float(best.value) if best is not None else None,
        "best_params": dict(best.params) if best is not None else None,
        "test_accuracy": [a for a in final.get("test_accuracy", []) if a is not None],
    }


def progress(run: dict[str, Any], elapsed: float) -> None:
    """One line per finished study on stderr: its figures, and each round's box of
    the first float parameter followed by what the rule decided after it."""
    rounds = []
    for r in run["rounds"]:
        name, box = next(((n, b) for n, b in r["box"].items() if "low" in b), ("", None))
        rounds.append(f"{name} {box['low']:.2g}..{box['high']:.2g}" if box else "?")
        if r.get("decision"):
            rounds.append(f"[{r['decision']}]")
    print(
        f"[{elapsed:7.1f}s] {run['problem']} {run['strategy']} seed {run['seed']}: "
        f"best val {_num(run['best_value'])}, test {_num(mean_test(run))}, "
        f"{total_epochs(run)} epochs, {run['wall_seconds']:.1f}s; rounds: {' '.join(rounds)}; "
        f"{run['stop_reason']}",
        file=sys.stderr,
        flush=True,
    )


def _num(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


# --------------------------------------------------------------------------- saved runs


def run_key(run: Mapping[str, Any]) -> tuple[str, str, int]:
    return run["problem"], run["strategy"], run["seed"]


def append_run(path: Path, run: Mapping[str, Any]) -> None:
    """Append one study as a JSON line, flushed at once."""
    with path.open("a") as out:
        out.write(json.dumps(run) + "\n")


def load_runs(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Saved studies, merged: per problem, strategy and seed the last one read wins."""
    merged: dict[tuple[str, str, int], dict[str, Any]] = {}
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                run = json.loads(line)
            except json.JSONDecodeError:  # a line cut off by a kill: the study is redone
                print(f"{path}:{number}: not a complete JSON line; skipped", file=sys.stderr)
                continue
            merged[run_key(run)] = run
    return list(merged.values())


# --------------------------------------------------------------------------- analysis


def total_epochs(run: Mapping[str, Any]) -> int:
    return sum(t["epochs"] for t in run["trials"])


def first_round_epochs(run: Mapping[str, Any]) -> int:
    return sum(t["epochs"] for t in run["trials"] if t["round"] == 0)


def mean_test(run: Mapping[str, Any]) -> float:
    """The study's test accuracy: the mean over the best configuration's retrainings."""
    return statistics.fmean(run["test_accuracy"]) if run["test_accuracy"] else math.nan


def best_value(run: Mapping[str, Any]) -> float:
    """The study's best validation value; 0 when no trial completed."""
    return run["best_value"] if run["best_value"] is not None else 0.0


def anytime(run: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative epochs after each finished trial, best COMPLETE value so far; NaN before one)."""
    cumulative = np.cumsum([t["epochs"] for t in run["trials"]], dtype=float)
    best = np.full(len(cumulative), np.nan)
    so_far = -math.inf
    for i, trial in enumerate(run["trials"]):
        if trial["state"] == "COMPLETE" and trial["value"] is not None:
            so_far = max(so_far, trial["value"])
        if so_far > -math.inf:
            best[i] = so_far
    return cumulative, best


def best_within(run: Mapping[str, Any], budget: float) -> float:
    """Best validation value reached with at most ``budget`` epochs trained (NaN: none yet)."""
    cumulative, best = anytime(run)
    inside = np.nonzero(cumulative <= budget + 1e-9)[0]
    return float(best[inside[-1]]) if len(inside) else math.nan


@dataclass(frozen=True)
class Stat:
    """Mean, std, SEM and worst (lowest) of per-seed values; NaN when there are none."""

    mean: float
    std: float
    sem: float
    worst: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        values = [v for v in values if not math.isnan(v)]
        if not values:
            return cls(math.nan, math.nan, math.nan, math.nan, 0)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(
            statistics.fmean(values), std, std / math.sqrt(len(values)), min(values), len(values)
        )

    def text(self, digits: int = 3) -> str:
        if self.n == 0:
            return "n/a"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} ({self.worst:.{digits}f})"


def by_strategy(runs: Iterable[dict[str, Any]], problem: str) -> dict[str, list[dict[str, Any]]]:
    """The problem's runs per strategy (in :data:`STRATEGIES` order), by seed."""
    out: dict[str, list[dict[str, Any]]] = {}
    for strategy in STRATEGIES:
        mine = [r for r in runs if r["problem"] == problem and r["strategy"] == strategy]
        if mine:
            out[strategy] = sorted(mine, key=lambda r: r["seed"])
    return out


def collapse_floor(groups: Mapping[str, list[dict[str, Any]]]) -> float | None:
    """The worst seed's best validation value of ``random-1`` (None: not run)."""
    baseline = groups.get("random-1")
    return min(best_value(r) for r in baseline) if baseline else None


def decisions(runs: Iterable[Mapping[str, Any]]) -> str:
    """How often the round rule decided what between rounds, over the runs ('-': not
    recorded). The last round's decision is left out: no round followed it."""
    counts = Counter(r["decision"] for run in runs for r in run["rounds"][:-1] if r.get("decision"))
    return ", ".join(f"{d} {n}" for d, n in counts.most_common()) or "-"


def describe(text: str) -> tuple[str, str, str]:
    """(the problem in a line, the region, the first box) of a strategy's study text."""
    from hpsearch.config import parse_study

    config = parse_study(text)
    m = config.model
    layers = "-".join(str(h) for h in m.get("hidden_sizes", ()))
    samples = config.data.train_samples or "all"
    line = (
        f"{config.data.dataset} ({samples} samples, {config.data.val_fraction:g} validation), "
        f"{layers} {m.get('activation', 'relu')}, {m.get('optimizer', 'sgd')}, "
        f"batch {m.get('batch_size', '?')}, {m.get('epochs', '?')} epochs per trial, "
        f"{config.narrowing.rounds} x {config.narrowing.trials_per_round} trials, "
        f"sampler {config.sampler}, pruner {config.pruner}, metric {config.metric}"
    )
    return line, _box_text(reach(config)), _box_text(first_box(config))


def _box_text(box: Mapping[str, tuple[Any, ...]]) -> str:
    parts = []
    for name, values in box.items():
        if (
            all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            and len(values) == 2
        ):
            parts.append(f"{name} {values[0]:g}..{values[1]:g}")
        else:
            parts.append(f"{name} {{{', '.join(str(v).lower() for v in values)}}}")
    return ", ".join(parts)


def problem_table(problem: str, groups: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    """The problem's header and one row per strategy."""
    # The study's own settings (rounds, sampler, pruner) read best from shipped or narrow.
    own = next(groups[s] for s in ("shipped", "narrow", "plain-1", "random-1") if s in groups)
    line, reached, _ = describe(own[0]["text"])
    lines = [f"== {problem}: {line}", f"   region (every strategy): {reached}"]
    if "shipped" in groups:
        lines.append(f"   shipped's first box: {describe(groups['shipped'][0]['text'])[2]}")
    floor = collapse_floor(groups)
    head = (
        f"{'strategy':<10} {'seeds':>5} {'best val: mean ± std (worst)':>29} "
        f"{'test acc: mean ± std (worst)':>29} {'epochs: mean ± std':>19} "
        f"{'collapsed':>9} {'wall s':>6}  decisions between rounds"
    )
    lines += [head, "-" * len(head)]
    for strategy, runs in groups.items():
        best = Stat.of(best_value(r) for r in runs)
        test = Stat.of(mean_test(r) for r in runs)
        epochs = Stat.of(total_epochs(r) for r in runs)
        collapsed = "n/a" if floor is None else str(sum(best_value(r) < floor for r in runs))
        wall = statistics.fmean(r["wall_seconds"] for r in runs)
        lines.append(
            f"{strategy:<10} {len(runs):>5} {best.text():>29} {test.text():>29} "
            f"{f'{epochs.mean:,.0f} ± {epochs.std:,.0f}':>19} {collapsed:>9} {wall:>6.1f}  "
            f"{decisions(runs)}"
        )
    return lines + anytime_rows(groups)


def anytime_rows(groups: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    """Mean best validation value within a few epoch budgets, per strategy."""
    top = max(total_epochs(r) for runs in groups.values() for r in runs)
    start = first_budget(groups) or max(1.0, top / 20)
    budgets = np.unique(np.geomspace(start, max(top, start), 5).round())
    lines = [
        "   best val within E epochs (mean over seeds; 0 before a COMPLETE trial):",
        f"   {'E':<10}" + "".join(f"{b:>9,.0f}" for b in budgets),
    ]
    for strategy, runs in groups.items():
        row = [statistics.fmean(_filled(best_within(r, b)) for r in runs) for b in budgets]
        lines.append(f"   {strategy:<10}" + "".join(f"{v:>9.3f}" for v in row))
    return lines


def _filled(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def first_budget(groups: Mapping[str, list[dict[str, Any]]]) -> float | None:
    """Epochs by the end of narrowing's first round (the most any seed of it needed)."""
    narrow = groups.get("narrow")
    return float(max(first_round_epochs(r) for r in narrow)) if narrow else None


# --------------------------------------------------------------------------- goals


def anytime_goal(narrow: list[dict[str, Any]], plain: list[dict[str, Any]], start: float) -> str:
    """Whether narrow's mean anytime curve stays at or above plain-1's within the SEM
    of their difference at every budget from ``start`` epochs on."""
    runs = narrow + plain
    end = max(total_epochs(r) for r in runs)
    points = {start} | {float(x) for r in runs for x in anytime(r)[0] if start <= x <= end}
    rows = []  # (narrow - plain-1, SEM of the difference, budget)
    for b in sorted(points):
        n = Stat.of(_filled(best_within(r, b)) for r in narrow)
        p = Stat.of(_filled(best_within(r, b)) for r in plain)
        rows.append((n.mean - p.mean, math.hypot(n.sem, p.sem), b))
    diff, sem, at = min(rows, key=lambda row: row[0] + row[1])
    below = sum(d + e < 0 for d, e, _ in rows)
    return (
        f"goal narrow vs plain-1, anytime (every budget {start:,.0f}..{end:,.0f} epochs): "
        f"{'MET' if diff + sem >= 0 else 'NOT MET'}; tightest at {at:,.0f} epochs: "
        f"narrow - plain-1 = {diff:+.3f} (SEM {sem:.3f}); below in {below} of {len(rows)} "
        "budgets"
    )


def test_goal(narrow: list[dict[str, Any]], plain: list[dict[str, Any]]) -> str:
    """Narrow's test accuracy higher, or equal within the SEM with <= 0.8x the epochs."""
    n, p = Stat.of(mean_test(r) for r in narrow), Stat.of(mean_test(r) for r in plain)
    sem = math.hypot(n.sem, p.sem)
    diff = n.mean - p.mean
    ratio = (
        Stat.of(total_epochs(r) for r in narrow).mean / Stat.of(total_epochs(r) for r in plain).mean
    )
    if diff > sem:
        verdict, why = "MET", "higher"
    elif diff >= -sem:
        met = ratio <= EPOCH_RATIO
        verdict = "MET" if met else "NOT MET"
        why = f"equal within the SEM, with {ratio:.2f}x the epochs ({'<=' if met else '>'} "
        why += f"{EPOCH_RATIO}x)"
    else:
        verdict, why = "NOT MET", "lower"
    return (
        f"goal narrow vs plain-1, test accuracy: {verdict}; {n.mean:.3f} vs {p.mean:.3f} "
        f"(difference {diff:+.3f}, SEM {sem:.3f}): {why}"
    )


def shipped_goal(problem: str, groups: Mapping[str, list[dict[str, Any]]]) -> str:
    """No collapsed study, test accuracy >= plain-1's - 0.005, and the problem's floor."""
    shipped, plain = groups["shipped"], groups.get("plain-1")
    checks = []
    floor = collapse_floor(groups)
    if floor is not None:
        collapsed = sum(best_value(r) < floor for r in shipped)
        checks.append((collapsed == 0, f"collapsed {collapsed} of {len(shipped)}"))
    worst_floor = SHIPPED_WORST_VAL.get(problem)
    if worst_floor is not None:
        worst = min(best_value(r) for r in shipped)
        checks.append((worst >= worst_floor, f"worst best val {worst:.3f} (>= {worst_floor})"))
    if plain:
        s, p = Stat.of(mean_test(r) for r in shipped), Stat.of(mean_test(r) for r in plain)
        checks.append(
            (
                s.mean >= p.mean - SHIPPED_TEST_SLACK,
                f"mean test {s.mean:.3f} (>= plain-1 {p.mean:.3f} - {SHIPPED_TEST_SLACK})",
            )
        )
    if not checks:
        return "goal shipped: not evaluated (needs random-1 or plain-1)"
    verdict = "MET" if all(ok for ok, _ in checks) else "NOT MET"
    shown = "; ".join(f"{text} {'yes' if ok else 'NO'}" for ok, text in checks)
    return f"goal shipped: {verdict}; {shown}"


def goal_lines(problem: str, groups: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    lines = []
    if "narrow" in groups and "plain-1" in groups:
        start = first_budget(groups) or 0.0
        lines.append(anytime_goal(groups["narrow"], groups["plain-1"], start))
        lines.append(test_goal(groups["narrow"], groups["plain-1"]))
    else:
        lines.append("goal narrow vs plain-1: not evaluated (needs both)")
    if "shipped" in groups:
        lines.append(shipped_goal(problem, groups))
    return lines


def code_note(groups: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    """Which commits the strategies ran on, when the problem's runs span more than one
    version of the code (merged chunks): a comparison across them mixes round rules."""
    if len({r["code"] for runs in groups.values() for r in runs}) <= 1:
        return []
    used = "; ".join(
        f"{strategy} {', '.join(sorted({r['commit'] for r in runs}))}"
        for strategy, runs in groups.items()
    )
    return [f"note: these runs come from different code: {used}"]


# --------------------------------------------------------------------------- figure


def mean_curves(
    groups: Mapping[str, list[dict[str, Any]]],
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per strategy: (epoch budgets, mean, SEM) of the best value so far over its
    seeds, from the first budget at which every seed has a COMPLETE trial."""
    top = max(total_epochs(r) for runs in groups.values() for r in runs)
    grid = np.unique(np.geomspace(1, max(top, 2), 300).round())
    out = {}
    for strategy, runs in groups.items():
        xs = grid[grid <= max(total_epochs(r) for r in runs)]
        curves = np.array([[best_within(r, x) for x in xs] for r in runs])
        full = ~np.isnan(curves).any(axis=0)
        xs, curves = xs[full], curves[:, full]
        if len(xs):
            ddof_std = curves.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(xs))
            out[strategy] = (xs, curves.mean(axis=0), ddof_std / math.sqrt(len(runs)))
    return out


def write_figure(runs: list[dict[str, Any]], problems: list[str], out: Path, title: str) -> None:
    """One column per problem: each strategy's anytime curve, mean ± SEM over seeds;
    below, the same from the end of narrow's first round, zoomed on the top values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        2, len(problems), figsize=(5.4 * len(problems), 8.4), dpi=110, squeeze=False
    )
    for column, problem in enumerate(problems):
        groups = by_strategy(runs, problem)
        curves = mean_curves(groups)
        start = first_budget(groups)
        for ax in axes[:, column]:
            for strategy, (xs, mean, sem) in curves.items():
                color, seeds = COLORS[strategy], len(groups[strategy])
                ax.plot(xs, mean, color=color, lw=1.7, label=f"{strategy} ({seeds} seeds)")
                ax.fill_between(xs, mean - sem, mean + sem, color=color, alpha=0.18, lw=0)
            if start:
                ax.axvline(start, color="tab:green", ls=":", lw=1, label="end of narrow's round 1")
            ax.set_xscale("log")
            ax.set_xlabel("cumulative epochs trained (pruned trials count theirs)")
            ax.grid(True, which="both", alpha=0.25)
        top, zoom = axes[0][column], axes[1][column]
        top.set_title(problem, fontsize=10)
        top.legend(loc="lower right", fontsize=7.5)
        best = max(mean[-1] for _, mean, _ in curves.values())
        zoom.set_ylim(best - 0.1, best + 0.01)
        if start:
            zoom.set_xlim(left=start)
        zoom.set_title(f"{problem}: from narrow's round 2, the top 0.1", fontsize=9)
    axes[0][0].set_ylabel("best validation value so far (mean ± SEM)")
    axes[1][0].set_ylabel("the same, zoomed")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def plan(args: argparse.Namespace) -> list[tuple[str, str, int, str]]:
    """(problem, strategy, seed, study text) of every study to run, seed index
    outermost so a stopped run covers every problem and strategy alike.

    Raises:
        ValueError: A ``--set`` or a study does not parse, or the strategies of a
            problem are not comparable (:func:`check_fair`).
    """
    from hpsearch.config import parse_study

    final_seeds = SMOKE_FINAL_EVAL_SEEDS if args.smoke else FINAL_EVAL_SEEDS
    studies = {
        key: build_strategies(
            problem_text(PROBLEMS[key], smoke=args.smoke), args.set, final_seeds=final_seeds
        )
        for key in args.problems
    }
    todo = []
    longest = max(len(seeds) for seeds in args.seed_lists.values())
    for i in range(longest):
        for key in args.problems:
            if i >= len(args.seed_lists[key]):
                continue
            seed = args.seed_lists[key][i]
            texts = {
                strategy: study_text(study, name=f"{key}-{strategy}-{seed}", seed=seed)
                for strategy, study in studies[key].items()
            }
            unfair = check_fair({s: parse_study(t) for s, t in texts.items()})
            if unfair:
                raise ValueError(f"{key}: the strategies are not comparable: {'; '.join(unfair)}")
            todo += [(key, s, seed, texts[s]) for s in args.strategies]
    return todo


def run_all(args: argparse.Namespace, todo: list[tuple[str, str, int, str]]) -> list[dict]:
    """Run (or reuse) every planned study in one Ray session; save each as it ends."""
    import optuna
    import ray

    code, commit = code_fingerprint(), git_commit()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reusable = {
        (run["text"], run["code"]): run for run in load_runs(p for p in args.reuse if p.exists())
    }
    saved = set()  # studies the --save file holds already
    if args.save and args.save.exists():
        saved = {(r["text"], r["code"]) for r in load_runs([args.save])}
    runs = []
    started = False  # Ray starts with the first study to run, once for all of them
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="search_quality-") as directory:
            for problem, strategy, seed, text in todo:
                run = reusable.get((text, code))
                if run is None:
                    if not ray.is_initialized():
                        ray.init(
                            address="local",
                            num_cpus=2,
                            include_dashboard=False,
                            logging_level="WARNING",
                        )
                        started = True
                    run = run_one(
                        problem, strategy, seed, text, directory, code=code, commit=commit
                    )
                    progress(run, time.perf_counter() - t0)
                runs.append(run)
                if args.save and (run["text"], run["code"]) not in saved:
                    append_run(args.save, run)
    finally:
        if started:
            ray.shutdown()
    return runs


def report(runs: list[dict[str, Any]], problems: list[str], out: Path, smoke: bool) -> None:
    """The table and goal lines per problem (stdout) and the figure."""
    problems = [p for p in problems if any(r["problem"] == p for r in runs)]
    seeds = sorted({r["seed"] for r in runs})
    retrained = "/".join(str(n) for n in sorted({len(r["test_accuracy"]) for r in runs}))
    print(
        "search quality: every strategy of a problem searches the same region with the same "
        "trials, epochs and data; best val = the study's best validation value, test acc = "
        f"its best configuration retrained {retrained}x on train+validation, per study "
        "the mean, then mean ± std (worst) over study seeds; collapsed = best val below "
        "random-1's worst seed" + ("  [SMOKE: tiny sizes, numbers mean nothing]" if smoke else "")
    )
    print("\n".join(f"  {LABELS[s]}" for s in STRATEGIES if any(r["strategy"] == s for r in runs)))
    for problem in problems:
        groups = by_strategy(runs, problem)
        print()
        print("\n".join(problem_table(problem, groups)))
        print("\n".join(goal_lines(problem, groups) + code_note(groups)))
    title = (
        "search quality: best validation value so far vs epochs trained, mean ± SEM over "
        f"study seeds ({len(seeds)} seeds in all)" + (" [smoke]" if smoke else "")
    )
    if problems:
        write_figure(runs, problems, out, title)
        print(f"\nfigure: {out}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--problems",
        default=",".join(PROBLEMS),
        help=f"comma-separated, from {', '.join(PROBLEMS)}",
    )
    parser.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help=f"comma-separated, from {', '.join(STRATEGIES)}",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        help=f"study seeds per problem (default: mnist_ch6 20, others 10; --smoke {SMOKE_SEEDS})",
    )
    parser.add_argument("--seeds-from", type=int, default=0, help="first study seed (default 0)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="edit every problem's study text, e.g. narrowing.top_k=5",
    )
    parser.add_argument(
        "--save", type=Path, help="append each finished study to this JSON-lines file"
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        nargs="+",
        default=[],
        help="saved studies to take instead of running them again (a missing file is "
        "skipped, so --reuse F --save F resumes a stopped run)",
    )
    parser.add_argument(
        "--replot", type=Path, nargs="+", help="table and figure from saved studies; runs nothing"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_FIGURE, help="figure path")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    args = parser.parse_args(argv)
    args.problems = [p.strip() for p in args.problems.split(",") if p.strip()]
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for name, given, allowed in (
        ("--problems", args.problems, PROBLEMS),
        ("--strategies", args.strategies, STRATEGIES),
    ):
        unknown = [g for g in given if g not in allowed]
        if unknown or not given:
            parser.error(f"{name}: got {unknown or given}; allowed: {', '.join(allowed)}")
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds: got {args.seeds}; expected >= 1")
    args.seed_lists = {
        key: list(
            range(
                args.seeds_from,
                args.seeds_from
                + (args.seeds or (SMOKE_SEEDS if args.smoke else PROBLEMS[key].seeds)),
            )
        )
        for key in args.problems
    }
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        runs = [r for r in load_runs(args.replot) if r["strategy"] in args.strategies]
        report(runs, args.problems, args.out, smoke=args.smoke)
        return 0
    try:
        todo = plan(args)
    except ValueError as exc:
        print(f"search_quality: error: {exc}", file=sys.stderr)
        return 2
    runs = run_all(args, todo)
    report(runs, args.problems, args.out, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
