"""End to end through the CLI: a real study on the digits data, on local Ray."""

from __future__ import annotations

import math
import sqlite3

import optuna
import pytest

from hpsearch import records, results
from hpsearch.cli import main
from hpsearch.space import box_from_record, contains, inside

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STUDY = """
[study]
name = "e2e"
seed = 7
sampler = "random"

[data]
dataset = "digits"
train_samples = 600
val_fraction = 0.2

[model]
hidden_sizes = [32, 32]
epochs = 3
batch_size = 50
optimizer = "sgd"

[search.lr]
low = 1e-3
high = 1.0
log = true

[search.weight_decay]
low = 1e-8
high = 1e-2
log = true

[search.dropout_ratio]
low = 0.0
high = 0.5

[search.batchnorm]
choices = [true, false]

[narrowing]
rounds = 3
trials_per_round = 8
top_k = 3
margin = 0.1

[resources]
workers = 2
"""


@pytest.fixture(scope="module")
def study_run(tmp_path_factory, ray_local):
    """Run the study once for the module; tests read what it recorded."""
    root = tmp_path_factory.mktemp("e2e")
    study_file = root / "e2e.toml"
    study_file.write_text(STUDY)
    url = f"sqlite:///{root / 'results.db'}"
    code = main(["run", str(study_file), "--storage", url, "--quiet"])
    assert code == 0
    return study_file, url


def _trials(url: str, name: str = "e2e") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def test_each_round_has_exactly_its_trials(study_run):
    _, url = study_run
    trials = _trials(url)
    rounds = results.rounds(url, "e2e")
    assert len(rounds) >= 2
    for r in range(len(rounds)):
        in_round = [t for t in trials if t.user_attrs[records.TRIAL_ROUND] == r]
        assert len(in_round) == 8
        assert all(t.state.is_finished() for t in in_round)
    assert len(trials) == 8 * len(rounds)
    assert len({t.number for t in trials}) == len(trials)


def test_boxes_follow_the_recorded_decisions_and_contain_their_round_best(study_run):
    _, url = study_run
    study = optuna.load_study(study_name="e2e", storage=url)
    attrs = study.user_attrs
    recs = [
        records.RoundRecord.from_dict(attrs[k])
        for k in sorted(attrs)
        if k.startswith(records.ROUND_KEY_PREFIX)
    ]
    by_number = {t.number: t for t in study.get_trials()}
    first_box = box_from_record(recs[0].box)
    previous = None
    for rec in recs:
        box = box_from_record(rec.box)
        assert inside(box, first_box)  # no hard limits: never past the study's ranges
        if previous is not None:
            assert rec.box == previous.next_box, f"round {rec.index} is not the decided box"
            if previous.decision == "shrink":
                assert inside(box, box_from_record(previous.box))
        assert rec.decision in ("shrink", "hold", "grow", "slide", "restart") and rec.reason
        assert rec.top_trials, "every round keeps its top trials"
        best = by_number[rec.top_trials[0]]
        assert best.value == pytest.approx(rec.best)
        assert contains(box, best.params)
        for number in rec.top_trials:
            assert by_number[number].user_attrs[records.TRIAL_ROUND] == rec.index
        for number in rec.evidence.get("top", []):  # the trials that spanned the next box
            assert contains(box_from_record(rec.next_box), by_number[number].params)
        previous = rec
    # The narrowing actually narrowed: digits learns clearly, so the lr range shrank.
    first, last = box_from_record(recs[0].box)["lr"], box_from_record(recs[-1].box)["lr"]
    assert math.log10(last.high / last.low) < math.log10(first.high / first.low)


def test_curves_have_one_row_per_epoch_and_split(study_run):
    _, url = study_run
    trials = results.trials(url, "e2e")
    curves = results.curves(url, "e2e")
    assert list(curves.columns) == ["trial", "epoch", "split", "loss", "accuracy"]
    complete = trials[trials["state"] == "COMPLETE"]
    for number in complete["number"]:
        rows = curves[curves["trial"] == number]
        assert sorted(rows["epoch"].unique()) == [1, 2, 3]
        assert len(rows) == 3 * 2  # one row per epoch per split
    # The metric is the final epoch's validation accuracy.
    one = complete.iloc[0]
    last_val = curves[
        (curves["trial"] == one["number"]) & (curves["epoch"] == 3) & (curves["split"] == "val")
    ]["accuracy"].item()
    assert one["value"] == pytest.approx(last_val)


def test_trials_record_seed_round_node_backend(study_run):
    _, url = study_run
    df = results.trials(url, "e2e")
    for column in (
        "number",
        "state",
        "value",
        "round",
        "seed",
        "lr",
        "weight_decay",
        "dropout_ratio",
        "batchnorm",
        "diverged",
        "node",
        "backend",
        "train_seconds",
        "epochs_completed",
    ):
        assert column in df.columns, column
    assert df["seed"].notna().all()
    assert set(df["backend"]) == {"numpy"}
    assert df["node"].str.len().min() > 0
    assert (df.loc[df["state"] == "COMPLETE", "value"] > 0.5).any(), "digits should learn"
    best = results.best(url, "e2e")
    assert len(best) == 1
    assert best["value"].item() == df["value"].max()


def test_the_database_keeps_the_study_file(study_run):
    study_file, url = study_run
    study = optuna.load_study(study_name="e2e", storage=url)
    assert study.user_attrs[records.STUDY_FILE_KEY] == study_file.read_text()
    assert study.user_attrs[records.STATUS_KEY]["state"] == "finished"


def test_rerun_of_finished_study_says_so_and_adds_nothing(study_run, capsys):
    study_file, url = study_run
    before = len(_trials(url))
    assert main(["run", str(study_file), "--storage", url, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "already finished" in err
    assert len(_trials(url)) == before


def test_same_seed_reproduces_the_same_parameters(study_run, tmp_path):
    study_file, url = study_run
    url2 = f"sqlite:///{tmp_path / 'again.db'}"
    assert main(["run", str(study_file), "--storage", url2, "--quiet", "--rounds", "1"]) == 0
    first = [t.params for t in _trials(url) if t.user_attrs[records.TRIAL_ROUND] == 0]
    again = [t.params for t in _trials(url2)]
    assert sorted(map(repr, first)) == sorted(map(repr, again))
    seeds1 = sorted(t.user_attrs["seed"] for t in _trials(url) if t.number < 8)
    seeds2 = sorted(t.user_attrs["seed"] for t in _trials(url2))
    assert seeds1 == seeds2
    url3 = f"sqlite:///{tmp_path / 'other.db'}"
    assert (
        main(["run", str(study_file), "--storage", url3, "--quiet", "--rounds", "1", "--seed", "8"])
        == 0
    )
    other = [t.params for t in _trials(url3)]
    assert sorted(map(repr, other)) != sorted(map(repr, first))


def test_final_evaluation_is_recorded(tmp_path, ray_local, capsys):
    study_file = tmp_path / "fe.toml"
    study_file.write_text(STUDY.replace('name = "e2e"', 'name = "fe"'))
    url = f"sqlite:///{tmp_path / 'fe.db'}"
    code = main(
        ["run", str(study_file), "--storage", url, "--quiet", "--rounds", "1", "--final-eval"]
    )
    assert code == 0
    final = optuna.load_study(study_name="fe", storage=url).user_attrs[records.FINAL_EVAL_KEY]
    assert len(final["test_accuracy"]) == 5
    assert 0.5 < final["mean"] <= 1.0
    assert "final evaluation: test accuracy" in capsys.readouterr().out


def test_a_finished_study_gets_its_final_evaluation_when_asked_later(tmp_path, ray_local, capsys):
    # A study that finished without one (not asked for, or interrupted during it) runs it
    # on the next run with --final-eval instead of saying "already finished" and skipping it.
    study_file = tmp_path / "late.toml"
    study_file.write_text(STUDY.replace('name = "e2e"', 'name = "late"'))
    url = f"sqlite:///{tmp_path / 'late.db'}"
    assert main(["run", str(study_file), "--storage", url, "--quiet", "--rounds", "1"]) == 0
    attrs = optuna.load_study(study_name="late", storage=url).user_attrs
    assert records.FINAL_EVAL_KEY not in attrs
    n_trials = len(_trials(url, "late"))
    capsys.readouterr()
    code = main(
        ["run", str(study_file), "--storage", url, "--quiet", "--rounds", "1", "--final-eval"]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "already finished" in captured.err
    assert "final evaluation: test accuracy" in captured.out
    final = optuna.load_study(study_name="late", storage=url).user_attrs[records.FINAL_EVAL_KEY]
    assert len(final["test_accuracy"]) == 5
    assert len(_trials(url, "late")) == n_trials  # no trial ran again


@pytest.mark.parametrize(
    "text, words",
    [
        (STUDY.replace("rounds = 3", "rounds = 0"), "narrowing.rounds"),
        ("[study]\nname = 'x'\n", "[data]"),
        ("[study\nname = 'x'\n", "TOML"),
        (STUDY.replace("low = 1e-3", "low = 0.0"), "search.lr"),
        (STUDY.replace('dataset = "digits"', 'dataset = "nope"'), "dataset"),
    ],
)
def test_bad_study_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, text, words):
    study_file = tmp_path / "bad.toml"
    study_file.write_text(text)
    db = tmp_path / "results.db"
    code = main(["run", str(study_file), "--storage", f"sqlite:///{db}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hpsearch: error:")
    assert words.lower() in err.lower()
    assert not db.exists()


def test_sqlite_is_in_wal_mode(study_run):
    _, url = study_run
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_run_with_report_writes_the_html_report(tmp_path, ray_local, capsys):
    study_file = tmp_path / "rep.toml"
    study_file.write_text(STUDY.replace('name = "e2e"', 'name = "rep"'))
    url = f"sqlite:///{tmp_path / 'rep.db'}"
    out_dir = tmp_path / "report"
    code = main(
        [
            "run",
            str(study_file),
            "--storage",
            url,
            "--quiet",
            "--rounds",
            "1",
            "--report",
            str(out_dir),
        ]
    )
    assert code == 0
    assert (out_dir / "index.html").is_file()
    assert f"report: {out_dir / 'index.html'}" in capsys.readouterr().out


def test_fresh_starts_a_new_study_under_a_new_name(study_run, capsys):
    study_file, url = study_run
    before = {s.study_name for s in optuna.get_all_study_summaries(url)}
    code = main(["run", str(study_file), "--storage", url, "--quiet", "--rounds", "1", "--fresh"])
    assert code == 0
    after = {s.study_name for s in optuna.get_all_study_summaries(url)}
    assert after - before == {"e2e-2"}
    assert len(_trials(url, "e2e-2")) == 8
    assert "resuming" not in capsys.readouterr().err


def test_round_decisions_show_in_results_show_and_the_report(study_run, capsys, tmp_path):
    _, url = study_run
    rounds = results.rounds(url, "e2e")
    assert rounds["round"].tolist() == [1, 2, 3]  # numbered from 1, as hpsearch run prints them
    assert rounds["decision"].isin(["shrink", "hold", "grow", "slide", "restart"]).all()
    assert rounds["reason"].str.contains("trials above chance").all()
    capsys.readouterr()
    assert main(["show", "e2e", "--storage", url]) == 0
    out = capsys.readouterr().out
    for r in rounds.itertuples():
        assert f"after round {r.round}: {r.decision}" in out
    from hpsearch.report import write_report

    page = write_report(url, "e2e", tmp_path / "report").read_text()
    assert "The round rule&#x27;s decisions" in page or "The round rule's decisions" in page
    for r in rounds.itertuples():
        assert f'<td class="text">{r.decision}</td>' in page
