"""The producer: ``store.producer(**config)``, configured with kafka-python's names.

With ``linger_ms=0`` (the default) and no serializers or custom partitioner, ``send`` is the
native ``ProducerCore.send``: the record is appended when it returns, and it returns the
:class:`RecordMetadata`. With ``linger_ms > 0`` records wait in a per-partition batch until
``batch_size`` bytes or ``linger_ms`` pass (or ``flush()``), are appended as one batch, and
``send`` returns a future (``.get(timeout)`` gives the metadata).

Idempotence (default on, as in Kafka 3): the producer gets a producer id from the store and
stamps every batch with it, its epoch and per-partition sequence numbers; a partition drops a
retried batch and answers with the original offsets, and rejects a gap in the sequence.

``acks``: every value ("all"/-1, 1, 0) behaves the same in a single node: the record is in the log
(and, with the topic's ``flush="always"``, on disk) when ``send`` returns. Accepted so that code
and configs move to a Kafka cluster unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from logstore._native.producer import ProducerCore, RecordMetadata, TopicRoute
from logstore.errors import (
    ConfigError,
    InvalidArgumentError,
    InvalidRecordError,
    LogClosedError,
    LogstoreTimeoutError,
    UnknownTopicError,
)

if TYPE_CHECKING:
    from logstore.broker.store import Store

Headers = Iterable[tuple[str, bytes | None]] | None

_ACKS = {"all": "all", -1: "all", "-1": "all", 1: 1, "1": 1, 0: 0, "0": 0}
_PARTITIONERS = {"default": 0, "xxhash": 0, "murmur2": 1}
_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 0,
    "batch_size": 16384,
    "partitioner": "default",
    "enable_idempotence": True,
    "key_serializer": None,
    "value_serializer": None,
    "client_id": None,
    "compression_type": None,
    "retries": 0,
    "max_block_ms": 60_000,
}


class FutureRecordMetadata(Future[RecordMetadata]):
    """The result of a lingering ``send``: ``get(timeout)`` as in kafka-python."""

    def get(self, timeout: float | None = None) -> RecordMetadata:
        try:
            return self.result(timeout)
        except TimeoutError:
            raise LogstoreTimeoutError(f"the record was not appended within {timeout} s") from None


def _check_record(value: Any, key: Any, headers: Headers, timestamp_ms: int | None) -> None:
    for name, b in (("value", value), ("key", key)):
        if b is not None:
            try:
                memoryview(b)
            except TypeError:
                raise InvalidRecordError(f"{name} must be bytes-like or None, not {type(b).__name__}") from None
    if timestamp_ms is not None and (isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int)
                                     or timestamp_ms < 0):
        raise InvalidRecordError(f"timestamp_ms must be a non-negative int (ms since the epoch), not {timestamp_ms!r}")
    if headers is not None:
        try:
            pairs = list(headers)
        except TypeError:
            raise InvalidRecordError("headers must be a sequence of (key, value) pairs") from None
        for pair in pairs:
            if not isinstance(pair, tuple) or len(pair) != 2 or not isinstance(pair[0], (str, bytes)):
                raise InvalidRecordError(f"a header must be a (str, bytes | None) pair, not {pair!r}")
            if pair[1] is not None:
                try:
                    memoryview(pair[1])
                except TypeError:
                    raise InvalidRecordError(
                        f"a header value must be bytes-like or None, not {type(pair[1]).__name__}") from None


class _Batch:
    __slots__ = ("route", "values", "keys", "headers", "timestamps", "futures", "size", "created")

    def __init__(self, route: TopicRoute) -> None:
        self.route = route
        self.values: list[Any] = []
        self.keys: list[Any] = []
        self.headers: list[Any] = []
        self.timestamps: list[int] = []
        self.futures: list[FutureRecordMetadata] = []
        self.size = 0
        self.created = time.monotonic()


class Producer(ProducerCore):
    """Appends records to the topics of a :class:`~logstore.Store` (``store.producer(...)``)."""

    def __init__(self, store: Store, **config: Any) -> None:
        unknown = sorted(set(config) - set(_DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown producer config {', '.join(unknown)}; known: {', '.join(sorted(_DEFAULTS))}")
        cfg = {**_DEFAULTS, **config}
        if cfg["acks"] not in _ACKS:
            raise ConfigError(f"acks={cfg['acks']!r}; expected 'all', -1, 1 or 0")
        for name in ("linger_ms", "batch_size", "max_block_ms", "retries"):
            v = cfg[name]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (name == "batch_size" and v == 0):
                bound = "a positive" if name == "batch_size" else "a non-negative"
                raise ConfigError(f"{name} must be {bound} int, not {v!r}")
        if cfg["compression_type"] not in (None, "none"):
            raise ConfigError(
                f"compression_type={cfg['compression_type']!r}: only uncompressed batches are supported")
        partitioner = cfg["partitioner"]
        self._custom_partitioner: Callable[..., int] | None = None
        if callable(partitioner):
            self._custom_partitioner = partitioner
        elif partitioner in _PARTITIONERS:
            self._partitioner = _PARTITIONERS[partitioner]
        else:
            raise ConfigError(f"partitioner={partitioner!r}; expected 'default', 'murmur2' or a callable")
        for name in ("key_serializer", "value_serializer"):
            if cfg[name] is not None and not callable(cfg[name]):
                raise ConfigError(f"{name} must be callable")
        if not isinstance(cfg["enable_idempotence"], bool):
            raise ConfigError("enable_idempotence must be a bool")
        self.config = cfg
        self._store = store
        self._batch_size = cfg["batch_size"]
        self._linger = cfg["linger_ms"] / 1000.0
        self._key_serializer = cfg["key_serializer"]
        self._value_serializer = cfg["value_serializer"]
        if cfg["enable_idempotence"]:
            self._producer_id = store._allocate_producer_id()
            self._producer_epoch = 0
        self._replaced_routes: dict[str, TopicRoute] = {}
        self._batches: dict[tuple[str, int], _Batch] = {}  # (topic, partition) -> lingering records
        self._batches_lock = threading.Lock()
        self._append_lock = threading.Lock()
        self._linger_thread: threading.Thread | None = None
        self._linger_wake = threading.Condition(self._batches_lock)
        if self._linger > 0 or self._custom_partitioner is not None or self._key_serializer is not None \
                or self._value_serializer is not None:
            # the Python path; the native send stays the class attribute for the default case
            self.send = self._send_python  # type: ignore[method-assign]
        if self._linger > 0:
            self._linger_thread = threading.Thread(target=self._linger_loop, name="logstore-producer-linger",
                                                   daemon=True)
            self._linger_thread.start()

    # -- routing --------------------------------------------------------------------------------

    def _route(self, topic: str) -> TopicRoute:
        if not isinstance(topic, str):
            raise InvalidArgumentError(f"a topic name is a str, not {type(topic).__name__}")
        route = self._store._route(topic)
        old = self._replaced_routes.pop(topic, None)
        if old is not None:
            route.adopt_sequences(old)
        self.routes[topic] = route
        return route

    def _invalidate_route(self, topic: str) -> None:
        """The topic changed (partitions, config, deleted): resolve it again at the next send,
        keeping the sequence numbers."""
        old = self.routes.pop(topic, None)
        if old is not None:
            self._replaced_routes[topic] = old

    def partitions_for(self, topic: str) -> set[int]:
        """The partition numbers of ``topic`` (kafka-python's name)."""
        return set(range(self._store.partitions_for(topic)))

    @property
    def producer_id(self) -> int:
        """The idempotent producer id (-1 with ``enable_idempotence=False``)."""
        return self._producer_id

    # -- send -----------------------------------------------------------------------------------

    def _send_python(self, topic: str, value: Any = None, key: Any = None, headers: Headers = None,
                     partition: int | None = None, timestamp_ms: int | None = None
                     ) -> RecordMetadata | FutureRecordMetadata:
        if self._closed:
            raise LogClosedError("the producer is closed")
        if not isinstance(topic, str):
            raise InvalidArgumentError(f"a topic name is a str, not {type(topic).__name__}")
        if self._key_serializer is not None and key is not None:
            key = self._key_serializer(key)
        if self._value_serializer is not None and value is not None:
            value = self._value_serializer(value)
        route = self.routes.get(topic) or self._route(topic)
        if partition is None:
            if self._custom_partitioner is not None:
                all_partitions = list(range(route.partitions))
                partition = self._custom_partitioner(key, all_partitions, all_partitions)
                if isinstance(partition, bool) or not isinstance(partition, int):
                    raise InvalidArgumentError(f"the partitioner returned {partition!r}, not a partition number")
            else:
                size = len(value) if isinstance(value, (bytes, bytearray)) else 0
                partition = self.partition_for(route, key, size)
        elif isinstance(partition, bool) or not isinstance(partition, int):
            raise InvalidArgumentError(f"partition must be an int, not {type(partition).__name__}")
        if self._linger <= 0:
            try:
                return self.send_to(route, partition, value, key, headers, timestamp_ms)
            except LogClosedError:
                if self._closed:
                    raise
                # the topic was deleted or its logs replaced since the route was resolved
                self._invalidate_route(topic)
                return self.send_to(self._route(topic), partition, value, key, headers, timestamp_ms)
        return self._enqueue(route, partition, value, key, headers, timestamp_ms)

    def _enqueue(self, route: TopicRoute, partition: int, value: Any, key: Any, headers: Headers,
                 timestamp_ms: int | None) -> FutureRecordMetadata:
        if not 0 <= partition < route.partitions:
            raise UnknownTopicError(f"partition {partition} of topic {route.name!r} does not exist")
        if route.compacted and key is None:
            raise InvalidRecordError(f"topic {route.name!r} is compacted: every record needs a key")
        # a bad record must fail alone, not the batch it would join: check what the log checks
        _check_record(value, key, headers, timestamp_ms)
        future = FutureRecordMetadata()
        size = (len(value) if isinstance(value, (bytes, bytearray, memoryview)) else 0) + \
               (len(key) if isinstance(key, (bytes, bytearray, memoryview)) else 0) + 16
        with self._batches_lock:
            batch = self._batches.get((route.name, partition))
            if batch is None:
                batch = self._batches[(route.name, partition)] = _Batch(route)
                self._linger_wake.notify()
            batch.values.append(value)
            batch.keys.append(key)
            batch.headers.append(list(headers) if headers is not None else None)
            batch.timestamps.append(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
            batch.futures.append(future)
            batch.size += size
            full = batch.size >= self._batch_size
        if full:
            self._append_due(lambda k, b: k == (route.name, partition))
        return future

    def _append_due(self, due: Callable[[tuple[str, int], _Batch], bool]) -> None:
        """Append the batches ``due`` selects. One appender at a time, taking batches in the
        order they close, so a partition's batches reach its log in send order."""
        with self._append_lock:
            with self._batches_lock:
                ready = [(k, b) for k, b in self._batches.items() if due(k, b)]
                for k, _ in ready:
                    del self._batches[k]
            for (_, partition), batch in ready:
                self._append_batch(partition, batch)

    def _append_batch(self, partition: int, batch: _Batch) -> None:
        route = batch.route
        try:
            try:
                first, log = self._append_to(route, partition, batch)
            except LogClosedError:
                if self._store.closed:
                    raise
                # the topic's logs were reopened (a config change) or it was deleted: look it up again
                self._invalidate_route(route.name)
                route = self._route(route.name)
                first, log = self._append_to(route, partition, batch)
        except BaseException as e:
            for f in batch.futures:
                f.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        stamped = -1
        if log.config.timestamp_type == "log_append_time":
            # the log stamped its append time on the batch: report that one
            try:
                stamped = log.read(first, 1).batches()[0]["max_timestamp"]
            except Exception:  # retention raced us; the records are appended all the same
                stamped = -1
        for i, f in enumerate(batch.futures):
            f.set_result(RecordMetadata(route.name, partition, first + i,
                                        stamped if stamped >= 0 else batch.timestamps[i]))

    def _append_to(self, route: TopicRoute, partition: int, batch: _Batch) -> tuple[int, Any]:
        if partition >= route.partitions:
            raise UnknownTopicError(f"partition {partition} of topic {route.name!r} does not exist")
        log = route.logs[partition]
        if self._producer_id >= 0:
            # the log takes the sequence numbers from the counters under its lock
            first = log.append_many(batch.values, batch.keys, batch.headers, batch.timestamps,
                                    producer_id=self._producer_id, producer_epoch=self._producer_epoch,
                                    sequence_counters=route.sequence_counters, counter_slot=partition)
        else:
            first = log.append_many(batch.values, batch.keys, batch.headers, batch.timestamps)
        return first, log

    def _linger_loop(self) -> None:
        while True:
            with self._batches_lock:
                if self._closed and not self._batches:
                    return
                now = time.monotonic()
                wait: float | None = None
                for b in self._batches.values():
                    left = 0.0 if self._closed else self._linger - (now - b.created)
                    wait = left if wait is None else min(wait, left)
                if wait is None or wait > 0:
                    self._linger_wake.wait(wait)
                    continue
            self._append_due(self._due_by(time.monotonic() - self._linger))

    def _due_by(self, cutoff: float) -> Callable[[tuple[str, int], _Batch], bool]:
        return lambda k, b: self._closed or b.created <= cutoff

    def flush(self, timeout: float | None = None) -> None:
        """Append every lingering record now (and wait for it). With ``linger_ms=0`` records are
        appended by ``send`` itself, so there is nothing to wait for."""
        self._append_due(lambda k, b: True)

    def close(self, timeout: float | None = None) -> None:
        """Flush lingering records and stop. Idempotent."""
        if self._closed:
            return
        self.flush(timeout)
        with self._batches_lock:
            self._closed = True
            self._linger_wake.notify_all()
        if self._linger_thread is not None and self._linger_thread is not threading.current_thread():
            self._linger_thread.join(timeout)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Producer(producer_id={self._producer_id}, closed={self._closed})"


__all__ = ["FutureRecordMetadata", "Producer", "RecordMetadata"]
