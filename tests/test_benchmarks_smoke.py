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
