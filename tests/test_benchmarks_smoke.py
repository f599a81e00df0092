"""Every benchmark script still runs: each is run with ``--smoke`` (tiny sizes).

Benchmarks print figures and never assert timings; these tests only check that
a script exits 0 and prints its table. To cover another script, add a test that
calls :func:`run_benchmark` with its file name.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


# -- search_quality.py (starts Ray) ---------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_search_quality_smoke(tmp_path: Path) -> None:
    figure = tmp_path / "anytime.png"
    out = run_benchmark("search_quality.py", "--out", str(figure), timeout=300)
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("strategy"))
    for column in ("best val acc", "total epochs", "epochs to baseline best", "test acc"):
        assert column in header
    for label in (
        "1 baseline: random, 1 round",
        "2 narrowing, random",
        "3 narrowing, TPE",
        "4 narrowing, TPE + ASHA",
        "5 narrowing, TPE + Hyperband",
    ):
        row = next(line for line in lines if line.startswith(label) and "±" in line)
        assert row.count("±") >= 3, row  # best, epochs and test accuracy, mean ± std
    assert "anytime: best validation accuracy reached within E epochs" in out
    assert "E / baseline epochs" in out
    assert any(line in ("goal MET", "goal NOT MET") for line in lines)
    # The baseline trains every trial fully: 6 trials x 3 epochs in smoke mode.
    baseline = next(line for line in lines if line.startswith("1 baseline") and "±" in line)
    assert "18 ± 0" in baseline
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
