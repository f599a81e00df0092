"""SIGTERM (ray job stop, Kubernetes, Slurm) and a second Ctrl-C on a real ``hpsearch run``:
running trials cancelled and marked stale, nothing left RUNNING, how to resume said,
and a rerun that finishes with exact counts."""

from __future__ import annotations

import signal

import optuna
import pytest

from hpsearch import records
from hpsearch.cli import main
from tests.hpsearch.studies_for_tests import hpsearch_process, small_study
from tests.hpsearch.test_recovery import _assert_exact, _finished, _trials, _unpacked, _wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _study(tmp_path, name: str):
    # ~0.4 s trials, one per worker call (see test_recovery._unpacked): the
    # signal lands while trials run.
    return _unpacked(
        small_study(
            tmp_path / f"{name}.toml", name, epochs=300, rounds=2, trials=12, hidden=(64, 64)
        )
    )


def _stopped_mid_round(tmp_path, ray_local, name: str, signals: list[int]):
    address = ray_local.get_runtime_context().gcs_address
    study = _study(tmp_path, name)
    url = f"sqlite:///{tmp_path / f'{name}.db'}"
    driver = hpsearch_process("run", str(study), "--storage", url, "--address", address, "--quiet")
    seen = []
    try:
        _wait_for(lambda: _finished(url, name) >= 3, timeout=240)
        driver.send_signal(signals[0])
        if len(signals) > 1:
            # The second Ctrl-C once the first was handled (two at once reach
            # Python's handler as one), while trials still run.
            while not (seen and seen[-1].startswith("hpsearch: stopping")):
                line = driver.stderr.readline()
                assert line, "".join(seen)
                seen.append(line.strip())
            driver.send_signal(signals[1])
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    return driver.returncode, "\n".join([*seen, err]), study, url, address


def _check_stopped(url: str, name: str) -> None:
    trials = _trials(url, name)
    assert trials, "the run recorded trials before the signal"
    assert all(t.state.is_finished() for t in trials), "nothing is left RUNNING"
    stale = [
        t
        for t in trials
        if str(t.user_attrs.get(records.TRIAL_FAIL_REASON, "")).startswith(records.STALE_PREFIX)
    ]
    # Two workers keep about six trials in flight at ~0.4 s each: some were running.
    assert stale, "the running trials were cancelled and marked stale"
    assert all(t.state == optuna.trial.TrialState.FAIL for t in stale)
    assert all("cancelled" in t.user_attrs[records.TRIAL_FAIL_REASON] for t in stale)
    live = [t for t in trials if t not in stale]
    assert len(live) < 24


RAY_CHECK_FAILURE = "You have likely discovered a bug in Ray"


def test_sigterm_cancels_running_trials_and_a_rerun_finishes(tmp_path, ray_local):
    # Seen twice in 2026-12-07's CI runs under load: Ray 2.60's core worker aborts the
    # driver (task_manager.cc:1329, "unexpected system state") when a cancelled
    # task's reply arrives. That is Ray's crash, not our handling: try once more.
    for attempt in range(2):
        name = f"termed{attempt}" if attempt else "termed"
        code, err, study, url, address = _stopped_mid_round(
            tmp_path, ray_local, name, [signal.SIGTERM]
        )
        if RAY_CHECK_FAILURE not in err:
            break
    assert code == 143, err
    assert "hpsearch: terminated (SIGTERM)" in err
    assert "Resume with the same command: hpsearch run" in err and f"--name {name}" in err
    assert "Traceback" not in err
    _check_stopped(url, name)
    assert main(["run", str(study), "--storage", url, "--address", address, "--quiet"]) == 0
    _assert_exact(url, name, rounds=2, trials=12)


def test_a_second_ctrl_c_also_says_how_to_resume(tmp_path, ray_local):
    code, err, study, url, address = _stopped_mid_round(
        tmp_path, ray_local, "twice", [signal.SIGINT, signal.SIGINT]
    )
    assert code == 130, err
    assert "Resume with the same command: hpsearch run" in err
    assert "Traceback" not in err
    _check_stopped(url, "twice")
    assert main(["run", str(study), "--storage", url, "--address", address, "--quiet"]) == 0
    _assert_exact(url, "twice", rounds=2, trials=12)
