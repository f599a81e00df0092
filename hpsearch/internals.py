"""Everything that touches Optuna's (or Ray's) private API, in one place (issue 14 item 7).

Each section names what it uses, the Optuna releases it was tested with, and
the public-API path taken when the private one is missing or the installed
release is not one of those (slower, correct).
"""

from __future__ import annotations

# =============================================================================
# Batched TPE (issue 15): Optuna's Parzen estimators, fitted once per batch.
#
# hpsearch.proposer.BatchTPEProposer draws a batch of trials from one fit of
# TPE's two density estimators, exactly as TPESampler.sample_independent does
# for one trial (same estimator, same split, same weights), so it needs:
#   optuna.samplers._tpe.parzen_estimator._ParzenEstimator
#   optuna.samplers._tpe.sampler.default_gamma
#   TPESampler._n_startup_trials, ._n_ei_candidates, ._parzen_estimator_parameters,
#   ._gamma, ._multivariate, ._constant_liar, ._group_decomposed_search_space,
#   ._constraints_func
# hpsearch samples TPE independently per parameter (hpsearch.sampling: a
# multivariate=None sampler is asked parameter by parameter), with Optuna 5's
# default constant liar (running trials count among the worse ones).
# Fallback (tpe_settings returns None): the driver asks the sampler one trial
# at a time through its public interface (hpsearch.sampling.sample_params).
# =============================================================================
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution

_logger = logging.getLogger(__name__)

TPE_TESTED_OPTUNA = ("5.0", "5.1")
"""Optuna releases (major.minor) whose TPE internals the batched proposer was tested with."""


@dataclass(frozen=True)
class TPESettings:
    """What a :class:`optuna.samplers.TPESampler` would do, for the batched proposer."""

    n_startup_trials: int
    n_ei_candidates: int
    constant_liar: bool
    """Running trials join the worse group (``g(x)``), as TPESampler's constant liar."""
    gamma: Callable[[int], int]
    fit: Callable[[Mapping[str, np.ndarray], Mapping[str, BaseDistribution]], Any]
    """``fit(observations, space)``: a Parzen estimator with ``sample(rng, size)``
    and ``log_pdf(samples)``, as TPESampler builds it."""


def _optuna_release() -> str:
    return ".".join(optuna.__version__.split(".")[:2])


def tpe_settings(sampler: optuna.samplers.BaseSampler) -> TPESettings | None:
    """The batched proposer's view of ``sampler``; None when it cannot stand in for it.

    None (with one warning line for a TPE sampler) when the installed Optuna is
    not one of :data:`TPE_TESTED_OPTUNA` or its internals moved, and for TPE
    options the proposer does not reproduce (multivariate=True, group,
    constraints): the driver then samples one trial at a time.
    """
    if not isinstance(sampler, optuna.samplers.TPESampler):
        return None
    if _optuna_release() not in TPE_TESTED_OPTUNA:
        _logger.warning(
            "Optuna %s is not one hpsearch's batched TPE was tested with (%s); sampling one "
            "trial at a time (slower, same method)",
            optuna.__version__,
            ", ".join(TPE_TESTED_OPTUNA),
        )
        return None
    try:
        from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator
        from optuna.samplers._tpe.sampler import default_gamma

        parameters = sampler._parzen_estimator_parameters
        n_startup = int(sampler._n_startup_trials)
        n_ei = int(sampler._n_ei_candidates)
        gamma = sampler._gamma or default_gamma
        constant_liar = bool(sampler._constant_liar)
        special = (
            sampler._multivariate is True,  # hpsearch.sampling asks it relative: not ours
            sampler._group_decomposed_search_space is not None,
            sampler._constraints_func is not None,
        )
    except (ImportError, AttributeError) as exc:
        _logger.warning(
            "Optuna %s's TPE internals are not where hpsearch expects them (%s); sampling one "
            "trial at a time (slower, same method)",
            optuna.__version__,
            exc,
        )
        return None
    if any(special):
        return None

    def fit(observations: Mapping[str, np.ndarray], space: Mapping[str, BaseDistribution]) -> Any:
        return _ParzenEstimator(dict(observations), dict(space), parameters)

    return TPESettings(
        n_startup_trials=n_startup,
        n_ei_candidates=n_ei,
        constant_liar=constant_liar,
        gamma=gamma,
        fit=fit,
    )
