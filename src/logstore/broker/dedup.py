"""Exactly-once appends for retried publishes: a bounded message id -> (partition, offset) index per topic.

A publisher that can crash between appending a record and recording that it did (the outbox relay:
publish, then mark the row) retries the append after a restart, and without help the topic then
holds the record twice. :func:`publish_once` stamps each record with its message id in the
:data:`MESSAGE_ID_HEADER` header and remembers message id -> (partition, offset) per topic; a second
publish of the same id returns the first one's position instead of appending again.

The index lives in memory, per store and topic (:meth:`MessageIdIndex.for_topic`), and is bounded:

- at most ``max_ids`` ids per topic (the oldest are forgotten first);
- after a restart (a kill -9 included) it is rebuilt lazily, on the topic's first publish, from the
  *tail* of each partition: the last ``scan_records`` records and roughly ``scan_bytes`` bytes of
  each (:class:`DedupWindow`).

A retry of a message published longer ago than that window (more than ``max_ids`` later publishes to
the topic, or further back than the scanned tail after a restart) is not recognised and is appended
again: a duplicate. Retries happen within a relay's lease time of the first attempt, so the defaults
(100 000 ids, the last 100 000 records or 64 MiB per partition) leave a wide margin; raise them for
topics that take more than that between a crash and its retry.

Only publishes through :func:`publish_once` are deduplicated, and only within one store: the index
is per process, which is all there is, since one process at a time opens a data directory.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from logstore.errors import InvalidArgumentError

if TYPE_CHECKING:
    from logstore.broker.store import Store
    from logstore.client.producer import Producer

MESSAGE_ID_HEADER = "logstore.message-id"
"""Name of the record header that carries the message id (its value: the id, UTF-8)."""

DEFAULT_MAX_IDS = 100_000
DEFAULT_SCAN_RECORDS = 100_000
DEFAULT_SCAN_BYTES = 64 << 20
MAX_MESSAGE_ID_LENGTH = 255

_READ_BYTES = 1 << 20

PublishRequest = tuple[str, "bytes | None", "bytes | None", "Sequence[tuple[str, bytes | None]] | None"]
"""One record for :meth:`MessageIdIndex.publish_many`: ``(message_id, value, key, headers)``."""


@dataclass(frozen=True)
class DedupWindow:
    """How much a :class:`MessageIdIndex` remembers: ``max_ids`` ids per topic in memory, and, when
    rebuilt after a restart, the last ``scan_records`` records / about ``scan_bytes`` bytes of each
    partition. A retry older than this window can append a duplicate."""

    max_ids: int = DEFAULT_MAX_IDS
    scan_records: int = DEFAULT_SCAN_RECORDS
    scan_bytes: int = DEFAULT_SCAN_BYTES

    def __post_init__(self) -> None:
        for name in ("max_ids", "scan_records", "scan_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidArgumentError(f"DedupWindow.{name} must be a positive int, not {value!r}")


def check_message_id(message_id: object) -> str:
    """``message_id`` if it is a legal message id (a non-empty str of at most 255 characters)."""
    if not isinstance(message_id, str):
        raise InvalidArgumentError(f"a message id is a str, not {type(message_id).__name__}")
    if not message_id or len(message_id) > MAX_MESSAGE_ID_LENGTH:
        raise InvalidArgumentError(
            f"a message id has 1 to {MAX_MESSAGE_ID_LENGTH} characters, not {len(message_id)}")
    return message_id


def message_id_of(headers: Iterable[tuple[str, bytes | None]]) -> str | None:
    """The message id in a record's headers, or None if it has none."""
    for name, value in headers:
        if name == MESSAGE_ID_HEADER and value is not None:
            return value.decode("utf-8", "replace")
    return None


# store -> topic name -> index; weak, so that a closed and dropped store takes its indexes with it
_INDEXES: weakref.WeakKeyDictionary[Store, dict[str, MessageIdIndex]] = weakref.WeakKeyDictionary()
_INDEXES_LOCK = threading.Lock()


class MessageIdIndex:
    """The message ids recently published to one topic of one store, with their positions.

    Get it with :meth:`for_topic`. ``lock`` serialises check-and-append (:func:`publish_once` holds
    it around both), so two publishers in one process cannot both append the same id.
    """

    def __init__(self, store: Store, topic: str, topic_id: str | None, window: DedupWindow) -> None:
        self.store = store
        self.topic = topic
        self.topic_id = topic_id
        self.window = window
        self.lock = threading.Lock()
        self._ids: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._built = False
        self.rebuilt_from = 0
        """Ids found in the partitions' tails when the index was rebuilt (0 before)."""

    @classmethod
    def for_topic(cls, store: Store, topic: str, window: DedupWindow | None = None) -> MessageIdIndex:
        """The index of ``topic`` in ``store``, created on first use (``window`` applies then; later
        calls get the existing index whatever window they pass). A topic deleted and created again
        gets a new, empty index. Raises UnknownTopicError for a topic that does not exist."""
        store.partitions_for(topic)  # UnknownTopicError, LogClosedError
        topic_id = store._topic_id(topic)
        with _INDEXES_LOCK:
            per_store = _INDEXES.get(store)
            if per_store is None:
                per_store = _INDEXES[store] = {}
            index = per_store.get(topic)
            if index is None or index.topic_id != topic_id:
                index = per_store[topic] = cls(store, topic, topic_id, window or DedupWindow())
            return index

    def __len__(self) -> int:
        return len(self._ids)

    def lookup(self, message_id: str) -> tuple[int, int] | None:
        """(partition, offset) of ``message_id`` if it is in the window, else None (caller holds ``lock``)."""
        if not self._built:
            self._rebuild()
        return self._ids.get(message_id)

    def remember(self, message_id: str, partition: int, offset: int) -> None:
        """Record a publish (caller holds ``lock``); forgets the oldest id past ``max_ids``."""
        if not self._built:
            self._rebuild()
        self._ids[message_id] = (partition, offset)
        while len(self._ids) > self.window.max_ids:
            self._ids.popitem(last=False)

    def publish(self, producer: Producer, message_id: str, value: bytes | None, key: bytes | None = None,
                headers: Iterable[tuple[str, bytes | None]] | None = None) -> tuple[int, int, bool]:
        """:func:`publish_once` to this index's topic (for a caller that publishes many records to
        one topic and looks the index up once)."""
        check_message_id(message_id)
        with self.lock:
            found = self.lookup(message_id)
            if found is not None:
                return found[0], found[1], True
            stamped = [*(headers or ()), (MESSAGE_ID_HEADER, message_id.encode())]
            meta = producer.send(self.topic, value, key, stamped).get()
            self.remember(message_id, meta.partition, meta.offset)
            return meta.partition, meta.offset, False

    def publish_many(self, producer: Producer, records: Iterable[PublishRequest]
                     ) -> tuple[list[tuple[int, int, bool]], Exception | None]:
        """:meth:`publish` of each ``(message_id, value, key, headers)`` in ``records``, in order, under
        one hold of the lock. Returns ``(results, error)``: ``(partition, offset, duplicate)`` of each
        record up to the first that failed, and that record's error (None if none failed). The
        records after a failed one are not tried, so that a caller keeping an order (the outbox
        relay: per key) decides which of them still go; it calls again with those. An invalid
        message id fails its record with InvalidArgumentError.

        The ids are remembered as the records are appended (a failure later in the call keeps them)
        and the index is trimmed to ``max_ids`` once, at the end of the call."""
        results: list[tuple[int, int, bool]] = []
        append = results.append
        ids = self._ids
        send = producer.send
        topic = self.topic
        with self.lock:
            try:
                if not self._built:
                    self._rebuild()
                for message_id, value, key, headers in records:
                    found = ids.get(message_id)
                    if found is not None:
                        append((found[0], found[1], True))
                        continue
                    # inline check_message_id (the common case costs one type test and one len)
                    if type(message_id) is not str or not 0 < len(message_id) <= MAX_MESSAGE_ID_LENGTH:
                        check_message_id(message_id)
                    stamp = (MESSAGE_ID_HEADER, message_id.encode())
                    meta = send(topic, value, key, [*headers, stamp] if headers else [stamp]).get()
                    position = ids[message_id] = (meta.partition, meta.offset)
                    append((*position, False))
            except Exception as e:  # noqa: BLE001 - reported with the record it belongs to
                return results, e
            finally:
                excess = len(ids) - self.window.max_ids
                for _ in range(excess):
                    ids.popitem(last=False)
        return results, None

    # -- rebuild ----------------------------------------------------------------------------------

    def _rebuild(self) -> None:
        """Fill the index from the tail of every partition (newest ``max_ids`` kept, by offset order
        within a partition and timestamp across partitions)."""
        found: list[tuple[int, int, int, str]] = []  # (timestamp, partition, offset, id)
        for partition in range(self.store.partitions_for(self.topic)):
            found.extend(self._scan_partition(partition))
        found.sort()
        for _, partition, offset, message_id in found[-self.window.max_ids:]:
            self._ids[message_id] = (partition, offset)
        self.rebuilt_from = len(self._ids)
        self._built = True

    def _scan_start(self, partition: int) -> int:
        plog = self.store.partition_log((self.topic, partition))
        end = plog.high_watermark
        start = max(plog.log_start_offset, end - self.window.scan_records)
        # walk segments back from the end until scan_bytes are covered; inside the segment where the
        # budget runs out, estimate the offset from its average record size
        budget = self.window.scan_bytes
        for seg in reversed(plog.segments()):
            if seg["size"] <= budget:
                budget -= seg["size"]
                continue
            records = seg["next_offset"] - seg["base_offset"]
            if records > 0 and seg["size"] > 0:
                start = max(start, seg["next_offset"] - records * budget // seg["size"])
            else:
                start = max(start, seg["next_offset"])
            break
        return min(start, end)

    def _scan_partition(self, partition: int) -> list[tuple[int, int, int, str]]:
        plog = self.store.partition_log((self.topic, partition))
        found: list[tuple[int, int, int, str]] = []
        start = self._scan_start(partition)
        for view in plog.scan(start, max_bytes=_READ_BYTES):
            for record in view:
                if record.offset < start:
                    continue
                message_id = message_id_of(record.headers)
                if message_id is not None:
                    found.append((record.timestamp, partition, record.offset, message_id))
        return found


def publish_once(store: Store, producer: Producer, topic: str, message_id: str, value: bytes | None,
                 key: bytes | None = None, headers: Iterable[tuple[str, bytes | None]] | None = None, *,
                 window: DedupWindow | None = None) -> tuple[int, int, bool]:
    """Append ``value`` to ``topic`` unless ``message_id`` was appended there already (within the
    index's window): returns ``(partition, offset, duplicate)``, the position of the one record that
    carries the id. The record gets the :data:`MESSAGE_ID_HEADER` header.

    The append is in the process's buffers when this returns: a caller that records the position
    somewhere durable must first make the record survive what it cares about (``flush_buffer()`` of
    the partition log for a process crash, ``flush()`` for a power loss). Raises what ``send`` raises
    (UnknownTopicError, InvalidRecordError, ...), with nothing remembered.
    """
    return MessageIdIndex.for_topic(store, topic, window).publish(producer, message_id, value, key, headers)


__all__ = [
    "DEFAULT_MAX_IDS",
    "DEFAULT_SCAN_BYTES",
    "DEFAULT_SCAN_RECORDS",
    "MESSAGE_ID_HEADER",
    "DedupWindow",
    "MessageIdIndex",
    "PublishRequest",
    "check_message_id",
    "message_id_of",
    "publish_once",
]
