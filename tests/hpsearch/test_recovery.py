"""Nothing lost, nothing duplicated: a killed driver, Ctrl-C, diverging training."""

from __future__ import annotations

import signal
import time

import optuna
import pytest

from hpsearch import records, results
from hpsearch.cli import main
from tests.hpsearch.studies_for_tests import hpsearch_process, small_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _unpacked(path):
    """One trial per worker call, so trials are RUNNING one at a time (not in packs
    that all finish at once) and a signal lands mid-trial.

    The callers' trials take ~0.4 s (300 epochs of 64x64): finished trials reach
    the database up to 0.25 s late (batched recording), so with trials of a few
    milliseconds a whole round could end between a poll and the signal."""
    path.write_text(path.read_text().replace("[resources]\n", "[resources]\npack_size = 1\n"))
    return path


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def _finished(url: str, name: str) -> int:
    try:
        return sum(t.state.is_finished() for t in _trials(url, name))
    except Exception:  # the study does not exist yet
        return 0


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _boxes(url: str, name: str) -> dict[str, dict]:
    attrs = optuna.load_study(study_name=name, storage=url).user_attrs
    return {k: v["box"] for k, v in attrs.items() if k.startswith(records.ROUND_KEY_PREFIX)}


def _assert_exact(url: str, name: str, rounds: int, trials: int) -> None:
    all_trials = _trials(url, name)
    numbers = [t.number for t in all_trials]
    assert len(numbers) == len(set(numbers))
    for r in range(rounds):
        live = [
            t
            for t in all_trials
            if t.user_attrs[records.TRIAL_ROUND] == r
            and not str(t.user_attrs.get(records.TRIAL_FAIL_REASON, "")).startswith("stale:")
        ]
        assert len(live) == trials, f"round {r} has {len(live)} live trials"
        assert all(t.state.is_finished() for t in live)
    assert not [t for t in all_trials if not t.state.is_finished()], "nothing left RUNNING"


def test_sigkill_mid_round_then_resume(tmp_path, ray_local):
    address = ray_local.get_runtime_context().gcs_address
    study = _unpacked(
        small_study(tmp_path / "k.toml", "killed", epochs=300, rounds=2, trials=12, hidden=(64, 64))
    )
    url = f"sqlite:///{tmp_path / 'k.db'}"
    driver = hpsearch_process("run", str(study), "--storage", url, "--address", address, "--quiet")

    def mid_round() -> bool:  # some trials finished and some running right now
        try:
            trials = _trials(url, "killed")
        except Exception:
            return False
        running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
        return sum(t.state.is_finished() for t in trials) >= 4 and running >= 1

    try:
        _wait_for(mid_round, timeout=240)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    before = {t.number: t for t in _trials(url, "killed")}
    boxes_before = _boxes(url, "killed")
    running = [n for n, t in before.items() if t.state == optuna.trial.TrialState.RUNNING]
    assert running, "the kill left trials RUNNING (otherwise this test proves nothing)"

    assert main(["run", str(study), "--storage", url, "--address", address, "--quiet"]) == 0
    after = {t.number: t for t in _trials(url, "killed")}
    for number in running:  # stale trials are marked, with the reason, and redone
        assert after[number].state == optuna.trial.TrialState.FAIL
        assert after[number].user_attrs[records.TRIAL_FAIL_REASON].startswith("stale:")
    for number, trial in before.items():  # finished trials are kept as they were
        if trial.state.is_finished():
            assert after[number].state == trial.state
            assert after[number].value == trial.value
    for key, box in boxes_before.items():  # recorded boxes are unchanged
        assert _boxes(url, "killed")[key] == box
    _assert_exact(url, "killed", rounds=2, trials=12)


def test_sigint_stops_cleanly_and_resume_finishes(tmp_path, ray_local):
    address = ray_local.get_runtime_context().gcs_address
    study = _unpacked(
        small_study(
            tmp_path / "i.toml", "interrupted", epochs=300, rounds=2, trials=12, hidden=(64, 64)
        )
    )
    url = f"sqlite:///{tmp_path / 'i.db'}"
    driver = hpsearch_process("run", str(study), "--storage", url, "--address", address, "--quiet")
    try:
        _wait_for(lambda: _finished(url, "interrupted") >= 3, timeout=240)
        driver.send_signal(signal.SIGINT)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, err
    assert "Resume with the same command" in err
    trials = _trials(url, "interrupted")
    assert all(t.state.is_finished() for t in trials), "the database is left consistent"
    assert len(trials) < 24
    assert main(["run", str(study), "--storage", url, "--address", address, "--quiet"]) == 0
    _assert_exact(url, "interrupted", rounds=2, trials=12)


def test_diverging_trials_are_recorded_and_the_study_finishes(tmp_path, ray_local):
    # A 3x100 network and lr up to 10 with SGD: many trials blow up to NaN/inf.
    study = small_study(
        tmp_path / "d.toml",
        "diverge",
        epochs=4,
        rounds=2,
        trials=10,
        lr_low=1e-2,
        lr_high=10.0,
        hidden=(100, 100, 100),
    )
    url = f"sqlite:///{tmp_path / 'd.db'}"
    assert main(["run", str(study), "--storage", url, "--quiet"]) == 0
    df = results.trials(url, "diverge")
    diverged = df[df["diverged"].fillna(False).astype(bool)]
    assert len(diverged) >= 1, df[["number", "state", "lr", "fail_reason"]]
    assert (diverged["state"] == "FAIL").all()
    assert diverged["fail_reason"].str.startswith("diverged").all()
    assert (df["state"] == "COMPLETE").any()
    rounds = results.rounds(url, "diverge")
    complete = set(df.loc[df["state"] == "COMPLETE", "number"])
    for top in rounds["top_trials"]:  # the narrowing ignores diverged trials
        assert set(top) <= complete
