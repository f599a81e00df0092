"""Run a study from Python, in the Ray session the caller already started.

    >>> import ray
    >>> from hpsearch.config import load_study
    >>> from hpsearch.runner import run_study
    >>> ray.init()                                                # doctest: +SKIP
    >>> config = load_study("studies/quick.toml")
    >>> result = run_study(config, "sqlite:///hpsearch.db")      # doctest: +SKIP

The CLI (``hpsearch run``) adds validation before any write, progress, signal
handling and the summary around the same steps.
"""

from __future__ import annotations

from hpsearch.cluster import RayExecutor, effective_pack_size
from hpsearch.config import StudyConfig
from hpsearch.metric_scale import builtin_scale
from hpsearch.sampling import make_sampler
from hpsearch.search import NarrowingSearch, SearchObserver, SearchResult
from hpsearch.storage import StudyStore
from trainer.datasets import Dataset, load_dataset


def load_study_data(config: StudyConfig) -> Dataset:
    """The study's dataset and splits (the study seed fixes the train/validation split)."""
    return load_dataset(
        config.data.dataset,
        train_samples=config.data.train_samples,
        val_fraction=config.data.val_fraction,
        seed=config.seed,
    )


def run_study(
    config: StudyConfig,
    storage: str,
    *,
    data: Dataset | None = None,
    workers: int | None = None,
    pack_size: int | None = None,
    final_eval: bool | None = None,
    observer: SearchObserver | None = None,
    wait_for_workers: bool = False,
) -> SearchResult:
    """Run (or resume) ``config`` into ``storage`` on the current Ray session.

    Args:
        config: The validated study.
        storage: Results database URL.
        data: The dataset (default: loaded from the study's ``[data]``).
        workers: Parallel trials (default: the study's, else the cluster's CPUs).
        pack_size: Trials per pack (default: from the study, see
            :func:`hpsearch.cluster.effective_pack_size`).
        final_eval: Override the study's final evaluation setting.
        observer: Progress events.
        wait_for_workers: Start every worker before the search begins (for
            benchmarks that time the search alone).

    Raises:
        ConfigError: No node of the cluster can hold one trial
            (``resources.cpus_per_trial`` / ``gpus_per_trial``) and no
            autoscaler can add one; raised before anything is written. With an
            autoscaler this waits instead, logging what is missing every 30 s.
    """
    data = data if data is not None else load_study_data(config)
    if pack_size is None:
        pack_size = effective_pack_size(config, data.n_features, data.n_classes)
    # First: one trial must fit on a node (else ConfigError, nothing written).
    # Then workers start in the background while the database opens.
    executor = RayExecutor(
        data,
        workers=workers or config.resources.workers,
        cpus_per_trial=config.resources.cpus_per_trial,
        gpus_per_trial=config.resources.gpus_per_trial,
        pruner=config.pruner,
        prune_after=config.prune_after,
        direction=config.direction,
        study_name=config.name,
        max_epochs=int(config.model.get("epochs", 1)),
        pack_size=pack_size,
    )
    try:
        sampler = make_sampler(config.sampler, config.seed)
        store, _ = StudyStore.open(
            storage, config.name, direction=config.direction, sampler=sampler, create=True
        )
        if wait_for_workers:
            executor.ready()
        return NarrowingSearch(
            config,
            store,
            executor,
            sampler,
            observer=observer,
            final_eval=final_eval,
            scale=builtin_scale(config.metric, data),
        ).run()
    finally:
        executor.close()
