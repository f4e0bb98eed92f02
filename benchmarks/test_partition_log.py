"""Benchmarks of one partition log on the standard workload (benchmarks/workload.py): 16-byte keys,
100-byte values, one partition, page-cache durability (flush="never") unless a benchmark says
otherwise. Inputs are built outside the timed region. A write benchmark appends round after round
to one log (steady state: the cost of creating a segment is paid once, in the warm-up, as it is
once per segment_bytes in real use). See conftest.py for how to run and how results are reported.
"""

from __future__ import annotations

import dataclasses
import os
import random
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import logstore
from logstore import PartitionLog

from .workload import BATCH, KEY_BYTES, VALUE_BYTES, Workload

WARMUP_ROUNDS = 2


def warmup(sizes) -> int:
    return 0 if sizes.quick else WARMUP_ROUNDS


@pytest.fixture(scope="module")
def append_workload(sizes) -> Workload:
    return Workload(sizes.append_records)


def check_contents(log: PartitionLog, wl: Workload, first: int = 0) -> None:
    """Every record of ``wl`` is in ``log`` from offset ``first``, in order, byte for byte."""
    assert log.log_end_offset == first + wl.n
    offset, i = first, 0
    while offset < log.log_end_offset:
        view = log.read(offset)
        for record in view:
            assert record.offset == first + i
            assert record.key == wl.keys[i]
            assert record.value == wl.values[i]
            i += 1
        offset = view.next_offset
    assert i == wl.n


def check_rounds(log: PartitionLog, wl: Workload) -> int:
    """The log holds ``wl`` once per round (warm-up included); the last copy is checked record by
    record. Returns the number of rounds."""
    rounds, rest = divmod(log.log_end_offset, wl.n)
    assert rounds >= 1 and rest == 0
    check_contents(log, wl, first=log.log_end_offset - wl.n)
    return rounds


# -- 1-3: appends ---------------------------------------------------------------------------------

def test_append_many_batched(benchmark, report, sizes, append_workload, fresh_log):
    """append_many of 1000 records per call."""
    batches = append_workload.batches
    log = fresh_log(flush="never")

    def run():
        append_many = log.append_many
        for values, keys in batches:
            append_many(values, keys)

    benchmark.pedantic(run, rounds=sizes.append_rounds, warmup_rounds=warmup(sizes))
    rounds = check_rounds(log, append_workload)
    report.rate("append_many, 1000 records/call", append_workload.n, nbytes=append_workload.payload_bytes,
                log_bytes=log.size_bytes // rounds, target_mrps=10)


def test_append_many_batched_reused_pages(benchmark, report, sizes, append_workload, fresh_log):
    """Diagnostic: as test_append_many_batched, but the log is emptied (truncate_to(0), untimed)
    before each round, so its file reuses page-cache pages the kernel just freed instead of
    growing into new ones: closer to the CPU cost of the append path alone."""
    batches = append_workload.batches
    log = fresh_log(flush="never")

    def setup():
        log.truncate_to(0)

    def run():
        append_many = log.append_many
        for values, keys in batches:
            append_many(values, keys)

    benchmark.pedantic(run, setup=setup, rounds=sizes.append_rounds, warmup_rounds=warmup(sizes))
    assert check_rounds(log, append_workload) == 1
    report.rate("append_many, 1000 records/call, log emptied before each round", append_workload.n,
                nbytes=append_workload.payload_bytes, log_bytes=log.size_bytes,
                note="diagnostic: page cache reused")


def test_page_cache_write_floor(benchmark, report, sizes, append_workload, tmp_path):
    """Not logstore: the page-cache floor for the append benchmarks. The bytes logstore writes
    for one round of test_append_many_batched go to a growing plain file, 1 MiB per os.write."""
    with PartitionLog.open(tmp_path / "sample", flush="never") as sample:
        for values, keys in append_workload.batches:
            sample.append_many(values, keys)
        data = bytes(sample.read(0, sample.size_bytes).raw)
        assert len(data) == sample.size_bytes
    chunks = [data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    fd = os.open(tmp_path / "floor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        def run():
            for chunk in chunks:
                os.write(fd, chunk)

        benchmark.pedantic(run, rounds=sizes.append_rounds, warmup_rounds=warmup(sizes))
        written = os.fstat(fd).st_size
    finally:
        os.close(fd)
    assert written % len(data) == 0 and written >= len(data)
    report.rate("floor: plain file, os.write of the same bytes, 1 MiB per call", append_workload.n,
                log_bytes=len(data), note="no logstore; records-equivalent")


def test_append_single(benchmark, report, sizes, append_workload, fresh_log):
    """log.append(value, key), one call per record (the caller's Python loop is included)."""
    pairs = list(zip(append_workload.values, append_workload.keys))
    log = fresh_log(flush="never")

    def run():
        append = log.append
        for value, key in pairs:
            append(value, key)

    benchmark.pedantic(run, rounds=sizes.append_rounds, warmup_rounds=warmup(sizes))
    rounds = check_rounds(log, append_workload)
    report.rate("append, 1 record/call", append_workload.n, nbytes=append_workload.payload_bytes,
                log_bytes=log.size_bytes // rounds, target_mrps=2)


def test_append_arrays(benchmark, report, sizes, append_workload, fresh_log):
    """append_arrays with numpy-packed value/key buffers and int64 length arrays, 1000 per call."""
    chunks = []
    for values, keys in append_workload.batches:
        chunks.append((np.frombuffer(b"".join(values), dtype=np.uint8),
                       np.full(len(values), VALUE_BYTES, dtype=np.int64),
                       np.frombuffer(b"".join(keys), dtype=np.uint8),
                       np.full(len(keys), KEY_BYTES, dtype=np.int64)))

    log = fresh_log(flush="never")

    def run():
        append_arrays = log.append_arrays
        for values, value_lengths, keys, key_lengths in chunks:
            append_arrays(values, value_lengths, keys, key_lengths)

    benchmark.pedantic(run, rounds=sizes.append_rounds, warmup_rounds=warmup(sizes))
    rounds = check_rounds(log, append_workload)
    report.rate("append_arrays (numpy buffers), 1000 records/call", append_workload.n,
                nbytes=append_workload.payload_bytes, log_bytes=log.size_bytes // rounds)


# -- 4-6: reads and lookups on one populated log ----------------------------------------------------

@pytest.fixture(scope="module")
def read_log(sizes, tmp_path_factory):
    """A log of ``sizes.read_records`` standard records in batches of 1000, hot in the page cache."""
    wl = Workload(sizes.read_records, seed=2)
    log = PartitionLog.open(tmp_path_factory.mktemp("read") / "log", flush="never")
    for values, keys in wl.batches:
        log.append_many(values, keys)
    check_contents(log, wl)  # also hands every buffered batch to the OS
    yield log, wl
    log.close()


def test_read_records(benchmark, report, sizes, read_log):
    """Whole log front to back with read() (1 MiB views), every record as an object: .key, .value."""
    log, wl = read_log

    def run():
        read = log.read
        offset, end, n = log.log_start_offset, log.log_end_offset, 0
        while offset < end:
            view = read(offset)
            for record in view:
                record.key
                record.value
                n += 1
            offset = view.next_offset
        return n

    n = benchmark.pedantic(run, rounds=sizes.read_rounds, warmup_rounds=warmup(sizes))
    assert n == wl.n
    report.rate("sequential read, Record objects (.key + .value)", wl.n, nbytes=wl.payload_bytes,
                log_bytes=log.size_bytes, target_mrps=5)


def test_read_numpy(benchmark, report, sizes, read_log):
    """Whole log front to back with read() (1 MiB views) through the numpy columns."""
    log, wl = read_log

    def run():
        read = log.read
        offset, end, n, nbytes = log.log_start_offset, log.log_end_offset, 0, 0
        while offset < end:
            view = read(offset)
            offsets = view.offsets
            view.value_lengths
            n += len(offsets)
            nbytes += view.size_bytes
            offset = view.next_offset
        return n, nbytes

    n, nbytes = benchmark.pedantic(run, rounds=sizes.read_rounds, warmup_rounds=warmup(sizes))
    assert (n, nbytes) == (wl.n, log.size_bytes)
    # the columns the benchmark touched describe the records exactly (checked outside the timing)
    offset, seen = 0, 0
    while offset < log.log_end_offset:
        view = log.read(offset)
        assert np.array_equal(view.offsets, np.arange(offset, offset + len(view), dtype=np.int64))
        assert (view.value_lengths == VALUE_BYTES).all() and (view.key_lengths == KEY_BYTES).all()
        buf = view.buffer
        for j in (0, len(view) - 1):
            pos = view.value_positions[j]
            assert buf[pos:pos + VALUE_BYTES].tobytes() == wl.values[seen + j]
        seen += len(view)
        offset = view.next_offset
    assert seen == wl.n
    report.rate("sequential read, numpy columns (.offsets, .value_lengths)", wl.n, nbytes=wl.payload_bytes,
                log_bytes=nbytes, target_mrps=None, gbps_target=3)


def per_call_ns(fn, args) -> tuple[float, float]:
    """(p50, p99) of single calls in ns, less the clock's own cost (outside pytest-benchmark)."""
    clock = time.perf_counter_ns
    overhead = sorted(clock() - clock() for _ in range(1000))
    overhead = -overhead[len(overhead) // 2]  # clock() - clock() is minus the cost of one call
    samples = []
    for a in args:
        t0 = clock()
        fn(a)
        samples.append(clock() - t0)
    samples.sort()
    return (max(samples[len(samples) // 2] - overhead, 0), max(samples[len(samples) * 99 // 100] - overhead, 0))


def batch_header(path: str, base: int, position: int) -> tuple[int, int]:
    """(base offset, last offset) of the batch stored at ``position`` of segment ``base``."""
    with open(os.path.join(path, "%020d.log" % base), "rb") as f:
        f.seek(position)
        head = f.read(27)
    base_offset, = struct.unpack_from(">q", head, 0)
    last_delta, = struct.unpack_from(">i", head, 23)
    return base_offset, base_offset + last_delta


def test_position_of_random(benchmark, report, sizes, read_log):
    """log.position_of(random offset): mean per call of the median round (and per-call p50/p99)."""
    log, wl = read_log
    rng = random.Random(6)
    offsets = [rng.randrange(wl.n) for _ in range(sizes.lookups)]
    for o in offsets[:200]:  # the answers are right: the batch at that position holds o
        base, position = log.position_of(o)
        first, last = batch_header(log.path, base, position)
        assert first <= o <= last

    def run():
        position_of = log.position_of
        for o in offsets:
            position_of(o)

    benchmark.pedantic(run, rounds=sizes.lookup_rounds, warmup_rounds=warmup(sizes))
    p50, p99 = per_call_ns(log.position_of, offsets)
    benchmark.extra_info.update(per_call_p50_us=p50 / 1e3, per_call_p99_us=p99 / 1e3)
    report.latency("position_of(random offset)", len(offsets), target_us=2,
                   note=f"per call p50 {p50 / 1e3:.2f} us, p99 {p99 / 1e3:.2f} us")


def test_read_one_random(benchmark, report, sizes, read_log):
    """log.read(random offset, 1), then the first record's .value: one random single-record read."""
    log, wl = read_log
    rng = random.Random(7)
    offsets = [rng.randrange(wl.n) for _ in range(sizes.random_reads)]
    for o in offsets[:200]:
        record = log.read(o, 1)[0]
        assert (record.offset, record.key, record.value) == (o, wl.keys[o], wl.values[o])

    def read_one(o):
        log.read(o, 1)[0].value

    def run():
        read = log.read
        for o in offsets:
            read(o, 1)[0].value

    benchmark.pedantic(run, rounds=sizes.lookup_rounds, warmup_rounds=warmup(sizes))
    p50, p99 = per_call_ns(read_one, offsets)
    benchmark.extra_info.update(per_call_p50_us=p50 / 1e3, per_call_p99_us=p99 / 1e3)
    report.latency("read(random offset, 1)[0].value", len(offsets),
                   note=f"per call p50 {p50 / 1e3:.1f} us, p99 {p99 / 1e3:.1f} us")


# -- 7: durable appends ---------------------------------------------------------------------------

def test_append_many_flush_always(benchmark, report, sizes, append_workload, fresh_log):
    """flush="always": every append_many of 1000 returns after fdatasync; one thread."""
    batches = [append_workload.batches[j % len(append_workload.batches)] for j in range(sizes.durable_batches)]
    records = sum(len(v) for v, _ in batches)
    log = fresh_log(flush="always")
    calls = []

    def run():
        calls.append(1)
        append_many = log.append_many
        for values, keys in batches:
            append_many(values, keys)

    benchmark.pedantic(run, rounds=sizes.durable_rounds, warmup_rounds=warmup(sizes))
    assert log.log_end_offset == len(calls) * records
    assert log.read(log.log_end_offset - 1)[0].value == batches[-1][0][-1]
    report.rate("flush=always, append_many 1000/call, 1 thread", records, target_mrps=1)


def test_append_many_flush_always_4_threads(benchmark, report, sizes, append_workload, fresh_log):
    """flush="always", 4 threads appending batches of 1000 at once: group commit shares fsyncs."""
    threads = 4
    all_batches = append_workload.batches
    mine = [[all_batches[(t * sizes.durable_batches + j) % len(all_batches)] for j in range(sizes.durable_batches)]
            for t in range(threads)]
    records = sum(len(v) for m in mine for v, _ in m)

    def worker(log, batches):
        append_many = log.append_many
        for values, keys in batches:
            append_many(values, keys)

    with ThreadPoolExecutor(threads) as pool:
        barrier = threading.Barrier(threads)  # start all the threads outside the timing
        list(pool.map(lambda _: barrier.wait(), range(threads)))

        log = fresh_log(flush="always")
        calls = []

        def run():
            calls.append(1)
            for f in [pool.submit(worker, log, m) for m in mine]:
                f.result()

        benchmark.pedantic(run, rounds=sizes.durable_rounds, warmup_rounds=warmup(sizes))
    assert log.log_end_offset == len(calls) * records
    # each batch landed whole: every 1000-record stretch is one thread's batch, keys in order
    offset, n = 0, 0
    while offset < log.log_end_offset:
        view = log.read(offset)
        for b in view.batches():
            assert b["last_offset"] - b["base_offset"] + 1 == BATCH
        n += len(view)
        offset = view.next_offset
    assert n == len(calls) * records
    report.rate("flush=always, append_many 1000/call, 4 threads", records, target_mrps=1)


def test_fdatasync_floor(benchmark, report, sizes, append_workload, tmp_path):
    """Not logstore: the device floor for flush="always". A plain file gets the bytes of one
    encoded 1000-record batch per os.write, each followed by os.fdatasync, as often as the
    one-thread flush="always" benchmark appends."""
    with PartitionLog.open(tmp_path / "sample", flush="never") as sample:
        values, keys = append_workload.batches[0]
        sample.append_many(values, keys)
        batch = bytes(sample.read(0).raw)
    assert len(batch) > len(values) * (KEY_BYTES + VALUE_BYTES)
    fd = os.open(tmp_path / "floor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        def run():
            for _ in range(sizes.durable_batches):
                os.write(fd, batch)
                os.fdatasync(fd)

        benchmark.pedantic(run, rounds=sizes.durable_rounds, warmup_rounds=warmup(sizes))
        written = os.fstat(fd).st_size
    finally:
        os.close(fd)
    assert written % len(batch) == 0 and written >= sizes.durable_batches * len(batch)
    report.rate("floor: plain file, os.write + os.fdatasync per 1000-record batch", sizes.durable_batches * BATCH,
                note="no logstore; device bound for flush=always")


# -- 8: reopen after kill -9 ----------------------------------------------------------------------

WRITER = r"""
import os, sys, time
from logstore import PartitionLog
path, target = sys.argv[1], int(sys.argv[2])
log = PartitionLog.open(path)  # defaults: flush="interval" (1 s), segment_bytes=1 GiB
blob = os.urandom(1000 * 100)
values = [blob[i * 100:(i + 1) * 100] for i in range(1000)]
keys = [b"key-%012d" % i for i in range(1000)]
append_many = log.append_many
while log.size_bytes < target:
    append_many(values, keys)
bulk_end = log.log_end_offset
# a steady state: keep appending small batches until the background flusher has synced the bulk
deadline = time.monotonic() + 60
while log.recovery_point < bulk_end and time.monotonic() < deadline:
    append_many(values[:10], keys[:10])
    time.sleep(0.001)
for _ in range(100):
    append_many(values[:10], keys[:10])
    time.sleep(0.001)
print("ready", log.recovery_point, log.log_end_offset, log.size_bytes, flush=True)
while True:  # still appending when the SIGKILL lands
    append_many(values[:10], keys[:10])
    time.sleep(0.001)
"""


def write_and_kill(path: str, target_bytes: int, timeout: float = 600) -> dict:
    """Run WRITER in a subprocess until it has written ``target_bytes``, then SIGKILL it."""
    src = os.path.dirname(os.path.dirname(os.path.abspath(logstore.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, path, str(target_bytes)],
                            stdout=subprocess.PIPE, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline().decode() if ready else ""
        assert line.startswith("ready"), f"writer did not get ready (exit code {proc.poll()}): {line!r}"
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    _, recovery_point, leo, size = line.split()
    return {"recovery_point": int(recovery_point), "leo_at_ready": int(leo), "size_at_ready": int(size)}


@pytest.mark.big
def test_reopen_after_kill_1gib(benchmark, report, tmp_path):
    """PartitionLog.open of a ~1 GiB single-segment log whose writer was SIGKILLed mid-append."""
    target = int(os.environ.get("LOGSTORE_BENCH_BIG_BYTES", 1 << 30))
    rounds = int(os.environ.get("LOGSTORE_BENCH_BIG_ROUNDS", 3))
    # stay under segment_bytes (1 GiB), leaving room for the trickle: the worst case is one
    # active segment, which recovery has to validate batch by batch
    bulk = max(target - (8 << 20), 1 << 20)
    path = str(tmp_path / "big")
    state: dict = {}

    def setup():
        if state.get("log") is not None:
            state.pop("log").close()
        if os.path.exists(path):
            for name in os.listdir(path):
                os.unlink(os.path.join(path, name))
        state["writer"] = write_and_kill(path, bulk)
        return (), {}

    def run():
        state["log"] = log = PartitionLog.open(path)
        return log

    benchmark.pedantic(run, setup=setup, rounds=rounds, warmup_rounds=0)
    log = state["log"]
    try:
        rec = log.recovery
        writer = state["writer"]
        assert not rec.clean_shutdown
        assert rec.segments_scanned >= 1
        assert log.log_end_offset >= writer["recovery_point"]  # what was fsynced survived
        last = log.read(log.log_end_offset - 1)
        assert last[len(last) - 1].offset == log.log_end_offset - 1
        size = log.size_bytes
        fields = {k: v for k, v in dataclasses.asdict(rec).items() if k != "epochs"}
        benchmark.extra_info.update(log_bytes=size, log_end_offset=log.log_end_offset, **writer,
                                    recovery={**fields, "cut": rec.cut})
        if benchmark.stats is not None:
            benchmark.extra_info["scan_gb_per_s"] = size / benchmark.stats.stats.median / 1e9
        note = (f"{size / 2**30:.2f} GiB, {len(log.segments())} segment(s); recovery: scanned "
                f"{rec.segments_scanned}, indexes rebuilt {rec.indexes_rebuilt}, truncated "
                f"{rec.truncated_bytes} B, dropped {rec.segments_dropped}")
    finally:
        log.close()
    report.seconds("reopen after kill -9 (PartitionLog.open)", target_s=1, note=note)
