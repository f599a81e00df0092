"""A stand-in for a large cluster: trials "finish" after a set delay, with no training.

:class:`FakeExecutor` has the interface of :class:`hpsearch.cluster.RayExecutor`
(``capacity``, ``low_water``, ``in_flight``, ``submit``/``submit_pack``/
``submit_chain``, ``wait``, ``in_flight_tasks``, ``cancel_all``, ``close``,
``preload_pruner``, ``pack_size``, ``chain_size``, ``workers``) but runs
nothing: a submitted trial is due ``delay`` seconds later and :meth:`wait`
returns it then, with a value computed from its parameters by a cheap
function and an epoch curve that rises to that value. The driver does all of
its usual work (sampling, writing, recording, round rule), so a study run on
it measures the driver's ceiling: how many trials per minute one driver can
hand out and record, whatever the cluster's size.

With a pruner, an in-process :class:`hpsearch.pruning.PruningOracle` judges
each epoch as the oracle actor does on a cluster; its cost is then counted in
the driver's process (on a cluster it runs in its own process).

Used by ``benchmarks/driver_scale.py`` and the tests; never by ``hpsearch run``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from hpsearch.cluster import QueueLimits
from hpsearch.worker import TrialOutcome, TrialTask

ValueFn = Callable[[Mapping[str, Any], int], float]


def bowl(params: Mapping[str, Any], seed: int) -> float:
    """A smooth score in (0, 1] with one peak, plus a little seeded noise.

    Numeric parameters count by their decade (log10 of positive values, the
    value itself otherwise) against a target of -2 (0.01); a boolean adds 0.05
    when true. The noise (below 0.005) is a function of ``seed``, so a trial's
    value is reproducible.
    """
    distance = 0.0
    bonus = 0.0
    for value in params.values():
        if isinstance(value, bool):
            bonus += 0.05 if value else 0.0
        elif isinstance(value, (int, float)):
            z = math.log10(value) if value > 0 else float(value)
            distance += (z + 2.0) ** 2
    noise = ((seed * 2654435761) % 1000) / 200_000.0
    return min(1.0, math.exp(-distance / 8.0) * 0.9 + bonus + noise)


@dataclasses.dataclass
class _Call:
    due: float
    tasks: list[TrialTask]


class FakeExecutor(QueueLimits):
    """Finishes each call ``delay`` seconds after it was submitted, training nothing.

    Args:
        workers: Calls that run at once (as ``RayExecutor``'s ``workers``).
        delay: Seconds from submit to finished (0: at the next :meth:`wait`).
        queue_depth: Calls queued per worker (``RayExecutor``'s default, 3).
        epochs: Epochs in each fake curve (the pruner judges each).
        pruner: ``none`` or a name of :data:`hpsearch.pruning.PRUNERS`.
        direction: The study's direction (for the pruner).
        value_fn: ``(params, seed) -> value`` (default :func:`bowl`).
        pack_size: Trials per pack (1: no packing).
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        delay: float = 0.0,
        queue_depth: int = 3,
        epochs: int = 1,
        pruner: str = "none",
        direction: str = "maximize",
        value_fn: ValueFn | None = None,
        pack_size: int = 1,
        prune_after: int | None = None,
    ) -> None:
        self.workers = workers
        self.delay = delay
        self.queue_depth = queue_depth
        self.pack_size = max(1, pack_size)
        self.chain_size = 1
        self.epochs = max(1, epochs)
        self.direction = direction
        self._value_fn = value_fn or bowl
        self._calls: deque[_Call] = deque()
        self.submitted = 0
        self.oracle = None
        if pruner != "none":
            from hpsearch.pruning import PruningOracle

            self.oracle = PruningOracle(pruner, direction, "fake", self.epochs, prune_after)

    # -- RayExecutor's interface ------------------------------------------
    @property
    def in_flight(self) -> int:
        return sum(len(c.tasks) for c in self._calls)

    def ready(self) -> None:
        """Nothing to start."""

    def preload_pruner(self, trials: list[tuple[int, str, float | None, dict[int, float]]]) -> None:
        if self.oracle is not None and trials:
            self.oracle.preload(trials)

    def submit(self, task: TrialTask) -> None:
        self.submit_pack([task])

    def submit_pack(self, tasks: list[TrialTask]) -> None:
        self._calls.append(_Call(time.monotonic() + self.delay, list(tasks)))
        self.submitted += len(tasks)

    def submit_chain(self, tasks: list[TrialTask]) -> None:
        self.submit_pack(tasks)

    def in_flight_tasks(self) -> list[TrialTask]:
        return [t for c in self._calls for t in c.tasks]

    def cancel_all(self) -> None:
        self._calls.clear()

    def close(self) -> None:
        self._calls.clear()

    def wait(self, timeout: float | None = None) -> list[TrialOutcome]:
        """Every call due by now; when none is, sleep until the first is (or ``timeout``)."""
        if not self._calls:
            return []
        now = time.monotonic()
        first = self._calls[0].due  # calls are due in submit order (one delay)
        if first > now:
            pause = first - now if timeout is None else min(first - now, timeout)
            time.sleep(max(0.0, pause))
            now = time.monotonic()
        outcomes: list[TrialOutcome] = []
        while self._calls and self._calls[0].due <= now:
            for task in self._calls.popleft().tasks:
                outcomes.append(self._outcome(task))
        return outcomes

    # -- the fake trial ---------------------------------------------------
    def _outcome(self, task: TrialTask) -> TrialOutcome:
        final = float(self._value_fn(task.params, task.seed))
        records = []
        state = "COMPLETE"
        value = final
        for epoch in range(1, self.epochs + 1):
            accuracy = final * epoch / self.epochs
            records.append(
                {
                    "epoch": epoch,
                    "train_loss": 1.0 - accuracy,
                    "train_accuracy": accuracy,
                    "val_loss": 1.0 - accuracy,
                    "val_accuracy": accuracy,
                    "seconds": 0.0,
                }
            )
            metric = accuracy if task.metric != "val_loss" else 1.0 - accuracy
            value = metric
            if self.oracle is not None and self.oracle.report(task.number, epoch, metric):
                state = "PRUNED"
                break
        if self.oracle is not None:
            self.oracle.finish(task.number, state, value)
        return TrialOutcome(
            number=task.number,
            trial_id=task.trial_id,
            round=task.round,
            seed=task.seed,
            params=task.params,
            state=state,
            value=value,
            history={"records": records},
            node="fake",
            backend="fake",
            train_seconds=0.0,
        )
