"""Errors raised by the trainer.

Every message names the field (or file), the bad value and what is allowed.
"""

from __future__ import annotations


class TrainerError(Exception):
    """Root of every error the trainer raises on purpose."""


class ConfigError(TrainerError, ValueError):
    """A training option has a value that is not allowed."""


class DataError(TrainerError, ValueError):
    """A dataset is missing, malformed or cannot provide what was asked."""


class BackendUnavailableError(TrainerError, ImportError):
    """The selected backend needs an optional dependency that is not installed."""
