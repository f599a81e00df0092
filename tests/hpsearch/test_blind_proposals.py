"""A learning sampler (TPE) is not handed a whole round blind by a deep executor queue."""

from __future__ import annotations

import pytest

from hpsearch.config import parse_study
from hpsearch.sampling import make_sampler
from hpsearch.search import BLIND_TRIALS, NarrowingSearch
from hpsearch.storage import StudyStore
from hpsearch.worker import TrialOutcome

STUDY = """
[study]
name = "blind"
seed = 0
sampler = "{sampler}"

[data]
dataset = "digits"

[model]
hidden_sizes = [8]
epochs = 1

[search.lr]
low = 1e-4
high = 1.0
log = true

[narrowing]
rounds = 1
trials_per_round = 99
top_k = 3
"""


class PackingExecutor:
    """Like RayExecutor with packs of 16 on 2 workers, 3 calls queued per worker:
    room for 96 trials; each wait() finishes the oldest pack."""

    pack_size = 16
    workers = 2
    capacity = 96
    low_water = 32

    def __init__(self) -> None:
        self._packs: list[list] = []
        self.most_in_flight = 0
        self.finished_before: list[int] = []  # trials finished when each trial was sent

    @property
    def in_flight(self) -> int:
        return sum(len(p) for p in self._packs)

    def _finished(self) -> int:
        return len(self.finished_before) - self.in_flight

    def submit(self, task) -> None:
        self.submit_pack([task])

    def submit_pack(self, tasks) -> None:
        done = self._finished()
        self.finished_before.extend(done for _ in tasks)
        self._packs.append(list(tasks))
        self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def in_flight_tasks(self):
        return [t for p in self._packs for t in p]

    def cancel_all(self) -> None:
        self._packs.clear()

    def wait(self, timeout=None):
        pack = self._packs.pop(0)
        record = {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0,
                  "val_accuracy": 0.5, "seconds": 0.0}  # fmt: skip
        return [
            TrialOutcome(
                number=t.number,
                trial_id=t.trial_id,
                round=t.round,
                seed=t.seed,
                params=t.params,
                state="COMPLETE",
                value=1.0 - abs(t.params["lr"] - 0.1),
                history={"records": [record]},
            )
            for t in pack
        ]


@pytest.mark.parametrize(("sampler", "most"), [("tpe", 32), ("random", 96)])
def test_tpe_sees_results_before_most_of_a_round_is_proposed(tmp_path, sampler, most):
    config = parse_study(STUDY.format(sampler=sampler))
    optuna_sampler = make_sampler(config.sampler, config.seed)
    store, _ = StudyStore.open(
        f"sqlite:///{tmp_path / 'b.db'}", config.name, direction="maximize",
        sampler=optuna_sampler, create=True,
    )  # fmt: skip
    executor = PackingExecutor()
    NarrowingSearch(config, store, executor, optuna_sampler, final_eval=False).run()
    assert len(store.trials()) == 99
    assert executor.most_in_flight == most
    blind = sum(1 for n in executor.finished_before if n == 0)
    if sampler == "tpe":  # only the first packs are proposed before any result
        assert blind <= max(executor.low_water, BLIND_TRIALS)
        assert max(executor.finished_before) >= 99 - 32  # the last ones saw most results
    else:  # random search needs no results: the queue stays deep
        assert blind == 96
