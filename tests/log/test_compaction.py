"""Unit tests of log compaction (logstore.log.compaction) and the background cleaner
(logstore.log.cleaner) on real PartitionLogs, one behaviour each."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from logstore import PartitionLog, errors
from logstore.log import compaction
from logstore.log.cleaner import CleanerPolicy, LogCleaner
from logstore.log.compaction import (
    CHECKPOINT_FILE,
    CompactionOptions,
    CompactionPass,
    cleanable_range,
    compact,
    read_cleaner_checkpoint,
)

NOW = 10_000_000
DAY = 24 * 3600 * 1000


# -- helpers -------------------------------------------------------------------------------------

def read_all(log: PartitionLog, start: int | None = None) -> list[tuple]:
    """Every record a reader sees from ``start`` (default: the log start) to the log end, as
    (offset, timestamp, key, value, headers)."""
    offset = log.log_start_offset if start is None else start
    out: list[tuple] = []
    while offset < log.log_end_offset:
        view = log.read(offset, max_bytes=1 << 16)
        assert view.next_offset > offset
        out.extend((r.offset, r.timestamp, r.key, r.value, r.headers) for r in view)
        offset = view.next_offset
    offsets = [r[0] for r in out]
    assert offsets == sorted(set(offsets)), "offsets must strictly increase"
    return out


def all_batches(log: PartitionLog) -> list[dict[str, int]]:
    offset, out = log.log_start_offset, []
    while offset < log.log_end_offset:
        view = log.read(offset, max_bytes=1 << 16)
        out.extend(view.batches())
        offset = view.next_offset
    return out


def expect_compacted(records: list[tuple], upto: int, horizon: int = -1) -> list[tuple]:
    """What one complete pass over [0, upto) keeps: null keys; the latest record below ``upto``
    of each key, unless it is a tombstone older than ``horizon``; everything from ``upto`` on."""
    latest = {r[2]: r[0] for r in records if r[0] < upto and r[2] is not None}
    return [r for r in records
            if r[0] >= upto or r[2] is None or (latest[r[2]] == r[0] and not (r[3] is None and r[1] < horizon))]


def fill(log: PartitionLog, n: int, keys: int, *, ts0: int = 1000, batch: int = 10, tombstone_every: int = 0,
         value_size: int = 20, first: int = 0) -> None:
    """Append ``n`` records ``k<i % keys>`` (``v<i>`` padded), ``batch`` per append_many call."""
    for start in range(first, first + n, batch):
        idx = range(start, min(start + batch, first + n))
        values = [None if tombstone_every and i % tombstone_every == tombstone_every - 1
                  else (b"v%d-" % i).ljust(value_size, b".") for i in idx]
        log.append_many(values, keys=[b"k%d" % (i % keys) for i in idx], timestamps=[ts0 + i for i in idx])


def seal(log: PartitionLog) -> None:
    """Roll and move the high watermark to the end: everything so far becomes cleanable."""
    log.roll()
    log.set_high_watermark(log.log_end_offset)


def leftovers(path: str) -> list[str]:
    return [n for n in os.listdir(path) if n.startswith((".cleaning", ".swap-"))]


@pytest.fixture
def open_log(tmp_path):
    opened: list[PartitionLog] = []

    def make(name: str = "log", **cfg) -> PartitionLog:
        cfg.setdefault("flush", "never")
        cfg.setdefault("segment_bytes", 2048)
        cfg.setdefault("index_interval_bytes", 256)
        log = PartitionLog.open(tmp_path / name, **cfg)
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


# -- what stays ----------------------------------------------------------------------------------

def test_latest_value_per_key_survives_and_kept_records_are_unchanged(open_log):
    log = open_log()
    fill(log, 600, 40)
    seal(log)
    before = read_all(log)
    segments_before = len(log.segments())
    stats = compact(log, now=NOW)
    after = read_all(log)
    assert after == expect_compacted(before, 600)
    assert sorted(r[2] for r in after) == sorted(b"k%d" % i for i in range(40))
    assert stats.complete and stats.clean_upto == stats.cleanable_end == 600
    assert (stats.records_read, stats.records_kept, stats.records_removed) == (600, 40, 560)
    assert stats.segments_before == segments_before - 1 and stats.segments_after < stats.segments_before
    assert stats.bytes_after == sum(s["size"] for s in log.segments()) < stats.bytes_before
    assert len(log.segments()) == 1 + stats.segments_after
    assert (log.log_start_offset, log.log_end_offset) == (0, 600)
    assert leftovers(log.path) == []


def test_a_second_pass_removes_and_rewrites_nothing(open_log):
    log = open_log()
    fill(log, 400, 30)
    seal(log)
    compact(log, now=NOW)
    files = {n: os.stat(os.path.join(log.path, n)).st_ino for n in os.listdir(log.path) if n.endswith(".log")}
    contents = read_all(log)
    stats = compact(log, now=NOW)
    assert (stats.records_removed, stats.tombstones_removed, stats.groups_swapped) == (0, 0, 0)
    assert stats.groups_unchanged == stats.segments_before > 0
    assert read_all(log) == contents
    assert files == {n: os.stat(os.path.join(log.path, n)).st_ino for n in os.listdir(log.path) if n.endswith(".log")}


def test_merged_segments_stay_within_segment_bytes(open_log):
    log = open_log(segment_bytes=1024)
    fill(log, 2000, 300, value_size=40)
    seal(log)
    n_before = len(log.segments())
    stats = compact(log, now=NOW)
    sizes = [s["size"] for s in log.segments()]
    assert max(sizes) <= 1024
    assert len(sizes) < n_before and stats.segments_after < stats.segments_before
    assert all(g["bytes_after"] <= 1024 for g in stats.per_group)


def test_records_with_a_null_key_are_kept(open_log):
    log = open_log()
    for i in range(30):
        log.append_many([b"a%d" % i, b"b%d" % i], keys=[None, b"k"], timestamps=[1000 + i, 1000 + i])
    seal(log)
    stats = compact(log, now=NOW)
    got = read_all(log)
    assert [r[3] for r in got if r[2] is None] == [b"a%d" % i for i in range(30)]
    assert [r[3] for r in got if r[2] is not None] == [b"b29"]
    assert stats.null_key_records == 30


def test_offsets_and_headers_of_kept_records_are_as_written(open_log):
    log = open_log()
    for i in range(50):
        log.append(b"v%d" % i, key=b"k%d" % (i % 7), headers=[("i", b"%d" % i), ("none", None)], timestamp=500 + 3 * i)
    seal(log)
    before = {r[0]: r for r in read_all(log)}
    compact(log, now=NOW)
    after = read_all(log)
    assert len(after) == 7
    assert all(before[r[0]] == r for r in after)


# -- tombstones -----------------------------------------------------------------------------------

def test_tombstones_stay_for_delete_retention_then_go(open_log):
    log = open_log()
    fill(log, 100, 10)
    log.append_many([None, None], keys=[b"k3", b"k4"], timestamps=[5000, 9000])
    log.append_many([b"late"], keys=[b"k9"], timestamps=[9500])
    seal(log)
    before = read_all(log)
    compact(log, now=10_000, delete_retention_ms=2000)  # horizon 8000: the k3 tombstone (5000) goes
    after = read_all(log)
    assert after == expect_compacted(before, 103, horizon=8000)
    keys = {r[2]: r for r in after}
    assert b"k3" not in keys and keys[b"k4"][3] is None
    # later, past the k4 tombstone's retention too: a pass removes it (no new dirty data needed)
    stats = compact(log, now=20_000, delete_retention_ms=2000)
    assert stats.tombstones_removed == 1
    assert b"k4" not in {r[2] for r in read_all(log)}


def test_a_tombstone_removes_older_values_of_its_key_at_once(open_log):
    log = open_log()
    fill(log, 100, 10)
    log.append_many([None], keys=[b"k5"], timestamps=[NOW])
    seal(log)
    compact(log, now=NOW, delete_retention_ms=DAY)
    got = [r for r in read_all(log) if r[2] == b"k5"]
    assert got == [(100, NOW, b"k5", None, [])]


def test_tombstone_age_is_the_log_append_time_when_the_log_stamps_it(open_log):
    log = open_log(timestamp_type="log_append_time")
    log.append_many([b"x", None], keys=[b"a", b"b"])
    seal(log)
    appended = read_all(log)[1][1]
    compact(log, now=appended + 500, delete_retention_ms=1000)
    assert [r[2] for r in read_all(log)] == [b"a", b"b"]
    compact(log, now=appended + 1500, delete_retention_ms=1000)
    assert [r[2] for r in read_all(log)] == [b"a"]


# -- what is cleanable ------------------------------------------------------------------------

def test_the_active_segment_is_never_touched(open_log):
    log = open_log()
    fill(log, 300, 10)
    seal(log)
    fill(log, 20, 10, first=300)  # duplicates of everything, in the active segment
    log.set_high_watermark(log.log_end_offset)
    active_before = log.segments()[-1]
    before = read_all(log)
    stats = compact(log, now=NOW)
    assert stats.cleanable_end == 300
    after = read_all(log)
    assert after == expect_compacted(before, 300)
    assert [r for r in after if r[0] >= 300] == [r for r in before if r[0] >= 300]
    assert log.segments()[-1] == active_before


def test_segments_reaching_past_the_high_watermark_are_not_cleaned(open_log):
    log = open_log()
    fill(log, 300, 10)
    seal(log)
    segs = log.segments()
    hw = segs[3]["base_offset"] + 1  # inside the fourth segment
    log.set_high_watermark(hw)
    before = read_all(log)
    stats = compact(log, now=NOW)
    assert stats.cleanable_end == segs[3]["base_offset"]
    assert read_all(log) == expect_compacted(before, segs[3]["base_offset"])


def test_min_compaction_lag_stops_at_the_first_young_segment(open_log):
    log = open_log()
    fill(log, 300, 10, ts0=1000)
    seal(log)
    segs = log.segments()
    young = segs[2]
    now = young["max_timestamp"] + 100  # segment 2 is younger than now - lag, 0 and 1 are not
    lag = now - segs[1]["max_timestamp"] - 1
    assert now - lag < young["max_timestamp"]
    before = read_all(log)
    stats = compact(log, now=now, min_compaction_lag_ms=lag)
    assert stats.cleanable_end == young["base_offset"]
    assert read_all(log) == expect_compacted(before, young["base_offset"])


def test_nothing_cleanable_is_a_no_op(open_log):
    log = open_log()
    fill(log, 50, 5)  # all in the active segment
    stats = compact(log, now=NOW)
    assert (stats.complete, stats.records_read, stats.segments_before) == (False, 0, 0)
    assert read_cleaner_checkpoint(log.path) is None


def test_a_full_key_map_cleans_part_of_the_log_and_the_next_pass_the_rest(open_log, tmp_path):
    log = open_log()
    fill(log, 1000, 300, tombstone_every=17)
    seal(log)
    before = read_all(log)
    first = compact(log, now=NOW, max_map_records=120, delete_retention_ms=0)
    assert first.complete and 0 < first.clean_upto < 1000 and first.map_keys <= 120  # the map filled
    assert read_all(log) == expect_compacted(before, first.clean_upto, horizon=NOW)
    cp = read_cleaner_checkpoint(log.path)
    assert cp is not None and cp.first_dirty_offset == first.clean_upto
    passes = 1
    while read_cleaner_checkpoint(log.path).first_dirty_offset < 1000:
        compact(log, now=NOW, max_map_records=120, delete_retention_ms=0)
        passes += 1
        assert passes < 50
    # the same as one unbounded pass
    other = open_log("other")
    fill(other, 1000, 300, tombstone_every=17)
    seal(other)
    compact(other, now=NOW, delete_retention_ms=0)
    assert read_all(log) == read_all(other) == expect_compacted(before, 1000, horizon=NOW)


# -- a compacted log behaves as a log -------------------------------------------------------------

@pytest.fixture
def compacted(open_log):
    """A compacted log with duplicates, tombstones, header-only batches and an active segment."""
    log = open_log()
    fill(log, 800, 60, tombstone_every=23)
    seal(log)
    fill(log, 40, 60, first=800)
    log.set_high_watermark(log.log_end_offset)
    original = read_all(log)
    compact(log, now=NOW)
    return log, original


def test_reads_from_every_offset_return_the_next_kept_records(compacted):
    log, original = compacted
    kept = read_all(log)
    assert kept == expect_compacted(original, 800)
    assert any(b["record_count"] == 0 for b in all_batches(log))
    for offset in range(log.log_start_offset, log.log_end_offset):
        view = log.read(offset, max_bytes=1)
        assert view.next_offset > offset
        got = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in view]
        expect = [r for r in kept if offset <= r[0] < view.next_offset]
        assert got == expect
        base, position = log.position_of(offset)
        assert position >= 0 and base <= offset


def test_offset_for_timestamp_finds_the_first_kept_record(compacted):
    log, _ = compacted
    kept = read_all(log)
    for ts in list(range(900, 1900, 7)) + [1839, 1840, 5000]:
        expect = next(((r[0], r[1]) for r in kept if r[1] >= ts), None)
        assert log.offset_for_timestamp(ts) == expect, ts


@pytest.mark.parametrize("where", [0.1, 0.35, 0.6, 0.9])
def test_truncate_to_inside_a_compacted_segment(compacted, where):
    log, _ = compacted
    kept = read_all(log)
    offset = int(800 * where)
    batch_start = max(b["base_offset"] for b in all_batches(log) if b["base_offset"] <= offset)
    assert log.truncate_to(offset) == batch_start
    assert read_all(log) == [r for r in kept if r[0] < batch_start]
    log.append(b"new", key=b"n", timestamp=5)
    assert read_all(log)[-1] == (batch_start, 5, b"n", b"new", [])


def test_a_compacted_log_reopens_trusted_and_recovers_the_same(compacted, tmp_path):
    log, _ = compacted
    kept = read_all(log)
    batches = all_batches(log)
    segments = log.segments()
    log.close()
    clean = PartitionLog.open(log.path)
    try:
        rep = clean.recovery
        assert (rep.segments_scanned, rep.indexes_rebuilt, rep.truncated_bytes) == (0, 0, 0)
        assert rep.compactions_completed == 0
        assert read_all(clean) == kept and clean.segments() == segments
    finally:
        clean.close()
    full = PartitionLog.open(log.path, recovery="full")
    try:
        rep = full.recovery
        assert rep.segments_scanned == len(segments) and not rep.cut
        assert read_all(full) == kept and all_batches(full) == batches
    finally:
        full.close()


def test_leader_epochs_and_producer_fields_survive_compaction(open_log):
    log = open_log()
    seq = 0
    for epoch in range(4):
        log.set_leader_epoch(epoch)
        for _ in range(10):
            log.append_many([b"x" * 30] * 5, keys=[b"a", b"b", b"a", b"b", b"a"], timestamps=[1000] * 5,
                            producer_id=77, producer_epoch=2, base_sequence=seq)
            seq += 5
    seal(log)
    epochs = log.epoch_cache
    compact(log, now=NOW)
    batches = all_batches(log)
    assert any(b["record_count"] == 0 for b in batches)
    for b in batches:
        assert (b["producer_id"], b["producer_epoch"]) == (77, 2)
        # sequences run with offsets: base sequence + last offset delta is the last sequence
        assert b["base_sequence"] == b["base_offset"]
    log.close()
    os.unlink(os.path.join(log.path, "partition.checkpoint"))  # rebuild the epoch cache from the batches
    reopened = PartitionLog.open(log.path, recovery="full")
    try:
        assert reopened.epoch_cache == epochs
        assert reopened.end_offset_for_epoch(1) == (1, epochs[2][1])
    finally:
        reopened.close()


def test_retention_by_time_still_sees_the_newest_timestamp_of_a_compacted_segment(open_log):
    log = open_log(retention_ms=1000)
    fill(log, 300, 5, ts0=1000)
    seal(log)
    compact(log, now=NOW)
    segs = log.segments()
    # the newest records were kept; every sealed segment still reports its largest timestamp
    assert segs[0]["max_timestamp"] >= 1000
    assert log.apply_retention(now_ms=segs[0]["max_timestamp"] + 1000) == 0
    assert log.apply_retention(now_ms=10**9) == len(segs) - 1


def test_appends_and_reads_go_on_while_a_pass_runs(open_log):
    log = open_log(segment_bytes=4096)
    fill(log, 3000, 50)
    seal(log)
    before = read_all(log)
    stop = threading.Event()
    appended: list[int] = []
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            i = 0
            while not stop.is_set():
                appended.append(log.append(b"w%d" % i, key=b"w%d" % (i % 7), timestamp=NOW + i))
                if i % 50 == 0:
                    read_all(log)
                i += 1
        except BaseException as e:  # noqa: B036 - reported below
            failures.append(e)

    t = threading.Thread(target=writer)
    t.start()
    try:
        stats = compact(log, now=NOW, read_chunk_bytes=512)
    finally:
        stop.set()
        t.join()
    assert not failures and appended == list(range(3000, 3000 + len(appended)))
    assert stats.complete
    got = read_all(log)
    assert [r for r in got if r[0] < 3000] == expect_compacted(before, 3000)
    assert [r[3] for r in got if r[0] >= 3000] == [b"w%d" % i for i in range(len(appended))]


# -- the swap when the log changes underneath ------------------------------------------------------

def test_a_group_is_dropped_when_truncation_took_its_segments(open_log):
    log = open_log()
    fill(log, 500, 20)
    seal(log)
    p = CompactionPass(log, CompactionOptions(), NOW)
    p.build_map()
    log.truncate_to(250)
    expected = read_all(log)
    assert p.run_group() is False
    stats = p.finish()
    assert stats.groups_aborted == 1 and not stats.complete and stats.groups_swapped == 0
    assert read_all(log) == expected and leftovers(log.path) == []
    assert read_cleaner_checkpoint(log.path) is None


def test_a_group_is_dropped_when_retention_deleted_its_segments(open_log):
    log = open_log()
    fill(log, 500, 20)
    seal(log)
    p = CompactionPass(log, CompactionOptions(), NOW)
    p.build_map()
    log.delete_before(log.segments()[2]["base_offset"])
    expected = read_all(log)
    p.run_group()
    assert p.finish().groups_aborted == 1
    assert read_all(log) == expected and leftovers(log.path) == []


def test_a_group_is_dropped_when_a_segment_was_cut_and_sealed_again(open_log):
    log = open_log(segment_bytes=4096)
    fill(log, 400, 20)
    seal(log)
    last = log.segments()[-2]  # the last sealed segment: the pass will clean it
    p = CompactionPass(log, CompactionOptions(), NOW)
    p.build_map()
    # the same Segment object, cut and written again, then sealed: sealed, not active, still the log's
    log.truncate_to(last["base_offset"] + 3)
    fill(log, 200, 20, first=log.log_end_offset, ts0=90_000)  # it grows past its old size
    log.roll()
    log.set_high_watermark(log.log_end_offset)
    expected = read_all(log)
    while p.run_group():
        pass
    stats = p.finish()
    assert stats.groups_aborted == 1 and not stats.complete
    assert read_all(log) == expected and leftovers(log.path) == []


def test_a_closed_log_ends_the_pass_and_leaves_no_scratch(open_log):
    log = open_log()
    fill(log, 500, 20)
    seal(log)
    p = CompactionPass(log, CompactionOptions(), NOW)
    p.build_map()
    log.close()
    assert p.run_group() is False
    assert p.finish().groups_aborted == 1
    assert leftovers(log.path) == []
    with pytest.raises(errors.LogClosedError):
        compact(log, now=NOW)


def test_one_pass_per_log_at_a_time(open_log):
    log = open_log()
    fill(log, 100, 5)
    seal(log)
    with CompactionPass(log, CompactionOptions(), NOW):
        with pytest.raises(errors.LogstoreError, match="being compacted"):
            compact(log, now=NOW)
    assert compact(log, now=NOW).complete


def test_a_damaged_batch_stops_compaction_and_is_not_rewritten(open_log):
    log = open_log()
    fill(log, 300, 10)
    seal(log)
    seg = log.segments()[1]
    path = os.path.join(log.path, "%020d.log" % seg["base_offset"])
    with open(path, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(errors.CorruptRecordError):
        compact(log, now=NOW)
    assert leftovers(log.path) == []
    assert read_cleaner_checkpoint(log.path) is None
    with pytest.raises(errors.CorruptRecordError):
        log.read(seg["base_offset"])  # still damaged, never given a fresh CRC


def test_the_checkpoint_is_ignored_once_the_log_below_it_was_rewritten(open_log):
    log = open_log()
    fill(log, 400, 20)
    seal(log)
    compact(log, now=NOW)
    assert read_cleaner_checkpoint(log.path).first_dirty_offset == 400
    # replication-style truncation, then different records at the same offsets: duplicates below
    # the old first dirty offset, and keys above it that do not supersede them
    log.truncate_to(150)
    start = log.log_end_offset
    fill(log, 400 - start, 20, ts0=50_000, first=start)
    log.append_many([b"z"] * 50, keys=[b"z%d" % i for i in range(50)], timestamps=[60_000] * 50)
    seal(log)
    before = read_all(log)
    compact(log, now=NOW)
    after = read_all(log)
    assert after == expect_compacted(before, log.log_end_offset)
    assert len([r for r in after if r[2] == b"k3"]) == 1


def test_the_dirty_range_starts_where_the_last_pass_ended(open_log):
    log = open_log()
    fill(log, 400, 20)
    seal(log)
    compact(log, now=NOW)
    fill(log, 200, 20, first=400, ts0=7000)
    seal(log)
    rng = cleanable_range(log, 0, NOW)
    assert rng.first_dirty_offset == 400 and rng.dirty_bytes > 0
    assert 0 < rng.dirty_ratio < 1


def test_a_damaged_cleaner_checkpoint_means_the_whole_log_is_dirty(open_log):
    log = open_log()
    fill(log, 400, 20)
    seal(log)
    compact(log, now=NOW)
    with open(os.path.join(log.path, CHECKPOINT_FILE), "r+b") as f:
        f.seek(25)
        f.write(b"9")
    assert read_cleaner_checkpoint(log.path) is None
    assert cleanable_range(log, 0, NOW).first_dirty_offset == 0


def test_a_throttled_pass_still_cleans_and_a_stop_cuts_its_wait_short(open_log):
    log = open_log()
    fill(log, 300, 10)
    seal(log)
    before = read_all(log)
    # fast enough not to sleep here, but every chunk goes through the throttle
    stats = compact(log, now=NOW, max_bytes_per_s=10**12, read_chunk_bytes=256)
    assert stats.complete and read_all(log) == expect_compacted(before, 300)
    fill(log, 300, 10, first=300)
    seal(log)
    checks = []
    p = CompactionPass(log, CompactionOptions(max_bytes_per_s=1, read_chunk_bytes=256), NOW,
                       should_stop=lambda: len(checks) > 3 or checks.append(1) is not None)
    with pytest.raises(compaction.CompactionStopped):
        p.run()  # one byte a second: without the stop this would sleep for hours
    assert leftovers(log.path) == [] and len(read_all(log)) == 10 + 300


def test_compaction_options_are_validated(open_log):
    log = open_log()
    for bad in ({"max_map_records": 0}, {"delete_retention_ms": -1}, {"verify_crc": 1}, {"read_chunk_bytes": "x"},
                {"max_bytes_per_s": 0}, {"min_compaction_lag_ms": True}):
        with pytest.raises(errors.InvalidArgumentError):
            compact(log, now=NOW, **bad)
    with pytest.raises(errors.InvalidArgumentError):
        compact(log, options=CompactionOptions(), max_map_records=5)


# -- the background cleaner ----------------------------------------------------------------------------

def test_cleaner_compacts_the_dirtiest_log_one_group_per_step(open_log):
    quiet, dirty = open_log("quiet"), open_log("dirty")
    fill(quiet, 300, 300)  # unique keys: compaction would not help much, but it is dirty too
    seal(quiet)
    compact(quiet, now=NOW)
    fill(quiet, 30, 300, first=300)
    seal(quiet)
    fill(dirty, 600, 10)
    seal(dirty)
    expected = expect_compacted(read_all(dirty), 600)
    policy = {"cleanup_policy": "compact", "min_cleanable_dirty_ratio": 0.5}
    cleaner = LogCleaner(lambda: [(quiet, policy), (dirty, policy)])
    steps = []
    while True:
        step = cleaner.run_once(now_ms=NOW)
        if not step.worked:
            break
        steps.append(step)
        assert len(steps) < 50
    assert steps and all(s.compacted == dirty.path for s in steps)
    assert steps[-1].compaction is not None and steps[-1].compaction.complete
    assert read_all(dirty) == expected
    assert cleaner.totals.passes_completed == 1 and cleaner.totals.records_removed == 590
    assert cleanable_range(quiet, 0, NOW).dirty_ratio < 0.5


def test_cleaner_applies_retention_to_delete_policies_only(open_log):
    timed, kept = open_log("timed"), open_log("kept")
    for log in (timed, kept):
        fill(log, 300, 300, ts0=1000)
        seal(log)
    cleaner = LogCleaner(lambda: [(timed, CleanerPolicy("delete", retention_ms=1000)),
                                  (kept, {"cleanup_policy": "compact", "retention.ms": 1000})])
    sealed = len(timed.segments()) - 1
    step = cleaner.run_once(now_ms=NOW)
    assert step.segments_deleted == sealed > 0
    assert len(timed.segments()) == 1 and timed.log_start_offset == 300
    assert timed.config.retention_ms == 1000
    assert kept.log_start_offset == 0


def test_cleaner_survives_a_failing_log_and_backs_off(open_log, caplog):
    good, bad = open_log("good"), open_log("bad")
    for log in (good, bad):
        fill(log, 300, 10)
        seal(log)
    with open(os.path.join(bad.path, "%020d.log" % 0), "r+b") as f:
        f.seek(70)
        f.write(b"\xff\xff")
    policy = CleanerPolicy("compact", min_cleanable_dirty_ratio=0.1)
    cleaner = LogCleaner(lambda: [(bad, policy), (good, policy)], backoff_ms=60_000)
    with caplog.at_level(logging.ERROR, logger="logstore.log.cleaner"):
        for _ in range(20):
            if not cleaner.run_once(now_ms=NOW).worked:
                break
    assert any(r.getMessage() == f"compaction of {bad.path} failed" for r in caplog.records)
    assert cleaner.totals.errors == 1 and "CorruptRecordError" in cleaner.totals.last_error
    assert cleaner.totals.passes_completed == 1
    assert len({r[2] for r in read_all(good)}) == len(read_all(good)) == 10
    assert leftovers(bad.path) == []


def test_a_log_with_an_invalid_policy_does_not_stop_the_others(open_log):
    bad, good = open_log("bad"), open_log("good")
    for log in (bad, good):
        fill(log, 300, 10)
        seal(log)
    cleaner = LogCleaner(lambda: [(bad, {"cleanup_policy": "shred"}), (good, {"cleanup_policy": "compact"})])
    steps = [cleaner.run_once(now_ms=NOW) for _ in range(3)]
    assert len(steps[0].errors) == 1 and "shred" in steps[0].errors[0]
    assert steps[1].errors == steps[2].errors == []  # left alone while it backs off
    assert len(read_all(good)) == 10 and len(read_all(bad)) == 300


def test_cleaner_skips_closed_logs_and_abandons_their_pass(open_log):
    a, b = open_log("a"), open_log("b")
    for log in (a, b):
        fill(log, 600, 300)  # half the records stay: a pass takes several groups
        seal(log)
    policy = {"cleanup_policy": "compact,delete", "min_cleanable_dirty_ratio": 0.1}
    cleaner = LogCleaner(lambda: [(a, policy), (b, policy)])
    first = cleaner.run_once(now_ms=NOW)
    assert first.worked and not first.compaction.complete
    (a if first.compacted == a.path else b).close()
    for _ in range(30):
        if not cleaner.run_once(now_ms=NOW).worked:
            break
    assert cleaner.totals.errors == 0
    survivor = b if first.compacted == a.path else a
    assert len(read_all(survivor)) == 300 and read_cleaner_checkpoint(survivor.path) is not None
    assert leftovers(a.path) == leftovers(b.path) == []


def test_cleaner_thread_cleans_on_wake_and_stops_promptly(open_log):
    log = open_log()
    fill(log, 600, 10)
    seal(log)
    cleaner = LogCleaner(lambda: [(log, CleanerPolicy("compact"))], interval_ms=60_000)
    cleaner.start()
    try:
        deadline = time.monotonic() + 20
        while read_cleaner_checkpoint(log.path) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(read_all(log)) == 10
        fill(log, 600, 10, first=600)
        seal(log)
        cleaner.wake()  # without it the thread would sleep for a minute
        while read_cleaner_checkpoint(log.path).first_dirty_offset < 1200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(read_all(log)) == 10
    finally:
        t0 = time.monotonic()
        assert cleaner.stop(timeout=10)
    assert time.monotonic() - t0 < 5 and not cleaner.running


def test_stopping_the_cleaner_mid_pass_leaves_the_log_as_it_was(open_log, monkeypatch):
    log = open_log(segment_bytes=1 << 20)
    fill(log, 20_000, 100, value_size=100, batch=200)
    seal(log)
    before = read_all(log)
    cleaner = LogCleaner(lambda: [(log, CleanerPolicy("compact"))], read_chunk_bytes=4096)
    compaction_stop = cleaner._stop
    calls = 0
    original = compaction.CompactionPass._check_stop

    def check_stop(self):
        nonlocal calls
        calls += 1
        if calls == 5:
            compaction_stop.set()  # what stop() does, at a known point inside the pass
        return original(self)

    monkeypatch.setattr(compaction.CompactionPass, "_check_stop", check_stop)
    step = cleaner.run_once(now_ms=NOW)
    assert step.worked and step.compaction is None
    assert read_all(log) == before and leftovers(log.path) == []
    assert read_cleaner_checkpoint(log.path) is None
    assert cleaner.stop(timeout=5)


def test_cleaner_takes_a_broker_topic_config_as_policy(open_log):
    """Kafka's -1 means "no limit" for retention; a compact-only policy never deletes by time or size."""
    log = open_log(retention_ms=None)
    fill(log, 300, 300, ts0=1000)
    seal(log)
    topic = type("TopicConfig", (), {"cleanup_policy": "delete", "retention_ms": -1, "retention_bytes": -1,
                                     "delete_retention_ms": 5, "min_compaction_lag_ms": 0,
                                     "min_cleanable_dirty_ratio": 0.5})()
    cleaner = LogCleaner(lambda: [(log, topic)])
    step = cleaner.run_once(now_ms=NOW)
    assert step.errors == [] and step.segments_deleted == 0 and log.log_start_offset == 0
    assert (log.config.retention_ms, log.config.retention_bytes) == (None, None)
    policy = CleanerPolicy.of(topic)
    assert (policy.retention_ms, policy.retention_bytes, policy.delete_retention_ms) == (None, None, 5)


def test_cleaner_policy_parsing():
    assert CleanerPolicy.of({"cleanup.policy": "delete, compact"}).cleanup_policy == "compact,delete"
    p = CleanerPolicy.of(type("Cfg", (), {"cleanup_policy": "compact", "delete_retention_ms": 5})())
    assert (p.compacts, p.deletes, p.delete_retention_ms) == (True, False, 5)
    for bad in ({"cleanup_policy": "forever"}, {"min_cleanable_dirty_ratio": 2}, {"retention_ms": "1d"}):
        with pytest.raises(errors.InvalidArgumentError):
            CleanerPolicy.of(bad)
