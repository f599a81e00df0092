"""hpsearch: distributed hyperparameter search for neural-network training.

Importing this package starts nothing; :mod:`hpsearch.results` reads the
results database with pandas without importing Ray.

The names a user's objective needs are here: :class:`Trial` (what a function
objective receives) and :class:`TrialPruned` (raise it to stop a pruned
trial); :func:`run` runs a study from Python (:mod:`hpsearch.api`).
"""

from __future__ import annotations

from typing import Any

from hpsearch.objective import Trial, TrialPruned

__version__ = "0.1.0"

__all__ = ["Trial", "TrialPruned", "run"]


def run(study: Any, storage: str | None = None, **options: Any) -> Any:
    """Run (or resume) a study; see :func:`hpsearch.api.run`."""
    from hpsearch.api import run as _run

    return _run(study, storage, **options)
