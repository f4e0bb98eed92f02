"""The consumer of the embedded broker: assignment and subscription (topics, patterns, topics
appearing and disappearing), positions and seeks, offsets_for_times, pause/resume, iteration,
auto_offset_reset (also after retention), deserializers, max_records, blocking poll that wakes
on data without spinning, wakeup, close, and many producer and consumer threads at once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import logstore
from logstore import ConsumerRecord, TopicPartition
from logstore.errors import IllegalStateError, LogClosedError, NoOffsetForPartitionError

T0, T1, T2 = TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("t", 2)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[logstore.Store]:
    s = logstore.open(tmp_path / "data", cleaner=False)
    yield s
    s.close()


def drain(consumer: logstore.Consumer, timeout: float = 0.05, max_records: int | None = None) -> list[Any]:
    out: list[Any] = []
    while True:
        batch = consumer.poll(timeout, max_records)
        if not batch:
            return out
        out.extend(batch)


def fill(store: logstore.Store, topic: str = "t", per_partition: int = 10, timestamp0: int | None = None) -> None:
    """``per_partition`` records on each partition: value b"<p>-<i>", key b"k<i>"."""
    producer = store.producer()
    for p in range(store.partitions_for(topic)):
        for i in range(per_partition):
            ts = None if timestamp0 is None else timestamp0 + i * 10
            producer.send(topic, b"%d-%d" % (p, i), key=b"k%d" % i, partition=p, timestamp_ms=ts)


def offsets(records: list[Any], tp: TopicPartition) -> list[int]:
    return [r.offset for r in records if (r.topic, r.partition) == tp]


# -- assignment and subscription --------------------------------------------------------------------

def test_assign_and_poll(store: logstore.Store) -> None:
    store.create_topic("t", partitions=3)
    fill(store, per_partition=20)
    consumer = store.consumer(auto_offset_reset="earliest")
    consumer.assign([T0, ("t", 2)])
    assert consumer.assignment() == {T0, T2}
    assert consumer.subscription() == set()
    records = drain(consumer)
    assert offsets(records, T0) == list(range(20)) and offsets(records, T2) == list(range(20))
    assert offsets(records, T1) == []
    r = next(r for r in records if (r.partition, r.offset) == (2, 7))
    assert (r.topic, r.key, r.value, r.headers) == ("t", b"k7", b"2-7", [])
    assert consumer.position(T0) == consumer.position(T2) == 20
    with pytest.raises(IllegalStateError):
        consumer.position(T1)
    consumer.assign([T1])  # replaces
    assert consumer.assignment() == {T1}
    assert offsets(drain(consumer), T1) == list(range(20))


def test_subscribe_topics_including_one_created_later(store: logstore.Store) -> None:
    store.create_topic("a", partitions=2)
    consumer = store.consumer("a", "later", auto_offset_reset="earliest")
    assert consumer.subscription() == {"a", "later"}
    assert consumer.assignment() == {TopicPartition("a", 0), TopicPartition("a", 1)}
    producer = store.producer()
    producer.send("a", b"1")
    store.create_topic("later")
    producer.send("later", b"2")
    assert sorted(r.value for r in drain(consumer)) == [b"1", b"2"]
    assert TopicPartition("later", 0) in consumer.assignment()
    store.create_partitions("a", 3)
    producer.send("a", b"3", partition=2)
    assert [r.value for r in drain(consumer)] == [b"3"]
    consumer.unsubscribe()
    assert consumer.assignment() == set() and consumer.subscription() == set()
    assert consumer.poll(0) == []


def test_subscribe_pattern_follows_topics_created_and_deleted(store: logstore.Store) -> None:
    store.create_topic("orders-eu", partitions=2)
    store.create_topic("audit")
    consumer = store.consumer(pattern=r"orders-.*", auto_offset_reset="earliest")
    assert {tp.topic for tp in consumer.assignment()} == {"orders-eu"}
    producer = store.producer()
    producer.send("orders-eu", b"eu")
    producer.send("audit", b"not matched")
    store.create_topic("orders-us")
    producer.send("orders-us", b"us")
    store.create_topic("xorders-us")  # the pattern matches the whole name only
    producer.send("xorders-us", b"no")
    assert sorted(r.value for r in drain(consumer)) == [b"eu", b"us"]
    assert consumer.subscription() == {"orders-eu", "orders-us"}
    store.delete_topic("orders-eu")
    producer.send("orders-us", b"us2")
    assert [r.value for r in drain(consumer)] == [b"us2"]
    assert {tp.topic for tp in consumer.assignment()} == {"orders-us"}
    # a compiled pattern works too, and subscribe() replaces the subscription
    import re
    consumer.subscribe(pattern=re.compile("aud.t"))
    assert consumer.assignment() == {TopicPartition("audit", 0)}


def test_manual_assignment_drops_a_deleted_topic(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    store.create_topic("u")
    fill(store, "u", per_partition=3)
    consumer = store.consumer(auto_offset_reset="earliest")
    consumer.assign([T0, T1, TopicPartition("u", 0)])
    store.delete_topic("t")
    assert [r.value for r in drain(consumer)] == [b"0-0", b"0-1", b"0-2"]
    assert consumer.assignment() == {TopicPartition("u", 0)}


# -- positions and seeks ----------------------------------------------------------------------------

def test_seek_position_beginning_end(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    fill(store, per_partition=10)
    consumer = store.consumer(auto_offset_reset="earliest")
    consumer.assign([T0, T1])
    assert consumer.position(T0) == 0
    consumer.seek(T0, 7)
    assert consumer.position(T0) == 7
    assert offsets(drain(consumer), T0) == [7, 8, 9]
    consumer.seek_to_beginning(T0)
    assert offsets(drain(consumer), T0) == list(range(10))
    consumer.seek_to_beginning()  # all assigned
    assert len(drain(consumer)) == 20
    consumer.seek_to_end()
    assert consumer.position(T0) == consumer.position(T1) == 10
    assert drain(consumer) == []
    consumer.seek(T1, 3)
    consumer.seek_to_end(T0)
    assert offsets(drain(consumer), T1) == list(range(3, 10))
    assert consumer.beginning_offsets([T0, T1]) == {T0: 0, T1: 0}
    assert consumer.end_offsets([T0, ("t", 1)]) == {T0: 10, T1: 10}
    # a seek in the middle of a buffered fetch takes effect at once
    consumer.seek(T0, 0)
    assert [r.offset for r in consumer.poll(0, max_records=3)] == [0, 1, 2]
    consumer.seek(T0, 8)
    assert offsets(drain(consumer), T0) == [8, 9]


def test_offsets_for_times(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    fill(store, per_partition=10, timestamp0=1_000_000)  # timestamps 1_000_000, 1_000_010, ...
    consumer = store.consumer()
    found = consumer.offsets_for_times({T0: 1_000_035, T1: 0})
    assert found[T0] == (4, 1_000_040) and found[T1] == (0, 1_000_000)
    assert consumer.offsets_for_times({T0: 1_000_090})[T0] == (9, 1_000_090)
    assert consumer.offsets_for_times({T0: 1_000_091})[T0] is None
    consumer.assign([T0])
    found_50 = consumer.offsets_for_times({T0: 1_000_050})[T0]
    assert found_50 is not None
    consumer.seek(T0, found_50[0])
    assert [r.value for r in drain(consumer)] == [b"0-5", b"0-6", b"0-7", b"0-8", b"0-9"]


def test_pause_and_resume(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    fill(store, per_partition=5)
    consumer = store.consumer("t", auto_offset_reset="earliest")
    consumer.pause(T0)
    assert consumer.paused() == {T0}
    records = drain(consumer)
    assert offsets(records, T0) == [] and offsets(records, T1) == list(range(5))
    assert consumer.position(T0) == 0  # kept
    consumer.resume(T0)
    assert consumer.paused() == set()
    assert offsets(drain(consumer), T0) == list(range(5))
    # pausing mid-buffer keeps what was not handed out
    fill(store, per_partition=5)
    consumer.poll(0, max_records=2)
    consumer.pause(T0, T1)
    assert consumer.poll(0.05) == []
    consumer.resume(T0, T1)
    assert len(drain(consumer)) == 8
    with pytest.raises(IllegalStateError):
        consumer.pause(TopicPartition("t", 9))


def test_iteration_ends_after_consumer_timeout(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    fill(store, per_partition=30)
    consumer = store.consumer("t", auto_offset_reset="earliest", consumer_timeout_ms=100)
    got = list(consumer)
    assert sorted((r.partition, r.offset) for r in got) == [(p, o) for p in range(2) for o in range(30)]
    assert list(consumer) == []  # nothing new: ends after the timeout again


def test_iteration_sees_records_sent_while_iterating(store: logstore.Store) -> None:
    store.create_topic("t")
    consumer = store.consumer("t", auto_offset_reset="earliest", consumer_timeout_ms=2000)
    producer = store.producer()
    producer.send("t", b"0")
    seen = []
    for record in consumer:
        seen.append(record.value)
        if len(seen) < 5:
            producer.send("t", b"%d" % len(seen))
        else:
            break
    assert seen == [b"0", b"1", b"2", b"3", b"4"]


# -- auto_offset_reset --------------------------------------------------------------------------------

def test_auto_offset_reset_policies(store: logstore.Store) -> None:
    store.create_topic("t")
    fill(store, per_partition=5)
    earliest = store.consumer("t", auto_offset_reset="earliest")
    latest = store.consumer("t")  # Kafka's default
    none = store.consumer("t", auto_offset_reset="none")
    assert earliest.position(T0) == 0 and latest.position(T0) == 5
    with pytest.raises(NoOffsetForPartitionError):
        none.poll(0)
    with pytest.raises(NoOffsetForPartitionError):
        none.position(T0)
    none.seek(T0, 2)
    assert [r.offset for r in drain(none)] == [2, 3, 4]
    store.producer().send("t", b"new")
    assert [r.value for r in drain(latest)] == [b"new"]
    assert len(drain(earliest)) == 6


@pytest.mark.parametrize("policy, expected_first", [("earliest", 20), ("latest", 30), ("none", None)])
def test_out_of_range_position_after_retention(store: logstore.Store, policy: str,
                                               expected_first: int | None) -> None:
    store.create_topic("t", config={"segment_bytes": 256})
    fill(store, per_partition=30)
    plog = store.partition_log(T0)
    consumer = store.consumer(auto_offset_reset=policy)
    consumer.assign([T0])
    consumer.seek(T0, 3)
    assert plog.delete_before(20) > 0 and plog.log_start_offset == 20
    if expected_first is None:
        # as Kafka's clients: an out-of-range position is OffsetOutOfRange, not "no offset"
        with pytest.raises(logstore.OffsetOutOfRangeError, match="position 3 is out of range"):
            consumer.poll(0.05)
        assert consumer.position(T0) == 3  # kept: the user decides (seek) what to do
        return
    records = drain(consumer)
    assert consumer.position(T0) == 30
    assert [r.offset for r in records] == list(range(expected_first, 30))
    store.producer().send("t", b"after", partition=0)
    assert [r.offset for r in drain(consumer)] == [30]


def test_position_past_the_end_resets(store: logstore.Store) -> None:
    store.create_topic("t")
    fill(store, per_partition=5)
    consumer = store.consumer(auto_offset_reset="earliest")
    consumer.assign([T0])
    consumer.seek(T0, 1000)
    assert [r.offset for r in drain(consumer)] == [0, 1, 2, 3, 4]


# -- deserializers, max_records, fetch sizes ----------------------------------------------------------

def test_deserializers(store: logstore.Store) -> None:
    store.create_topic("t")
    producer = store.producer(key_serializer=str.encode, value_serializer=lambda v: json.dumps(v).encode())
    producer.send("t", {"n": 1}, key="a", headers=[("h", b"x")])
    producer.send("t", None, key="b")
    consumer = store.consumer("t", auto_offset_reset="earliest", key_deserializer=bytes.decode,
                              value_deserializer=json.loads)
    records = drain(consumer)
    assert all(isinstance(r, ConsumerRecord) for r in records)
    assert [(r.key, r.value) for r in records] == [("a", {"n": 1}), ("b", None)]
    assert (records[0].topic, records[0].partition, records[0].offset, records[0].headers) == ("t", 0, 0, [("h", b"x")])
    assert records[0].timestamp > 0


def test_max_records_and_max_poll_records(store: logstore.Store) -> None:
    store.create_topic("t")
    fill(store, per_partition=100)
    consumer = store.consumer("t", auto_offset_reset="earliest", max_poll_records=7)
    seen: list[int] = []
    while True:
        batch = consumer.poll(0)
        if not batch:
            break
        assert len(batch) <= 7
        seen += [r.offset for r in batch]
    assert seen == list(range(100))
    consumer.seek_to_beginning()
    assert [r.offset for r in consumer.poll(0, max_records=3)] == [0, 1, 2]
    assert [r.offset for r in consumer.poll(0, 1)] == [3]
    assert consumer.position(T0) == 4


def test_small_fetch_sizes_still_make_progress(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    producer = store.producer(linger_ms=60_000)
    for i in range(200):
        producer.send("t", b"%03d" % i + b"x" * 200, partition=i % 2)
        if i % 10 == 9:
            producer.flush()
    consumer = store.consumer("t", auto_offset_reset="earliest", max_partition_fetch_bytes=1, fetch_max_bytes=1)
    records = drain(consumer)
    assert offsets(records, T0) == list(range(100)) and offsets(records, T1) == list(range(100))


def test_partitions_are_served_fairly(store: logstore.Store) -> None:
    """A partition with a backlog does not starve the others."""
    store.create_topic("t", partitions=2)
    producer = store.producer()
    for i in range(5000):
        producer.send("t", b"%d" % i, partition=0)
    for i in range(5):
        producer.send("t", b"%d" % i, partition=1)
    consumer = store.consumer("t", auto_offset_reset="earliest")
    polled: list[Any] = []
    for _ in range(4):
        polled += consumer.poll(0, max_records=100)
    assert offsets(polled, T1) == [0, 1, 2, 3, 4]


# -- blocking, wakeup, close ----------------------------------------------------------------------

class Poller:
    """Runs one ``consumer.poll(timeout)`` in a thread; records result, wall and CPU time."""

    def __init__(self, consumer: logstore.Consumer, timeout: float) -> None:
        self.result: list[Any] | None = None
        self.error: BaseException | None = None
        self.elapsed = self.cpu = 0.0
        self.thread = threading.Thread(target=self._run, args=(consumer, timeout))
        self.thread.start()

    def _run(self, consumer: logstore.Consumer, timeout: float) -> None:
        start, cpu = time.monotonic(), time.thread_time()
        try:
            self.result = consumer.poll(timeout)
        except BaseException as e:  # reported by join()
            self.error = e
        self.elapsed, self.cpu = time.monotonic() - start, time.thread_time() - cpu

    def join(self) -> list[Any]:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def test_blocked_poll_wakes_when_data_arrives(store: logstore.Store) -> None:
    store.create_topic("t", partitions=3)
    consumer = store.consumer("t")  # latest: waits for new records
    consumer.poll(0)
    poller = Poller(consumer, 20.0)
    time.sleep(0.2)
    store.producer().send("t", b"hello", partition=2)
    records = poller.join()
    assert [(r.partition, r.value) for r in records] == [(2, b"hello")]
    assert poller.elapsed < 10.0, "the poll slept through the append"


def test_blocked_poll_wakes_for_a_lingering_producer(store: logstore.Store) -> None:
    store.create_topic("t")
    consumer = store.consumer("t")
    consumer.poll(0)
    producer = store.producer(linger_ms=50)
    poller = Poller(consumer, 20.0)
    time.sleep(0.1)
    producer.send("t", b"later")
    assert [r.value for r in poller.join()] == [b"later"]
    assert poller.elapsed < 10.0


def test_poll_without_data_waits_the_timeout_without_spinning(store: logstore.Store) -> None:
    store.create_topic("t")
    store.create_topic("other")
    consumer = store.consumer("t", auto_offset_reset="earliest")
    # appends to another topic wake the store's notifier but bring nothing for this consumer
    producer = store.producer()
    poller = Poller(consumer, 0.5)
    for _ in range(20):
        producer.send("other", b"noise")
        time.sleep(0.01)
    assert poller.join() == []
    assert poller.elapsed >= 0.45
    assert poller.cpu < 0.25, f"the poll used {poller.cpu:.2f} s of CPU in {poller.elapsed:.2f} s: spinning"
    start = time.monotonic()
    assert consumer.poll(timeout_ms=100) == []
    assert time.monotonic() - start >= 0.09


def test_blocked_pattern_poll_wakes_for_a_topic_created_meanwhile(store: logstore.Store) -> None:
    consumer = store.consumer(pattern="new-.*", auto_offset_reset="earliest")
    poller = Poller(consumer, 20.0)
    time.sleep(0.1)
    store.create_topic("new-topic", partitions=2)
    time.sleep(0.1)
    store.producer().send("new-topic", b"first", partition=1)
    assert [(r.topic, r.partition, r.value) for r in poller.join()] == [("new-topic", 1, b"first")]
    assert poller.elapsed < 10.0


def test_wakeup_ends_a_blocked_poll(store: logstore.Store) -> None:
    store.create_topic("t")
    consumer = store.consumer("t")
    poller = Poller(consumer, 20.0)
    time.sleep(0.1)
    consumer.wakeup()
    assert poller.join() == []
    assert poller.elapsed < 10.0
    store.producer().send("t", b"v")
    assert [r.value for r in consumer.poll(1.0)] == [b"v"]  # the consumer still works


def test_close_ends_a_blocked_poll_and_the_consumer(store: logstore.Store) -> None:
    store.create_topic("t")
    consumer = store.consumer("t")
    poller = Poller(consumer, 20.0)
    time.sleep(0.1)
    consumer.close()
    assert poller.join() == []
    assert poller.elapsed < 10.0
    assert consumer.closed
    with pytest.raises(LogClosedError):
        consumer.poll(0)
    consumer.close()  # idempotent


def test_store_close_ends_blocked_polls(tmp_path: Path) -> None:
    s = logstore.open(tmp_path / "data", cleaner=False)
    s.create_topic("t")
    consumer = s.consumer("t")
    poller = Poller(consumer, 20.0)
    time.sleep(0.1)
    s.close()
    assert poller.join() == []
    assert poller.elapsed < 10.0 and consumer.closed


def test_context_manager(store: logstore.Store) -> None:
    store.create_topic("t")
    with store.consumer("t") as consumer:
        consumer.poll(0)
    assert consumer.closed


# -- many threads ---------------------------------------------------------------------------------

def test_many_producers_and_consumers(store: logstore.Store) -> None:
    """Producer threads send while consumer threads, each assigned every partition, poll: each
    consumer gets every sent record exactly once, in offset order per partition."""
    store.create_topic("t", partitions=4, config={"segment_bytes": 32 * 1024})
    store.create_topic("u", partitions=2)
    producers, per_producer, consumers = 3, 2500, 3
    sent: list[list[tuple[str, int, int, bytes]]] = [[] for _ in range(producers)]
    received: list[list[Any]] = [[] for _ in range(consumers)]
    errors: list[BaseException] = []
    total = producers * per_producer
    deadline = time.monotonic() + 60

    def produce(n: int) -> None:
        producer = store.producer(linger_ms=1 if n == 0 else 0)
        pending = []
        for i in range(per_producer):
            topic = "u" if i % 7 == 0 else "t"
            value = b"%d-%d" % (n, i)
            pending.append((topic, producer.send(topic, value, key=b"k%d" % (i % 11) if i % 2 else None), value))
        producer.flush()
        sent[n] = [(topic, m.get(10).partition, m.get(10).offset, value) for topic, m, value in pending]

    def consume(n: int) -> None:
        consumer = store.consumer(auto_offset_reset="earliest", max_poll_records=[50, 500, 5000][n % 3])
        consumer.assign(store.topic_partitions(["t", "u"]))
        while len(received[n]) < total and time.monotonic() < deadline:
            received[n].extend(consumer.poll(0.5))
        received[n].extend(consumer.poll(0.05))  # nothing more may come
        consumer.close()

    def guarded(target: Any, n: int) -> None:
        try:
            target(n)
        except BaseException as e:  # reported in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(consume, n)) for n in range(consumers)]
    threads += [threading.Thread(target=guarded, args=(produce, n)) for n in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    expected = {(topic, p, o): v for per in sent for topic, p, o, v in per}
    assert len(expected) == total, "two sends answered with the same offset"
    for n, records in enumerate(received):
        got = [(r.topic, r.partition, r.offset) for r in records]
        assert len(got) == len(set(got)) == total, f"consumer {n}: {len(got)} records, {len(set(got))} distinct"
        assert {(r.topic, r.partition, r.offset): r.value for r in records} == expected
        for tp in store.topic_partitions(["t", "u"]):
            seen = [r.offset for r in records if (r.topic, r.partition) == tp]
            assert seen == list(range(len(seen))), f"consumer {n}: {tp} out of order"


def test_a_recreated_topic_is_read_from_its_reset_position(store: logstore.Store) -> None:
    """Delete a topic and create it again while a consumer is subscribed: the new topic is a new
    log, so the consumer starts it where auto_offset_reset says, not at the old topic's position."""
    store.create_topic("t")
    fill(store, per_partition=5)
    consumer = store.consumer("t", auto_offset_reset="earliest")
    assert len(drain(consumer)) == 5
    store.delete_topic("t")
    store.create_topic("t")
    producer = store.producer()
    for i in range(8):
        producer.send("t", b"new-%d" % i)
    assert [r.value for r in drain(consumer)] == [b"new-%d" % i for i in range(8)]
