"""hpsearch report: the data behind each figure, the files and page, degenerate studies, CLI."""

from __future__ import annotations

import logging
import math
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from hpsearch import records, report, results
from hpsearch.cli import main
from hpsearch.errors import HPSearchError, StudyNotFoundError
from hpsearch.report.figures import draw_curves
from tests.hpsearch.fake_study import FULL_BOX, FakeStudy, write_fake_study

FIGURE_FILES = {f"{key}.png" for key in report.FIGURES}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[2]


# --- studies ----------------------------------------------------------------------------


def write_only_failed(url: str, name: str = "only_failed", n: int = 3) -> None:
    """An hpsearch-style study whose one round produced only FAIL trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=url, study_name=name, direction="maximize")
    study.set_user_attr(records.METRIC_KEY, "val_accuracy")
    box = {
        "lr": {"low": 1e-3, "high": 1.0, "log": True},
        "weight_decay": {"low": 1e-8, "high": 1e-2, "log": True},
        "batchnorm": {"choices": [True, False]},
    }
    dists = {
        "lr": FloatDistribution(1e-3, 1.0, log=True),
        "weight_decay": FloatDistribution(1e-8, 1e-2, log=True),
        "batchnorm": CategoricalDistribution([True, False]),
    }
    for i in range(n):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.FAIL,
                params={"lr": 0.5 + 0.1 * i, "weight_decay": 10.0 ** (-3 - i), "batchnorm": False},
                distributions=dists,
                user_attrs={
                    records.TRIAL_ROUND: 0,
                    records.TRIAL_SEED: i,
                    records.TRIAL_FAIL_REASON: f"training loss diverged (nan) in epoch {i + 1}",
                },
            )
        )
    rec = records.RoundRecord(index=0, box=box, n_trials=n, top_trials=[], best=None, median=None)
    study.set_user_attr(records.round_key(0), rec.to_dict())


def write_plain(url: str, name: str = "plain", n: int = 8) -> None:
    """A plain Optuna study: lr, weight decay and dropout, no batch norm, rounds or curves."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=url, study_name=name, direction="minimize", sampler=optuna.samplers.RandomSampler(0)
    )

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        wd = trial.suggest_float("weight_decay", 1e-8, 1e-3, log=True)
        dropout = trial.suggest_float("dropout_ratio", 0.0, 0.5)
        return (math.log10(lr) + 1.5) ** 2 + dropout + 1e3 * wd

    study.optimize(objective, n_trials=n)


def write_empty(url: str, name: str = "empty") -> None:
    optuna.create_study(storage=url, study_name=name)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[str, FakeStudy]:
    """One database: a 3-round study ``up`` (a trial still running) and degenerate studies."""
    db = tmp_path_factory.mktemp("report") / "results.db"
    url = f"sqlite:///{db}"
    up = write_fake_study(url, "up", running=1)
    write_fake_study(url, "single", rounds=1, trials_per_round=1, final_eval=False)
    write_fake_study(url, "one_round", rounds=1, trials_per_round=6, final_eval=False)
    write_fake_study(url, "down", direction="minimize", rounds=2, seed=3, final_eval=False)
    write_only_failed(url)
    write_plain(url)
    write_empty(url)
    return url, up


@pytest.fixture(scope="module")
def up_report(recorded, tmp_path_factory) -> Path:
    """The report of ``up``, written once for the module."""
    url, _ = recorded
    return report.write_report(url, "up", tmp_path_factory.mktemp("up_report"))


def _img_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    return struct.unpack(">II", head[16:24])


# --- the report on a full study ----------------------------------------------------------------


def test_report_writes_every_figure_and_the_page_references_them(up_report):
    out = up_report.parent
    assert up_report.name == "index.html"
    assert {p.name for p in out.glob("*.png")} == FIGURE_FILES
    for png in FIGURE_FILES:
        width, height = _png_size(out / png)
        assert width >= 400 and height >= 200, png
    page = up_report.read_text(encoding="utf-8")
    sources = _img_sources(page)
    assert sorted(sources) == sorted(FIGURE_FILES)
    assert all((out / src).is_file() for src in sources)
    # Only what is really missing is noted: 13 COMPLETE trials, the running round 4.
    missing = page.split("What is missing from this report, and why:")[1].split("</ul>")[0]
    assert missing.count("<li>") == 2
    assert "only 13 trials completed, fewer than the 20 asked for" in missing
    assert "round 4 is still running: none of its trials completed yet" in missing


def test_page_is_self_contained(up_report):
    page = up_report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<style>" in page
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)="(https?:|//)""", page), "no external resources"
    assert '<link rel="stylesheet"' not in page


def test_page_shows_rounds_best_trial_and_final_evaluation(recorded, up_report):
    _, up = recorded
    page = up_report.read_text(encoding="utf-8")
    best = up.best
    assert f'<td class="text">{best.value:.4f}</td>' in page
    assert f'<td class="text">{best.number}</td>' in page
    assert "Test accuracy 0.9200 ± 0.0100" in page and "over 3 seeds" in page
    rounds_table = page.split('id="rounds-table"')[1].split("</table>")[0]
    assert rounds_table.count("<tr>") == 1 + len(up.rounds)  # header + one row per round
    for rec in up.rounds:
        assert f"<td>{rec.best:.4f}</td>" in rounds_table
    assert "training loss diverged (nan) in epoch 3" in page  # the failed trials' reasons
    assert "name = &quot;up&quot;" in page  # the recorded study file


def test_lr_wd_points_hold_every_trial_with_both_params(recorded):
    url, up = recorded
    points = report.lr_wd_points(url, "up")
    with_both = [t for t in up.trials if "lr" in t.params and "weight_decay" in t.params]
    assert len(points) == len(with_both) == len(up.trials)
    assert points["number"].tolist() == [t.number for t in with_both]
    by_number = {t.number: t for t in up.trials}
    for row in points.itertuples(index=False):
        fake = by_number[row.number]
        assert row.lr == fake.params["lr"] and row.weight_decay == fake.params["weight_decay"]
        assert row.state == fake.state
    assert points["state"].value_counts().to_dict() == {
        "COMPLETE": 13,
        "PRUNED": 3,
        "FAIL": 2,
        "RUNNING": 1,
        "WAITING": 0,
    }


def test_round_boxes_are_the_recorded_boxes_and_nest(recorded):
    url, up = recorded
    boxes = report.round_boxes(url, "up")
    assert boxes["round"].tolist() == [r.index + 1 for r in up.rounds]  # numbered from 1
    for row, rec in zip(boxes.itertuples(index=False), up.rounds, strict=True):
        assert row.lr_low == rec.box["lr"]["low"] and row.lr_high == rec.box["lr"]["high"]
        assert row.weight_decay_low == rec.box["weight_decay"]["low"]
        assert row.weight_decay_high == rec.box["weight_decay"]["high"]
    for outer, inner in zip(boxes.iloc[:-1].itertuples(), boxes.iloc[1:].itertuples(), strict=True):
        assert outer.lr_low <= inner.lr_low <= inner.lr_high <= outer.lr_high


def test_round_stats_are_best_median_and_quartiles_of_complete_trials(recorded):
    url, up = recorded
    stats = report.round_stats(url, "up")
    assert stats["round"].tolist() == [1, 2, 3, 4]  # round 4 has only a running trial
    assert stats.iloc[3][["n_trials", "n_complete"]].tolist() == [1, 0]
    assert stats.iloc[3][["best", "median", "q1", "q3"]].isna().all()
    for row in stats.iloc[:3].itertuples(index=False):
        values = [t.value for t in up.trials if t.round + 1 == row.round and t.state == "COMPLETE"]
        assert row.n_trials == 6
        assert row.n_complete == len(values) == (4 if row.round < 3 else 5)
        assert row.best == max(values)
        assert row.median == pytest.approx(float(np.median(values)))
        assert row.q1 == pytest.approx(float(np.percentile(values, 25)))
        assert row.q3 == pytest.approx(float(np.percentile(values, 75)))
        assert row.min == min(values) and row.max == max(values)


def test_round_stats_best_is_the_lowest_when_minimizing(recorded):
    url, _ = recorded
    stats = report.round_stats(url, "down")
    trials = results.trials(url, "down")
    for row in stats.itertuples(index=False):
        done = trials[(trials["round"] == row.round) & (trials["state"] == "COMPLETE")]
        assert row.best == done["value"].min()


def test_top_curves_are_the_best_trials_curves_in_rank_order(recorded):
    url, up = recorded
    data = report.load_study_data(url, "up")
    ranked = report.top_trials(data, top=5)
    done = sorted((t for t in up.trials if t.state == "COMPLETE"), key=lambda t: -t.value)
    assert ranked["number"].tolist() == [t.number for t in done[:5]]
    assert ranked["rank"].tolist() == [1, 2, 3, 4, 5]
    curves = report.top_curves(data, top=5)
    assert curves["trial"].unique().tolist() == ranked["number"].tolist()
    for fake in done[:5]:
        c = curves[curves["trial"] == fake.number]
        assert c["epoch"].tolist() == list(range(1, fake.epochs + 1))
        assert c["val_accuracy"].tolist() == list(fake.curve.val_accuracy)
        assert c["train_accuracy"].tolist() == list(fake.curve.train_accuracy)
    assert report.top_trials(data, top=100)["number"].size == len(done)


def test_batchnorm_and_dropout_points_are_the_complete_trials(recorded):
    url, up = recorded
    done = {t.number: t for t in up.trials if t.state == "COMPLETE"}
    bn = report.batchnorm_points(url, "up")
    assert sorted(bn["number"]) == sorted(done)
    assert bn["batchnorm"].dtype == bool
    for row in bn.itertuples(index=False):
        assert row.batchnorm == done[row.number].params["batchnorm"]
        assert row.value == done[row.number].value
    dr = report.dropout_points(url, "up")
    assert sorted(dr["number"]) == sorted(done)
    for row in dr.itertuples(index=False):
        assert row.dropout_ratio == done[row.number].params["dropout_ratio"]


def test_param_importances_cover_the_varying_params_and_sum_to_one(recorded):
    url, _ = recorded
    # The fake study records each round's narrowed box as the distributions, so this
    # also checks that importances span trials whose distributions differ.
    info = report.param_importances(url, "up")
    assert info["note"] is None
    assert info["n_trials"] == 13
    shares = info["importances"]
    assert set(shares) == {
        "lr",
        "weight_decay",
        "dropout_ratio",
        "batchnorm",
        "batch_size",
        "activation",
    }
    assert sum(shares.values()) == pytest.approx(1.0)
    assert list(shares.values()) == sorted(shares.values(), reverse=True)
    assert report.param_importances(url, "up")["importances"] == shares  # seeded: repeatable


def test_param_importances_of_a_large_study_use_a_seeded_sample(recorded, tmp_path):
    """fANOVA takes hours on tens of thousands of trials: beyond ``max_trials`` it is
    fitted on a seeded sample, and the figure's caption says so."""
    url, _ = recorded
    info = report.param_importances(url, "up", max_trials=8)
    assert (info["n_trials"], info["of_trials"]) == (8, 13)
    assert info["note"] is None and sum(info["importances"].values()) == pytest.approx(1.0)
    assert report.param_importances(url, "up", max_trials=8) == info  # the same sample
    other = report.param_importances(url, "up", max_trials=8, seed=1)
    assert other["importances"] != info["importances"]  # a different sample
    assert report.param_importances(url, "up")["of_trials"] == 13
    from hpsearch.report import figures

    data = report.load_study_data(url, "up")
    caption = figures.draw_importances(data, tmp_path, importances=info).caption
    assert "a seeded random sample of 8 of the 13 COMPLETE trials" in caption


def test_param_importances_need_enough_trials(recorded):
    url, _ = recorded
    info = report.param_importances(url, "one_round")
    assert info["importances"] == {}
    assert info["n_trials"] == 4
    assert "at least 5 COMPLETE trials; this study has 4" in info["note"]


def test_data_functions_read_through_results_without_ray():
    code = (
        "import sys\n"
        "import hpsearch.report, hpsearch.cli.report\n"
        "import hpsearch.report.figures, hpsearch.report.page\n"
        "print('ray' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "False"


# --- degenerate studies ------------------------------------------------------------------


DEGENERATE = {
    # study: (figures drawn, phrases the page must hold)
    "single": (
        {"curves", "lr_weight_decay", "rounds", "batchnorm_dropout"},
        [
            "only 1 trial completed, fewer than the 20 asked for",
            "only one round ran, so there is no narrowing to see",
            "every COMPLETE trial had batch norm",
            "parameter importances need at least 5 COMPLETE trials; this study has 1",
            "Only one round ran, so the search did not narrow.",
        ],
    ),
    "one_round": (
        {"curves", "lr_weight_decay", "rounds", "batchnorm_dropout"},
        [
            "only one round ran, so there is no round-to-round change to see",
            "parameter importances need at least 5 COMPLETE trials; this study has 4",
        ],
    ),
    "only_failed": (
        {"lr_weight_decay"},
        [
            "no trial completed with a value (3 FAIL)",
            "No best trial: no trial completed with a value",
            "No final evaluation is recorded",
            "training loss diverged (nan) in epoch 2",
            "this study has 0",
        ],
    ),
    "plain": (
        {"lr_weight_decay", "batchnorm_dropout", "importances"},
        [
            "no per-epoch curves are recorded for the top trials",
            "no round boxes are recorded (not a narrowing study)",
            "no narrowing rounds are recorded (not an hpsearch study)",
            "batchnorm is not a searched parameter in this study",
            "No narrowing rounds are recorded",
        ],
    ),
    "empty": (
        set(),
        [
            "the study has no trials yet",
            "nothing to plot: lr and weight_decay are not searched in this study",
            "parameters</dt><dd>none",
        ],
    ),
}


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_degenerate_study_gives_a_report_that_says_what_is_missing(recorded, tmp_path, name):
    url, _ = recorded
    drawn, phrases = DEGENERATE[name]
    index = report.write_report(url, name, tmp_path / name)
    page = index.read_text(encoding="utf-8")
    assert {p.stem for p in index.parent.glob("*.png")} == drawn
    assert sorted(_img_sources(page)) == sorted(f"{k}.png" for k in drawn)
    assert page.count("Figure not drawn:") == len(report.FIGURES) - len(drawn)
    assert "What is missing from this report, and why" in page
    for phrase in phrases:
        assert phrase in page, phrase


def test_plain_study_without_rounds_still_plots_lr_wd_dropout_and_importances(recorded):
    url, _ = recorded
    data = report.load_study_data(url, "plain")
    assert len(report.lr_wd_points(data)) == 8
    assert report.round_boxes(data).empty
    assert report.round_stats(data).empty
    assert report.batchnorm_points(data).empty
    assert len(report.dropout_points(data)) == 8
    assert "batchnorm" not in report.dropout_points(data).columns
    assert report.top_curves(data).empty
    info = report.param_importances(data)
    assert set(info["importances"]) == {"lr", "weight_decay", "dropout_ratio"}


def test_a_figure_not_drawn_again_leaves_no_stale_file(recorded, tmp_path):
    url, _ = recorded
    out = tmp_path / "shared"
    report.write_report(url, "single", out)
    assert (out / "curves.png").is_file()
    report.write_report(url, "only_failed", out)
    assert {p.name for p in out.glob("*.png")} == {"lr_weight_decay.png"}
    assert "only_failed" in (out / "index.html").read_text(encoding="utf-8")


def test_missing_study_and_bad_top_are_errors(recorded, tmp_path):
    url, _ = recorded
    with pytest.raises(StudyNotFoundError, match="'nope' not found"):
        report.write_report(url, "nope", tmp_path / "x")
    with pytest.raises(HPSearchError, match="expected a whole number >= 1"):
        report.write_report(url, "up", tmp_path / "x", top=0)
    assert not (tmp_path / "x").exists()


def test_top_limits_the_learning_curve_panels(recorded, tmp_path):
    url, _ = recorded
    data = report.load_study_data(url, "up")
    assert report.top_curves(data, top=3)["rank"].unique().tolist() == [1, 2, 3]
    fig = draw_curves(data, tmp_path, top=3)
    assert fig.file == "curves.png" and (tmp_path / fig.file).is_file()
    assert fig.title == "Learning curves of the top 3 trials"
    assert fig.caption.startswith("The best 3 COMPLETE trials by val_accuracy")
    assert fig.notes == ()
    with pytest.raises(ValueError, match="top: got 0"):
        report.top_trials(data, top=0)


# --- studies real runs leave behind: the report never fails -------------------------------

LR_BEYOND = {"lr": {"low": 1e-6, "high": 1e-4, "log": True}}
"""Recorded range of lr in ``beyond``: trials sample up to 1e-2, as hpsearch records the study
file's range while a box that slid past its edge (``hard_high``) samples beyond it."""

ODD = {
    # study: (write_fake_study options, figures drawn, phrases the page must hold)
    "all_pruned": (
        dict(states=["PRUNED"], final_eval=False),
        {"lr_weight_decay"},
        [
            "no trial completed with a value (18 PRUNED), so there is no metric to show",
            "parameter importances need at least 5 COMPLETE trials; this study has 0",
            "No best trial: no trial completed with a value",
        ],
    ),
    "one_complete": (
        dict(
            states=["COMPLETE", "PRUNED", "PRUNED", "FAIL", "DIVERGED", "PRUNED"],
            rounds=1,
            final_eval=False,
        ),
        {"curves", "lr_weight_decay", "rounds", "batchnorm_dropout"},
        [
            "only 1 trial completed, fewer than the 20 asked for",
            "this study has 1",
            "diverged: loss became NaN or infinite in epoch 3",
        ],
    ),
    "zero_complete": (
        dict(states=["PRUNED", "FAIL", "DIVERGED"], final_eval=False),
        {"lr_weight_decay"},
        [
            "no trial completed with a value (12 FAIL, 6 PRUNED)",
            "No best trial",
            "Failed trials (12)",
            "worker died: node-b lost",
        ],
    ),
    "one_choice": (
        dict(
            box=FULL_BOX | {"activation": {"choices": ["relu"]}, "batchnorm": {"choices": [True]}}
        ),
        set(report.FIGURES),
        [
            "activation left out: one value only (relu)",
            "batchnorm left out: one value only (True)",
            "every COMPLETE trial had batch norm on, so there is nothing to compare",
            'nowrap">{True}</td>',
        ],
    ),
    "single_value": (
        dict(
            box=FULL_BOX
            | {
                "lr": {"low": 1e-3, "high": 1e-3, "log": True},
                "dropout_ratio": {"low": 0.25, "high": 0.25, "log": False},
            }
        ),
        set(report.FIGURES),
        [
            "lr left out: one value only (0.001)",
            "dropout_ratio left out: one value only (0.25)",
            "0.001 … 0.001",
        ],
    ),
    "nan_curves": (dict(curve_nan=True), set(report.FIGURES), []),
    "diverged": (
        dict(states=["COMPLETE", "DIVERGED"]),
        set(report.FIGURES),
        ["Failed trials (9)", "diverged: loss became NaN or infinite in epoch 3"],
    ),
    "running": (
        dict(running=3, open_round=True, final_eval=False),
        set(report.FIGURES),
        [
            "round 4 is still running: none of its trials completed yet",
            "not finished (or not an hpsearch run)",
            "3 RUNNING",
        ],
    ),
    "identical": (
        dict(values=lambda n: 0.5),
        set(report.FIGURES) - {"importances"},
        [
            "every COMPLETE trial has the same val_accuracy (0.5), so there is no variation "
            "for the parameters to explain",
        ],
    ),
    "rounding_noise": (
        # values that differ by ~1e-16: Optuna's fANOVA finds zero variance in every tree
        dict(values=lambda n: 0.5 + (n % 2) * 1e-16),
        set(report.FIGURES) - {"importances"},
        ["varies by 1.11e-16 only, too little for fANOVA to attribute to the parameters"],
    ),
    "beyond": (dict(recorded_box=FULL_BOX | LR_BEYOND), set(report.FIGURES), []),
}


def write_plain_odd(url: str, name: str = "plain_odd") -> None:
    """A plain Optuna study: NaN intermediate values, an infinite value, a FAIL (NaN)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # Optuna warns of the NaN it records
    study = optuna.create_study(
        storage=url, study_name=name, direction="maximize", sampler=optuna.samplers.RandomSampler(0)
    )

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        wd = trial.suggest_float("weight_decay", 1e-8, 1e-3, log=True)
        for step in range(3):
            trial.report(math.nan if step == 1 else 0.3 + 0.1 * step, step)
        if trial.number == 7:
            return math.nan  # Optuna records it as FAIL
        return math.inf if trial.number == 2 else 1.0 - abs(math.log10(lr) + 1.5) / 5 - wd

    study.optimize(objective, n_trials=10)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> str:
    """One database with the studies of :data:`ODD` and ``plain_odd``."""
    url = f"sqlite:///{tmp_path_factory.mktemp('odd') / 'results.db'}"
    for name, (options, _, _) in ODD.items():
        write_fake_study(url, name, **options)
    write_plain_odd(url)
    return url


@pytest.mark.parametrize("name", list(ODD))
def test_report_of_an_odd_study_is_written_and_says_what_is_left_out(odd, tmp_path, caplog, name):
    _, drawn, phrases = ODD[name]
    with caplog.at_level(logging.WARNING, logger="hpsearch.report"):
        index = report.write_report(odd, name, tmp_path / name)
    page = index.read_text(encoding="utf-8")
    assert {p.stem for p in index.parent.glob("*.png")} == drawn
    assert sorted(_img_sources(page)) == sorted(f"{k}.png" for k in drawn)
    assert "could not be" not in page  # every gap has its own reason, no exception swallowed
    for phrase in phrases:
        assert phrase in page, phrase
    # One warning per figure left out, naming it and why (the CLI prints them on stderr).
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(report.FIGURES) - len(drawn), warnings
    for message in warnings:
        assert message.startswith(f"report {name!r}: left out the figure ")
        assert "\n" not in message


def test_importances_of_values_beyond_their_recorded_range(odd):
    # The crash users met: hpsearch records the study file's ranges while a box that slid past
    # an edge samples beyond them, and Optuna's fANOVA then computes negative variances.
    study = optuna.load_study(study_name="beyond", storage=odd)
    assert max(t.params["lr"] for t in study.trials) > LR_BEYOND["lr"]["high"]
    with pytest.raises(AssertionError):
        optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    info = report.param_importances(odd, "beyond")
    assert info["note"] is None
    assert "lr" in info["importances"] and sum(info["importances"].values()) == pytest.approx(1)


def test_curves_keep_their_nan_points(odd):
    curves = report.top_curves(odd, "nan_curves", top=3)
    at_2 = curves[curves["epoch"] == 2]
    assert len(at_2) == 3 and at_2["val_accuracy"].isna().all()
    assert curves[curves["epoch"] != 2]["val_accuracy"].notna().all()


def test_plain_study_with_nan_and_infinite_values(odd, tmp_path):
    index = report.write_report(odd, "plain_odd", tmp_path / "plain_odd")
    page = index.read_text(encoding="utf-8")
    assert {p.stem for p in index.parent.glob("*.png")} == {
        "curves",
        "lr_weight_decay",
        "importances",
    }
    done = report.complete_trials(odd, "plain_odd")
    assert 2 not in set(done["number"])  # +inf is no best value
    assert done["value"].map(math.isfinite).all() and len(done) == 8
    assert f'<td class="text">{int(done["number"].iloc[0])}</td>' in page
    assert "inf" not in page.split('id="best"')[1].split("</table>")[0]


def test_an_evaluator_assertion_leaves_out_the_importances_only(odd, tmp_path, monkeypatch):
    def fails(self, study, params=None, *, target=None):
        raise AssertionError  # what Optuna's fANOVA raises on a negative variance

    monkeypatch.setattr(optuna.importance.FanovaImportanceEvaluator, "evaluate", fails)
    index = report.write_report(odd, "diverged", tmp_path / "r")
    page = index.read_text(encoding="utf-8")
    assert {p.stem for p in index.parent.glob("*.png")} == set(report.FIGURES) - {"importances"}
    assert "Optuna&#x27;s fANOVA evaluator failed (AssertionError: no message)" in page


def test_a_figure_that_raises_is_left_out_with_the_reason(odd, tmp_path, monkeypatch, caplog):
    from hpsearch.report import figures

    def boom(data, out_dir):
        (out_dir / "rounds.png").write_bytes(b"half a PNG")
        raise ValueError("Axis limits cannot be NaN")

    monkeypatch.setattr(figures, "draw_rounds", boom)
    with caplog.at_level(logging.WARNING, logger="hpsearch.report"):
        index = report.write_report(odd, "diverged", tmp_path / "r")
    page = index.read_text(encoding="utf-8")
    assert not (index.parent / "rounds.png").exists()  # nothing half-written is shown
    assert {p.stem for p in index.parent.glob("*.png")} == set(report.FIGURES) - {"rounds"}
    assert "it could not be drawn (ValueError: Axis limits cannot be NaN)" in page
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "report 'diverged': left out the figure 'The metric round by round': it could not be "
        "drawn (ValueError: Axis limits cannot be NaN)"
    ]


def test_a_section_that_raises_is_left_out_with_the_reason(odd, tmp_path, monkeypatch, caplog):
    from hpsearch.report import page as page_module

    def boom(data):
        raise KeyError("wall_seconds")

    monkeypatch.setattr(page_module, "_rounds_section", boom)
    with caplog.at_level(logging.WARNING, logger="hpsearch.report"):
        index = report.write_report(odd, "diverged", tmp_path / "r")
    page = index.read_text(encoding="utf-8")
    assert "The rounds table could not be computed (KeyError: &#x27;wall_seconds&#x27;)" in page
    assert "Test accuracy" in page and len(_img_sources(page)) == len(report.FIGURES)
    assert any("left out the rounds table" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", [*ODD, "plain_odd"])
def test_cli_report_of_an_odd_study_exits_0(odd, tmp_path, capsys, name):
    out = tmp_path / "cli"
    assert main(["report", name, "--storage", odd, "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    assert (out / "index.html").is_file()


def test_cli_prints_one_warning_line_per_part_left_out(odd, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "hpsearch", "report", "all_pruned", "--storage", odd, "-o",
         str(tmp_path / "r")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    left_out = [line for line in lines if "left out" in line]
    assert len(left_out) == 4 and all(
        line.startswith("hpsearch: WARNING: report 'all_pruned': left out the figure ")
        for line in left_out
    )
    assert "Traceback" not in run.stderr
    assert lines[-1] == f"hpsearch: wrote the report of 'all_pruned' to {tmp_path / 'r'}"


# --- CLI --------------------------------------------------------------------------------


def test_cli_writes_the_report_and_prints_its_path(recorded, tmp_path, capsys):
    url, _ = recorded
    out = tmp_path / "cli"
    code = main(["report", "single", "--storage", url, "-o", str(out), "--top", "5"])
    stdout, stderr = capsys.readouterr()
    assert code == 0
    assert stdout.strip() == str(out / "index.html")
    assert "wrote the report of 'single'" in stderr
    assert (out / "index.html").is_file()


def test_cli_default_output_is_reports_name(recorded, tmp_path, monkeypatch, capsys):
    url, _ = recorded
    monkeypatch.chdir(tmp_path)
    assert main(["report", "single", "--storage", url]) == 0
    assert capsys.readouterr().out.strip() == str(Path("reports") / "single" / "index.html")
    assert (tmp_path / "reports" / "single" / "index.html").is_file()
    assert report.default_report_dir("a/b c") == Path("reports") / "a_b_c"


def test_cli_missing_study_is_one_line_and_exit_2(recorded, tmp_path, capsys):
    url, _ = recorded
    code = main(["report", "nope", "--storage", url, "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("hpsearch: error: study 'nope' not found") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_cli_bad_top_is_a_usage_error(recorded, tmp_path, capsys):
    url, _ = recorded
    with pytest.raises(SystemExit) as exc:
        main(["report", "up", "--storage", url, "--top", "0", "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "--top: got 0; expected a whole number >= 1" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


# --- a real study ------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_report_of_the_quick_study_run_on_ray(ray_local, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'quick.db'}"
    study = REPO / "studies" / "quick.toml"
    assert main(["run", str(study), "--storage", url, "--quiet", "--workers", "2"]) == 0
    out = tmp_path / "report"
    assert main(["report", "quick", "--storage", url, "-o", str(out)]) == 0
    capsys.readouterr()
    assert {p.name for p in out.glob("*.png")} == FIGURE_FILES
    page = (out / "index.html").read_text(encoding="utf-8")
    assert sorted(_img_sources(page)) == sorted(FIGURE_FILES)
    trials = results.trials(url, "quick")
    points = report.lr_wd_points(url, "quick")
    assert len(points) == int((trials["lr"].notna() & trials["weight_decay"].notna()).sum())
    assert len(points) == 24
    # The figure's per-round best and median are the ones the run recorded.
    stats = report.round_stats(url, "quick")
    recorded_rounds = results.rounds(url, "quick")
    pd.testing.assert_series_equal(stats["best"], recorded_rounds["best"], check_names=False)
    np.testing.assert_allclose(stats["median"], recorded_rounds["median"])
    curves = report.top_curves(url, "quick")
    assert curves["trial"].nunique() == 20
    assert (curves.groupby("trial")["epoch"].max() == 10).all()
    assert curves[["train_accuracy", "val_accuracy"]].notna().all().all()


SLIDING = """
[study]
name = "sliding"
seed = 0
sampler = "random"

[data]
dataset = "digits"
train_samples = 300

[model]
hidden_sizes = [16]
epochs = 3
batch_size = 50

[search.lr]
low = 1e-4
high = 1e-3
log = true
hard_high = 1.0

[search.weight_decay]
low = 1e-8
high = 1e-4
log = true

[narrowing]
rounds = 3
trials_per_round = 6
top_k = 2
"""


@pytest.mark.ray
@pytest.mark.slow
def test_report_of_a_run_whose_box_moved_past_the_file_range(ray_local, tmp_path, capsys):
    # What led to the crash users met on mnist_ch6: SGD on digits learns best above lr 1e-3,
    # so the box moves up past the file's range (hard_high). Runs recorded before the
    # trials' distributions spanned the hard limits hold values beyond their distribution;
    # the fake study "beyond" reproduces those (and Optuna's failing assertion) every time.
    # Here, a real run: the report is whole, importances included.
    study = tmp_path / "sliding.toml"
    study.write_text(SLIDING, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'sliding.db'}"
    assert main(["run", str(study), "--storage", url, "--quiet", "--workers", "2"]) == 0
    recorded = optuna.load_study(study_name="sliding", storage=url)
    assert any(t.params["lr"] > 1e-3 for t in recorded.trials), "the box never left lr's range"
    out = tmp_path / "report"
    assert main(["report", "sliding", "--storage", url, "-o", str(out)]) == 0
    capsys.readouterr()
    # Every figure but batch norm and dropout, which this study does not search.
    assert {p.name for p in out.glob("*.png")} == FIGURE_FILES - {"batchnorm_dropout.png"}
    info = report.param_importances(url, "sliding")
    assert info["note"] is None and set(info["importances"]) == {"lr", "weight_decay"}
