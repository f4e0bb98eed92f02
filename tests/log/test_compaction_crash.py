"""kill -9 during compaction, then reopen: nothing is lost.

A compactor process (``compaction_crasher.py``) compacts a prepared log and is killed with
SIGKILL, either by itself at each step of the swap (after the cleaned segment is written, after
the commit rename, after deleting some of the replaced segments, after moving some of the new
files, after the swap, after the checkpoint) or by this process at random moments. The log is
then reopened here and must:

* open (an interrupted swap is completed, uncommitted output deleted);
* show only original records, each at its original offset;
* show every key's latest record (unless it is a tombstone compaction was allowed to remove);
* hold at most the original records and at least what a finished compaction keeps; at a swap
  step, exactly one of the two (before or after);
* compact to the same result as an uninterrupted run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logstore import PartitionLog
from logstore.log.compaction import compact, read_cleaner_checkpoint
from logstore.log.recovery import MANIFEST, RecoveryReport, complete_swap, encode_swap_manifest, finish_compactions

pytestmark = pytest.mark.slow

CRASHER = Path(__file__).with_name("compaction_crasher.py")
_spec = importlib.util.spec_from_file_location("logstore_tests_compaction_crasher", CRASHER)
crasher = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crasher)
record_for = crasher.record_for

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
N = 1500
NOW = crasher.TS0 + 2 * N
DELETE_RETENTION_MS = N + N // 2  # tombstones in the first half of the log have expired
HORIZON = NOW - DELETE_RETENTION_MS
WRITE_CFG = dict(segment_bytes=2048, index_interval_bytes=256, flush="never")


# -- the log and what compaction must make of it ------------------------------------------------

def original(offset: int) -> tuple:
    key, value, ts = record_for(offset)
    return (offset, ts, key, value, [])


ORIGINAL = [original(o) for o in range(N)]


def compacted_records() -> list[tuple]:
    latest = {r[2]: r[0] for r in ORIGINAL if r[2] is not None}
    return [r for r in ORIGINAL
            if r[2] is None or (latest[r[2]] == r[0] and not (r[3] is None and r[1] < HORIZON))]


AFTER = compacted_records()


def build(path: Path) -> None:
    rng = random.Random(7)
    with PartitionLog.open(path, **WRITE_CFG) as log:
        while log.log_end_offset < N:
            first = log.log_end_offset
            recs = [original(o) for o in range(first, min(N, first + rng.randint(1, 30)))]
            log.append_many([r[3] for r in recs], keys=[r[2] for r in recs], timestamps=[r[1] for r in recs])
        log.roll()  # an empty active segment: every record is in a sealed, cleanable one


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("compaction-crash") / "base"
    build(path)
    return path


def read_all(log: PartitionLog) -> list[tuple]:
    offset, out = log.log_start_offset, []
    while offset < log.log_end_offset:
        view = log.read(offset, max_bytes=1 << 16)
        assert view.next_offset > offset
        out.extend((r.offset, r.timestamp, r.key, r.value, r.headers) for r in view)
        offset = view.next_offset
    return out


def check_reopened(path: Path, **cfg) -> tuple[list[tuple], RecoveryReport]:
    """Reopen after the kill and check the properties of the module docstring; returns what a
    reader sees and the recovery report."""
    with PartitionLog.open(path, **{**WRITE_CFG, **cfg}) as log:
        report = log.recovery
        assert not report.cut, f"recovery cut the log: {report}"
        assert (log.log_start_offset, log.log_end_offset) == (0, N)
        seen = read_all(log)
        offsets = [r[0] for r in seen]
        assert offsets == sorted(set(offsets))
        for r in seen:
            assert r == ORIGINAL[r[0]], f"offset {r[0]} does not hold its original record"
        visible = set(offsets)
        missing = [r[0] for r in AFTER if r[0] not in visible]
        assert not missing, f"records compaction must keep are gone: {missing[:10]}"
        assert not [n for n in os.listdir(path) if n.startswith((".cleaning", ".swap-"))]
    return seen, report


def finish_and_check(path: Path) -> None:
    """An uninterrupted compaction of the recovered log ends where one without a crash does."""
    with PartitionLog.open(path, **{**WRITE_CFG, "segment_bytes": 1 << 16}) as log:
        log.set_high_watermark(log.log_end_offset)
        while True:
            stats = compact(log, now=NOW, delete_retention_ms=DELETE_RETENTION_MS)
            if stats.groups_swapped == 0:
                break
        assert read_all(log) == AFTER
        assert read_cleaner_checkpoint(log.path).first_dirty_offset == N


def run_crasher(path: Path, cfg: dict, *args: str) -> subprocess.Popen:
    full = {**cfg, "_now": NOW, "_delete_retention_ms": DELETE_RETENTION_MS}
    return subprocess.Popen([sys.executable, str(CRASHER), str(path), json.dumps(full), *args],
                            stdout=subprocess.PIPE, env=ENV)


# -- a kill at each step of a swap ----------------------------------------------------------------

# one group: the crasher's segment_bytes lets the whole log compact into one segment, so the
# states before and after the swap are the two possible outcomes
ONE_GROUP = {**WRITE_CFG, "segment_bytes": 1 << 16, "_max_map_records": 1_000_000}

POINTS = [
    ("scratch-written", 1, "before"),
    ("committed", 1, "after"),
    ("old-deleted", 1, "after"),
    ("old-deleted", 7, "after"),
    ("new-moved", 1, "after"),
    ("new-moved", 2, "after"),
    ("new-moved", 3, "after"),
    ("swapped", 1, "after"),
    ("checkpointed", 1, "after"),
]


@pytest.mark.parametrize("point,count,outcome", POINTS, ids=[f"{p}-{c}" for p, c, _ in POINTS])
def test_kill_at_a_step_of_the_swap(prepared, tmp_path, point, count, outcome):
    path = tmp_path / "log"
    shutil.copytree(prepared, path)
    proc = run_crasher(path, ONE_GROUP, point, str(count))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"the crasher was not killed at {point} #{count}: {out!r}"
    assert b"READY" in out and b"PASS" not in out or point == "checkpointed"
    seen, report = check_reopened(path)
    assert seen == (ORIGINAL if outcome == "before" else AFTER)
    if point == "scratch-written":
        assert report.stray_files_removed >= 1 and report.compactions_completed == 0
    elif point in ("committed", "old-deleted", "new-moved"):
        assert report.compactions_completed == 1
    else:
        assert report.compactions_completed == 0
    finish_and_check(path)


# -- kills at random moments ----------------------------------------------------------------------

# many groups (small segments) and several passes (a small key map): a random kill can land anywhere
MANY_GROUPS = {**WRITE_CFG, "_max_map_records": 25}


@pytest.fixture(scope="module")
def run_time(prepared, tmp_path_factory) -> float:
    """Seconds from READY to DONE of an uninterrupted crasher, which must end compacted."""
    path = tmp_path_factory.mktemp("compaction-timing") / "log"
    shutil.copytree(prepared, path)
    proc = run_crasher(path, MANY_GROUPS)
    try:
        assert proc.stdout.readline().strip() == b"READY"
        t0 = time.monotonic()
        while True:
            line = proc.stdout.readline().strip()
            assert line.startswith((b"PASS", b"DONE")), line
            if line == b"DONE":
                break
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    seen, _ = check_reopened(path)
    assert seen == AFTER
    return elapsed


@pytest.mark.parametrize("seed", range(6))
def test_kill_at_a_random_moment(prepared, tmp_path, run_time, seed):
    rng = random.Random(seed)
    path = tmp_path / "log"
    shutil.copytree(prepared, path)
    proc = run_crasher(path, MANY_GROUPS)
    try:
        assert proc.stdout.readline().strip() == b"READY"
        time.sleep(rng.uniform(0, run_time))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    check_reopened(path)
    finish_and_check(path)


# -- completing swaps on open ----------------------------------------------------------------------

def test_complete_swap_is_idempotent_and_tolerates_an_emptied_swap_dir(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    for base in (0, 10, 20):
        for suffix in (".log", ".index", ".timeindex"):
            (d / ("%020d%s" % (base, suffix))).write_bytes(b"old")
    swap = d / ".swap-00000000000000000000"
    swap.mkdir()
    for suffix in (".log", ".index", ".timeindex"):
        (swap / ("%020d%s" % (0, suffix))).write_bytes(b"new")
    (swap / MANIFEST).write_bytes(encode_swap_manifest([0, 10], [0]))
    # a first attempt that stopped half way: one old segment gone, one new file moved
    os.unlink(d / ("%020d.log" % 10))
    os.replace(swap / ("%020d.index" % 0), d / ("%020d.index" % 0))
    assert complete_swap(str(d), swap.name)
    assert sorted(p.name for p in d.iterdir()) == sorted("%020d%s" % (b, s) for b in (0, 20)
                                                        for s in (".index", ".log", ".timeindex"))
    assert all((d / ("%020d%s" % (0, s))).read_bytes() == b"new" for s in (".log", ".index", ".timeindex"))
    assert (d / ("%020d.log" % 20)).read_bytes() == b"old"
    # a crash after the last file moved but before the directory went
    swap.mkdir()
    report = RecoveryReport()
    finish_compactions(str(d), report)
    assert not swap.exists() and report.compactions_completed == 1


def test_a_swap_with_a_damaged_manifest_is_left_alone(tmp_path, caplog):
    d = tmp_path / "p"
    d.mkdir()
    (d / ("%020d.log" % 0)).write_bytes(b"old")
    swap = d / ".swap-00000000000000000000"
    swap.mkdir()
    (swap / ("%020d.log" % 0)).write_bytes(b"new")
    damaged = bytearray(encode_swap_manifest([0], [0]))
    damaged[20] ^= 1
    (swap / MANIFEST).write_bytes(bytes(damaged))
    report = RecoveryReport()
    finish_compactions(str(d), report)
    assert report.compactions_completed == 0 and swap.exists()
    assert (d / ("%020d.log" % 0)).read_bytes() == b"old"
    assert any("cannot be completed" in r.getMessage() for r in caplog.records)
