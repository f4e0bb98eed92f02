"""The embedded broker: one data directory of topics, each a set of partition logs.

``logstore.open(path)`` returns a :class:`Store`. It owns the topic catalogue (``meta/``), one
:class:`~logstore.log.PartitionLog` per partition (``<topic>-<n>/``), the background cleaner
(retention and compaction), producer-id allocation, and the notifier that wakes consumers
blocked in ``poll``. Producers and consumers are created from it and append to / read from its
logs in-process.

Single node: every append is committed when it returns, so each log's high watermark follows its
log end offset (``LogCore._hw_follows_leo``); consumers read below the high watermark only, which
keeps the seam for replication, where the two differ.
"""

from __future__ import annotations

import builtins
import logging
import os
import re
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from logstore._native.core import AppendNotifier
from logstore._native.producer import TopicRoute
from logstore.broker.metadata import (
    MetadataStore,
    TopicRecord,
    find_stray_partition_dirs,
    mark_for_deletion,
    purge_deleted,
    read_partition_metadata,
    write_partition_metadata,
)
from logstore.broker.topics import (
    CONSUMER_OFFSETS_TOPIC,
    TopicConfig,
    check_collision,
    is_internal,
    partition_dir_name,
    validate_partition_count,
    validate_topic_name,
)
from logstore.broker.types import PartitionDescription, TopicDescription, TopicPartition
from logstore.errors import (
    ConfigError,
    InvalidArgumentError,
    InvalidPartitionsError,
    InvalidTopicError,
    LogClosedError,
    TopicExistsError,
    UnknownTopicError,
)
from logstore.log.checkpoint import write_atomic
from logstore.log.dirlock import lock_directory
from logstore.log.partition import PartitionLog

if TYPE_CHECKING:
    from logstore.client.aio import AsyncConsumer, AsyncProducer
    from logstore.client.consumer import Consumer
    from logstore.client.producer import Producer
    from logstore.groups.coordinator import GroupCoordinator
    from logstore.groups.types import GroupDescription, GroupListing

log = logging.getLogger("logstore.broker")

PRODUCER_IDS_FILE = "producer_ids"
PRODUCER_ID_BLOCK = 1000


class _Topic:
    """A topic's catalogue record, effective config and open partition logs."""

    __slots__ = ("record", "config", "logs")

    def __init__(self, record: TopicRecord, config: TopicConfig, logs: list[PartitionLog]) -> None:
        self.record = record
        self.config = config
        self.logs = logs


class Store:
    """An embedded, single-node broker over one data directory (use :func:`logstore.open`)."""

    def __init__(self, path: str | os.PathLike[str], *, auto_create_topics: bool = False,
                 default_partitions: int = 1, topic_defaults: Mapping[str, Any] | None = None,
                 cleaner: bool = True, cleaner_interval_ms: int = 15_000,
                 offsets_retention_ms: int = 7 * 86_400_000,
                 offsets_retention_check_interval_ms: int = 600_000) -> None:
        self.path = os.path.abspath(os.fspath(path))
        if not isinstance(auto_create_topics, bool):
            raise ConfigError("auto_create_topics must be a bool")
        self.auto_create_topics = auto_create_topics
        self.default_partitions = validate_partition_count(default_partitions)
        self.topic_defaults = TopicConfig.from_dict(topic_defaults)
        for name, value in (("offsets_retention_ms", offsets_retention_ms),
                            ("offsets_retention_check_interval_ms", offsets_retention_check_interval_ms)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive int (ms), not {value!r}")
        self._offsets_retention_ms = offsets_retention_ms
        self._offsets_retention_check_ms = offsets_retention_check_interval_ms
        self._coordinator: GroupCoordinator | None = None
        self._lock = threading.RLock()
        self._closed = True
        self._topics: dict[str, _Topic] = {}
        self._notifier = AppendNotifier()
        self._producers: weakref.WeakSet[Producer] = weakref.WeakSet()
        self._consumers: weakref.WeakSet[Consumer] = weakref.WeakSet()
        self._metadata_version = 0
        self._next_producer_id = 0
        self._producer_id_limit = 0
        os.makedirs(self.path, exist_ok=True)
        self._lock_fd = lock_directory(self.path)
        try:
            self._meta = MetadataStore.open(self.path)
            self._open_topics()
        except BaseException:
            self._close_logs()
            os.close(self._lock_fd)
            raise
        self._closed = False
        self._cleaner: Any = None
        if cleaner:
            self._start_cleaner(cleaner_interval_ms)

    # -- open / close ---------------------------------------------------------------------------

    def _open_topics(self) -> None:
        catalogue = self._meta.topics()
        for path in find_stray_partition_dirs(self.path, catalogue):
            if not path.endswith("-delete"):
                log.warning("%s belongs to no topic of the catalogue (a deleted topic's leftovers): removing it",
                            path)
                mark_for_deletion(path)
        purge_deleted(self.path)
        for record in catalogue.values():
            config = TopicConfig.from_dict(record.config, self.topic_defaults)
            self._topics[record.name] = _Topic(record, config, [])
            for p in range(record.partitions):
                self._topics[record.name].logs.append(self._open_partition(record, config, p))

    def _open_partition(self, record: TopicRecord, config: TopicConfig, partition: int) -> PartitionLog:
        directory = os.path.join(self.path, partition_dir_name(record.name, partition))
        if os.path.isdir(directory):
            owner = read_partition_metadata(directory)
            if owner != record.topic_id and (owner is not None or os.listdir(directory)):
                # another (deleted) topic's data, or data of unknown origin, under this name: never adopt it
                log.warning("%s belongs to topic id %s, not %s: removing it", directory, owner, record.topic_id)
                mark_for_deletion(directory)
                purge_deleted(self.path)
        if not os.path.isdir(directory) or read_partition_metadata(directory) is None:
            # the topic id goes in before any data, so a directory is never adopted by mistake
            os.makedirs(directory, exist_ok=True)
            write_partition_metadata(directory, record.topic_id)
        plog = PartitionLog.open(directory, **config.log_kwargs())
        # single node: everything appended is committed
        plog.set_high_watermark(plog.log_end_offset)
        plog._hw_follows_leo = True
        plog._notifier = self._notifier
        return plog

    def _close_logs(self) -> None:
        for topic in self._topics.values():
            for plog in topic.logs:
                try:
                    plog.close()
                except Exception:  # keep closing the others
                    log.exception("closing %s failed", plog.path)
        self._topics.clear()

    def close(self) -> None:
        """Stop the cleaner, close producers and consumers, flush and close every log. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._cleaner is not None:
            self._cleaner.stop()
        for producer in list(self._producers):
            producer.close()
        for consumer in list(self._consumers):
            consumer.close()  # commits and leaves its group while the coordinator still runs
        if self._coordinator is not None:
            self._coordinator.close()
        with self._lock:
            self._close_logs()
            self._notifier.wake()
            os.close(self._lock_fd)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError("the store is closed")

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._topics)} topics"
        return f"Store({self.path!r}, {state})"

    # -- cleaner --------------------------------------------------------------------------------

    def _start_cleaner(self, interval_ms: int) -> None:
        try:
            from logstore.log.cleaner import LogCleaner
        except ImportError:  # pragma: no cover - the cleaner lands separately
            return
        self._cleaner = LogCleaner(self._cleanable_logs, interval_ms=interval_ms)
        self._cleaner.start()

    def _cleanable_logs(self) -> list[tuple[PartitionLog, TopicConfig]]:
        with self._lock:
            if self._closed:
                return []
            return [(plog, t.config) for t in self._topics.values() for plog in t.logs]

    # -- topics ---------------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1, config: Mapping[str, Any] | None = None) -> TopicDescription:
        """Create a topic of ``partitions`` partitions; ``config`` overrides the store's topic
        defaults (snake_case or Kafka's dotted names)."""
        name = validate_topic_name(name)
        count = validate_partition_count(partitions)
        topic_config = TopicConfig.from_dict(config, self.topic_defaults)
        with self._lock:
            self._check_open()
            if name in self._topics:
                raise TopicExistsError(f"topic {name!r} already exists")
            check_collision(name, self._topics)
            record = TopicRecord.new(name, count, topic_config.overrides())
            self._meta.add(record)
            topic = _Topic(record, topic_config, [])
            try:
                for p in range(count):
                    topic.logs.append(self._open_partition(record, topic_config, p))
            except BaseException:
                for plog in topic.logs:
                    plog.close()
                    mark_for_deletion(plog.path)
                for p in range(len(topic.logs), count):
                    # a directory the failed partition created before its log opened
                    directory = os.path.join(self.path, partition_dir_name(name, p))
                    if os.path.isdir(directory) and read_partition_metadata(directory) == record.topic_id:
                        mark_for_deletion(directory)
                purge_deleted(self.path)
                self._meta.remove(name)
                raise
            self._topics[name] = topic
            self._metadata_changed(name)
            return self._describe(topic)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data (the catalogue first, then the directories)."""
        with self._lock:
            self._check_open()
            topic = self._get(name)
            if name == CONSUMER_OFFSETS_TOPIC:
                raise InvalidTopicError(f"{name} is internal: it holds the committed offsets of every group")
            self._meta.remove(name)
            del self._topics[name]
            self._metadata_changed(name)
            for plog in topic.logs:
                plog.close()
                mark_for_deletion(plog.path)
        purge_deleted(self.path)

    def list_topics(self, internal: bool = False) -> list[str]:
        """Topic names, sorted (internal ``__`` topics only if ``internal``)."""
        with self._lock:
            self._check_open()
            return sorted(n for n in self._topics if internal or not is_internal(n))

    def describe_topic(self, name: str) -> TopicDescription:
        with self._lock:
            self._check_open()
            return self._describe(self._get(name))

    def _describe(self, topic: _Topic) -> TopicDescription:
        parts = []
        for p, plog in enumerate(topic.logs):
            segs = plog.segments()
            parts.append(PartitionDescription(p, plog.log_start_offset, plog.log_end_offset, plog.high_watermark,
                                              sum(s["size"] for s in segs), len(segs)))
        return TopicDescription(topic.record.name, topic.record.topic_id, parts, topic.config.to_dict(),
                                dict(topic.record.config))

    def create_partitions(self, name: str, total: int) -> TopicDescription:
        """Grow a topic to ``total`` partitions (never shrink: keyed records would lose order)."""
        with self._lock:
            self._check_open()
            topic = self._get(name)
            if name == CONSUMER_OFFSETS_TOPIC:
                raise InvalidPartitionsError(f"{name} is internal: its partition count is fixed")
            total = validate_partition_count(total)
            current = topic.record.partitions
            if total <= current:
                raise InvalidPartitionsError(
                    f"topic {name!r} has {current} partitions; the new count must be larger, not {total}")
            record = topic.record.with_partitions(total)
            new_logs = []
            try:
                for p in range(current, total):
                    new_logs.append(self._open_partition(record, topic.config, p))
                self._meta.replace(record)
            except BaseException:
                for plog in new_logs:
                    plog.close()
                    mark_for_deletion(plog.path)
                raise
            topic.record = record
            topic.logs.extend(new_logs)
            self._metadata_changed(name)
            return self._describe(topic)

    def alter_topic_config(self, name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        """Change a topic's config (a value of None resets a key to the store default); returns
        the full effective config. Applies to the open logs at once."""
        with self._lock:
            self._check_open()
            topic = self._get(name)
            new = topic.config.with_overrides(config)
            if new == topic.config:
                return new.to_dict()
            record = topic.record.with_config(new.overrides())
            kwargs = new.log_kwargs()
            self._meta.replace(record)
            topic.record = record
            topic.config = new
            for plog in topic.logs:
                plog.reconfigure(**kwargs)
            self._metadata_changed(name)  # producers pick up durability and compaction from the new route
            return new.to_dict()

    def partitions_for(self, topic: str) -> int:
        with self._lock:
            self._check_open()
            return self._get(topic).record.partitions

    def topic_config(self, topic: str) -> TopicConfig:
        with self._lock:
            self._check_open()
            return self._get(topic).config

    def partition_log(self, tp: TopicPartition | tuple[str, int]) -> PartitionLog:
        """The log of a partition (for tools and tests; appends here bypass producers)."""
        topic, partition = tp
        with self._lock:
            self._check_open()
            logs = self._get(topic).logs
            if not isinstance(partition, int) or not 0 <= partition < len(logs):
                raise UnknownTopicError(f"partition {partition} of topic {topic!r} does not exist")
            return logs[partition]

    def topic_partitions(self, topics: Iterable[str] | None = None, pattern: re.Pattern[str] | None = None,
                         internal: bool = False) -> list[TopicPartition]:
        """Every partition of the named topics, or of the topics matching ``pattern``."""
        with self._lock:
            self._check_open()
            if pattern is not None:
                names = [n for n in sorted(self._topics) if pattern.fullmatch(n) and (internal or not is_internal(n))]
            else:
                names = list(topics or [])
                for n in names:
                    self._get(n)
            return [TopicPartition(n, p) for n in names for p in range(self._topics[n].record.partitions)]

    def _topic_id(self, name: str) -> str | None:
        topic = self._topics.get(name)
        return topic.record.topic_id if topic is not None else None

    def _get(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            if not isinstance(name, str):
                raise InvalidArgumentError(f"a topic name is a str, not {type(name).__name__}")
            raise UnknownTopicError(f"topic {name!r} does not exist")
        return topic

    def _metadata_changed(self, topic: str) -> None:
        """Producers drop their cached route of ``topic``; consumers re-resolve subscriptions;
        groups whose partitions it changes rebalance."""
        self._metadata_version += 1
        if self._coordinator is not None:
            self._coordinator.on_topic_change(topic)
        for producer in list(self._producers):
            producer._invalidate_route(topic)
        for consumer in list(self._consumers):
            consumer._on_metadata_change()
        self._notifier.wake()

    @property
    def metadata_version(self) -> int:
        return self._metadata_version

    def _route(self, topic: str) -> TopicRoute:
        with self._lock:
            self._check_open()
            if self.auto_create_topics and isinstance(topic, str) and topic not in self._topics:
                self.create_topic(topic, self.default_partitions)
            t = self._get(topic)
            return TopicRoute(topic, list(t.logs), t.config.cleanup_policy == "compact", t.config.flush == "always")

    # -- producers and consumers ----------------------------------------------------------------

    def producer(self, **config: Any) -> Producer:
        """A producer appending to this store (kafka-python configuration names)."""
        from logstore.client.producer import Producer

        self._check_open()
        producer = Producer(self, **config)
        self._producers.add(producer)
        return producer

    def consumer(self, *topics: str, **config: Any) -> Consumer:
        """A consumer reading from this store: ``store.consumer("a", "b")``,
        ``store.consumer(topics=[...])``, ``store.consumer(pattern="orders-.*")`` or no topics
        and ``.assign([...])`` later."""
        from logstore.client.consumer import Consumer

        self._check_open()
        if topics:
            if "topics" in config:
                raise ConfigError("give topics either as arguments or as topics=, not both")
            config["topics"] = list(topics)
        consumer = Consumer(self, **config)
        self._consumers.add(consumer)
        return consumer

    def async_producer(self, **config: Any) -> AsyncProducer:
        """An asyncio producer (``await producer.send(...)``) with the configuration of
        :meth:`producer`; see ``logstore.client.aio``."""
        from logstore.client.aio import AsyncProducer

        return AsyncProducer(self.producer(**config))

    def async_consumer(self, *topics: str, **config: Any) -> AsyncConsumer:
        """An asyncio consumer (``await consumer.getone()``, ``async for``) with the arguments of
        :meth:`consumer`; see ``logstore.client.aio``."""
        from logstore.client.aio import AsyncConsumer

        return AsyncConsumer(self.consumer(*topics, **config))

    def _allocate_producer_id(self) -> int:
        """A producer id never handed out before in this data directory (blocks are reserved
        durably, so a restart cannot reuse one)."""
        with self._lock:
            self._check_open()
            if self._next_producer_id >= self._producer_id_limit:
                path = os.path.join(self.path, "meta", PRODUCER_IDS_FILE)
                try:
                    with builtins.open(path, "rb") as f:
                        start = int(f.read().decode().strip() or 0)
                except FileNotFoundError:
                    start = 0
                except (ValueError, UnicodeDecodeError):
                    # damaged: skip far ahead rather than risk reusing an id
                    start = max(self._producer_id_limit, 1 << 40)
                limit = start + PRODUCER_ID_BLOCK
                write_atomic(path, b"%d\n" % limit)
                self._next_producer_id, self._producer_id_limit = start, limit
            pid = self._next_producer_id
            self._next_producer_id += 1
            return pid

    # -- offsets --------------------------------------------------------------------------------

    def beginning_offset(self, tp: TopicPartition | tuple[str, int]) -> int:
        return self.partition_log(tp).log_start_offset

    def end_offset(self, tp: TopicPartition | tuple[str, int]) -> int:
        """The high watermark: the offset the next committed record gets."""
        return self.partition_log(tp).high_watermark

    # -- consumer groups ------------------------------------------------------------------------

    def _group_coordinator(self) -> GroupCoordinator:
        """The coordinator of this store's consumer groups, started on first use (it creates and
        replays ``__consumer_offsets``)."""
        coordinator = self._coordinator
        if coordinator is not None:
            return coordinator
        from logstore.groups.coordinator import GroupCoordinator
        from logstore.groups.offsets import OffsetStore

        with self._lock:
            self._check_open()
            if self._coordinator is None:
                if CONSUMER_OFFSETS_TOPIC not in self._topics:
                    # compacted: about one record per (group, partition) stays; 100 MiB segments as Kafka's
                    self.create_topic(CONSUMER_OFFSETS_TOPIC, 1, {"cleanup_policy": "compact",
                                                                  "segment_bytes": 100 << 20})
                offsets = OffsetStore(self._topics[CONSUMER_OFFSETS_TOPIC].logs[0])
                self._coordinator = GroupCoordinator(
                    offsets, self._partition_count, self._log_end_offset, self._notifier,
                    offsets_retention_ms=self._offsets_retention_ms,
                    offsets_retention_check_interval_ms=self._offsets_retention_check_ms)
            return self._coordinator

    def _partition_count(self, topic: str) -> int | None:
        # lock-free (the coordinator calls it under its own lock): a dict lookup and an int read
        t = self._topics.get(topic)
        return t.record.partitions if t is not None else None

    def _log_end_offset(self, tp: TopicPartition) -> int | None:
        t = self._topics.get(tp.topic)
        if t is None or not 0 <= tp.partition < len(t.logs):
            return None
        try:
            return t.logs[tp.partition].high_watermark
        except LogClosedError:
            return None

    def list_groups(self) -> list[GroupListing]:
        """Every consumer group with members or committed offsets: id, state, member count."""
        self._check_open()
        return self._group_coordinator().list_groups()

    def describe_group(self, group_id: str) -> GroupDescription:
        """State, generation, assignor, members and their partitions, and per partition the
        committed offset, log end offset and lag (UnknownGroupError for an unknown group)."""
        self._check_open()
        if not isinstance(group_id, str):
            raise InvalidArgumentError(f"a group id is a str, not {type(group_id).__name__}")
        return self._group_coordinator().describe_group(group_id)

    def delete_group(self, group_id: str) -> None:
        """Delete an empty group and its committed offsets (GroupNotEmptyError if it has members)."""
        self._check_open()
        self._group_coordinator().delete_group(group_id)

    def reset_offsets(self, group_id: str, to: str = "earliest", *, topics: Iterable[str] | None = None,
                      partitions: Iterable[TopicPartition | tuple[str, int]] | None = None,
                      offset: int | None = None, timestamp: int | None = None,
                      dry_run: bool = False) -> dict[TopicPartition, int]:
        """Move an empty group's committed offsets (as kafka-consumer-groups --reset-offsets):
        ``to`` is "earliest", "latest", "offset" (with ``offset``) or "timestamp" (with
        ``timestamp`` in ms: the first record at or after it, else the log end). Applies to
        ``partitions``, or every partition of ``topics``, or every partition the group has
        offsets for. Returns the new offsets; ``dry_run`` computes them without storing."""
        self._check_open()
        if to not in ("earliest", "latest", "offset", "timestamp"):
            raise InvalidArgumentError(f"to={to!r}: expected earliest, latest, offset or timestamp")
        if (to == "offset") != (offset is not None) or (to == "timestamp") != (timestamp is not None):
            raise InvalidArgumentError("give offset= exactly with to='offset' and timestamp= exactly with "
                                       "to='timestamp'")
        for name, v in (("offset", offset), ("timestamp", timestamp)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise InvalidArgumentError(f"{name} must be a non-negative int, not {v!r}")
        coordinator = self._group_coordinator()
        if partitions is not None:
            tps = [TopicPartition(*tp) for tp in partitions]
            for tp in tps:
                self.partition_log(tp)  # UnknownTopicError if it does not exist
        elif topics is not None:
            tps = self.topic_partitions(list(topics))
        else:
            known = coordinator.describe_group(group_id)
            tps = [TopicPartition(p.topic, p.partition) for p in known.partitions]
        coordinator.check_empty(group_id)
        new: dict[TopicPartition, int] = {}
        for tp in tps:
            plog = self.partition_log(tp)
            if to == "earliest":
                new[tp] = plog.log_start_offset
            elif to == "latest":
                new[tp] = plog.high_watermark
            elif to == "offset":
                assert offset is not None  # clamped into the log, as the Kafka tool does
                new[tp] = min(max(offset, plog.log_start_offset), plog.high_watermark)
            else:
                assert timestamp is not None
                found = plog.offset_for_timestamp(timestamp)
                new[tp] = found[0] if found is not None and found[0] < plog.high_watermark else plog.high_watermark
        if not dry_run:
            coordinator.reset_offsets(group_id, new)
        return new

    def flush(self) -> None:
        """fsync every partition (a checkpoint of everything appended so far)."""
        with self._lock:
            self._check_open()
            logs = [plog for t in self._topics.values() for plog in t.logs]
        for plog in logs:
            plog.flush()


def open(path: str | os.PathLike[str], **options: Any) -> Store:  # noqa: A001 - the library's entry point
    """Open (or create) a data directory as an embedded broker: ``logstore.open("data/")``.

    Options: ``auto_create_topics`` (False), ``default_partitions`` (1, for auto-created topics),
    ``topic_defaults`` (a dict of topic config overriding Kafka's defaults for new topics),
    ``cleaner`` (True: run retention and compaction in a background thread),
    ``cleaner_interval_ms``, ``offsets_retention_ms`` (7 days: committed offsets of a group that
    stays empty this long are deleted) and ``offsets_retention_check_interval_ms`` (10 minutes)."""
    return Store(path, **options)


__all__ = ["Store", "open"]
