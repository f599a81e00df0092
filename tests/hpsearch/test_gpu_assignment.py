"""gpus_per_trial: Ray assigns a GPU and the torch backend trains on it.

Ray is told the machine has one GPU. Without CUDA (CI) that GPU is fake: the
assignment reaches the trainer, which selects ``cuda:0`` and reports that CUDA
is not available, proving the code path. With CUDA the trial trains on the
GPU and completes. Without an assignment the same trial trains on the CPU.
"""

from __future__ import annotations

import pytest

from hpsearch.cluster import RayExecutor
from hpsearch.config import parse_study
from hpsearch.worker import TrialTask, device_for
from trainer.config import TrainConfig
from trainer.datasets import make_synthetic

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch


def test_device_follows_the_gpu_ray_assigned():
    torch_cpu = TrainConfig(backend="torch")
    assert device_for(torch_cpu, [0]).device == "cuda:0"
    assert device_for(torch_cpu, []).device == "cpu"
    numpy = TrainConfig(backend="numpy")
    assert device_for(numpy, [0]) is numpy  # numpy never moves to a GPU


@pytest.fixture(scope="module")
def ray_with_fake_gpu(_ray_session_guard):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local", num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING"
    )
    yield ray
    ray.shutdown()


def _task(config: TrainConfig) -> TrialTask:
    return TrialTask(
        number=0,
        trial_id=-1,
        round=0,
        params={"lr": 0.1},
        seed=1,
        config=config,
        metric="val_accuracy",
    )


@pytest.mark.ray
def test_a_fractional_gpu_reaches_the_torch_trainer(ray_with_fake_gpu):
    study = parse_study(
        "[study]\nname='g'\n[data]\ndataset='synthetic'\n[model]\nbackend='torch'\n"
        "hidden_sizes=[8]\nepochs=1\n[search.lr]\nlow=0.01\nhigh=0.1\nlog=true\n"
        "[resources]\ngpus_per_trial=0.5\n"
    )
    data = make_synthetic(200, n_features=8, n_classes=3, seed=0)
    config = study.train_config({"lr": 0.1}, 1)
    with_gpu = RayExecutor(data, workers=1, gpus_per_trial=study.resources.gpus_per_trial)
    try:
        with_gpu.submit(_task(config))
        (outcome,) = with_gpu.wait(timeout=120)
    finally:
        with_gpu.close()
    if torch.cuda.is_available():
        assert outcome.state == "COMPLETE", outcome.fail_reason  # trained on cuda:0
        assert outcome.backend == "torch"
    else:
        assert outcome.state == "FAIL"
        assert "cuda:0" in outcome.fail_reason  # the assigned GPU was selected
        assert "CUDA is not available" in outcome.fail_reason

    cpu_only = RayExecutor(data, workers=1, gpus_per_trial=0)
    try:
        cpu_only.submit(_task(config))
        (outcome,) = cpu_only.wait(timeout=120)
    finally:
        cpu_only.close()
    assert outcome.state == "COMPLETE", outcome.fail_reason
    assert outcome.backend == "torch"
