"""The errors hpsearch raises on purpose.

The CLI turns every :class:`HPSearchError` (and the trainer's own
:class:`trainer.errors.TrainerError`) into one line on stderr and exit code 2.
Messages name the field or resource, the bad value and what is allowed.
"""

from __future__ import annotations

from trainer.errors import ConfigError as TrainerConfigError


class HPSearchError(Exception):
    """Root of every error hpsearch raises on purpose."""


class ConfigError(HPSearchError, TrainerConfigError):
    """A study file, option or override has a value that is not allowed."""


class StorageError(HPSearchError):
    """The results database URL is malformed or the database cannot be used."""


class StudyNotFoundError(HPSearchError, LookupError):
    """No study of that name exists in the results database."""


class ClusterError(HPSearchError):
    """Ray could not be started or reached."""


class ObjectiveError(HPSearchError):
    """A user's objective failed every trial of the first round (the CLI exits 1)."""
