"""The built-in MLP through the objective seam (hpsearch.run / hpsearch.api): each
trial records the History that training its configuration alone gives, bit for
bit unpacked and to float32 rounding packed, and the study records its file and
metric whichever entry point ran it."""

from __future__ import annotations

import optuna
import pytest

import hpsearch
from hpsearch import api, records
from hpsearch.config import load_study
from hpsearch.runner import run_study
from tests.hpsearch.studies_for_tests import small_study
from trainer.train import train

pytestmark = [pytest.mark.ray]


def _alone(config, trial) -> list[float]:
    """The validation accuracy per epoch of the trial's configuration trained alone."""
    data = api.load_data(config)
    seed = trial.user_attrs[records.TRIAL_SEED]
    history = train(config.train_config(trial.params, seed), data)
    return [r.val_accuracy for r in history.records]


@pytest.mark.parametrize("pack_size", [1, 4])
def test_builtin_trials_record_what_their_configuration_trains_alone(
    tmp_path, ray_local, pack_size
):
    path = small_study(tmp_path / "s.toml", f"seam{pack_size}", rounds=1, trials=6)
    config = load_study(path)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    result = hpsearch.run(path, storage=url, pack_size=pack_size)
    assert result.trials_run == 6
    trials = optuna.load_study(study_name=config.name, storage=url).get_trials()
    assert len(trials) == 6
    for trial in trials:
        recorded = trial.user_attrs[records.TRIAL_CURVE]["val_accuracy"]
        if pack_size == 1:
            assert recorded == _alone(config, trial)  # bit-identical
        else:
            assert recorded == pytest.approx(_alone(config, trial), rel=1e-5)


def test_the_runner_records_the_study_file_and_metric(tmp_path, ray_local):
    path = small_study(tmp_path / "s.toml", "runner", rounds=1, trials=3)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    run_study(load_study(path), url)
    attrs = optuna.load_study(study_name="runner", storage=url).user_attrs
    assert attrs[records.STUDY_FILE_KEY] == path.read_text()
    assert attrs[records.METRIC_KEY] == "val_accuracy"
    assert attrs[records.OVERRIDES_KEY] == {}
