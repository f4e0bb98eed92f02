"""Benchmarks of log compaction (logstore.log.compaction) on the standard workload's records
(16-byte keys, 100-byte values, batches of 1000): how fast a pass cleans a log, and what a pass
running on another partition costs the appends of a partition (the issue's target: <= 10%).

Logs to compact are built once per module and copied before each round (untimed); the copy is
hot in the page cache, as a log that was just written is.
"""

from __future__ import annotations

import os
import shutil
import statistics
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from logstore import PartitionLog
from logstore.log.compaction import CompactionOptions, CompactionPass, CompactionStopped, compact

from .report import Row
from .workload import Workload

NOW = 2**50  # the compaction clock: nothing is too young to clean, no tombstone in these logs
SEGMENT_BYTES = 64 << 20


@dataclass(frozen=True)
class CompactSizes:
    records: int           # records in a log to compact
    rounds: int
    copies: int            # logs compacted back to back while the appends run
    append_rounds: int     # per phase (without, with, without)


FULL = CompactSizes(1_000_000, 5, 6, 20)
QUICK = CompactSizes(20_000, 1, 2, 1)


@pytest.fixture(scope="module")
def csizes(sizes) -> CompactSizes:
    return QUICK if sizes.quick else FULL


@pytest.fixture(scope="module")
def append_workload(sizes) -> Workload:
    return Workload(sizes.append_records)


def build_dirty(path: Path, n: int, distinct: int) -> int:
    """A closed log of ``n`` standard records whose keys repeat every ``distinct`` records, all
    sealed (an empty active segment after them). Returns its size in bytes."""
    wl = Workload(n, seed=3)
    keys = [b"key-%012d" % (i % distinct) for i in range(n)]
    with PartitionLog.open(path, flush="never", segment_bytes=SEGMENT_BYTES) as log:
        for s in range(0, n, 1000):
            log.append_many(wl.values[s:s + 1000], keys[s:s + 1000])
        log.roll()
        return log.size_bytes


def open_copy(src: Path, dst: Path) -> PartitionLog:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    log = PartitionLog.open(dst, flush="never", segment_bytes=SEGMENT_BYTES)
    log.set_high_watermark(log.log_end_offset)
    return log


@pytest.mark.parametrize("kept", [0.1, 0.5], ids=["10pct-kept", "50pct-kept"])
def test_compaction_pass(benchmark, report, csizes, tmp_path, kept):
    """One whole pass (key map, filter, new segment written, indexed, fsynced and swapped in) over
    a log where each key has 1/kept records; MB/s of the log's bytes before the pass."""
    src = tmp_path / "dirty"
    size = build_dirty(src, csizes.records, int(csizes.records * kept))
    logs: list[PartitionLog] = []
    results = []

    def setup():
        while logs:
            logs.pop().close()
        logs.append(open_copy(src, tmp_path / "round"))
        return (logs[-1],), {}

    def run(log):
        results.append(compact(log, now=NOW))

    benchmark.pedantic(run, setup=setup, rounds=csizes.rounds, warmup_rounds=0 if csizes.rounds == 1 else 1)
    log = logs.pop()
    try:
        stats = results[-1]
        assert stats.complete and stats.records_read == csizes.records
        assert stats.records_kept == int(csizes.records * kept) and stats.bytes_before == size
        # the last round's log, checked record by record against what must remain
        wl = Workload(csizes.records, seed=3)
        offset, seen = 0, 0
        first_kept = csizes.records - int(csizes.records * kept)
        while offset < log.log_end_offset:
            view = log.read(offset)
            for r in view:
                assert r.offset == first_kept + seen and r.value == wl.values[r.offset]
                seen += 1
            offset = view.next_offset
        assert seen == stats.records_kept
    finally:
        log.close()
    st = report.stats
    if st is not None:
        note = (f"{stats.bytes_before / 1e6:.0f} MB -> {stats.bytes_after / 1e6:.0f} MB, "
                f"{stats.segments_before} -> {stats.segments_after} segments")
        report.add(Row(f"compaction pass, {kept:.0%} of records kept [MB/s of log]", size / st.median / 1e6,
                       size / st.min / 1e6, "MB/s", None, True, note))
        report.rate(f"compaction pass, {kept:.0%} of records kept", csizes.records)


class Compactor(threading.Thread):
    """Compacts fresh copies of a dirty log back to back, pausing whenever ``running`` is clear
    (at its next chunk of I/O: ``paused`` is set once it waits there)."""

    def __init__(self, src: Path, workdir: Path, copies: int, max_bytes_per_s: int | None = None) -> None:
        super().__init__(name="bench-compactor", daemon=True)
        self.max_bytes_per_s = max_bytes_per_s
        self.logs = [open_copy(src, workdir / f"copy-{i}") for i in range(copies)]
        self.stop = threading.Event()
        self.running = threading.Event()
        self.paused = threading.Event()
        self.in_pass = False
        self.exhausted = False
        self.bytes = 0
        self.chunks = 0  # chunks of I/O started (the pass polls should_stop before each)

    def should_stop(self) -> bool:
        self.chunks += 1
        if not self.running.is_set():
            self.paused.set()
            self.running.wait()
            self.paused.clear()
        return self.stop.is_set()

    def pause(self) -> None:
        self.running.clear()
        while self.in_pass and not self.paused.wait(0.001):
            pass

    def run(self) -> None:
        options = CompactionOptions(read_chunk_bytes=1 << 20, max_bytes_per_s=self.max_bytes_per_s)
        for log in self.logs:
            self.running.wait()
            if self.stop.is_set():
                return
            self.in_pass = True
            try:
                stats = CompactionPass(log, options, NOW, self.should_stop).run()
            except CompactionStopped:
                return
            finally:
                self.in_pass = False
            assert stats.complete
            self.bytes += stats.bytes_before
        self.exhausted = True

    def close(self) -> None:
        self.stop.set()
        self.running.set()
        self.join()
        for log in self.logs:
            log.close()


@pytest.mark.parametrize("pages,throttle", [("reused", None), ("fresh", None), ("reused", 100)],
                         ids=["reused-pages", "fresh-pages", "reused-pages-throttled"])
def test_append_while_another_partition_compacts(benchmark, report, sizes, csizes, append_workload, fresh_log,
                                                 tmp_path, pages, throttle):
    """append_many (1000 records/call) on one partition, round by round alternately with and
    without a compaction pass running on another partition (paused between its chunks of I/O
    in the rounds without), so both see the same machine. "reused": the appended log is emptied
    before each round (untimed; its pages are reused, as in benchmark 1b), which keeps this VM's
    page-allocation swings out of the comparison; "fresh": it grows, bounded by retention.
    ``throttle``: the pass's max_bytes_per_s, in MB/s (None: unthrottled)."""
    batches = append_workload.batches
    src = tmp_path / "dirty"
    build_dirty(src, csizes.records, csizes.records // 10)
    log = fresh_log(flush="never", segment_bytes=SEGMENT_BYTES, retention_bytes=256 << 20)
    compactor = Compactor(src, tmp_path, csizes.copies, throttle * 10**6 if throttle else None)
    os.sync()  # the copies' writeback must not overlap the timed rounds
    modes: list[bool] = []  # per round: was a pass running?
    progress: list[int] = []  # per round with a pass: its chunks of I/O started during the round

    def setup():
        if pages == "reused":
            log.truncate_to(0)
        else:
            log.set_high_watermark(log.log_end_offset)
            log.apply_retention()
        compacting = len(modes) % 2 == 1
        if compacting:
            compactor.running.set()
        else:
            compactor.pause()
        modes.append(compacting)

    def run():
        chunks = compactor.chunks
        append_many = log.append_many
        for values, keys in batches:
            append_many(values, keys)
        if modes[-1]:
            progress.append(compactor.chunks - chunks if compactor.in_pass else -1)

    try:
        compactor.start()
        benchmark.pedantic(run, setup=setup, rounds=2 * csizes.append_rounds, warmup_rounds=0)
    finally:
        compactor.close()
    assert log.log_end_offset == (append_workload.n if pages == "reused" else append_workload.n * len(modes))
    assert not compactor.exhausted
    if not sizes.quick:
        # every round "with" compaction ran beside a pass in progress, which made progress in
        # each round (throttled: overall; it may sleep through a short round)
        assert min(progress) >= (0 if throttle else 1) and sum(progress) > 0, progress
    st = report.stats
    if st is None:
        return
    n = append_workload.n
    times = st.data
    assert len(times) == len(modes)
    without = [t for t, m in zip(times, modes) if not m]
    with_ = [t for t, m in zip(times, modes) if m]
    base, busy = statistics.median(without), statistics.median(with_)
    case = f"{pages} pages" + (f", pass throttled to {throttle} MB/s" if throttle else "")
    report.add(Row(f"append_many ({case}), no compaction running (alternate rounds)", n / base / 1e6,
                   n / min(without) / 1e6, "M rec/s", None, True))
    report.add(Row(f"append_many ({case}) while another partition compacts (alternate rounds)",
                   n / busy / 1e6, n / min(with_) / 1e6, "M rec/s", None, True))
    report.add(Row(f"append throughput while compacting / without ({case})", base / busy,
                   min(without) / min(with_), "x", 0.9, True, "issue 3: the cleaner's effect on appends <= 10%"))
