"""The two errors a user sees as one line, and the check that raises them.

Kept apart from the config package so that the light registries (``distributed_adcs.specs``,
``distributed_adcs.methods``), which the config schema imports, can validate their entries'
parameters with the same error without importing the schema back.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user (config, paths, names): the CLI prints one line and exits 2."""


class ConfigError(UsageError, ValueError):
    """A bad configuration value; ``str(err)`` is one line naming the dotted key."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


def check(ok: bool, key: str, message: str) -> None:
    """Raise ``ConfigError(key, message)`` unless ``ok``. ``key`` is relative to the dataclass
    being checked; the schema walker prefixes it with the section's dotted path."""
    if not ok:
        raise ConfigError(key, message)


def check_unit(value: float, key: str) -> None:
    """A fraction: ``value`` in [0, 1]."""
    check(0.0 <= value <= 1.0, key, f"must be in [0, 1], got {value}")
