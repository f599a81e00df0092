"""The pruning oracle: no trial is judged before its grace period."""

from __future__ import annotations

import random

import optuna
import pytest

from hpsearch.pruning import PruningOracle, grace_epochs, make_pruner


def _strong_then_weak(oracle: PruningOracle, epochs: int, slope: float) -> tuple[bool, dict]:
    """Ten strong trials (rising by ``slope`` per epoch) finish, then ten at
    chance report; whether any strong trial was told to stop, and the epoch
    each weak trial was stopped at."""
    strong_stopped = False
    for number in range(10):
        for epoch in range(1, epochs + 1):
            strong_stopped |= oracle.report(number, epoch, 0.5 + slope * epoch)
        oracle.finish(number, "COMPLETE", 0.9)
    stopped_at = {}
    for number in range(10, 20):
        for epoch in range(1, epochs + 1):
            if oracle.report(number, epoch, 0.1):
                stopped_at[number] = epoch
                break
    return strong_stopped, stopped_at


@pytest.mark.parametrize("pruner", ["asha", "hyperband", "median"])
def test_no_trial_is_pruned_before_a_quarter_of_its_epochs(pruner: str) -> None:
    oracle = PruningOracle(pruner, "maximize", f"grace-{pruner}", max_epochs=50)
    assert grace_epochs(50) == 12
    # Ten strong trials, then ten at chance: the weak ones are not stopped while
    # every curve is still young (slow starters often end best), only from epoch 12.
    strong_stopped, stopped_at = _strong_then_weak(oracle, 50, 0.008)
    assert not strong_stopped
    assert stopped_at, "trials at chance among strong ones are pruned"
    assert min(stopped_at.values()) >= grace_epochs(50)


def test_grace_is_at_least_one_epoch() -> None:
    assert grace_epochs(1) == 1 and grace_epochs(3) == 1 and grace_epochs(8) == 2


STUDY = """
[study]
name = "p"
pruner = "{pruner}"
{prune_after}
[data]
dataset = "digits"
[model]
epochs = 20
[search.lr]
low = 0.01
high = 0.1
log = true
"""


@pytest.mark.parametrize("pruner", ["asha", "hyperband", "median"])
def test_prune_after_sets_when_the_pruner_may_first_stop_a_trial(pruner: str) -> None:
    from hpsearch.config import parse_study

    config = parse_study(STUDY.format(pruner=pruner, prune_after="prune_after = 3"))
    assert config.prune_after == 3
    oracle = PruningOracle(pruner, "maximize", f"after-{pruner}", 20, config.prune_after)
    _, stopped_at = _strong_then_weak(oracle, 20, 0.02)
    assert min(stopped_at.values()) == 3  # not the default quarter (5)


@pytest.mark.parametrize(
    ("pruner", "line", "words"),
    [
        ("asha", "prune_after = 0", ["study.prune_after", "got 0", ">= 1"]),
        ("asha", "prune_after = 2.5", ["study.prune_after", "2.5"]),
        ("asha", "prune_after = 20", ["study.prune_after", "below model.epochs (20)"]),
        ("none", "prune_after = 3", ["study.prune_after", "study.pruner is 'none'"]),
    ],
)
def test_bad_prune_after_is_one_error_naming_the_field(pruner, line, words) -> None:
    from hpsearch.config import parse_study
    from hpsearch.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_study(STUDY.format(pruner=pruner, prune_after=line))
    for word in words:
        assert word in str(info.value)


# -- the oracle decides as Optuna's pruner of the same name ---------------------


def _events(seed: int, trials: int, epochs: int, concurrent: int, direction: str):
    """A random interleaving of ``trials`` curves, at most ``concurrent`` at once,
    as workers on several nodes report them: ``("report", number, epoch, value)``
    and ``("finish", number, state, value)`` events. Values are rounded to two
    decimals so that ties are common (the rung lists must order them as Optuna
    does). A consumer that prunes a trial finishes it itself."""
    rng = random.Random(seed)
    sign = 1.0 if direction == "maximize" else -1.0
    pending = list(range(trials))
    running: dict[int, tuple[float, int]] = {}  # number -> (quality, next epoch)
    while pending or running:
        while pending and len(running) < concurrent:
            running[pending.pop(0)] = (rng.random(), 1)
        number = rng.choice(sorted(running))
        quality, epoch = running[number]
        value = round(sign * (quality * epoch / epochs + rng.random() * 0.1), 2)
        stop = yield ("report", number, epoch, value)
        if stop:
            del running[number]
        elif epoch == epochs or rng.random() < 0.01:  # the last epoch, or a crash
            del running[number]
            state = "COMPLETE" if epoch == epochs else "FAIL"
            yield ("finish", number, state, value if state == "COMPLETE" else None)
        else:
            running[number] = (quality, epoch + 1)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize(
    ("pruner", "epochs", "grace"),
    [
        ("asha", 20, 2),
        ("asha", 27, 1),
        ("hyperband", 20, 2),
        ("hyperband", 81, 1),
        ("median", 20, 5),
        ("median", 12, 1),
    ],
)
def test_the_oracle_decides_as_optuna_trial_should_prune(pruner, epochs, grace, direction):
    """Trials reported interleaved, as from many workers at once: every decision
    equals Optuna's Trial.should_prune on a study with the same pruner."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    oracle = PruningOracle(pruner, direction, "same_name", max_epochs=epochs, grace=grace)
    study = optuna.create_study(
        study_name="same_name",
        direction=direction,
        pruner=make_pruner(pruner, max_epochs=epochs, grace=grace),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    theirs_trials: dict[int, optuna.Trial] = {}
    decisions = []
    events = _events(seed=epochs, trials=150, epochs=epochs, concurrent=12, direction=direction)
    event = next(events)
    try:
        while True:
            if event[0] == "report":
                _, number, epoch, value = event
                while number not in theirs_trials:  # trials start in the order of their numbers
                    trial = study.ask()
                    theirs_trials[trial.number] = trial
                trial = theirs_trials[number]
                trial.report(value, epoch)
                theirs = trial.should_prune()
                ours = oracle.report(number, epoch, value)
                assert ours == theirs, (number, epoch, value)
                decisions.append(ours)
                if ours:
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    oracle.finish(number, "PRUNED", None)
                event = events.send(ours)
            else:
                _, number, state, value = event
                trial = theirs_trials[number]
                if state == "COMPLETE":
                    study.tell(trial, value)
                else:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                oracle.finish(number, state, value)
                event = next(events)
    except StopIteration:
        pass
    stopped = sum(decisions)
    assert 10 < stopped < 150, f"{stopped} of 150 trials pruned: the test would not tell"


@pytest.mark.parametrize("pruner", ["asha", "hyperband", "median"])
def test_a_resumed_oracle_decides_as_one_that_saw_every_trial(pruner):
    """Crash recovery: an oracle preloaded with a study's finished trials (their
    recorded curves) decides the next trials as the oracle that judged them live."""
    epochs = 20
    live = PruningOracle(pruner, "maximize", "resume", max_epochs=epochs, grace=2)
    recorded = []
    rng = random.Random(1)
    for number in range(60):
        quality, curve, state = rng.random(), {}, "COMPLETE"
        for epoch in range(1, epochs + 1):
            curve[epoch] = quality * epoch / epochs + rng.random() * 0.05
            if live.report(number, epoch, curve[epoch]):
                state = "PRUNED"
                break
        value = curve[epochs] if state == "COMPLETE" else None
        live.finish(number, state, value)
        recorded.append((number, state, value, curve))
    resumed = PruningOracle(pruner, "maximize", "resume", max_epochs=epochs, grace=2)
    assert resumed.preload(recorded) == 60
    assert resumed.preload(recorded) == 0  # a trial is seeded once
    fresh = PruningOracle(pruner, "maximize", "resume", max_epochs=epochs, grace=2)
    differs_from_fresh = False
    for number in range(60, 120):
        quality = rng.random()
        for epoch in range(1, epochs + 1):
            value = quality * epoch / epochs + rng.random() * 0.05
            ours = resumed.report(number, epoch, value)
            assert ours == live.report(number, epoch, value), (number, epoch)
            differs_from_fresh |= ours != fresh.report(number, epoch, value)
            if ours:
                break
        for oracle in (live, resumed, fresh):
            oracle.finish(number, "PRUNED" if ours else "COMPLETE", None if ours else value)
    assert differs_from_fresh, "the preloaded trials changed no decision: the test would not tell"


def test_a_finished_trial_is_never_told_to_stop():
    oracle = PruningOracle("asha", "maximize", "late", max_epochs=9, grace=1)
    for number in range(6):
        oracle.report(number, 1, 0.9)
    oracle.finish(0, "COMPLETE", 0.9)
    assert oracle.report(0, 1, 0.0) is False  # a late report (a re-sent call) is ignored
    assert oracle.report(6, 1, float("nan")) is False  # a non-finite value decides nothing
    assert oracle.report(6, 1, 0.0) is True
