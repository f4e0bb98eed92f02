"""Unit tests of PartitionLog, one behaviour each."""

from __future__ import annotations

import os
import random
import shutil
import threading
import time

import numpy as np
import pytest

from logstore import PartitionLog, RecordBatchView, errors
from logstore.log.checkpoint import FILE_NAME as CHECKPOINT, read_checkpoint

SEG0 = "%020d" % 0


def records(view):
    return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in view]


def read_all(log, start=None):
    """Every visible record from ``start`` (default: the log start) to the log end."""
    offset = log.log_start_offset if start is None else start
    out = []
    while offset < log.log_end_offset:
        view = log.read(offset, max_bytes=1 << 20)
        got = list(view)
        assert got and got[0].offset == offset
        out.extend(got)
        offset = view.next_offset
    return out


def all_batches(log):
    offset, out = log.log_start_offset, []
    while offset < log.log_end_offset:
        view = log.read(offset, max_bytes=1 << 20)
        out.extend(view.batches())
        offset = view.next_offset
    return out


def values(log):
    return [r.value for r in read_all(log)]


@pytest.fixture
def open_log(tmp_path):
    """Open logs under tmp_path and close whatever is still open at the end."""
    opened = []

    def make(name="log", **cfg):
        cfg.setdefault("flush", "never")
        log = PartitionLog.open(tmp_path / name, **cfg)
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


# -- basics -----------------------------------------------------------------------------------

def test_round_trip_append_read_close_reopen(open_log, tmp_path):
    log = open_log()
    assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (0, 0, 0)
    assert log.recovery.clean_shutdown
    o1 = log.append(b"v1", key=b"k1", headers=[("h", b"x"), ("n", None)], timestamp=1000)
    o2 = log.append(None, key=None, timestamp=1001)
    o3 = log.append(b"", key=b"", headers=[], timestamp=1002)
    assert (o1, o2, o3) == (0, 1, 2)
    expected = [(0, 1000, b"k1", b"v1", [("h", b"x"), ("n", None)]),
                (1, 1001, None, None, []),
                (2, 1002, b"", b"", [])]
    assert records(log.read(0)) == expected
    log.set_high_watermark(3)
    log.close()
    assert os.path.exists(tmp_path / "log" / ".clean_shutdown")
    with PartitionLog.open(tmp_path / "log", flush="never") as again:
        assert not os.path.exists(tmp_path / "log" / ".clean_shutdown")
        assert again.recovery.clean_shutdown and again.recovery.checkpoint_valid
        assert (again.log_end_offset, again.high_watermark) == (3, 3)
        assert records(again.read(0)) == expected


def test_append_after_reopen_goes_after_existing_records(open_log, tmp_path):
    log = open_log(timestamp_type="create_time")
    log.append_many([b"a", b"b"], timestamps=[1, 2])
    log.close()
    with PartitionLog.open(tmp_path / "log", flush="never") as log:
        assert log.append(b"c", timestamp=3) == 2
        assert log.append_many([b"d"], timestamps=[4]) == 3
        assert values(log) == [b"a", b"b", b"c", b"d"]
        log.flush()
        assert log.size_bytes == os.path.getsize(tmp_path / "log" / f"{SEG0}.log")
    with PartitionLog.open(tmp_path / "log", flush="never") as log:
        assert values(log) == [b"a", b"b", b"c", b"d"]


def test_append_returns_consecutive_offsets(open_log):
    src = open_log("src")
    src.append_many([b"r1", b"r2", b"r3"])
    raw = bytes(src.read(0).raw)
    log = open_log()
    assert log.append(b"a") == 0
    assert log.append(b"b") == 1
    assert log.append_many([b"c", b"d", b"e"]) == 2
    assert log.log_end_offset == 5
    assert log.append_arrays(np.frombuffer(b"fg", dtype=np.uint8), np.array([1, 1])) == 5
    assert log.append_batch(raw) == 7
    assert log.append_many([]) == 10
    assert log.log_end_offset == 10
    assert [r.offset for r in read_all(log)] == list(range(10))
    assert values(log) == [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"r1", b"r2", b"r3"]


def test_append_many_with_keys_headers_and_timestamps(open_log):
    log = open_log()
    log.append_many([b"x", None, b""], keys=[None, b"k", b""], headers=[None, [("a", b"1")], [("b", None)]],
                    timestamps=[30, 10, 20])
    assert records(log.read(0)) == [(0, 30, None, b"x", []), (1, 10, b"k", None, [("a", b"1")]),
                                    (2, 20, b"", b"", [("b", None)])]


# -- bad input: clear error, nothing written ---------------------------------------------------

BAD_APPENDS = {
    "value str": lambda log: log.append("text"),
    "value int": lambda log: log.append(42),
    "many value str": lambda log: log.append_many([b"ok", "text"]),
    "many value int": lambda log: log.append_many([b"ok", b"ok", 7]),
    "keys length mismatch": lambda log: log.append_many([b"a", b"b"], keys=[b"k"]),
    "headers length mismatch": lambda log: log.append_many([b"a", b"b"], headers=[None]),
    "timestamps length mismatch": lambda log: log.append_many([b"a", b"b"], timestamps=[1, 2, 3]),
    "negative timestamp": lambda log: log.append(b"a", timestamp=-1),
    "many negative timestamp": lambda log: log.append_many([b"a", b"b"], timestamps=[5, -5]),
    "header with int key": lambda log: log.append(b"a", headers=[(1, b"v")]),
    "header with None key": lambda log: log.append(b"a", headers=[(None, b"v")]),
    "header not a pair": lambda log: log.append(b"a", headers=[("k",)]),
    "header value str": lambda log: log.append(b"a", headers=[("k", "v")]),
    "key str": lambda log: log.append(b"a", key="k"),
}


@pytest.mark.parametrize("case", sorted(BAD_APPENDS))
def test_bad_input_is_rejected_and_nothing_written(open_log, case):
    log = open_log()
    log.append_many([b"before", b"more"])
    leo, size = log.log_end_offset, log.size_bytes
    with pytest.raises(errors.InvalidRecordError):
        BAD_APPENDS[case](log)
    assert (log.log_end_offset, log.size_bytes) == (leo, size)
    assert values(log) == [b"before", b"more"]
    assert log.append(b"after") == leo  # and the log still works


@pytest.mark.parametrize("how", ["append", "append_many", "append_batch"])
def test_record_larger_than_max_record_bytes(open_log, how):
    big = b"x" * 2000
    log = open_log(max_record_bytes=1024)
    log.append(b"small")
    leo, size = log.log_end_offset, log.size_bytes
    with pytest.raises(errors.RecordTooLargeError):
        if how == "append":
            log.append(big)
        elif how == "append_many":
            log.append_many([b"ok", big, b"ok"])
        else:
            src = open_log("src")
            src.append(big)
            log.append_batch(bytes(src.read(0).raw))
    assert (log.log_end_offset, log.size_bytes) == (leo, size)
    assert values(log) == [b"small"]


def test_append_batch_rejects_damaged_bytes(open_log):
    src = open_log("src")
    src.append_many([b"one", b"two"])
    raw = bytearray(src.read(0).raw)
    log = open_log()
    log.append(b"a")
    leo, size = log.log_end_offset, log.size_bytes
    damaged = bytearray(raw)
    damaged[-1] ^= 0xFF  # inside the CRC-covered part
    for bad in (bytes(damaged), bytes(raw[:-3]), b"", "text"):
        with pytest.raises(errors.InvalidRecordError):
            log.append_batch(bad)
        assert (log.log_end_offset, log.size_bytes) == (leo, size)
    assert log.append_batch(bytes(raw)) == 1


# -- reads --------------------------------------------------------------------------------------

def test_read_out_of_range_and_at_end(open_log):
    log = open_log()
    log.append_many([b"a", b"b", b"c", b"d"])
    log.set_high_watermark(4)
    log.delete_before(2)
    with pytest.raises(errors.OffsetOutOfRangeError):
        log.read(1)
    with pytest.raises(errors.OffsetOutOfRangeError):
        log.read(5)
    with pytest.raises(errors.OffsetOutOfRangeError):
        log.position_of(4)
    view = log.read(4)
    assert len(view) == 0 and list(view) == [] and not view
    assert view.next_offset == 4
    assert [r.value for r in log.read(2)] == [b"c", b"d"]  # the batch starts at 0; 0 and 1 are hidden


def test_read_respects_max_offset_and_max_bytes(open_log):
    log = open_log()
    for i in range(10):
        log.append_many([b"%d" % i] * 3)  # batches of 3: [0,3) [3,6) ...
    view = log.read(4, max_offset=7)
    assert [r.offset for r in view] == [4, 5, 6]
    assert view.next_offset == 7
    one = log.read(4, max_bytes=1)  # at least one whole batch
    assert [r.offset for r in one] == [4, 5]
    assert len(log.read(4, max_offset=4)) == 0
    with pytest.raises(errors.InvalidArgumentError):
        log.read(0, max_bytes=0)


# -- lifecycle ----------------------------------------------------------------------------------

USE_AFTER_CLOSE = {
    "append": lambda log: log.append(b"x"),
    "append_many": lambda log: log.append_many([b"x"]),
    "append_arrays": lambda log: log.append_arrays(b"x", np.array([1])),
    "append_batch": lambda log: log.append_batch(b"\0" * 70),
    "read": lambda log: log.read(0),
    "position_of": lambda log: log.position_of(0),
    "flush": lambda log: log.flush(),
    "roll": lambda log: log.roll(),
    "truncate_to": lambda log: log.truncate_to(0),
    "delete_before": lambda log: log.delete_before(1),
    "set_high_watermark": lambda log: log.set_high_watermark(1),
    "set_leader_epoch": lambda log: log.set_leader_epoch(1),
    "offset_for_timestamp": lambda log: log.offset_for_timestamp(0),
    "apply_retention": lambda log: log.apply_retention(),
}


@pytest.mark.parametrize("op", sorted(USE_AFTER_CLOSE))
def test_use_after_close_raises(open_log, op):
    log = open_log(retention_bytes=100)
    log.append_many([b"a", b"b"])
    log.close()
    with pytest.raises(errors.LogClosedError):
        USE_AFTER_CLOSE[op](log)


def test_close_is_idempotent_and_context_manager_closes(tmp_path):
    log = PartitionLog.open(tmp_path / "log", flush="never")
    log.append(b"a")
    log.close()
    log.close()
    assert log.closed
    with PartitionLog.open(tmp_path / "log", flush="never") as log2:
        assert values(log2) == [b"a"]
    assert log2.closed
    with pytest.raises(errors.LogClosedError):
        log2.read(0)


def test_opening_the_same_directory_twice_fails(open_log, tmp_path):
    log = open_log()
    log.append(b"a")
    with pytest.raises(errors.LogstoreError):
        PartitionLog.open(tmp_path / "log", flush="never")
    log.close()
    with PartitionLog.open(tmp_path / "log", flush="never") as again:  # the lock went with close()
        assert values(again) == [b"a"]


@pytest.mark.parametrize("cfg", [
    {"segment_size": 1024},
    {"flush_mode": "never"},
    {"segment_bytes": 10},
    {"segment_bytes": "big"},
    {"segment_bytes": True},
    {"segment_ms": 0},
    {"index_interval_bytes": -1},
    {"max_index_bytes": 8},
    {"retention_ms": -1},
    {"retention_bytes": 1.5},
    {"max_record_bytes": 10},
    {"flush": "sometimes"},
    {"flush_interval_ms": 0},
    {"timestamp_type": "now"},
    {"verify_crc": 1},
    {"recovery": "partial"},
])
def test_bad_config_is_a_config_error(tmp_path, cfg):
    with pytest.raises(errors.ConfigError):
        PartitionLog.open(tmp_path / "log", **cfg)
    with PartitionLog.open(tmp_path / "log", flush="never"):  # nothing was left locked
        pass


# -- segments -----------------------------------------------------------------------------------

def check_segments(log):
    segs = log.segments()
    for a, b in zip(segs, segs[1:]):
        assert a["next_offset"] == b["base_offset"]
    assert segs[-1]["next_offset"] == log.log_end_offset
    assert sum(s["size"] for s in segs) == log.size_bytes
    return segs


def test_segment_rolls_by_segment_bytes(open_log, tmp_path):
    log = open_log(segment_bytes=1024)
    for i in range(60):
        log.append_many([b"%03d" % i + b"." * 60])
    segs = check_segments(log)
    assert len(segs) > 3
    log.flush()
    for s in segs:
        assert 0 < s["size"] <= 1024
        assert os.path.getsize(tmp_path / "log" / ("%020d.log" % s["base_offset"])) == s["size"]
    assert values(log) == [b"%03d" % i + b"." * 60 for i in range(60)]


def test_segment_rolls_when_its_index_is_full(open_log, tmp_path):
    log = open_log(index_interval_bytes=0, max_index_bytes=64)  # 8 offset entries, 5 time entries
    for i in range(40):
        log.append_many([b"v%d" % i], timestamps=[1000])  # one batch each, same timestamp
    segs = check_segments(log)
    assert len(segs) > 2
    assert all(s["size"] < 1024 for s in segs)  # not by size
    log.roll()
    for s in log.segments()[:-1]:
        assert os.path.getsize(tmp_path / "log" / ("%020d.index" % s["base_offset"])) <= 64
        assert os.path.getsize(tmp_path / "log" / ("%020d.timeindex" % s["base_offset"])) <= 64
    assert values(log) == [b"v%d" % i for i in range(40)]


def test_segment_rolls_by_segment_ms(open_log):
    log = open_log(segment_ms=50)
    log.append(b"a")
    log.append_many([b"b"])
    time.sleep(0.15)
    log.append(b"c")  # the segment is older than segment_ms: this append starts a new one
    segs = check_segments(log)
    assert len(segs) >= 2 and segs[-1]["base_offset"] == 2
    assert values(log) == [b"a", b"b", b"c"]
    slow = open_log("slow", segment_ms=3_600_000)
    slow.append(b"a")
    time.sleep(0.05)
    slow.append_many([b"b"])
    assert len(slow.segments()) == 1


def test_roll_is_a_noop_on_an_empty_active_segment(open_log):
    log = open_log()
    log.roll()
    assert len(log.segments()) == 1
    log.append(b"a")
    log.roll()
    log.roll()
    assert [s["base_offset"] for s in log.segments()] == [0, 1]


# -- timestamps ---------------------------------------------------------------------------------

def test_offset_for_timestamp_across_segments(open_log):
    log = open_log(segment_bytes=512, index_interval_bytes=64)
    ts = [100 + 10 * i for i in range(60)]
    ts[30] = 5  # not monotonic
    ts[31] = 10_000
    for i in range(0, 60, 3):
        log.append_many([b"x" * 40] * 3, timestamps=ts[i:i + 3])
    assert len(log.segments()) > 3

    def expected(t):
        return next(((o, v) for o, v in enumerate(ts) if v >= t), None)

    for t in [0, 5, 6, 100, 101, 395, 400, 401, 690, 9_999, 10_000, 10_001] + ts:
        assert log.offset_for_timestamp(t) == expected(t), t
    log.set_high_watermark(60)
    log.delete_before(20)
    for t in [0, 5, 100, 300, 400, 10_000, 10_001]:
        want = next(((o, v) for o, v in enumerate(ts) if o >= 20 and v >= t), None)
        assert log.offset_for_timestamp(t) == want
    for bad in (-1, 1.5, "0", None, True):
        with pytest.raises(errors.InvalidArgumentError):
            log.offset_for_timestamp(bad)


def test_log_append_time_stamps_the_append_time(open_log):
    src = open_log("src")
    src.append_many([b"r1", b"r2"], timestamps=[5, 6])
    raw = bytes(src.read(0).raw)
    log = open_log(timestamp_type="log_append_time")
    t0 = int(time.time() * 1000)
    log.append(b"a", timestamp=1)
    log.append_many([b"b", b"c"], timestamps=[2, 3])
    log.append_arrays(b"d", np.array([1]), timestamps=np.array([4]))
    log.append_batch(raw)
    t1 = int(time.time() * 1000)
    got = read_all(log)
    assert [r.value for r in got] == [b"a", b"b", b"c", b"d", b"r1", b"r2"]
    for r in got:
        assert t0 - 1 <= r.timestamp <= t1 + 1
    for b in all_batches(log):
        assert b["attributes"] & 0x08, "the batch says its timestamps are log-append times"
    # the rewritten batches still validate
    RecordBatchView(bytes(log.read(0).raw))


# -- append_arrays ------------------------------------------------------------------------------

def test_append_arrays_with_numpy_buffers(open_log):
    log = open_log()
    vals = [b"alpha", None, b"", b"delta"]
    keys = [b"k1", None, b"", None]
    vbuf = np.frombuffer(b"".join(v or b"" for v in vals), dtype=np.uint8)
    vlen = np.array([-1 if v is None else len(v) for v in vals], dtype=np.int64)
    kbuf = np.frombuffer(b"".join(k or b"" for k in keys), dtype=np.uint8)
    klen = np.array([-1 if k is None else len(k) for k in keys], dtype=np.int32)
    ts = np.array([7, 3, 9, 1], dtype=np.int64)
    assert log.append_arrays(vbuf, vlen, kbuf, klen, ts) == 0
    view = log.read(0)
    assert [(r.offset, r.timestamp, r.key, r.value) for r in view] == [
        (0, 7, b"k1", b"alpha"), (1, 3, None, None), (2, 9, b"", b""), (3, 1, None, b"delta")]
    assert view.value_lengths.tolist() == [5, -1, 0, 5]
    assert view.key_lengths.tolist() == [2, -1, 0, -1]
    buf = view.buffer
    assert bytes(buf[view.value_positions[3]:view.value_positions[3] + 5]) == b"delta"


def test_append_arrays_rejects_inconsistent_lengths(open_log):
    log = open_log()
    log.append(b"a")
    leo, size = log.log_end_offset, log.size_bytes
    for call in (lambda: log.append_arrays(b"abc", np.array([2, 2])),          # past the buffer
                 lambda: log.append_arrays(b"abc", np.array([1, -2])),         # bad length
                 lambda: log.append_arrays(b"ab", np.array([1, 1]), b"k", np.array([1])),
                 lambda: log.append_arrays(b"ab", np.array([1, 1]), timestamps=np.array([1, -1]))):
        with pytest.raises(errors.InvalidRecordError):
            call()
        assert (log.log_end_offset, log.size_bytes) == (leo, size)


# -- durability ---------------------------------------------------------------------------------

def test_flush_always_concurrent_appenders(open_log, tmp_path):
    log = open_log(flush="always")
    per_thread = 60
    results: dict[int, list[tuple[int, bytes]]] = {}
    errs = []

    def work(t):
        try:
            mine = []
            for i in range(per_thread):
                if i % 3 == 2:
                    vals = [b"t%d-%d-a" % (t, i), b"t%d-%d-b" % (t, i)]
                    first = log.append_many(vals)
                    mine.extend((first + j, v) for j, v in enumerate(vals))
                else:
                    v = b"t%d-%d" % (t, i)
                    mine.append((log.append(v), v))
            results[t] = mine
        except BaseException as e:  # pragma: no cover - reported below
            errs.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errs
    offsets = sorted(o for mine in results.values() for o, _ in mine)
    assert offsets == list(range(len(offsets))), "distinct and dense"
    assert log.log_end_offset == len(offsets)
    by_offset = {o: v for mine in results.values() for o, v in mine}
    assert [(r.offset, r.value) for r in read_all(log)] == sorted(by_offset.items())
    for mine in results.values():  # each thread's records are in its own order
        assert [o for o, _ in mine] == sorted(o for o, _ in mine)


def test_flush_interval_moves_the_recovery_point(open_log, tmp_path):
    log = open_log(flush="interval", flush_interval_ms=50)
    log.append_many([b"a", b"b", b"c"])
    deadline = time.monotonic() + 10
    cp = None
    # the flusher moves the recovery point, then writes the checkpoint: wait for both
    while time.monotonic() < deadline:
        cp = read_checkpoint(str(tmp_path / "log"))
        if log.recovery_point == 3 and cp is not None and cp.recovery_point == 3:
            break
        time.sleep(0.06)
    assert log.recovery_point == 3
    assert cp is not None and cp.recovery_point == 3


def test_flush_makes_the_recovery_point_the_log_end(open_log, tmp_path):
    log = open_log()
    log.append_many([b"a", b"b"])
    log.flush()
    assert log.recovery_point == 2
    assert read_checkpoint(str(tmp_path / "log")).recovery_point == 2


def test_batch_appends_are_in_the_file_when_they_return(open_log, tmp_path):
    """Documented: an acknowledged batch append survives a process crash (it is in the OS)."""
    log = open_log(flush_interval_ms=24 * 3600 * 1000)
    seg = tmp_path / "log" / f"{SEG0}.log"
    log.append_many([b"a", b"b"])
    assert os.path.getsize(seg) == log.size_bytes
    log.append_arrays(b"cd", np.array([1, 1]))
    assert os.path.getsize(seg) == log.size_bytes
    src = open_log("src")
    src.append(b"raw")
    log.append_batch(bytes(src.read(0).raw))
    assert os.path.getsize(seg) == log.size_bytes


def test_single_appends_reach_the_file_within_the_flush_interval(open_log, tmp_path):
    log = open_log(flush="never", flush_interval_ms=50)
    log.append(b"a")
    log.append(b"b")
    seg = tmp_path / "log" / f"{SEG0}.log"
    deadline = time.monotonic() + 10
    while os.path.getsize(seg) < log.size_bytes and time.monotonic() < deadline:
        time.sleep(0.02)
    assert os.path.getsize(seg) == log.size_bytes


def test_process_crash_keeps_flushed_and_batch_appended_records(open_log, tmp_path):
    log = open_log(segment_bytes=1024, flush_interval_ms=24 * 3600 * 1000)
    for i in range(20):
        log.append_many([b"flushed-%d" % i] * 3)
    log.set_high_watermark(30)
    log.flush()
    log.append_many([b"acked"])
    # what the OS holds now is what a killed process leaves: copy it while the log is open
    shutil.copytree(tmp_path / "log", tmp_path / "crashed")
    assert not os.path.exists(tmp_path / "crashed" / ".clean_shutdown")
    with PartitionLog.open(tmp_path / "crashed", segment_bytes=1024, flush="never") as again:
        assert not again.recovery.clean_shutdown and not again.recovery.cut
        assert again.log_end_offset == 61 and again.high_watermark == 30
        assert values(again) == [b"flushed-%d" % (i // 3) for i in range(60)] + [b"acked"]
        assert again.append(b"more") == 61


# -- retention and deletion ---------------------------------------------------------------------

def make_segments(log, n_segments, per_segment=3, ts0=1000):
    """``n_segments`` sealed segments of ``per_segment`` records (timestamps ts0 + offset), then an
    empty active one."""
    off = log.log_end_offset
    for _ in range(n_segments):
        log.append_many([b"x" * 50] * per_segment, timestamps=[ts0 + off + i for i in range(per_segment)])
        off += per_segment
        log.roll()


def test_retention_ms_deletes_whole_segments_below_the_high_watermark(open_log):
    log = open_log(retention_ms=1000)
    make_segments(log, 4)  # [0,3) [3,6) [6,9) [9,12), max timestamps 1002 1005 1008 1011
    log.append(b"active", timestamp=1012)
    log.set_high_watermark(7)
    before = log.segments()
    # everything is expired; only segments wholly below the HW go
    assert log.apply_retention(now_ms=10**9) == 2
    segs = log.segments()
    assert segs == before[2:]
    assert log.log_start_offset == 6
    assert values(log)[0] == b"x" * 50 and read_all(log)[0].offset == 6
    log.set_high_watermark(13)
    assert log.apply_retention(now_ms=10**9) == 2  # never the active segment
    assert [s["base_offset"] for s in log.segments()] == [12]
    assert log.log_start_offset == 12
    assert values(log) == [b"active"]


def test_retention_ms_keeps_young_segments(open_log):
    log = open_log(retention_ms=1000)
    make_segments(log, 3)  # max timestamps 1002 1005 1008
    log.set_high_watermark(9)
    assert log.apply_retention(now_ms=2004) == 1  # 1002 < 1004; 1005 is not
    assert log.log_start_offset == 3
    assert log.apply_retention(now_ms=2004) == 0


def test_retention_bytes_deletes_oldest_segments_below_the_high_watermark(open_log):
    log = open_log(retention_bytes=1)
    make_segments(log, 4)
    log.append(b"active")
    size_one = log.segments()[0]["size"]
    log.set_high_watermark(6)
    assert log.apply_retention() == 2
    assert log.log_start_offset == 6
    assert [s["base_offset"] for s in log.segments()] == [6, 9, 12]
    log.set_high_watermark(log.log_end_offset)
    assert log.apply_retention() == 2
    assert [s["base_offset"] for s in log.segments()] == [12]
    assert values(log) == [b"active"]
    # a limit the log fits in deletes nothing
    log2 = open_log("two", retention_bytes=10 * size_one)
    make_segments(log2, 4)
    log2.set_high_watermark(12)
    assert log2.apply_retention() == 0
    assert log2.log_start_offset == 0


def test_retention_bytes_keeps_the_log_at_or_above_the_limit(open_log):
    log = open_log(retention_bytes=1)
    make_segments(log, 4)
    sizes = [s["size"] for s in log.segments()[:-1]]
    limit = sum(sizes[2:]) + 1  # deleting two segments would leave less than the limit
    log2 = open_log("two", retention_bytes=limit)
    make_segments(log2, 4)
    log2.set_high_watermark(12)
    assert log2.apply_retention() == 1
    assert log2.size_bytes >= limit


def test_delete_before(open_log):
    log = open_log()
    make_segments(log, 3)
    log.append(b"active")
    log.set_high_watermark(8)
    with pytest.raises(errors.OffsetOutOfRangeError):
        log.delete_before(9)
    assert log.log_start_offset == 0 and len(log.segments()) == 4
    assert log.delete_before(4) == 1  # [0,3) goes; [3,6) holds offset 4
    assert log.log_start_offset == 4
    assert [r.offset for r in read_all(log)] == list(range(4, 10))
    assert log.delete_before(2) == 0 and log.log_start_offset == 4  # never backwards
    assert log.delete_before(8) == 1
    assert [s["base_offset"] for s in log.segments()] == [6, 9]
    log.close()
    with PartitionLog.open(log.path, flush="never") as again:
        assert again.log_start_offset == 8
        assert [r.offset for r in read_all(again)] == [8, 9]


# -- truncation ---------------------------------------------------------------------------------

def test_truncate_in_the_middle_of_a_batch_removes_the_whole_batch(open_log):
    log = open_log()
    log.append_many([b"a0", b"a1", b"a2"])
    log.append_many([b"b3", b"b4", b"b5"])
    log.append_many([b"c6", b"c7"])
    log.set_high_watermark(8)
    assert log.truncate_to(4) == 3
    assert log.log_end_offset == 3 and log.high_watermark == 3
    assert values(log) == [b"a0", b"a1", b"a2"]
    assert log.truncate_to(3) == 3  # at or past the end: nothing to do
    assert log.truncate_to(100) == 3


def test_appends_after_truncate_land_after_the_new_end(open_log):
    log = open_log()
    log.append_many([b"a0", b"a1", b"a2"])
    log.append_many([b"b3", b"b4", b"b5"])
    log.read(0)  # make sure the batches reached the file
    assert log.truncate_to(4) == 3
    assert log.append(b"new3") == 3
    assert log.append_many([b"new4"]) == 4
    assert values(log) == [b"a0", b"a1", b"a2", b"new3", b"new4"]
    log.flush()
    assert log.size_bytes == os.path.getsize(os.path.join(log.path, f"{SEG0}.log"))


def test_truncate_across_segments(open_log):
    log = open_log()
    make_segments(log, 4)
    log.append(b"tail")
    assert log.truncate_to(5) == 3
    assert [s["base_offset"] for s in check_segments(log)] == [0, 3]
    assert [r.offset for r in read_all(log)] == [0, 1, 2]
    assert log.truncate_to(3) == 3


def test_truncate_below_log_start_restarts_the_log(open_log):
    log = open_log()
    make_segments(log, 3)
    log.set_high_watermark(9)
    log.delete_before(7)
    assert log.truncate_to(5) == 5
    assert (log.log_start_offset, log.high_watermark, log.log_end_offset) == (5, 5, 5)
    assert [s["base_offset"] for s in log.segments()] == [5]
    assert len(log.read(5)) == 0
    with pytest.raises(errors.OffsetOutOfRangeError):
        log.read(4)
    assert log.append(b"again") == 5
    assert [(r.offset, r.value) for r in read_all(log)] == [(5, b"again")]
    log.close()
    with PartitionLog.open(log.path, flush="never") as again:
        assert (again.log_start_offset, again.log_end_offset) == (5, 6)


def test_truncate_inside_a_batch_that_straddles_the_log_start(open_log):
    log = open_log()
    log.append_many([b"a", b"b", b"c", b"d", b"e"])  # one batch [0, 5)
    log.set_high_watermark(5)
    log.delete_before(2)
    leo = log.truncate_to(3)  # the whole batch goes; nothing visible is left: restart at the log start
    assert leo == 2
    assert leo == log.log_end_offset
    assert log.log_start_offset <= log.high_watermark <= log.log_end_offset
    assert len(log.read(log.log_start_offset)) == 0
    assert log.append(b"next") == leo


# -- leader epochs --------------------------------------------------------------------------------

def test_leader_epochs_are_stamped_and_answered(open_log):
    log = open_log()
    log.set_leader_epoch(0)
    log.append(b"a")
    log.set_leader_epoch(3)
    log.append_many([b"b", b"c"])
    log.append(b"d")
    log.set_leader_epoch(5)
    src = open_log("src")
    src.set_leader_epoch(9)
    src.append(b"raw")
    log.append_batch(bytes(src.read(0).raw))
    assert [b["leader_epoch"] for b in all_batches(log)] == [0, 3, 3, 5]
    assert log.epoch_cache == [(0, 0), (3, 1), (5, 4)]
    assert log.end_offset_for_epoch(0) == (0, 1)
    assert log.end_offset_for_epoch(3) == (3, 4)
    assert log.end_offset_for_epoch(4) == (3, 4)
    assert log.end_offset_for_epoch(5) == (5, 5)
    assert log.end_offset_for_epoch(8) == (5, 5)
    with pytest.raises(errors.InvalidArgumentError):
        log.set_leader_epoch(4)
    log.close()
    with PartitionLog.open(log.path, flush="never") as again:
        assert again.epoch_cache == [(0, 0), (3, 1), (5, 4)]
        assert again.leader_epoch == 5


def test_epoch_cache_entries_strictly_increase(open_log):
    log = open_log()
    log.set_leader_epoch(1)
    log.set_leader_epoch(2)  # still nothing appended: epochs 0 and 1 own no offsets
    log.append(b"a")
    entries = log.epoch_cache
    for (e1, o1), (e2, o2) in zip(entries, entries[1:]):
        assert e1 < e2 and o1 < o2, entries
    assert entries[-1] == (2, 0)
    log.close()
    with PartitionLog.open(log.path, flush="never") as again:
        assert again.epoch_cache == entries


def test_epoch_stays_known_after_truncation(open_log):
    log = open_log()
    log.append(b"x")           # epoch 0 at 0
    log.roll()
    log.set_leader_epoch(1)    # epoch 1 from 1
    log.append(b"y")
    assert log.truncate_to(1) == 1
    log.append(b"z")           # still the leader in epoch 1
    assert [b["leader_epoch"] for b in all_batches(log)] == [0, 1]
    assert log.end_offset_for_epoch(1) == (1, 2)
    assert log.end_offset_for_epoch(0) == (0, 1)
    log.close()
    with PartitionLog.open(log.path, flush="never") as again:
        assert again.leader_epoch == 1
        assert again.end_offset_for_epoch(1) == (1, 2)


# -- recovery -------------------------------------------------------------------------------------

def test_corrupt_checkpoint_is_recovered_from_segments(open_log, tmp_path):
    log = open_log(segment_bytes=512)
    for i in range(30):
        log.append_many([b"value-%d" % i] * 2)
    log.set_high_watermark(60)
    log.close()
    path = tmp_path / "log" / CHECKPOINT
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))
    with PartitionLog.open(tmp_path / "log", flush="never") as again:
        assert again.recovery.checkpoint_valid is False
        assert again.log_end_offset == 60
        assert values(again) == [b"value-%d" % (i // 2) for i in range(60)]
        assert again.log_start_offset <= again.high_watermark <= again.log_end_offset
    assert read_checkpoint(str(tmp_path / "log")) is not None  # rewritten


def test_garbage_checkpoint_is_recovered_from_segments(open_log, tmp_path):
    log = open_log()
    log.append_many([b"a", b"b"])
    log.close()
    (tmp_path / "log" / CHECKPOINT).write_bytes(b"\0garbage\xff" * 3)
    with PartitionLog.open(tmp_path / "log", flush="never") as again:
        assert again.recovery.checkpoint_valid is False
        assert values(again) == [b"a", b"b"]


def test_deleted_index_is_rebuilt(open_log, tmp_path):
    cfg = dict(segment_bytes=2048, index_interval_bytes=128, flush="never")
    log = open_log(**cfg)
    for i in range(100):
        log.append_many([b"r%03d" % i + b"-" * 30])
    segs = log.segments()
    assert len(segs) > 2
    expected = [(r.offset, r.value) for r in read_all(log)]
    positions = {o: log.position_of(o) for o in range(100)}
    log.close()
    index = tmp_path / "log" / f"{SEG0}.index"
    written = index.read_bytes()
    assert written, "the writer indexed the first segment"
    os.unlink(index)
    with PartitionLog.open(tmp_path / "log", **cfg) as again:
        assert again.recovery.indexes_rebuilt >= 1
        assert [(r.offset, r.value) for r in read_all(again)] == expected
        for o in range(0, 100, 7):
            assert [r.value for r in again.read(o, max_bytes=1)][0] == b"r%03d" % o + b"-" * 30
            assert again.position_of(o) == positions[o]
    assert index.read_bytes() == written, "rebuilt with the entries the writer made"
    with PartitionLog.open(tmp_path / "log", **cfg) as third:  # and it stays good
        assert third.recovery.indexes_rebuilt == 0
        assert [(r.offset, r.value) for r in read_all(third)] == expected


# -- concurrency ----------------------------------------------------------------------------------

def test_concurrent_readers_never_see_a_partial_batch(open_log):
    log = open_log(segment_bytes=8192, index_interval_bytes=256)
    stop = threading.Event()
    errs: list[BaseException] = []
    reads = [0]

    def value_for(offset):
        return b"offset=%d;" % offset + b"#" * (offset % 37)

    def appender():
        try:
            rnd = random.Random(1)
            while log.log_end_offset < 3000:
                leo = log.log_end_offset
                if rnd.random() < 0.5:
                    assert log.append(value_for(leo)) == leo
                else:
                    n = rnd.randint(1, 20)
                    assert log.append_many([value_for(leo + i) for i in range(n)]) == leo
        except BaseException as e:  # pragma: no cover - reported below
            errs.append(e)
        finally:
            stop.set()

    def reader(seed):
        rnd = random.Random(seed)
        try:
            while not stop.is_set() or reads[0] < 50:
                leo = log.log_end_offset
                offset = rnd.randint(0, leo)
                view = log.read(offset, max_bytes=rnd.choice([1, 300, 5000, 1 << 20]))
                RecordBatchView(bytes(view.raw))  # whole batches, every CRC good
                got = [(r.offset, r.value) for r in view]
                if offset < leo:
                    assert got and got[0][0] == offset
                assert [o for o, _ in got] == list(range(offset, offset + len(got)))
                for o, v in got:
                    assert v == value_for(o)
                reads[0] += 1
        except BaseException as e:  # pragma: no cover - reported below
            errs.append(e)
            stop.set()

    threads = [threading.Thread(target=appender)] + [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errs, errs
    got = read_all(log)
    assert [r.offset for r in got] == list(range(log.log_end_offset))
    assert all(r.value == value_for(r.offset) for r in got)


def test_retention_removes_sealed_segments_wholly_below_the_log_start(open_log):
    # regression: delete_before(LEO) then roll() left a segment with nothing visible in it
    log = open_log()
    log.append_many([b"a", b"b", b"c"])
    log.set_high_watermark(3)
    log.delete_before(3)
    log.roll()
    log.append(b"d")
    assert [s["base_offset"] for s in log.segments()] == [0, 3]
    assert log.apply_retention() == 1
    assert [s["base_offset"] for s in log.segments()] == [3]
    assert [r.value for r in log.read(3)] == [b"d"]


def test_state_queries_on_a_closed_log_raise(open_log):
    log = open_log()
    log.close()
    for call in (lambda: log.segments(), lambda: log.size_bytes, lambda: log.end_offset_for_epoch(0),
                 lambda: log.apply_retention()):
        with pytest.raises(errors.LogClosedError):
            call()


def test_appends_past_the_usable_offset_space_are_refused(tmp_path):
    # a segment based just below the limit (as a log this old would have): the last offsets can
    # be used, then every append is refused up front and nothing is written
    limit = 2**63 - 1 - 2**32
    base = limit - 3
    src = tmp_path / "src"
    with PartitionLog.open(src, flush="never") as log:
        log.append(b"first", timestamp=1)
    dst = tmp_path / "log"
    dst.mkdir()
    data = bytearray((src / ("%020d.log" % 0)).read_bytes())
    data[0:8] = base.to_bytes(8, "big")  # the base offset is outside the CRC
    (dst / ("%020d.log" % base)).write_bytes(bytes(data))
    with PartitionLog.open(dst, flush="never") as log:
        assert log.log_end_offset == base + 1
        assert log.append(b"a") == base + 1
        with pytest.raises(errors.OffsetOutOfRangeError, match="offset space exhausted"):
            log.append_many([b"b", b"c"])
        assert log.append(b"b") == base + 2
        size = log.size_bytes
        for attempt in (lambda: log.append(b"c"), lambda: log.append_many([b"c"]),
                        lambda: log.append_batch(bytes(log.read(base).raw))):
            with pytest.raises(errors.OffsetOutOfRangeError):
                attempt()
        assert log.log_end_offset == limit and log.size_bytes == size
    with PartitionLog.open(dst, flush="never") as log:
        assert log.log_end_offset == limit
        assert [r.value for r in log.read(base)] == [b"first", b"a", b"b"]


def test_scan_reads_every_record_up_to_the_high_watermark_in_order(open_log, tmp_path):
    log = open_log(tmp_path / "p", segment_bytes=1024)
    for i in range(300):
        log.append(b"v%d" % i)
    log.set_high_watermark(250)
    offsets = [r.offset for view in log.scan(max_bytes=256) for r in view]
    assert offsets == list(range(250))
    assert [r.offset for view in log.scan(100, 120) for r in view] == list(range(100, 120))
    assert list(log.scan(250)) == []


def test_scan_goes_on_from_the_new_log_start_after_retention(open_log, tmp_path):
    log = open_log(tmp_path / "p", segment_bytes=1024)
    for i in range(300):
        log.append(b"v%d" % i)
    log.set_high_watermark(log.log_end_offset)
    scan = log.scan(0, max_bytes=256)
    first = next(scan)
    log.delete_before(200)
    rest = [r.offset for view in scan for r in view]
    assert first[0].offset == 0
    assert rest and rest[0] >= log.log_start_offset and rest == list(range(rest[0], 300))
