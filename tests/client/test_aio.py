"""The asyncio clients: round trips, ``async for``, a loop that keeps running while a consumer
waits, cancellation that loses no record, concurrent producer tasks, close waking waiters,
inline-versus-worker sends, errors through ``await``, and no threads left behind.

Every coroutine runs under ``asyncio.run(..., debug=True)``: asyncio then raises if a loop-only
call (a future's ``set_result``, ``call_soon``) is made from another thread, which is exactly the
mistake a thread-to-loop bridge can make. No pytest plugin is needed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import logstore
import logstore.client.aio as aio
from logstore import AsyncConsumer, AsyncProducer, Store, TopicPartition
from logstore.errors import (
    IllegalStateError,
    InvalidArgumentError,
    InvalidRecordError,
    LogClosedError,
    UnknownTopicError,
)

T = TypeVar("T")
TP0 = TopicPartition("events", 0)
TP1 = TopicPartition("events", 1)
WORKER_PREFIX = "logstore-aio-producer"
WAITER_NAME = "logstore-aio-consumer-waiter"


class _SlowCallbacks(logging.Handler):
    """Collects asyncio's debug-mode reports of callbacks that held the loop too long."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reports: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing"):
            self.reports.append(message)


def run(coro: Coroutine[Any, Any, T], *, max_callback_s: float | None = None) -> T:
    """``asyncio.run`` in debug mode; with ``max_callback_s``, fail if any callback or task step
    held the loop longer than that."""
    if max_callback_s is None:
        return asyncio.run(coro, debug=True)
    handler = _SlowCallbacks()
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(handler)

    async def watched() -> T:
        asyncio.get_running_loop().slow_callback_duration = max_callback_s
        return await coro

    try:
        result = asyncio.run(watched(), debug=True)
    finally:
        asyncio_log.removeHandler(handler)
    assert handler.reports == [], f"the event loop was blocked: {handler.reports}"
    return result


def our_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith((WORKER_PREFIX, WAITER_NAME)) and t.is_alive()}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with logstore.open(tmp_path / "data", cleaner=False) as s:
        s.create_topic("events", partitions=3)
        s.create_topic("durable", partitions=2, config={"flush": "always"})
        yield s


async def drain(consumer: AsyncConsumer, count: int) -> list[Any]:
    """Exactly ``count`` records through getmany (fails rather than hangs if fewer come)."""
    out: list[Any] = []
    while len(out) < count:
        batch = await asyncio.wait_for(consumer.getmany(timeout_ms=5000), 10)
        assert batch, f"only {len(out)} of {count} records arrived"
        for tp, records in batch.items():
            assert all((r.topic, r.partition) == tp for r in records)
            out.extend(records)
    return out


# -- round trips ---------------------------------------------------------------------------------


def test_send_and_consume_round_trip(store: Store) -> None:
    async def main() -> None:
        async with store.async_producer() as producer, \
                store.async_consumer("events", auto_offset_reset="earliest") as consumer:
            await producer.start()
            await consumer.start()
            sent = []
            for i in range(30):
                key = b"user-%d" % (i % 4)
                if i % 2:
                    meta = await producer.send("events", b"v%d" % i, key=key, headers=[("n", b"%d" % i)])
                else:
                    meta = await producer.send_and_wait("events", b"v%d" % i, key=key, headers=[("n", b"%d" % i)])
                assert meta.topic == "events" and 0 <= meta.partition < 3
                sent.append(meta)
            records = await drain(consumer, 30)
            got = {(r.partition, r.offset): (r.key, r.value, r.headers) for r in records}
            for i, meta in enumerate(sent):
                assert got[(meta.partition, meta.offset)] == (b"user-%d" % (i % 4), b"v%d" % i, [("n", b"%d" % i)])
            # per partition, offsets come back in order
            for tp in {TopicPartition("events", p) for p in range(3)}:
                offsets = [r.offset for r in records if r.partition == tp.partition]
                assert offsets == sorted(offsets)
            assert await consumer.getmany(timeout_ms=0) == {}

    run(main())


def test_getmany_groups_by_partition_and_honours_max_records(store: Store) -> None:
    producer = store.producer()
    for p in range(3):
        for i in range(5):
            producer.send("events", b"%d-%d" % (p, i), partition=p)

    async def main() -> None:
        consumer = store.async_consumer("events", auto_offset_reset="earliest")
        first = await consumer.getmany(max_records=7)
        assert sum(map(len, first.values())) == 7
        rest = await consumer.getmany(max_records=100)
        assert sum(map(len, rest.values())) == 8
        for batch in (first, rest):
            for tp, records in batch.items():
                assert [r.value for r in records] == [b"%d-%d" % (tp.partition, r.offset) for r in records]
        await consumer.close()

    run(main())


def test_async_for_yields_every_record_and_ends_after_consumer_timeout(store: Store) -> None:
    producer = store.producer()
    for i in range(1200):  # more than one read-ahead (max_poll_records=500)
        producer.send("events", b"%d" % i, partition=i % 2)

    async def main() -> list[Any]:
        consumer = store.async_consumer("events", auto_offset_reset="earliest", consumer_timeout_ms=100)
        records = [r async for r in consumer]
        await consumer.close()
        return records

    records = run(main())
    assert sorted(int(r.value) for r in records) == list(range(1200))
    for p in (0, 1):
        assert [r.offset for r in records if r.partition == p] == list(range(600))


def test_deserializers_apply(store: Store) -> None:
    async def main() -> None:
        producer = store.async_producer(value_serializer=str.encode, key_serializer=str.encode)
        await producer.send("events", "hello", key="k")
        consumer = store.async_consumer("events", auto_offset_reset="earliest",
                                        value_deserializer=bytes.decode, key_deserializer=bytes.decode)
        record = await consumer.getone()
        assert (record.key, record.value) == ("k", "hello")
        await producer.close()
        await consumer.close()

    run(main())


# -- the loop never blocks -----------------------------------------------------------------------


def test_loop_keeps_running_while_getone_waits(store: Store) -> None:
    """A ticker task keeps ticking while getone waits; the record is only produced (by another
    thread) after 30 ticks, so a getone that blocked the loop would never see it before the
    thread's 10 s deadline. asyncio's debug mode checks that no step held the loop > 50 ms."""
    ticked = threading.Event()

    def produce_after_ticks() -> None:
        ticked.wait(10)
        store.producer().send("events", b"late", partition=1)

    async def main() -> tuple[Any, int]:
        consumer = store.async_consumer("events")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1
                if ticks == 30:
                    ticked.set()

        ticking = asyncio.create_task(ticker())
        producer_thread = threading.Thread(target=produce_after_ticks)
        producer_thread.start()
        record = await consumer.getone()
        ticks_when_received = ticks
        ticking.cancel()
        await asyncio.to_thread(producer_thread.join)
        await consumer.close()
        return record, ticks_when_received

    record, ticks = run(main(), max_callback_s=0.05)
    assert (record.partition, record.value) == (1, b"late")
    assert ticks >= 30


def test_getmany_timeout_returns_empty_without_blocking(store: Store) -> None:
    async def main() -> None:
        consumer = store.async_consumer("events")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        assert await consumer.getmany(timeout_ms=150) == {}
        ticking.cancel()
        assert ticks > 10  # the loop ran other tasks during the wait
        await consumer.close()

    run(main(), max_callback_s=0.05)


def test_same_loop_producer_wakes_waiting_consumers(store: Store) -> None:
    producer = store.async_producer()  # a new producer id may need a durable write: not on the watched loop

    async def main() -> None:
        consumer = store.async_consumer("events")
        for i in range(50):
            waiting = asyncio.create_task(consumer.getone())
            await asyncio.sleep(0)
            assert not waiting.done()
            meta = await producer.send("events", b"%d" % i)
            record = await asyncio.wait_for(waiting, 10)
            assert (record.partition, record.offset, record.value) == (meta.partition, meta.offset, b"%d" % i)
        await producer.close()
        await consumer.close()

    run(main(), max_callback_s=0.05)


def test_tasks_sharing_a_consumer_get_each_record_once(store: Store) -> None:
    sync_producer = store.producer()

    async def main() -> list[Any]:
        consumer = store.async_consumer("events", auto_offset_reset="earliest")
        got: list[Any] = []

        async def take(n: int) -> None:
            for _ in range(n):
                got.append(await asyncio.wait_for(consumer.getone(), 10))

        async def take_many(n: int) -> None:
            while n > 0:
                for records in (await asyncio.wait_for(consumer.getmany(timeout_ms=5000, max_records=n), 10)).values():
                    got.extend(records)
                    n -= len(records)

        tasks = [asyncio.create_task(take(100)), asyncio.create_task(take(100)), asyncio.create_task(take_many(100))]
        await asyncio.sleep(0)  # all three wait
        for i in range(300):  # from another thread, in bursts
            await asyncio.to_thread(sync_producer.send, "events", b"%d" % i, partition=i % 3)
        await asyncio.gather(*tasks)
        assert await consumer.getmany(timeout_ms=0) == {}
        await consumer.close()
        return got

    got = run(main())
    assert sorted(int(r.value) for r in got) == list(range(300))


# -- cancellation --------------------------------------------------------------------------------


def test_cancelled_getone_loses_no_record(store: Store) -> None:
    async def main() -> None:
        producer = store.async_producer()
        consumer = store.async_consumer()
        consumer.assign([TP0])
        waiting = asyncio.create_task(consumer.getone())
        await asyncio.sleep(0)  # it polled, found nothing and waits
        assert not waiting.done()
        await producer.send("events", b"a", partition=0)  # wakes the waiting getone...
        waiting.cancel()  # ...which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await consumer.position(TP0) == 0
        record = await consumer.getone()
        assert (record.offset, record.value) == (0, b"a")
        await producer.close()
        await consumer.close()

    run(main())


def test_cancelled_getmany_woken_by_another_thread_loses_no_record(store: Store) -> None:
    sync_producer = store.producer()

    async def main() -> None:
        consumer = store.async_consumer()
        consumer.assign([TP0])
        for round_ in range(20):
            waiting = asyncio.create_task(consumer.getmany(timeout_ms=5000))
            await asyncio.sleep(0)
            # appended from another thread: the waiter thread may wake the call at any moment
            await asyncio.to_thread(sync_producer.send, "events", b"%d" % round_, partition=0)
            waiting.cancel()
            try:
                got = await waiting
            except asyncio.CancelledError:
                got = {}
            # taken by the cancelled call (it had finished) or still there for the next one
            records = got.get(TP0) or (await consumer.getmany(timeout_ms=5000)).get(TP0, [])
            assert [(r.offset, r.value) for r in records] == [(round_, b"%d" % round_)]
            assert await consumer.getmany(timeout_ms=0) == {}
        await consumer.close()

    run(main())


def test_positions_count_returned_records_only(store: Store) -> None:
    producer = store.producer()
    for i in range(10):
        producer.send("events", b"%d" % i, partition=0)

    async def main() -> None:
        consumer = store.async_consumer(auto_offset_reset="earliest")
        consumer.assign([TP0, TP1])
        assert [(await consumer.getone()).offset for _ in range(2)] == [0, 1]
        assert await consumer.position(TP0) == 2  # not the 10 read ahead
        assert (await consumer.getone()).offset == 2
        consumer.pause(TP0)
        assert await consumer.getmany(timeout_ms=0) == {}
        consumer.resume(TP0)
        assert [r.offset for r in (await consumer.getmany())[TP0]] == list(range(3, 10))
        # a filtered getone takes from that partition only, and nothing is skipped elsewhere
        producer.send("events", b"p1", partition=1)
        producer.send("events", b"p0", partition=0)
        assert (await consumer.getone(TP0)).value == b"p0"
        assert (await consumer.getone()).value == b"p1"
        consumer.seek(TP0, 4)
        assert (await consumer.getone()).offset == 4
        await consumer.seek_to_end(TP0)
        assert await consumer.position(TP0) == 11 == consumer.highwater(TP0)
        await consumer.seek_to_beginning(TP0)
        assert await consumer.position(TP0) == 0
        await consumer.close()

    run(main())


def test_seek_wakes_a_waiting_getone(store: Store) -> None:
    store.producer().send("events", b"old", partition=0)

    async def main() -> Any:
        consumer = store.async_consumer()
        consumer.assign([TP0])  # latest: waits for new records
        waiting = asyncio.create_task(consumer.getone())
        await asyncio.sleep(0)
        consumer.seek(TP0, 0)  # readable again without any append
        record = await asyncio.wait_for(waiting, 10)
        await consumer.close()
        return record

    assert run(main()).value == b"old"


# -- producers -----------------------------------------------------------------------------------


def test_concurrent_producer_tasks_lose_and_duplicate_nothing(store: Store) -> None:
    async def main() -> list[Any]:
        producers = [store.async_producer(), store.async_producer()]
        metas: list[tuple[bytes, Any]] = []

        async def work(n: int) -> None:
            producer = producers[n % 2]
            for i in range(150):
                value = b"w%d-%d" % (n, i)
                metas.append((value, await producer.send("events", value, key=b"w%d" % n)))
                if i % 7 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(*(work(n) for n in range(8)))
        consumer = store.async_consumer("events", auto_offset_reset="earliest")
        records = await drain(consumer, 8 * 150)
        for producer in producers:
            await producer.close()
        await consumer.close()
        by_position = {(r.partition, r.offset): r.value for r in records}
        assert len(by_position) == len(records) == 8 * 150
        for value, meta in metas:
            assert by_position[(meta.partition, meta.offset)] == value
        return records

    records = run(main())
    for n in range(8):
        # one key, one partition, the task's order
        mine = [r for r in records if r.key == b"w%d" % n]
        assert len({r.partition for r in mine}) == 1
        assert [r.value for r in sorted(mine, key=lambda r: r.offset)] == [b"w%d-%d" % (n, i) for i in range(150)]


def test_inline_for_page_cache_topics_worker_for_flush_always(store: Store) -> None:
    """The serializer runs inside the synchronous send: the thread it runs on is where the
    append happened."""
    threads: list[str] = []

    def serializer(value: bytes) -> bytes:
        threads.append(threading.current_thread().name)
        return value

    async def main() -> None:
        loop_thread = threading.current_thread().name
        producer = store.async_producer(value_serializer=serializer)
        await producer.send("events", b"a")
        assert threads == [loop_thread]
        assert our_threads() == set()  # the fast path starts no thread
        await producer.send("durable", b"b")
        assert threads[-1].startswith(WORKER_PREFIX)
        # a topic's records keep their call order across both paths
        futures = [producer.send("durable", b"%d" % i, partition=0) for i in range(20)]
        futures += [producer.send("events", b"e%d" % i, partition=0) for i in range(5)]
        metas = await asyncio.gather(*futures)
        durable = [m.offset for m in metas if m.topic == "durable"]
        assert durable == list(range(durable[0], durable[0] + 20))
        events = [m.offset for m in metas if m.topic == "events"]
        assert events == list(range(events[0], events[0] + 5))
        # the decision follows the topic's config
        store.alter_topic_config("durable", {"flush": None})
        store.alter_topic_config("events", {"flush": "always"})
        threads.clear()
        await producer.send("durable", b"c")
        await producer.send("events", b"d")
        assert threads[0] == loop_thread and threads[1].startswith(WORKER_PREFIX)
        await producer.close()
        assert our_threads() == set()  # the worker is joined by close

    run(main())


def test_auto_created_topic_is_created_off_the_loop(tmp_path: Path) -> None:
    with logstore.open(tmp_path / "auto", cleaner=False, auto_create_topics=True) as store:
        async def main() -> None:
            producer = store.async_producer()
            meta = await producer.send("fresh", b"x")
            assert (meta.topic, meta.offset) == ("fresh", 0)
            assert (await producer.send("fresh", b"y")).offset == 1
            await producer.close()

        run(main())
        assert "fresh" in store.list_topics()


def test_lingering_sends_complete_on_flush_and_close(store: Store) -> None:
    async def main() -> None:
        producer = store.async_producer(linger_ms=60_000)
        first = producer.send("events", b"a", partition=0)
        durable = producer.send("durable", b"b", partition=0)  # the worker enqueues it
        await asyncio.sleep(0.01)
        assert not first.done()
        await producer.flush()
        assert (await first).offset == 0
        assert (await durable).offset == 0
        last = producer.send("events", b"c", partition=0)
        await producer.close()
        assert (await last).offset == 1
        assert our_threads() == set()

    run(main())
    assert store.describe_topic("events").partitions[0].high_watermark == 2


def test_send_many(store: Store) -> None:
    async def main() -> None:
        producer = store.async_producer()
        values = [b"%d" % i for i in range(2500)]  # more than one chunk: yields in between
        metas = await producer.send_many("events", values, keys=[b"same"] * 2500,
                                         headers=[[("i", v)] for v in values])
        assert len({m.partition for m in metas}) == 1
        assert [m.offset for m in metas] == list(range(metas[0].offset, metas[0].offset + 2500))
        durable = await producer.send_many("durable", [b"x", b"y"], partition=1, timestamps_ms=[5, 6])
        assert [(m.partition, m.offset, m.timestamp) for m in durable] == [(1, 0, 5), (1, 1, 6)]
        with pytest.raises(InvalidArgumentError):
            await producer.send_many("events", [b"a", b"b"], keys=[b"k"])
        await producer.close()
        consumer = store.async_consumer(auto_offset_reset="earliest")
        consumer.assign([TopicPartition("events", metas[0].partition)])
        records = await drain(consumer, 2500)
        assert [r.value for r in records] == values
        assert [r.headers for r in records[:2]] == [[("i", b"0")], [("i", b"1")]]
        await consumer.close()

    run(main())


# -- close and errors ----------------------------------------------------------------------------


def test_close_wakes_waiters_and_leaves_no_thread(store: Store) -> None:
    async def main() -> None:
        before = our_threads()
        consumer = store.async_consumer("events")

        async def iterate() -> list[Any]:
            return [r async for r in consumer]

        waiting = asyncio.create_task(consumer.getone())
        iterating = asyncio.create_task(iterate())
        await asyncio.sleep(0)
        assert our_threads() - before  # the waiter thread
        await consumer.close()
        with pytest.raises(LogClosedError):
            await asyncio.wait_for(waiting, 10)
        assert await asyncio.wait_for(iterating, 10) == []
        assert our_threads() == before
        with pytest.raises(LogClosedError):
            await consumer.getone()
        await consumer.stop()  # idempotent

    run(main())


def test_store_close_wakes_async_waiters(store: Store) -> None:
    async def main() -> None:
        consumer = store.async_consumer("events")
        waiting = asyncio.create_task(consumer.getone())
        iterating = asyncio.create_task(consumer.__anext__())
        await asyncio.sleep(0)
        await asyncio.to_thread(store.close)
        with pytest.raises(LogClosedError):
            await asyncio.wait_for(waiting, 10)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(iterating, 10)
        await consumer.close()
        assert our_threads() == set()

    run(main())


def test_errors_propagate_through_await(store: Store) -> None:
    async def main() -> None:
        producer = store.async_producer()
        with pytest.raises(UnknownTopicError):
            await producer.send("missing", b"x")
        with pytest.raises(UnknownTopicError):
            await producer.send("events", b"x", partition=7)
        with pytest.raises(UnknownTopicError):  # raised in the worker thread
            await producer.send("durable", b"x", partition=7)
        with pytest.raises(InvalidRecordError):
            await producer.send("events", 123)
        with pytest.raises(UnknownTopicError):
            await producer.send_many("missing", [b"x"])
        await producer.close()
        with pytest.raises(LogClosedError):
            await producer.send("events", b"x")

        consumer = store.async_consumer("events")
        with pytest.raises(InvalidArgumentError):
            await consumer.getmany(max_records=0)
        with pytest.raises(InvalidArgumentError):
            await consumer.getmany(timeout_ms=-1)
        with pytest.raises(IllegalStateError):
            await consumer.getone(TopicPartition("events", 9))
        with pytest.raises(UnknownTopicError):
            consumer.assign([("missing", 0)])
        await consumer.close()

    run(main())
    producer = store.async_producer()
    with pytest.raises(RuntimeError):  # no running event loop
        producer.send("events", b"x")


def test_a_deserializer_error_propagates_and_skips_no_other_record(store: Store) -> None:
    """As Kafka's clients: the records before the bad one are delivered, the error comes out
    of the call that reaches it, and the position stays on it (seek past it to go on)."""
    producer = store.producer()
    for value in (b"1", b"2", b"bad", b"4"):
        producer.send("events", value, partition=0)

    def decode(raw: bytes) -> int:
        if raw == b"bad":
            raise ValueError("cannot decode")
        return int(raw)

    async def main() -> None:
        consumer = store.async_consumer(auto_offset_reset="earliest", value_deserializer=decode)
        consumer.assign([TP0])
        values = []
        with pytest.raises(ValueError, match="cannot decode"):
            for _ in range(4):
                values.append((await consumer.getone()).value)
        assert values == [1, 2]
        assert await consumer.position(TP0) == 2
        consumer.seek(TP0, 3)
        assert (await consumer.getone()).value == 4
        await consumer.close()

    run(main())


def test_a_consumer_serves_successive_event_loops(store: Store) -> None:
    consumer = store.async_consumer("events", auto_offset_reset="earliest")
    assert run(consumer.getmany(timeout_ms=10)) == {}  # starts the waiter thread on this loop
    store.producer().send("events", b"x")
    assert [r.value for rs in run(consumer.getmany(timeout_ms=5000)).values() for r in rs] == [b"x"]

    async def wait_for_thread_append() -> Any:
        threading.Timer(0.05, store.producer().send, ("events", b"y")).start()
        return await asyncio.wait_for(consumer.getone(), 10)

    assert run(wait_for_thread_append()).value == b"y"
    run(consumer.close())


def test_an_abandoned_consumer_does_not_keep_its_thread(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aio, "WAITER_CHECK_S", 0.02)

    async def main() -> threading.Thread:
        consumer = store.async_consumer("events")
        assert await consumer.getmany(timeout_ms=1) == {}
        assert consumer._waiter is not None
        return consumer._waiter.thread

    thread = run(main())
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


def test_reprs_and_passthroughs(store: Store) -> None:
    async def main() -> None:
        producer = store.async_producer(enable_idempotence=False)
        assert isinstance(producer, AsyncProducer) and producer.producer_id == -1
        assert await producer.partitions_for("events") == {0, 1, 2}
        assert "closed=False" in repr(producer)
        consumer = store.async_consumer(pattern="ev.*")
        assert isinstance(consumer, AsyncConsumer)
        assert consumer.subscription() == {"events"}
        assert consumer.assignment() == {TopicPartition("events", p) for p in range(3)}
        assert await consumer.topics() == {"events", "durable"}
        assert consumer.partitions_for_topic("durable") == {0, 1}
        assert await consumer.beginning_offsets([TP0]) == {TP0: 0}
        assert await consumer.end_offsets([TP0]) == {TP0: 0}
        assert await consumer.offsets_for_times({TP0: 0}) == {TP0: None}
        consumer.subscribe(["durable"])
        assert consumer.subscription() == {"durable"}
        consumer.unsubscribe()
        assert consumer.assignment() == set()
        consumer.pause()
        assert consumer.paused() == set()
        await producer.stop()
        await consumer.stop()
        assert producer.closed and consumer.closed
        assert "closed=True" in repr(consumer)

    run(main())
