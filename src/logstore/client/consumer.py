"""The consumer: ``store.consumer(...)`` — manual assignment, or subscription alone or in a group.

``poll`` reads whole batches from each assigned partition below its high watermark (zero-copy
views, records materialised natively) and blocks, without spinning, until data arrives or the
timeout passes: appenders bump the store's :class:`AppendNotifier` and wake waiting consumers.

Positions are kept in memory. With a ``group_id``, a subscribing consumer is a member of that
consumer group (``logstore.groups``): the group's assignor gives it its share of the partitions,
``commit`` stores positions in ``__consumer_offsets``, and a newly assigned partition starts at
its committed offset. A partition without a position (or committed offset) starts where
``auto_offset_reset`` says: "earliest" (log start), "latest" (high watermark) or "none"
(:class:`NoOffsetForPartitionError`); the same policy applies when a position falls out of range
(retention deleted it).

A consumer is meant for one thread at a time, as Kafka's; ``wakeup()`` may be called from any
thread to end a blocked ``poll`` early.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, NamedTuple

from logstore._native.codec import Record, RecordBatchView
from logstore.broker.types import TopicPartition
from logstore.errors import (
    ConfigError,
    IllegalStateError,
    InvalidArgumentError,
    LogClosedError,
    LogstoreError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
    UnknownTopicError,
)
from logstore.groups.assignors import resolve_assignors
from logstore.groups.membership import GroupMembership
from logstore.groups.offsets import OffsetAndMetadata

if TYPE_CHECKING:
    from logstore._native.core import AppendNotifier
    from logstore.broker.store import Store
    from logstore.log.partition import PartitionLog

log = logging.getLogger("logstore.consumer")

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
    "enable_auto_commit": True,
    "auto_commit_interval_ms": 5_000,
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 1_000,
    "max_poll_interval_ms": 300_000,
    "partition_assignment_strategy": "cooperative-sticky",
    "group_instance_id": None,
    "listener": None,
}
_RESETS = ("earliest", "latest", "none")


def _check_group_config(cfg: dict[str, Any]) -> None:
    group_id = cfg["group_id"]
    if group_id is not None and (not isinstance(group_id, str) or not group_id):
        raise ConfigError(f"group_id must be a non-empty str, not {group_id!r}")
    instance = cfg["group_instance_id"]
    if instance is not None and (not isinstance(instance, str) or not instance):
        raise ConfigError(f"group_instance_id must be a non-empty str, not {instance!r}")
    if group_id is None and instance is not None:
        raise ConfigError("group_instance_id needs a group_id")
    for name in ("auto_commit_interval_ms", "session_timeout_ms", "heartbeat_interval_ms", "max_poll_interval_ms"):
        v = cfg[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(f"{name} must be a positive number of milliseconds, not {v!r}")
    if cfg["heartbeat_interval_ms"] >= cfg["session_timeout_ms"]:
        raise ConfigError(f"heartbeat_interval_ms ({cfg['heartbeat_interval_ms']}) must be lower than "
                          f"session_timeout_ms ({cfg['session_timeout_ms']}); a third of it is usual")
    if not isinstance(cfg["enable_auto_commit"], bool):
        raise ConfigError("enable_auto_commit must be a bool")
    resolve_assignors(cfg["partition_assignment_strategy"])  # ConfigError before anything is created


def _offsets_arg(offsets: Mapping[Any, Any]) -> dict[TopicPartition, OffsetAndMetadata]:
    if not isinstance(offsets, Mapping):
        raise InvalidArgumentError(
            f"offsets must be a mapping of TopicPartition to offset, not {type(offsets).__name__}")
    out = {}
    for tp, value in offsets.items():
        if not isinstance(tp, tuple) or len(tp) != 2 or not isinstance(tp[0], str) or isinstance(tp[1], bool) \
                or not isinstance(tp[1], int):
            raise InvalidArgumentError(f"commit() keys are TopicPartition(topic, partition), not {tp!r}")
        if isinstance(value, OffsetAndMetadata):
            om = value
        elif isinstance(value, int) and not isinstance(value, bool):
            om = OffsetAndMetadata(value)
        else:
            raise InvalidArgumentError(f"commit() values are offsets (int) or OffsetAndMetadata, not {value!r}")
        if isinstance(om.offset, bool) or not isinstance(om.offset, int) or om.offset < 0:
            raise InvalidArgumentError(f"cannot commit offset {om.offset!r} for {tp[0]}-{tp[1]}: offsets are >= 0")
        if not isinstance(om.metadata, str):
            raise InvalidArgumentError(f"commit metadata must be a str, not {type(om.metadata).__name__}")
        out[TopicPartition(*tp)] = om
    return out


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
        _check_group_config(cfg)
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
        self._group: GroupMembership | None = None
        self._group_id: str | None = cfg["group_id"]
        if self._group_id is not None:
            self._group = GroupMembership(self, store._group_coordinator(), self._group_id, cfg)
        if cfg["topics"] is not None or cfg["pattern"] is not None:
            self.subscribe(cfg["topics"], pattern=cfg["pattern"], listener=cfg["listener"])
        elif cfg["listener"] is not None:
            raise ConfigError("listener is for subscriptions: give topics or pattern too")

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
        if self._group is not None and self._group.topics is not None:
            self._group.unsubscribe()
        self._subscription = None
        self._pattern = None
        self._manual = True
        self._set_assignment(tps)

    def subscribe(self, topics: Iterable[str] | str | None = None,
                  pattern: str | re.Pattern[str] | None = None, listener: Any = None) -> None:
        """Read every partition of ``topics``, or of every topic matching ``pattern`` (a regex
        matched against the whole name; topics created later join). Without a group id this
        consumer gets all partitions; with one, its share of them, and ``listener`` (a
        :class:`~logstore.groups.ConsumerRebalanceListener`) hears of every change."""
        self._check_open()
        if (topics is None) == (pattern is None):
            raise IllegalStateError("subscribe to topics or to a pattern (exactly one)")
        if listener is not None:
            if self._group is None:
                raise IllegalStateError("a rebalance listener needs a group_id")
            if not any(hasattr(listener, n) for n in ("on_partitions_revoked", "on_partitions_assigned")):
                raise InvalidArgumentError("listener needs on_partitions_revoked / on_partitions_assigned methods")
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
        if self._group is not None:
            self._group.listener = listener
        self._refresh_subscription()

    def unsubscribe(self) -> None:
        if self._group is not None and self._group.topics is not None:
            self._group.unsubscribe()
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
        if self._group is not None and not self._manual:
            # in a group, the subscription is a list of topic names; the group assigns partitions
            if self._pattern is not None:
                self._group.set_topics(tp.topic for tp in self._store.topic_partitions(pattern=self._pattern))
            elif self._subscription is not None:
                self._group.set_topics(self._subscription)
            else:
                return
            self._set_assignment(self._assignment)  # re-resolve logs of topics deleted or re-created
            return
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

    def _group_assignment(self, tps: set[TopicPartition], added: Iterable[TopicPartition] = (),
                          committed: Mapping[TopicPartition, int] | None = None) -> None:
        """The group gave this consumer ``tps`` (``added`` are new, starting at ``committed``)."""
        for tp in added:
            self._positions.pop(tp, None)
            self._buffers.pop(tp, None)
        self._set_assignment(sorted(tps))
        for tp, offset in (committed or {}).items():
            if tp in self._logs:
                self._positions[tp] = offset

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
        if why == "no position" and self._group_id is not None:
            committed = self._store._group_coordinator().committed(self._group_id, [tp])[tp]
            if committed is not None:
                self._set_position(tp, committed.offset)
                return committed.offset
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
        group = self._group
        if group is not None:
            group.last_poll = time.monotonic()
            group.in_poll = True
        try:
            return self._poll(deadline, limit, notifier, group)
        finally:
            if group is not None:
                group.last_poll = time.monotonic()
                group.in_poll = False

    def _poll(self, deadline: float, limit: int, notifier: AppendNotifier, group: GroupMembership | None
              ) -> list[Any]:
        while True:
            seen = notifier.current_version
            if self._stale:
                self._revalidate()
            if group is not None:
                group.step()  # membership first: never fetch a partition this consumer has lost
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

    # -- committed offsets (groups) -------------------------------------------------------------

    def _membership(self) -> GroupMembership:
        if self._group is None:
            raise IllegalStateError("committed offsets belong to a consumer group: create the consumer with a "
                                    "group_id")
        return self._group

    def commit(self, offsets: Mapping[Any, int | OffsetAndMetadata] | None = None) -> None:
        """Store offsets for the group: by default the position of every assigned partition (the
        next record poll would return), or the ``{tp: offset or OffsetAndMetadata}`` given.
        Raises :class:`~logstore.errors.CommitFailedError` if the group rebalanced and this member
        no longer owns a partition (or was removed): nothing is stored then."""
        self._check_open()
        group = self._membership()
        group.commit(self._position_offsets() if offsets is None else _offsets_arg(offsets))

    def _position_offsets(self, tps: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, OffsetAndMetadata]:
        """Positions as offsets to commit, with the partition's current leader epoch (as Kafka's
        clients record the epoch of the last record fetched)."""
        positions = self._positions
        logs = self._logs
        return {tp: OffsetAndMetadata(positions[tp], "", logs[tp].leader_epoch)
                for tp in (positions if tps is None else tps) if tp in positions and tp in logs}

    def commit_async(self, offsets: Mapping[Any, int | OffsetAndMetadata] | None = None,
                     callback: Callable[[dict[TopicPartition, OffsetAndMetadata], BaseException | None], Any] | None
                     = None) -> Future[dict[TopicPartition, OffsetAndMetadata]]:
        """``commit`` without raising: in-process, a commit is one append, so it runs at once;
        the result (or error) goes to ``callback(offsets, exception)`` and the returned future."""
        future: Future[dict[TopicPartition, OffsetAndMetadata]] = Future()
        try:
            self._check_open()
            group = self._membership()
            prepared = self._position_offsets() if offsets is None else _offsets_arg(offsets)
            group.commit(prepared)
        except LogstoreError as e:
            future.set_exception(e)
            if callback is not None:
                callback({}, e)
        else:
            future.set_result(prepared)
            if callback is not None:
                callback(prepared, None)
        return future

    def committed(self, tps: TopicPartition | tuple[str, int] | Iterable[TopicPartition | tuple[str, int]]
                  ) -> Any:
        """The committed ``OffsetAndMetadata`` of a partition (None if none), or a dict of them
        for an iterable of partitions."""
        self._check_open()
        self._membership()
        assert self._group_id is not None
        coordinator = self._store._group_coordinator()
        if isinstance(tps, tuple) and len(tps) == 2 and isinstance(tps[0], str):
            tp = TopicPartition(*tps)
            return coordinator.committed(self._group_id, [tp])[tp]
        return coordinator.committed(self._group_id, [TopicPartition(*tp) for tp in tps])

    def _abandon(self) -> None:
        """Stop as a crashed process would: no more heartbeats, polls or commits, and no leaving
        the group (the coordinator removes the member when its session times out). For tests."""
        if self._group is not None:
            self._group.abandon()
        self._closed = True
        self._notifier.wake()
        self._store._consumers.discard(self)

    @property
    def group_id(self) -> str | None:
        return self._group_id

    @property
    def member_id(self) -> str | None:
        """This consumer's member id in its group (None outside a group or before joining)."""
        member = self._group.member if self._group is not None else None
        return member.member_id if member is not None else None

    @property
    def generation(self) -> int:
        """The group generation of this consumer's assignment (-1 outside a group)."""
        return self._group.generation if self._group is not None else -1

    def close(self) -> None:
        """Commit (with auto-commit), leave the group, stop consuming; a blocked poll returns.
        Idempotent."""
        if self._closed:
            return
        error: BaseException | None = None
        coordinator = self._store._coordinator
        if self._group is not None and coordinator is not None and not coordinator.closed:
            try:
                self._group.close()
            except LogstoreError as e:
                log.warning("consumer of group %s: closing its membership failed: %s", self._group_id, e)
            except BaseException as e:  # the listener's: raised once the consumer is closed
                error = e
        elif self._group is not None:
            self._group.abandon()
        self._closed = True
        self._notifier.wake()
        self._store._consumers.discard(self)
        if error is not None:
            raise error

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
