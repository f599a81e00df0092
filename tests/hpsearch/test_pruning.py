"""The pruning oracle: no trial is judged before its grace period."""

from __future__ import annotations

import pytest

from hpsearch.pruning import PruningOracle, grace_epochs


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
