"""Exception hierarchy: every error streamlearn raises on purpose derives from StreamlearnError.

The CLI turns these into one-line messages and exit codes (2 for usage and
configuration errors, 1 for runtime failures), so callers never see a traceback.

>>> err = ConfigError("learner.lr", "must be greater than 0")
>>> str(err)
'learner.lr: must be greater than 0'
>>> isinstance(err, StreamlearnError)
True
>>> SchemaError("wrong_dimension", "expected 8 features, got 3").reason
'wrong_dimension'
"""

from __future__ import annotations

__all__ = [
    "StreamlearnError",
    "ConfigError",
    "SchemaError",
    "CheckpointError",
    "KafkaSetupError",
    "UsageError",
    "DirectoryInUseError",
]


class StreamlearnError(Exception):
    """Root of all errors raised deliberately by streamlearn."""


class ConfigError(StreamlearnError):
    """Invalid or unreadable configuration; names the offending field and why."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class SchemaError(StreamlearnError):
    """An input record that cannot be used; `reason` is machine-readable, `detail` is for humans."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class CheckpointError(StreamlearnError):
    """A checkpoint could not be written, found, or read back."""


class KafkaSetupError(StreamlearnError):
    """The Kafka broker or its topics could not be reached or prepared."""


class UsageError(StreamlearnError):
    """The command line was used wrongly (bad arguments, missing input file)."""


class DirectoryInUseError(UsageError):
    """A checkpoint directory another streamlearn process is writing (exit 2: choose another one)."""
