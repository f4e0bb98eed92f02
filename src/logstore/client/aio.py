"""asyncio clients: ``await producer.send(...)`` and ``async for record in consumer``.

``store.async_producer(**config)`` and ``store.async_consumer(*topics, **config)`` wrap the
synchronous :class:`~logstore.Producer` and :class:`~logstore.Consumer` (same configuration
names) so that an event loop never blocks on them. aiokafka's method names are kept where they
make sense (``send_and_wait``, ``getone``, ``getmany``, ``start``/``stop``).

What runs where (see docs/asyncio.md for the measurements):

* ``AsyncProducer.send`` appends **inline** on the loop when the append cannot wait for the disk:
  the native send is a sub-microsecond page-cache write, far cheaper than a hop to a thread
  (50-100 µs, which would cap a producer at some 10-20 k records/s). It goes to the
  producer's **worker thread** (one per producer, created on first use, FIFO so a topic's
  records keep their send order) when the topic's ``flush`` mode is ``"always"`` (an fsync per
  send) or when resolving the topic may create it (``auto_create_topics``). With ``linger_ms``
  the record joins a batch inline and the returned future completes when the producer's linger
  thread appends the batch.
* ``AsyncConsumer`` reads inline (a non-blocking ``poll(0)`` of data below the high watermark)
  and, when there is nothing to read, waits for the store's append notifier in a **waiter
  thread** (one per consumer, created on first wait) that wakes the loop with
  ``call_soon_threadsafe``. Records are handed out only by the coroutine that returns them, so
  cancelling a pending ``getone``/``getmany`` loses nothing; positions count returned records
  only (records ``getone`` read ahead are given back before any position is looked at).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from logstore._native.producer import RecordMetadata, TopicRoute
from logstore.broker.types import TopicPartition
from logstore.errors import IllegalStateError, InvalidArgumentError, LogClosedError
from logstore.groups.offsets import OffsetAndMetadata

if TYPE_CHECKING:
    from types import TracebackType

    from logstore.broker.store import Store
    from logstore.client.consumer import Consumer
    from logstore.client.producer import Headers, Producer

# records a send_many appends between two yields to the loop (~0.5 ms of work)
SEND_MANY_CHUNK = 1000
# how often an idle waiter thread checks whether its consumer was closed or dropped behind its back
WAITER_CHECK_S = 1.0

PartitionArg = TopicPartition | tuple[str, int]

# Per store: the futures of consumer calls waiting for an append, with their loop. A producer
# appending inline on the same loop wakes them itself, without the waiter thread's round trip
# (which, on a busy loop, waits for the GIL's switch interval).
# future -> (its loop, the waiter thread also watching for it, the topics the consumer reads)
_Waiting = dict["asyncio.Future[None]", "tuple[asyncio.AbstractEventLoop, _AppendWaiter, set[str]]"]
_waiting_by_store: weakref.WeakKeyDictionary[Store, _Waiting] = weakref.WeakKeyDictionary()
_waiting_lock = threading.Lock()


def _waiting_on(store: Store) -> _Waiting:
    with _waiting_lock:
        return _waiting_by_store.setdefault(store, {})


def _settle(loop: asyncio.AbstractEventLoop, out: asyncio.Future[Any], done: concurrent.futures.Future[Any]) -> None:
    """Copy a finished concurrent future's outcome into ``out`` (on the loop). A result that is
    itself a concurrent future (a lingering send) is followed until it completes."""
    if out.done():
        return
    if done.cancelled():
        out.cancel()
        return
    exc = done.exception()
    if exc is not None:
        out.set_exception(exc)
        return
    result = done.result()
    if isinstance(result, concurrent.futures.Future):
        result.add_done_callback(functools.partial(_settle_soon, loop, out))
    else:
        out.set_result(result)


def _settle_soon(loop: asyncio.AbstractEventLoop, out: asyncio.Future[Any], done: concurrent.futures.Future[Any]
                 ) -> None:
    """A done-callback of a concurrent future (any thread): settle ``out`` on its loop."""
    try:
        loop.call_soon_threadsafe(_settle, loop, out, done)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


async def _metadata(result: RecordMetadata | concurrent.futures.Future[RecordMetadata]) -> RecordMetadata:
    """The metadata of a synchronous send's result (a RecordMetadata, or a lingering future)."""
    if isinstance(result, concurrent.futures.Future):
        if result.done():
            return result.result()
        return await asyncio.wrap_future(result)
    return result


class AsyncProducer:
    """Appends records from asyncio code (``store.async_producer(...)``); configuration as for
    :meth:`Store.producer <logstore.Store.producer>`.

    ``await producer.send(topic, value, key=...)`` gives the :class:`~logstore.RecordMetadata`.
    Unlike aiokafka (whose ``send`` must be awaited twice), ``send`` is a plain method returning
    an awaitable future, and the record is appended, or queued in order, when it returns."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._store = producer._store
        self._send = producer.send  # native, or the Python path (linger, serializers)
        self._routes = producer.routes  # topic -> TopicRoute, dropped by the store on metadata changes
        self._lingers = producer.config["linger_ms"] > 0
        self._closed = False
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        # topic -> the route it was found inline-safe for (a metadata change makes a new route)
        self._inline_routes: dict[str, TopicRoute] = {}
        # jobs handed to the worker (counted on the loop) and finished (counted by the worker),
        # in all and per topic: while a topic has jobs queued, its sends queue behind them
        self._jobs_submitted = 0
        self._jobs_finished = 0
        self._submitted: dict[str, int] = {}
        self._finished: dict[str, int] = {}
        self._waiting = _waiting_on(self._store)

    @property
    def producer_id(self) -> int:
        """The idempotent producer id (-1 with ``enable_idempotence=False``)."""
        return self._producer.producer_id

    @property
    def config(self) -> dict[str, Any]:
        return self._producer.config

    @property
    def closed(self) -> bool:
        return self._closed

    # -- inline or worker ---------------------------------------------------------------------

    def _runs_inline(self, topic: str) -> bool:
        """Whether a send to ``topic`` may append on the loop thread (it never waits for the disk)."""
        route = self._routes.get(topic)
        if route is None:
            if self._store.auto_create_topics:
                return False  # resolving may create the topic, whose metadata write fsyncs
            route = self._producer._route(topic)  # UnknownTopicError here, before anything is sent
        if self._inline_routes.get(topic) is not route:
            # all partitions of a topic share its config
            if route.logs[0].config.flush == "always":
                self._inline_routes.pop(topic, None)
                return False
            self._inline_routes[topic] = route
        # earlier sends of this topic still queued in the worker go first
        return self._submitted.get(topic, 0) == self._finished.get(topic, 0)

    def _start_worker(self) -> concurrent.futures.ThreadPoolExecutor:
        # one thread: jobs run in submission order, so a topic's records keep their send order
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="logstore-aio-producer")
        return self._worker

    def _offload(self, topic: str | None, job: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run ``job`` in the worker thread; the future completes on the calling loop."""
        loop = asyncio.get_running_loop()
        worker = self._worker or self._start_worker()
        self._jobs_submitted += 1
        if topic is not None:
            self._submitted[topic] = self._submitted.get(topic, 0) + 1

        def counted() -> Any:
            try:
                return job()
            finally:
                if topic is not None:
                    self._finished[topic] = self._finished.get(topic, 0) + 1
                self._jobs_finished += 1

        out: asyncio.Future[Any] = loop.create_future()
        worker.submit(counted).add_done_callback(functools.partial(_settle_soon, loop, out))
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError("the producer is closed")

    def _wake_consumers(self, loop: asyncio.AbstractEventLoop, topic: str) -> None:
        """Wake the consumer calls waiting on this loop for records of ``topic`` (waiter threads
        serve the others)."""
        for fut, (fut_loop, waiter, topics) in list(self._waiting.items()):
            if fut_loop is loop and topic in topics:
                self._waiting.pop(fut, None)
                waiter.discard(fut)  # so that its thread does not wake the loop a second time
                _wake(fut)

    # -- send ---------------------------------------------------------------------------------

    def send(self, topic: str, value: Any = None, key: Any = None, headers: Headers = None,
             partition: int | None = None, timestamp_ms: int | None = None) -> asyncio.Future[RecordMetadata]:
        """Append a record; ``await`` the result for its :class:`~logstore.RecordMetadata`.

        Errors found before anything is appended (unknown topic, bad record, closed producer)
        are raised by the call itself; errors of an append in the worker thread by the await.
        Records sent to one topic are appended in call order. Must be called on the loop."""
        loop = asyncio.get_running_loop()
        if self._closed:
            raise LogClosedError("the producer is closed")
        # the fast path: a known inline topic and nothing queued in the worker
        route = self._routes.get(topic)
        if (route is None or self._inline_routes.get(topic) is not route
                or self._jobs_submitted != self._jobs_finished) and not self._runs_inline(topic):
            return self._offload(topic, functools.partial(self._send, topic, value, key, headers, partition,
                                                          timestamp_ms))
        result = self._send(topic, value, key, headers, partition, timestamp_ms)
        if type(result) is not RecordMetadata:  # a future: lingering in a batch
            return asyncio.wrap_future(result, loop=loop)
        if self._waiting:
            self._wake_consumers(loop, topic)
        out: asyncio.Future[RecordMetadata] = loop.create_future()
        out.set_result(result)
        return out

    async def send_and_wait(self, topic: str, value: Any = None, key: Any = None, headers: Headers = None,
                            partition: int | None = None, timestamp_ms: int | None = None) -> RecordMetadata:
        """Append a record and return its metadata (aiokafka's name for ``await send(...)``)."""
        return await self.send(topic, value, key, headers, partition, timestamp_ms)

    async def send_many(self, topic: str, values: Iterable[Any], keys: Iterable[Any] | None = None,
                        headers: Iterable[Headers] | None = None, partition: int | None = None,
                        timestamps_ms: Iterable[int | None] | None = None) -> list[RecordMetadata]:
        """Append many records to ``topic`` (``keys``/``headers``/``timestamps_ms``: None or one
        per value) and return their metadata in order. Inline sends yield to the loop every
        ``SEND_MANY_CHUNK`` records; offloaded ones cost one thread hop for the whole call. Not
        atomic: on an error the records before the failing one stay appended."""
        self._check_open()
        values = list(values)
        columns = [list(c) if c is not None else [None] * len(values) for c in (keys, headers, timestamps_ms)]
        if any(len(c) != len(values) for c in columns):
            raise InvalidArgumentError("keys, headers and timestamps_ms need one item per value")
        rows = list(zip(values, *columns, strict=True))
        send = self._send
        results: list[Any]
        if self._runs_inline(topic):
            results = []
            for start in range(0, len(rows), SEND_MANY_CHUNK):
                if start:
                    await asyncio.sleep(0)
                    self._check_open()
                    if not self._runs_inline(topic):  # reconfigured meanwhile: the rest goes to the worker
                        results += await self._offload(topic, functools.partial(_send_rows, send, topic,
                                                                                 rows[start:], partition))
                        break
                results += _send_rows(send, topic, rows[start:start + SEND_MANY_CHUNK], partition)
                if self._waiting and not self._lingers:
                    self._wake_consumers(asyncio.get_running_loop(), topic)
        else:
            results = await self._offload(topic, functools.partial(_send_rows, send, topic, rows, partition))
        return [await _metadata(r) for r in results]

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to start (the producer is ready when created); kept for aiokafka code."""
        self._check_open()

    async def flush(self) -> None:
        """Wait until every record sent so far is appended (lingering batches included)."""
        if self._closed or (self._worker is None and not self._lingers):
            return  # inline sends are appended when send returns
        await self._offload(None, self._producer.flush)

    async def partitions_for(self, topic: str) -> set[int]:
        """The partition numbers of ``topic``."""
        return self._producer.partitions_for(topic)

    async def close(self) -> None:
        """Append what is still queued or lingering, then stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._worker is None and not self._lingers:
            self._producer.close()  # nothing queued: closing only sets a flag
            return
        try:
            await self._offload(None, self._producer.close)
        finally:
            if self._worker is not None:
                # once the close job (the last) is done the thread is idle and the join instant;
                # if this close was cancelled before, the thread exits when the job ends
                self._worker.shutdown(wait=self._jobs_finished == self._jobs_submitted)

    async def stop(self) -> None:
        """aiokafka's name for :meth:`close`."""
        await self.close()

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncProducer(producer_id={self.producer_id}, closed={self._closed})"


def _send_rows(send: Callable[..., Any], topic: str, rows: Sequence[tuple[Any, Any, Any, Any]],
               partition: int | None) -> list[Any]:
    return [send(topic, value, key, headers, partition, ts) for value, key, headers, ts in rows]


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _AppendWaiter:
    """A thread that blocks in the store's append notifier for one consumer's waiting coroutines
    (the notifier's wait is a blocking call, the loop must not make it) and wakes them on their
    loop when anything is appended or the store closes."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self._notifier = consumer._notifier
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        # future -> (its loop, the notifier version it has seen)
        self._requests: dict[asyncio.Future[None], tuple[asyncio.AbstractEventLoop, int]] = {}
        self._stopping = False
        self.stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.thread = threading.Thread(target=self._run, name="logstore-aio-consumer-waiter", daemon=True)
        self.thread.start()

    def add(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None], seen_version: int) -> None:
        with self._lock:
            self._requests[fut] = (loop, seen_version)
            self._has_work.notify()

    def discard(self, fut: asyncio.Future[None]) -> None:
        with self._lock:
            self._requests.pop(fut, None)

    def wake_all(self) -> None:
        """Wake every waiting coroutine now (they poll again); called on the loop thread."""
        with self._lock:
            requests = list(self._requests.items())
            self._requests.clear()
        for fut, (loop, _) in requests:
            _wake_on(loop, fut)

    def stop(self) -> None:
        """End the thread (waiting coroutines are woken first). Returns at once."""
        self.wake_all()
        with self._lock:
            self._stopping = True
            self._has_work.notify()
        self._notifier.wake()  # out of its notifier wait

    def abandon(self) -> None:
        """The owner was garbage-collected without closing: exit at the next check (no locks
        here, this runs from a finalizer)."""
        self._stopping = True

    def _run(self) -> None:
        notifier = self._notifier
        try:
            while True:
                with self._lock:
                    while not self._requests and not self._stopping and not self._consumer.closed:
                        self._has_work.wait(WAITER_CHECK_S)
                    if self._stopping or (not self._requests and self._consumer.closed):
                        return
                    version = notifier.current_version
                    due = [(fut, loop) for fut, (loop, seen) in self._requests.items() if seen != version]
                    for fut, _ in due:
                        del self._requests[fut]
                for fut, loop in due:
                    _wake_on(loop, fut)
                if not due:
                    notifier.wait(version, WAITER_CHECK_S)
        finally:
            self.stopped.set_result(None)


def _wake_on(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> None:
    try:
        loop.call_soon_threadsafe(_wake, fut)
    except RuntimeError:  # the loop is closed
        pass


class AsyncConsumer:
    """Reads records from asyncio code (``store.async_consumer(...)``); configuration as for
    :meth:`Store.consumer <logstore.Store.consumer>`.

    ``await getone()``, ``await getmany(timeout_ms=..., max_records=...)`` (a dict
    ``{TopicPartition: [records]}``, as aiokafka) and ``async for record in consumer``. Meant for
    one event loop; several tasks may share it."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self._notifier = consumer._notifier
        self._closed = False
        # records read ahead by getone / async for and not returned yet (positions are rewound
        # to them before anyone looks at a position)
        self._ahead: collections.deque[Any] = collections.deque()
        self._read_ahead = consumer.config["max_poll_records"]
        idle = consumer.config["consumer_timeout_ms"]
        self._idle_timeout: float | None = None if idle is None else idle / 1000.0
        self._waiter: _AppendWaiter | None = None
        self._waiting = _waiting_on(consumer._store)

    @property
    def config(self) -> dict[str, Any]:
        return self._consumer.config

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError("the consumer is closed")
        self._consumer._check_open()

    # -- fetching -----------------------------------------------------------------------------

    def _rewind(self) -> None:
        """Give the read-ahead records back: each partition's position returns to the first
        record not handed out."""
        if not self._ahead:
            return
        first: dict[TopicPartition, int] = {}
        for r in self._ahead:
            first.setdefault(TopicPartition(r.topic, r.partition), r.offset)
        self._ahead.clear()
        for tp, offset in first.items():
            try:
                self._consumer.seek(tp, offset)
            except IllegalStateError:
                pass  # no longer assigned (its topic was deleted): nothing to give back

    def _poll_now(self, limit: int, partitions: tuple[PartitionArg, ...]) -> list[Any]:
        """A non-blocking poll, of ``partitions`` only if given."""
        consumer = self._consumer
        if not partitions:
            return consumer.poll(0.0, limit)
        wanted = {TopicPartition(*tp) for tp in partitions}
        assigned = consumer.assignment()
        if not wanted <= assigned:
            raise IllegalStateError(f"{sorted(wanted - assigned)} not assigned to this consumer")
        others = assigned - wanted - consumer.paused()
        consumer.pause(*others)
        try:
            return consumer.poll(0.0, limit)
        finally:
            consumer.resume(*others)

    async def _take(self, limit: int, timeout: float | None, partitions: tuple[PartitionArg, ...],
                    read_ahead: int) -> list[Any]:
        """Up to ``limit`` records, waiting up to ``timeout`` seconds (None: for ever) for the
        first; [] on timeout. Reading and handing out happen in one step, with no await in
        between, so a cancelled call has taken nothing."""
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        ahead = self._ahead
        while True:
            if ahead:
                if not partitions:
                    return [ahead.popleft() for _ in range(min(limit, len(ahead)))]
                self._rewind()  # a filtered poll must not pass records read ahead (by another task too)
            seen = self._notifier.current_version
            records = self._poll_now(max(limit, read_ahead), partitions)
            if records:
                if len(records) > limit:
                    ahead.extend(records[limit:])
                    del records[limit:]
                return records
            remaining = None
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
            await self._wait_for_append(loop, seen, remaining)
            self._check_open()

    async def _wait_for_append(self, loop: asyncio.AbstractEventLoop, seen_version: int, timeout: float | None
                               ) -> None:
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = _AppendWaiter(self._consumer)
            weakref.finalize(self, waiter.abandon)
        fut: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(timeout, _wake, fut) if timeout is not None else None
        waiter.add(loop, fut, seen_version)
        self._waiting[fut] = (loop, waiter, {tp.topic for tp in self._consumer.assignment()})
        try:
            await fut
        finally:
            # woken, timed out or cancelled: the waiters forget this call either way
            self._waiting.pop(fut, None)
            waiter.discard(fut)
            if timer is not None:
                timer.cancel()

    def _wake_waiting(self) -> None:
        """Waiting calls poll again (a seek, assignment or resume may have made records readable
        without any append)."""
        if self._waiter is not None:
            self._waiter.wake_all()

    # -- consuming ----------------------------------------------------------------------------

    async def getone(self, *partitions: PartitionArg) -> Any:
        """The next record (of ``partitions`` only, if given), waiting as long as it takes."""
        if self._ahead and not partitions and not self._consumer._closed:
            return self._ahead.popleft()
        records = await self._take(1, None, partitions, 1 if partitions else self._read_ahead)
        return records[0]

    async def getmany(self, *partitions: PartitionArg, timeout_ms: float = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        """Up to ``max_records`` records (default ``max_poll_records``) grouped by partition, in
        offset order within each, waiting up to ``timeout_ms`` for the first (0: only what is
        there now). ``{}`` if none arrived."""
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, (int, float)) or timeout_ms < 0:
            raise InvalidArgumentError(f"timeout_ms must be a non-negative number, not {timeout_ms!r}")
        limit = self._read_ahead if max_records is None else max_records
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise InvalidArgumentError(f"max_records must be a positive int, not {max_records!r}")
        records = await self._take(limit, timeout_ms / 1000.0, partitions, limit)
        out: dict[TopicPartition, list[Any]] = {}
        key: tuple[str, int] | None = None
        batch: list[Any] = []
        for r in records:
            if key is None or r.partition != key[1] or r.topic != key[0]:
                key = (r.topic, r.partition)
                batch = out.setdefault(TopicPartition(r.topic, r.partition), [])
            batch.append(r)
        return out

    def __aiter__(self) -> AsyncConsumer:
        return self

    async def __anext__(self) -> Any:
        """The next record; the iteration ends when the consumer (or store) is closed, or after
        ``consumer_timeout_ms`` without a record."""
        if self._ahead and not self._consumer._closed:
            return self._ahead.popleft()
        try:
            records = await self._take(1, self._idle_timeout, (), self._read_ahead)
        except LogClosedError:
            if self._closed or self._consumer.closed:
                raise StopAsyncIteration from None
            raise
        if not records:
            raise StopAsyncIteration
        return records[0]

    # -- assignment and positions -------------------------------------------------------------

    def assign(self, partitions: Iterable[PartitionArg]) -> None:
        """Read exactly these partitions (replaces any subscription)."""
        self._rewind()
        self._consumer.assign(partitions)
        self._wake_waiting()

    def subscribe(self, topics: Iterable[str] | str | None = None, pattern: str | None = None,
                  listener: Any = None) -> None:
        """Read every partition of ``topics``, or of the topics matching ``pattern`` (with a
        ``group_id``: this consumer's share, ``listener`` hearing of rebalances; its callbacks
        run in the event loop's thread)."""
        self._rewind()
        self._consumer.subscribe(topics, pattern=pattern, listener=listener)
        self._wake_waiting()

    # -- committed offsets (groups) -----------------------------------------------------------

    async def commit(self, offsets: Mapping[Any, int | OffsetAndMetadata] | None = None) -> None:
        """Commit the positions of the records handed out so far (read-ahead ones are given
        back first), or the offsets given; see :meth:`Consumer.commit`."""
        self._check_open()
        self._rewind()
        self._consumer.commit(offsets)

    async def committed(self, partition: PartitionArg) -> OffsetAndMetadata | None:
        """The group's committed offset of ``partition`` (None if there is none)."""
        self._check_open()
        result: OffsetAndMetadata | None = self._consumer.committed(partition)
        return result

    def unsubscribe(self) -> None:
        self._rewind()
        self._consumer.unsubscribe()

    def subscription(self) -> set[str]:
        return self._consumer.subscription()

    def assignment(self) -> set[TopicPartition]:
        return self._consumer.assignment()

    def seek(self, partition: PartitionArg, offset: int) -> None:
        """Read ``partition`` from ``offset`` next."""
        self._rewind()
        self._consumer.seek(partition, offset)
        self._wake_waiting()

    async def seek_to_beginning(self, *partitions: PartitionArg) -> None:
        self._rewind()
        self._consumer.seek_to_beginning(*partitions)
        self._wake_waiting()

    async def seek_to_end(self, *partitions: PartitionArg) -> None:
        self._rewind()
        self._consumer.seek_to_end(*partitions)

    async def position(self, partition: PartitionArg) -> int:
        """The offset of the next record returned from ``partition``."""
        self._rewind()
        return self._consumer.position(partition)

    def highwater(self, partition: PartitionArg) -> int:
        """The partition's high watermark (the offset after the last committed record)."""
        return self._consumer.end_offsets([partition])[TopicPartition(*partition)]

    async def beginning_offsets(self, partitions: Iterable[PartitionArg]) -> dict[TopicPartition, int]:
        return self._consumer.beginning_offsets(partitions)

    async def end_offsets(self, partitions: Iterable[PartitionArg]) -> dict[TopicPartition, int]:
        return self._consumer.end_offsets(partitions)

    async def offsets_for_times(self, timestamps: Mapping[PartitionArg, int]
                                ) -> dict[TopicPartition, tuple[int, int] | None]:
        return self._consumer.offsets_for_times(timestamps)

    async def topics(self) -> set[str]:
        """The store's topic names."""
        return set(self._consumer._store.list_topics())

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self._consumer._store.partitions_for(topic)))

    def pause(self, *partitions: PartitionArg) -> None:
        """Return no records of these partitions until resumed (positions are kept)."""
        self._rewind()
        self._consumer.pause(*partitions)

    def resume(self, *partitions: PartitionArg) -> None:
        self._consumer.resume(*partitions)
        self._wake_waiting()

    def paused(self) -> set[TopicPartition]:
        return self._consumer.paused()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to start (the consumer is ready when created); kept for aiokafka code."""
        self._check_open()

    async def close(self) -> None:
        """Stop consuming: waiting calls raise :class:`~logstore.LogClosedError` (an ``async
        for`` ends) and the waiter thread exits before this returns. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._ahead.clear()
        self._consumer.close()
        waiter = self._waiter
        if waiter is not None:
            waiter.stop()
            await asyncio.wrap_future(waiter.stopped)
            waiter.thread.join()  # it has returned from its run: no wait

    async def stop(self) -> None:
        """aiokafka's name for :meth:`close`."""
        await self.close()

    async def __aenter__(self) -> AsyncConsumer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncConsumer(assignment={sorted(self._consumer.assignment())}, closed={self._closed})"


__all__ = ["AsyncConsumer", "AsyncProducer"]
