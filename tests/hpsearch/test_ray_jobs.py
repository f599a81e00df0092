"""A study submitted as a Ray job to a local head finishes and records its results."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hpsearch import results
from tests.hpsearch.studies_for_tests import small_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    """``ray start --head --block`` on free ports, stopped (its whole group) afterwards."""
    port, dashboard = _free_port(), _free_port()
    # A short temp dir: Ray's socket paths must stay under the 107-byte limit.
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    # Loopback-only test head: token authentication off for it and its client.
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled")
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            # Every other fixed default port may be held by another Ray on this machine.
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
    url = f"http://127.0.0.1:{dashboard}"
    previous_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + 90
        while True:
            try:
                client = JobSubmissionClient(url)
                client.list_jobs()
                break
            except Exception:
                if time.monotonic() > deadline or head.poll() is not None:
                    print(f"the Ray head did not answer at {url}", file=sys.stderr)
                    pytest.fail("the Ray head did not come up within 90 s")
                time.sleep(1.0)
        yield client, env
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
        try:  # anything the head left in its process group
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(temp_dir, ignore_errors=True)
        if previous_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous_mode


def test_a_study_submitted_as_a_ray_job_finishes(ray_head, tmp_path):
    from ray.job_submission import JobStatus

    client, _env = ray_head
    study = small_study(tmp_path / "job.toml", "job", rounds=2, trials=4)
    db = tmp_path / "job.db"
    submit_until = time.monotonic() + 90
    while True:  # the head's job agent takes a few seconds to come up
        try:
            job = client.submit_job(
                entrypoint=(
                    f"{sys.executable} -m hpsearch run {study} --storage sqlite:///{db} "
                    "--address auto --quiet"
                ),
                runtime_env={
                    "env_vars": {
                        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                        "RAY_AUTH_MODE": "disabled",
                    }
                },
            )
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > submit_until:
                raise
            time.sleep(1.0)
    deadline = time.monotonic() + 240
    status = client.get_job_status(job)
    while status not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, client.get_job_logs(job)[-2000:]
        time.sleep(1.0)
        status = client.get_job_status(job)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    df = results.trials(f"sqlite:///{db}", "job")
    assert len(df) == 8
    assert (df["state"] == "COMPLETE").all()
    assert "best: trial" in logs
