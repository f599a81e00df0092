"""A trial larger than any node on a cluster an autoscaler can grow: ``hpsearch run``
waits, says what it waits for, ends at once on Ctrl-C, and runs once the node comes.

The cluster is a real Ray head with a real autoscaler (v1) and Ray's fake multi-node
provider, which starts each "new node" as another raylet on this machine: a 1-CPU
head, and node type ``big`` (4 CPUs, at most one) that the autoscaler may add.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from hpsearch import records
from tests.hpsearch.studies_for_tests import small_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _autoscaling_config(gcs_port: int) -> dict:
    """The fake multi-node provider's cluster config (what ray.cluster_utils'
    AutoscalingCluster writes, with the head on our own port)."""
    return {
        "cluster_name": "hpsearch-test",
        "max_workers": 1,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": f"127.0.0.1:{gcs_port}",
        },
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "big": {
                "resources": {"CPU": 4},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 1,
            },
        },
        **{
            key: []
            for key in (
                "cluster_synced_files",
                "rsync_exclude",
                "rsync_filter",
                "initialization_commands",
                "setup_commands",
                "head_setup_commands",
                "worker_setup_commands",
                "head_start_ray_commands",
                "worker_start_ray_commands",
            )
        },
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
    }


@pytest.fixture
def autoscaling_head(_ray_session_guard):
    """``ray start --head --block --autoscaling-config`` on free ports; its whole process
    group (the monitor starts the fake nodes) is stopped afterwards."""
    import ray

    if ray.is_initialized():  # this module's drivers are separate processes
        ray.shutdown()
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ha", dir="/tmp")  # short: socket path limit
    config = Path(temp_dir) / "autoscaling.json"
    config.write_text(json.dumps(_autoscaling_config(port)))
    env = dict(
        os.environ,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="disabled",
        RAY_FAKE_CLUSTER="1",
        AUTOSCALER_UPDATE_INTERVAL_S="1",
    )
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            f"--autoscaling-config={config}",
            "--include-dashboard=false",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--ray-client-server-port={_free_port()}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # the GCS answers, and the autoscaler has written its status
            probe = subprocess.run(
                [sys.executable, "-c", _STATUS_PROBE, address],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if probe.returncode == 0 and "ray.head.default" in probe.stdout:
                break
            if time.monotonic() > deadline or head.poll() is not None:
                pytest.fail(f"the autoscaling head did not come up: {probe.stderr[-2000:]}")
            time.sleep(2.0)
        yield address, env
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
            try:
                os.killpg(head.pid, sig)
                head.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(temp_dir, ignore_errors=True)


_STATUS_PROBE = """
import sys, ray
from hpsearch import internals
ray.init(address=sys.argv[1], logging_level="ERROR", include_dashboard=False)
print(internals.ray_v1_status())
"""


_NODES_PROBE = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", include_dashboard=False)
print(json.dumps([(n["NodeID"], n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]]))
"""


def _nodes(address: str, env: dict) -> list[tuple[str, float]]:
    """The cluster's live nodes (id, CPUs), asked from a separate driver."""
    probe = subprocess.run(
        [sys.executable, "-c", _NODES_PROBE, address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [tuple(n) for n in json.loads(probe.stdout.strip().splitlines()[-1])]


def _driver(study: Path, url: str, address: str, env: dict) -> subprocess.Popen[str]:
    argv = ["run", str(study), "--storage", url, "--address", address, "--quiet"]
    return subprocess.Popen(
        [sys.executable, "-m", "hpsearch", *argv],
        cwd=study.parent,
        env=dict(env, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(proc: subprocess.Popen[str], needle: str) -> list[str]:
    lines: list[str] = []
    while not lines or needle not in lines[-1]:
        line = proc.stderr.readline()
        assert line, "".join(lines)
        lines.append(line)
    return lines


def test_a_growing_cluster_waits_for_a_node_that_fits(autoscaling_head, tmp_path):
    address, env = autoscaling_head
    study = small_study(tmp_path / "grow.toml", "grow", rounds=1, trials=3, epochs=1)
    study.write_text(study.read_text().replace("workers = 2\n", "cpus_per_trial = 4\n"))
    db = tmp_path / "grow.db"
    url = f"sqlite:///{db}"

    # Ctrl-C while it waits: ends at once, nothing written.
    waiting = _driver(study, url, address, env)
    try:
        lines = _read_until(waiting, "waiting for the autoscaler")
        assert lines[-1].startswith(
            "hpsearch: resources.cpus_per_trial = 4 but the largest node has 1 CPU; waiting"
        ), lines
        assert "an autoscaler manages node types" in lines[-1] and "Ctrl-C" in lines[-1]
        waiting.send_signal(signal.SIGINT)
        _, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 130, err
    assert not db.exists(), "nothing is written while waiting"

    # Again, this time until the autoscaler's node comes: the study runs there.
    driver = _driver(study, url, address, env)
    try:
        out, err = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, err
    assert "waiting for the autoscaler" in err
    trials = optuna.load_study(study_name="grow", storage=url).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    big = [node for node, cpus in _nodes(address, env) if cpus == 4]
    assert len(big) == 1, "the autoscaler added the 4-CPU node"
    assert {t.user_attrs[records.TRIAL_NODE] for t in trials} == set(big)
    assert "best: trial" in out
