"""Crash and corruption tests of PartitionLog.

Part 1 kills a writer process (``crash_writer.py``) with SIGKILL at seeded random instants and
checks that everything it reported durable survives, that the recovered log is dense and reads
back exactly what was written, and that the open after the crash is reported unclean.

Part 2 damages the files of a closed log in-process (torn tails, flipped bytes, trailing garbage,
broken indexes and checkpoints, leftovers) and checks how the next open recovers.

Every record is a pure function of its offset (``crash_writer.record_for``), so every read is
compared with what must be there: a read either returns exactly the written bytes or raises
``CorruptRecordError``; it never returns anything else.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from logstore import PartitionLog, errors
from logstore.log.checkpoint import Checkpoint

pytestmark = pytest.mark.slow

WRITER = Path(__file__).with_name("crash_writer.py")
_spec = importlib.util.spec_from_file_location("logstore_tests_crash_writer", WRITER)
crash_writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crash_writer)
record_for = crash_writer.record_for

# the writer must import logstore exactly as this process does
WRITER_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}

LOGGER = "logstore.log"
CLEAN_MARKER = ".clean_shutdown"
CHECKPOINT = "partition.checkpoint"

# batch v2 header layout
BASE_OFFSET_AT, LENGTH_AT, EPOCH_AT, MAGIC_AT, CRC_AT, ATTRIBUTES_AT, LAST_DELTA_AT = 0, 8, 12, 16, 17, 21, 23
HEADER_SIZE = 61


# -- deterministic content ----------------------------------------------------------------------

def expected(offset: int) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]], int]:
    key, value, headers, ts = record_for(offset)
    return key, value, headers or [], ts


def assert_record(rec) -> None:
    key, value, headers, ts = expected(rec.offset)
    assert rec.value == value, f"value of offset {rec.offset} differs from what was written"
    assert rec.key == key, f"key of offset {rec.offset} differs"
    assert rec.headers == headers, f"headers of offset {rec.offset} differ"
    assert rec.timestamp == ts, f"timestamp of offset {rec.offset} differs"


def assert_view(view, first: int) -> int:
    """Every record of ``view`` matches the generator and offsets run densely from ``first``;
    the numpy columns agree with the records. Returns the offset after the last record."""
    records = list(view)
    assert records, f"read({first}) returned no records below the log end offset"
    buf = bytes(view.buffer)
    offsets, timestamps = view.offsets, view.timestamps
    vpos, vlen = view.value_positions, view.value_lengths
    assert len(offsets) == len(records)
    for i, rec in enumerate(records):
        assert rec.offset == first + i, f"offsets are not dense: expected {first + i}, got {rec.offset}"
        assert_record(rec)
        assert int(offsets[i]) == rec.offset and int(timestamps[i]) == rec.timestamp
        value = expected(rec.offset)[1]
        if value is None:
            assert int(vlen[i]) == -1
        else:
            assert buf[int(vpos[i]):int(vpos[i]) + int(vlen[i])] == value
    assert view.next_offset == first + len(records)
    return first + len(records)


def check_records(log: PartitionLog, start: int | None = None, end: int | None = None,
                  max_bytes: int = 64 * 1024) -> None:
    """Read [start, end) back; everything must be present, dense, and as written."""
    start = log.log_start_offset if start is None else start
    end = log.log_end_offset if end is None else end
    offset = start
    while offset < end:
        offset = assert_view(log.read(offset, max_bytes=max_bytes, max_offset=end), offset)
    assert offset == end
    if end == log.log_end_offset:
        assert list(log.read(end)) == []
        with pytest.raises(errors.OffsetOutOfRangeError):
            log.read(end + 1)


def check_readable(log: PartitionLog) -> int:
    """The property: batch by batch, a read either raises CorruptRecordError or returns exactly
    what was written at the requested offsets. Returns how many offsets raised."""
    offset, bad = log.log_start_offset, 0
    while offset < log.log_end_offset:
        try:
            view = log.read(offset, max_bytes=1)
        except errors.CorruptRecordError:
            bad += 1
            offset += 1
            continue
        offset = assert_view(view, offset)
    return bad


def check_segments(log: PartitionLog) -> None:
    segs = log.segments()
    assert segs[0]["base_offset"] <= log.log_start_offset
    for a, b in zip(segs, segs[1:]):
        assert a["next_offset"] == b["base_offset"], f"segments are not contiguous: {segs}"
    assert segs[-1]["next_offset"] == log.log_end_offset


def check_timestamps(log: PartitionLog, rng: random.Random, n: int = 40) -> None:
    """offset_for_timestamp finds the first record whose timestamp is >= the one asked for."""
    start, end = log.log_start_offset, log.log_end_offset
    times = [record_for(o)[3] for o in range(start, end)]

    def expect(ts: int) -> tuple[int, int] | None:
        return next(((start + i, t) for i, t in enumerate(times) if t >= ts), None)

    probes = [crash_writer.TS0 - 1000, max(times) + 1, max(times), min(times)]
    spikes = [t for i, t in enumerate(times) if t - (crash_writer.TS0 + 10 * (start + i)) > 100]
    assert spikes, "the generator should produce timestamp spikes in this range"
    probes += [t + d for t in spikes for d in (-1, 0, 1)]
    probes += [t + d for t in rng.sample(times, min(n, len(times))) for d in (-1, 0, 1)]
    for seg in log.segments():  # every segment knows its largest timestamp, wherever it is
        if seg["next_offset"] > max(start, seg["base_offset"]):
            seg_max = max(times[max(start, seg["base_offset"]) - start:seg["next_offset"] - start])
            if seg["base_offset"] >= start:
                assert seg["max_timestamp"] == seg_max, f"max timestamp of segment {seg['base_offset']}"
            probes += [seg_max, seg_max + 1]
    for ts in probes:
        assert log.offset_for_timestamp(ts) == expect(ts), f"offset_for_timestamp({ts})"


# -- writing -------------------------------------------------------------------------------------

def write_records(log: PartitionLog, n: int, rng: random.Random, most: int = 40) -> None:
    """Append the generator's records for the next ``n`` offsets, mixing single appends (which
    share open batches) and append_many (of at most ``most`` records)."""
    end = log.log_end_offset + n
    while log.log_end_offset < end:
        first = log.log_end_offset
        r = rng.random()
        if r < 0.3:
            count, many = 1, False
        elif r < 0.7:
            count, many = min(rng.randint(2, max(2, most * 3 // 4)), end - first), True
        else:
            count, many = min(rng.randint(2, max(2, most)), end - first), False
        if many:
            recs = [record_for(first + i) for i in range(count)]
            got = log.append_many([v for _, v, _, _ in recs], keys=[k for k, _, _, _ in recs],
                                  headers=[h for _, _, h, _ in recs], timestamps=[t for _, _, _, t in recs])
            assert got == first
        else:
            for i in range(count):
                key, value, headers, ts = record_for(first + i)
                assert log.append(value, key=key, headers=headers, timestamp=ts) == first + i


SMALL = dict(segment_bytes=8192, index_interval_bytes=512, max_index_bytes=4096, flush="never")


def build_log(path: Path, n: int, seed: int, most: int = 40, **cfg) -> int:
    """A cleanly closed log holding the generator's offsets [0, n); returns n."""
    rng = random.Random(seed)
    with PartitionLog.open(path, **{**SMALL, **cfg}) as log:
        write_records(log, n, rng, most)
        assert log.log_end_offset == n
    return n


def make_unclean(path: Path) -> None:
    os.unlink(path / CLEAN_MARKER)


@dataclasses.dataclass
class Batch:
    file: Path
    position: int
    size: int
    base_offset: int
    last_offset: int


def log_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.log"))


def batches(path: Path) -> list[Batch]:
    """Every batch of a healthy log, from the files themselves."""
    out = []
    for f in log_files(path):
        data = f.read_bytes()
        pos = 0
        while pos < len(data):
            base, length = struct.unpack_from(">qi", data, pos)
            (delta,) = struct.unpack_from(">i", data, pos + LAST_DELTA_AT)
            size = 12 + length
            assert size >= HEADER_SIZE and pos + size <= len(data), f"{f} is not made of whole batches"
            out.append(Batch(f, pos, size, base, base + delta))
            pos += size
    return out


def flip_byte(file: Path, position: int, mask: int) -> None:
    assert mask & 0xFF
    with open(file, "r+b") as f:
        f.seek(position)
        (b,) = f.read(1)
        f.seek(position)
        f.write(bytes([b ^ mask]))


def warnings_logged(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def extend_and_reopen(path: Path, log: PartitionLog, rng: random.Random, n: int = 60, **cfg) -> None:
    """(h): a recovered log takes more appends, closes cleanly, and reopens clean and intact, then
    survives one more unclean open untouched."""
    leo = log.log_end_offset
    write_records(log, n, rng)
    check_records(log, max(log.log_start_offset, leo - 5))
    log.close()
    with PartitionLog.open(path, **{**SMALL, **cfg}) as again:
        rep = again.recovery
        assert rep.clean_shutdown and rep.checkpoint_valid
        assert rep.segments_scanned == 0 and rep.indexes_rebuilt == 0 and not rep.cut
        assert again.log_end_offset == leo + n
        check_segments(again)
        check_records(again)
    make_unclean(path)
    with PartitionLog.open(path, **{**SMALL, **cfg}) as again:
        assert not again.recovery.clean_shutdown and not again.recovery.cut
        assert again.log_end_offset == leo + n
        check_records(again)


# =================================================================================================
# part 1: kill -9 at random instants
# =================================================================================================

KILL_MODES = {
    "always": dict(flush="always", segment_bytes=16384, index_interval_bytes=1024, max_index_bytes=8192),
    # tiny indexes: rolls also happen because an index is full
    "interval": dict(flush="interval", flush_interval_ms=5, segment_bytes=8192, index_interval_bytes=64,
                     max_index_bytes=128, _flush_prob=0.05),
    "never": dict(flush="never", segment_bytes=32768, index_interval_bytes=4096, max_index_bytes=16384,
                  _flush_prob=0.1),
}
MAX_RECORDS = 12_000  # per writer run, so verification stays cheap


@dataclasses.dataclass
class WriterRun:
    ready_leo: int | None  # None: killed before the log was open
    durable: int  # every offset below this was reported durable
    done: bool


def public_config(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def run_and_kill(path: Path, cfg: dict, seed: int, delay: float, *, from_spawn: bool = False) -> WriterRun:
    """Start a writer on ``path``, SIGKILL it ``delay`` seconds after it reports the log open
    (or after it was started, with ``from_spawn``), and return what it reported."""
    err_path = path.parent / f"writer-{path.name}-{seed}.stderr"
    args = [sys.executable, str(WRITER), str(path), json.dumps({**cfg, "_max_records": MAX_RECORDS}), str(seed)]
    lines: list[list[str]] = []
    ready = threading.Event()
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, env=WRITER_ENV)

    def pump() -> None:
        for raw in proc.stdout:
            if not raw.endswith(b"\n"):
                break  # cannot happen (one small write per line), but never parse half a line
            lines.append(raw.decode().split())
            if lines[-1][0] == "READY":
                ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        if not from_spawn:
            deadline = time.monotonic() + 60
            while not ready.wait(0.02):
                assert proc.poll() is None, f"writer died before opening the log:\n{err_path.read_text()}"
                assert time.monotonic() < deadline, "writer did not open the log within 60 s"
        time.sleep(delay)
        assert proc.poll() is None, f"writer exited on its own:\n{err_path.read_text()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        reader.join(30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, err_path.read_text()
    ready_leo = next((int(line[1]) for line in lines if line[0] == "READY"), None)
    durable = max([int(line[1]) for line in lines if line[0] == "D"], default=0)
    if ready_leo is not None:
        durable = max(durable, ready_leo)  # recovered data is on disk once open returns
    return WriterRun(ready_leo, durable, any(line[0] == "DONE" for line in lines))


def verify_after_crash(path: Path, cfg: dict, durable: int) -> int:
    """Recover ``path`` and check it; returns the recovered log end offset."""
    cfg = {**public_config(cfg), "flush": "never"}
    with PartitionLog.open(path, **cfg) as log:
        assert log.recovery.clean_shutdown is False
        assert log.log_start_offset == 0
        leo = log.log_end_offset
        assert leo >= durable, f"records reported durable were lost: log end {leo} < {durable}"
        check_segments(log)
        check_records(log)
    with PartitionLog.open(path, **cfg) as log:
        rep = log.recovery
        assert rep.clean_shutdown and rep.checkpoint_valid
        assert rep.segments_scanned == 0 and rep.indexes_rebuilt == 0 and not rep.cut
        assert log.log_end_offset == leo
        check_segments(log)
        check_records(log, 0, min(leo, 200))
        check_records(log, max(0, leo - 200))
    return leo


@pytest.mark.parametrize("mode,seed", [("always", 11), ("always", 12), ("interval", 21), ("interval", 22),
                                       ("never", 31), ("never", 32)])
def test_kill9_while_appending(tmp_path, mode, seed):
    path = tmp_path / "log"
    cfg = KILL_MODES[mode]
    delay = random.Random(seed).uniform(0.05, 0.5)
    run = run_and_kill(path, cfg, seed, delay)
    assert run.ready_leo == 0
    verify_after_crash(path, cfg, run.durable)


def test_kill9_during_reopen_and_append(tmp_path):
    """Crash, then crash again while a new writer recovers the log and appends to it, and again.
    Durability claims accumulate: nothing reported durable in any run may ever disappear."""
    path = tmp_path / "log"
    rng = random.Random(4242)
    durable = 0
    leo = 0
    plan = [("never", False), ("always", False), ("interval", False), ("never", True), ("always", False)]
    for i, (mode, from_spawn) in enumerate(plan):
        cfg = KILL_MODES[mode]
        # from_spawn: the kill may land before, during or after the recovery of the crashed log
        delay = rng.uniform(0.0, 0.4) if from_spawn else rng.uniform(0.05, 0.4)
        run = run_and_kill(path, cfg, 1000 + i, delay, from_spawn=from_spawn)
        if run.ready_leo is not None:
            # the writer's recovery of the crashed log finds what our recovery of a copy found
            assert run.ready_leo == leo, f"run {i}: reopened at {run.ready_leo}, expected {leo}"
        durable = max(durable, run.durable)
        # verify a copy, so that the next writer still finds the raw crashed state
        copy = tmp_path / f"verify-{i}"
        shutil.copytree(path, copy)
        leo = verify_after_crash(copy, cfg, durable)
        shutil.rmtree(copy)
    assert verify_after_crash(path, KILL_MODES["never"], durable) == leo


# =================================================================================================
# part 2: torn and corrupted files
# =================================================================================================

# (a) torn tails -------------------------------------------------------------------------------

def test_torn_active_segment_is_cut_to_last_whole_batch(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "log"
    build_log(path, 500, seed=1)
    rng = random.Random(101)
    for _ in range(8):
        tail = [b for b in batches(path) if b.file == log_files(path)[-1]]
        victim = rng.choice(tail)
        cut_at = victim.position + rng.randint(1, victim.size - 1)  # mid-batch
        os.truncate(victim.file, cut_at)
        make_unclean(path)
        caplog.clear()
        log = PartitionLog.open(path, **SMALL)
        try:
            rep = log.recovery
            assert not rep.clean_shutdown and rep.cut
            assert rep.truncated_bytes == cut_at - victim.position
            assert log.log_end_offset == victim.base_offset
            assert victim.file.stat().st_size == victim.position
            assert warnings_logged(caplog)
            check_segments(log)
            check_records(log)
            # (h) append again so the next round has a tail to tear
            write_records(log, rng.randint(20, 60), rng)
            check_records(log, victim.base_offset)
        finally:
            log.close()
    with PartitionLog.open(path, **SMALL) as log:
        extend_and_reopen(path, log, rng)


def test_truncation_on_a_batch_boundary_loses_only_later_batches(tmp_path):
    path = tmp_path / "log"
    build_log(path, 300, seed=2)
    tail = [b for b in batches(path) if b.file == log_files(path)[-1]]
    victim = tail[len(tail) // 2]
    os.truncate(victim.file, victim.position)
    make_unclean(path)
    with PartitionLog.open(path, **SMALL) as log:
        assert log.recovery.truncated_bytes == 0
        assert log.log_end_offset == victim.base_offset
        check_records(log)
        extend_and_reopen(path, log, random.Random(2))


def test_torn_sealed_segment_drops_everything_after_it(tmp_path, caplog):
    """A crash cannot tear a sealed segment, but a damaged file can be shorter: the log must not
    skip the hole and serve later segments (offsets would not be dense)."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "log"
    build_log(path, 500, seed=3)
    files = log_files(path)
    assert len(files) >= 5
    victim = [b for b in batches(path) if b.file == files[2]][-1]
    os.truncate(victim.file, victim.position + victim.size // 2)
    make_unclean(path)
    with PartitionLog.open(path, **SMALL) as log:
        rep = log.recovery
        assert rep.cut and rep.segments_dropped == len(files) - 3
        assert log.log_end_offset == victim.base_offset
        assert warnings_logged(caplog)
        check_segments(log)
        check_records(log)
        assert log_files(path) == files[:3]
        extend_and_reopen(path, log, random.Random(3))


# (b) a flipped byte past the recovery point ------------------------------------------------------

FLIP_REGIONS = ["records", "attributes", "crc", "magic", "length", "base_offset_up", "base_offset_down"]


def pick_flip(region: str, candidates: list[Batch], rng: random.Random) -> tuple[Batch, int, int]:
    """(batch, file position, xor mask) of a one-byte change in ``region`` of one of ``candidates``."""
    if region == "base_offset_down":  # clear a set bit of the low byte: the base offset goes down
        victim = rng.choice([b for b in candidates if b.base_offset & 0xFF])
        bits = [1 << i for i in range(8) if victim.base_offset & (1 << i)]
        return victim, victim.position + 7, rng.choice(bits)
    victim = rng.choice(candidates)
    if region == "base_offset_up":  # set a clear bit of the second-lowest byte: it goes up
        bits = [1 << i for i in range(8) if not (victim.base_offset >> 8) & (1 << i)]
        return victim, victim.position + 6, rng.choice(bits)
    start, end = {"records": (HEADER_SIZE, victim.size), "attributes": (ATTRIBUTES_AT, ATTRIBUTES_AT + 2),
                  "crc": (CRC_AT, CRC_AT + 4), "magic": (MAGIC_AT, MAGIC_AT + 1),
                  "length": (LENGTH_AT, LENGTH_AT + 4)}[region]
    return victim, victim.position + rng.randrange(start, end), rng.randint(1, 255)


@pytest.mark.parametrize("region", FLIP_REGIONS)
def test_flipped_byte_in_last_segment_cuts_the_log_there(tmp_path, caplog, region):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "log"
    build_log(path, 400, seed=4)
    rng = random.Random(region)
    tail = [b for b in batches(path) if b.file == log_files(path)[-1]]
    victim, pos, mask = pick_flip(region, tail, rng)
    flip_byte(victim.file, pos, mask)
    size_before = victim.file.stat().st_size
    make_unclean(path)  # the last segment is past the recovery point of an unclean open
    with PartitionLog.open(path, **SMALL) as log:
        rep = log.recovery
        assert not rep.clean_shutdown
        assert rep.cut, f"{region} flip at {pos} was not detected"
        assert log.log_end_offset == victim.base_offset
        assert rep.truncated_bytes == size_before - victim.position
        assert victim.file.stat().st_size == victim.position
        assert warnings_logged(caplog)
        check_segments(log)
        check_records(log)  # nothing after the cut is served
        extend_and_reopen(path, log, rng)


def test_flipped_leader_epoch_never_changes_record_bytes(tmp_path):
    """The leader epoch is outside the CRC (a leader rewrites it): a flip there cannot always be
    detected, but no record may come back different."""
    path = tmp_path / "log"
    build_log(path, 300, seed=5)
    tail = [b for b in batches(path) if b.file == log_files(path)[-1]]
    victim = tail[len(tail) // 2]
    flip_byte(victim.file, victim.position + EPOCH_AT + 3, 0x01)
    make_unclean(path)
    with PartitionLog.open(path, **SMALL) as log:
        assert log.log_end_offset >= victim.base_offset
        check_records(log)
        extend_and_reopen(path, log, random.Random(5))


@pytest.mark.parametrize("region", ["records", "crc", "length", "base_offset_up"])
def test_flipped_byte_in_middle_segment_without_checkpoint_cuts_there(tmp_path, caplog, region):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "log"
    build_log(path, 500, seed=6)
    files = log_files(path)
    assert len(files) >= 5
    rng = random.Random("middle" + region)
    victim, pos, mask = pick_flip(region, [b for b in batches(path) if b.file == files[2]], rng)
    flip_byte(victim.file, pos, mask)
    make_unclean(path)
    os.unlink(path / CHECKPOINT)  # no recovery point: every segment is scanned
    with PartitionLog.open(path, **SMALL) as log:
        rep = log.recovery
        assert not rep.checkpoint_valid and rep.cut
        assert rep.segments_dropped == len(files) - 3
        assert log.log_end_offset == victim.base_offset
        assert log_files(path) == files[:3]
        assert warnings_logged(caplog)
        check_segments(log)
        check_records(log)
        extend_and_reopen(path, log, rng)


# (c) a flipped byte below the recovery point ------------------------------------------------------

@pytest.mark.parametrize("unclean", [False, True], ids=["clean", "unclean"])
def test_flipped_byte_in_old_segment_raises_on_read_then_full_recovery_cuts(tmp_path, caplog, unclean):
    path = tmp_path / "log"
    leo = build_log(path, 500, seed=7)
    files = log_files(path)
    assert len(files) >= 5
    rng = random.Random(7 + unclean)
    old = [b for b in batches(path) if b.file == files[1]]
    victim = rng.choice(old)
    flip_byte(victim.file, victim.position + rng.randrange(HEADER_SIZE, victim.size), rng.randint(1, 255))
    if unclean:
        make_unclean(path)
    with PartitionLog.open(path, **SMALL) as log:
        rep = log.recovery
        assert rep.clean_shutdown is not unclean
        assert rep.segments_scanned <= (1 if unclean else 0)  # at most the last segment
        assert not rep.cut and log.log_end_offset == leo
        for offset in {victim.base_offset, victim.last_offset, rng.randint(victim.base_offset, victim.last_offset)}:
            with pytest.raises(errors.CorruptRecordError):
                log.read(offset)
            with pytest.raises(errors.CorruptRecordError):
                log.read(offset, max_bytes=1)
        # a read that would span the damaged batch either fails or stops before it
        if victim.position > 0:
            before = victim.base_offset - 1
            try:
                view = log.read(before, max_bytes=1 << 20)
            except errors.CorruptRecordError:
                pass
            else:
                assert assert_view(view, before) <= victim.base_offset
        assert check_readable(log) == victim.last_offset - victim.base_offset + 1
    caplog.set_level(logging.WARNING, logger=LOGGER)
    caplog.clear()
    with PartitionLog.open(path, **SMALL, recovery="full") as log:
        rep = log.recovery
        assert rep.cut and rep.segments_scanned >= 2
        assert rep.segments_dropped == len(files) - 2
        assert log.log_end_offset == victim.base_offset
        assert warnings_logged(caplog)
        check_segments(log)
        check_records(log)
        extend_and_reopen(path, log, rng)


# (d) garbage after the last batch ----------------------------------------------------------------

GARBAGE = ["zeros_short", "zeros_long", "random", "fake_header", "duplicate_batch"]


def make_garbage(kind: str, path: Path, rng: random.Random) -> bytes:
    if kind == "zeros_short":
        return bytes(rng.randint(1, 60))
    if kind == "zeros_long":
        return bytes(rng.randint(61, 5000))
    if kind == "random":
        return rng.randbytes(rng.randint(1, 3000))
    if kind == "fake_header":  # a plausible header promising more bytes than there are
        last = batches(path)[-1]
        hdr = bytearray(last.file.read_bytes()[last.position:last.position + HEADER_SIZE])
        struct.pack_into(">qi", hdr, 0, last.last_offset + 1, 4000)
        return bytes(hdr) + rng.randbytes(100)
    if kind == "duplicate_batch":  # a whole valid batch written twice
        last = batches(path)[-1]
        return last.file.read_bytes()[last.position:last.position + last.size]
    raise AssertionError(kind)


@pytest.mark.parametrize("unclean", [True, False], ids=["unclean", "clean"])
@pytest.mark.parametrize("kind", GARBAGE)
def test_garbage_after_the_last_batch_is_removed(tmp_path, kind, unclean):
    path = tmp_path / "log"
    leo = build_log(path, 250, seed=8)
    rng = random.Random(GARBAGE.index(kind))
    active = log_files(path)[-1]
    size = active.stat().st_size
    garbage = make_garbage(kind, path, rng)
    with open(active, "ab") as f:
        f.write(garbage)
    if unclean:
        make_unclean(path)
    with PartitionLog.open(path, **SMALL) as log:
        rep = log.recovery
        assert rep.truncated_bytes == len(garbage)
        assert rep.segments_dropped == 0
        assert log.log_end_offset == leo
        assert active.stat().st_size == size
        check_records(log)
        extend_and_reopen(path, log, rng)


# (e) damaged indexes -----------------------------------------------------------------------------

INDEX_DAMAGE = ["ones", "zeros", "swap", "drop_last_entry", "truncate_partial", "truncate_empty", "delete"]
DETECTABLE = {"ones", "zeros", "swap"}
ENTRY_SIZE = {".index": 8, ".timeindex": 12}


def index_entries(log_file: Path) -> int:
    """Entries in the smaller of a closed segment's two (trimmed) indexes."""
    return min(log_file.with_suffix(s).stat().st_size // n for s, n in ENTRY_SIZE.items())


def max_timestamp_batch(table: list[Batch], file: Path) -> int:
    """Index (within its segment) of the batch holding the segment's largest timestamp."""
    mine = [b for b in table if b.file == file]
    peaks = [max(record_for(o)[3] for o in range(b.base_offset, b.last_offset + 1)) for b in mine]
    return peaks.index(max(peaks))


def damage_index(file: Path, how: str, entry_size: int, rng: random.Random) -> None:
    data = bytearray(file.read_bytes())
    n = len(data) // entry_size
    assert n >= 2, f"{file} needs at least two entries for this test"
    if how == "ones":
        file.write_bytes(b"\xff" * len(data))
    elif how == "zeros":
        file.write_bytes(bytes(len(data)))
    elif how == "swap":
        i = rng.randrange(n - 1)
        a, b = data[i * entry_size:(i + 1) * entry_size], data[(i + 1) * entry_size:(i + 2) * entry_size]
        data[i * entry_size:(i + 2) * entry_size] = b + a
        file.write_bytes(bytes(data))
    elif how == "drop_last_entry":
        os.truncate(file, len(data) - entry_size)
    elif how == "truncate_partial":  # at least the last entry goes, maybe half of another stays
        os.truncate(file, rng.randrange(1, len(data) - entry_size + 1))
    elif how == "truncate_empty":
        os.truncate(file, 0)
    elif how == "delete":
        file.unlink()
    else:
        raise AssertionError(how)


@pytest.fixture(scope="module")
def index_template(tmp_path_factory) -> Path:
    """A closed log of small batches (so every segment has several index entries)."""
    path = tmp_path_factory.mktemp("index-template") / "log"
    build_log(path, 300, seed=9, most=4, index_interval_bytes=256)
    rng = random.Random(9)
    while index_entries(log_files(path)[-1]) < 2:  # the last segment needs a few entries too
        with PartitionLog.open(path, **{**SMALL, "index_interval_bytes": 256}) as log:
            write_records(log, 10, rng, most=4)
    return path


@pytest.mark.parametrize("suffix", [".index", ".timeindex"])
@pytest.mark.parametrize("how", INDEX_DAMAGE)
def test_damaged_index_is_rebuilt_and_lookups_stay_correct(tmp_path, index_template, how, suffix):
    path = tmp_path / "log"
    shutil.copytree(index_template, path)
    rng = random.Random(f"{how}{suffix}")
    table = batches(path)
    leo = table[-1].last_offset + 1
    files = log_files(path)
    # damage a sealed segment whose largest timestamp is in an early batch (losing the end of its
    # time index must not make it look younger than it is), and the last segment
    sealed = [f for f in files[:-1] if index_entries(f) >= 2 and max_timestamp_batch(table, f) < len(
        [b for b in table if b.file == f]) - 2]
    assert sealed, "the generator should put a timestamp spike early in some segment"
    for f in (sealed[0], files[-1]):
        damage_index(f.with_suffix(suffix), how, ENTRY_SIZE[suffix], rng)
    with PartitionLog.open(path, **SMALL) as log:
        rep = log.recovery
        assert rep.clean_shutdown and not rep.cut
        if how in DETECTABLE:
            assert rep.indexes_rebuilt >= 2 or rep.segments_scanned >= 2
        assert log.log_end_offset == leo
        check_segments(log)
        check_records(log)
        for b in table:  # the (rebuilt) offset index leads every offset to its batch
            for offset in {b.base_offset, b.last_offset}:
                assert log.position_of(offset) == (int(b.file.stem), b.position)
        check_timestamps(log, rng)
        extend_and_reopen(path, log, rng)
    with PartitionLog.open(path, **SMALL) as log:
        check_timestamps(log, rng)


def test_damaged_indexes_after_a_crash(tmp_path):
    path = tmp_path / "log"
    build_log(path, 300, seed=10, most=4, index_interval_bytes=256)
    rng = random.Random(10)
    files = log_files(path)
    damaged = [f for f in files[:-1] if index_entries(f) >= 2]
    assert len(damaged) >= 3
    for f in damaged:
        suffix = rng.choice(sorted(ENTRY_SIZE))
        damage_index(f.with_suffix(suffix), rng.choice(sorted(DETECTABLE)), ENTRY_SIZE[suffix], rng)
    make_unclean(path)
    with PartitionLog.open(path, **SMALL) as log:
        rep = log.recovery
        assert rep.indexes_rebuilt >= len(damaged)
        assert not rep.cut and log.log_end_offset == 300
        check_records(log)
        check_timestamps(log, rng)
        extend_and_reopen(path, log, rng)


# (f) damaged checkpoint ------------------------------------------------------------------------

CHECKPOINT_DAMAGE = ["missing", "empty", "garbage", "bad_checksum", "truncated", "negative"]


@pytest.mark.parametrize("unclean", [False, True], ids=["clean", "unclean"])
@pytest.mark.parametrize("how", CHECKPOINT_DAMAGE)
def test_damaged_checkpoint_recovers_every_segment(tmp_path, caplog, how, unclean):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "log"
    leo = build_log(path, 300, seed=11)
    nseg = len(log_files(path))
    rng = random.Random(how)
    cp = path / CHECKPOINT
    data = cp.read_bytes()
    if how == "missing":
        cp.unlink()
    elif how == "empty":
        cp.write_bytes(b"")
    elif how == "garbage":
        cp.write_bytes(rng.randbytes(len(data)))
    elif how == "bad_checksum":
        i = data.index(b"recovery_point ") + len(b"recovery_point ")
        cp.write_bytes(data[:i] + b"9" + data[i + 1:])
    elif how == "truncated":
        cp.write_bytes(data[:len(data) // 2])
    elif how == "negative":  # well formed and checksummed, but nonsense
        cp.write_bytes(Checkpoint(-5, 0, 0).encode())
    if unclean:
        make_unclean(path)
    with PartitionLog.open(path, **SMALL) as log:
        rep = log.recovery
        assert not rep.checkpoint_valid
        assert rep.segments_scanned == nseg
        assert not rep.cut
        assert any("checkpoint" in r.getMessage() for r in warnings_logged(caplog))
        assert log.log_end_offset == leo and log.log_start_offset == 0
        check_segments(log)
        check_records(log)
    with PartitionLog.open(path, **SMALL) as log:  # a good checkpoint was written again
        assert log.recovery.checkpoint_valid and log.recovery.clean_shutdown
        assert log.recovery.segments_scanned == 0
        extend_and_reopen(path, log, rng)


def test_damaged_checkpoint_and_torn_tail(tmp_path):
    path = tmp_path / "log"
    build_log(path, 300, seed=12)
    tail = batches(path)[-1]
    os.truncate(tail.file, tail.position + 30)
    (path / CHECKPOINT).write_bytes(b"logstore-checkpoint 1\nrecovery_point 300\n")
    make_unclean(path)
    with PartitionLog.open(path, **SMALL) as log:
        assert not log.recovery.checkpoint_valid and log.recovery.truncated_bytes == 30
        assert log.log_end_offset == tail.base_offset
        check_records(log)
        extend_and_reopen(path, log, random.Random(12))


# (g) leftovers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("unclean", [False, True], ids=["clean", "unclean"])
def test_leftover_temp_checkpoint_and_orphans_are_cleaned_up(tmp_path, unclean):
    path = tmp_path / "log"
    leo = build_log(path, 200, seed=13)
    with PartitionLog.open(path, **SMALL) as log:
        log.set_high_watermark(150)
        log.delete_before(40)
        start = log.log_start_offset
    before = sorted(os.listdir(path))
    # a checkpoint write that crashed before its rename: well formed, but must not be adopted
    (path / (CHECKPOINT + ".tmp")).write_bytes(Checkpoint(10, 5, 5).encode())
    strays = ["%020d.index" % 999_999, "%020d.timeindex" % 999_999, "%020d.index" % 3,
              "00000000000000000000.log.deleted", "%020d.log.cleaned" % 77, "%020d.index.tmp" % 0,
              "%020d.timeindex.tmp" % 150]
    for name in strays:
        (path / name).write_bytes(b"\x00" * 24)
    if unclean:
        make_unclean(path)
    with PartitionLog.open(path, **SMALL) as log:
        rep = log.recovery
        assert rep.stray_files_removed >= len(strays)
        assert not rep.cut and rep.checkpoint_valid
        for name in strays + [CHECKPOINT + ".tmp"]:
            assert not (path / name).exists(), f"{name} was left behind"
        assert sorted(set(os.listdir(path)) - {CLEAN_MARKER}) == sorted(set(before) - {CLEAN_MARKER})
        assert log.log_end_offset == leo and log.log_start_offset == start
        assert log.high_watermark == 150
        check_records(log)
        extend_and_reopen(path, log, random.Random(13))


# property: random damage never yields different bytes ---------------------------------------

def test_random_damage_never_serves_different_bytes(tmp_path):
    template = tmp_path / "template"
    leo = build_log(template, 300, seed=14, index_interval_bytes=256)
    table = batches(template)
    rng = random.Random(14)
    for i in range(16):
        path = tmp_path / f"case-{i}"
        shutil.copytree(template, path)
        victim = rng.choice(table)
        vfile = path / victim.file.name
        damage = rng.choice(["flip", "flip", "truncate", "garbage", "index"])
        if damage == "index" and index_entries(victim.file) < 2:
            damage = "truncate"
        if damage == "flip":  # anywhere the CRC (or the framing) can see
            flip_byte(vfile, victim.position + rng.choice([LENGTH_AT + rng.randrange(4), MAGIC_AT,
                                                           CRC_AT + rng.randrange(4),
                                                           rng.randrange(ATTRIBUTES_AT, victim.size)]),
                      rng.randint(1, 255))
        elif damage == "truncate":
            os.truncate(vfile, victim.position + rng.randrange(victim.size))
        elif damage == "garbage":  # overwrite a run of bytes the CRC covers
            at = rng.randrange(ATTRIBUTES_AT, victim.size)
            with open(vfile, "r+b") as f:
                f.seek(victim.position + at)
                f.write(rng.randbytes(rng.randint(1, min(200, victim.size - at))))
        else:
            suffix = rng.choice(sorted(ENTRY_SIZE))
            damage_index(vfile.with_suffix(suffix), rng.choice(INDEX_DAMAGE), ENTRY_SIZE[suffix], rng)
        mode = rng.choice(["clean", "unclean", "full"])
        if mode != "clean":
            make_unclean(path)
        with PartitionLog.open(path, **SMALL, recovery="full" if mode == "full" else "auto") as log:
            assert log.log_end_offset <= leo
            bad = check_readable(log)
            if mode == "full" or log.recovery.cut:
                assert bad == 0, f"case {i}: {damage} ({mode}) left damaged batches in the log"
            for _ in range(5):  # large reads from random offsets: all good or an error
                start = rng.randrange(log.log_start_offset, max(log.log_start_offset + 1, log.log_end_offset))
                try:
                    view = log.read(start, max_bytes=rng.choice([1, 4096, 1 << 20]))
                except errors.CorruptRecordError:
                    continue
                if start < log.log_end_offset:
                    assert_view(view, start)
        shutil.rmtree(path)
