"""The producer of the embedded broker: per-partition order, partitioners (xxhash, Kafka's murmur2,
sticky keyless, explicit, custom), lingering batches, serializers, idempotence (retries dropped,
gaps rejected, state across reopen and metadata changes) and producers shared between threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash

import logstore
from logstore import TopicPartition
from logstore._native.producer import TopicRoute
from logstore.errors import (
    InvalidArgumentError,
    LogClosedError,
    LogstoreTimeoutError,
    OutOfOrderSequenceError,
    ProducerFencedError,
    UnknownTopicError,
)

# importing kafka loads its protocol schemas with a deprecated importlib.resources call: kafka-python's
# warning, not ours (the suite runs with warnings as errors)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.partitioner.default import DefaultPartitioner, murmur2  # type: ignore[import-untyped]

CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[logstore.Store]:
    s = logstore.open(data_dir, cleaner=False)
    yield s
    s.close()


def read_partition(store: logstore.Store, topic: str, partition: int) -> list[Any]:
    """Every committed record of one partition, in offset order (read straight from the log)."""
    plog = store.partition_log(TopicPartition(topic, partition))
    out: list[Any] = []
    offset = plog.log_start_offset
    while offset < plog.high_watermark:
        view = plog.read(offset, 1 << 20, plog.high_watermark)
        out.extend(view)
        offset = view.next_offset
    return out


def check_dense_and_ordered(store: logstore.Store, topic: str, sent: list[tuple[Any, bytes]]) -> None:
    """``sent`` [(metadata, value)] in send order: per partition, offsets are 0..n-1 in send
    order and the log holds exactly those values at those offsets."""
    by_partition: dict[int, list[tuple[int, bytes]]] = {}
    for meta, value in sent:
        by_partition.setdefault(meta.partition, []).append((meta.offset, value))
    for p in range(store.partitions_for(topic)):
        expected = by_partition.get(p, [])
        assert [o for o, _ in expected] == list(range(len(expected))), f"partition {p}: offsets not dense in order"
        records = read_partition(store, topic, p)
        assert [(r.offset, r.value) for r in records] == expected, f"partition {p}: log differs from what was sent"


# -- order ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("linger_ms", [0, 2])
def test_per_partition_order_across_many_sends_and_rolls(store: logstore.Store, linger_ms: int) -> None:
    store.create_topic("t", partitions=3, config={"segment_bytes": 1024, "index_interval_bytes": 128})
    producer = store.producer(linger_ms=linger_ms, batch_size=700)
    sent: list[tuple[Any, bytes]] = []
    results = []
    for i in range(3000):
        value = b"%05d:" % i + b"x" * (i % 97)
        key = b"key-%d" % (i % 13) if i % 5 else None
        results.append((producer.send("t", value, key=key), value))
    producer.flush()
    sent = [(r.get(5), v) for r, v in results]
    check_dense_and_ordered(store, "t", sent)
    assert all(len(store.partition_log(TopicPartition("t", p)).segments()) > 3 for p in range(3))


def test_order_with_explicit_partitions_and_headers(store: logstore.Store) -> None:
    store.create_topic("t", partitions=4)
    producer = store.producer()
    sent = []
    for i in range(400):
        value = b"v%d" % i
        m = producer.send("t", value, key=b"ignored", partition=i % 4, headers=[("i", b"%d" % i), ("n", None)],
                          timestamp_ms=10_000 + i)
        assert (m.partition, m.timestamp) == (i % 4, 10_000 + i)
        sent.append((m, value))
    check_dense_and_ordered(store, "t", sent)
    r = read_partition(store, "t", 3)[5]
    assert (r.key, r.value, r.headers, r.timestamp) == (b"ignored", b"v23", [("i", b"23"), ("n", None)], 10_023)


def test_record_metadata_and_tombstones(store: logstore.Store) -> None:
    store.create_topic("t")
    producer = store.producer()
    m = producer.send("t", None, key=b"k")
    assert (m.topic, m.partition, m.offset) == ("t", 0, 0)
    assert m.get() is m and m.get(timeout=1) is m and m.result() is m and m.done() and m.exception() is None
    assert m.topic_partition == TopicPartition("t", 0)
    assert abs(m.timestamp - time.time() * 1000) < 60_000
    assert read_partition(store, "t", 0)[0].value is None


def test_log_append_time_topic_stamps_the_append_time(store: logstore.Store) -> None:
    """With LogAppendTime the log stamps each batch; the metadata a send returns carries that
    same timestamp (many records, so that appends straddle millisecond boundaries)."""
    store.create_topic("t", config={"message.timestamp.type": "LogAppendTime"})
    for linger_ms in (0, 1):
        producer = store.producer(linger_ms=linger_ms, batch_size=1024)
        before = int(time.time() * 1000)
        results = [producer.send("t", b"v" * 100, timestamp_ms=5) for _ in range(2000)]
        producer.flush()
        metas = [r.get(5) for r in results]
        assert before - 1000 <= metas[0].timestamp <= int(time.time() * 1000) + 1000
        stored = {r.offset: r.timestamp for r in read_partition(store, "t", 0)}
        wrong = [(m.offset, m.timestamp, stored[m.offset]) for m in metas if stored[m.offset] != m.timestamp]
        assert not wrong, f"linger_ms={linger_ms}: {len(wrong)} timestamps differ from the log's, e.g. {wrong[:2]}"
        producer.close()


# -- partitioners -----------------------------------------------------------------------------------

KEYS = [b"", b"a", b"user-1", b"user-2", bytes(range(256)), b"\x00" * 17] + [b"k%d" % i for i in range(200)]


@pytest.mark.parametrize("partitions", [1, 2, 3, 7, 16])
def test_default_partitioner_is_xxh64_mod_n(store: logstore.Store, partitions: int) -> None:
    store.create_topic("t", partitions=partitions)
    for linger_ms in (0, 60_000):
        producer = store.producer(linger_ms=linger_ms)
        sent = [(key, producer.send("t", b"v", key=key)) for key in KEYS]
        producer.flush()
        for key, m in sent:
            assert m.get(5).partition == xxhash.xxh64_intdigest(key) % partitions, key
        producer.close()


class OneTopicCluster:
    """What kafka-python's DefaultPartitioner asks of its cluster metadata."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))


@pytest.mark.parametrize("partitions", [1, 3, 7, 16])
def test_murmur2_partitioner_matches_kafka(store: logstore.Store, partitions: int) -> None:
    store.create_topic("t", partitions=partitions)
    kafka_default = DefaultPartitioner()
    cluster = OneTopicCluster(partitions)
    for linger_ms in (0, 60_000):
        producer = store.producer(partitioner="murmur2", linger_ms=linger_ms)
        sent = [(key, producer.send("t", b"v", key=key)) for key in KEYS]
        producer.flush()
        for key, m in sent:
            expected = (murmur2(key) & 0x7FFFFFFF) % partitions
            assert kafka_default.partition("t", key, key, b"v", b"v", cluster) == expected
            assert m.get(5).partition == expected, key
        producer.close()


def test_bytes_like_keys_partition_like_bytes(store: logstore.Store) -> None:
    store.create_topic("t", partitions=7)
    producer = store.producer()
    for key in KEYS[:50]:
        expected = xxhash.xxh64_intdigest(key) % 7
        assert producer.send("t", b"v", key=bytearray(key)).partition == expected
        assert producer.send("t", b"v", key=memoryview(key)).partition == expected


CHILD_PARTITIONS = r"""
import json, sys, logstore
path, partitioner, keys = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with logstore.open(path, cleaner=False) as store:
    store.create_topic("t", partitions=7)
    producer = store.producer(partitioner=partitioner)
    print(json.dumps([producer.send("t", b"v", key=k.encode()).partition for k in keys]))
"""


@pytest.mark.parametrize("partitioner", ["default", "murmur2"])
def test_key_to_partition_is_stable_across_processes_and_reopen(tmp_path: Path, partitioner: str) -> None:
    keys = ["user-%d" % i for i in range(100)] + ["", "é", "a" * 1000]
    out = subprocess.run([sys.executable, "-c", CHILD_PARTITIONS, str(tmp_path / "child"), partitioner,
                          json.dumps(keys)], env=CHILD_ENV, capture_output=True, text=True, timeout=60, check=True)
    in_child = json.loads(out.stdout)
    with logstore.open(tmp_path / "parent", cleaner=False) as s:
        s.create_topic("t", partitions=7)
        here = [s.producer(partitioner=partitioner).send("t", b"v", key=k.encode()).partition for k in keys]
    with logstore.open(tmp_path / "parent", cleaner=False) as s:
        after_reopen = [s.producer(partitioner=partitioner).send("t", b"v", key=k.encode()).partition for k in keys]
    with logstore.open(tmp_path / "child", cleaner=False) as s:  # the child's store, reopened here
        child_reopened = [s.producer(partitioner=partitioner).send("t", b"v", key=k.encode()).partition for k in keys]
    assert in_child == here == after_reopen == child_reopened
    assert len(set(here)) == 7  # 103 keys do reach every partition


def runs(partitions: list[int]) -> list[tuple[int, int]]:
    """[(partition, run length)] of consecutive records on one partition."""
    out: list[tuple[int, int]] = []
    for p in partitions:
        if out and out[-1][0] == p:
            out[-1] = (p, out[-1][1] + 1)
        else:
            out.append((p, 1))
    return out


@pytest.mark.parametrize("linger_ms", [0, 1000])
def test_keyless_records_stick_to_a_partition_for_a_batch(store: logstore.Store, linger_ms: int) -> None:
    """Kafka's sticky partitioner: about batch_size bytes on one partition, then another."""
    store.create_topic("t", partitions=4)
    producer = store.producer(batch_size=1000, linger_ms=linger_ms)
    value = b"x" * 84  # ~100 bytes a record with overhead: ~10 records a run
    results = [producer.send("t", value) for _ in range(4000)]
    producer.flush()
    partitions = [r.get(5).partition for r in results]
    lengths = [n for _, n in runs(partitions)[:-1]]
    assert lengths and all(3 <= n <= 30 for n in lengths), Counter(lengths)
    counts = Counter(partitions)
    assert set(counts) == {0, 1, 2, 3}
    assert all(n >= 400 for n in counts.values()), counts  # spread: each partition ~1000 of 4000
    # sticky with records far larger than batch_size: every record moves on, but keeps spreading
    big = [producer.send("t", b"y" * 2000) for _ in range(400)]
    producer.flush()
    big_counts = Counter(r.get(5).partition for r in big)
    assert set(big_counts) == {0, 1, 2, 3} and max(big_counts.values()) <= 250, big_counts


def test_keyless_records_on_one_partition(store: logstore.Store) -> None:
    store.create_topic("t")
    producer = store.producer(batch_size=100)
    assert {producer.send("t", b"x" * 50).partition for _ in range(50)} == {0}


def test_explicit_partition_wins_over_key_and_partitioner(store: logstore.Store) -> None:
    store.create_topic("t", partitions=5)
    calls: list[Any] = []

    def never(key: bytes, all_partitions: list[int], available: list[int]) -> int:
        calls.append(key)
        return 0

    for producer in (store.producer(), store.producer(partitioner="murmur2"), store.producer(partitioner=never),
                     store.producer(linger_ms=5)):
        assert [producer.send("t", b"v", key=b"k", partition=p).get(5).partition for p in range(5)] == list(range(5))
        producer.close()
    assert calls == []


def test_custom_partitioner(store: logstore.Store) -> None:
    store.create_topic("t", partitions=6)
    seen: list[tuple[Any, list[int], list[int]]] = []

    def by_length(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        seen.append((key, list(all_partitions), list(available)))
        return (len(key) if key is not None else 0) % len(all_partitions)

    producer = store.producer(partitioner=by_length, key_serializer=str.encode)
    for key in ("", "a", "bb", "ccccccc", "dddddddddddd"):
        assert producer.send("t", b"v", key=key).partition == len(key) % 6
    assert producer.send("t", b"v").partition == 0
    assert seen[1] == (b"a", list(range(6)), list(range(6)))  # the serialized key
    assert seen[-1][0] is None
    bad_number = store.producer(partitioner=lambda k, a, b: 6)
    with pytest.raises(UnknownTopicError):
        bad_number.send("t", b"v", key=b"k")
    bad_type = store.producer(partitioner=lambda k, a, b: "0")
    with pytest.raises(InvalidArgumentError):
        bad_type.send("t", b"v", key=b"k")
    assert sum(store.end_offset(TopicPartition("t", p)) for p in range(6)) == 6


def test_serializers(store: logstore.Store) -> None:
    store.create_topic("t", partitions=3)
    producer = store.producer(key_serializer=lambda k: k.encode(), value_serializer=lambda v: json.dumps(v).encode())
    m = producer.send("t", {"n": 1}, key="user-1")
    assert m.partition == xxhash.xxh64_intdigest(b"user-1") % 3
    tomb = producer.send("t", None, key="user-1")  # None is not serialized: a tombstone stays one
    records = read_partition(store, "t", m.partition)
    assert (records[m.offset].key, records[m.offset].value) == (b"user-1", b'{"n": 1}')
    assert records[tomb.offset].value is None


# -- lingering batches ------------------------------------------------------------------------------

def test_linger_batches_flush_close_and_timeouts(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    producer = store.producer(linger_ms=60_000, batch_size=1 << 20)
    futures = [producer.send("t", b"v%d" % i, partition=i % 2) for i in range(10)]
    assert not any(f.done() for f in futures)
    assert store.end_offset(TopicPartition("t", 0)) == 0  # lingering, not appended
    with pytest.raises(LogstoreTimeoutError):
        futures[0].get(timeout=0.05)
    producer.flush()
    assert [f.get(0).offset for f in futures] == [i // 2 for i in range(10)]
    late = producer.send("t", b"late", partition=1)
    producer.close()  # close appends what lingers
    assert late.get(0).offset == 5
    with pytest.raises(LogClosedError):
        producer.send("t", b"after close")
    producer.close()  # idempotent


def test_linger_appends_after_linger_ms_or_a_full_batch(store: logstore.Store) -> None:
    store.create_topic("t")
    producer = store.producer(linger_ms=20)
    f = producer.send("t", b"v")
    assert f.get(timeout=10).offset == 0  # the linger thread appended it, no flush
    full = store.producer(linger_ms=60_000, batch_size=200)
    futures = [full.send("t", b"x" * 50) for _ in range(4)]  # the 4th fills the batch
    assert [g.get(timeout=10).offset for g in futures] == [1, 2, 3, 4]
    full.close()
    producer.close()


def test_linger_batches_carry_the_producer_fields(store: logstore.Store) -> None:
    store.create_topic("t")
    producer = store.producer(linger_ms=60_000)
    for n in (3, 5, 1, 4):
        for i in range(n):
            producer.send("t", b"v%d" % i)
        producer.flush()
    batches = store.partition_log(TopicPartition("t", 0)).read(0).batches()
    assert [b["record_count"] for b in batches] == [3, 5, 1, 4]
    assert {(b["producer_id"], b["producer_epoch"]) for b in batches} == {(producer.producer_id, 0)}
    assert [b["base_sequence"] for b in batches] == [0, 3, 8, 9]
    plain = store.producer(linger_ms=60_000, enable_idempotence=False)
    plain.send("t", b"v")
    plain.flush()
    last = store.partition_log(TopicPartition("t", 0)).read(13).batches()[-1]
    assert (last["producer_id"], last["base_sequence"]) == (-1, -1)


def test_single_sends_carry_the_producer_fields(store: logstore.Store) -> None:
    store.create_topic("t")
    producer = store.producer()
    for i in range(7):
        producer.send("t", b"v%d" % i)
    batches = store.partition_log(TopicPartition("t", 0)).read(0).batches()
    assert {b["producer_id"] for b in batches} == {producer.producer_id}
    assert batches[0]["base_sequence"] == 0
    assert sum(b["record_count"] for b in batches) == 7


# -- idempotence ------------------------------------------------------------------------------------

def test_retried_sends_are_dropped_and_answer_the_original_offsets(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    producer = store.producer()
    sent = [producer.send("t", b"v%d" % i, partition=1) for i in range(4)]
    plog = store.partition_log(TopicPartition("t", 1))
    end = plog.log_end_offset
    route = producer.routes["t"]
    assert route.next_sequence(1) == 4
    # the same producer sending sequences 0.. again, as a retry after a lost answer would
    retry_route = TopicRoute("t", list(route.logs), False)
    for i in range(4):
        again = producer.send_to(retry_route, 1, b"v%d" % i)
        assert (again.partition, again.offset) == (1, sent[i].offset)
    assert plog.log_end_offset == end
    assert [r.value for r in read_partition(store, "t", 1)] == [b"v0", b"v1", b"v2", b"v3"]
    # and the producer carries on where it was
    assert producer.send("t", b"v4", partition=1).offset == end


def test_retried_batch_is_dropped_and_answers_the_original_offset(store: logstore.Store) -> None:
    store.create_topic("t")
    producer = store.producer(linger_ms=60_000)
    for n in range(7):  # seven batches of 3
        for i in range(3):
            producer.send("t", b"b%d-%d" % (n, i))
        producer.flush()
    plog = store.partition_log(TopicPartition("t", 0))
    batches = plog.read(0).batches()
    end = plog.log_end_offset
    assert end == 21

    def retry(batch: dict[str, int]) -> int:
        n = batch["base_offset"] // 3
        first: int = plog.append_many([b"b%d-%d" % (n, i) for i in range(3)], producer_id=batch["producer_id"],
                                      producer_epoch=batch["producer_epoch"], base_sequence=batch["base_sequence"])
        return first

    for batch in batches[-5:]:  # Kafka's window: the producer's last 5 batches
        assert retry(batch) == batch["base_offset"]
    assert plog.log_end_offset == end
    with pytest.raises(OutOfOrderSequenceError):  # older than the window: neither a retry nor in order
        retry(batches[0])
    assert plog.log_end_offset == end
    assert len(read_partition(store, "t", 0)) == 21


def test_out_of_order_sequence_is_rejected_and_writes_nothing(store: logstore.Store) -> None:
    store.create_topic("t")
    producer = store.producer()
    producer.send("t", b"a")
    producer.send("t", b"b")
    plog = store.partition_log(TopicPartition("t", 0))
    store.flush()
    size = plog.size_bytes
    for base_sequence in (3, 7, 1000):  # a gap after sequence 1
        with pytest.raises(OutOfOrderSequenceError):
            plog.append_many([b"x", b"y"], producer_id=producer.producer_id, producer_epoch=0,
                             base_sequence=base_sequence)
    # the producer itself carries on (its counters only move when a record is appended)
    assert producer.send("t", b"z").offset == 2
    plog.truncate_to(2)
    assert plog.log_end_offset == 2 and plog.size_bytes == size
    assert [r.value for r in read_partition(store, "t", 0)] == [b"a", b"b"]


def test_an_older_epoch_is_fenced(store: logstore.Store) -> None:
    store.create_topic("t")
    plog = store.partition_log(TopicPartition("t", 0))
    plog.append_many([b"a"], producer_id=12345, producer_epoch=3, base_sequence=0)
    with pytest.raises(ProducerFencedError):
        plog.append_many([b"b"], producer_id=12345, producer_epoch=2, base_sequence=1)
    assert plog.append_many([b"c"], producer_id=12345, producer_epoch=4, base_sequence=0) == 1
    assert plog.log_end_offset == 2


def test_producer_ids_are_unique(store: logstore.Store) -> None:
    ids = [store.producer().producer_id for _ in range(50)]
    ids += [store.producer(linger_ms=5).producer_id for _ in range(5)]
    assert len(set(ids)) == len(ids) and min(ids) >= 0
    assert store.producer(enable_idempotence=False).producer_id == -1


def test_retry_recognised_after_reopen(data_dir: Path) -> None:
    """The partitions' producer state survives a close/reopen: a retry of the last batch is
    still answered with its original offset."""
    with logstore.open(data_dir, cleaner=False) as s:
        s.create_topic("t")
        producer = s.producer(linger_ms=60_000)
        for n in range(3):
            for i in range(4):
                producer.send("t", b"%d-%d" % (n, i))
            producer.flush()
        last = s.partition_log(TopicPartition("t", 0)).read(0).batches()[-1]
    with logstore.open(data_dir, cleaner=False) as s:
        plog = s.partition_log(TopicPartition("t", 0))
        first = plog.append_many([b"2-%d" % i for i in range(4)], producer_id=last["producer_id"],
                                 producer_epoch=last["producer_epoch"], base_sequence=last["base_sequence"])
        assert first == last["base_offset"] == 8
        assert plog.log_end_offset == 12
        with pytest.raises(OutOfOrderSequenceError):
            plog.append_many([b"gap"], producer_id=last["producer_id"], producer_epoch=last["producer_epoch"],
                             base_sequence=last["base_sequence"] + 10)


@pytest.mark.parametrize("change", ["alter_topic_config", "create_partitions", "flush_mode"])
@pytest.mark.parametrize("linger_ms", [0, 5])
def test_sends_after_a_metadata_change_are_appended(store: logstore.Store, change: str, linger_ms: int) -> None:
    """A topic change makes producers look the topic up again; their sequence numbers must carry
    on, or the next records look like retries of the first ones and are dropped."""
    store.create_topic("t", partitions=2)
    producer = store.producer(linger_ms=linger_ms)
    before = [producer.send("t", b"before-%d" % i, partition=0).get(5) for i in range(3)]
    if change == "alter_topic_config":
        store.alter_topic_config("t", {"retention_ms": 3_600_000})
    elif change == "create_partitions":
        store.create_partitions("t", 3)
    else:
        store.alter_topic_config("t", {"flush": "never"})
    after = [producer.send("t", b"after-%d" % i, partition=0).get(5) for i in range(3)]
    assert [m.offset for m in before + after] == list(range(6))
    assert [r.value for r in read_partition(store, "t", 0)] == [b"before-0", b"before-1", b"before-2",
                                                                b"after-0", b"after-1", b"after-2"]


# -- producers and threads --------------------------------------------------------------------------

def run_threads(count: int, target: Any) -> None:
    """Run ``target(i)`` in ``count`` threads; re-raise the first exception of any of them."""
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            target(i)
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def check_threaded_sends(store: logstore.Store, results: list[list[tuple[Any, bytes]]]) -> None:
    """Every send got its own offset, each thread's records are in its send order per partition,
    and the log holds exactly the records sent."""
    everything = [(m.partition, m.offset) for per_thread in results for m, _ in per_thread]
    assert len(set(everything)) == len(everything), "two sends answered with the same offset"
    for per_thread in results:
        for p in {m.partition for m, _ in per_thread}:
            offsets = [m.offset for m, _ in per_thread if m.partition == p]
            assert offsets == sorted(offsets)
    expected = {(m.partition, m.offset): v for per_thread in results for m, v in per_thread}
    log = {(p, r.offset): r.value for p in range(store.partitions_for("t")) for r in read_partition(store, "t", p)}
    assert log == expected


@pytest.mark.parametrize("shared", [False, True], ids=["own-producers", "shared-producer"])
@pytest.mark.parametrize("linger_ms", [0, 1])
def test_many_producer_threads(store: logstore.Store, shared: bool, linger_ms: int) -> None:
    store.create_topic("t", partitions=3, config={"segment_bytes": 64 * 1024})
    threads, per_thread = 4, 3000
    common = store.producer(linger_ms=linger_ms, batch_size=512)
    results: list[list[tuple[Any, bytes]]] = [[] for _ in range(threads)]
    # a reader contends for the logs' locks the whole time
    reader = store.consumer(auto_offset_reset="earliest")
    reader.assign(store.topic_partitions(["t"]))
    done = threading.Event()

    def read_loop() -> None:
        while not done.is_set():
            reader.poll(0.01)

    def send(t: int) -> None:
        producer = common if shared else store.producer(linger_ms=linger_ms, batch_size=512)
        pending = []
        for i in range(per_thread):
            value = b"%d-%d" % (t, i)
            key = b"k%d" % (i % 5) if i % 3 else None
            pending.append((producer.send("t", value, key=key), value))
        producer.flush()
        results[t] = [(f.get(10), v) for f, v in pending]

    read_thread = threading.Thread(target=read_loop)
    read_thread.start()
    try:
        run_threads(threads, send)
    finally:
        done.set()
        read_thread.join()
    check_threaded_sends(store, results)


def test_shared_producer_threads_waiting_on_a_busy_log_both_append(store: logstore.Store) -> None:
    """Two threads send through one producer while the log is busy (its lock held, as a reader
    or the flusher does): both records are appended, at different offsets. (A sequence number
    read before the wait and stored after it would give both the same one: the second record
    would be taken for a retry of the first and dropped.)"""
    store.create_topic("t")
    plog = store.partition_log(TopicPartition("t", 0))
    producer = store.producer()
    out: dict[str, Any] = {}

    def send(name: str) -> None:
        out[name] = producer.send("t", name.encode())

    threads = [threading.Thread(target=send, args=(name,)) for name in ("a", "b")]
    with plog._lock:
        for t in threads:
            t.start()
            time.sleep(0.1)  # each blocks on the log's lock
    for t in threads:
        t.join()
    assert sorted(m.offset for m in out.values()) == [0, 1]
    assert sorted(r.value for r in read_partition(store, "t", 0)) == [b"a", b"b"]


@pytest.mark.parametrize("idempotent", [True, False])
def test_linger_keeps_send_order_when_the_log_is_busy(store: logstore.Store, idempotent: bool) -> None:
    """The linger thread takes a due batch and waits for the busy log; meanwhile the sender fills
    the next batch of the same partition and appends it itself. The older batch must still go
    first (and, idempotent, not fail with a sequence error)."""
    store.create_topic("t")
    plog = store.partition_log(TopicPartition("t", 0))
    producer = store.producer(linger_ms=10, batch_size=100, enable_idempotence=idempotent)
    held, release = threading.Event(), threading.Event()

    def hold_the_log() -> None:
        with plog._lock:
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold_the_log)
    holder.start()
    held.wait(5)
    first = producer.send("t", b"first")
    time.sleep(0.2)  # the linger thread has taken "first" and waits for the log
    threading.Timer(0.1, release.set).start()
    later = [producer.send("t", b"x" * 40) for _ in range(3)]  # a full batch: the sender appends it
    holder.join()
    assert first.exception(5) is None
    assert [f.get(5).offset for f in [first, *later]] == [0, 1, 2, 3]
    assert [r.value for r in read_partition(store, "t", 0)] == [b"first"] + [b"x" * 40] * 3


def test_keyless_records_reach_partitions_added_later(store: logstore.Store) -> None:
    store.create_topic("t")
    producer = store.producer(batch_size=200)
    assert {producer.send("t", b"x" * 40).partition for _ in range(20)} == {0}
    store.create_partitions("t", 4)
    counts = Counter(producer.send("t", b"x" * 40).partition for _ in range(2000))
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) >= 200, counts


def test_damaged_producer_id_file_never_reuses_an_id(data_dir: Path) -> None:
    with logstore.open(data_dir, cleaner=False) as s:
        before = [s.producer().producer_id for _ in range(3)]
    (data_dir / "meta" / "producer_ids").write_bytes(b"\x00garbage")
    with logstore.open(data_dir, cleaner=False) as s:
        after = s.producer().producer_id
    assert after > max(before)


def test_lingering_batch_survives_a_flush_mode_change(store: logstore.Store) -> None:
    """A batch waiting in a producer when its topic's logs are reopened is appended to the new log."""
    store.create_topic("t", partitions=2)
    producer = store.producer(linger_ms=60_000)
    waiting = [producer.send("t", b"w%d" % i, partition=i % 2) for i in range(6)]
    store.alter_topic_config("t", {"flush": "always"})
    producer.flush()
    landed = sorted((f.get(5).partition, f.get(5).offset) for f in waiting)
    assert landed == [(p, o) for p in range(2) for o in range(3)]
    assert [r.value for r in read_partition(store, "t", 1)] == [b"w1", b"w3", b"w5"]


def test_both_send_paths_agree_on_odd_input(store: logstore.Store) -> None:
    """The native send (linger_ms=0) and the Python one (linger, serializers, custom
    partitioners) accept and refuse the same things, with the same error classes."""
    store.create_topic("t")
    native, lingering = store.producer(), store.producer(linger_ms=60_000)
    for producer in (native, lingering):
        with pytest.raises(InvalidArgumentError):
            producer.send(123, b"v")  # type: ignore[arg-type]
    outcomes = []
    for producer in (native, lingering):
        try:
            result = producer.send("t", b"v", headers=[(b"bytes-key", b"x")])
            producer.flush()
            outcomes.append(("ok", read_partition(store, "t", 0)[result.get(5).offset].headers))
        except InvalidArgumentError as e:
            outcomes.append(("refused", type(e).__name__))
    assert outcomes[0] == outcomes[1], f"native: {outcomes[0]}, lingering: {outcomes[1]}"
