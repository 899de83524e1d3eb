"""Errors that reach the user as one clear paragraph instead of a traceback.

Every error names the problem and the fix. `python -m bench` prints the message alone and
exits non-zero; anything else is a bug and keeps its traceback.
"""


class BenchError(Exception):
    """Base class: a user-facing problem with a one-paragraph explanation."""


class ConfigError(BenchError):
    """A configuration value is invalid (unknown option, out-of-range hyperparameter...)."""


class DatasetNotFoundError(BenchError):
    """A dataset folder or file is missing; the message says how to get it."""


class CheckpointError(BenchError):
    """A weights file is missing, corrupt, or unsafe to load (pickle-based)."""


def require(condition: bool, message: str) -> None:
    """Raise a ConfigError with `message` unless `condition` holds (hyperparameter validation)."""
    if not condition:
        raise ConfigError(message)
