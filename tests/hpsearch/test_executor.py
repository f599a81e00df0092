"""RayExecutor: trial calls as Ray tasks, a bounded queue, clean shutdown."""

from __future__ import annotations

import time

import pytest

from hpsearch.cluster import RayExecutor
from hpsearch.worker import TrialTask
from trainer.config import TrainConfig
from trainer.datasets import make_synthetic

pytestmark = [pytest.mark.ray]

DATA = make_synthetic(200, n_features=8, n_classes=3, seed=0)


def _task(number: int, epochs: int = 1) -> TrialTask:
    config = TrainConfig(hidden_sizes=(8,), epochs=epochs, batch_size=20, lr=0.05, seed=number)
    return TrialTask(
        number=number,
        trial_id=-1,
        round=0,
        params={"lr": 0.05},
        seed=number,
        config=config,
        metric="val_accuracy",
    )


def _collect(executor: RayExecutor, count: int) -> list:
    outcomes: list = []
    deadline = time.monotonic() + 120
    while len(outcomes) < count and time.monotonic() < deadline:
        outcomes.extend(executor.wait(timeout=5))
    return outcomes


def test_workers_default_to_the_cluster_and_queue_three_calls_each(ray_local):
    executor = RayExecutor(DATA, workers=None)
    try:
        assert executor.workers == 2  # the fixture's 2 CPUs, 1 per trial
        assert executor.capacity == 6
        executor.ready()
        for number in range(executor.capacity):
            executor.submit(_task(number))
        assert executor.in_flight == 6
        outcomes = _collect(executor, 6)
    finally:
        executor.close()
    assert sorted(o.number for o in outcomes) == list(range(6))
    assert {o.state for o in outcomes} == {"COMPLETE"}
    assert all(o.node for o in outcomes)  # the Ray node each ran on


def test_fewer_workers_than_the_cluster_has_room_for_queue_nothing(ray_local):
    """Ray would run queued calls at once on the free CPUs: with one worker
    asked for on 2 CPUs, only one call is ever in flight."""
    executor = RayExecutor(DATA, workers=1)
    try:
        assert executor.capacity == 1
        executor.chain_size = 4
        assert executor.capacity == 4  # one call, of a chain of 4 trials
        executor.submit_chain([_task(n) for n in range(4)])
        outcomes = _collect(executor, 4)
    finally:
        executor.close()
    assert sorted(o.number for o in outcomes) == [0, 1, 2, 3]


def test_close_stops_running_calls_and_the_pruning_oracle(ray_local):
    import ray

    executor = RayExecutor(DATA, workers=2, pruner="asha", max_epochs=2000)
    oracle = executor.oracle
    executor.ready()
    executor.submit(_task(0, epochs=2000))  # minutes of training if left running
    executor.close()
    assert executor.in_flight == 0

    def oracle_gone() -> bool:
        try:
            ray.get(oracle.ping.remote(), timeout=30)
        except ray.exceptions.RayActorError:
            return True
        return False

    deadline = time.monotonic() + 30  # ray.kill takes effect asynchronously
    while not oracle_gone() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert oracle_gone()
    # The CPUs come back: the cancelled call no longer holds one.
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU", 0) >= 2
