"""Benchmarks of the broker's consumer (``store.consumer().poll``), and the produce -> consume
latency (benchmarks/latency.py) as pytest-benchmark cases.

Poll throughput: a store opened with its defaults holds two topics of the same
``sizes.read_records`` standard records (16-byte keys, 100-byte values), one of 1 partition and
one of 8, written by ``producer.send`` one record per call (so the batches are what a producer
makes: ~16 KiB each), and hot in the page cache. A round seeks to the beginning (untimed) and
polls with ``timeout=0`` until every record was returned: records/s counts records returned by
``poll``. ``max_records`` 500 (the default ``max_poll_records``) and 10 000; "fields" cases also
read every record's ``.key`` and ``.value``. After the rounds, one more pass reads the topic and
checks every record (offsets dense and in order per partition, key and value byte for byte,
no poll above ``max_records``). The empty-poll case times ``poll(timeout=0)`` on a consumer
that is caught up. Targets (issue 3): poll >= 5 M records/s; latency p99 <= 100 us.
"""

from __future__ import annotations

import gc
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import logstore
from logstore import Consumer, Store, TopicPartition

from .conftest import Reporter, Sizes
from .latency import MODES, TARGET_P99_US, measure
from .report import Row
from .workload import Workload

WARMUP_ROUNDS = 2
TARGET_MRPS = 5.0  # issue 3: consumer poll throughput
PARTITION_COUNTS = (1, 8)
EMPTY_POLLS = 10_000  # per round


@dataclass
class Topic:
    name: str
    partitions: int
    records: int
    expected: dict[int, list[int]]  # partition -> workload index of the record at each offset


@dataclass
class ConsumerData:
    store: Store
    wl: Workload
    topics: dict[int, Topic]  # by partition count


@pytest.fixture(scope="module")
def consumer_data(sizes: Sizes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsumerData]:
    """A store with a 1- and an 8-partition topic of the same keyed records (producer.send)."""
    path = tmp_path_factory.mktemp("consumer") / "store"
    wl = Workload(sizes.read_records, seed=4)
    store = logstore.open(path)
    try:
        topics = {}
        with store.producer() as producer:
            for partitions in PARTITION_COUNTS:
                name = f"read-{partitions}"
                store.create_topic(name, partitions)
                expected: dict[int, list[int]] = {p: [] for p in range(partitions)}
                for i, (value, key) in enumerate(zip(wl.values, wl.keys)):
                    meta = producer.send(name, value, key)
                    assert meta.offset == len(expected[meta.partition])
                    expected[meta.partition].append(i)
                topics[partitions] = Topic(name, partitions, wl.n, expected)
        yield ConsumerData(store, wl, topics)
    finally:
        store.close()
        shutil.rmtree(path, ignore_errors=True)


def timing(sizes: Sizes) -> dict[str, int]:
    if sizes.quick:
        return {"rounds": 1, "warmup_rounds": 0}
    return {"rounds": sizes.read_rounds, "warmup_rounds": WARMUP_ROUNDS}


def assigned(data: ConsumerData, topic: Topic, **config: Any) -> Consumer:
    consumer = data.store.consumer(auto_offset_reset="earliest", **config)
    consumer.assign([TopicPartition(topic.name, p) for p in range(topic.partitions)])
    return consumer


def check_all(data: ConsumerData, topic: Topic, limit: int) -> None:
    """A fresh consumer polls the whole topic with ``limit``: every record, in offset order per
    partition, key and value as sent; no poll returns more than ``limit``."""
    wl = data.wl
    with assigned(data, topic) as consumer:
        next_offset = dict.fromkeys(range(topic.partitions), 0)
        seen = 0
        while True:
            records = consumer.poll(0.0, limit)
            if not records:
                break
            assert len(records) <= limit
            for r in records:
                assert r.topic == topic.name
                assert r.offset == next_offset[r.partition], (r.partition, r.offset)
                next_offset[r.partition] += 1
                i = topic.expected[r.partition][r.offset]
                assert (r.key, r.value) == (wl.keys[i], wl.values[i])
            seen += len(records)
    assert seen == topic.records
    assert next_offset == {p: len(idx) for p, idx in topic.expected.items()}


# -- poll throughput ------------------------------------------------------------------------------

@pytest.mark.benchmark(group="consumer")
@pytest.mark.parametrize("partitions", PARTITION_COUNTS)
@pytest.mark.parametrize("max_records", [500, 10_000])
def test_poll(benchmark: Any, report: Reporter, sizes: Sizes, consumer_data: ConsumerData, partitions: int,
              max_records: int) -> None:
    """poll(timeout=0, max_records) until the whole topic was returned; records not touched."""
    topic = consumer_data.topics[partitions]
    consumer = assigned(consumer_data, topic, max_poll_records=max_records)

    def run() -> int:
        poll = consumer.poll
        n = 0
        records = poll(0.0)
        while records:
            n += len(records)
            records = poll(0.0)
        return n

    counts: list[int] = []
    benchmark.pedantic(lambda: counts.append(run()), setup=consumer.seek_to_beginning, **timing(sizes))
    consumer.close()
    assert counts and all(n == topic.records for n in counts), counts
    check_all(consumer_data, topic, max_records)
    report.rate(f"consumer.poll, {partitions} partition{'s' if partitions > 1 else ''}, max_records={max_records}",
                topic.records, target_mrps=TARGET_MRPS)


@pytest.mark.benchmark(group="consumer")
def test_poll_gc_disabled(benchmark: Any, report: Reporter, sizes: Sizes, consumer_data: ConsumerData) -> None:
    """Diagnostic: test_poll with 1 partition and max_records=10000, with Python's cyclic GC off
    during each round. Each poll allocates ~8000 GC-tracked Record objects that stay alive while
    the list is built, so the allocations trigger collections that walk them; this shows what
    that costs (README, "Broker")."""
    topic = consumer_data.topics[1]
    consumer = assigned(consumer_data, topic, max_poll_records=10_000)

    def run() -> int:
        poll = consumer.poll
        n = 0
        gc.disable()
        try:
            records = poll(0.0)
            while records:
                n += len(records)
                records = poll(0.0)
        finally:
            gc.enable()
        return n

    counts: list[int] = []
    benchmark.pedantic(lambda: counts.append(run()), setup=consumer.seek_to_beginning, **timing(sizes))
    consumer.close()
    assert counts and all(n == topic.records for n in counts), counts
    report.rate("consumer.poll, 1 partition, max_records=10000, gc disabled during the round", topic.records,
                note="diagnostic: cost of the cyclic GC")


@pytest.mark.benchmark(group="consumer")
@pytest.mark.parametrize("partitions", PARTITION_COUNTS)
def test_poll_fields(benchmark: Any, report: Reporter, sizes: Sizes, consumer_data: ConsumerData,
                     partitions: int) -> None:
    """As test_poll with max_records=500, and every record's .key and .value read."""
    topic = consumer_data.topics[partitions]
    consumer = assigned(consumer_data, topic)

    def run() -> int:
        poll = consumer.poll
        n = 0
        records = poll(0.0)
        while records:
            for record in records:
                record.key
                record.value
            n += len(records)
            records = poll(0.0)
        return n

    counts: list[int] = []
    benchmark.pedantic(lambda: counts.append(run()), setup=consumer.seek_to_beginning, **timing(sizes))
    consumer.close()
    assert counts and all(n == topic.records for n in counts), counts
    check_all(consumer_data, topic, 500)
    report.rate(f"consumer.poll + .key/.value of every record, {partitions} partition{'s' if partitions > 1 else ''}, "
                "max_records=500", topic.records)


@pytest.mark.benchmark(group="consumer: empty poll")
@pytest.mark.parametrize("partitions", PARTITION_COUNTS)
def test_poll_caught_up(benchmark: Any, report: Reporter, sizes: Sizes, consumer_data: ConsumerData,
                        partitions: int) -> None:
    """poll(timeout=0) on a consumer at the end of every partition: the cost of finding nothing."""
    topic = consumer_data.topics[partitions]
    consumer = assigned(consumer_data, topic)
    consumer.seek_to_end()
    calls = 500 if sizes.quick else EMPTY_POLLS
    returned: list[int] = []

    def run() -> None:
        poll = consumer.poll
        n = 0
        for _ in range(calls):
            n += len(poll(0.0))
        returned.append(n)

    benchmark.pedantic(run, **timing(sizes))
    assert returned and not any(returned)
    ends = {p: consumer.position(TopicPartition(topic.name, p)) for p in range(topic.partitions)}
    assert ends == {p: len(idx) for p, idx in topic.expected.items()}
    consumer.close()
    report.latency(f"consumer.poll(timeout=0) caught up, {partitions} partition{'s' if partitions > 1 else ''}",
                   calls)


# -- produce -> consume latency (latency.py) -------------------------------------------------------

LATENCY_RATE = 10_000.0
LATENCY_SAMPLES = 20_000


@pytest.mark.benchmark(group="latency")
@pytest.mark.parametrize("mode", MODES)
def test_produce_consume_latency(benchmark: Any, report: Reporter, sizes: Sizes, tmp_path: Path, mode: str) -> None:
    """latency.py's cell ``mode`` at 10 000 records/s, 20 000 samples (quick: 200 at 5 000/s).
    pytest-benchmark's own time is the whole cell; the percentiles are in extra_info and in the
    results table (p99 against the target for the blocking consumer)."""
    rate, samples, warmup = (5_000.0, 200, 20) if sizes.quick else (LATENCY_RATE, LATENCY_SAMPLES, 1000)
    results = []
    benchmark.pedantic(lambda: results.append(measure(mode, rate, samples, warmup, str(tmp_path))),
                       rounds=1, iterations=1)
    res = results[-1]
    assert res.samples == samples and 0 < res.p50_us <= res.p99_us <= res.max_us
    benchmark.extra_info.update(res.to_json())
    if benchmark.stats is None:  # --benchmark-disable: a smoke run, no row
        return
    note = (f"p50 {res.p50_us:.1f} us, p99.9 {res.p999_us:.0f} us, max {res.max_us:,.0f} us; "
            f"{res.achieved_rate:,.0f} records/s sent, {samples:,} samples")
    report.add(Row(f"produce -> consume latency p99, {mode} consumer", res.p99_us, res.p99_us, "us",
                   TARGET_P99_US if mode == "blocking" else None, False, note))
