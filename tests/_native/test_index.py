"""Unit tests of the memory-mapped sparse indexes (OffsetIndex, TimeIndex)."""

from __future__ import annotations

import bisect
import os
import struct
import subprocess
import sys
import textwrap

import pytest

import logstore
from logstore._native.index import OFFSET_ENTRY_SIZE, TIME_ENTRY_SIZE, OffsetIndex, TimeIndex
from logstore.errors import CorruptRecordError, LogstoreError

BASE = 1000


def _file_entries(path, fmt):
    """Entries as stored on disk, decoded with an explicit big-endian layout."""
    size = struct.calcsize(fmt)
    with open(path, "rb") as f:
        raw = f.read()
    return [struct.unpack_from(fmt, raw, i) for i in range(0, len(raw) - len(raw) % size, size)]


def _write_raw(path, pos, data):
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write(data)


@pytest.fixture
def opened():
    """Open indexes are closed at the end of the test, even if it fails."""
    items = []

    def make(cls, path, base, max_bytes, preallocate):
        ix = cls(str(path), base, max_bytes, preallocate)
        items.append(ix)
        return ix

    yield make
    for ix in items:
        ix.close()


# ---------------------------------------------------------------------------------------------
# OffsetIndex


OFFSET_ENTRIES = [(1003, 50), (1010, 400), (1011, 900), (1500, 5000), (1_000_000, 7_000_000)]


def _fill_offset(ix, entries=OFFSET_ENTRIES):
    for off, pos in entries:
        ix.append(off, pos)


def test_offset_index_preallocates(tmp_path, opened):
    path = tmp_path / "a.index"
    ix = opened(OffsetIndex, path, BASE, 100, True)
    assert OFFSET_ENTRY_SIZE == 8 and ix.entry_size == 8
    assert os.path.getsize(path) == 96  # rounded down to whole entries
    assert ix.entries == 0 and ix.max_entries == 12
    assert ix.size_bytes == 0
    assert not ix.is_full
    assert ix.base_offset == BASE
    assert ix.path == str(path)


def test_offset_index_rejects_too_small_max_bytes(tmp_path):
    with pytest.raises(ValueError):
        OffsetIndex(str(tmp_path / "a.index"), 0, 7, True)


def test_offset_index_append_entry_lookup(tmp_path, opened):
    ix = opened(OffsetIndex, tmp_path / "a.index", BASE, 4096, True)
    _fill_offset(ix)
    assert ix.entries == len(OFFSET_ENTRIES)
    assert ix.size_bytes == 8 * len(OFFSET_ENTRIES)
    assert [ix.entry(i) for i in range(ix.entries)] == OFFSET_ENTRIES
    with pytest.raises(IndexError):
        ix.entry(ix.entries)
    with pytest.raises(IndexError):
        ix.entry(-1)

    # floor semantics against a bisect reference; before the first entry -> (base, 0)
    keys = [o for o, _ in OFFSET_ENTRIES]
    probes = list(range(BASE - 5, 1520)) + [999_999, 1_000_000, 1_000_001, 2**40]
    for q in probes:
        i = bisect.bisect_right(keys, q)
        want = (BASE, 0) if i == 0 else OFFSET_ENTRIES[i - 1]
        assert ix.lookup(q) == want, q
    assert ix.lookup(1002) == (BASE, 0)
    assert ix.lookup(1003) == (1003, 50)
    assert ix.lookup(1009) == (1003, 50)


def test_offset_index_big_endian_on_disk(tmp_path, opened):
    path = tmp_path / "a.index"
    ix = opened(OffsetIndex, path, 5, 64, True)
    entries = [(5 + 0x00010203, 0x04050607), (5 + 0x0A0B0C0D, 0x1A1B1C1D), (5 + 0xFFFFFFFF, 0xFFFFFFFE)]
    for off, pos in entries:
        ix.append(off, pos)
    ix.flush()
    on_disk = _file_entries(path, ">II")
    assert on_disk[:3] == [(off - 5, pos) for off, pos in entries]
    assert on_disk[3:] == [(0, 0)] * 5  # preallocated, zero-filled
    with open(path, "rb") as f:
        assert f.read(8) == bytes.fromhex("00010203 04050607")
    assert ix.raw_entry(1) == bytes.fromhex("0A0B0C0D 1A1B1C1D")
    assert [ix.entry(i) for i in range(3)] == entries


@pytest.mark.parametrize("offset,position", [
    (1010, 9000),  # equal to the last offset
    (1005, 9000),  # below the last offset
    (BASE - 1, 10),  # below the base offset
    (BASE + 2**32, 9000),  # relative offset does not fit 32 bits
    (2000, -1),  # negative position
    (2000, 2**32),  # position does not fit 32 bits
])
def test_offset_index_rejects_bad_append(tmp_path, opened, offset, position):
    ix = opened(OffsetIndex, tmp_path / "a.index", BASE, 4096, True)
    _fill_offset(ix, OFFSET_ENTRIES[:2])
    with pytest.raises(ValueError):
        ix.append(offset, position)
    assert ix.entries == 2
    assert [ix.entry(i) for i in range(2)] == OFFSET_ENTRIES[:2]


def test_offset_index_full(tmp_path, opened):
    ix = opened(OffsetIndex, tmp_path / "a.index", BASE, 32, True)
    for i in range(4):
        ix.append(BASE + i, 10 * (i + 1))
    assert ix.is_full
    with pytest.raises(LogstoreError):
        ix.append(BASE + 10, 100)
    assert ix.entries == 4


def test_offset_index_truncate_to(tmp_path, opened):
    ix = opened(OffsetIndex, tmp_path / "a.index", BASE, 4096, True)
    _fill_offset(ix)
    ix.truncate_to(2_000_000)
    assert ix.entries == 5
    ix.truncate_to(1_000_000)  # drops entries >= the offset
    assert ix.entries == 4
    ix.truncate_to(1011)
    assert ix.entries == 2
    assert ix.lookup(1500) == (1010, 400)
    ix.truncate_to(1004)
    assert ix.entries == 1
    # the index can be extended again from the new end
    ix.append(1005, 60)
    assert [ix.entry(i) for i in range(ix.entries)] == [(1003, 50), (1005, 60)]
    ix.truncate_to(BASE)
    assert ix.entries == 0
    assert ix.lookup(5000) == (BASE, 0)


def test_offset_index_trim_grow_reopen(tmp_path, opened):
    path = tmp_path / "a.index"
    ix = opened(OffsetIndex, path, BASE, 4096, True)
    _fill_offset(ix, OFFSET_ENTRIES[:3])
    ix.trim()
    assert os.path.getsize(path) == 3 * 8
    assert ix.entries == 3
    assert [ix.entry(i) for i in range(3)] == OFFSET_ENTRIES[:3]
    assert ix.lookup(1010) == (1010, 400)
    assert _file_entries(path, ">II") == [(o - BASE, p) for o, p in OFFSET_ENTRIES[:3]]

    ix.grow(4096)
    assert os.path.getsize(path) == 4096
    assert ix.entries == 3 and ix.max_entries == 512
    assert [ix.entry(i) for i in range(3)] == OFFSET_ENTRIES[:3]
    ix.append(*OFFSET_ENTRIES[3])
    ix.trim()
    assert os.path.getsize(path) == 4 * 8
    ix.close()

    # a trimmed file restores its entries on open, read-only or preallocated again
    ro = opened(OffsetIndex, path, BASE, 4096, False)
    assert ro.entries == 4
    assert [ro.entry(i) for i in range(4)] == OFFSET_ENTRIES[:4]
    assert ro.lookup(1499) == (1011, 900)
    ro.check(10_000, 1501)
    ro.close()
    assert os.path.getsize(path) == 4 * 8

    rw = opened(OffsetIndex, path, BASE, 4096, True)
    assert rw.entries == 4
    assert os.path.getsize(path) == 4096
    rw.append(*OFFSET_ENTRIES[4])
    assert [rw.entry(i) for i in range(5)] == OFFSET_ENTRIES


def test_offset_index_grow_never_drops_entries(tmp_path, opened):
    path = tmp_path / "a.index"
    ix = opened(OffsetIndex, path, BASE, 4096, True)
    _fill_offset(ix)
    ix.grow(16)  # smaller than the entries: keeps them all
    assert ix.entries == 5
    assert os.path.getsize(path) >= 5 * 8
    assert [ix.entry(i) for i in range(5)] == OFFSET_ENTRIES


def test_offset_index_check_accepts_valid(tmp_path, opened):
    ix = opened(OffsetIndex, tmp_path / "a.index", BASE, 4096, True)
    ix.check(1, BASE)  # empty: always fine
    _fill_offset(ix, OFFSET_ENTRIES[:4])
    ix.check(5001, 1501)


@pytest.mark.parametrize("log_size,next_offset", [
    (5000, 2000),  # last position == log size: outside the file
    (4000, 2000),  # last position past the end
    (10_000, 1500),  # last offset == next offset
    (10_000, 1200),  # last offset past the end of the log
])
def test_offset_index_check_out_of_range(tmp_path, opened, log_size, next_offset):
    ix = opened(OffsetIndex, tmp_path / "a.index", BASE, 4096, True)
    _fill_offset(ix, OFFSET_ENTRIES[:4])
    with pytest.raises(CorruptRecordError):
        ix.check(log_size, next_offset)


def _corrupt_offset_file(path, entries):
    with open(path, "wb") as f:
        for rel, pos in entries:
            f.write(struct.pack(">II", rel, pos))


@pytest.mark.parametrize("entries", [
    [(3, 50), (10, 400), (10, 900)],  # repeated offset
    [(3, 50), (11, 400), (10, 900)],  # offsets going down
    [(3, 50), (10, 400), (11, 400)],  # repeated position
    [(3, 50), (10, 900), (11, 400)],  # positions going down
    [(3, 0), (10, 400)],  # a position 0 entry (the first batch is never indexed)
    [(3, 50), (10, 400), (0, 0), (0, 0)],  # zero-filled tail of an untrimmed file
])
def test_offset_index_check_detects_bad_bytes(tmp_path, opened, entries):
    path = tmp_path / "a.index"
    _corrupt_offset_file(path, entries)
    ix = opened(OffsetIndex, path, BASE, 4096, False)
    assert ix.entries == len(entries)
    with pytest.raises(CorruptRecordError):
        ix.check(10_000, 5000)


def test_offset_index_reopen_untrimmed_is_caught_by_check(tmp_path, opened):
    path = tmp_path / "a.index"
    ix = opened(OffsetIndex, path, BASE, 128, True)
    _fill_offset(ix, OFFSET_ENTRIES[:2])
    ix.close()  # without trim: the zero-filled preallocation stays
    again = opened(OffsetIndex, path, BASE, 128, False)
    assert again.entries == 16
    with pytest.raises(CorruptRecordError):
        again.check(10_000, 5000)
    again.truncate_entries(2)
    again.check(10_000, 5000)
    assert [again.entry(i) for i in range(2)] == OFFSET_ENTRIES[:2]


# ---------------------------------------------------------------------------------------------
# TimeIndex


TIME_ENTRIES = [(10_000, 1002), (10_050, 1010), (20_000, 1011), (20_001, 1500)]


def _fill_time(ix, entries=TIME_ENTRIES):
    for ts, off in entries:
        ix.append(ts, off)


def test_time_index_preallocates(tmp_path, opened):
    path = tmp_path / "a.timeindex"
    ix = opened(TimeIndex, path, BASE, 100, True)
    assert TIME_ENTRY_SIZE == 12 and ix.entry_size == 12
    assert os.path.getsize(path) == 96
    assert ix.entries == 0 and ix.max_entries == 8
    assert ix.last_entry() == (-1, BASE)


def test_time_index_append_entry_lookup(tmp_path, opened):
    ix = opened(TimeIndex, tmp_path / "a.timeindex", BASE, 4096, True)
    _fill_time(ix)
    assert [ix.entry(i) for i in range(ix.entries)] == TIME_ENTRIES
    assert ix.last_entry() == TIME_ENTRIES[-1]
    with pytest.raises(IndexError):
        ix.entry(len(TIME_ENTRIES))
    keys = [t for t, _ in TIME_ENTRIES]
    for q in [0, 9_999, 10_000, 10_001, 10_049, 10_050, 19_999, 20_000, 20_001, 2**62]:
        i = bisect.bisect_right(keys, q)
        want = (-1, BASE) if i == 0 else TIME_ENTRIES[i - 1]
        assert ix.lookup(q) == want, q


def test_time_index_skips_entries_that_do_not_advance(tmp_path, opened):
    ix = opened(TimeIndex, tmp_path / "a.timeindex", BASE, 4096, True)
    _fill_time(ix, TIME_ENTRIES[:2])
    ix.append(10_050, 1020)  # same timestamp: nothing new to say
    ix.append(9_000, 1030)  # older timestamp
    ix.append(30_000, 1005)  # offset going back
    assert [ix.entry(i) for i in range(ix.entries)] == TIME_ENTRIES[:2]
    ix.append(30_000, 1040)
    assert ix.entries == 3 and ix.entry(2) == (30_000, 1040)


@pytest.mark.parametrize("offset", [BASE - 1, BASE + 2**32])
def test_time_index_rejects_out_of_range_offset(tmp_path, opened, offset):
    ix = opened(TimeIndex, tmp_path / "a.timeindex", BASE, 4096, True)
    with pytest.raises(ValueError):
        ix.append(50_000, offset)
    assert ix.entries == 0


def test_time_index_full(tmp_path, opened):
    ix = opened(TimeIndex, tmp_path / "a.timeindex", BASE, 36, True)
    for i in range(3):
        ix.append(100 + i, BASE + i)
    assert ix.is_full
    with pytest.raises(LogstoreError):
        ix.append(500, BASE + 10)
    assert ix.entries == 3


def test_time_index_big_endian_on_disk(tmp_path, opened):
    path = tmp_path / "a.timeindex"
    ix = opened(TimeIndex, path, 7, 48, True)
    ix.append(0x0102030405060708, 7 + 0x090A0B0C)
    ix.append(0x1112131415161718, 7 + 0xFFFFFFFF)
    ix.flush()
    assert _file_entries(path, ">qI") == [(0x0102030405060708, 0x090A0B0C),
                                          (0x1112131415161718, 0xFFFFFFFF), (0, 0), (0, 0)]
    with open(path, "rb") as f:
        assert f.read(12) == bytes.fromhex("0102030405060708 090A0B0C")
    assert ix.raw_entry(0) == bytes.fromhex("0102030405060708 090A0B0C")


def test_time_index_truncate_to(tmp_path, opened):
    ix = opened(TimeIndex, tmp_path / "a.timeindex", BASE, 4096, True)
    _fill_time(ix)
    ix.truncate_to(1011)
    assert [ix.entry(i) for i in range(ix.entries)] == TIME_ENTRIES[:2]
    assert ix.lookup(25_000) == TIME_ENTRIES[1]
    ix.append(15_000, 1011)  # extendable again from the new end
    assert ix.last_entry() == (15_000, 1011)
    ix.truncate_to(BASE)
    assert ix.entries == 0
    assert ix.lookup(25_000) == (-1, BASE)


def test_time_index_trim_grow_reopen(tmp_path, opened):
    path = tmp_path / "a.timeindex"
    ix = opened(TimeIndex, path, BASE, 1200, True)
    _fill_time(ix, TIME_ENTRIES[:3])
    ix.trim()
    assert os.path.getsize(path) == 3 * 12
    assert [ix.entry(i) for i in range(3)] == TIME_ENTRIES[:3]
    ix.grow(1200)
    assert os.path.getsize(path) == 1200
    assert ix.entries == 3 and ix.max_entries == 100
    ix.append(*TIME_ENTRIES[3])
    ix.trim()
    assert os.path.getsize(path) == 4 * 12
    ix.close()

    ro = opened(TimeIndex, path, BASE, 1200, False)
    assert [ro.entry(i) for i in range(ro.entries)] == TIME_ENTRIES
    assert ro.lookup(20_000) == (20_000, 1011)
    ro.check(1501)
    ro.close()

    rw = opened(TimeIndex, path, BASE, 1200, True)
    assert rw.entries == 4 and os.path.getsize(path) == 1200
    rw.append(30_000, 1600)
    assert rw.last_entry() == (30_000, 1600)


def test_time_index_check(tmp_path, opened):
    ix = opened(TimeIndex, tmp_path / "a.timeindex", BASE, 4096, True)
    ix.check(BASE)  # empty
    _fill_time(ix)
    ix.check(1501)
    with pytest.raises(CorruptRecordError):
        ix.check(1500)  # an entry at the next offset
    with pytest.raises(CorruptRecordError):
        ix.check(1100)


@pytest.mark.parametrize("entries", [
    [(10, 3), (10, 5)],  # repeated timestamp
    [(10, 3), (9, 5)],  # timestamp going down
    [(10, 3), (20, 2)],  # offset going down
    [(10, 3), (20, 5), (0, 0)],  # zero-filled tail of an untrimmed file
])
def test_time_index_check_detects_bad_bytes(tmp_path, opened, entries):
    path = tmp_path / "a.timeindex"
    with open(path, "wb") as f:
        for ts, rel in entries:
            f.write(struct.pack(">qI", ts, rel))
    ix = opened(TimeIndex, path, BASE, 4096, False)
    assert ix.entries == len(entries)
    with pytest.raises(CorruptRecordError):
        ix.check(BASE + 100)


def test_time_index_check_detects_bad_bytes_in_place(tmp_path, opened):
    path = tmp_path / "a.timeindex"
    ix = opened(TimeIndex, path, BASE, 4096, True)
    _fill_time(ix)
    ix.trim()
    ix.close()
    _write_raw(path, 12 * 2, struct.pack(">q", 10_010))  # third timestamp below the second
    again = opened(TimeIndex, path, BASE, 4096, False)
    assert again.entry(2) == (10_010, 1011)
    with pytest.raises(CorruptRecordError):
        again.check(1501)


def test_offset_index_check_detects_bad_bytes_in_place(tmp_path, opened):
    path = tmp_path / "a.index"
    ix = opened(OffsetIndex, path, BASE, 4096, True)
    _fill_offset(ix, OFFSET_ENTRIES[:4])
    ix.trim()
    ix.close()
    _write_raw(path, 8 * 3 + 4, struct.pack(">I", 100))  # fourth position below the third
    again = opened(OffsetIndex, path, BASE, 4096, False)
    assert again.entry(3) == (1500, 100)
    with pytest.raises(CorruptRecordError):
        again.check(10_000, 2000)


# ---------------------------------------------------------------------------------------------
# appending to an index whose file is not (or no longer) preallocated

# Each case runs in a child process: a write outside the mapping must not take the test run down.
UNMAPPED_APPEND_CASES = {
    "offset_fresh_not_preallocated": """
        ix = OffsetIndex(p, 0, 64, False)
        append = lambda: ix.append(1, 5)
    """,
    "offset_trimmed_empty": """
        ix = OffsetIndex(p, 0, 64, True)
        ix.trim()
        append = lambda: ix.append(1, 5)
    """,
    "offset_reopened_trimmed": """
        ix = OffsetIndex(p, 0, 64, True)
        ix.append(1, 5)
        ix.trim()
        ix.close()
        ix = OffsetIndex(p, 0, 64, False)
        append = lambda: ix.append(2, 9)
    """,
    "time_fresh_not_preallocated": """
        ix = TimeIndex(p, 0, 64, False)
        append = lambda: ix.append(100, 1)
    """,
    "time_trimmed_empty": """
        ix = TimeIndex(p, 0, 64, True)
        ix.trim()
        append = lambda: ix.append(100, 1)
    """,
}

CHILD = """
import os, sys
from logstore._native.index import OffsetIndex, TimeIndex
from logstore.errors import LogstoreError
p = sys.argv[1]
{setup}
before = ix.entries
try:
    append()
except (LogstoreError, ValueError) as e:
    assert ix.entries == before, "a refused append changed the entry count"
    print("refused")
else:
    # an accepted append must be durable like any other entry
    added = [ix.entry(i) for i in range(ix.entries)]
    cls = type(ix)
    ix.trim()
    ix.close()
    again = cls(p, 0, 64, False)
    assert [again.entry(i) for i in range(again.entries)] == added, "appended entry was lost"
    print("appended")
"""


@pytest.mark.parametrize("case", sorted(UNMAPPED_APPEND_CASES))
def test_append_to_unpreallocated_index_is_safe(tmp_path, case):
    script = CHILD.format(setup=textwrap.dedent(UNMAPPED_APPEND_CASES[case]))
    env = dict(os.environ)
    # the child imports the very logstore this process tests (a source tree or an installed wheel)
    package_root = os.path.dirname(os.path.dirname(logstore.__file__))
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root] + [x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x])
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.index")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode} (negative: killed by signal)\n{proc.stdout}{proc.stderr}")
    assert proc.stdout.strip() in ("refused", "appended")


@pytest.mark.parametrize("cls", [OffsetIndex, TimeIndex])
def test_indexes_refuse_copy_and_pickle(tmp_path, cls):
    # regression: Cython's auto-pickle copied the raw mmap pointer; a copy wrote through it after
    # the original was closed (segfault). Objects holding pointers now refuse both.
    import copy
    import pickle

    ix = cls(str(tmp_path / "a"), 0, 64, True)
    with pytest.raises(TypeError):
        copy.copy(ix)
    ix.close()
    with pytest.raises(TypeError):
        pickle.dumps(ix)
