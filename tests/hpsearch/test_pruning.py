"""The pruning oracle: no trial is judged before its grace period."""

from __future__ import annotations

import pytest

from hpsearch.pruning import PruningOracle, grace_epochs


@pytest.mark.parametrize("pruner", ["asha", "hyperband", "median"])
def test_no_trial_is_pruned_before_a_quarter_of_its_epochs(pruner: str) -> None:
    oracle = PruningOracle(pruner, "maximize", f"grace-{pruner}", max_epochs=50)
    assert grace_epochs(50) == 12
    # Ten strong trials, then ten at chance: the weak ones are not stopped while
    # every curve is still young (slow starters often end best), only from epoch 12.
    for number in range(10):
        for epoch in range(1, 51):
            assert not oracle.report(number, epoch, 0.5 + 0.008 * epoch)
        oracle.finish(number, "COMPLETE", 0.9)
    stopped_at = {}
    for number in range(10, 20):
        for epoch in range(1, 51):
            if oracle.report(number, epoch, 0.1):
                stopped_at[number] = epoch
                break
    assert stopped_at, "trials at chance among strong ones are pruned"
    assert min(stopped_at.values()) >= grace_epochs(50)


def test_grace_is_at_least_one_epoch() -> None:
    assert grace_epochs(1) == 1 and grace_epochs(3) == 1 and grace_epochs(8) == 2
