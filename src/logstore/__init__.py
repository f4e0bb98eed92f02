"""logstore: an embedded, Kafka-format event log for Python."""

from logstore import errors
from logstore._native.codec import Record, RecordBatchView
from logstore.errors import (
    ConfigError,
    CorruptRecordError,
    InvalidArgumentError,
    InvalidRecordError,
    LogClosedError,
    LogstoreError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    UnsupportedCodecError,
)
from logstore.log import LogConfig, PartitionLog, RecoveryReport

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CorruptRecordError",
    "InvalidArgumentError",
    "InvalidRecordError",
    "LogClosedError",
    "LogConfig",
    "LogstoreError",
    "OffsetOutOfRangeError",
    "PartitionLog",
    "Record",
    "RecordBatchView",
    "RecordTooLargeError",
    "RecoveryReport",
    "UnsupportedCodecError",
    "__version__",
    "errors",
]
