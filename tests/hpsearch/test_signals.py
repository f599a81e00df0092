"""SIGTERM (ray job stop, Kubernetes, Slurm) and a second Ctrl-C on a real ``hpsearch run``:
running trials cancelled and marked stale, nothing left RUNNING, how to resume said,
and a rerun that finishes with exact counts. Also without Ray: a cancel whose
exception Python dropped still cancels, and prints no traceback."""

from __future__ import annotations

import signal
import sys
import weakref

import optuna
import pytest

from hpsearch import records
from hpsearch.cli import main
from hpsearch.cli.run import _Signals
from hpsearch.config import parse_study
from hpsearch.fake_cluster import FakeExecutor
from hpsearch.sampling import make_sampler
from hpsearch.search import NarrowingSearch, SearchObserver
from hpsearch.storage import StudyStore
from tests.hpsearch.studies_for_tests import hpsearch_process, small_study
from tests.hpsearch.test_recovery import _assert_exact, _finished, _trials, _unpacked, _wait_for


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


@pytest.mark.ray
@pytest.mark.slow
def test_sigterm_cancels_running_trials_and_a_rerun_finishes(tmp_path, ray_local):
    # Exit 143 every time, never Ray 2.60's own abort (task_manager.cc:1329), which
    # a ray.cancel landing on a finishing trial caused: see RayExecutor.cancel_all.
    name = "termed"
    code, err, study, url, address = _stopped_mid_round(tmp_path, ray_local, name, [signal.SIGTERM])
    assert code == 143, err
    assert "hpsearch: terminated (SIGTERM)" in err
    assert "Resume with the same command: hpsearch run" in err and f"--name {name}" in err
    assert "Traceback" not in err
    _check_stopped(url, name)
    assert main(["run", str(study), "--storage", url, "--address", address, "--quiet"]) == 0
    _assert_exact(url, name, rounds=2, trials=12)


@pytest.mark.ray
@pytest.mark.slow
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


FAKE_STUDY = """
[study]
name = "dropped"
seed = 0
sampler = "random"

[data]
dataset = "synthetic:200"

[model]
hidden_sizes = [4]
epochs = 1

[search.lr]
low = 1e-4
high = 1e-1
log = true

[narrowing]
rounds = 2
trials_per_round = 40
top_k = 5

[final_eval]
enabled = false
"""


class _CancelOnce(SearchObserver):
    """Asks the search to cancel as the SIGTERM handler does, once some trials
    finished, but raises nothing: as when Python dropped the handler's exception."""

    def __init__(self) -> None:
        self.search: NarrowingSearch | None = None

    def trials_finished(self, round_index, done, total, running, best) -> None:
        if done >= 5 and running and not self.search.stop_requested:
            self.search.request_stop(cancel=True)


class _OneByOne(FakeExecutor):
    """Calls finish one after another (10 ms apart), so some run while others finish."""

    def submit_pack(self, tasks) -> None:
        super().submit_pack(tasks)
        self._calls[-1].due += 0.01 * len(self._calls)


def _fake_search(tmp_path, observer):
    config = parse_study(FAKE_STUDY)
    sampler = make_sampler(config.sampler, config.seed)
    url = f"sqlite:///{tmp_path / 'dropped.db'}"
    store, _ = StudyStore.open(url, config.name, direction="maximize", sampler=sampler, create=True)
    executor = _OneByOne(workers=2, delay=0.02)
    search = NarrowingSearch(config, store, executor, sampler, observer=observer)
    return search, url


def test_a_cancel_whose_exception_was_dropped_still_cancels_the_running_trials(tmp_path):
    observer = _CancelOnce()
    search, url = _fake_search(tmp_path, observer)
    observer.search = search
    with pytest.raises(KeyboardInterrupt):
        search.run()
    # The trials running then are marked stale, not waited for and recorded.
    _check_stopped(url, "dropped")
    search, _ = _fake_search(tmp_path, SearchObserver())
    assert not search.run().interrupted
    _assert_exact(url, "dropped", rounds=2, trials=40)


class _Search:
    def __init__(self) -> None:
        self.stop_requested = False
        self.cancel = False

    def request_stop(self, *, cancel: bool = False) -> None:
        self.stop_requested, self.cancel = True, cancel


def test_a_sigterm_landing_in_a_weakref_callback_cancels_and_prints_no_traceback():
    # Python runs signal handlers between any two bytecodes, weakref callbacks
    # included, and drops what a callback raises, handing it to sys.unraisablehook
    # (by default: "Exception ignored in ..." and a traceback on stderr). Seen in a
    # SIGTERM run that then waited for its trials and exited 130 with a traceback.
    signals = _Signals()
    signals.search = search = _Search()
    passed_on = []  # what reaches the previous hook, which would print it
    previous = sys.unraisablehook
    sys.unraisablehook = signals.unraisable_hook(passed_on.append)

    class Thing:
        pass

    def drop(callback) -> None:
        thing = Thing()
        ref = weakref.ref(thing, lambda _: callback())
        del thing  # the callback runs now; what it raises is dropped
        assert ref() is None

    def bug() -> None:
        raise ValueError("a real bug")

    try:
        drop(lambda: signals.on_sigterm(signal.SIGTERM, None))
        drop(bug)
    finally:
        sys.unraisablehook = previous
    assert signals.terminated and search.cancel  # the search raises it instead
    assert [type(u.exc_value) for u in passed_on] == [ValueError]  # only the bug is printed
