"""A long TPE study on the fake executor: the driver's bookkeeping holds at scale.

The fake executor (hpsearch.fake_cluster) finishes trials without training, so
2,000 trials take seconds; no timing is asserted (benchmarks/driver_scale.py
measures the rate).
"""

from __future__ import annotations

import math

from optuna.trial import TrialState

from hpsearch import records, space
from hpsearch.config import parse_study
from hpsearch.fake_cluster import FakeExecutor
from hpsearch.sampling import make_sampler, sample_params
from hpsearch.search import NarrowingSearch
from hpsearch.storage import StudyStore

STUDY = """
[study]
name = "scale"
seed = 0
sampler = "tpe"

[data]
dataset = "synthetic:200"

[model]
hidden_sizes = [4]
epochs = 1

[search.lr]
low = 1e-6
high = 1e-1
log = true

[search.dropout_ratio]
low = 0.0
high = 0.5

[search.batchnorm]
choices = [true, false]

[narrowing]
rounds = 2
trials_per_round = {per_round}
top_k = 25
margin = 0.1

[final_eval]
enabled = false
"""


def run_study(tmp_path, per_round: int, *, batched: bool = True):
    config = parse_study(STUDY.format(per_round=per_round))
    sampler = make_sampler(config.sampler, config.seed)
    store, _ = StudyStore.open(
        f"sqlite:///{tmp_path / 'scale.db'}", config.name, direction="maximize",
        sampler=sampler, create=True,
    )  # fmt: skip
    executor = FakeExecutor(workers=8)
    result = NarrowingSearch(
        config, store, executor, sampler, final_eval=False, batched=batched
    ).run()
    return store, result, executor


def check_complete_study(store, result, executor, per_round: int) -> None:
    trials = store.trials()
    assert len(trials) == 2 * per_round == executor.submitted
    assert sorted(t.number for t in trials) == list(range(2 * per_round))
    assert {t.state for t in trials} == {TrialState.COMPLETE}  # nothing RUNNING or lost
    by_round = [sum(1 for t in trials if t.user_attrs[records.TRIAL_ROUND] == r) for r in (0, 1)]
    assert by_round == [per_round, per_round]
    rounds = store.rounds()
    assert [r.index for r in rounds] == [0, 1]
    assert all(r.ended_at and r.decision for r in rounds)
    assert rounds[1].box == rounds[0].next_box
    second_box = space.box_from_record(rounds[1].box)
    assert all(
        space.contains(second_box, t.params)
        for t in trials
        if t.user_attrs[records.TRIAL_ROUND] == 1
    )
    assert store.user_attrs()[records.STATUS_KEY]["state"] == "finished"
    assert result.trials_run == 2 * per_round


def test_a_2000_trial_tpe_study_records_every_trial_and_round(tmp_path, monkeypatch):
    from hpsearch import search
    from hpsearch.proposer import BatchTPEProposer

    batched = []  # proposals from the batched proposer, once the box holds BATCHED_FROM
    propose = BatchTPEProposer.propose

    def counting(self, count, running):
        batched.append(self.seen)
        return propose(self, count, running)

    monkeypatch.setattr(BatchTPEProposer, "propose", counting)
    store, result, executor = run_study(tmp_path, 1000)
    check_complete_study(store, result, executor, 1000)
    assert batched and min(batched) >= search.BATCHED_FROM  # Optuna's TPE below it
    # TPE learned: round 0's last trials score better than its random start-up.
    values = [t.value for t in sorted(store.trials(), key=lambda t: t.number)]
    startup = sum(values[:10]) / 10
    late = sum(values[900:1000]) / 100
    assert late > startup
    assert all(math.isfinite(v) for v in values)


def test_per_trial_sampling_fallback_runs_the_same_study(tmp_path):
    store, result, executor = run_study(tmp_path, 60, batched=False)
    check_complete_study(store, result, executor, 60)


def test_optunas_public_api_only_runs_the_study_one_trial_at_a_time(tmp_path, monkeypatch):
    from hpsearch import internals, search

    monkeypatch.setenv(internals.ENV_PUBLIC_ONLY, "1")
    internals.reset()
    asked = []

    def counting(*args, **kwargs):
        asked.append(1)
        return sample_params(*args, **kwargs)

    monkeypatch.setattr(search, "sample_params", counting)
    try:
        store, result, executor = run_study(tmp_path, 30)
    finally:
        monkeypatch.delenv(internals.ENV_PUBLIC_ONLY)
        internals.reset()
    check_complete_study(store, result, executor, 30)
    assert len(asked) == 60  # every trial came from Optuna's sampler, one ask each
