"""A study whose optimum lies outside its first box finds it in later rounds."""

from __future__ import annotations

import pytest

from hpsearch import results
from hpsearch.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Digits with plain SGD (5 epochs, batch 20) learns best at lr ~ 0.1-0.3 (val accuracy
# 0.25 at 1e-3, 0.39 at 1e-2, 0.89 at 0.1, 0.91 at 0.3, 0.56 at 1); the first box stops
# at 1e-2.
STUDY = """
[study]
name = "moves"
seed = 5

[data]
dataset = "digits"
train_samples = 600
val_fraction = 0.2

[model]
hidden_sizes = [32]
epochs = 5
batch_size = 20

[search.lr]
low = 1e-4
high = 1e-2
log = true
hard_low = 1e-6
hard_high = 1.0

[narrowing]
rounds = 6
trials_per_round = 10
top_k = 2
margin = 0.1
"""


def test_box_moves_toward_an_optimum_outside_the_first_range(tmp_path, ray_local):
    study = tmp_path / "moves.toml"
    study.write_text(STUDY)
    url = f"sqlite:///{tmp_path / 'moves.db'}"
    assert main(["run", str(study), "--storage", url, "--quiet", "--workers", "2"]) == 0
    rounds = results.rounds(url, "moves").sort_values("round")
    assert rounds["lr_high"].iloc[0] == pytest.approx(1e-2)
    assert rounds["lr_high"].iloc[-1] > 1e-2, rounds[["round", "lr_low", "lr_high"]]
    assert "lr.high" in rounds["moved_edges"].iloc[1]
    assert rounds["lr_high"].max() <= 1.0 + 1e-12  # never past the hard limit
    trials = results.trials(url, "moves")
    best = results.best(url, "moves")
    assert best["lr"].item() > 1e-2  # found outside the first box
    assert best["value"].item() > 0.8  # the region where digits learns well
    first_round_best = trials.loc[trials["round"] == 1, "value"].max()
    assert best["value"].item() > first_round_best + 0.05
