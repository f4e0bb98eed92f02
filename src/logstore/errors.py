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
    "TopicError",
    "InvalidTopicError",
    "TopicExistsError",
    "UnknownTopicError",
    "InvalidPartitionsError",
    "ProducerError",
    "OutOfOrderSequenceError",
    "ProducerFencedError",
    "ConsumerError",
    "NoOffsetForPartitionError",
    "IllegalStateError",
    "LogstoreTimeoutError",
    "GroupError",
    "CommitFailedError",
    "FencedInstanceIdError",
    "UnknownGroupError",
    "GroupNotEmptyError",
    "OutboxError",
    "UnsupportedConnectionError",
    "DeadLetterError",
    "DeadLetterPublishError",
    "UnknownDeadLetterError",
    "DeadLetterStatusError",
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


# -- broker: topics -------------------------------------------------------------------------


class TopicError(LogstoreError):
    """Base of the errors about topics and partitions."""


class InvalidTopicError(TopicError, InvalidArgumentError):
    """A topic name is not legal (characters, length, collision with another topic's name)."""


class TopicExistsError(TopicError):
    """``create_topic`` for a name that already exists (Kafka: TopicAlreadyExists)."""


class UnknownTopicError(TopicError, KeyError):
    """The topic or partition does not exist (Kafka: UnknownTopicOrPartition)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class InvalidPartitionsError(TopicError, InvalidArgumentError):
    """A partition count that is not allowed (not positive, or shrinking a topic)."""


# -- producer -------------------------------------------------------------------------------


class ProducerError(LogstoreError):
    """Base of the errors of the idempotent producer protocol."""


class OutOfOrderSequenceError(ProducerError):
    """A batch's sequence number is not the next one the partition expects from its producer."""


class ProducerFencedError(ProducerError):
    """A producer epoch is older than the partition has seen from that producer id."""


# -- consumer -------------------------------------------------------------------------------


class ConsumerError(LogstoreError):
    """Base of the consumer's errors."""


class NoOffsetForPartitionError(ConsumerError):
    """No position for a partition and ``auto_offset_reset="none"``."""


class IllegalStateError(ConsumerError):
    """A consumer call that its state does not allow (e.g. seek on an unassigned partition)."""


class LogstoreTimeoutError(LogstoreError, TimeoutError):
    """An operation did not complete within its timeout."""


# -- consumer groups ------------------------------------------------------------------------


class GroupError(ConsumerError):
    """Base of the errors of consumer groups (membership, commits, group admin)."""


class CommitFailedError(GroupError):
    """A commit was rejected: the member is not (or no longer) in the group's current generation,
    or does not own a partition it commits; nothing was stored."""


class FencedInstanceIdError(GroupError):
    """Another consumer joined with this consumer's ``group_instance_id``: this one is fenced."""


class UnknownGroupError(GroupError, KeyError):
    """The group does not exist (no members and no committed offsets)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class GroupNotEmptyError(GroupError):
    """A group admin operation that needs an empty group (reset offsets, delete) on an active one."""


# -- failure handling: outbox and dead letters -----------------------------------------------


class OutboxError(LogstoreError):
    """Base of the transactional outbox's errors."""


class UnsupportedConnectionError(OutboxError, InvalidArgumentError):
    """The outbox was handed a database connection of a kind it does not support."""


class DeadLetterError(LogstoreError):
    """Base of the dead-letter queue helpers' errors."""


class DeadLetterPublishError(DeadLetterError):
    """A record could not be written to its dead-letter (or retry) topic, e.g. it is too large for
    the topic even with the dead-letter headers trimmed; the record is not skipped."""


class UnknownDeadLetterError(DeadLetterError, KeyError):
    """No dead-letter entry has that id (``"partition:offset"`` in the ``.dlq`` topic)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class DeadLetterStatusError(DeadLetterError, InvalidArgumentError):
    """The status of a dead-letter entry does not allow the operation (e.g. replaying a discarded one)."""
