"""Run a study from Python, in the Ray session the caller already started.

    >>> import ray
    >>> from hpsearch.config import load_study
    >>> from hpsearch.runner import run_study
    >>> ray.init()                                                # doctest: +SKIP
    >>> config = load_study("studies/quick.toml")
    >>> result = run_study(config, "sqlite:///hpsearch.db")      # doctest: +SKIP

A thin name kept for callers of before :mod:`hpsearch.api`: :func:`run_study`
is :func:`hpsearch.api.run` (which also starts Ray when no session is open).
The CLI (``hpsearch run``) adds validation before any write, progress, signal
handling and the summary around the same steps.
"""

from __future__ import annotations

from typing import Any

from hpsearch import api
from hpsearch.config import StudyConfig
from hpsearch.search import SearchObserver, SearchResult


def load_study_data(config: StudyConfig) -> Any:
    """The study's dataset and splits (the study seed fixes the train/validation
    split); None for a user's objective."""
    return api.load_data(config)


def run_study(
    config: StudyConfig,
    storage: str,
    *,
    data: Any = None,
    workers: int | None = None,
    pack_size: int | None = None,
    final_eval: bool | None = None,
    observer: SearchObserver | None = None,
    wait_for_workers: bool = False,
) -> SearchResult:
    """Run (or resume) ``config`` into ``storage`` on the current Ray session
    (:func:`hpsearch.api.run`; the arguments are its own).

    Raises:
        ConfigError: No node of the cluster can hold one trial
            (``resources.cpus_per_trial`` / ``gpus_per_trial``) and no
            autoscaler can add one, or the user's objective is not usable;
            raised before anything is written. With an autoscaler this waits
            instead, logging what is missing every 30 s.
    """
    return api.run(
        config,
        storage,
        data=data,
        workers=workers,
        pack_size=pack_size,
        final_eval=final_eval,
        observer=observer,
        wait_for_workers=wait_for_workers,
    )
