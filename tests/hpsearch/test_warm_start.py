"""Warm start (--from): the previous study's best region first, its top trials enqueued."""

from __future__ import annotations

import optuna
import pytest

from hpsearch import records, results
from hpsearch.cli import main
from hpsearch.space import box_from_record, contains
from tests.hpsearch.studies_for_tests import small_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_warm_start_enqueues_top_trials_and_starts_from_the_last_box(tmp_path, ray_local, capsys):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    coarse = small_study(tmp_path / "coarse.toml", "coarse", rounds=2, trials=8)
    assert main(["run", str(coarse), "--storage", url, "--quiet"]) == 0
    fine = small_study(tmp_path / "fine.toml", "fine", rounds=1, trials=6)
    capsys.readouterr()
    assert main(["run", str(fine), "--storage", url, "--quiet", "--from", "coarse"]) == 0
    assert "warm start from 'coarse'" in capsys.readouterr().err

    old = optuna.load_study(study_name="coarse", storage=url)
    last = records.RoundRecord.from_dict(old.user_attrs[records.round_key(1)])
    expected_box = box_from_record(last.next_box)  # where the round rule would go next
    new = optuna.load_study(study_name="fine", storage=url)
    first = records.RoundRecord.from_dict(new.user_attrs[records.round_key(0)])
    assert box_from_record(first.box) == expected_box  # starts from the previous box

    top = results.trials(url, "coarse").query("state == 'COMPLETE'")
    top = top.sort_values(["value", "number"], ascending=[False, True]).head(3)
    new_trials = sorted(new.get_trials(), key=lambda t: t.number)
    enqueued = [t.params for t in new_trials[: len(top)]]
    expected = [
        {k: row[k] for k in ("lr", "weight_decay", "dropout_ratio")}
        for _, row in top.iterrows()
        if contains(expected_box, {k: row[k] for k in ("lr", "weight_decay", "dropout_ratio")})
    ]
    assert expected, "at least the best trial so far lies in the next box"
    for got, want in zip(enqueued, expected, strict=False):  # run first, best first
        assert got == pytest.approx(want)
    assert len(new_trials) == 6
    assert all(contains(expected_box, t.params) for t in new_trials)
    assert new.user_attrs[records.WARM_START_KEY]["from"] == "coarse"


def test_warm_start_from_a_missing_study_is_a_clear_error(tmp_path, ray_local, capsys):
    url = f"sqlite:///{tmp_path / 'w2.db'}"
    study = small_study(tmp_path / "a.toml", "a", rounds=1, trials=3)
    assert main(["run", str(study), "--storage", url, "--quiet"]) == 0
    b = small_study(tmp_path / "b.toml", "b", rounds=1, trials=3)
    capsys.readouterr()
    assert main(["run", str(b), "--storage", url, "--quiet", "--from", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--from" in err and "nope" in err and err.count("\n") == 1
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["a"]  # nothing written
