"""optuna-dashboard reads a database made by ``hpsearch run`` as it is.

Runs a small real study once for the module (on the session's local Ray),
starts ``optuna-dashboard`` on it, bound to 127.0.0.1 on a free port, and
checks through its JSON API (``/api/studies``, ``/api/studies/<id>``) that
the study, every trial, its params and its intermediate values (validation
accuracy per epoch) are there. The server is stopped afterwards.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from hpsearch import records
from hpsearch.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]

HOST = "127.0.0.1"
START_TIMEOUT = 30.0

STUDY = """
[study]
name = "dash"
seed = 3
sampler = "random"

[data]
dataset = "digits"
train_samples = 400
val_fraction = 0.2

[model]
hidden_sizes = [16]
epochs = 3
batch_size = 50

[search.lr]
low = 1e-2
high = 1.0
log = true

[search.weight_decay]
low = 1e-8
high = 1e-3
log = true

[search.dropout_ratio]
low = 0.0
high = 0.3

[search.batchnorm]
choices = [true, false]

[narrowing]
rounds = 2
trials_per_round = 4
top_k = 2

[resources]
workers = 2
"""


def _dashboard_command() -> list[str]:
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard (the dev extra) is needed")
    script = Path(sys.executable).with_name("optuna-dashboard")
    found = str(script) if script.exists() else shutil.which("optuna-dashboard")
    if found is None:
        pytest.skip("the optuna-dashboard command is not installed")
    return [found]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _get(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


@pytest.fixture(scope="module")
def study_db(tmp_path_factory, ray_local) -> str:
    root = tmp_path_factory.mktemp("dashboard")
    (root / "dash.toml").write_text(STUDY)
    url = f"sqlite:///{root / 'hpsearch.db'}"
    assert main(["run", str(root / "dash.toml"), "--storage", url, "--quiet"]) == 0
    return url


@pytest.fixture(scope="module")
def dashboard(study_db, tmp_path_factory) -> Iterator[str]:
    """``optuna-dashboard URL --host 127.0.0.1 --port P``; yields its base URL."""
    command = _dashboard_command()
    log = tmp_path_factory.mktemp("dashboard_log") / "server.log"
    for _attempt in range(3):  # another process may take the free port first
        port = _free_port()
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [*command, study_db, "--host", HOST, "--port", str(port), "--quiet"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        base = f"http://{HOST}:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                _get(base, "/api/meta")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        else:
            proc.terminate()
            proc.wait(timeout=10)
            if time.monotonic() >= deadline:
                pytest.fail(
                    f"optuna-dashboard did not answer in {START_TIMEOUT:.0f} s: "
                    f"{log.read_text()[-2000:]}"
                )
            continue  # it exited (port taken?): try another port
        try:
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return
    pytest.fail(f"optuna-dashboard exited at start three times: {log.read_text()[-2000:]}")


def test_dashboard_lists_the_study(dashboard, study_db):
    studies = _get(dashboard, "/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["dash"]
    (summary,) = studies
    assert [d.lower() for d in summary["directions"]] == ["maximize"]
    attrs = {a["key"]: a["value"] for a in summary["user_attrs"]}
    assert attrs[records.METRIC_KEY] == "val_accuracy"
    assert records.round_key(0) in attrs and records.round_key(1) in attrs


def test_dashboard_serves_every_trial_with_params_and_intermediate_values(dashboard, study_db):
    study = optuna.load_study(study_name="dash", storage=study_db)
    expected = {t.number: t for t in study.get_trials()}
    assert len(expected) == 8  # 2 rounds x 4 trials
    study_id = _get(dashboard, "/api/studies")["study_summaries"][0]["study_id"]
    detail = _get(dashboard, f"/api/studies/{study_id}")
    assert detail["name"] == "dash"
    served = {t["number"]: t for t in detail["trials"]}
    assert served.keys() == expected.keys()
    for number, trial in expected.items():
        got = served[number]
        assert got["state"].upper() == trial.state.name
        assert got["values"] == [trial.value]
        params = {p["name"]: p["param_external_value"] for p in got["params"]}
        assert params == {k: str(v) for k, v in trial.params.items()}
        assert set(params) == {"lr", "weight_decay", "dropout_ratio", "batchnorm"}
        steps = [(v["step"], v["value"]) for v in got["intermediate_values"]]
        assert steps == sorted(trial.intermediate_values.items())
        assert [s for s, _ in steps] == [1, 2, 3]  # validation accuracy after each epoch
        user_attrs = {a["key"] for a in got["user_attrs"]}
        assert {records.TRIAL_ROUND, records.TRIAL_SEED, records.TRIAL_CURVE} <= user_attrs
    assert detail["has_intermediate_values"] is True
    assert {p["name"] for p in detail["union_search_space"]} == {
        "lr",
        "weight_decay",
        "dropout_ratio",
        "batchnorm",
    }
    best = detail["best_trials"][0]
    assert best["values"] == [study.best_value]
