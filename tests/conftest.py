"""Shared test setup: loopback-only Ray, one BLAS thread, markers."""

from __future__ import annotations

import os

# Ray must bind to loopback in tests (never the machine's other address).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs, loopback) shared by every test that needs it."""
    ray = pytest.importorskip("ray")
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        started = True
    yield ray
    if started:
        ray.shutdown()
