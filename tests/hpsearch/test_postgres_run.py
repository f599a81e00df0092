"""The run path on the real PostgreSQL server, and two drivers sharing one study."""

from __future__ import annotations

import optuna
import pytest

from hpsearch import records, results
from hpsearch.cli import main
from hpsearch.space import box_from_record, contains
from tests.hpsearch.fake_study import postgres_database
from tests.hpsearch.studies_for_tests import hpsearch_process, small_study

pytestmark = [pytest.mark.postgres, pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def pg_url():
    with postgres_database() as url:
        yield url


def _check_exact(url: str, name: str, rounds: int, trials: int) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=url)
    all_trials = study.get_trials()
    numbers = [t.number for t in all_trials]
    assert len(numbers) == len(set(numbers)), "no duplicate trial numbers"
    recs = [
        records.RoundRecord.from_dict(v)
        for k, v in sorted(study.user_attrs.items())
        if k.startswith(records.ROUND_KEY_PREFIX)
    ]
    assert [r.index for r in recs] == list(range(len(recs)))  # one record per round
    assert 1 <= len(recs) <= rounds
    for rec in recs:
        live = [
            t
            for t in all_trials
            if t.user_attrs[records.TRIAL_ROUND] == rec.index
            and not str(t.user_attrs.get(records.TRIAL_FAIL_REASON, "")).startswith("stale:")
        ]
        assert len(live) == trials, f"round {rec.index}: {len(live)} trials"
        assert all(t.state.is_finished() for t in live)
        box = box_from_record(rec.box)
        assert all(contains(box, t.params) for t in live), "every trial inside its round's box"
        assert rec.ended_at is not None
    assert study.user_attrs[records.STATUS_KEY]["state"] == "finished"
    return all_trials


def test_full_run_on_postgresql(pg_url, tmp_path, ray_local, capsys):
    study = small_study(tmp_path / "pg.toml", "pg", rounds=2, trials=6)
    assert main(["run", str(study), "--storage", pg_url, "--quiet"]) == 0
    _check_exact(pg_url, "pg", rounds=2, trials=6)
    df = results.trials(pg_url, "pg")
    assert len(df) == 12
    assert results.curves(pg_url, "pg")["trial"].nunique() == 12
    capsys.readouterr()
    assert main(["show", "pg", "--storage", pg_url]) == 0
    assert "lr" in capsys.readouterr().out
    # A driver that joins a finished study says so and exits 0.
    assert main(["run", str(study), "--storage", pg_url, "--quiet"]) == 0
    assert "already finished" in capsys.readouterr().err


def test_two_drivers_share_one_study_exactly(pg_url, tmp_path, ray_local):
    address = ray_local.get_runtime_context().gcs_address
    study = small_study(
        tmp_path / "shared.toml",
        "shared",
        rounds=3,
        trials=16,
        workers=1,
        epochs=200,
        hidden=(64, 64),
    )  # trials of ~0.3 s: both drivers are up long before the study ends
    # Unpacked, so each driver claims a few trials at a time (a driver packing 8
    # trials per worker would claim a whole 16-trial round in one batch).
    study.write_text(study.read_text().replace("[resources]\n", "[resources]\npack_size = 1\n"))
    drivers = [
        hpsearch_process("run", str(study), "--storage", pg_url, "--address", address, "--quiet")
        for _ in range(2)
    ]
    outputs = [d.communicate(timeout=300) for d in drivers]
    for driver, (_out, err) in zip(drivers, outputs, strict=True):
        assert driver.returncode == 0, err
    trials = _check_exact(pg_url, "shared", rounds=3, trials=16)
    owners = {t.user_attrs[records.TRIAL_DRIVER] for t in trials}
    assert len(owners) == 2, "both drivers ran trials of the study"
