"""A trial larger than any node: one line and exit 2 before anything is written, or,
on a cluster an autoscaler can grow, a wait that says what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from hpsearch import capacity
from hpsearch.capacity import (
    NO_GROWTH,
    Growth,
    cluster_growth,
    fit_problem,
    growth_from_bootstrap,
    growth_from_cluster_config,
    growth_from_v1_status,
    growth_from_v2_status,
    trial_slots,
    wait_for_fit,
)
from hpsearch.errors import ConfigError
from tests.hpsearch.studies_for_tests import small_study

HEAD_ID = "f" * 51 + "00000"  # Ray node ids are 56 hex digits
TWO_CPUS = {"CPU": 2.0, "memory": 1e9, "node:127.0.0.1": 1.0}


# -- does one trial fit on one node? ----------------------------------------------------


def test_a_trial_that_fits_on_a_node_is_no_problem():
    assert fit_problem([TWO_CPUS], 2, 0) is None
    assert fit_problem([TWO_CPUS, {"CPU": 1.0, "GPU": 1.0}], 1, 0.5) is None  # a GPU share
    assert fit_problem([{"CPU": 0.0}, TWO_CPUS], 1.5, 0) is None  # fractions of CPUs


def test_more_cpus_than_the_largest_node_names_request_and_offer():
    problem, fix = fit_problem([TWO_CPUS], 4, 0)
    assert problem == "resources.cpus_per_trial = 4 but the largest node has 2 CPUs"
    assert "lower cpus_per_trial to 2 or less" in fix and "--address" in fix


def test_the_check_is_per_node_not_the_cluster_total():
    # Four CPUs in the cluster, never four on one node: the trial can never start.
    problem, _ = fit_problem([TWO_CPUS, TWO_CPUS], 4, 0)
    assert problem == "resources.cpus_per_trial = 4 but the largest node has 2 CPUs"


def test_gpus_on_a_machine_without_any():
    problem, fix = fit_problem([TWO_CPUS], 1, 24)
    assert problem == "resources.gpus_per_trial = 24 but no node has a GPU"
    assert "set gpus_per_trial = 0" in fix


def test_more_gpus_than_the_largest_gpu_node():
    problem, fix = fit_problem([{"CPU": 8.0, "GPU": 4.0}, TWO_CPUS], 1, 8)
    assert problem == "resources.gpus_per_trial = 8 but the largest node has 4"
    assert "lower gpus_per_trial to 4 or less" in fix


def test_cpus_and_gpus_both_short():
    problem, _ = fit_problem([TWO_CPUS], 4, 24)
    assert problem.startswith("resources.cpus_per_trial = 4 and gpus_per_trial = 24 but")
    assert "2 CPUs" in problem and "no GPU" in problem


def test_cpus_on_one_node_and_gpus_on_another_is_no_fit():
    nodes = [{"CPU": 16.0}, {"CPU": 2.0, "GPU": 1.0}]
    problem, fix = fit_problem(nodes, 4, 1)
    assert "no node has both" in problem and "at most 2 CPUs" in problem
    assert "lower cpus_per_trial to 2 or less" in fix


def test_slots_are_counted_node_by_node():
    three = {"CPU": 3.0}
    assert trial_slots([three, three], 2, 0) == 2  # not 6 // 2 = 3
    assert trial_slots([{"CPU": 8.0, "GPU": 2.0}], 1, 0.5) == 4
    assert trial_slots([{"CPU": 8.0}], 0, 0) is None


def test_only_live_nodes_count(monkeypatch):
    import ray

    monkeypatch.setattr(
        ray,
        "nodes",
        lambda: [
            {"Alive": False, "Resources": {"CPU": 64.0}},
            {"Alive": True, "Resources": TWO_CPUS},
        ],
    )
    assert capacity.alive_nodes() == [TWO_CPUS]


# -- a cluster that cannot grow: one line --------------------------------------------------


def _never(*_args):
    raise AssertionError("must not be called")


def test_no_fit_and_no_autoscaler_is_a_config_error_at_once():
    with pytest.raises(ConfigError) as caught:
        wait_for_fit(
            4,
            0,
            nodes=lambda: [TWO_CPUS],
            growth=lambda: NO_GROWTH,
            demand=_never,
            sleep=_never,
            on_wait=_never,
        )
    message = str(caught.value)
    assert message.startswith("resources.cpus_per_trial = 4 but the largest node has 2 CPUs")
    assert "a trial runs on one node" in message and "\n" not in message


def test_an_autoscaler_whose_node_types_are_all_too_small_is_an_error_too():
    small_types = Growth(True, ({"CPU": 2.0}, {"CPU": 1.0, "GPU": 1.0}), "the test's config")
    with pytest.raises(ConfigError, match=r"no node type the autoscaler may add has room"):
        wait_for_fit(4, 0, nodes=lambda: [TWO_CPUS], growth=lambda: small_types, demand=_never)


def test_a_fitting_cluster_asks_nothing_more():
    assert wait_for_fit(1, 0, nodes=lambda: [TWO_CPUS], growth=_never, demand=_never) == [TWO_CPUS]


# -- a cluster that can grow: wait, say what is missing ----------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Demand:
    def __init__(self) -> None:
        self.started: list[tuple[float, float]] = []
        self.stopped = 0

    def __call__(self, cpus: float, gpus: float):
        self.started.append((cpus, gpus))

        def stop() -> None:
            self.stopped += 1

        return stop


def test_an_autoscaling_cluster_waits_says_so_and_goes_on_when_a_node_comes():
    clock, demand, said = FakeClock(), Demand(), []
    big = {"CPU": 4.0}

    def nodes():  # the autoscaler's node joins after 75 s
        return [TWO_CPUS, big] if clock.now >= 75 else [TWO_CPUS]

    got = wait_for_fit(
        4,
        0,
        nodes=nodes,
        growth=lambda: Growth(True, None, "an autoscaler manages node types big"),
        demand=demand,
        on_wait=said.append,
        clock=clock,
        sleep=clock.sleep,
    )
    assert got == [TWO_CPUS, big]
    assert demand.started == [(4, 0)] and demand.stopped == 1  # asked once, then withdrawn
    # At once, then every ~30 s: what is missing, why it waits, how to stop.
    assert len(said) == 3, said
    assert said[0].startswith("resources.cpus_per_trial = 4 but the largest node has 2 CPUs")
    assert "waiting for the autoscaler" in said[0] and "node types big" in said[0]
    assert "Ctrl-C" in said[0]
    assert "waiting for 30 s" in said[1] and "waiting for 60 s" in said[2]


def test_ctrl_c_while_waiting_ends_the_wait_and_withdraws_the_request():
    clock, demand = FakeClock(), Demand()

    def interrupted(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now > 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wait_for_fit(
            4,
            0,
            nodes=lambda: [TWO_CPUS],
            growth=lambda: Growth(True, None, "test"),
            demand=demand,
            on_wait=lambda _m: None,
            clock=clock,
            sleep=interrupted,
        )
    assert demand.stopped == 1


def test_known_node_types_that_fit_mean_waiting():
    clock, said = FakeClock(), []
    nodes = iter([[TWO_CPUS], [TWO_CPUS], [TWO_CPUS, {"CPU": 8.0}]])
    wait_for_fit(
        4,
        0,
        nodes=lambda: next(nodes),
        growth=lambda: Growth(True, ({"CPU": 8.0},), "the autoscaler's cluster config"),
        demand=None,
        on_wait=said.append,
        clock=clock,
        sleep=clock.sleep,
    )
    assert len(said) == 1 and "cluster config" in said[0]


# -- how a driver tells that the cluster can grow ------------------------------------------


def _v1_status(mapping: dict[str, str], pending: dict[str, int] | None = None) -> dict:
    """The shape autoscaler v1's monitor writes to the GCS (as read from Ray 2.60)."""
    return {
        "time": 0.0,
        "autoscaler_report": {
            "active_nodes": {t: 1 for t in mapping.values()},
            "pending_launches": pending or {},
            "pending_nodes": [],
            "node_type_mapping": mapping,
            "legacy": True,
        },
        "load_metrics_report": {"usage": {}},
    }


def test_a_manually_started_cluster_cannot_grow():
    # `ray start` without an autoscaling config: read-only node types node_<id>.
    assert growth_from_v1_status(_v1_status({HEAD_ID: f"node_{HEAD_ID}"})) == NO_GROWTH
    assert growth_from_v1_status(None) is None


def test_an_autoscaler_with_node_types_can_grow():
    growth = growth_from_v1_status(_v1_status({HEAD_ID: "ray.head.default"}, {"big": 1}))
    assert growth.can_grow and growth.shapes is None
    assert "big" in growth.source and "ray.head.default" in growth.source


def test_autoscaler_v2_status():
    def node(name: str) -> SimpleNamespace:
        return SimpleNamespace(ray_node_type_name=name)

    manual = SimpleNamespace(
        active_nodes=[], idle_nodes=[node(f"node_{HEAD_ID}")], pending_nodes=[], pending_launches=[]
    )
    assert growth_from_v2_status(manual) == NO_GROWTH
    kuberay = SimpleNamespace(
        active_nodes=[node("headgroup")], idle_nodes=[], pending_nodes=[], pending_launches=[]
    )
    assert growth_from_v2_status(kuberay).can_grow


def test_the_gcs_cluster_config_gives_the_node_types_shapes():
    from ray.core.generated import autoscaler_pb2

    config = autoscaler_pb2.ClusterConfig()
    head = config.node_group_configs.add(name="head", min_count=1, max_count=1)
    head.resources["CPU"] = 2
    gpu = config.node_group_configs.add(name="gpu", min_count=0, max_count=4)
    gpu.resources["CPU"] = 8
    gpu.resources["GPU"] = 1
    growth = growth_from_cluster_config(config)
    assert growth.can_grow and growth.shapes == ({"CPU": 8.0, "GPU": 1.0},)
    fixed = autoscaler_pb2.ClusterConfig()
    fixed.node_group_configs.add(name="w", min_count=2, max_count=2).resources["CPU"] = 4
    assert not growth_from_cluster_config(fixed).can_grow
    assert growth_from_cluster_config(None) is None


def test_the_cluster_launchers_bootstrap_config():
    config = {
        "max_workers": 4,
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 2}, "max_workers": 0},
            "big": {"resources": {"CPU": 16}, "min_workers": 0, "max_workers": 4},
        },
    }
    assert growth_from_bootstrap(config).shapes == ({"CPU": 16.0},)
    config["available_node_types"]["big"]["resources"] = {}  # found when the instance starts
    growth = growth_from_bootstrap(config)
    assert growth.can_grow and growth.shapes is None
    assert not growth_from_bootstrap({**config, "max_workers": 0}).can_grow


def test_cluster_growth_skips_sources_that_fail(monkeypatch):
    def broken():
        raise RuntimeError("private API moved")

    monkeypatch.setattr(
        capacity,
        "SOURCES",
        (
            (broken, growth_from_cluster_config),
            (lambda: _v1_status({HEAD_ID: f"node_{HEAD_ID}"}), growth_from_v1_status),
            (lambda: {"max_workers": 2, "available_node_types": {"w": {}}}, growth_from_bootstrap),
        ),
    )
    growth = cluster_growth()
    assert growth.can_grow and "ray_bootstrap_config.yaml" in growth.source
    monkeypatch.setattr(capacity, "SOURCES", ((broken, growth_from_v1_status),))
    assert cluster_growth() == NO_GROWTH


# -- as a user meets it -------------------------------------------------------------------


def _too_big(path, name: str, resources: str):
    study = small_study(path, name, rounds=1, trials=3, epochs=1)
    text = study.read_text().replace("[resources]\n", f"[resources]\n{resources}\n")
    if "gpus" in resources:  # a GPU study trains with torch (else a warning says so)
        text = text.replace("[model]\n", '[model]\nbackend = "torch"\n')
    study.write_text(text)
    return study


def _run(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "hpsearch", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize(
    "resources, line",
    [
        (
            "cpus_per_trial = 4",
            "hpsearch: error: resources.cpus_per_trial = 4 but the largest node has 2 CPUs",
        ),
        (
            "gpus_per_trial = 24",
            "hpsearch: error: resources.gpus_per_trial = 24 but no node has a GPU",
        ),
    ],
    ids=["cpus", "gpus"],
)
def test_a_trial_larger_than_any_node_exits_2_and_writes_nothing(
    tmp_path, ray_local, resources, line
):
    address = ray_local.get_runtime_context().gcs_address
    study = _too_big(tmp_path / "big.toml", "big", resources)
    db = tmp_path / "big.db"
    proc = _run(
        "run", str(study), "--storage", f"sqlite:///{db}", "--address", address, cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith(line), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line, no traceback
    assert not db.exists(), "nothing is written: no database, so no study and no trial"


@pytest.mark.ray
@pytest.mark.slow
def test_starting_ray_locally_with_too_large_a_trial_does_not_hang(tmp_path):
    """The newcomer's case: no --address, Ray started by hpsearch on this machine."""
    study = _too_big(tmp_path / "big.toml", "local", "cpus_per_trial = 64")
    proc = _run("run", str(study), "--quiet", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    # Ray may log a line of its own as it starts; ours is one line, the last.
    ours = [line for line in proc.stderr.splitlines() if line.startswith("hpsearch:")]
    assert len(ours) == 1 and proc.stderr.splitlines()[-1] == ours[0], proc.stderr
    assert ours[0].startswith("hpsearch: error: resources.cpus_per_trial = 64 but the largest")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "hpsearch.db").exists()


@pytest.mark.ray
def test_the_python_api_raises_the_same_error(tmp_path, ray_local):
    from hpsearch.config import load_study
    from hpsearch.runner import run_study

    config = load_study(_too_big(tmp_path / "api.toml", "api", "cpus_per_trial = 4"))
    db = tmp_path / "api.db"
    with pytest.raises(ConfigError, match=r"^resources\.cpus_per_trial = 4 but the largest node"):
        run_study(config, f"sqlite:///{db}")
    assert not db.exists()
