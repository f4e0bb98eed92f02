"""Names of the topics that go with a source topic, and creating them when missing.

For a source topic ``T``:

- ``T.dlq``: dead letters; as many partitions as ``T`` (a record keeps its partition number), the
  retention of ``T`` counted from the failure, and room for the dead-letter headers.
- ``T.dlq.status``: compacted, one partition; the status of dead-letter entries (replayed,
  discarded), keyed by entry.
- ``T.retry``: non-blocking retries and parked records; as many partitions as ``T`` (a key's
  records stay in one partition), grown with it.
- ``T.retry.checkpoint``: compacted, one partition; per retry partition and group, the first
  retry offset not yet finished (where a restarted processor resumes).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from logstore.broker.types import TopicPartition
from logstore.dlq.headers import MAX_DLQ_HEADER_BYTES, MAX_RETRY_HEADER_BYTES
from logstore.errors import InvalidPartitionsError, LogstoreTimeoutError, TopicExistsError, UnknownTopicError

if TYPE_CHECKING:
    from logstore._native.codec import Record
    from logstore.broker.store import Store

__all__ = ["DLQ_SUFFIX", "RETRY_SUFFIX", "STATUS_SUFFIX", "CHECKPOINT_SUFFIX", "dlq_topic", "retry_topic",
           "status_topic", "checkpoint_topic", "is_derived", "ensure_dlq_topic", "ensure_retry_topic",
           "ensure_compacted_topic", "read_partitions"]

DLQ_SUFFIX = ".dlq"
RETRY_SUFFIX = ".retry"
STATUS_SUFFIX = ".dlq.status"
CHECKPOINT_SUFFIX = ".retry.checkpoint"
_MAX_MESSAGE_BYTES = 2**31 - 1
# two records' worth of varint and batch framing on top of the capped headers
_HEADER_SLACK = 1024


def dlq_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


def retry_topic(topic: str) -> str:
    return topic + RETRY_SUFFIX


def status_topic(topic: str) -> str:
    return topic + STATUS_SUFFIX


def checkpoint_topic(topic: str) -> str:
    return topic + CHECKPOINT_SUFFIX


def is_derived(topic: str) -> bool:
    """Whether ``topic`` is named like one of the topics this package creates."""
    return topic.endswith((DLQ_SUFFIX, RETRY_SUFFIX, STATUS_SUFFIX, CHECKPOINT_SUFFIX))


def _create(store: Store, name: str, partitions: int, config: dict[str, Any]) -> None:
    try:
        store.create_topic(name, partitions, config)
    except TopicExistsError:  # another processor created it meanwhile
        pass


def _derived_config(store: Store, source: str, header_bytes: int) -> dict[str, Any]:
    config = store.topic_config(source)
    return {
        "retention_ms": config.retention_ms,
        "retention_bytes": -1,  # size retention would drop records still waiting to be handled
        "max_message_bytes": min(_MAX_MESSAGE_BYTES, config.max_message_bytes + header_bytes + _HEADER_SLACK),
    }


def ensure_dlq_topic(store: Store, source: str) -> str:
    """``<source>.dlq``, created if missing (an existing one is used as it is)."""
    name = dlq_topic(source)
    try:
        store.partitions_for(name)
    except UnknownTopicError:
        _create(store, name, store.partitions_for(source), _derived_config(store, source, MAX_DLQ_HEADER_BYTES))
    return name


def ensure_retry_topic(store: Store, source: str) -> str:
    """``<source>.retry`` with at least as many partitions as ``source`` (created or grown)."""
    name = retry_topic(source)
    want = store.partitions_for(source)
    try:
        have = store.partitions_for(name)
    except UnknownTopicError:
        _create(store, name, want, _derived_config(store, source, MAX_RETRY_HEADER_BYTES))
        have = store.partitions_for(name)
    if have < want:
        try:
            store.create_partitions(name, want)
        except InvalidPartitionsError:  # another processor grew it meanwhile
            if store.partitions_for(name) < want:
                raise
    return name


def ensure_compacted_topic(store: Store, name: str) -> str:
    """A one-partition compacted topic (status and checkpoint records), created if missing."""
    try:
        store.partitions_for(name)
    except UnknownTopicError:
        _create(store, name, 1, {"cleanup_policy": "compact"})
    return name


#: how long reading a topic to its end may see no progress before it gives up
_READ_STALL_SECONDS = 10.0


def read_partitions(store: Store, partitions: Sequence[TopicPartition],
                    starts: Mapping[TopicPartition, int] | None = None) -> Iterator[Record]:
    """The records of ``partitions`` from ``starts`` (default: the log start) up to their high
    watermarks as of the call, in offset order per partition."""
    ends = {tp: store.end_offset(tp) for tp in partitions}
    with store.consumer(auto_offset_reset="earliest") as reader:
        reader.assign(partitions)
        for tp in partitions:
            start = (starts or {}).get(tp)
            if start is None:
                reader.seek_to_beginning(tp)
            else:
                reader.seek(tp, min(max(start, store.beginning_offset(tp)), ends[tp]))
        live = [tp for tp in partitions if reader.position(tp) < ends[tp]]
        idle = 0.0
        while live:
            records = reader.poll(0.05, max_records=1000)
            for record in records:
                if record.offset < ends[TopicPartition(record.topic or "", record.partition)]:
                    yield record
            idle = 0.0 if records else idle + 0.05
            if idle > _READ_STALL_SECONDS:
                raise LogstoreTimeoutError(f"reading {live[0].topic} made no progress for {_READ_STALL_SECONDS} s")
            live = [tp for tp in live if reader.position(tp) < ends[tp]]
