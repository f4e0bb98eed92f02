"""Inspecting, replaying and discarding dead letters: ``DeadLetterQueue(store, "orders")``.

An entry is a record of the ``<topic>.dlq`` topic, named by its ``"partition:offset"`` there
(e.g. ``"3:1742"``). Logs are append-only, so what became of an entry is kept apart, in the
compacted topic ``<topic>.dlq.status`` (one record per entry and change, keyed by the dead-letter
topic's id and the entry id, so a re-created ``.dlq`` topic does not inherit old statuses).

Statuses:

``pending``
    Dead-lettered and not dealt with yet.
``parked``
    A record that was replayed from the dead-letter topic and failed again. Replaying by filter
    (or ``--all``) skips it, so a record that keeps failing does not loop between the topic and
    its dead-letter topic; it is replayed only when named by id, once its cause is fixed.
``replayed``
    Written back (to its original topic or another); skipped by filters unless asked for.
``discarded``
    Given up on; hidden from :meth:`DeadLetterQueue.list` unless asked for, never replayed.
"""

from __future__ import annotations

import builtins
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from logstore.broker.types import TopicPartition
from logstore.dlq import headers as h
from logstore.dlq.topics import DLQ_SUFFIX, ensure_compacted_topic, read_partitions
from logstore.errors import (
    DeadLetterStatusError,
    InvalidArgumentError,
    UnknownDeadLetterError,
    UnknownTopicError,
)

if TYPE_CHECKING:
    from logstore._native.codec import Record
    from logstore.broker.store import Store

__all__ = ["STATUSES", "DeadLetterEntry", "DeadLetterQueue", "EntryFilter", "ReplayResult", "parse_entry_id"]

STATUSES = ("pending", "parked", "replayed", "discarded")
_ID = re.compile(r"([0-9]+):([0-9]+)")


def parse_entry_id(entry_id: object) -> tuple[int, int]:
    """``"3:1742"`` -> ``(3, 1742)``; InvalidArgumentError for anything else."""
    match = _ID.fullmatch(entry_id) if isinstance(entry_id, str) else None
    if match is None:
        raise InvalidArgumentError(f"a dead-letter entry id is 'partition:offset' (e.g. '0:42'), not {entry_id!r}")
    return int(match.group(1)), int(match.group(2))


def _int(found: dict[str, bytes], name: str) -> int | None:
    try:
        return int(found[name])
    except (KeyError, ValueError):
        return None


def _text(found: dict[str, bytes], name: str) -> str | None:
    value = found.get(name)
    return None if value is None else value.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class DeadLetterEntry:
    """One record of a dead-letter topic, with what its ``logstore.dlq.*`` headers say."""

    id: str
    partition: int
    offset: int
    timestamp: int
    """When it was dead-lettered (the dead-letter record's timestamp, ms)."""
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    """The original record's headers (without logstore's dead-letter headers)."""
    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    original_timestamp: int | None
    group: str | None
    exception_class: str | None
    exception_message: str | None
    stacktrace: str | None
    attempts: int | None
    first_failure_ms: int | None
    last_failure_ms: int | None
    reason: str | None
    replay_count: int
    """How often the record had been replayed before it failed this time (0: never)."""
    status: str
    status_detail: dict[str, Any] = field(default_factory=dict)
    """The status record's fields (``at``, and for a replay ``to``, ``partition``, ``offset``)."""

    @classmethod
    def from_record(cls, record: Record, status: dict[str, Any] | None) -> DeadLetterEntry:
        found = h.header_map(record.headers)
        replay_count = _int(found, h.REPLAY_COUNT) or 0
        default = "parked" if replay_count > 0 else "pending"
        state = dict(status) if status is not None else {}
        return cls(
            id=f"{record.partition}:{record.offset}", partition=record.partition, offset=record.offset,
            timestamp=record.timestamp, key=record.key, value=record.value,
            headers=[(n, v) for n, v in record.headers if not n.startswith(h.DLQ_PREFIX)],
            original_topic=_text(found, h.ORIGINAL_TOPIC), original_partition=_int(found, h.ORIGINAL_PARTITION),
            original_offset=_int(found, h.ORIGINAL_OFFSET), original_timestamp=_int(found, h.ORIGINAL_TIMESTAMP),
            group=_text(found, h.GROUP), exception_class=_text(found, h.EXCEPTION_CLASS),
            exception_message=_text(found, h.EXCEPTION_MESSAGE), stacktrace=_text(found, h.STACKTRACE),
            attempts=_int(found, h.ATTEMPTS), first_failure_ms=_int(found, h.FIRST_FAILURE),
            last_failure_ms=_int(found, h.LAST_FAILURE), reason=_text(found, h.REASON), replay_count=replay_count,
            status=str(state.get("status", default)), status_detail=state)

    @property
    def failed_at(self) -> int:
        """The last failure time, or the dead-letter timestamp for a record without the header."""
        return self.last_failure_ms if self.last_failure_ms is not None else self.timestamp


@dataclass(frozen=True)
class EntryFilter:
    """Which entries to list, replay or discard; every given condition must hold.

    ``exception`` matches the exception class by its full name or its last part
    (``"ValueError"``, ``"app.errors.Timeout"`` or ``"Timeout"``). ``since_ms`` (inclusive) and
    ``until_ms`` (exclusive) bound the last failure time. ``statuses`` None means every status
    but "discarded" for listing and discarding, and "pending" only for replaying.
    """

    original_topic: str | None = None
    exception: str | None = None
    key: bytes | str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    statuses: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.statuses is not None:
            statuses = (self.statuses,) if isinstance(self.statuses, str) else tuple(self.statuses)
            unknown = [s for s in statuses if s not in STATUSES]
            if unknown or not statuses:
                raise InvalidArgumentError(f"unknown status {unknown or statuses!r}; known: {', '.join(STATUSES)}")
            object.__setattr__(self, "statuses", statuses)
        for name in ("since_ms", "until_ms"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidArgumentError(f"{name} must be an int (ms since the epoch), not {value!r}")
        if self.key is not None and not isinstance(self.key, (bytes, str)):
            raise InvalidArgumentError(f"key must be bytes or str, not {type(self.key).__name__}")

    def matches(self, entry: DeadLetterEntry, default_statuses: Sequence[str]) -> bool:
        if entry.status not in (self.statuses if self.statuses is not None else default_statuses):
            return False
        if self.original_topic is not None and entry.original_topic != self.original_topic:
            return False
        if self.exception is not None:
            name = entry.exception_class or ""
            if self.exception not in (name, name.rsplit(".", 1)[-1]):
                return False
        if self.key is not None:
            key = self.key.encode() if isinstance(self.key, str) else self.key
            if entry.key != key:
                return False
        if self.since_ms is not None and entry.failed_at < self.since_ms:
            return False
        return self.until_ms is None or entry.failed_at < self.until_ms


@dataclass(frozen=True)
class ReplayResult:
    """Where an entry was (or, in a dry run, would be) written."""

    id: str
    topic: str
    partition: int | None
    """None: chosen by the producer's partitioner (key hash)."""
    offset: int | None
    """None in a dry run."""


Selection = Iterable[str] | EntryFilter | None


class DeadLetterQueue:
    """The dead letters of ``topic``: ``DeadLetterQueue(store, "orders")`` works on
    ``orders.dlq`` (a name ending in ``.dlq`` is taken as the dead-letter topic itself).

    ``clock`` (ms since the epoch) and ``sleep`` (seconds) pace :meth:`replay`; tests replace them.
    """

    def __init__(self, store: Store, topic: str, *, clock: Callable[[], int] | None = None,
                 sleep: Callable[[float], object] | None = None) -> None:
        if not isinstance(topic, str):
            raise InvalidArgumentError(f"a topic name is a str, not {type(topic).__name__}")
        self._store = store
        self._clock = clock or (lambda: int(time.time() * 1000))
        self._sleep = sleep or time.sleep
        names = set(store.list_topics(internal=True))
        if topic + DLQ_SUFFIX in names:
            self.topic = topic + DLQ_SUFFIX
        elif topic.endswith(DLQ_SUFFIX) and topic in names:
            self.topic = topic
        else:
            raise UnknownTopicError(f"topic {topic!r} has no dead-letter topic ({topic + DLQ_SUFFIX} does not exist)")
        self.status_topic = self.topic + ".status"

    # -- reading --------------------------------------------------------------------------------

    def _partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in range(self._store.partitions_for(self.topic))]

    def _topic_id(self) -> str:
        return self._store.describe_topic(self.topic).topic_id

    def _status_key(self, topic_id: str, entry_id: str) -> bytes:
        return f"{topic_id}/{entry_id}".encode()

    def _statuses(self) -> dict[str, dict[str, Any]]:
        """Entry id -> the latest status record of this dead-letter topic."""
        try:
            records = list(read_partitions(self._store, [TopicPartition(self.status_topic, 0)]))
        except UnknownTopicError:
            return {}
        prefix = f"{self._topic_id()}/"
        found: dict[str, dict[str, Any]] = {}
        for record in records:
            key = (record.key or b"").decode("utf-8", errors="replace")
            if not key.startswith(prefix):
                continue
            if record.value is None:
                found.pop(key[len(prefix):], None)
                continue
            try:
                state = json.loads(record.value)
            except ValueError:
                continue
            if isinstance(state, dict) and state.get("status") in STATUSES:
                found[key[len(prefix):]] = state
        return found

    def entries(self) -> list[DeadLetterEntry]:
        """Every entry, any status, oldest failure first."""
        statuses = self._statuses()
        out = [DeadLetterEntry.from_record(r, statuses.get(f"{r.partition}:{r.offset}"))
               for r in read_partitions(self._store, self._partitions())]
        out.sort(key=lambda e: (e.timestamp, e.partition, e.offset))
        return out

    def list(self, where: EntryFilter | None = None, *, limit: int | None = None) -> builtins.list[DeadLetterEntry]:
        """The entries ``where`` selects (default: all but discarded ones), oldest failure first,
        at most ``limit``."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidArgumentError(f"limit must be a non-negative int, not {limit!r}")
        where = self._check_filter(where)
        found = [e for e in self.entries() if where.matches(e, ("pending", "parked", "replayed"))]
        return found if limit is None else found[:limit]

    def get(self, entry_id: str) -> DeadLetterEntry:
        """One entry by id (any status); UnknownDeadLetterError if there is none."""
        return self._by_ids([entry_id])[0]

    def _by_ids(self, ids: Sequence[str]) -> builtins.list[DeadLetterEntry]:
        wanted = [parse_entry_id(i) for i in ids]
        partitions = self._store.partitions_for(self.topic)
        starts: dict[TopicPartition, int] = {}
        for partition, offset in wanted:
            tp = TopicPartition(self.topic, partition)
            if partition >= partitions or not (self._store.beginning_offset(tp) <= offset
                                               < self._store.end_offset(tp)):
                raise UnknownDeadLetterError(f"{self.topic} has no entry {partition}:{offset}")
            starts[tp] = min(starts.get(tp, offset), offset)
        statuses = self._statuses()
        want = set(wanted)
        found: dict[tuple[int, int], DeadLetterEntry] = {}
        for record in read_partitions(self._store, sorted(starts), starts):
            if (record.partition, record.offset) in want:
                found[(record.partition, record.offset)] = DeadLetterEntry.from_record(
                    record, statuses.get(f"{record.partition}:{record.offset}"))
        missing = [f"{p}:{o}" for p, o in wanted if (p, o) not in found]
        if missing:
            raise UnknownDeadLetterError(f"{self.topic} has no entry {', '.join(missing)}")
        return [found[k] for k in wanted]

    def _check_filter(self, where: EntryFilter | None) -> EntryFilter:
        if where is None:
            return EntryFilter()
        if not isinstance(where, EntryFilter):
            raise InvalidArgumentError(f"expected an EntryFilter, not {type(where).__name__}")
        return where

    def _select(self, selection: Selection,
                default_statuses: Sequence[str]) -> tuple[builtins.list[DeadLetterEntry], bool]:
        """The entries of ``selection`` and whether they were named by id."""
        if selection is None or isinstance(selection, EntryFilter):
            where = self._check_filter(selection)
            return [e for e in self.entries() if where.matches(e, default_statuses)], False
        if isinstance(selection, (str, bytes)):
            raise InvalidArgumentError("give entry ids as a list (e.g. ['0:42']), not a single string")
        ids = builtins.list(dict.fromkeys(selection))
        if not ids:
            raise InvalidArgumentError("no entry ids given")
        return self._by_ids(ids), True

    # -- replay and discard ---------------------------------------------------------------------

    def replay(self, selection: Selection = None, *, to: str | None = None, rate: float | None = None,
               dry_run: bool = False) -> builtins.list[ReplayResult]:
        """Write entries back: to their original topic and partition, or to topic ``to`` (its
        partitioner then places them by key), with their key, value, headers and original
        timestamp, plus the ``logstore.replay.*`` headers; then mark them "replayed".

        ``selection``: entry ids, or an :class:`EntryFilter` (default: every pending entry;
        parked and replayed ones are replayed only when named by id or by the filter's
        ``statuses``). ``rate``: at most this many records per second. ``dry_run``: only say
        what would be written. Everything is checked before the first write: a bad id, a
        discarded entry or an unknown topic raises and writes nothing."""
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                 or not math.isfinite(rate) or rate <= 0):
            raise InvalidArgumentError(f"rate must be a positive number of records per second, not {rate!r}")
        if to is not None:
            self._store.partitions_for(to)  # UnknownTopicError before anything is written
        entries, by_id = self._select(selection, ("pending",))
        discarded = [e.id for e in entries if e.status == "discarded"]
        if discarded:
            raise DeadLetterStatusError(f"entries {', '.join(discarded)} of {self.topic} are discarded: "
                                        "not replayed")
        plan: builtins.list[tuple[DeadLetterEntry, str, int | None]] = []
        for entry in entries:
            target = to if to is not None else entry.original_topic
            if target is None:
                raise InvalidArgumentError(f"entry {entry.id} of {self.topic} does not say its original topic: "
                                           "give the topic to replay to")
            partition: int | None = None
            if to is None and entry.original_partition is not None \
                    and entry.original_partition < self._store.partitions_for(target):
                partition = entry.original_partition
            plan.append((entry, target, partition))
        if dry_run or not plan:
            return [ReplayResult(e.id, t, p, None) for e, t, p in plan]
        ensure_compacted_topic(self._store, self.status_topic)
        topic_id = self._topic_id()
        results = []
        with self._store.producer() as producer:
            for i, (entry, target, partition) in enumerate(plan):
                if rate is not None and i:
                    self._sleep(1.0 / rate)
                timestamp = entry.original_timestamp if (entry.original_timestamp or -1) >= 0 else None
                meta = producer.send(target, value=entry.value, key=entry.key,
                                     headers=h.replay_headers(entry.headers, f"{self.topic}/{entry.id}",
                                                              entry.replay_count + 1),
                                     partition=partition, timestamp_ms=timestamp).get()
                self._write_status(producer, topic_id, entry.id, {
                    "status": "replayed", "to": target, "partition": meta.partition, "offset": meta.offset})
                results.append(ReplayResult(entry.id, target, meta.partition, meta.offset))
        return results

    def discard(self, selection: Selection, *, dry_run: bool = False) -> builtins.list[str]:
        """Mark entries "discarded" (entry ids, or an :class:`EntryFilter`; the records stay in the
        log until retention removes them). Returns the ids newly discarded; already discarded
        ones are left as they are. A bad id raises and writes nothing."""
        if selection is None:
            raise InvalidArgumentError("say what to discard: entry ids or an EntryFilter")
        entries, _ = self._select(selection, ("pending", "parked", "replayed"))
        ids = [e.id for e in entries if e.status != "discarded"]
        if dry_run or not ids:
            return ids
        ensure_compacted_topic(self._store, self.status_topic)
        topic_id = self._topic_id()
        with self._store.producer() as producer:
            for entry_id in ids:
                self._write_status(producer, topic_id, entry_id, {"status": "discarded"})
        return ids

    def _write_status(self, producer: Any, topic_id: str, entry_id: str, state: dict[str, Any]) -> None:
        state = {**state, "at": self._clock()}
        producer.send(self.status_topic, value=json.dumps(state).encode(),
                      key=self._status_key(topic_id, entry_id)).get()
