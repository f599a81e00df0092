"""Each example under examples/ end to end at smoke size on a loopback Ray cluster of
two worker nodes: the user's code reaches both nodes, curves are recorded from
trial.report / JSON lines, rounds box int and categorical parameters, and the
results read back with hpsearch.results."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsearch import results
from hpsearch.cli import main
from hpsearch.config import load_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def two_nodes(_ray_session_guard):
    """A head with no CPUs and two 1-CPU worker nodes, all on loopback."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="WARNING")
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.mark.parametrize(
    ("example", "curve_metrics", "int_param", "choice_param"),
    [
        ("function", {"val_accuracy", "train_loss"}, "hidden", "activation"),
        ("command", {"val_accuracy", "loss"}, "hidden", "solver"),
        ("sklearn", {"val_accuracy", "train_accuracy"}, "max_leaf_nodes", None),
    ],
)
def test_an_example_runs_on_two_nodes(
    two_nodes, tmp_path, example, curve_metrics, int_param, choice_param
):
    path = EXAMPLES / example / "study.toml"
    config = load_study(path)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    argv = ["run", str(path), "--storage", url, "--quiet", "--rounds", "2"]
    code = main([*argv, "--trials-per-round", "4", "--top-k", "2"])
    assert code == 0
    trials = results.trials(url, config.name)
    assert len(trials) == 8
    assert set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    assert trials["node"].nunique() == 2, "the code reached both worker nodes"
    curves = results.metric_curves(url, config.name)
    assert set(curves["metric"]) == curve_metrics
    assert set(curves["trial"]) == set(trials["number"])
    rounds = results.rounds(url, config.name)
    assert len(rounds) == 2
    assert f"{int_param}_low" in rounds.columns
    assert (rounds[f"{int_param}_low"] % 1 == 0).all()  # an int range stays integral
    if choice_param is not None:
        assert f"{choice_param}_choices" in rounds.columns
    best = results.best(url, config.name)
    assert best["value"].iloc[0] > 0.8  # every example learns its data


@pytest.mark.torch
def test_the_torch_cnn_example_runs_on_two_nodes(two_nodes, tmp_path):
    """The PyTorch CNN, with 2 epochs instead of 6 (smoke size)."""
    import shutil

    pytest.importorskip("torch")
    folder = tmp_path / "torch_cnn"
    shutil.copytree(EXAMPLES / "torch_cnn", folder, ignore=shutil.ignore_patterns("__pycache__"))
    path = folder / "study.toml"
    text = path.read_text().replace("epochs = 6", "epochs = 2").replace("max_steps = 6", "")
    path.write_text(text)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    argv = ["run", str(path), "--storage", url, "--quiet", "--rounds", "2"]
    assert main([*argv, "--trials-per-round", "4", "--top-k", "2"]) == 0
    trials = results.trials(url, "digits-cnn")
    assert len(trials) == 8 and trials["node"].nunique() == 2
    assert set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    curves = results.metric_curves(url, "digits-cnn")
    assert set(curves["metric"]) == {"val_accuracy", "train_loss"}
    rounds = results.rounds(url, "digits-cnn")
    assert {"channels_low", "optimizer_choices"} <= set(rounds.columns)
    assert results.best(url, "digits-cnn")["value"].iloc[0] > 0.5
