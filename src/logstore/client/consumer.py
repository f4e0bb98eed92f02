"""The consumer: ``store.consumer(...)`` — manual assignment or subscription without a group.

``poll`` reads whole batches from each assigned partition below its high watermark (zero-copy
views, records materialised natively) and blocks, without spinning, until data arrives or the
timeout passes: appenders bump the store's :class:`AppendNotifier` and wake waiting consumers.

Positions are kept in memory (consumer groups with committed offsets build on this). A
partition without a position starts where ``auto_offset_reset`` says: "earliest" (log start),
"latest" (high watermark) or "none" (:class:`NoOffsetForPartitionError`); the same policy
applies when a position falls out of range (retention deleted it).

A consumer is meant for one thread at a time, as Kafka's; ``wakeup()`` may be called from any
thread to end a blocked ``poll`` early.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from logstore._native.codec import Record, RecordBatchView
from logstore.broker.types import TopicPartition
from logstore.errors import (
    ConfigError,
    IllegalStateError,
    InvalidArgumentError,
    LogClosedError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
    UnknownTopicError,
)

if TYPE_CHECKING:
    from logstore.broker.store import Store
    from logstore.log.partition import PartitionLog

_DEFAULTS: dict[str, Any] = {
    "topics": None,
    "pattern": None,
    "group_id": None,
    "auto_offset_reset": "latest",
    "max_poll_records": 500,
    "max_partition_fetch_bytes": 1 << 20,
    "fetch_max_bytes": 50 << 20,
    "key_deserializer": None,
    "value_deserializer": None,
    "consumer_timeout_ms": None,
    "client_id": None,
    "enable_auto_commit": None,
}
_RESETS = ("earliest", "latest", "none")


class ConsumerRecord(NamedTuple):
    """A record with deserialized key/value (consumers with deserializers return these)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: Any
    value: Any
    headers: list[tuple[str, bytes | None]]


class Consumer:
    """Reads records from the topics of a :class:`~logstore.Store` (``store.consumer(...)``)."""

    def __init__(self, store: Store, **config: Any) -> None:
        unknown = sorted(set(config) - set(_DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown consumer config {', '.join(unknown)}; known: {', '.join(sorted(_DEFAULTS))}")
        cfg = {**_DEFAULTS, **config}
        if cfg["group_id"] is not None:
            raise ConfigError("group_id: consumer groups are not available yet; use assign() or subscribe() "
                              "without a group")
        if cfg["auto_offset_reset"] not in _RESETS:
            raise ConfigError(f"auto_offset_reset={cfg['auto_offset_reset']!r}; expected one of {', '.join(_RESETS)}")
        for name in ("max_poll_records", "max_partition_fetch_bytes", "fetch_max_bytes"):
            v = cfg[name]
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name} must be a positive int, not {v!r}")
        ct = cfg["consumer_timeout_ms"]
        if ct is not None and (isinstance(ct, bool) or not isinstance(ct, (int, float)) or ct < 0):
            raise ConfigError(f"consumer_timeout_ms must be a non-negative number or None, not {ct!r}")
        for name in ("key_deserializer", "value_deserializer"):
            if cfg[name] is not None and not callable(cfg[name]):
                raise ConfigError(f"{name} must be callable")
        self.config = cfg
        self._store = store
        self._reset = cfg["auto_offset_reset"]
        self._max_records = cfg["max_poll_records"]
        self._partition_bytes = cfg["max_partition_fetch_bytes"]
        self._fetch_bytes = cfg["fetch_max_bytes"]
        self._key_deserializer: Callable[[bytes], Any] | None = cfg["key_deserializer"]
        self._value_deserializer: Callable[[bytes], Any] | None = cfg["value_deserializer"]
        self._notifier = store._notifier
        self._closed = False
        self._assignment: list[TopicPartition] = []
        self._logs: dict[TopicPartition, PartitionLog] = {}
        self._positions: dict[TopicPartition, int] = {}
        # fetched batches not yet handed out: (view, index of the next record)
        self._buffers: dict[TopicPartition, tuple[RecordBatchView, int]] = {}
        self._topic_ids: dict[str, str | None] = {}
        self._paused: set[TopicPartition] = set()
        self._subscription: list[str] | None = None
        self._pattern: re.Pattern[str] | None = None
        self._manual = False
        self._stale = False
        self._next = 0  # round-robin start among the assigned partitions
        self._woken = False
        if cfg["topics"] is not None or cfg["pattern"] is not None:
            self.subscribe(cfg["topics"], pattern=cfg["pattern"])

    # -- assignment -----------------------------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        """Read exactly these partitions (replaces any subscription or earlier assignment)."""
        self._check_open()
        tps = []
        for tp in partitions:
            if not isinstance(tp, tuple) or len(tp) != 2:
                raise InvalidArgumentError(f"assign() takes TopicPartition(topic, partition) items, not {tp!r}")
            tp = TopicPartition(*tp)
            self._store.partition_log(tp)  # UnknownTopicError if it does not exist
            tps.append(tp)
        self._subscription = None
        self._pattern = None
        self._manual = True
        self._set_assignment(tps)

    def subscribe(self, topics: Iterable[str] | str | None = None,
                  pattern: str | re.Pattern[str] | None = None) -> None:
        """Read every partition of ``topics``, or of every topic matching ``pattern`` (a regex
        matched against the whole name; topics created later join). Without a group id this
        consumer gets all partitions."""
        self._check_open()
        if (topics is None) == (pattern is None):
            raise IllegalStateError("subscribe to topics or to a pattern (exactly one)")
        if pattern is not None:
            try:
                self._pattern = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
            except re.error as e:
                raise InvalidArgumentError(f"bad subscription pattern {pattern!r}: {e}") from None
            self._subscription = None
        else:
            names = [topics] if isinstance(topics, str) else list(topics or [])
            if not names or not all(isinstance(n, str) for n in names):
                raise InvalidArgumentError("subscribe() needs topic names (str)")
            self._subscription = names
            self._pattern = None
        self._manual = False
        self._refresh_subscription()

    def unsubscribe(self) -> None:
        self._subscription = None
        self._pattern = None
        self._manual = False
        self._set_assignment([])

    def subscription(self) -> set[str]:
        if self._pattern is not None:
            return {tp.topic for tp in self._assignment}
        return set(self._subscription or [])

    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    def _refresh_subscription(self) -> None:
        self._stale = False
        if self._pattern is not None:
            tps = self._store.topic_partitions(pattern=self._pattern)
        elif self._subscription is not None:
            # a subscribed topic that does not exist (yet) is simply not assigned
            tps = []
            for name in self._subscription:
                try:
                    tps.extend(self._store.topic_partitions([name]))
                except UnknownTopicError:
                    pass
        else:
            return
        self._set_assignment(tps)

    def _set_assignment(self, tps: list[TopicPartition]) -> None:
        self._assignment = list(dict.fromkeys(tps))
        logs = {}
        for tp in self._assignment:
            try:
                logs[tp] = self._store.partition_log(tp)
            except UnknownTopicError:
                continue
        self._assignment = [tp for tp in self._assignment if tp in logs]
        # fetched views of a log object that changed (topic re-created or reopened) are dropped,
        # and so are positions in a topic that was deleted and re-created (a new topic id)
        same = {tp for tp, plog in logs.items() if self._logs.get(tp) is plog}
        ids = {tp.topic: self._store._topic_id(tp.topic) for tp in logs}
        self._logs = logs
        self._positions = {tp: o for tp, o in self._positions.items()
                           if tp in logs and self._topic_ids.get(tp.topic) in (None, ids[tp.topic])}
        self._topic_ids = ids
        self._buffers = {tp: b for tp, b in self._buffers.items() if tp in same}
        self._paused &= set(self._assignment)
        self._next = 0

    def _on_metadata_change(self) -> None:
        # called by the store under its lock: just mark; the consumer's thread re-resolves
        self._stale = True

    def _revalidate(self) -> None:
        if self._manual:
            # a deleted topic's partitions drop out; reopened logs are looked up again
            self._stale = False
            self._set_assignment(self._assignment)
        else:
            self._refresh_subscription()

    # -- positions ------------------------------------------------------------------------------

    def _log(self, tp: TopicPartition | tuple[str, int]) -> tuple[TopicPartition, PartitionLog]:
        tp = TopicPartition(*tp)
        if self._stale:
            self._revalidate()
        plog = self._logs.get(tp)
        if plog is None:
            raise IllegalStateError(f"{tp} is not assigned to this consumer")
        return tp, plog

    def _reset_position(self, tp: TopicPartition, plog: PartitionLog, why: str) -> int:
        if self._reset == "earliest":
            pos = plog.log_start_offset
        elif self._reset == "latest":
            pos = plog.high_watermark
        elif why == "no position":
            raise NoOffsetForPartitionError(f"{tp}: {why} and auto_offset_reset='none'")
        else:  # as Kafka's clients: a position that fell out of range is its own error
            raise OffsetOutOfRangeError(f"{tp}: {why} and auto_offset_reset='none'")
        self._set_position(tp, pos)
        return pos

    def _set_position(self, tp: TopicPartition, offset: int) -> None:
        self._positions[tp] = offset
        self._buffers.pop(tp, None)

    def position(self, tp: TopicPartition | tuple[str, int]) -> int:
        """The offset of the next record ``poll`` returns from ``tp``."""
        self._check_open()
        tp, plog = self._log(tp)
        pos = self._positions.get(tp)
        return pos if pos is not None else self._reset_position(tp, plog, "no position")

    def seek(self, tp: TopicPartition | tuple[str, int], offset: int) -> None:
        """Read ``tp`` from ``offset`` next (out of range: auto_offset_reset applies at poll)."""
        self._check_open()
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidArgumentError(f"offset must be a non-negative int, not {offset!r}")
        tp, _ = self._log(tp)
        self._set_position(tp, offset)

    def seek_to_beginning(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        self._check_open()
        for tp in partitions or list(self._assignment):
            tp, plog = self._log(tp)
            self._set_position(tp, plog.log_start_offset)

    def seek_to_end(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        self._check_open()
        for tp in partitions or list(self._assignment):
            tp, plog = self._log(tp)
            self._set_position(tp, plog.high_watermark)

    def beginning_offsets(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> dict[TopicPartition, int]:
        return {TopicPartition(*tp): self._store.beginning_offset(tp) for tp in partitions}

    def end_offsets(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> dict[TopicPartition, int]:
        """High watermarks: the offset after the last committed record."""
        return {TopicPartition(*tp): self._store.end_offset(tp) for tp in partitions}

    def offsets_for_times(self, timestamps: Mapping[TopicPartition | tuple[str, int], int]
                          ) -> dict[TopicPartition, tuple[int, int] | None]:
        """For each partition, ``(offset, timestamp)`` of the first record with a timestamp >=
        the one given (ms), or None if there is none below the high watermark."""
        out: dict[TopicPartition, tuple[int, int] | None] = {}
        for tp, ts in timestamps.items():
            tp = TopicPartition(*tp)
            found = self._store.partition_log(tp).offset_for_timestamp(ts)
            if found is not None and found[0] >= self._store.end_offset(tp):
                found = None
            out[tp] = found
        return out

    def pause(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        """Stop returning records of these partitions from poll (positions are kept)."""
        for tp in partitions:
            tp, _ = self._log(tp)
            self._paused.add(tp)

    def resume(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        for tp in partitions:
            self._paused.discard(TopicPartition(*tp))

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    # -- poll -----------------------------------------------------------------------------------

    def poll(self, timeout: float = 0.0, max_records: int | None = None, *,
             timeout_ms: float | None = None) -> list[Any]:
        """Up to ``max_records`` records (default ``max_poll_records``), in offset order per
        partition, waiting up to ``timeout`` seconds (or ``timeout_ms``) for the first one."""
        self._check_open()
        if timeout_ms is not None:
            timeout = timeout_ms / 1000.0
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise InvalidArgumentError(f"timeout must be a non-negative number of seconds, not {timeout!r}")
        limit = self._max_records if max_records is None else max_records
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise InvalidArgumentError(f"max_records must be a positive int, not {max_records!r}")
        deadline = time.monotonic() + timeout
        notifier = self._notifier
        while True:
            seen = notifier.current_version
            if self._stale:
                self._revalidate()
            records = self._fetch(limit)
            if records:
                if self._key_deserializer is not None or self._value_deserializer is not None:
                    return self._deserialize_all(records)
                return records
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed or self._woken:
                self._woken = False
                return []
            notifier.wait(seen, remaining)

    def _fetch(self, limit: int) -> list[Record]:
        out: list[Record] = []
        tps = self._assignment
        n = len(tps)
        budget = self._fetch_bytes
        start = self._next
        for k in range(n):
            tp = tps[(start + k) % n]
            if tp in self._paused:
                continue
            buffered = self._buffers.get(tp)
            if buffered is None:
                view = self._read(tp)
                if view is None:
                    continue
                budget -= view.size_bytes
                index = 0
            else:
                view, index = buffered
            records = view.records(index, limit - len(out))
            index += len(records)
            if index >= len(view):
                self._buffers.pop(tp, None)
                self._positions[tp] = view.next_offset  # past any compacted-away offsets too
            else:
                # the rest of the view is served by the next polls (one read per ~1 MiB, not per poll)
                self._buffers[tp] = (view, index)
                self._positions[tp] = records[-1].offset + 1
            out.extend(records)
            if len(out) >= limit or budget <= 0:
                self._next = (start + k + 1) % n
                break
        return out

    def _read(self, tp: TopicPartition) -> RecordBatchView | None:
        """The batches from ``tp``'s position up to its high watermark (None if caught up)."""
        plog = self._logs[tp]
        pos = self._positions.get(tp)
        if pos is None:
            pos = self._reset_position(tp, plog, "no position")
        hw = plog.high_watermark
        if pos >= hw:
            if pos > plog.log_end_offset:
                self._reset_position(tp, plog, f"position {pos} is past the log end {plog.log_end_offset}")
            return None
        try:
            view = plog.read(pos, self._partition_bytes, hw)
        except OffsetOutOfRangeError:
            pos = self._reset_position(tp, plog, f"position {pos} is out of range")
            hw = plog.high_watermark
            if pos >= hw:
                return None
            view = plog.read(pos, self._partition_bytes, hw)
        except LogClosedError:
            # the topic was deleted or reconfigured under us: look it up again next time
            self._stale = True
            return None
        view.topic = tp.topic
        view.partition = tp.partition
        if len(view) == 0:
            # only compacted-away offsets (empty batches) below the high watermark
            self._positions[tp] = max(view.next_offset, pos)
            return None
        return view

    def _deserialize_all(self, records: list[Record]) -> list[ConsumerRecord]:
        """As Kafka's clients: the records before one that fails to deserialize are returned,
        the position stays on it, and the poll that reaches it raises the error."""
        out = []
        for i, r in enumerate(records):
            try:
                out.append(self._deserialize(r))
            except Exception:
                self._rewind(records[i:])
                if out:
                    return out
                raise
        return out

    def _rewind(self, undelivered: list[Record]) -> None:
        first: dict[TopicPartition, int] = {}
        for r in undelivered:
            tp = TopicPartition(r.topic or "", r.partition)
            first.setdefault(tp, r.offset)
        for tp, offset in first.items():
            self._set_position(tp, offset)

    def _deserialize(self, r: Record) -> ConsumerRecord:
        key, value = r.key, r.value
        if self._key_deserializer is not None and key is not None:
            key = self._key_deserializer(key)
        if self._value_deserializer is not None and value is not None:
            value = self._value_deserializer(value)
        return ConsumerRecord(r.topic or "", r.partition, r.offset, r.timestamp, key, value, r.headers)

    def wakeup(self) -> None:
        """End a ``poll`` blocked in another thread (it returns what it has: nothing)."""
        self._woken = True
        self._notifier.wake()

    # -- iteration and lifecycle ----------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        """Records forever, or until ``consumer_timeout_ms`` passes without one."""
        idle = self.config["consumer_timeout_ms"]
        while not self._closed:
            records = self.poll(timeout=0.5 if idle is None else idle / 1000.0)
            if not records and idle is not None:
                return
            yield from records

    def close(self) -> None:
        """Stop consuming; a blocked poll returns. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._notifier.wake()
        self._store._consumers.discard(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError("the consumer is closed")
        if self._store.closed:
            raise LogClosedError("the store is closed")

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Consumer(assignment={sorted(self._assignment)}, closed={self._closed})"


__all__ = ["Consumer", "ConsumerRecord"]
