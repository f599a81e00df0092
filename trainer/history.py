"""What one training run produced: a record per epoch and how the run ended.

Conventions:
    * ``epoch`` is 1-based: record ``k`` describes the model after ``k`` passes.
    * Losses are the mean cross-entropy over the split, evaluated in inference
      mode (batch norm running statistics, no dropout), without the weight
      decay term, so train and validation losses are comparable.
    * Accuracies are fractions in [0, 1].
    * A split with no samples (e.g. no validation split) records NaN.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class EpochRecord:
    """Metrics after one epoch of training."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class History:
    """The per-epoch records of one run and how it ended.

    Attributes:
        records: One :class:`EpochRecord` per completed epoch, in order.
        stopped: True when the callback asked the run to stop early.
        stopped_at_epoch: The epoch after which the callback stopped the run.
        diverged: True when a training loss became NaN or infinite; the run
            ended at that point and the epoch it happened in is not recorded.
        diverged_at_epoch: The 1-based epoch in which the loss diverged.
        seconds: Wall time of the whole run, including evaluation.
        test_loss: Inference-mode loss on the test split, only when the caller
            asked for a test evaluation (never during tuning); else NaN.
        test_accuracy: Likewise for accuracy.
    """

    records: tuple[EpochRecord, ...] = ()
    stopped: bool = False
    stopped_at_epoch: int | None = None
    diverged: bool = False
    diverged_at_epoch: int | None = None
    seconds: float = 0.0
    test_loss: float = field(default=math.nan)
    test_accuracy: float = field(default=math.nan)

    @property
    def epochs_completed(self) -> int:
        return len(self.records)

    @property
    def final(self) -> EpochRecord | None:
        """The last completed epoch, or None when no epoch completed."""
        return self.records[-1] if self.records else None

    @property
    def final_val_accuracy(self) -> float:
        """Validation accuracy after the last completed epoch (NaN if none)."""
        return self.records[-1].val_accuracy if self.records else math.nan

    @property
    def best_val_accuracy(self) -> float:
        """Highest validation accuracy over the completed epochs (NaN if none)."""
        values = [r.val_accuracy for r in self.records if not math.isnan(r.val_accuracy)]
        return max(values) if values else math.nan

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` inverts it."""
        out = asdict(self)
        out["records"] = [r.to_dict() for r in self.records]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        records = tuple(EpochRecord(**r) for r in data.get("records", ()))
        rest = {k: v for k, v in data.items() if k != "records"}
        return cls(records=records, **rest)
