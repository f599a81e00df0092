"""CI cannot hide a skip: with CI=true a skipped test fails, except one marked cuda.

Each test runs pytest in a subprocess (so this run's own CI setting does not
matter): on a small test file whose conftest takes the hooks from
``tests/conftest.py``, and once on a real PostgreSQL test pointed at a port
where nothing listens, as a CI machine whose PostgreSQL did not start.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CONFTEST = """\
from tests.conftest import (  # noqa: F401
    pytest_make_collect_report,
    pytest_runtest_makereport,
    pytest_terminal_summary,
)
"""
INI = """\
[pytest]
addopts = -ra -p no:cacheprovider
markers =
    postgres: needs PostgreSQL
    cuda: needs a CUDA device
"""
TESTS = """\
import pytest


def test_runs():
    assert True


@pytest.mark.postgres
def test_skips_for_want_of_a_server():
    pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")


@pytest.mark.cuda
@pytest.mark.skipif(True, reason="needs a CUDA device; this machine has none")
def test_needs_cuda():
    pass


@pytest.mark.xfail(reason="known bug", strict=True)
def test_known_bug():
    assert False
"""


def _pytest(
    directory: Path, *args: str, ci: str | None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CI"}
    environ["PYTHONPATH"] = str(REPO)
    if ci is not None:
        environ["CI"] = ci
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        capture_output=True,
        text=True,
        cwd=directory,
        env=environ,
        timeout=600,
    )


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_sample.py").write_text(TESTS)
    return tmp_path


def test_outside_ci_skips_stay_skips(suite):
    run = _pytest(suite, ci=None)
    assert run.returncode == 0, run.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in run.stdout


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_in_ci_a_skip_fails_saying_why_and_only_cuda_may_skip(suite, value):
    run = _pytest(suite, ci=value)
    assert run.returncode == 1, run.stdout
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed" in run.stdout
    assert (
        "CI=true: skipped tests fail in CI, and this one skipped: no PostgreSQL server answers "
        "on 127.0.0.1:5432 (marked postgres)"
    ) in run.stdout
    assert "FAILED test_sample.py::test_skips_for_want_of_a_server" in run.stdout
    assert (
        "CI=true: 1 test(s) marked cuda skipped (allowed: this machine has no CUDA device)"
        in run.stdout
    )
    assert "test_sample.py::test_needs_cuda: needs a CUDA device; this machine has none" in (
        run.stdout
    )


def test_in_ci_a_module_skipped_at_collection_fails(suite):
    (suite / "test_sample.py").write_text("def test_runs():\n    assert True\n")
    (suite / "test_extra.py").write_text(
        textwrap.dedent(
            """\
            import pytest

            pytest.importorskip("a_module_that_is_not_installed")


            def test_never_collected():
                pass
            """
        )
    )
    outside = _pytest(suite, ci=None)
    assert outside.returncode == 0 and "1 passed, 1 skipped" in outside.stdout
    run = _pytest(suite, ci="true")
    assert run.returncode != 0, run.stdout
    assert "CI=true: test_extra.py was skipped at collection: could not import " in run.stdout
    assert "in CI every test module must run" in run.stdout


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: nothing listens there


@pytest.mark.slow
def test_in_ci_postgres_tests_fail_when_no_server_answers():
    port = _closed_port()
    test = (
        "tests/hpsearch/test_storage_url.py::"
        "test_postgresql_create_makes_tables_and_readers_see_them"
    )
    run = _pytest(REPO, test, ci="true", env={"HPSEARCH_TEST_PG_PORT": str(port)})
    assert run.returncode == 1, run.stdout
    assert f"FAILED {test}" in run.stdout
    assert f"this one skipped: no PostgreSQL server answers on 127.0.0.1:{port}" in run.stdout
    assert "(marked postgres)" in run.stdout
