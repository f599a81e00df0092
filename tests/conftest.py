"""Shared test setup: loopback-only Ray, one BLAS thread, markers, no hidden skips in CI.

In CI (the environment variable ``CI`` is ``true``, as ``.ci/run`` and CI
services set it) a skipped test is a failure: the PostgreSQL, browser, torch,
dashboard and Ray Tune tests must run there, and a skip would hide that
PostgreSQL did not start or Chromium did not install. The one exception is a
test marked ``cuda`` (it needs a CUDA device, which CI machines do not have):
it may skip, and the summary says how many did and why. A module skipped at
collection (``pytest.importorskip`` at module level) fails the same way.
Outside CI, skips stay skips (with their reasons in the ``-ra`` summary).
"""

from __future__ import annotations

import os

# Ray must bind to loopback in tests (never the machine's other address).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest

CI_SKIP_ALLOWED_MARKER = "cuda"
"""Tests with this marker may skip in CI (no CUDA device there); every other skip fails."""
_CUDA_SKIPS = pytest.StashKey[list]()


def in_ci() -> bool:
    """True when the environment variable ``CI`` is ``true`` (or ``1``, ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _skip_reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (file, line, "Skipped: why")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI, turn the skip of a test not marked ``cuda`` into a failure that says why."""
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report.longrepr)
    if item.get_closest_marker(CI_SKIP_ALLOWED_MARKER) is not None:
        item.config.stash.setdefault(_CUDA_SKIPS, []).append(f"{item.nodeid}: {reason}")
        return
    markers = sorted({m.name for m in item.iter_markers()} & {"postgres", "torch", "browser"})
    report.outcome = "failed"
    report.longrepr = f"CI=true: skipped tests fail in CI, and this one skipped: {reason}" + (
        f" (marked {', '.join(markers)})" if markers else ""
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """In CI, a module skipped at collection (module-level importorskip) fails to collect."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci():
        report.outcome = "failed"
        report.longrepr = (
            f"CI=true: {collector.nodeid} was skipped at collection: "
            f"{_skip_reason(report.longrepr)}; in CI every test module must run"
        )


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say which CUDA tests skipped in CI, and that this is the only skip CI allows."""
    skipped = config.stash.get(_CUDA_SKIPS, [])
    if skipped:
        terminalreporter.write_line(
            f"CI=true: {len(skipped)} test(s) marked cuda skipped (allowed: this machine has no "
            "CUDA device); any other skip fails in CI:"
        )
        for line in skipped:
            terminalreporter.write_line(f"  {line}")


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
