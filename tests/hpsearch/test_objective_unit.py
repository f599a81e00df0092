"""A user's objective without Ray: the study file, the trial, what a function or a
command gives back, and the checks made before anything runs."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

import hpsearch
from hpsearch import objective
from hpsearch.config import Choice, IntRange, load_study, parse_study
from hpsearch.errors import ConfigError
from hpsearch.objective import Trial, UserCode, run_user_trial
from hpsearch.worker import TrialTask

FUNCTION_STUDY = """
[study]
name = "mine"
metric = "score"
direction = "maximize"

[objective]
function = "model:train"

[params]
epochs = 3

[search.x]
low = 0.0
high = 1.0

[search.width]
low = 4
high = 64
int = true
log = true

[search.kind]
choices = ["a", "b"]
"""


def _task(number: int = 0, **params) -> TrialTask:
    return TrialTask(
        number=number, trial_id=number, round=0, params=params, seed=11, config=None, metric="score"
    )


def _code(folder: Path, target, kind: str = "function", grace: float = 5.0) -> UserCode:
    return UserCode(
        kind=kind,
        target=target,
        metric="score",
        constants={"epochs": 3},
        folder=str(folder),
        kill_grace=grace,
    )


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


# --------------------------------------------------------------------------- the study file


def test_a_user_study_takes_any_metric_parameter_names_ints_and_categoricals():
    config = parse_study(FUNCTION_STUDY)
    assert config.objective.kind == "function" and not config.builtin
    assert config.metric == "score" and config.direction == "maximize"
    assert config.space["width"] == IntRange(low=4, high=64, log=True, step=1)
    assert config.space["kind"] == Choice(choices=("a", "b"))
    assert dict(config.params) == {"epochs": 3}
    assert config.data is None and config.resources.pack_size == 1


def test_a_metric_that_is_not_built_in_needs_a_direction():
    text = FUNCTION_STUDY.replace('direction = "maximize"\n', "")
    with pytest.raises(ConfigError, match=r"study.direction: missing; metric 'score'"):
        parse_study(text)
    # a built-in metric name implies its direction
    config = parse_study(text.replace('metric = "score"', 'metric = "val_loss"'))
    assert config.direction == "minimize"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('function = "model:train"', 'function = "model"'), r"objective.function: got 'model'"),
        (
            ('function = "model:train"', 'function = "m:t"\ncommand = ["x"]'),
            r"objective: got both of function and command",
        ),
        (('function = "model:train"', "command = []"), r"objective.command: got \[\]"),
        (("[params]", "[model]"), r"model: \[model\] is for the built-in objective"),
        (("[params]", "[resources]\npack_size = 4\n[params]"), r"resources.pack_size: got 4"),
        (("[params]", "[final_eval]\nenabled = true\n[params]"), r"final_eval.enabled"),
        (("epochs = 3", "x = 3"), r"search.x: x is also a constant in \[params\]"),
    ],
)
def test_bad_objective_tables_name_the_key(edit, message):
    with pytest.raises(ConfigError, match=message):
        parse_study(FUNCTION_STUDY.replace(*edit))


def test_the_built_in_study_still_rejects_parameters_the_trainer_lacks():
    text = """
[study]
name = "b"
[data]
dataset = "digits"
[search.width]
low = 1
high = 4
int = true
"""
    with pytest.raises(ConfigError, match=r"search.width: unknown trainer option"):
        parse_study(text)
    builtin = text.replace("[search.width]\nlow = 1\nhigh = 4\nint = true\n", "")
    builtin += "[search.lr]\nlow = 0.1\nhigh = 1.0\n"
    assert parse_study(builtin).builtin
    with pytest.raises(ConfigError, match=r"params: \[params\] holds constants"):
        parse_study(builtin + "[params]\na = 1\n")


def test_load_study_knows_its_folder(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(FUNCTION_STUDY)
    assert load_study(path).folder == str(tmp_path.resolve())


# --------------------------------------------------------------------------- the trial


def test_report_records_points_and_asks_the_pruner():
    asked = []

    def reporter(number, step, value):
        asked.append((number, step, value))
        return step >= 2

    trial = Trial(4, 99, {"x": 1}, "score", reporter)
    trial.report(0.5, step=1, train_loss=2.0)
    assert not trial.should_prune()
    trial.report(0.6, 2)
    assert trial.should_prune()
    assert trial.points == [{"step": 1, "score": 0.5, "train_loss": 2.0}, {"step": 2, "score": 0.6}]
    assert asked == [(4, 1, 0.5), (4, 2, 0.6)]
    with pytest.raises(TypeError, match="step must be an integer >= 0"):
        trial.report(0.1, step=1.5)


# --------------------------------------------------------------------------- a function


MODEL = """
import math
import hpsearch

def train(params, trial):
    for step in range(1, params["epochs"] + 1):
        trial.report(params["x"] * step, step, loss=1.0 / step)
        if trial.should_prune():
            raise hpsearch.TrialPruned()
    return {"score": params["x"], "other": 2}

def as_float(params, trial):
    return params["x"]

def nan(params, trial):
    return math.nan

def wrong_dict(params, trial):
    return {"accuracy": 1.0}

def raises(params, trial):
    trial.report(0.1, 1)
    raise ValueError(f"bad width {params['width']}")

def optuna_style(params, trial):
    import optuna
    for step in range(1, 4):
        trial.report(0.1 * step, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return 0.3
"""


@pytest.fixture
def model_dir(tmp_path):
    _write(tmp_path, "model.py", MODEL)
    sys.modules.pop("model", None)
    yield tmp_path
    sys.modules.pop("model", None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def test_a_function_trial_completes_with_its_curve(model_dir):
    out = run_user_trial(_task(x=0.25, width=8), _code(model_dir, "model:train"))
    assert out.state == "COMPLETE" and out.value == 0.25
    assert out.history["points"][-1] == {"step": 3, "score": 0.75, "loss": pytest.approx(1 / 3)}
    assert out.history["returned"] == {"score": 0.25, "other": 2.0}
    assert run_user_trial(_task(x=0.5), _code(model_dir, "model:as_float")).value == 0.5


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("model:nan", r"^metric score is nan$"),
        ("model:wrong_dict", r"metric score missing: the objective returned a dict with accuracy"),
        ("model:raises", r"^error: ValueError: bad width 8$"),
    ],
)
def test_a_function_that_fails_is_a_failed_trial_with_the_reason(model_dir, target, reason):
    out = run_user_trial(_task(x=0.5, width=8), _code(model_dir, target))
    assert out.state == "FAIL" and out.value is None
    assert re_search(reason, out.fail_reason)


def re_search(pattern: str, text: str | None) -> bool:
    import re

    return text is not None and re.search(pattern, text) is not None


def test_pruned_by_hpsearch_or_optuna_trial_pruned_with_the_partial_curve(model_dir):
    def prune_at_two(number, step, value):
        return step == 2

    out = run_user_trial(_task(x=0.5), _code(model_dir, "model:train"), reporter=prune_at_two)
    assert out.state == "PRUNED" and out.value == 1.0  # the last reported value
    assert [p["step"] for p in out.history["points"]] == [1, 2]
    out = run_user_trial(_task(), _code(model_dir, "model:optuna_style"), reporter=prune_at_two)
    assert out.state == "PRUNED" and out.value == pytest.approx(0.2)


def test_an_optuna_objective_ports_by_changing_its_signature_only(model_dir):
    """The body of an Optuna objective (report, should_prune, optuna.TrialPruned) runs
    unchanged; only ``objective(trial)`` became ``objective(params, trial)``."""

    def optuna_objective(trial):  # as written for Optuna, with suggest_* swapped for params
        x = trial.params["x"]
        value = 0.0
        for step in range(5):
            value = x * (step + 1)
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"x": 0.5})
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), optuna_objective(t))[1], n_trials=1)
    assert study.best_value == 2.5

    def ported(params, trial):  # the signature changed; the body is the same
        return optuna_objective(trial)

    module = type(sys)("ported_objective")
    module.train = ported
    sys.modules["ported_objective"] = module
    try:
        out = run_user_trial(_task(x=0.5), _code(model_dir, "ported_objective:train"))
        pruned = run_user_trial(
            _task(x=0.5), _code(model_dir, "ported_objective:train"), reporter=lambda *a: True
        )
    finally:
        del sys.modules["ported_objective"]
    assert out.state == "COMPLETE" and out.value == 2.5
    assert pruned.state == "PRUNED" and len(pruned.history["points"]) == 1


# --------------------------------------------------------------------------- a command


SCRIPT = """
import json, os, signal, sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
mark = os.path.join(args["marks"], os.environ["HPSEARCH_TRIAL_NUMBER"])
def on_term(signum, frame):
    open(mark + ".term", "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if args.get("stubborn") == "true" else on_term)
print("starting", flush=True)
for step in range(1, int(args["epochs"]) + 1):
    seed = int(os.environ["HPSEARCH_SEED"])
    print(json.dumps({"step": step, "score": float(args["x"]) * step, "seed": seed}), flush=True)
    time.sleep(float(args.get("pause", 0)))
if args.get("fail") == "true":
    print("Traceback ...\\nRuntimeError: out of memory", file=sys.stderr)
    sys.exit(3)
open(mark + ".done", "w").close()
"""


@pytest.fixture
def script_dir(tmp_path):
    _write(tmp_path, "train.py", SCRIPT)
    (tmp_path / "marks").mkdir()
    return tmp_path


def _command_task(script_dir: Path, number: int = 0, **params) -> TrialTask:
    return _task(number, marks=str(script_dir / "marks"), **params)


def test_a_command_reports_json_lines_and_its_last_metric_is_the_value(script_dir):
    code = _code(script_dir, ("python", "train.py"), kind="command")
    out = run_user_trial(_command_task(script_dir, x=0.5), code)
    assert out.state == "COMPLETE" and out.value == 1.5
    points = out.history["points"]
    assert [p["step"] for p in points] == [1, 2, 3]  # epochs=3 from the constants
    assert {p["seed"] for p in points} == {11}  # HPSEARCH_SEED
    assert (script_dir / "marks" / "0.done").exists()


def test_a_failing_command_keeps_the_exit_code_and_the_tails(script_dir):
    code = _code(script_dir, ("python", "train.py"), kind="command")
    out = run_user_trial(_command_task(script_dir, x=0.5, fail=True), code)
    assert out.state == "FAIL"
    assert out.fail_reason == "command failed (exit code 3): RuntimeError: out of memory"
    assert out.history["stderr_tail"].endswith("RuntimeError: out of memory")
    assert out.history["stdout_tail"].startswith("starting")
    assert len(out.history["points"]) == 3


def test_a_pruned_command_gets_sigterm_and_stops_with_its_partial_curve(script_dir):
    code = _code(script_dir, ("python", "train.py"), kind="command")
    start = time.monotonic()
    out = run_user_trial(
        _command_task(script_dir, x=0.5, epochs=50, pause=0.2),
        code,
        reporter=lambda number, step, value: step == 2,
    )
    assert out.state == "PRUNED" and out.value == 1.0
    assert len(out.history["points"]) == 2
    assert time.monotonic() - start < 5.0
    assert (script_dir / "marks" / "0.term").exists()  # it got SIGTERM
    assert not (script_dir / "marks" / "0.done").exists()


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(script_dir):
    code = _code(script_dir, ("python", "train.py"), kind="command", grace=0.3)
    start = time.monotonic()
    out = run_user_trial(
        _command_task(script_dir, x=0.5, epochs=100, pause=0.1, stubborn=True),
        code,
        reporter=lambda number, step, value: step == 1,
    )
    assert out.state == "PRUNED"
    assert time.monotonic() - start < 4.0
    assert not (script_dir / "marks" / "0.done").exists()


def test_a_command_without_the_metric_fails_saying_so(script_dir):
    _write(script_dir, "quiet.py", "print('hello')\n")
    out = run_user_trial(_task(), _code(script_dir, ("python", "quiet.py"), kind="command"))
    assert out.state == "FAIL"
    assert out.fail_reason == "metric score missing: no JSON line on stdout held it"
    assert out.history["stdout_tail"] == "hello"


def test_parameters_are_appended_as_name_value():
    argv = objective.command_argv(("prog", "--fixed", "1"), {"lr": 0.5, "bn": True, "k": "a"})
    assert argv == ["prog", "--fixed", "1", "--lr=0.5", "--bn=true", "--k=a"]


# --------------------------------------------------------------------------- driver checks


def _config(folder: Path, objective_table: str):
    path = folder / "study.toml"
    path.write_text(
        FUNCTION_STUDY.replace('function = "model:train"', objective_table).replace(
            "[params]\nepochs = 3\n", ""
        )
    )
    return load_study(path)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('function = "nosuch:train"', r"no module 'nosuch' in "),
        ('function = "model:nosuch"', r"module model has no 'nosuch'"),
        ('function = "broken:train"', r"importing broken failed: ZeroDivisionError"),
        ('command = ["./train.sh"]', r"objective.command: got './train.sh'; not an executable"),
        ('command = ["no-such-program-xyz"]', r"not an executable file on PATH"),
    ],
)
def test_unusable_objectives_are_one_config_error(model_dir, table, message):
    _write(model_dir, "broken.py", "x = 1 / 0\n")
    _write(model_dir, "train.sh", "#!/bin/sh\n")  # not chmod +x
    with pytest.raises(ConfigError, match=message):
        objective.check_objective(_config(model_dir, table))


def test_usable_objectives_pass_the_checks(model_dir):
    script = _write(model_dir, "train.sh", "#!/bin/sh\n")
    script.chmod(0o755)
    objective.check_objective(_config(model_dir, 'function = "model:train"'))
    objective.check_objective(_config(model_dir, 'command = ["./train.sh"]'))
    objective.check_objective(_config(model_dir, 'command = ["python", "train.py"]'))


def test_a_study_folder_too_large_to_ship_is_refused(tmp_path, monkeypatch):
    (tmp_path / "data.bin").write_bytes(b"0" * 4096)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "pack").write_bytes(b"0" * 100_000)  # excluded
    monkeypatch.setattr(objective, "MAX_FOLDER_BYTES", 2048)
    with pytest.raises(ConfigError, match=r"holds 0.0 MB, more than the 0 MB.*data.bin"):
        objective.folder_size(str(tmp_path))


def test_the_shipped_folder_unpacks_the_same_files_and_modes(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "m.py").write_text("X = 1\n")
    run = src / "run.sh"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o755)
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "junk.pyc").write_bytes(b"x")
    digest, archive = objective.pack_folder(str(src))
    assert objective.pack_folder(str(src))[0] == digest  # the same folder, the same digest
    where = Path(objective.unpack_folder(digest + "-test" + str(os.getpid()), lambda: archive))
    assert (where / "pkg" / "m.py").read_text() == "X = 1\n"
    assert os.access(where / "run.sh", os.X_OK)
    assert not (where / "__pycache__").exists()


def test_hpsearch_exports_the_names_an_objective_needs():
    assert hpsearch.TrialPruned is objective.TrialPruned
    assert hpsearch.Trial is objective.Trial


def test_a_command_dies_with_the_worker_that_started_it(script_dir):
    """A cancelled trial's worker is killed by Ray; its command must not run on."""
    import subprocess

    marks = str(script_dir / "marks")
    child = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from hpsearch.objective import UserCode, run_user_trial
from hpsearch.worker import TrialTask
task = TrialTask(number=7, trial_id=7, round=0, seed=1, config=None, metric="score",
                 params={{"x": 0.5, "epochs": 1000, "pause": 0.05, "marks": {marks!r}}})
run_user_trial(task, UserCode(kind="command", target=("python", "train.py"), metric="score",
                              folder={str(script_dir)!r}))
"""
    worker = subprocess.Popen([sys.executable, "-c", child])
    time.sleep(3.0)  # the command is running
    worker.kill()
    worker.wait()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not (script_dir / "marks" / "7.term").exists():
        time.sleep(0.1)
    assert (script_dir / "marks" / "7.term").exists()  # it got SIGTERM with its worker gone
