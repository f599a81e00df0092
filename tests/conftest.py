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
def _ray_session_guard():
    """Shut down whatever Ray instance the tests left running, at the very end."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_local(_ray_session_guard):
    """A local Ray instance (2 CPUs, loopback), started once and shared by the test
    modules that need it; a multi-node module may shut it down, and the next
    module starts it again."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    return ray
