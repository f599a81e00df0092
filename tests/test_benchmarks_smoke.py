"""Every benchmark script still runs and measures what it claims: each is run with ``--smoke``.

Benchmarks print figures and never assert timings; neither do these tests.
They check that a script exits 0, prints its table, and that its figures mean
what its headers say: the sizes it states are the ones it ran, every rate is
a positive number that was measured (not a placeholder), each ratio is the
quotient of the figures it names (within the rounding of what is printed), a
sum is the sum of its parts, and a count is what the workload implies. To
cover another script, add a test that calls :func:`run_benchmark` with its
file name.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hpsearch.config import Choice, StudyConfig, parse_study

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *args: str, timeout: float = 120.0) -> str:
    """Run ``benchmarks/<script> --smoke <args>`` with this interpreter; its stdout.

    Fails the test (showing stderr) unless the script exits 0.
    """
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=BENCHMARKS.parent,
    )
    assert result.returncode == 0, (
        f"{script} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


def _number(text: str) -> float:
    """A printed figure (``1,234``, ``0.52``, ``8.46x``) as a float; fails on ``-`` or nan."""
    value = float(text.replace(",", "").rstrip("x%"))
    assert math.isfinite(value), f"not a measured figure: {text!r}"
    return value


def _half_unit(text: str) -> float:
    """Half the last printed digit: the rounding error of a printed figure."""
    digits = text.replace(",", "").rstrip("x%").partition(".")[2]
    return 0.5 * 10.0 ** -len(digits)


def assert_quotient(printed: str, numerator: str, denominator: str) -> None:
    """``printed`` is ``numerator / denominator`` up to the rounding of all three."""
    n, d, q = _number(numerator), _number(denominator), _number(printed)
    dn, dd, dq = _half_unit(numerator), _half_unit(denominator), _half_unit(printed)
    assert d - dd > 0, f"denominator {denominator!r} is not a measured positive figure"
    low, high = (n - dn) / (d + dd), (n + dn) / (d - dd)
    assert low - dq <= q <= high + dq, f"{printed} is not {numerator} / {denominator}"


def _line(out: str, start: str) -> str:
    lines = [line for line in out.splitlines() if line.strip().startswith(start)]
    assert lines, f"no line starts with {start!r}"
    return lines[0]


def _columns(line: str) -> list[str]:
    """A table row split on runs of two or more spaces (labels keep their single spaces)."""
    return re.split(r"\s{2,}", line.strip())


# -- trainer_speed.py -----------------------------------------------------------------


@pytest.mark.torch
def test_trainer_speed_smoke() -> None:
    torch = pytest.importorskip("torch")
    out = run_benchmark("trainer_speed.py")
    lines = out.splitlines()
    # The smoke sizes it states: random data 200 x 20, batch 20, 5 steps, 2 repeats, both
    # backends (the torch version is the installed one, so the torch column was measured).
    assert lines[0].startswith(
        "data: random float32 (200, 20); batch 20, float32, sgd; 5 steps per run, median of 2 "
        "interleaved runs; 1 thread; wall clock; "
    )
    assert lines[0].endswith(f"torch {torch.__version__}")
    header = next(line for line in lines if line.startswith("config"))
    assert header.split() == ["config", "numpy", "samples/s", "torch", "samples/s", "numpy/torch"]
    configs = ["20-8-8-10", "20-8-8-10 +BN", "20-8-8-10 +BN +dropout 0.5"]
    rows = {_columns(line)[0]: _columns(line)[1:] for line in lines[lines.index(header) + 1 :][:3]}
    assert list(rows) == configs
    for numpy_rate, torch_rate, ratio in rows.values():
        assert _number(numpy_rate) > 0 and _number(torch_rate) > 0
        assert_quotient(ratio, numpy_rate, torch_rate)
    # The GEMM limit's work per step: 3 x 2 x (20*8 + 8*8 + 8*10) x 20 = 36,480 FLOP, timed
    # once per repeat and config (2 x 3 runs); GFLOP/s = samples/s / batch x FLOP per step.
    assert "= 0.0365 MFLOP), median of 6 runs" in out
    for library in ("numpy", "torch"):
        rate, gflops = re.search(
            rf"{library} matmul\s+([\d,]+) samples/s \(([\d.]+) GFLOP/s\)", out
        ).groups()
        assert _number(rate) > 0
        assert _number(gflops) == pytest.approx(_number(rate) / 20 * 36_480 / 1e9, abs=0.051)
    fractions = lines[lines.index(next(x for x in lines if x.startswith("fraction of the GEMM"))) :]
    for config, line in zip(configs, fractions[1:4], strict=True):
        label, numpy_fraction, torch_fraction = _columns(line)
        assert label == config
        assert _number(numpy_fraction) > 0 and _number(torch_fraction) > 0


# -- packing.py -----------------------------------------------------------------------


def test_packing_smoke() -> None:
    out = run_benchmark("packing.py")
    header = next(line for line in out.splitlines() if line.strip().startswith("K "))
    assert header.split() == [
        "K",
        "alone",
        "trials/s",
        "packed",
        "trials/s",
        "packed/alone",
        "(cpu",
        "time)",
        "pack_pays",
    ]
    assert "(smoke) 12-8-8-3 +BN +dropout, batch 20, 1 epochs, synthetic (128 train, 32 val)" in out
    table = out.split("(c) through hpsearch's driver")
    assert len(table) == 2, "part (c), packing through the driver, did not run"
    rows = [line.split() for line in table[0].splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1", "2"]
    # pack_pays is trainer.packed's rule for the workload it states (12-8-8-3, batch 20).
    from trainer.config import TrainConfig
    from trainer.packed import pack_pays

    config = TrainConfig(hidden_sizes=(8, 8), batch_size=20, batchnorm=True, dropout_ratio=0.3)
    pays = "yes" if pack_pays(config, 12, 3) else "no"
    for _, alone, packed, ratio, cpu_ratio, row_pays in rows:
        assert _number(alone) > 0 and _number(packed) > 0 and _number(cpu_ratio) > 0
        assert_quotient(ratio, packed, alone)
        assert row_pays == pays
    assert "8 trials of [8, 8] +BN +dropout, batch 20, 1 epochs, 2 Ray workers" in table[1]
    driver_rows = [line.split() for line in table[1].splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in driver_rows] == ["1", "2"]
    (_, search_1, vs_1, whole_1, whole_vs_1), (_, search_2, vs_2, whole_2, whole_vs_2) = driver_rows
    assert vs_1 == whole_vs_1 == "1.00"  # the unpacked run is the reference
    assert_quotient(vs_2, search_2, search_1)
    assert_quotient(whole_vs_2, whole_2, whole_1)
    # The search alone is never slower than the whole run it is part of.
    assert _number(search_1) >= _number(whole_1) - 0.1
    assert _number(search_2) >= _number(whole_2) - 0.1


# -- short_trials.py ------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_short_trials_smoke() -> None:
    pytest.importorskip("ray.tune.search.optuna")
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "short_trials.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300.0,
        cwd=BENCHMARKS.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    # Every driver method it profiles was found and wrapped (else a part would read 0).
    assert "not instrumented" not in result.stderr
    assert "6 trials per run, 1 interleaved repeats" in out
    assert "== workload digits:" in out
    assert "Ray Tune fastest: " in out  # Tune's settings are stated
    ways = {
        "hpsearch, 2 workers, unpacked",
        "hpsearch, 2 workers, auto packing",
        "Ray Tune fastest, max_concurrent 2",
        "sequential Optuna loop",
    }
    rows = {}
    for way in ways:
        assert way in out, way
        row = re.search(rf"^\s+{re.escape(way)}\s+\d+\s.*$", out, re.MULTILINE)
        assert row, f"no table row for {way}"
        rows[way] = _columns(row.group(0))
    for _, runs, per_min, spread, wall, driver_ms, load, freed in rows.values():
        # trials/min is the 6 trials over the wall time printed beside it (one run each).
        assert runs == "1"
        assert_quotient(per_min, "360.000", wall)
        assert spread == f"{per_min}..{per_min}"
        assert _number(driver_ms) > 0 and _number(load) >= 0 and _number(freed) >= 0
    # Ratios against both goals for unpacked and packed hpsearch, never asserted on: each is
    # the quotient of the two ways' rates (one run each: the inverse ratio of their walls),
    # and the verdict follows the figure.
    assert out.count("goal >= 5x: ") == 2
    assert out.count("goal >= 1.5x: ") == 2
    for hp in ("hpsearch, 2 workers, unpacked", "hpsearch, 2 workers, auto packing"):
        for other, goal in (("Ray Tune fastest, max_concurrent 2", 5), ("sequential Optuna", 1.5)):
            label = "Ray Tune best" if other.startswith("Ray") else "sequential loop"
            line = next(x for x in out.splitlines() if x.strip().startswith(hp) and label in x)
            ratio, verdict = re.search(
                rf"([\d.]+)x\s+goal >= {goal}x: (met|NOT MET)", line
            ).groups()
            other_wall = rows[next(w for w in ways if w.startswith(other))][4]
            assert_quotient(ratio, other_wall, rows[hp][4])
            assert verdict == ("met" if float(ratio) >= goal else "NOT MET")
    for part in (
        "sampling",
        "storage: trial creation",
        "storage: finishing writes",
        "dispatch: Ray submit",
        "result handling: fetch outcome",
    ):
        assert out.count(part) == 2, part  # one profile per hpsearch row
    # Each profile's "driver busy" is the sum of its parts, each part was measured, and
    # its wall per trial is the row's wall time over the 6 trials.
    profiles = out.split("-- driver time per trial by part")[1:]
    assert len(profiles) == 2
    for way, profile in zip(
        ("hpsearch, 2 workers, unpacked", "hpsearch, 2 workers, auto packing"),
        profiles,
        strict=True,
    ):
        lines = profile.splitlines()
        start = next(i for i, x in enumerate(lines) if x.strip().startswith("part "))
        end = next(i for i, x in enumerate(lines) if "= driver busy in the search loop" in x)
        parts = [_columns(x) for x in lines[start + 1 : end]]
        assert len(parts) == 10
        assert all(
            _number(wall_ms) >= 0 and _number(cpu_ms) >= 0 for _, wall_ms, cpu_ms, _ in parts
        )
        for label in ("sampling", "storage: trial creation", "dispatch: Ray submit"):
            assert _number(next(p for p in parts if p[0].startswith(label))[1]) > 0, label
        busy = _number(_columns(lines[end])[1])
        assert busy == pytest.approx(sum(_number(p[1]) for p in parts), abs=0.006 * len(parts))
        per_trial = re.search(r"wall per trial ([\d.]+) ms", profile).group(1)
        wall = _number(rows[way][4])
        assert _number(per_trial) == pytest.approx(wall / 6 * 1e3, abs=0.005 / 6 * 1e3 + 0.01)


# -- overhead.py, objectives.py and cluster.py (start Ray) --------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_objectives_smoke() -> None:
    out = run_benchmark("objectives.py", timeout=300)
    assert "hpsearch objectives: 12 trials, 2 workers, median of 1 repeats" in out
    header = _line(out, "objective")
    assert _columns(header) == [
        "objective",
        "trials/s",
        "driver cpu ms/trial",
        "overhead ms/trial",
        "trial ms",
    ]
    rows = {kind: _columns(_line(out, f"{kind}  "))[1:] for kind in ("built-in", "function")}
    rows["command"] = _columns(_line(out, "command  "))[1:]
    for kind, (rate, cpu, overhead, trial) in rows.items():
        assert _number(rate) > 0 and _number(cpu) > 0, kind
        _number(overhead)  # measured (it may be negative within the noise)
        assert _number(trial) >= 0, kind
    # A command's trial is a process start: far longer than the function's no-op.
    assert _number(rows["command"][3]) > _number(rows["function"][3])
    for kind in ("function", "command"):
        ratios = re.search(
            rf"ratio {kind} / built-in: driver cpu ([\d.]+), overhead (-?[\d.]+)", out
        )
        assert ratios, kind
        assert_quotient(ratios.group(1), rows[kind][1], rows["built-in"][1])
    goal = re.search(r"command driver cpu ms/trial: ([\d.]+) \(goal < 20\)", out).group(1)
    assert goal == rows["command"][1]


@pytest.mark.ray
@pytest.mark.slow
def test_sigterm_race_smoke() -> None:
    """The SIGTERM benchmark drove one real 'hpsearch run' on loopback Ray to its
    end and classified it: exit 143 with the 'terminated' message."""
    out = run_benchmark("sigterm_race.py", timeout=300)
    assert "sigterm_race: 1 repeats" in out
    assert re.search(r"^  installed \(installed\): ok 1/1$", out, re.M), out


@pytest.mark.ray
@pytest.mark.slow
def test_overhead_smoke() -> None:
    out = run_benchmark("overhead.py", timeout=300)
    assert "hpsearch overhead: 12 trials, median of 1 repeats" in out
    assert "overhead ms/trial" in out
    rows = {}
    for kind in ("1", "2", "2 packed"):
        rows[kind] = _columns(_line(out, f"{kind}  "))[1:]
    for kind, (rate, overhead, train) in rows.items():
        # The trainers' own time was recorded, and overhead is what the docstring says:
        # wall per trial minus trainer time per trial / workers (one repeat: no medians).
        workers = 1 if kind == "1" else 2
        assert _number(rate) > 0 and _number(train) > 0
        wall_ms = 1e3 / _number(rate)
        slack = 1e3 / (_number(rate) - 0.05) - wall_ms + 0.005 / workers + 0.005
        assert _number(overhead) == pytest.approx(wall_ms - _number(train) / workers, abs=slack)
    ratio_2 = re.search(r"throughput ratio 2 workers / 1 worker: ([\d.]+)", out).group(1)
    assert_quotient(ratio_2, rows["2"][0], rows["1"][0])
    packed = re.search(r"throughput ratio 2 workers packed \(8\) / 1 worker: ([\d.]+)", out)
    assert_quotient(packed.group(1), rows["2 packed"][0], rows["1"][0])


@pytest.mark.ray
@pytest.mark.slow
def test_cluster_smoke() -> None:
    out = run_benchmark("cluster.py", timeout=300)
    assert "throughput: 8 trials, median of 1 repeats" in out
    single = re.search(r"single node \(2 CPUs\):\s+([\d.]+) trials/s", out).group(1)
    cluster = re.search(r"3-node cluster \(0 \+ 1 \+ 1 CPUs\):\s+([\d.]+) trials/s", out).group(1)
    ratio = re.search(r"ratio cluster / single: ([\d.]+) \(goal >= 0.9\)", out).group(1)
    assert_quotient(ratio, cluster, single)
    assert "pruning (asha vs none) on smoke, 1 repeat(s):" in out
    header = _line(out, "best none")
    row = out.splitlines()[out.splitlines().index(header) + 1].split()
    best_none, best_asha, epochs_none, epochs_asha, s_none, s_asha, reached, totals = row
    total_none, total_asha = (int(n) for n in totals.split("/"))
    # Without a pruner every one of the 8 trials trains all 4 epochs; with ASHA each trains
    # at least its first rung (1 epoch) and never more.
    assert total_none == 8 * 4
    assert 8 <= total_asha <= total_none
    assert 0 < int(epochs_none) <= total_none and 0 < int(epochs_asha) <= total_asha
    assert 0 <= _number(best_none) <= 1 and 0 <= _number(best_asha) <= 1
    # "reached": ASHA's best came within 0.01 of the unpruned best.
    assert reached == ("yes" if _number(best_asha) >= _number(best_none) - 0.01 - 1e-4 else "no")
    assert _number(s_none) >= 0 and _number(s_asha) >= 0
    e_ratio = re.search(r"unpruned best - 0.01, asha / none: ([\d.]+)", out).group(1)
    assert_quotient(e_ratio, epochs_asha, epochs_none)
    all_ratio = re.search(r"all epochs trained, asha / none: ([\d.]+) \(goal <= 0.5\)", out)
    assert_quotient(all_ratio.group(1), str(total_asha), str(total_none))


# -- search_quality.py ---------------------------------------------------------------

STRATEGIES = ("random-1", "plain-1", "narrow", "shipped")
ROW = re.compile(
    r"^(?P<strategy>random-1|plain-1|narrow|shipped)\s+(?P<seeds>\d+)\s+"
    r"(?P<val>\S+) ± (?P<val_std>\S+) \((?P<val_worst>\S+)\)\s+"
    r"(?P<test>\S+) ± (?P<test_std>\S+) \((?P<test_worst>\S+)\)\s+"
    r"(?P<epochs>[\d,]+) ± [\d,]+\s+(?P<collapsed>\d+)\s+[\d.]+\s+\S"
)


@functools.cache
def search_quality() -> ModuleType:
    """benchmarks/search_quality.py, imported (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location(
        "search_quality", BENCHMARKS / "search_quality.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while built
    spec.loader.exec_module(module)
    return module


def sampled(config: StudyConfig, *, first: bool) -> dict[str, tuple[Any, ...]]:
    """Per parameter: where round 1 samples (``first``) or the farthest any round may
    go (a float range's hard limits); choices for a categorical. Computed here, not
    by the script, so a script that widens one strategy cannot also hide it."""
    out: dict[str, tuple[Any, ...]] = {}
    for name, spec in config.space.items():
        if isinstance(spec, Choice):
            out[name] = tuple(spec.choices)
        elif first:
            out[name] = (spec.low, spec.high)
        else:
            out[name] = config.limits.get(name, (spec.low, spec.high))
    return out


def assert_comparable(problem: StudyConfig, studies: dict[str, StudyConfig]) -> None:
    """The strategies of one problem and seed search the problem's whole region with
    the problem's trial budget, epochs and data; only shipped starts in its first box."""
    region = sampled(problem, first=False)
    budget = problem.narrowing.rounds * problem.narrowing.trials_per_round
    assert set(studies) == set(STRATEGIES)
    seeds = {c.seed for c in studies.values()}
    assert len(seeds) == 1, seeds
    for key, study in studies.items():
        assert sampled(study, first=False) == region, key
        first = sampled(study, first=True)
        assert first == (sampled(problem, first=True) if key == "shipped" else region), key
        assert study.narrowing.rounds * study.narrowing.trials_per_round == budget, key
        assert dict(study.model) == dict(problem.model), key  # epochs, network, optimizer
        assert study.data == problem.data, key
        assert study.metric == problem.metric, key
        assert study.final_eval.enabled, key
    assert (studies["random-1"].sampler, studies["random-1"].pruner) == ("random", "none")
    for key in ("plain-1", "narrow", "shipped"):
        assert (studies[key].sampler, studies[key].pruner) == (problem.sampler, problem.pruner)
    assert studies["random-1"].narrowing.rounds == studies["plain-1"].narrowing.rounds == 1
    assert studies["narrow"].narrowing == studies["shipped"].narrowing == problem.narrowing


@pytest.mark.parametrize("smoke", [False, True], ids=["full", "smoke"])
def test_search_quality_strategies_search_the_same_region_with_the_same_budget(
    smoke: bool,
) -> None:
    sq = search_quality()
    for key, problem in sq.PROBLEMS.items():
        text = sq.problem_text(problem, smoke=smoke)
        studies = {
            s: parse_study(sq.study_text(t, name=f"{key}-{s}", seed=7))
            for s, t in sq.build_strategies(text).items()
        }
        assert_comparable(parse_study(text), studies)
        assert sq.check_fair(studies) == []
    # The shipped problem is the study file on disk, whatever its defaults are.
    assert (
        sq.problem_text(sq.PROBLEMS["mnist_ch6"], smoke=False)
        == (BENCHMARKS.parent / "studies" / "mnist_ch6.toml").read_text()
    )


def test_search_quality_refuses_a_wider_range_or_more_trials() -> None:
    sq = search_quality()
    text = sq.problem_text(sq.PROBLEMS["mnist_ch6"], smoke=False)
    tables = sq.build_strategies(text)
    wider = {**tables, "narrow": sq.apply_sets(tables["narrow"], ["search.lr.high=10.0"])}
    more = {
        **tables,
        "plain-1": sq.apply_sets(tables["plain-1"], ["narrowing.trials_per_round=120"]),
    }
    longer = {**tables, "random-1": sq.apply_sets(tables["random-1"], ["model.epochs=60"])}
    for changed in (wider, more, longer):
        studies = {s: parse_study(sq.study_text(t, name="x", seed=0)) for s, t in changed.items()}
        assert sq.check_fair(studies), "the script would run strategies that are not comparable"
        with pytest.raises(AssertionError):
            assert_comparable(parse_study(text), studies)


def test_search_quality_set_edits_every_strategy_alike() -> None:
    sq = search_quality()
    text = sq.problem_text(sq.PROBLEMS["digits_adam"], smoke=False)
    plain = sq.build_strategies(text)
    four = sq.build_strategies(text, ["narrowing.rounds=4", "narrowing.trials_per_round=25"])
    studies = {s: parse_study(sq.study_text(t, name="x", seed=0)) for s, t in four.items()}
    assert {s.narrowing.rounds * s.narrowing.trials_per_round for s in studies.values()} == {100}
    # A setting only the narrowing loop reads leaves the one-round studies as they were
    # (so their saved runs stay reusable).
    top_k = sq.build_strategies(text, ["narrowing.top_k=5"])
    assert top_k["random-1"] == plain["random-1"] and top_k["plain-1"] == plain["plain-1"]
    assert top_k["narrow"]["narrowing"]["top_k"] == top_k["shipped"]["narrowing"]["top_k"] == 5


@pytest.mark.ray
@pytest.mark.slow
def test_search_quality_smoke(tmp_path: Path) -> None:
    sq = search_quality()
    figure, saved = tmp_path / "anytime.png", tmp_path / "runs.jsonl"
    out = run_benchmark(
        "search_quality.py", "--out", str(figure), "--save", str(saved), timeout=900
    )
    blocks = {b.split(":", 1)[0]: b for b in out.split("\n== ")[1:]}
    assert set(blocks) == set(sq.PROBLEMS)
    for problem, block in blocks.items():
        rows = {m["strategy"]: m for m in map(ROW.match, block.splitlines()) if m}
        assert set(rows) == set(STRATEGIES), (problem, block)
        for row in rows.values():
            assert row["seeds"] == "2"
            for column in ("val", "val_worst", "test", "test_worst"):
                assert 0.0 <= float(row[column]) <= 1.0, (problem, row.group(0))
            assert float(row["val_worst"]) <= float(row["val"])
            assert 0 <= int(row["collapsed"]) <= 2
        # random-1 trains every trial fully: 2 rounds x 3 trials x 2 epochs in smoke mode.
        assert rows["random-1"]["epochs"] == "12"
        assert rows["random-1"]["collapsed"] == "0"  # its own worst seed is the floor
        assert "goal narrow vs plain-1, anytime" in block
        assert "goal narrow vs plain-1, test accuracy" in block
        assert "goal shipped: " in block
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # What actually ran: every study's own text, as saved, is comparable.
    runs = [json.loads(line) for line in saved.read_text().splitlines()]
    assert len(runs) == len(sq.PROBLEMS) * len(STRATEGIES) * 2
    for problem, path_text in ((k, sq.problem_text(p, smoke=True)) for k, p in sq.PROBLEMS.items()):
        for seed in (0, 1):
            mine = {r["strategy"]: r for r in runs if (r["problem"], r["seed"]) == (problem, seed)}
            studies = {s: parse_study(r["text"]) for s, r in mine.items()}
            assert_comparable(parse_study(path_text), studies)
            for run in mine.values():
                assert len(run["trials"]) == 6  # every trial of the budget finished
                assert all(0 < t["epochs"] <= 2 for t in run["trials"])
                assert len(run["test_accuracy"]) == 2

    # Replotting the saved runs gives the same tables without running anything.
    replot = subprocess.run(
        [sys.executable, str(BENCHMARKS / "search_quality.py"), "--smoke", "--replot",
         str(saved), "--out", str(tmp_path / "again.png")],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert replot.stdout.split("\nfigure:")[0] == out.split("\nfigure:")[0]


def test_driver_scale_smoke() -> None:
    """The driver-ceiling benchmark ran the studies it names on the fake executor, and its
    rates, ratios and worker counts are the quotients of what it measured."""
    out = run_benchmark(
        "driver_scale.py", "--samplers", "random,tpe", "--proposers", "both", "--json",
        timeout=600.0,
    )  # fmt: skip
    assert "hpsearch.fake_cluster.FakeExecutor" in out  # says the cluster is a stand-in
    assert "no training" in out
    results = json.loads(out.strip().splitlines()[-1])
    configs = [(r["config"]["sampler"], r["config"]["proposer"]) for r in results]
    assert configs == [("random", "batched"), ("tpe", "batched"), ("tpe", "optuna")]
    for result in results:
        cfg = result["config"]
        trials = cfg["trials"]
        assert trials == 600
        # Every trial of the study ran and finished (nothing RUNNING), as the table says.
        assert result["states"] == {"COMPLETE": trials}
        marks = result["marks"]
        assert marks[0]["trials"] == 0 and marks[-1]["trials"] == trials
        counts = [m["trials"] for m in marks]
        assert counts == sorted(counts)
        assert all(
            b["wall"] >= a["wall"] and b["cpu"] >= a["cpu"] for a, b in itertools.pairwise(marks)
        )
        assert all(m["rss_mb"] > 0 and m["db_mb"] > 0 for m in marks)
        assert marks[-1]["db_mb"] > marks[0]["db_mb"]  # the database grew with the study
        header = (
            f"### {cfg['sampler']}, pruner none, sqlite, proposer {cfg['proposer']}: "
            f"{trials} trials in 3 round(s)"
        )
        assert header in out
        section = out.split(header, 1)[1].split("###", 1)[0]
        rows = re.findall(
            r"^\| ([\d,]+)-([\d,]+) \| ([\d,]+) \| ([\d.]+) \| ([\d,]+) \|", section, re.M
        )
        assert rows and rows[0][0] == "0" and rows[-1][1] == f"{trials}"
        for _, _, per_min, cpu_ms, cpu_per_min in rows:
            assert _number(per_min) > 0 and _number(cpu_ms) > 0
            # trials per CPU minute is 60,000 / (CPU ms per trial), within printed rounding
            assert _number(cpu_per_min) == pytest.approx(60_000 / _number(cpu_ms), rel=0.02)
        ratio = re.search(r"last/first rate: ([\d.]+)x \(([\d,]+) / ([\d,]+) trials/min\)", section)
        assert ratio and (ratio.group(2), ratio.group(3)) == (rows[-1][2], rows[0][2])
        assert_quotient(ratio.group(1), ratio.group(2), ratio.group(3))
        busy = re.search(
            r"kept busy at the last segment's ceiling: "
            r"([\d,]+) at T=1 s, ([\d,]+) at T=10 s, ([\d,]+) at T=60 s",
            section,
        )
        assert busy
        last = _number(rows[-1][2])
        assert _number(busy.group(3)) == pytest.approx(last, abs=1)
        assert _number(busy.group(2)) == pytest.approx(last / 6, abs=1)
