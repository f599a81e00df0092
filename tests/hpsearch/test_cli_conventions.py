"""Conventions a user brings from elsewhere: RAY_ADDRESS (as ``ray.init`` and ``ray job
submit`` use it) and ``-v`` after the subcommand."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest

from hpsearch import records
from hpsearch.cli import build_parser, main
from tests.hpsearch.studies_for_tests import small_study

# -- -v / --verbose -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "ls"],
        ["ls", "-v"],
        ["ls", "--verbose"],
        ["run", "x.toml", "-v"],
        ["run", "-v", "x.toml", "--quiet"],
        ["show", "name", "-v"],
        ["report", "name", "-v"],
    ],
)
def test_verbose_works_before_and_after_the_subcommand(argv):
    assert build_parser().parse_args(argv).verbose is True


def test_without_verbose_it_stays_off():
    assert build_parser().parse_args(["ls"]).verbose is False
    assert build_parser().parse_args(["run", "x.toml"]).verbose is False


@pytest.fixture
def optuna_verbosity():
    before = optuna.logging.get_verbosity()
    yield
    optuna.logging.set_verbosity(before)


def test_verbose_after_the_subcommand_turns_debug_logging_on(tmp_path, capsys, optuna_verbosity):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    optuna.create_study(study_name="x", storage=url)
    assert main(["ls", "--storage", url, "-v"]) == 0
    assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    assert main(["ls", "--storage", url]) == 0
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING


# -- RAY_ADDRESS ------------------------------------------------------------------------------


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return small_study(tmp_path / "s.toml", "s", rounds=1, trials=3, epochs=1)


def _one_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, (out, err)
    assert err.startswith("hpsearch: error: ")
    return err


def test_ray_address_from_the_environment_is_checked_like_address(
    study, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    db = tmp_path / "e.db"
    assert main(["run", str(study), "--storage", f"sqlite:///{db}", "--quiet"]) == 1
    err = _one_line(capsys)
    assert "RAY_ADDRESS 127.0.0.1:1: no Ray cluster answers" in err
    assert "unset RAY_ADDRESS" in err  # how to start Ray locally instead
    assert not db.exists()


def test_address_wins_over_ray_address(study, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    db = tmp_path / "e.db"
    code = main(["run", str(study), "--storage", f"sqlite:///{db}", "--address", "127.0.0.1:2"])
    assert code == 1
    err = _one_line(capsys)
    assert "--address 127.0.0.1:2: no Ray cluster answers" in err and "RAY_ADDRESS" not in err


def test_a_dashboard_url_in_ray_address_says_what_it_is(study, tmp_path, monkeypatch, capsys):
    # `ray job submit` users often export the dashboard's URL as RAY_ADDRESS.
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    db = tmp_path / "e.db"
    assert main(["run", str(study), "--storage", f"sqlite:///{db}"]) == 2
    err = _one_line(capsys)
    assert "RAY_ADDRESS: got 'http://127.0.0.1:8265'" in err
    assert "dashboard address" in err and "unset RAY_ADDRESS" in err
    assert not db.exists()


@pytest.mark.ray
@pytest.mark.slow
def test_a_driver_with_ray_address_joins_that_cluster(tmp_path, ray_local):
    """What a `ray job submit` driver sees: RAY_ADDRESS set, no --address."""
    address = ray_local.get_runtime_context().gcs_address
    node = ray_local.get_runtime_context().get_node_id()
    study = small_study(tmp_path / "j.toml", "joined", rounds=1, trials=3, epochs=1)
    url = f"sqlite:///{tmp_path / 'j.db'}"
    env = dict(
        os.environ,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        PYTHONUNBUFFERED="1",
        RAY_ADDRESS=address,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "hpsearch", "run", str(study), "--storage", url, "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"Ray cluster at {address} (from RAY_ADDRESS)" in proc.stderr
    trials = optuna.load_study(study_name="joined", storage=url).get_trials()
    assert len(trials) == 3
    assert {t.user_attrs[records.TRIAL_NODE] for t in trials} == {node}  # ran on that cluster
