"""Running a handler over a consumer with retries, key parking and a dead-letter topic.

:class:`RetryingProcessor` polls the consumer it is given and calls the handler once per record.
A handler that raises is retried as the :class:`~logstore.dlq.RetryPolicy` says; after the last
attempt (or at once for a fatal exception or a key/value that does not deserialize) the record
goes to ``<topic>.dlq`` with its key, value and headers unchanged plus the ``logstore.dlq.*``
headers.

Two ways to wait between attempts:

``mode="blocking"``
    The record is retried in place: its partition is paused at that offset until the backoff
    has passed, so nothing behind it in that partition runs first (order kept for every key of
    the partition); other partitions go on. Nothing is written but dead letters.

``mode="retry-topic"``
    The failed record is appended to ``<topic>.retry`` (same partition number) with a not-before
    time, and the source partition goes on at once. The processor reads the retry partitions of
    the source partitions it is assigned and calls the handler for a retry record once it is due.
    With ``park_keys=True`` a later record of a key that has a record in retry is not handled but
    appended to the retry partition as "parked", behind it: a key's records are handled in their
    source order, while other keys flow.

How the retry topic is read (and why not one topic per delay, as Spring Kafka does): parking
needs every waiting record of a key in one ordered place, and per-delay topics would scatter
them. So there is one retry partition per source partition, and the processor keeps its waiting
records in memory (up to ``max_pending`` per partition; beyond that it stops taking new source
records of that partition), each key's in source-offset order, and hands the first record of each
key to the handler when its not-before time has come. The source offset in each retry record
gives the order, so a record retried a third time, appended after records parked behind it,
still comes first. Records of different delays in one partition do not wait for each other.

Restart: the parking state is derived from the retry topic's content. The first retry offset
not yet finished, per retry partition (and group), is kept in the compacted topic
``<topic>.retry.checkpoint``; a restarted processor reads its retry partitions from there to the
end before it takes any new source record of the partition, rebuilding which keys wait. Records
finished after the last checkpoint are handled again (at least once, as everywhere in Kafka).

Offsets: :meth:`RetryingProcessor.committable` is, per source partition, the first offset not
finished (handled, dead-lettered, or safely in the retry topic). With a consumer of a group, the
processor commits it after each :meth:`run_once`; without one, the caller decides what to do
with it.
"""

from __future__ import annotations

import bisect
import heapq
import json
import logging
import random as _random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from logstore.broker.types import TopicPartition
from logstore.client.consumer import ConsumerRecord
from logstore.dlq.headers import (
    Failure,
    Headers,
    RetryInfo,
    dead_letter_headers,
    fit_dead_letter,
    parse_retry_headers,
    retry_headers,
    strip_ours,
)
from logstore.dlq.policy import RetryPolicy, exception_name
from logstore.dlq.topics import (
    checkpoint_topic,
    dlq_topic,
    ensure_compacted_topic,
    ensure_dlq_topic,
    ensure_retry_topic,
    read_partitions,
    retry_topic,
    status_topic,
)
from logstore.errors import CommitFailedError, ConfigError, LogClosedError, UnknownTopicError

if TYPE_CHECKING:
    from logstore.broker.store import Store
    from logstore.client.consumer import Consumer
    from logstore.groups.offsets import OffsetAndMetadata

__all__ = ["MODES", "ProcessorStats", "RetryingProcessor"]

log = logging.getLogger("logstore.dlq")

MODES = ("blocking", "retry-topic")
Handler = Callable[[ConsumerRecord], object]
KeyId = bytes | tuple[str, int]


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class ProcessorStats:
    """Counters since the processor was created."""

    handled: int = 0
    """Handler calls that returned."""
    failed_attempts: int = 0
    """Handler calls that raised, and keys or values that did not deserialize."""
    retried: int = 0
    """Records written to the retry topic for another attempt."""
    parked: int = 0
    """Records written to the retry topic behind an earlier record of their key."""
    dead_lettered: int = 0


@dataclass
class _Blocked:
    """A record of a paused partition (blocking mode) waiting for its next attempt."""

    offset: int
    attempts: int
    first_failure: int
    due: int


class _Pending:
    """A retry-topic record waiting for its turn."""

    __slots__ = ("retry_offset", "source_offset", "key_id", "key", "value", "headers", "timestamp", "attempts",
                 "not_before", "first_failure", "kind")

    def __init__(self, retry_offset: int, source_offset: int, key_id: KeyId, key: bytes | None,
                 value: bytes | None, headers: Headers, timestamp: int, attempts: int, not_before: int,
                 first_failure: int, kind: str) -> None:
        self.retry_offset = retry_offset
        self.source_offset = source_offset
        self.key_id = key_id
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp
        self.attempts = attempts
        self.not_before = not_before
        self.first_failure = first_failure
        self.kind = kind


class _Lane:
    """The retry state of one source partition: its waiting records, per key in source order."""

    def __init__(self, source: TopicPartition, retry: TopicPartition, start: int) -> None:
        self.source = source
        self.retry = retry
        self.items: dict[int, _Pending] = {}  # retry offset -> record
        self.by_source: dict[int, _Pending] = {}  # source offset -> its latest retry record
        self.by_key: dict[KeyId, list[_Pending]] = {}  # sorted by source offset; [0] is the key's head
        self.due: list[tuple[int, int]] = []  # heap of (not_before, retry offset) of heads; stale entries skipped
        self.seen_upto = start  # retry offsets below this were read, or written by this processor
        self.caught_up = False
        self.checkpointed: int | None = None

    def insert(self, item: _Pending) -> bool:
        """Add ``item``; it supersedes an older retry record of the same source record. False if
        ``item`` is itself older than the one known."""
        old = self.by_source.get(item.source_offset)
        if old is not None:
            if old.retry_offset >= item.retry_offset:
                return False
            self.remove(old)
        self.items[item.retry_offset] = item
        self.by_source[item.source_offset] = item
        queue = self.by_key.setdefault(item.key_id, [])
        bisect.insort(queue, item, key=lambda i: i.source_offset)
        if queue[0] is item:
            heapq.heappush(self.due, (item.not_before, item.retry_offset))
        return True

    def remove(self, item: _Pending) -> None:
        del self.items[item.retry_offset]
        if self.by_source.get(item.source_offset) is item:
            del self.by_source[item.source_offset]
        queue = self.by_key[item.key_id]
        was_head = queue[0] is item
        queue.remove(item)
        if not queue:
            del self.by_key[item.key_id]
        elif was_head:
            heapq.heappush(self.due, (queue[0].not_before, queue[0].retry_offset))

    def key_busy(self, key_id: KeyId) -> bool:
        return key_id in self.by_key

    def _valid(self, not_before: int, retry_offset: int) -> _Pending | None:
        item = self.items.get(retry_offset)
        if item is None or item.not_before != not_before or self.by_key[item.key_id][0] is not item:
            return None
        return item

    def next_due_time(self) -> int | None:
        while self.due:
            item = self._valid(*self.due[0])
            if item is not None:
                return item.not_before
            heapq.heappop(self.due)
        return None

    def pop_due(self, now: int) -> _Pending | None:
        when = self.next_due_time()
        if when is None or when > now:
            return None
        _, retry_offset = heapq.heappop(self.due)
        return self.items[retry_offset]

    def committable(self, position: int) -> int:
        """The first retry offset not finished: a restart reads from here."""
        done_upto = max(position, self.seen_upto)
        return min(min(self.items), done_upto) if self.items else done_upto


class RetryingProcessor:
    """Calls ``handler(record)`` for every record ``consumer`` polls, with retries and a dead-letter topic.

    ``consumer`` is a consumer of ``store`` with an assignment or subscription and without
    deserializers (records must reach the dead-letter topic as the bytes they were); give
    ``key_deserializer`` / ``value_deserializer`` here instead: the handler gets a
    :class:`~logstore.ConsumerRecord` with deserialized key and value, and a record that fails to
    deserialize goes to the dead-letter topic without retries (reason "decode").

    ``group`` names the consumer group in the dead-letter headers and keeps the retry records of
    processors of different groups on one topic apart; it defaults to the consumer's group_id.
    ``clock`` (milliseconds since the epoch) and ``random`` (for jitter) can be replaced in tests.

    Call :meth:`run_once` in a loop, or :meth:`run` until an event is set, then :meth:`close`
    (which does not close ``consumer``). One thread at a time, as the consumer.
    """

    def __init__(self, store: Store, consumer: Consumer, handler: Handler, *, policy: RetryPolicy | None = None,
                 mode: str = "blocking", park_keys: bool = True, group: str | None = None,
                 key_deserializer: Callable[[bytes], Any] | None = None,
                 value_deserializer: Callable[[bytes], Any] | None = None, max_pending: int = 10_000,
                 clock: Callable[[], int] | None = None, random: Callable[[], float] | None = None) -> None:
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r}; expected one of {', '.join(MODES)}")
        if not callable(handler):
            raise ConfigError("handler must be callable")
        policy = RetryPolicy() if policy is None else policy
        if not isinstance(policy, RetryPolicy):
            raise ConfigError(f"policy must be a RetryPolicy, not {type(policy).__name__}")
        if not isinstance(park_keys, bool):
            raise ConfigError("park_keys must be a bool")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigError(f"max_pending must be a positive int, not {max_pending!r}")
        for name, fn in (("key_deserializer", key_deserializer), ("value_deserializer", value_deserializer)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"{name} must be callable")
        config = getattr(consumer, "config", None)
        if not isinstance(config, dict):
            raise ConfigError(f"consumer must be a logstore Consumer, not {type(consumer).__name__}")
        for name in ("key_deserializer", "value_deserializer"):
            if config.get(name) is not None:
                raise ConfigError(f"the consumer has a {name}: give it to the processor instead, so that "
                                  "dead letters keep the record's bytes")
        if group is None:
            group = config.get("group_id")
        if group is not None and not isinstance(group, str):
            raise ConfigError(f"group must be a str or None, not {type(group).__name__}")
        self._store = store
        self._consumer = consumer
        self._handler = handler
        self.policy = policy
        self.mode = mode
        self.park_keys = park_keys
        self.group = group
        self._key_deserializer = key_deserializer
        self._value_deserializer = value_deserializer
        self._max_pending = max_pending
        self._clock = clock or _wall_clock_ms
        self._random = random or _random.random
        self.stats = ProcessorStats()
        self._producer = store.producer()
        self._retry_consumer = store.consumer(auto_offset_reset="earliest") if mode == "retry-topic" else None
        self._assigned: set[TopicPartition] = set()
        self._ready_topics: dict[str, int] = {}  # source topic -> partitions its derived topics are made for
        self._lanes: dict[TopicPartition, _Lane] = {}
        self._lanes_by_retry: dict[TopicPartition, _Lane] = {}
        self._blocked: dict[TopicPartition, _Blocked] = {}
        self._held: set[TopicPartition] = set()  # source partitions this processor paused
        self._next_offset: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._closed = False

    # -- public ---------------------------------------------------------------------------------

    def run_once(self, timeout: float = 0.0) -> int:
        """Handle what is ready: due retries, then one poll of the consumer (waiting up to
        ``timeout`` seconds, less if a retry falls due sooner). Returns how many records were
        finished or moved (handled, retried, parked or dead-lettered)."""
        self._check_open()
        self._sync_assignment()
        done = self._run_retries()
        self._resume_ready()
        records = self._consumer.poll(timeout=self._wait_seconds(timeout))
        done += self._process_batch(records)
        done += self._run_retries()
        self._save_progress()
        return done

    def run(self, stop: threading.Event, poll_timeout: float = 0.5) -> None:
        """:meth:`run_once` until ``stop`` is set."""
        while not stop.is_set():
            self.run_once(poll_timeout)

    def committable(self) -> dict[TopicPartition, int]:
        """Per source partition handled so far, the first offset not yet finished: what may be committed."""
        return dict(self._next_offset)

    def pending(self) -> dict[TopicPartition, int]:
        """Per source partition, how many records wait in the retry topic (retry-topic mode)."""
        return {tp: len(lane.items) for tp, lane in self._lanes.items()}

    def blocked(self) -> dict[TopicPartition, int]:
        """Per source partition held for a blocking retry, the offset of the record that waits."""
        return {tp: b.offset for tp, b in self._blocked.items()}

    def close(self) -> None:
        """Save the retry checkpoints and close the processor's own producer and consumer (not the
        one it was given). Idempotent."""
        if self._closed:
            return
        try:
            if not self._store.closed:
                self._save_progress()
        finally:
            self._closed = True
            if self._retry_consumer is not None:
                self._retry_consumer.close()
            self._producer.close()

    def __enter__(self) -> RetryingProcessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError("the processor is closed")

    # -- assignment -----------------------------------------------------------------------------

    def _sync_assignment(self) -> None:
        current = self._consumer.assignment()
        gone = self._assigned - current
        for tp in sorted(gone):
            self._drop(tp)
        added = sorted(current - self._assigned)
        if not added:
            return
        names = {tp.topic for tp in current}
        for tp in added:
            for own in names:
                if tp.topic in (dlq_topic(own), retry_topic(own), status_topic(own), checkpoint_topic(own)):
                    raise ConfigError(f"the consumer reads {tp.topic!r}, a topic this processor writes for "
                                      f"{own!r}: leave it out of the subscription")
        for tp in added:
            self._prepare_topics(tp)
        self._assigned |= set(added)
        if self._retry_consumer is not None:
            self._add_lanes(added)

    def _prepare_topics(self, tp: TopicPartition) -> None:
        if self._ready_topics.get(tp.topic, 0) > tp.partition:
            return
        ensure_dlq_topic(self._store, tp.topic)
        if self.mode == "retry-topic":
            ensure_retry_topic(self._store, tp.topic)
            ensure_compacted_topic(self._store, checkpoint_topic(tp.topic))
        self._ready_topics[tp.topic] = self._store.partitions_for(tp.topic)

    def _add_lanes(self, added: list[TopicPartition]) -> None:
        assert self._retry_consumer is not None
        lanes = []
        for tp in added:
            lane = _Lane(tp, TopicPartition(retry_topic(tp.topic), tp.partition), 0)
            lanes.append(lane)
            self._lanes[tp] = lane
            self._lanes_by_retry[lane.retry] = lane
        self._retry_consumer.assign(sorted(self._lanes_by_retry))
        checkpoints: dict[str, dict[int, int]] = {}
        for lane in lanes:
            topic = lane.source.topic
            if topic not in checkpoints:
                checkpoints[topic] = self._read_checkpoints(topic)
            start = self._store.beginning_offset(lane.retry)
            end = self._store.end_offset(lane.retry)
            offset = min(max(checkpoints[topic].get(lane.retry.partition, start), start), end)
            lane.seen_upto = offset
            lane.checkpointed = checkpoints[topic].get(lane.retry.partition)
            self._retry_consumer.seek(lane.retry, offset)

    def _drop(self, tp: TopicPartition) -> None:
        lane = self._lanes.pop(tp, None)
        if lane is not None:
            if not self._store.closed:
                self._save_lane(lane)
            del self._lanes_by_retry[lane.retry]
            assert self._retry_consumer is not None
            self._retry_consumer.assign(sorted(self._lanes_by_retry))
        self._assigned.discard(tp)
        self._blocked.pop(tp, None)
        self._held.discard(tp)
        self._next_offset.pop(tp, None)
        self._committed.pop(tp, None)

    # -- source records -------------------------------------------------------------------------

    def _process_batch(self, records: list[Any]) -> int:
        done = 0
        held: set[TopicPartition] = set()
        unfinished: dict[TopicPartition, int] = {}  # first offset of the batch not finished, per partition
        process = self._process_blocking if self._retry_consumer is None else self._process_source
        next_offset = self._next_offset
        tp = TopicPartition("", -1)
        skip = False
        try:
            for record in records:
                if record.partition != tp.partition or record.topic != tp.topic:
                    # a poll returns runs of one partition: look its state up once per run
                    tp = TopicPartition(record.topic, record.partition)
                    skip = tp in held
                    if skip:
                        continue
                    unfinished.setdefault(tp, record.offset)
                    if tp not in self._assigned:
                        self._sync_assignment()  # a partition that joined during the poll
                        if self._retry_consumer is not None:
                            self._read_retry_topics()  # its retry partition, so its keys' state is known
                elif skip:
                    continue
                if process(tp, record):
                    next_offset[tp] = unfinished[tp] = record.offset + 1
                    done += 1
                else:
                    self._hold(tp, record.offset)
                    held.add(tp)
                    skip = True
        except BaseException:
            # the consumer's position is past the whole batch: move it back to what is not finished
            for tp, offset in unfinished.items():
                if tp not in held and tp in self._consumer.assignment():
                    self._consumer.seek(tp, offset)
            raise
        return done

    def _hold(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(tp, offset)
        self._consumer.pause(tp)
        self._held.add(tp)

    def _resume_ready(self) -> None:
        now = self._clock()
        for tp in sorted(self._held):
            if tp not in self._assigned:
                self._held.discard(tp)
            elif self._ready(tp, now):
                self._consumer.resume(tp)
                self._held.discard(tp)

    def _ready(self, tp: TopicPartition, now: int) -> bool:
        if self._retry_consumer is None:
            blocked = self._blocked.get(tp)
            return blocked is None or blocked.due <= now
        lane = self._lanes[tp]
        return lane.caught_up and len(lane.items) < self._max_pending

    def _process_source(self, tp: TopicPartition, record: Any) -> bool:
        """Handle one source record in retry-topic mode; False: not now (the partition is held at it)."""
        lane = self._lanes[tp]
        if not lane.caught_up or len(lane.items) >= self._max_pending:
            return False
        if lane.items:  # something waits in retry: this record may be known, or its key busy
            if record.offset in lane.by_source:
                return True  # delivered again after a restart: it already waits in the retry topic
            if lane.key_busy(self._key_id(record.key, record.offset)):
                return self._park(lane, tp, record)
        exc, decode = self._call(tp, record.offset, record.timestamp, record.key, record.value, record.headers)
        if exc is not None:
            self._failed(lane, tp, record.offset, record.timestamp, record.key, record.value, record.headers, exc,
                         decode, attempts=1, first_failure=self._clock())
        return True

    def _park(self, lane: _Lane, tp: TopicPartition, record: Any) -> bool:
        """Append ``record`` to the retry partition behind the earlier records of its key."""
        info = RetryInfo(tp.topic, tp.partition, record.offset, record.timestamp, 0, 0, 0, 0, "parked", self.group)
        self._append_retry(lane, record.key, record.value, record.headers, info)
        self.stats.parked += 1
        return True

    def _process_blocking(self, tp: TopicPartition, record: Any) -> bool:
        """Handle one source record in blocking mode; False: not now (it waits for its backoff)."""
        attempts, first = 0, None
        blocked = self._blocked.pop(tp, None) if self._blocked else None
        if blocked is not None and blocked.offset == record.offset:
            if blocked.due > self._clock():
                self._blocked[tp] = blocked
                return False
            attempts, first = blocked.attempts, blocked.first_failure
        while True:
            exc, decode = self._call(tp, record.offset, record.timestamp, record.key, record.value, record.headers)
            if exc is None:
                return True
            attempts += 1
            now = self._clock()
            first = now if first is None else first
            if decode or not self.policy.should_retry(exc, attempts):
                self._dead_letter(tp, record.offset, record.timestamp, record.key, record.value, record.headers,
                                  exc, 0 if decode else attempts, first, now, decode)
                return True
            delay = self.policy.delay_ms(attempts, self._random)
            if delay > 0:
                self._blocked[tp] = _Blocked(record.offset, attempts, first, now + delay)
                return False

    def _key_id(self, key: bytes | None, source_offset: int) -> KeyId:
        if self.park_keys and key is not None:
            return key
        return ("#", source_offset)  # its own queue: never waits behind another record

    # -- retry records --------------------------------------------------------------------------

    def _run_retries(self) -> int:
        if self._retry_consumer is None or not self._lanes:
            return 0
        self._read_retry_topics()
        done = 0
        for lane in list(self._lanes.values()):
            if not lane.caught_up:
                continue  # an earlier record of a key may still be unread: no order to go by yet
            while True:
                item = lane.pop_due(self._clock())
                if item is None:
                    break
                try:
                    self._attempt(lane, item)
                except BaseException:
                    if item.retry_offset in lane.items:  # not finished: due again at the next run
                        heapq.heappush(lane.due, (item.not_before, item.retry_offset))
                    raise
                done += 1
        return done

    def _read_retry_topics(self) -> None:
        consumer = self._retry_consumer
        assert consumer is not None
        while True:
            records = consumer.poll(0, max_records=1000)
            if not records:
                break
            for record in records:
                lane = self._lanes_by_retry.get(TopicPartition(record.topic, record.partition))
                if lane is not None:
                    self._take_retry_record(lane, record)
        for lane in self._lanes.values():
            if not lane.caught_up and consumer.position(lane.retry) >= self._store.end_offset(lane.retry):
                lane.caught_up = True

    def _take_retry_record(self, lane: _Lane, record: Any) -> None:
        if record.offset < lane.seen_upto:
            return  # written by this processor: known already
        lane.seen_upto = record.offset + 1
        info = parse_retry_headers(record.headers)
        if info is None:
            log.warning("%s offset %d has no valid retry headers: skipped", lane.retry, record.offset)
            return
        if info.group != self.group:
            return  # a processor of another group retries it
        if (info.topic, info.partition) != lane.source:
            log.warning("%s offset %d belongs to %s-%d, not %s: skipped", lane.retry, record.offset, info.topic,
                        info.partition, lane.source)
            return
        lane.insert(_Pending(record.offset, info.offset, self._key_id(record.key, info.offset), record.key,
                             record.value, strip_ours(record.headers), info.timestamp, info.attempts,
                             info.not_before_ms, info.first_failure_ms, info.kind))

    def _attempt(self, lane: _Lane, item: _Pending) -> None:
        tp = lane.source
        now = self._clock()
        exc, decode = self._call(tp, item.source_offset, item.timestamp, item.key, item.value, list(item.headers))
        if exc is None:
            lane.remove(item)
            return
        first = item.first_failure if item.attempts else now
        self._failed(lane, tp, item.source_offset, item.timestamp, item.key, item.value, item.headers, exc, decode,
                     attempts=item.attempts + 1, first_failure=first)
        if item.retry_offset in lane.items:  # not superseded by a new retry record: finished
            lane.remove(item)

    def _failed(self, lane: _Lane, tp: TopicPartition, offset: int, timestamp: int, key: bytes | None,
                value: bytes | None, headers: Headers, exc: Exception, decode: bool, *, attempts: int,
                first_failure: int) -> None:
        """A failed attempt in retry-topic mode: to the retry topic, or to the dead-letter topic."""
        now = self._clock()
        if decode or not self.policy.should_retry(exc, attempts):
            self._dead_letter(tp, offset, timestamp, key, value, headers, exc, 0 if decode else attempts,
                              first_failure, now, decode)
            return
        not_before = now + self.policy.delay_ms(attempts, self._random)
        info = RetryInfo(tp.topic, tp.partition, offset, timestamp, attempts, not_before, first_failure, now, "retry",
                         self.group, exception_name(type(exc)))
        self._append_retry(lane, key, value, headers, info)
        self.stats.retried += 1

    def _append_retry(self, lane: _Lane, key: bytes | None, value: bytes | None, headers: Headers,
                      info: RetryInfo) -> None:
        meta = self._producer.send(lane.retry.topic, value=value, key=key, headers=retry_headers(headers, info),
                                   partition=lane.retry.partition, timestamp_ms=self._clock()).get()
        lane.seen_upto = max(lane.seen_upto, meta.offset + 1)
        lane.insert(_Pending(meta.offset, info.offset, self._key_id(key, info.offset), key, value,
                             strip_ours(headers), info.timestamp, info.attempts, info.not_before_ms,
                             info.first_failure_ms, info.kind))

    # -- handler and dead letters ---------------------------------------------------------------

    def _call(self, tp: TopicPartition, offset: int, timestamp: int, key: bytes | None, value: bytes | None,
              headers: Headers) -> tuple[Exception | None, bool]:
        """One attempt: (the exception raised or None, whether it was a decode error)."""
        k: Any = key
        v: Any = value
        if self._key_deserializer is not None or self._value_deserializer is not None:
            try:
                if key is not None and self._key_deserializer is not None:
                    k = self._key_deserializer(key)
                if value is not None and self._value_deserializer is not None:
                    v = self._value_deserializer(value)
            except Exception as exc:  # noqa: BLE001 - any deserializer failure is a decode error
                self.stats.failed_attempts += 1
                return exc, True
        try:
            self._handler(ConsumerRecord(tp.topic, tp.partition, offset, timestamp, k, v, headers))
        except Exception as exc:  # noqa: BLE001 - the policy decides what the handler's exceptions mean
            self.stats.failed_attempts += 1
            return exc, False
        self.stats.handled += 1
        return None, False

    def _dead_letter(self, tp: TopicPartition, offset: int, timestamp: int, key: bytes | None, value: bytes | None,
                     headers: Headers, exc: Exception, attempts: int, first_failure: int, last_failure: int,
                     decode: bool) -> None:
        reason = "decode" if decode else "exhausted" if self.policy.is_retryable(exc) else "fatal"
        failure = Failure.of(exc, attempts, first_failure, last_failure, reason)
        topic = dlq_topic(tp.topic)
        built = dead_letter_headers(headers, topic=tp.topic, partition=tp.partition, offset=offset,
                                    timestamp=timestamp, group=self.group, failure=failure)
        built = fit_dead_letter(key, value, built, self._store.topic_config(topic).max_message_bytes, topic)
        partition = tp.partition % self._store.partitions_for(topic)
        meta = self._producer.send(topic, value=value, key=key, headers=built, partition=partition,
                                   timestamp_ms=self._clock()).get()
        self.stats.dead_lettered += 1
        log.warning("%s-%d offset %d dead-lettered to %s (%d:%d) after %d attempt(s), %s: %s", tp.topic,
                    tp.partition, offset, topic, meta.partition, meta.offset, attempts, reason,
                    failure.exception_class)

    # -- progress -------------------------------------------------------------------------------

    def _wait_seconds(self, timeout: float) -> float:
        if timeout <= 0:
            return 0.0
        due = [b.due for b in self._blocked.values()]
        due += [t for lane in self._lanes.values() if (t := lane.next_due_time()) is not None]
        if not due:
            return timeout
        return max(0.0, min(timeout, (min(due) - self._clock()) / 1000.0))

    def _save_progress(self) -> None:
        for lane in self._lanes.values():
            self._save_lane(lane)
        if self._consumer.config.get("group_id") is None:
            return
        assigned = self._consumer.assignment()
        changed = {tp: o for tp, o in self._next_offset.items() if self._committed.get(tp) != o and tp in assigned}
        if not changed:
            return
        offsets: dict[TopicPartition | tuple[str, int], int | OffsetAndMetadata] = {tp: o for tp, o in changed.items()}
        try:
            self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # the group moved partitions away meanwhile: their next owner starts from the last commit
            log.warning("commit of %s failed: %s", sorted(changed), exc)
            return
        self._committed.update(changed)

    def _save_lane(self, lane: _Lane) -> None:
        """Write the lane's retry checkpoint if it moved (only once caught up: before, it is not known)."""
        if not lane.caught_up or self._retry_consumer is None:
            return
        offset = lane.committable(self._retry_consumer.position(lane.retry))
        if offset == lane.checkpointed:
            return
        value = json.dumps({"offset": offset, "topic_id": self._store.describe_topic(lane.retry.topic).topic_id})
        self._producer.send(checkpoint_topic(lane.source.topic), value=value.encode(),
                            key=self._checkpoint_key(lane.retry.partition), timestamp_ms=self._clock()).get()
        lane.checkpointed = offset

    def _checkpoint_key(self, partition: int) -> bytes:
        return f"{partition}:{self.group or ''}".encode()

    def _read_checkpoints(self, topic: str) -> dict[int, int]:
        """Retry partition -> checkpointed offset, for this group and the retry topic as it is now."""
        name = checkpoint_topic(topic)
        try:
            topic_id = self._store.describe_topic(retry_topic(topic)).topic_id
            records = list(read_partitions(self._store, [TopicPartition(name, 0)]))
        except UnknownTopicError:
            return {}
        found: dict[int, int] = {}
        for record in records:
            if record.key is None or record.value is None:
                continue
            partition, _, group = record.key.decode("utf-8", errors="replace").partition(":")
            if group != (self.group or ""):
                continue
            try:
                data = json.loads(record.value)
                if data["topic_id"] == topic_id:
                    found[int(partition)] = int(data["offset"])
            except (ValueError, KeyError, TypeError):
                log.warning("%s offset %d is not a checkpoint: skipped", name, record.offset)
        return found
