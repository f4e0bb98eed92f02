"""logstore: an embedded, Kafka-format event log for Python."""

from logstore import errors
from logstore._native.codec import Record, RecordBatchView
from logstore.broker import PartitionDescription, Store, TopicConfig, TopicDescription, TopicPartition, open
from logstore.client import Consumer, ConsumerRecord, FutureRecordMetadata, Producer, RecordMetadata
from logstore.errors import (
    ConfigError,
    ConsumerError,
    CorruptRecordError,
    IllegalStateError,
    InvalidArgumentError,
    InvalidPartitionsError,
    InvalidRecordError,
    InvalidTopicError,
    LogClosedError,
    LogstoreError,
    LogstoreTimeoutError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    ProducerError,
    ProducerFencedError,
    RecordTooLargeError,
    TopicError,
    TopicExistsError,
    UnknownTopicError,
    UnsupportedCodecError,
)
from logstore.log import LogConfig, PartitionLog, RecoveryReport

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Consumer",
    "ConsumerError",
    "ConsumerRecord",
    "CorruptRecordError",
    "FutureRecordMetadata",
    "IllegalStateError",
    "InvalidArgumentError",
    "InvalidPartitionsError",
    "InvalidRecordError",
    "InvalidTopicError",
    "LogClosedError",
    "LogConfig",
    "LogstoreError",
    "LogstoreTimeoutError",
    "NoOffsetForPartitionError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "PartitionDescription",
    "PartitionLog",
    "Producer",
    "ProducerError",
    "ProducerFencedError",
    "Record",
    "RecordBatchView",
    "RecordMetadata",
    "RecordTooLargeError",
    "RecoveryReport",
    "Store",
    "TopicConfig",
    "TopicDescription",
    "TopicError",
    "TopicExistsError",
    "TopicPartition",
    "UnknownTopicError",
    "UnsupportedCodecError",
    "__version__",
    "errors",
    "open",
]
