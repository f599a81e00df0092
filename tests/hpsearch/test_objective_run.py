"""A user's objective end to end through ``hpsearch run`` on local Ray: a function
and a command, pruning, failures as the user sees them, and the Python API."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import optuna
import pytest

import hpsearch
from hpsearch import records, results
from hpsearch.cli import main
from hpsearch.space import box_from_record

pytestmark = [pytest.mark.ray]

OBJ = """
import math, time
import hpsearch

def train(params, trial):
    # Best near x = 0.8, width = 8, kind = "good"; a clear signal over a small noise.
    penalty = {"good": 0.0, "bad": 0.3, "ugly": 0.5}[params["kind"]]
    score = 1.0 - abs(params["x"] - 0.8) - penalty - 0.05 * abs(math.log2(params["width"]) - 3)
    for step in range(1, params["steps"] + 1):
        time.sleep(params.get("pause", 0.0))
        trial.report(score * step / params["steps"], step, loss=1.0 / step)
        if trial.should_prune():
            raise hpsearch.TrialPruned()
    return {"score": score, "width_seen": params["width"]}
"""

STUDY = """
[study]
name = "{name}"
metric = "score"
direction = "maximize"
seed = 3
{study_extra}

[objective]
{objective}
max_steps = {steps}

[params]
steps = {steps}
{params_extra}

[search.x]
low = 0.0
high = 1.0

[search.width]
low = 1
high = 64
int = true
log = true

[search.kind]
choices = ["good", "bad", "ugly"]

[narrowing]
rounds = {rounds}
trials_per_round = {per_round}
top_k = 3

[resources]
workers = 2
"""


def _study(
    folder: Path,
    name: str,
    *,
    objective: str = 'function = "obj:train"',
    steps: int = 4,
    rounds: int = 3,
    per_round: int = 12,
    study_extra: str = "",
    params_extra: str = "",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "obj.py").write_text(OBJ)
    path = folder / f"{name}.toml"
    path.write_text(
        STUDY.format(
            name=name,
            objective=objective,
            steps=steps,
            rounds=rounds,
            per_round=per_round,
            study_extra=study_extra,
            params_extra=params_extra,
        )
    )
    return path


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


@pytest.fixture(scope="module")
def function_run(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("fn")
    path = _study(root / "code", "fn")
    url = f"sqlite:///{root / 'r.db'}"
    code = main(["run", str(path), "--storage", url, "--quiet"])
    assert code == 0
    return url


def test_a_function_study_runs_every_round_and_records_curves(function_run):
    url = function_run
    trials = _trials(url, "fn")
    assert len(trials) == 36
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:
        curve = t.user_attrs[records.TRIAL_CURVE]
        assert curve["step"] == [1, 2, 3, 4]
        assert curve["loss"] == pytest.approx([1.0, 0.5, 1 / 3, 0.25])
        assert t.intermediate_values[4] == pytest.approx(t.value)  # the study metric per step
        assert t.user_attrs[records.TRIAL_BACKEND] == "function"
        assert t.user_attrs[records.TRIAL_RETURNED]["width_seen"] == t.params["width"]
        assert isinstance(t.params["width"], int) and t.params["kind"] in ("good", "bad", "ugly")


def test_results_read_a_function_study(function_run):
    url = function_run
    table = results.trials(url, "fn")
    assert len(table) == 36 and {"x", "width", "kind"} <= set(table.columns)
    long = results.metric_curves(url, "fn")
    assert set(long["metric"]) == {"score", "loss"}
    assert len(long) == 36 * 4 * 2
    assert results.curves(url, "fn").empty  # the built-in objective's columns do not apply
    best = results.best(url, "fn")
    assert best["kind"].iloc[0] == "good"


def test_the_report_of_a_function_study_draws_what_applies(function_run, tmp_path):
    from hpsearch.report import write_report

    page = write_report(function_run, "fn", tmp_path / "report")
    html = page.read_text()
    assert (tmp_path / "report" / "rounds.png").exists()  # the metric per round
    assert "hpsearch.results.metric_curves" in html  # why the accuracy curves are left out
    assert "score" in html


def test_the_narrowing_works_on_an_int_and_a_categorical(function_run):
    url = function_run
    attrs = optuna.load_study(study_name="fn", storage=url).user_attrs
    recs = [
        records.RoundRecord.from_dict(attrs[k])
        for k in sorted(attrs)
        if k.startswith(records.ROUND_KEY_PREFIX)
    ]
    assert len(recs) == 3
    first, last = box_from_record(recs[0].box), box_from_record(recs[-1].box)
    assert recs[0].box["width"]["int"] is True
    # "bad" and "ugly" lose by 0.3 and more: the boxes keep "good" and lose a worse choice.
    assert "good" in last["kind"].choices
    assert len(last["kind"].choices) < len(first["kind"].choices)
    assert (last["width"].low, last["width"].high) != (first["width"].low, first["width"].high)
    trials = {t.number: t for t in _trials(url, "fn")}
    for rec in recs:  # each round sampled inside its box
        box = box_from_record(rec.box)
        for t in trials.values():
            if t.user_attrs[records.TRIAL_ROUND] == rec.index:
                assert box["width"].low <= t.params["width"] <= box["width"].high
                assert t.params["kind"] in box["kind"].choices


def test_pruning_stops_function_trials_as_pruned_with_partial_curves(tmp_path, ray_local):
    path = _study(
        tmp_path / "code",
        "pr",
        steps=8,
        rounds=1,
        per_round=16,
        study_extra='pruner = "median"\nprune_after = 2',
        params_extra="pause = 0.02",
    )
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert main(["run", str(path), "--storage", url, "--quiet"]) == 0
    trials = _trials(url, "pr")
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the median pruner stopped none of 16 trials"
    for t in pruned:  # judged from step 2 on (the last step too)
        steps = t.user_attrs[records.TRIAL_CURVE]["step"]
        assert 2 <= len(steps) <= 8 and t.user_attrs[records.TRIAL_STOPPED] is True
        assert t.value == pytest.approx(t.intermediate_values[max(t.intermediate_values)])
    assert min(len(t.user_attrs[records.TRIAL_CURVE]["step"]) for t in pruned) < 8


SCRIPT = """
import json, os, signal, sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
marks = args["marks"]
number = os.environ["HPSEARCH_TRIAL_NUMBER"]
def on_term(signum, frame):
    open(os.path.join(marks, number + ".term"), "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
if args["kind"] == "ugly" and args.get("crash") == "true":
    print("ValueError: ugly is not supported", file=sys.stderr)
    sys.exit(2)
score = 1.0 - abs(float(args["x"]) - 0.8)
for step in range(1, int(args["steps"]) + 1):
    seed = int(os.environ["HPSEARCH_SEED"])
    print(json.dumps({"step": step, "score": score * step, "seed": seed}))
    sys.stdout.flush()
    time.sleep(float(args["pause"]))
open(os.path.join(marks, number + ".done"), "w").close()
"""


def _command_study(tmp_path: Path, name: str, **kw) -> tuple[Path, Path]:
    marks = tmp_path / "marks"
    marks.mkdir()
    folder = tmp_path / "code"
    path = _study(
        folder,
        name,
        objective='command = ["python", "train.py"]',
        params_extra=f'marks = "{marks}"\n' + kw.pop("params_extra", ""),
        **kw,
    )
    (folder / "train.py").write_text(textwrap.dedent(SCRIPT))
    return path, marks


def test_a_command_study_reads_json_lines_and_keeps_the_failures_stderr(tmp_path, ray_local):
    path, marks = _command_study(
        tmp_path, "cmd", steps=3, rounds=1, per_round=6, params_extra="pause = 0\ncrash = true"
    )
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert main(["run", str(path), "--storage", url, "--quiet"]) == 0
    trials = _trials(url, "cmd")
    assert len(trials) == 6
    for t in trials:
        if t.params["kind"] == "ugly":
            assert t.state == optuna.trial.TrialState.FAIL
            reason = t.user_attrs[records.TRIAL_FAIL_REASON]
            assert reason == "command failed (exit code 2): ValueError: ugly is not supported"
            assert "ugly is not supported" in t.user_attrs[records.TRIAL_STDERR_TAIL]
        else:
            assert t.state == optuna.trial.TrialState.COMPLETE
            assert t.value == pytest.approx(3 * (1 - abs(t.params["x"] - 0.8)))
            assert t.user_attrs[records.TRIAL_CURVE]["step"] == [1, 2, 3]
            assert (
                t.user_attrs[records.TRIAL_CURVE]["seed"]
                == [float(t.user_attrs[records.TRIAL_SEED])] * 3
            )
            assert (marks / f"{t.number}.done").exists()
    assert any(t.params["kind"] == "ugly" for t in trials), "seed 3 samples no ugly trial"


def test_pruning_a_command_stops_its_process(tmp_path, ray_local):
    path, marks = _command_study(
        tmp_path,
        "cmdp",
        steps=10,
        rounds=1,
        per_round=12,
        study_extra='pruner = "median"\nprune_after = 2',
        params_extra="pause = 0.05",
    )
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert main(["run", str(path), "--storage", url, "--quiet"]) == 0
    trials = _trials(url, "cmdp")
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the median pruner stopped none of 12 trials"
    assert min(len(t.user_attrs[records.TRIAL_CURVE]["step"]) for t in pruned) < 10
    for t in pruned:
        assert (marks / f"{t.number}.term").exists()  # the process got SIGTERM
        assert not (marks / f"{t.number}.done").exists()  # and did not run on


@pytest.mark.parametrize(
    ("objective", "message"),
    [
        ('function = "nosuch:train"', "no module 'nosuch'"),
        ('function = "obj:nosuch"', "module obj has no 'nosuch'"),
        ('command = ["./missing.sh"]', "not an executable file"),
    ],
)
def test_an_unusable_objective_is_one_line_exit_2_and_nothing_written(
    tmp_path, capsys, objective, message
):
    path = _study(tmp_path / "code", "bad", objective=objective)
    db = tmp_path / "r.db"
    code = main(["run", str(path), "--storage", f"sqlite:///{db}", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("hpsearch: error: ") and message in err[0]
    assert not db.exists()


def test_every_first_round_trial_failing_stops_the_study_with_one_line(tmp_path, capsys, ray_local):
    folder = tmp_path / "code"
    path = _study(folder, "allfail", rounds=3, per_round=4)
    (folder / "obj.py").write_text("def train(params, trial):\n    raise KeyError('data/x.csv')\n")
    url = f"sqlite:///{tmp_path / 'r.db'}"
    code = main(["run", str(path), "--storage", url, "--quiet"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hpsearch")]
    assert code == 1
    assert err[-1] == (
        "hpsearch: error: every trial of round 1 failed (4); the first, trial 0: "
        "error: KeyError: 'data/x.csv'"
    )
    trials = _trials(url, "allfail")
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.FAIL for t in trials)


def test_a_nan_metric_fails_that_trial_and_the_study_goes_on(tmp_path, ray_local):
    folder = tmp_path / "code"
    path = _study(folder, "nan", rounds=1, per_round=8)
    (folder / "obj.py").write_text(
        "def train(params, trial):\n    return float('nan') if params['x'] < 0.5 else params['x']\n"
    )
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert main(["run", str(path), "--storage", url, "--quiet"]) == 0
    trials = _trials(url, "nan")
    bad = [t for t in trials if t.params["x"] < 0.5]
    assert bad and len(bad) < 8 and len(trials) == 8
    for t in trials:
        if t.params["x"] < 0.5:
            assert t.state == optuna.trial.TrialState.FAIL
            assert t.user_attrs[records.TRIAL_FAIL_REASON] == "metric score is nan"
        else:
            assert t.state == optuna.trial.TrialState.COMPLETE


def test_the_python_api_runs_a_study_file_and_records_it(tmp_path, ray_local):
    path = _study(tmp_path / "code", "api", rounds=2, per_round=6)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    result = hpsearch.run(path, storage=url)
    assert len(result.rounds) == 2 and result.best_trial is not None
    attrs = optuna.load_study(study_name="api", storage=url).user_attrs
    assert attrs[records.STUDY_FILE_KEY] == path.read_text()
    assert attrs[records.METRIC_KEY] == "score"
    assert results.study_info(url, "api").metric == "score"
    assert os.fspath(path)  # the file itself is unchanged
