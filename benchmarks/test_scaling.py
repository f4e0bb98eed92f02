"""Scaling of the partition log: append throughput vs partition count, and append/read throughput
vs record size. Not held to targets: each case is a row of the scaling table (conftest.py prints
it after the targets table; report.py merges sessions).

- partitions (1, 8, 64): one PartitionLog per partition, all in this process and thread; each round
  makes the same number of ``append_many`` calls of 1000 standard records (16-byte key, 100-byte
  value), call ``j`` going to partition ``j % P`` (round robin). Same records per round for every P.
- value size (10 B, 100 B, 1 KiB, 64 KiB; 16-byte keys): ``append_many`` of 1000 records per call
  into one log; and a sequential read of a log of the same records with ``read(offset)`` (1 MiB
  views), touching every record's ``.value``. A 64 KiB batch of 1000 records is larger than
  ``max_record_bytes`` (1 MiB), so ``append_many`` stores it as ~67 batches of 15 records.

Rounds are roughly equal in bytes rather than in records (more records for small values), so
the rows report records/s, payload MB/s (key + value bytes handed over) and log MB/s (bytes the
log grew by, framing included); page cache and flush="never" durability.

Write rounds start from emptied logs (``truncate_to(0)``, untimed, before every round), like the
targets suite's diagnostic 1b: on this kind of VM a growing file's new page-cache pages cost a
host fault each (see README, "Reading the numbers"), which caps every write case at the same
few hundred MB/s and hides what the cases differ in. LOGSTORE_BENCH_SCALING_GROW=1 appends to
growing logs instead (steady state, as benchmark 1), to measure that too.
"""

from __future__ import annotations

import pytest

from logstore import PartitionLog

from .conftest import env_flag
from .workload import BATCH, Workload

WARMUP_ROUNDS = 2
GROW = env_flag("LOGSTORE_BENCH_SCALING_GROW")
PARTITIONS = (1, 8, 64)
VALUE_SIZES = (10, 100, 1024, 64 * 1024)


def size_label(n: int) -> str:
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def rounds(sizes, full: int) -> dict:
    return {"rounds": 1, "warmup_rounds": 0} if sizes.quick else {"rounds": full, "warmup_rounds": WARMUP_ROUNDS}


def write_mode() -> str:
    return "growing log" if GROW else "log emptied before each round"


def emptied(logs: list) -> dict:
    """pedantic() arguments: ``setup`` empties every log before each round unless GROW."""
    if GROW:
        return {}

    def setup():
        for log in logs:
            log.truncate_to(0)

    return {"setup": setup}




# -- partitions -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def partition_workload(sizes) -> Workload:
    # 256 calls of 1000 per round (4 per partition at 64); quick: 64 calls, one per partition at 64
    return Workload((64 if sizes.quick else 256) * BATCH, seed=21)


@pytest.mark.parametrize("partitions", PARTITIONS, ids=lambda p: f"{p}p")
def test_append_vs_partitions(benchmark, scaling_report, sizes, partition_workload, tmp_path, partitions):
    benchmark.group = "scaling: append_many vs partition count"
    wl = partition_workload
    logs = [PartitionLog.open(tmp_path / f"p{p}", flush="never") for p in range(partitions)]
    try:
        calls = [(logs[j % partitions].append_many, values, keys) for j, (values, keys) in enumerate(wl.batches)]

        def run():
            for append_many, values, keys in calls:
                append_many(values, keys)

        opts = rounds(sizes, 20)
        benchmark.pedantic(run, **opts, **emptied(logs))
        done = opts["rounds"] + opts["warmup_rounds"] if GROW else 1
        # every partition got its share of every round, in order; the last round's last batch of
        # each partition is there byte for byte
        per_round = [0] * partitions
        last: list = [None] * partitions
        for j, (values, keys) in enumerate(wl.batches):
            per_round[j % partitions] += len(values)
            last[j % partitions] = (values, keys)
        for p, log in enumerate(logs):
            assert log.log_end_offset == done * per_round[p]
            values, keys = last[p]
            first = log.log_end_offset - len(values)
            got = []
            offset = first
            while offset < log.log_end_offset:
                view = log.read(offset)
                got.extend((r.key, r.value) for r in view if r.offset >= first)
                offset = view.next_offset
            assert got == list(zip(keys, values))
        log_bytes = sum(log.size_bytes for log in logs) // done
    finally:
        for log in logs:
            log.close()
    case = f"{partitions} partition{'s' if partitions > 1 else ''}"
    scaling_report(f"append_many vs partitions ({write_mode()})", case, records=wl.n,
                   payload_bytes=wl.payload_bytes, log_bytes=log_bytes)


# -- record size ----------------------------------------------------------------------------------

def records_for(value_bytes: int, quick: bool) -> int:
    """Records per round: ~5-64 MB of payload, at least one call of 1000."""
    if quick:
        return 200 if value_bytes > 4096 else 2000
    return {10: 200_000, 100: 100_000, 1024: 20_000}.get(value_bytes, 1000)


@pytest.fixture(scope="module")
def size_workloads(sizes) -> dict:
    return {v: Workload(records_for(v, sizes.quick), seed=30 + i, value_bytes=v) for i, v in enumerate(VALUE_SIZES)}


@pytest.mark.parametrize("value_bytes", VALUE_SIZES, ids=size_label)
def test_append_vs_value_size(benchmark, scaling_report, sizes, size_workloads, fresh_log, value_bytes):
    benchmark.group = "scaling: append_many vs value size"
    wl = size_workloads[value_bytes]
    log = fresh_log(flush="never")

    def run():
        append_many = log.append_many
        for values, keys in wl.batches:
            append_many(values, keys)

    opts = rounds(sizes, 10 if value_bytes > 4096 else 20)
    benchmark.pedantic(run, **opts, **emptied([log]))
    done = opts["rounds"] + opts["warmup_rounds"] if GROW else 1
    assert log.log_end_offset == done * wl.n
    first = log.log_end_offset - wl.n
    offset, i = first, 0
    while offset < log.log_end_offset:  # the last round, record for record
        view = log.read(offset)
        for r in view:
            assert (r.offset, r.key, r.value) == (first + i, wl.keys[i], wl.values[i])
            i += 1
        offset = view.next_offset
    assert i == wl.n
    scaling_report(f"append_many vs value size ({write_mode()})", f"{size_label(value_bytes)} values", records=wl.n,
                   payload_bytes=wl.payload_bytes, log_bytes=log.size_bytes // done)


@pytest.mark.parametrize("value_bytes", VALUE_SIZES, ids=size_label)
def test_read_vs_value_size(benchmark, scaling_report, sizes, size_workloads, fresh_log, value_bytes):
    benchmark.group = "scaling: sequential read vs value size"
    wl = size_workloads[value_bytes]
    log = fresh_log(flush="never")
    for values, keys in wl.batches:
        log.append_many(values, keys)

    def run():
        read = log.read
        offset, end, n = log.log_start_offset, log.log_end_offset, 0
        value = None
        while offset < end:
            view = read(offset)
            for record in view:
                value = record.value
                n += 1
            offset = view.next_offset
        return n, value

    n, value = benchmark.pedantic(run, **rounds(sizes, 20))
    assert (n, value) == (wl.n, wl.values[-1])
    scaling_report("sequential read vs value size", f"{size_label(value_bytes)} values", records=wl.n,
                   payload_bytes=wl.payload_bytes, log_bytes=log.size_bytes)
