"""A study on a multi-node Ray cluster (one machine): trials on several nodes,
pruning decided across nodes, and a worker node lost mid-study."""

from __future__ import annotations

import threading
import time

import optuna
import pytest

from hpsearch import records, results
from hpsearch.cluster import RayExecutor
from hpsearch.config import parse_study
from hpsearch.sampling import make_sampler
from hpsearch.search import NarrowingSearch
from hpsearch.storage import StudyStore
from trainer.datasets import load_dataset

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STUDY = """
[study]
name = "{name}"
seed = 3
sampler = "random"
pruner = "{pruner}"

[data]
dataset = "digits"
train_samples = 500
val_fraction = 0.2

[model]
hidden_sizes = [32, 32]
epochs = {epochs}
batch_size = 50

[search.lr]
low = 1e-4
high = 1.0
log = true

[search.dropout_ratio]
low = 0.0
high = 0.5

[narrowing]
rounds = {rounds}
trials_per_round = {trials}
top_k = 3

[resources]
workers = {workers}
"""


@pytest.fixture(scope="module")
def cluster(_ray_session_guard):
    """A head with no CPUs and three 1-CPU worker nodes, all on loopback."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [c.add_node(num_cpus=1) for _ in range(3)]
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="WARNING")
    yield c, nodes
    ray.shutdown()
    c.shutdown()


def _run(tmp_path, name, *, pruner="none", epochs=4, rounds=1, trials=9, workers=3, during=None):
    config = parse_study(
        STUDY.format(
            name=name, pruner=pruner, epochs=epochs, rounds=rounds, trials=trials, workers=workers
        )
    )
    data = load_dataset("digits", train_samples=500, val_fraction=0.2, seed=config.seed)
    url = f"sqlite:///{tmp_path / (name + '.db')}"
    sampler = make_sampler(config.sampler, config.seed)
    store, _ = StudyStore.open(
        url, config.name, direction=config.direction, sampler=sampler, create=True
    )
    executor = RayExecutor(
        data,
        workers=workers,
        pruner=config.pruner,
        direction=config.direction,
        study_name=config.name,
        max_epochs=epochs,
    )
    try:
        if during is not None:
            threading.Thread(target=during, args=(executor,), daemon=True).start()
        result = NarrowingSearch(config, store, executor, sampler).run()
    finally:
        executor.close()
    return url, result


def test_trials_run_on_several_nodes_and_record_them(cluster, tmp_path):
    # Trials of ~50 ms: Ray keeps feeding a worker that finishes tasks of a
    # few milliseconds faster than it grants workers on other nodes.
    url, _ = _run(tmp_path, "spread", epochs=20)
    df = results.trials(url, "spread")
    assert len(df) == 9
    assert (df["state"] == "COMPLETE").all()
    assert df["node"].nunique() >= 2, "trials should spread over the worker nodes"
    import ray

    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert set(df["node"]) <= alive


def test_asha_prunes_across_nodes_with_partial_curves(cluster, tmp_path):
    # Many epochs and a wide lr range: the slow learners fall behind early.
    url, _ = _run(tmp_path, "asha", pruner="asha", epochs=12, trials=18)
    df = results.trials(url, "asha")
    assert len(df) == 18
    pruned = df[df["state"] == "PRUNED"]
    complete = df[df["state"] == "COMPLETE"]
    assert len(pruned) >= 3, df[["number", "state", "value", "lr", "epochs_completed"]]
    assert len(complete) >= 1
    assert (pruned["epochs_completed"] < 12).all()
    assert pruned["node"].nunique() >= 2, "pruning decisions reach every node"
    curves = results.curves(url, "asha")
    for number, epochs in zip(pruned["number"], pruned["epochs_completed"], strict=True):
        rows = curves[(curves["trial"] == number) & (curves["split"] == "val")]
        assert len(rows) == epochs  # the partial curve is recorded
    study = optuna.load_study(study_name="asha", storage=url)
    for t in study.get_trials(states=(optuna.trial.TrialState.PRUNED,)):
        assert len(t.intermediate_values) == t.user_attrs[records.TRIAL_EPOCHS]
        assert t.value == pytest.approx(t.intermediate_values[max(t.intermediate_values)])


def test_losing_a_worker_node_mid_study_keeps_counts_exact(cluster, tmp_path):
    c, nodes = cluster

    def kill_a_node(executor):
        # Once the doomed node has sent a trial back (so it trains and holds
        # queued calls), not after a fixed delay: a fast run could be over by
        # then, and a node that had not yet been given work loses nothing.
        # Trials of 150 epochs (~0.5 s) outlast the node's removal.
        doomed = nodes[-1].node_id
        finished = []
        wait = executor.wait

        def counting_wait(timeout=None):
            outcomes = wait(timeout)
            finished.extend(outcomes)
            return outcomes

        executor.wait = counting_wait
        deadline = time.monotonic() + 120
        while not any(o.node == doomed for o in finished) and time.monotonic() < deadline:
            time.sleep(0.01)
        c.remove_node(nodes[-1], allow_graceful=False)

    url, _ = _run(tmp_path, "lost", epochs=150, rounds=2, trials=12, during=kill_a_node)
    df = results.trials(url, "lost")
    for r in (1, 2):  # rounds are numbered from 1
        in_round = df[df["round"] == r]
        assert len(in_round) == 12
        assert in_round["state"].isin(["COMPLETE", "PRUNED", "FAIL"]).all()
    assert df["number"].is_unique
    assert (df["state"] == "COMPLETE").sum() >= 20, df[["number", "state", "fail_reason"]]
    trials = optuna.load_study(study_name="lost", storage=url).get_trials()
    retried = [t for t in trials if t.user_attrs.get(records.TRIAL_RETRIES)]
    assert retried, "the trials running on the lost node were re-run and say so"
