"""The Python API: run a study from a study file or a :class:`~hpsearch.config.StudyConfig`.

    >>> import hpsearch
    >>> result = hpsearch.run("examples/sklearn/study.toml",        # doctest: +SKIP
    ...                       storage="sqlite:///hpsearch.db")
    >>> result.best_trial.params                                      # doctest: +SKIP

:func:`run` is what ``hpsearch run`` does without the command line around it
(progress, signals, warm start, the summary): the study file is checked, the
user's objective too (:func:`hpsearch.objective.check_objective`), all before
anything is written; Ray is started locally, or the caller's session (or
``address``) is used; the executor is built (:func:`make_executor`, the one
place that builds it, for the CLI too); a new study records its study file,
overrides and metric (:func:`record_new_study`); the narrowing search runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hpsearch.config import StudyConfig, load_study
from hpsearch.errors import ConfigError

__all__ = [
    "check",
    "load",
    "load_data",
    "make_executor",
    "metric_scale_of",
    "record_new_study",
    "run",
]


def load(study: str | os.PathLike[str] | StudyConfig) -> StudyConfig:
    """The validated study: ``study`` itself, or the study file it names."""
    if isinstance(study, StudyConfig):
        return study
    return load_study(study)


def load_data(config: StudyConfig, *, where: str | None = None) -> Any:
    """The built-in objective's dataset and splits (the study seed fixes the split);
    None for a user's objective, which loads its own data.

    Raises:
        ConfigError: The data cannot be loaded (naming ``where``, the study
            file, when given).
    """
    if config.data is None:
        return None
    from trainer.datasets import load_dataset
    from trainer.errors import DataError

    try:
        return load_dataset(
            config.data.dataset,
            train_samples=config.data.train_samples,
            val_fraction=config.data.val_fraction,
            seed=config.seed,
        )
    except DataError as exc:
        if where is None:
            raise
        raise ConfigError(" ".join(f"{exc}; check the [data] section of {where}".split())) from exc


def check(config: StudyConfig) -> None:
    """What must hold before anything runs or is written, beyond the study file:
    the user's objective imports (or its command is executable) and its folder
    is small enough to ship (see :func:`hpsearch.objective.check_objective`)."""
    from hpsearch.objective import check_objective

    check_objective(config)


def metric_scale_of(config: StudyConfig, data: Any) -> Any:
    """The metric's floor and noise the round rule uses (known for the built-in
    objective's metrics; estimated from the curves for a user's)."""
    from hpsearch.metric_scale import builtin_scale
    from hpsearch.round_rule import MetricScale

    if data is None:
        return MetricScale()
    return builtin_scale(config.metric, data)


def make_executor(
    config: StudyConfig,
    data: Any,
    *,
    workers: int | None = None,
    pack_size: int | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Any:
    """The Ray executor of ``config`` in the current Ray session.

    Args:
        config: The study.
        data: :func:`load_data`'s dataset (None for a user's objective).
        workers: Parallel trials (default: the study's, else the cluster's room).
        pack_size: Trials per pack (default:
            :func:`hpsearch.cluster.effective_pack_size`; always 1 for a
            user's objective).
        on_wait: Told what is missing while an autoscaler adds a node.

    Raises:
        ConfigError: No node can hold one trial (and no autoscaler can add one).
    """
    from hpsearch.cluster import RayExecutor, effective_pack_size
    from hpsearch.objective import pack_folder

    if not config.builtin:
        pack_size = 1
        max_steps = config.objective.max_steps or 1
    else:
        max_steps = int(config.model.get("epochs", 1))
        if pack_size is None:
            pack_size = effective_pack_size(config, data.n_features, data.n_classes)
    return RayExecutor(
        data,
        workers=workers or config.resources.workers,
        cpus_per_trial=config.resources.cpus_per_trial,
        gpus_per_trial=config.resources.gpus_per_trial,
        pruner=config.pruner,
        prune_after=config.prune_after,
        direction=config.direction,
        study_name=config.name,
        max_epochs=max_steps,
        pack_size=pack_size,
        on_wait=on_wait,
        code=None if config.builtin else pack_folder(config.folder or os.getcwd()),
    )


def record_new_study(store: Any, config: StudyConfig) -> None:
    """Record a new study's file, overrides and metric (resume and reports read them)."""
    from hpsearch import records

    store.set_study_attr(records.STUDY_FILE_KEY, config.source_text)
    store.set_study_attr(records.OVERRIDES_KEY, dict(config.overrides))
    store.set_study_attr(records.METRIC_KEY, config.metric)


def run(
    study: str | os.PathLike[str] | StudyConfig,
    storage: str | None = None,
    *,
    address: str | None = None,
    data: Any = None,
    workers: int | None = None,
    pack_size: int | None = None,
    final_eval: bool | None = None,
    observer: Any = None,
    wait_for_workers: bool = False,
) -> Any:
    """Run (or resume) a study; returns its :class:`~hpsearch.search.SearchResult`.

    Args:
        study: A study file's path, or a :class:`~hpsearch.config.StudyConfig`
            (with a user's objective, load it with
            :func:`~hpsearch.config.load_study` so it knows its folder).
        storage: Results database URL (default ``sqlite:///hpsearch.db``).
        address: Ray cluster to join when this process has no Ray session
            (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``); default: the
            session already open, else Ray started locally and shut down after.
        data: The built-in objective's dataset (default: the study's ``[data]``).
        workers: Parallel trials (default: the study's, else the cluster's CPUs).
        pack_size: Trials per pack for the built-in objective.
        final_eval: Override the study's final evaluation setting.
        observer: A :class:`~hpsearch.search.SearchObserver` for progress events.
        wait_for_workers: Start every worker before the search begins.

    Raises:
        ConfigError: The study, its objective or its data are not usable, or
            no node can hold a trial; raised before anything is written.
        ObjectiveError: Every trial of the first round of a user's objective failed.
    """
    from hpsearch.cluster import ray_session
    from hpsearch.sampling import make_sampler
    from hpsearch.search import NarrowingSearch
    from hpsearch.storage import DEFAULT_STORAGE, StudyStore

    config = load(study)
    check(config)
    url = storage or DEFAULT_STORAGE
    if data is None:
        data = load_data(config)
    with ray_session(address):
        executor = make_executor(config, data, workers=workers, pack_size=pack_size)
        try:
            sampler = make_sampler(config.sampler, config.seed)
            store, existed = StudyStore.open(
                url, config.name, direction=config.direction, sampler=sampler, create=True
            )
            if not existed:
                record_new_study(store, config)
            if wait_for_workers:
                executor.ready()
            return NarrowingSearch(
                config,
                store,
                executor,
                sampler,
                observer=observer,
                final_eval=final_eval,
                scale=metric_scale_of(config, data),
            ).run()
        finally:
            executor.close()
