"""Benchmarks of the transactional outbox (``logstore.outbox``, issue 5).

1. **Relay throughput, SQLite -> topic**: a round publishes ``ROWS`` outbox rows (standard workload
   values, 100 bytes; keys ``key-%012d`` of 1000 distinct keys, 20 rows each) that were added and
   committed before the round (untimed): ``relay.run_until_idle()`` with batched claims of
   ``BATCH`` rows: claim (one ``UPDATE ... RETURNING``), the batch's publish through the topic's
   message-id index (``publish_many``), ``flush_buffer`` of the touched partitions, the marks
   (``UPDATE ... FROM (VALUES ...)``), committed with the next batch's claim. Cases: per-key order
   (the default) and ``ordering="none"``; 1 partition and 8. SQLite in WAL mode with
   ``synchronous=NORMAL`` (commits do not fsync; the WAL is fsynced at checkpoints), the store with
   its defaults. Target (issue 5): >= 50 k rows/s with batched claims. After the timed rounds, the
   last round is checked: every row ``published`` at a position that holds its message.
2. **End-to-end latency, add -> consumer**: the writer adds one row and commits, then wakes the
   relay (``relay.wake()``, a background thread); the clock stops when the writer's ``consumer.poll``
   returns the record. ``SAMPLES`` messages, one at a time; p50/p99/max. Target: p99 <= 10 ms.
3. The same two on PostgreSQL (psycopg 3; the relay woken by LISTEN/NOTIFY at commit, no
   ``wake()``), when ``LOGSTORE_TEST_POSTGRES_DSN`` points at a server (``.ci/run`` starts one);
   skipped with the reason otherwise. Not held to targets: loopback round trips dominate.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import logstore
from logstore import Store, outbox

from .conftest import Reporter, Sizes
from .report import Row
from .workload import Workload

pytestmark = pytest.mark.benchmark(group="outbox")

TOPIC = "outbox-bench"
KEYS = 1000
BATCH = 1000
TARGET_ROWS_PER_S = 50_000
TARGET_P99_US = 10_000.0


def rows_per_round(sizes: Sizes) -> int:
    return 2_000 if sizes.quick else 20_000


def rounds(sizes: Sizes) -> dict[str, int]:
    return {"rounds": 1, "warmup_rounds": 0} if sizes.quick else {"rounds": 8, "warmup_rounds": 1}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    path = tmp_path / "store"
    s = logstore.open(path)
    yield s
    s.close()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def workload(sizes: Sizes) -> Workload:
    return Workload(rows_per_round(sizes))


def sqlite_connect(path: Path) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn
    return connect


def postgres_connect() -> Callable[[], Any]:
    dsn = os.environ.get("LOGSTORE_TEST_POSTGRES_DSN", "").strip()
    if not dsn:
        pytest.skip("LOGSTORE_TEST_POSTGRES_DSN is not set (.ci/run starts a server and sets it)")
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.Error as e:
        pytest.skip(f"cannot connect to {dsn}: {e}")
    return lambda: psycopg.connect(dsn)


def fill(conn: Any, table: str, wl: Workload, n: int) -> list[str]:
    """Add ``n`` rows in one transaction (untimed): workload values, KEYS distinct keys."""
    db = outbox.adapt(conn)
    db.execute(f"DELETE FROM {table}")
    ids = [outbox.add(db, TOPIC, wl.values[i], wl.keys[i % KEYS], table=table) for i in range(n)]
    db.commit()
    return ids


def check_published(store: Store, conn: Any, table: str, ids: list[str]) -> None:
    """Every row of the last round published, at a position holding its message."""
    rows = {r.message_id: r for r in outbox.rows(conn, table=table, limit=len(ids) + 1)}
    assert len(rows) == len(ids) and {r.status for r in rows.values()} == {"published"}
    for message_id in ids[:: max(1, len(ids) // 200)]:  # a sample: one read per row is slow
        row = rows[message_id]
        assert row.partition is not None and row.offset is not None
        (record,) = store.partition_log((TOPIC, row.partition)).read(row.offset, 1 << 16, row.offset + 1)
        assert dict(record.headers)[outbox.MESSAGE_ID_HEADER] == message_id.encode()
        assert record.value == row.value


def run_throughput(benchmark: Any, report: Reporter, sizes: Sizes, store: Store, workload: Workload,
                   connect: Callable[[], Any], *, name: str, table: str = "outbox", partitions: int = 1,
                   target: float | None = None, **relay_config: Any) -> None:
    store.create_topic(TOPIC, partitions)
    app = connect()
    outbox.install(app, table=table)
    relay = outbox.Relay(store, connect=connect, table=table, batch_size=BATCH, **relay_config)
    n = rows_per_round(sizes)
    last_ids: list[str] = []
    published: list[int] = []

    def setup() -> None:
        last_ids[:] = fill(app, table, workload, n)

    cpu: list[float] = []

    def run() -> None:
        start = time.process_time()
        published.append(relay.run_until_idle())
        cpu.append(time.process_time() - start)

    benchmark.pedantic(run, setup=setup, **rounds(sizes))
    assert published and all(p == n for p in published), published
    check_published(store, app, table, last_ids)
    relay.close()
    app.close()
    note = f"batch {BATCH}, {KEYS} keys, {partitions} partition(s)"
    report.rate(name, n, nbytes=n * (len(workload.values[0]) + len(workload.keys[0])),
                target_mrps=None if target is None else target / 1e6, note=note)
    if benchmark.stats is not None:
        # the machine is shared: the same rounds per second of this process's CPU time (relay, SQLite
        # and the log in one thread, so this is what one free core would do)
        per_cpu = sorted(n / c / 1e6 for c in cpu)
        benchmark.extra_info["records_per_cpu_s"] = statistics.median(per_cpu) * 1e6
        report.add(Row(f"{name} [per CPU second]", statistics.median(per_cpu), per_cpu[-1], "M rec/s", None, True,
                       note))


def test_relay_throughput_sqlite_keyed(benchmark: Any, report: Reporter, sizes: Sizes, store: Store,
                                       workload: Workload, tmp_path: Path) -> None:
    """The issue's target: per-key order (the default), 1 partition."""
    run_throughput(benchmark, report, sizes, store, workload, sqlite_connect(tmp_path / "app.db"),
                   name="outbox relay SQLite -> topic, per-key order", target=TARGET_ROWS_PER_S)


def test_relay_throughput_sqlite_keyed_8_partitions(benchmark: Any, report: Reporter, sizes: Sizes, store: Store,
                                                    workload: Workload, tmp_path: Path) -> None:
    run_throughput(benchmark, report, sizes, store, workload, sqlite_connect(tmp_path / "app.db"),
                   name="outbox relay SQLite -> topic, per-key order, 8 partitions", partitions=8)


def test_relay_throughput_sqlite_unordered(benchmark: Any, report: Reporter, sizes: Sizes, store: Store,
                                           workload: Workload, tmp_path: Path) -> None:
    run_throughput(benchmark, report, sizes, store, workload, sqlite_connect(tmp_path / "app.db"),
                   name='outbox relay SQLite -> topic, ordering="none"', ordering="none")


def test_relay_throughput_postgres_keyed(benchmark: Any, report: Reporter, sizes: Sizes, store: Store,
                                         workload: Workload) -> None:
    connect = postgres_connect()
    table = f"outbox_bench_{uuid.uuid4().hex[:8]}"
    try:
        run_throughput(benchmark, report, sizes, store, workload, connect, table=table,
                       name="outbox relay PostgreSQL -> topic, per-key order")
    finally:
        drop(connect, table)


def drop(connect: Callable[[], Any], table: str) -> None:
    conn = connect()
    conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_inbox CASCADE")
    conn.execute(f"DROP FUNCTION IF EXISTS {table}_notify()")
    conn.commit()
    conn.close()


# -- end-to-end latency ---------------------------------------------------------------------------


def run_latency(benchmark: Any, report: Reporter, sizes: Sizes, store: Store, connect: Callable[[], Any], *,
                name: str, table: str = "outbox", wake: bool = True, target_us: float | None = None) -> None:
    store.create_topic(TOPIC, 1)
    app = connect()
    outbox.install(app, table=table)
    consumer = store.consumer(TOPIC, auto_offset_reset="latest")
    consumer.poll(timeout=0)  # assigned, at the end
    relay = outbox.Relay(store, connect=connect, table=table, poll_interval=0.2).start()
    samples = 20 if sizes.quick else 1000
    latencies: list[float] = []
    value = b"x" * 100

    def run() -> None:
        latencies.clear()
        for i in range(samples):
            start = time.perf_counter()
            outbox.add(app, TOPIC, value, b"key-%d" % (i % 10), table=table)
            app.commit()
            if wake:
                relay.wake()
            got: list[Any] = []
            while not got:
                got = consumer.poll(timeout=5.0)
                assert got or time.perf_counter() - start < 5.0, "no record within 5 s"
            latencies.append(time.perf_counter() - start)
            assert len(got) == 1 and got[0].value == value

    try:
        benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    finally:
        relay.close()
        consumer.close()
        app.close()
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1e6
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6
    benchmark.extra_info.update(samples=samples, p50_us=p50, p99_us=p99, max_us=ordered[-1] * 1e6,
                                mean_us=statistics.fmean(ordered) * 1e6)
    if benchmark.stats is not None:  # --benchmark-disable: not a measurement
        row = Row(f"{name} (p50 {p50:.0f} us, max {ordered[-1] * 1e6:.0f} us, {samples} messages)", p99, ordered[0]
                  * 1e6, "us", target_us, False, "p99; best = fastest message")
        report.add(row)


def test_latency_sqlite_add_to_consumer(benchmark: Any, report: Reporter, sizes: Sizes, store: Store,
                                        tmp_path: Path) -> None:
    """add + commit + relay.wake() -> consumer.poll returns the record (p99)."""
    run_latency(benchmark, report, sizes, store, sqlite_connect(tmp_path / "app.db"),
                name="outbox end-to-end p99, SQLite, relay woken on commit", target_us=TARGET_P99_US)


def test_latency_postgres_listen_notify(benchmark: Any, report: Reporter, sizes: Sizes, store: Store) -> None:
    """add + commit -> the trigger's NOTIFY wakes the relay -> consumer.poll returns the record."""
    connect = postgres_connect()
    table = f"outbox_bench_{uuid.uuid4().hex[:8]}"
    try:
        run_latency(benchmark, report, sizes, store, connect, table=table, wake=False,
                    name="outbox end-to-end p99, PostgreSQL, LISTEN/NOTIFY")
    finally:
        drop(connect, table)
