"""Benchmarks of ``logstore.dlq.RetryingProcessor``: what the retry machinery costs per record.

A store holds one topic of 4 partitions with ``N`` records (16-byte keys over 1000 distinct
keys, 100-byte values; 100 000 records, 5 000 with --benchmark-disable). A round makes a new
consumer at the beginning and a new processor (untimed; the derived topics of the previous round
are deleted first) and runs ``run_once(0)`` until every record is finished; records/s counts
source records. Cases:

- ``plain poll loop``: the floor, a consumer ``poll`` loop calling the same handler per record.
- ``blocking, no failures`` / ``retry-topic, no failures``: the processor's per-record overhead.
- ``retry-topic, 1 % fail once``: 1 % of the records fail on their first attempt (zero backoff), so
  they go through the retry topic, and the later records of their keys are parked behind them.

Each round checks that every record was handled exactly as often as it should be. No targets:
these are numbers to compare, reported in the summary table.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import logstore
from logstore import Store
from logstore.dlq import RetryingProcessor, RetryPolicy

from .conftest import Reporter, Sizes

PARTITIONS = 4
KEYS = 1000
FAIL_EVERY = 100  # 1 % of the records fail once


@pytest.fixture(scope="module")
def dlq_store(sizes: Sizes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, int]]:
    records = 5_000 if sizes.quick else 100_000
    store = logstore.open(Path(tmp_path_factory.mktemp("dlq")) / "store", cleaner=False)
    store.create_topic("orders", PARTITIONS, {"flush": "never"})
    with store.producer() as producer:
        for i in range(records):
            producer.send("orders", value=b"%012d" % i + b"v" * 88, key=b"key-%012d" % (i % KEYS))
    yield store, records
    store.close()


def _reset(store: Store) -> None:
    for name in ("orders.dlq", "orders.retry", "orders.retry.checkpoint"):
        if name in store.list_topics():
            store.delete_topic(name)


class _Counter:
    def __init__(self, fail_first_of_every: int | None = None) -> None:
        self.fail_every = fail_first_of_every
        self.calls = 0
        self.failed: set[bytes] = set()

    def __call__(self, record: Any) -> None:
        self.calls += 1
        if self.fail_every is not None:
            value = record.value
            if int(value[:12]) % self.fail_every == 0 and value not in self.failed:
                self.failed.add(value)
                raise RuntimeError("first attempt fails")


def test_plain_poll_loop(benchmark: Any, report: Reporter, dlq_store: tuple[Store, int]) -> None:
    store, records = dlq_store
    state: dict[str, Any] = {}

    def setup() -> None:
        state["consumer"] = store.consumer("orders", auto_offset_reset="earliest")
        state["handler"] = _Counter()

    def run() -> None:
        consumer, handler = state["consumer"], state["handler"]
        while handler.calls < records:
            for record in consumer.poll(0):
                handler(record)

    benchmark.pedantic(run, setup=setup, rounds=5, iterations=1)
    assert state["handler"].calls == records
    report.rate("dlq: plain poll loop (floor)", records)


@pytest.mark.parametrize("mode, fail_every", [("blocking", None), ("retry-topic", None),
                                              ("retry-topic", FAIL_EVERY)])
def test_processor(benchmark: Any, report: Reporter, dlq_store: tuple[Store, int], mode: str,
                   fail_every: int | None) -> None:
    store, records = dlq_store
    state: dict[str, Any] = {}

    def setup() -> None:
        if "proc" in state:
            state["proc"].close()
        _reset(store)
        consumer = store.consumer("orders", auto_offset_reset="earliest")
        state["handler"] = handler = _Counter(fail_every)
        state["proc"] = RetryingProcessor(store, consumer, handler, mode=mode,
                                          policy=RetryPolicy(max_attempts=3, backoff_ms=0))

    def run() -> None:
        proc = state["proc"]
        while sum(proc.committable().values()) < records or any(proc.pending().values()):
            proc.run_once(0)

    benchmark.pedantic(run, setup=setup, rounds=5, iterations=1)
    proc, handler = state["proc"], state["handler"]
    failed = len(handler.failed)
    assert handler.calls == records + failed
    assert proc.stats.dead_lettered == 0 and proc.stats.retried == failed
    proc.close()
    what = "no failures" if fail_every is None else "1 % fail once"
    note = "" if fail_every is None else f"{failed} retried, {proc.stats.parked} parked"
    report.rate(f"dlq: processor {mode}, {what}", records, note=note)
