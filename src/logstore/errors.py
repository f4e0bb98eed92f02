"""The one error tree of logstore: every error it raises on purpose is a LogstoreError."""

from __future__ import annotations

__all__ = [
    "LogstoreError",
    "ConfigError",
    "CorruptRecordError",
    "InvalidArgumentError",
    "InvalidRecordError",
    "LogClosedError",
    "OffsetOutOfRangeError",
    "RecordTooLargeError",
    "UnsupportedCodecError",
]


class LogstoreError(Exception):
    """Root of every error logstore raises on purpose."""


class ConfigError(LogstoreError, ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


class InvalidArgumentError(LogstoreError, ValueError, TypeError):
    """An argument is of the wrong type or out of range; nothing was changed.

    It is both a ``ValueError`` and a ``TypeError`` so callers catching either keep working.
    """


class InvalidRecordError(InvalidArgumentError):
    """A record or batch handed to an append is malformed or of the wrong type; nothing was written."""


class RecordTooLargeError(InvalidRecordError):
    """A record (or raw batch) is larger than the log's ``max_record_bytes``."""


class CorruptRecordError(LogstoreError):
    """Bytes read from disk failed validation (size, magic or CRC32C); they are never served."""


class UnsupportedCodecError(LogstoreError):
    """A batch uses a compression codec this build cannot decode."""


class OffsetOutOfRangeError(LogstoreError, IndexError):
    """An offset is below the log start offset or above the log end offset."""


class LogClosedError(LogstoreError):
    """The log (or store) was used after ``close()``."""
