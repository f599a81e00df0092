"""Every benchmark script still runs: each is run with ``--smoke`` (tiny sizes).

Benchmarks print figures and never assert timings; these tests only check that
a script exits 0 and prints its table. To cover another script, add a test that
calls :func:`run_benchmark` with its file name.
"""

from __future__ import annotations

import functools
import importlib.util
import json
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


# -- trainer_speed.py -----------------------------------------------------------------


def test_trainer_speed_smoke() -> None:
    pytest.importorskip("torch")
    out = run_benchmark("trainer_speed.py")
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("config"))
    assert header.split() == ["config", "numpy", "samples/s", "torch", "samples/s", "numpy/torch"]
    assert "+BN +dropout 0.5" in out
    assert "float32 GEMM limit" in out
    assert "fraction of the GEMM limit" in out


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
    table = out.split("(c) through hpsearch's driver")
    rows = [line.split() for line in table[0].splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1", "2"]
    assert len(table) == 2, "part (c), packing through the driver, did not run"
    driver_rows = [line.split() for line in table[1].splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in driver_rows] == ["1", "2"]


# -- short_trials.py ------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_short_trials_smoke() -> None:
    pytest.importorskip("ray.tune.search.optuna")
    out = run_benchmark("short_trials.py", timeout=300.0)
    assert "== workload digits:" in out
    assert "Ray Tune fastest: " in out  # Tune's settings are stated
    for way in (
        "hpsearch, 2 workers, unpacked",
        "hpsearch, 2 workers, auto packing",
        "Ray Tune fastest, max_concurrent 2",
        "sequential Optuna loop",
    ):
        assert way in out, way
    # Ratios against both goals for unpacked and packed hpsearch, never asserted on.
    assert out.count("goal >= 5x: ") == 2
    assert out.count("goal >= 1.5x: ") == 2
    for part in (
        "sampling",
        "storage: trial creation",
        "storage: finishing writes",
        "dispatch: Ray submit",
        "result handling: fetch outcome",
    ):
        assert out.count(part) == 2, part  # one profile per hpsearch row


# -- overhead.py and cluster.py (start Ray) ---------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_overhead_smoke() -> None:
    out = run_benchmark("overhead.py", timeout=300)
    assert "overhead ms/trial" in out
    assert "throughput ratio 2 workers / 1 worker" in out


@pytest.mark.ray
@pytest.mark.slow
def test_cluster_smoke() -> None:
    out = run_benchmark("cluster.py", timeout=300)
    assert "ratio cluster / single" in out
    assert "all epochs trained, asha / none" in out


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
