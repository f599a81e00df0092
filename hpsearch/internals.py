"""Everything hpsearch uses of Optuna's and Ray's internals, in one place.

hpsearch reads and writes Optuna's tables directly (lean reads and batched
writes on the trial hot path) and calls a few private functions of Optuna and
Ray. None of that is public API: a new release may change it without notice.
So this module is the only one that touches it (``tests/hpsearch/
test_internals.py`` checks that no other module under ``hpsearch/`` names a
private Optuna or Ray module or attribute), and each use has a public
fallback or a stated degraded behaviour.

Tested with (the fast paths are on only for these):

* Optuna 5.1 (5.1.0), whose RDB schema is alembic revision ``v3.2.0.a``
  (``RDBStorage.get_head_version()``; ``SCHEMA_VERSION = 12`` in
  ``optuna/storages/_rdb/models.py``);
* Ray 2.60 (2.60.0).

The check runs once per process: Optuna's version at the first use of a fast
path (every storage opened through :func:`hpsearch.storage_url.open_storage`
checks it, then the database's schema revision at the first open); Ray's
version at the first private Ray call. An untested version (or a database
with another schema revision) turns that library's fast paths off for the
process, with ONE warning line saying which version and that hpsearch uses the
public API. Setting the environment variable ``HPSEARCH_PUBLIC_API_ONLY=1``
turns them off without a warning (tests use it to run the fallback end to end).

With Optuna's fast paths off (same results, slower):

* trials are read with ``RDBStorage``'s own read (no :mod:`hpsearch.lean_reads`),
  and :mod:`hpsearch.results` uses ``get_all_trials``;
* trials are created and finished with ``BaseStorage.create_new_trial``,
  ``set_trial_user_attr``, ``set_trial_intermediate_value`` and
  ``set_trial_state_values`` (one call per row, not one transaction per batch);
* round records are written as study user attributes without the study-row
  lock: several drivers on one study may then put up to one batch more trials
  into a round than its limit, and two drivers closing the same round at once
  may both write its record (one driver, the usual case, is unaffected);
* the sampler reads trials with ``Study.get_trials`` (no per-thread cache).

With Ray's private calls off: ``--address auto`` is passed to ``ray.init``
unchecked (Ray's own error when no cluster runs), ``HOST:PORT`` is probed as
given, and only the cluster launcher's bootstrap file tells whether the
cluster can grow (the autoscaler's state in the GCS is not read).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Container, Iterator
from typing import Any

logger = logging.getLogger(__name__)

ENV_PUBLIC_ONLY = "HPSEARCH_PUBLIC_API_ONLY"
"""Set to ``1`` to turn every fast path off (Optuna's and Ray's public API only)."""

TESTED_OPTUNA = ("5.1",)
"""Optuna ``major.minor`` releases the fast paths were tested with."""

TESTED_SCHEMA = ("v3.2.0.a",)
"""Optuna RDB schema revisions (alembic) the direct table reads and writes know."""

TESTED_RAY = ("2.60",)
"""Ray ``major.minor`` releases the private Ray calls were tested with."""

# None: not decided yet in this process; True/False once decided.
_optuna_fast: bool | None = None
_schema_checked = False
_ray_fast: bool | None = None


def _forced_public() -> bool:
    return os.environ.get(ENV_PUBLIC_ONLY, "").strip().lower() not in ("", "0", "false", "no")


def _minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def reset() -> None:
    """Forget the decisions (tests: a new process, as far as this module knows)."""
    global _optuna_fast, _schema_checked, _ray_fast
    _optuna_fast = None
    _schema_checked = False
    _ray_fast = None


def _off(library: str, why: str) -> None:
    logger.warning(
        "%s; its fast paths are off, using %s's public API (slower, same results)",
        why,
        library,
    )


# -- Optuna: the decision ---------------------------------------------------------------


def optuna_fast() -> bool:
    """Whether Optuna's fast paths (direct table access, private calls) are on."""
    global _optuna_fast
    if _optuna_fast is None:
        import optuna

        if _forced_public():
            _optuna_fast = False
            logger.info("%s is set: using Optuna's public API only", ENV_PUBLIC_ONLY)
        elif _minor(optuna.__version__) not in TESTED_OPTUNA:
            _optuna_fast = False
            _off(
                "Optuna",
                f"Optuna {optuna.__version__} is not a version hpsearch was tested with "
                f"({', '.join(TESTED_OPTUNA)})",
            )
        else:
            try:
                _import_models()
            except Exception as exc:  # a layout this module does not know
                _optuna_fast = False
                _off("Optuna", f"Optuna {optuna.__version__}'s storage internals differ ({exc})")
            else:
                _optuna_fast = True
    return _optuna_fast


def check_storage(storage: Any) -> bool:
    """At a storage's opening: is the installed Optuna tested, and (first open in
    this process) is the database at a schema revision this module knows?

    Returns whether the fast paths are on afterwards.
    """
    global _optuna_fast, _schema_checked
    if not optuna_fast():
        return False
    if not _schema_checked:
        _schema_checked = True
        try:
            revision = storage.get_current_version()
        except Exception as exc:  # not an RDB storage, or no alembic table
            logger.debug("schema revision unreadable: %s", exc)
            return True
        if revision not in TESTED_SCHEMA:
            _optuna_fast = False
            _off(
                "Optuna",
                f"the database's Optuna schema revision {revision} is not one hpsearch was "
                f"tested with ({', '.join(TESTED_SCHEMA)})",
            )
    return bool(_optuna_fast)


# -- Optuna: the schema (fast paths only) --------------------------------------------------


def _import_models() -> Any:
    from optuna.storages._rdb import models as optuna_models

    return optuna_models


class _Models:
    """Optuna's ORM models (``optuna.storages._rdb.models``), imported on first use."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_import_models(), name)


models: Any = _Models()
"""Optuna's table models: ``models.TrialModel``, ``models.TrialModel.__table__``, ...
Only for code on a fast path (:func:`optuna_fast` true)."""


def stores_naive_utc() -> bool:
    """Whether Optuna's trial datetime columns hold naive UTC (Optuna >= 5) rather
    than the writer's naive local time."""
    return hasattr(_import_models().TrialModel, "_datetime_start_utc")


@contextlib.contextmanager
def session(storage: Any) -> Iterator[Any]:
    """One transaction on an ``RDBStorage``'s database, as Optuna opens its own
    (commit at the end, rollback and Optuna's error mapping on failure)."""
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(storage.scoped_session) as opened:
        yield opened


# -- Optuna: private attributes and functions, each with a public fallback ---------------


def study_id(study: Any, storage: Any) -> int:
    """The id of ``study`` in ``storage``."""
    if optuna_fast():
        return study._study_id
    return storage.get_study_id_from_name(study.study_name)


def frozen_study_id(summary: Any, storage: Any) -> int:
    """The storage id of a ``FrozenStudy`` (public fallback: look it up by name)."""
    if optuna_fast():
        found = getattr(summary, "_study_id", None)
        if found is not None:
            return found
    return storage.get_study_id_from_name(summary.study_name)


def trial_id(trial: Any, storage: Any = None, study_id: int | None = None) -> int:
    """The storage id of a ``FrozenTrial`` (public fallback: look it up by number)."""
    if optuna_fast() or storage is None or study_id is None:
        return trial._trial_id
    return storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)


def study_trials(
    study: Any,
    deepcopy: bool = True,
    states: Container[Any] | None = None,
    use_cache: bool = False,
) -> list[Any]:
    """What Optuna's samplers read (``Study._get_trials``, with its per-thread cache);
    public fallback: ``Study.get_trials`` (no cache)."""
    if optuna_fast():
        return study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
    return study.get_trials(deepcopy=deepcopy, states=states)


def reset_trial_cache(study: Any) -> None:
    """Drop Optuna's per-thread trial cache of ``study`` (``Study.ask`` does this
    before sampling); nothing to drop on the public path, which keeps no cache."""
    if not optuna_fast():
        return
    thread_local = getattr(study, "_thread_local", None)
    if thread_local is not None:
        thread_local.cached_all_trials = None


def single_value(distribution: Any) -> Any:
    """The one value a single-valued distribution can take."""
    if optuna_fast():
        from optuna.distributions import _get_single_value

        return _get_single_value(distribution)
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[0]
    return distribution.low


def samples_relative(sampler: Any) -> bool:
    """Whether a Random/TPE sampler was asked to sample jointly (TPE's
    ``multivariate=True``); False: the caller samples each parameter on its own.

    The fast path reads the constructor's argument (unset counts as False); the
    public fallback says False, which is what every sampler
    :func:`hpsearch.sampling.make_sampler` builds asks for.
    """
    if optuna_fast():
        return bool(getattr(sampler, "_multivariate", False))
    return False


# -- Ray ----------------------------------------------------------------------------------


def ray_fast() -> bool:
    """Whether the private Ray calls are on (decided once per process)."""
    global _ray_fast
    if _ray_fast is None:
        import ray

        if _forced_public():
            _ray_fast = False
            logger.info("%s is set: using Ray's public API only", ENV_PUBLIC_ONLY)
        elif _minor(ray.__version__) not in TESTED_RAY:
            _ray_fast = False
            logger.warning(
                "Ray %s is not a version hpsearch was tested with (%s); its private "
                "calls are off (--address auto is not checked before ray.init, and only "
                "~/ray_bootstrap_config.yaml tells whether the cluster can grow)",
                ray.__version__,
                ", ".join(TESTED_RAY),
            )
        else:
            _ray_fast = True
    return _ray_fast


def ray_auto_address() -> str | None:
    """The ``HOST:PORT`` of the Ray cluster on this machine (what ``ray.init("auto")``
    joins), or None when the private lookup is off (let ``ray.init`` resolve it).

    Raises ConnectionError or ValueError (Ray's) when no cluster runs here.
    """
    if not ray_fast():
        return None
    from ray._private.services import canonicalize_bootstrap_address_or_die

    return canonicalize_bootstrap_address_or_die("auto")


def ray_local_ip(host: str) -> str:
    """The address Ray connects to for ``host`` (this machine's, not loopback);
    ``host`` as given when the private call is off."""
    if not ray_fast():
        return host
    from ray._private.services import resolve_ip_for_localhost

    return resolve_ip_for_localhost(host)


def ray_cluster_config() -> Any:
    """The autoscaler's cluster config in the GCS, or None (none, or calls off)."""
    if not ray_fast():
        return None
    import ray._private.state

    return ray._private.state.state.get_cluster_config()


def ray_autoscaling_status_key() -> str:
    """The GCS internal-KV key autoscaler v1 writes its status under."""
    from ray._private import ray_constants

    return ray_constants.DEBUG_AUTOSCALING_STATUS


def ray_v1_status() -> bytes | None:
    """Autoscaler v1's raw status document from the GCS, or None (none, or calls off)."""
    if not ray_fast():
        return None
    from ray.experimental.internal_kv import _internal_kv_get

    return _internal_kv_get(ray_autoscaling_status_key())


def ray_v2_status() -> Any:
    """Autoscaler v2's cluster status, or None (v1, or calls off)."""
    if not ray_fast():
        return None
    import ray
    from ray.autoscaler.v2.sdk import get_cluster_status
    from ray.autoscaler.v2.utils import is_autoscaler_v2

    if not is_autoscaler_v2(fetch_from_server=True):
        return None
    return get_cluster_status(ray.get_runtime_context().gcs_address)
