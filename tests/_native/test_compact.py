"""Unit tests of the compaction core: KeyMap (XXH64 key -> latest offset) and BatchFilter.

Batches are built here by an independent encoder (plain Python, from the v2 format) so that
every field the filter must preserve can be chosen: sparse offset deltas, producer ids and
sequences, leader epochs, log-append time, header-only batches.
"""

from __future__ import annotations

import os
import random
import struct

import pytest

from logstore import RecordBatchView
from logstore._native.codec import crc32c, encode_varint
from logstore._native.compact import BatchFilter, KeyMap
from logstore.errors import CorruptRecordError

HEADER = struct.Struct(">qiibIhiqqqhii")  # base offset .. record count
LOG_APPEND_TIME = 0x08
FAR_PAST = -(2**62)  # a tombstone horizon that expires nothing


# -- an independent batch encoder ------------------------------------------------------------

def encode_record(offset_delta: int, ts_delta: int, key: bytes | None, value: bytes | None,
                  headers: list[tuple[str, bytes | None]] = ()) -> bytes:
    def field(b: bytes | None) -> bytes:
        return encode_varint(-1) if b is None else encode_varint(len(b)) + b

    body = b"\x00" + encode_varint(ts_delta) + encode_varint(offset_delta) + field(key) + field(value)
    body += encode_varint(len(headers))
    for hk, hv in headers:
        body += field(hk.encode()) + field(hv)
    return encode_varint(len(body)) + body


def encode_batch(base_offset: int, records: list[tuple], *, last_offset_delta: int | None = None,
                 base_ts: int = 1000, max_ts: int | None = None, epoch: int = 0, attributes: int = 0,
                 producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1) -> bytes:
    """``records``: (offset_delta, ts_delta, key, value[, headers]) tuples."""
    body = b"".join(encode_record(*r) for r in records)
    if last_offset_delta is None:
        last_offset_delta = max((r[0] for r in records), default=0)
    if max_ts is None:
        max_ts = max((base_ts + r[1] for r in records), default=base_ts)
    size = 61 + len(body)
    after_crc = struct.pack(">hiqqqhii", attributes, last_offset_delta, base_ts, max_ts, producer_id,
                            producer_epoch, base_sequence, len(records)) + body
    return struct.pack(">qiib", base_offset, size - 12, epoch, 2) + struct.pack(">I", crc32c(after_crc)) + after_crc


def header(batch: bytes) -> dict[str, int]:
    (base, length, epoch, magic, crc, attrs, last_delta, base_ts, max_ts, pid, pepoch, base_seq,
     count) = HEADER.unpack_from(batch)
    return {"base_offset": base, "length": length, "epoch": epoch, "attributes": attrs,
            "last_offset": base + last_delta, "base_ts": base_ts, "max_ts": max_ts, "producer_id": pid,
            "producer_epoch": pepoch, "base_sequence": base_seq, "record_count": count, "crc": crc}


def split_batches(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        size = struct.unpack_from(">i", data, pos + 8)[0] + 12
        out.append(data[pos:pos + size])
        pos += size
    assert pos == len(data)
    return out


def crc_ok(batch: bytes) -> bool:
    return struct.unpack_from(">I", batch, 17)[0] == crc32c(batch[21:])


def records_of(data: bytes) -> list[tuple]:
    return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in RecordBatchView(data)]


def run_filter(data: bytes, keymap: KeyMap, *, clean_upto: int = 2**62, horizon: int = FAR_PAST,
               first_offset: int = 0, chunk: int | None = None) -> tuple[bytes, BatchFilter]:
    """Filter ``data`` (fed in chunks of ``chunk`` bytes, as the compactor reads a file)."""
    f = BatchFilter(keymap, clean_upto, horizon, first_offset)
    out, pos, want = [], 0, chunk or len(data)
    while pos < len(data):
        piece = data[pos:pos + want]
        consumed, need = f.process(piece, pos)
        out.append(f.take_output())
        pos += consumed
        want = max(chunk or len(data), need)
        assert consumed or need > len(piece)
    f.finish()
    out.append(f.take_output())
    return b"".join(out), f


def mapped(data: bytes, start: int = 0, max_records: int = 1000) -> KeyMap:
    m = KeyMap(max_records)
    consumed, need, _, stopped = m.add_batches(data, start, -1)
    assert (consumed, need, stopped) == (len(data), 0, False)
    return m


# -- KeyMap ------------------------------------------------------------------------------------

def test_keymap_keeps_the_latest_offset_per_key():
    m = KeyMap(100)
    m.put_key(b"a", 3)
    m.put_key(b"b", 4)
    m.put_key(b"a", 7)
    m.put_key(b"a", 5)  # an older offset never replaces a newer one
    assert (m.get_key(b"a"), m.get_key(b"b"), m.get_key(b"c")) == (7, 4, None)
    assert len(m) == 2 and m.records_mapped == 4


def test_keymap_empty_key_is_a_key_and_bytes_like_keys_hash_alike():
    m = KeyMap(10)
    m.put_key(b"", 1)
    m.put_key(bytearray(b"xy"), 2)
    assert m.get_key(b"") == 1
    assert m.get_key(memoryview(b"xy")) == 2 and m.get_key(b"x") is None


def test_keymap_grows_past_its_initial_table():
    m = KeyMap(10_000_000, expected=10)
    first = m.slots
    keys = [b"key-%d" % i for i in range(50_000)]
    for i, k in enumerate(keys):
        m.put_key(k, i)
    assert m.slots > first and m.slots * 3 >= len(keys) * 4
    assert len(m) == len(keys)
    assert all(m.get_key(k) == i for i, k in enumerate(keys))
    assert m.get_key(b"key-50000") is None


def test_keymap_rejects_bad_arguments():
    with pytest.raises(ValueError):
        KeyMap(0)
    with pytest.raises(ValueError):
        KeyMap(5).put_key(b"a", -1)


def test_add_batches_maps_keyed_records_from_start_offset():
    data = (encode_batch(0, [(0, 0, b"a", b"1"), (1, 1, None, b"2"), (2, 2, b"b", b"3")])
            + encode_batch(3, [(0, 0, b"a", b"4"), (1, 0, b"c", None)]))
    m = KeyMap(100)
    assert m.add_batches(data, 2, 0) == (len(data), 0, 5, False)
    # offset 0 is below the start; 1 has no key; a tombstone maps like any record
    assert (m.get_key(b"a"), m.get_key(b"b"), m.get_key(b"c")) == (3, 2, 4)
    assert len(m) == 3 and m.records_mapped == 3


def test_add_batches_stops_before_a_batch_that_could_overfill_the_map():
    data = b"".join(encode_batch(3 * i, [(j, 0, b"k%d" % (3 * i + j), b"v") for j in range(3)]) for i in range(4))
    m = KeyMap(7)
    consumed, need, next_offset, stopped = m.add_batches(data, 0, 0)
    assert stopped and need == 0 and next_offset == 6
    assert consumed == len(split_batches(data)[0]) * 2
    assert len(m) == 6 and m.get_key(b"k6") is None
    # an empty map takes a batch even if it is larger than max_records: a pass always progresses
    m = KeyMap(2)
    assert m.add_batches(data, 0, 0)[2:] == (3, True)
    assert len(m) == 3


def test_add_batches_reports_a_cut_batch_and_resumes():
    data = encode_batch(0, [(0, 0, b"a", b"x" * 100)]) + encode_batch(1, [(0, 0, b"b", b"y" * 100)])
    first = len(split_batches(data)[0])
    m = KeyMap(10)
    assert m.add_batches(data[:first + 70], 0, 0) == (first, len(data) - first, 1, False)
    assert m.add_batches(data[:first + 30], 0, 0)[:2] == (first, 61)  # not even a whole header
    assert m.add_batches(data[first:], 0, 1) == (len(data) - first, 0, 2, False)
    assert m.get_key(b"b") == 1


def test_add_batches_rejects_damage_and_offset_gaps():
    good = encode_batch(0, [(0, 0, b"a", b"1")]) + encode_batch(1, [(0, 0, b"b", b"2")])
    flipped = bytearray(good)
    flipped[-1] ^= 1
    with pytest.raises(CorruptRecordError, match="CRC"):
        KeyMap(10).add_batches(bytes(flipped), 0, 0)
    gap = encode_batch(0, [(0, 0, b"a", b"1")]) + encode_batch(2, [(0, 0, b"b", b"2")])
    with pytest.raises(CorruptRecordError, match="expected 1"):
        KeyMap(10).add_batches(gap, 0, 0)
    with pytest.raises(CorruptRecordError, match="expected 5"):
        KeyMap(10).add_batches(good, 0, 5)


# -- BatchFilter: which records stay -----------------------------------------------------------

def test_filter_keeps_latest_per_key_and_copies_records_verbatim():
    b0 = encode_batch(10, [(0, 0, b"a", b"a1", [("h", b"x")]), (1, 5, b"b", b"b1"), (2, 7, b"a", b"a2")],
                      base_ts=5000, epoch=3, producer_id=42, producer_epoch=1, base_sequence=100)
    b1 = encode_batch(13, [(0, 0, b"b", b"b2"), (1, 1, None, b"n")], base_ts=6000, epoch=3)
    data = b0 + b1
    out, f = run_filter(data, mapped(data), first_offset=10)
    assert records_of(out) == [(12, 5007, b"a", b"a2", []), (13, 6000, b"b", b"b2", []), (14, 6001, None, b"n", [])]
    new0, new1 = split_batches(out)
    assert new1 == b1  # nothing removed: the batch is copied as it was
    h_old, h_new = header(b0), header(new0)
    assert h_new["record_count"] == 1 and crc_ok(new0)
    for name in ("base_offset", "epoch", "attributes", "last_offset", "base_ts", "max_ts", "producer_id",
                 "producer_epoch", "base_sequence"):
        assert h_new[name] == h_old[name], name
    # the kept record's bytes are the input's, byte for byte (sparse offset delta 2 included)
    assert new0[61:] == encode_record(2, 7, b"a", b"a2")
    assert (f.records_read, f.records_kept, f.records_removed, f.null_key_records) == (5, 3, 2, 1)
    assert f.changed and f.next_offset == 15
    assert (f.batches_read, f.batches_written, f.bytes_read, f.bytes_written) == (2, 2, len(data), len(out))


def test_filter_drops_records_superseded_by_a_later_map_entry_only():
    data = encode_batch(0, [(0, 0, b"a", b"1"), (1, 0, b"b", b"2"), (2, 0, b"c", b"3")])
    m = KeyMap(10)
    m.put_key(b"a", 7)   # newer value elsewhere: goes
    m.put_key(b"b", 1)   # this very record is the latest: stays
    # c is not in the map (its latest was cleaned before): stays
    out, f = run_filter(data, m)
    assert [r[0] for r in records_of(out)] == [1, 2]
    assert f.records_removed == 1


def test_filter_tombstones_go_after_the_horizon_and_only_below_clean_upto():
    data = encode_batch(0, [(0, 0, b"a", None), (1, 50, b"b", None), (2, 100, b"c", None),
                            (3, 0, None, None)], base_ts=1000)
    m = mapped(data)
    out, f = run_filter(data, m, horizon=1051, clean_upto=1)
    # a (ts 1000) and b (ts 1050) are older than the horizon, but b is at/after clean_upto...
    assert [r[0] for r in records_of(out)] == [1, 2, 3]
    assert f.tombstones_removed == 1
    # ...and with everything cleanable both go; c (ts 1100) is too young; a null key always stays
    out, f = run_filter(data, m, horizon=1051)
    assert [r[0] for r in records_of(out)] == [2, 3]
    assert f.tombstones_removed == 2


def test_filter_tombstone_age_uses_the_log_append_time_of_the_batch():
    data = encode_batch(0, [(0, 0, b"a", None)], base_ts=10, max_ts=5000, attributes=LOG_APPEND_TIME)
    assert records_of(data)[0][1] == 5000
    assert records_of(run_filter(data, mapped(data), horizon=4999)[0]) != []
    assert records_of(run_filter(data, mapped(data), horizon=5001)[0]) == []


def test_filter_with_an_empty_map_and_nothing_expired_changes_nothing():
    data = b"".join(encode_batch(2 * i, [(0, 0, b"k%d" % i, b"v"), (1, 0, b"x%d" % i, None)]) for i in range(20))
    out, f = run_filter(data, KeyMap(10))
    assert out == data and not f.changed


# -- BatchFilter: emptied batches ---------------------------------------------------------------

def superseding_map(*keys: bytes) -> KeyMap:
    m = KeyMap(100)
    for k in keys:
        m.put_key(k, 10**9)
    return m


def test_emptied_batches_of_one_epoch_merge_into_one_header_only_batch():
    data = (encode_batch(0, [(0, 0, b"a", b"1"), (1, 0, b"a", b"2")], base_ts=100)
            + encode_batch(2, [(0, 0, b"a", b"3")], base_ts=90, max_ts=300)
            + encode_batch(3, [(0, 0, b"a", b"4"), (4, 0, b"a", b"5")], base_ts=200)
            + encode_batch(8, [(0, 0, b"keep", b"k")], base_ts=400))
    out, f = run_filter(data, superseding_map(b"a"))
    empty, kept = split_batches(out)
    h = header(empty)
    assert (h["base_offset"], h["last_offset"], h["record_count"], h["length"]) == (0, 7, 0, 49)
    assert (h["base_ts"], h["max_ts"]) == (100, 300)  # first's base timestamp, largest max timestamp
    assert crc_ok(empty) and kept == split_batches(data)[3]
    assert f.empty_batches_merged == 2 and f.batches_written == 2
    view = RecordBatchView(out)
    assert list(view.offsets) == [8] and view.next_offset == 9
    assert [b["record_count"] for b in view.batches()] == [0, 1]


def test_a_trailing_emptied_batch_is_written_by_finish():
    data = encode_batch(0, [(0, 0, b"a", b"1")]) + encode_batch(1, [(0, 0, b"a", b"2")])
    f = BatchFilter(superseding_map(b"a"), 2**62, FAR_PAST, 0)
    assert f.process(data) == (len(data), 0)
    assert f.take_output() == b""  # held back: the next batch may extend it
    f.finish()
    out = f.take_output()
    assert [(h["base_offset"], h["last_offset"]) for h in map(header, split_batches(out))] == [(0, 1)]
    assert RecordBatchView(out).next_offset == 2


def test_emptied_batches_of_different_epochs_or_attributes_stay_apart():
    data = (encode_batch(0, [(0, 0, b"a", b"1")], epoch=1) + encode_batch(1, [(0, 0, b"a", b"2")], epoch=2)
            + encode_batch(2, [(0, 0, b"a", b"3")], epoch=2, attributes=LOG_APPEND_TIME)
            + encode_batch(3, [(0, 0, b"a", b"4")], epoch=2, attributes=LOG_APPEND_TIME))
    out, f = run_filter(data, superseding_map(b"a"))
    got = [(h["base_offset"], h["last_offset"], h["epoch"], h["attributes"]) for h in map(header, split_batches(out))]
    assert got == [(0, 0, 1, 0), (1, 1, 2, 0), (2, 3, 2, LOG_APPEND_TIME)]
    assert f.empty_batches_merged == 1


def test_emptied_batches_of_a_producer_merge_only_with_contiguous_sequences():
    def batch(base, n, pid, seq, pepoch=None):
        pepoch = (0 if pid >= 0 else -1) if pepoch is None else pepoch
        return encode_batch(base, [(j, 0, b"a", b"v") for j in range(n)], producer_id=pid,
                            producer_epoch=pepoch, base_sequence=seq)

    data = (batch(0, 2, 7, 10) + batch(2, 3, 7, 12)   # 10-11 then 12-14: merge
            + batch(5, 1, 7, 20)                      # a gap in sequences: new batch
            + batch(6, 1, 8, 21)                      # another producer
            + batch(7, 1, 8, 22, pepoch=1)            # same producer, new epoch
            + batch(8, 1, -1, -1) + batch(9, 2, -1, -1))  # no producer: merge
    out, _ = run_filter(data, superseding_map(b"a"))
    got = [(h["base_offset"], h["last_offset"], h["producer_id"], h["producer_epoch"], h["base_sequence"])
           for h in map(header, split_batches(out))]
    assert got == [(0, 4, 7, 0, 10), (5, 5, 7, 0, 20), (6, 6, 8, 0, 21), (7, 7, 8, 1, 22), (8, 10, -1, -1, -1)]
    # base sequence + last offset delta is still the producer's last sequence in each
    last_in = {h["producer_id"]: h["base_sequence"] + h["last_offset"] - h["base_offset"]
               for h in map(header, split_batches(data)[:2])}
    merged = header(split_batches(out)[0])
    assert merged["base_sequence"] + merged["last_offset"] - merged["base_offset"] == last_in[7] == 14


def test_an_existing_header_only_batch_extends_or_passes_through():
    empty = encode_batch(0, [], last_offset_delta=4, base_ts=50, max_ts=70)
    assert header(empty)["record_count"] == 0 and records_of(empty) == []
    out, f = run_filter(empty + encode_batch(5, [(0, 0, b"z", b"1")]), KeyMap(10))
    assert split_batches(out)[0] == empty and not f.changed
    out, f = run_filter(empty + encode_batch(5, [(0, 0, b"a", b"1")]), superseding_map(b"a"))
    merged = [(h["base_offset"], h["last_offset"], h["max_ts"]) for h in map(header, split_batches(out))]
    assert merged == [(0, 5, 1000)]
    assert f.changed


# -- BatchFilter: input handling -------------------------------------------------------------------

def random_log(rng: random.Random, batches: int) -> bytes:
    out, offset = [], 0
    for _ in range(batches):
        n = rng.randint(1, 12)
        deltas = sorted(rng.sample(range(n + 4), n))
        recs = [(d, rng.randint(-5, 500), None if rng.random() < 0.1 else b"k%d" % rng.randint(0, 15),
                 None if rng.random() < 0.2 else bytes(rng.randint(0, 40)),
                 [("h", b"x")] if rng.random() < 0.2 else []) for d in deltas]
        last = deltas[-1] + rng.randint(0, 2)
        out.append(encode_batch(offset, recs, last_offset_delta=last, base_ts=rng.randint(0, 2000),
                                epoch=offset // 100, producer_id=rng.choice([-1, 5])))
        offset += last + 1
    return b"".join(out)


@pytest.mark.parametrize("seed", range(5))
def test_filter_matches_a_reference_and_chunking_does_not_matter(seed):
    rng = random.Random(seed)
    data = random_log(rng, 60)
    last = records_of(data)[-1][0] + 1
    clean_upto, horizon = rng.randint(0, last), rng.randint(0, 2500)
    keymap = KeyMap(1000)
    keymap.add_batches(data, 0, 0)
    # a map over part of the log only, as after a pass whose map filled
    partial = KeyMap(1000)
    for r in records_of(data):
        if r[2] is not None and r[0] < clean_upto:
            partial.put_key(r[2], r[0])
    for m in (keymap, partial):
        whole, f = run_filter(data, m, clean_upto=clean_upto, horizon=horizon)
        latest = {}
        for _off, _ts, key, _v, _h in records_of(data):
            if key is not None and m.get_key(key) is not None:
                latest[key] = m.get_key(key)
        expect = [r for r in records_of(data)
                  if r[2] is None or (latest.get(r[2], -1) <= r[0]
                                      and not (r[3] is None and r[0] < clean_upto and r[1] < horizon))]
        assert records_of(whole) == expect
        assert RecordBatchView(whole).next_offset == RecordBatchView(data).next_offset
        assert all(crc_ok(b) for b in split_batches(whole))
        assert f.records_read == len(records_of(data)) and f.records_kept == len(expect)
        for chunk in (61, 100, 997):
            assert run_filter(data, m, clean_upto=clean_upto, horizon=horizon, chunk=chunk)[0] == whole


def test_filter_never_rewrites_a_damaged_batch():
    data = encode_batch(0, [(0, 0, b"a", b"1"), (1, 0, b"a", b"2")])
    flipped = bytearray(data)
    flipped[70] ^= 0x40
    f = BatchFilter(mapped(data), 2**62, FAR_PAST, 0)
    with pytest.raises(CorruptRecordError, match="position 0"):
        f.process(bytes(flipped))
    assert f.output_size == 0


def test_filter_rejects_offsets_that_do_not_follow_on():
    data = encode_batch(0, [(0, 0, b"a", b"1")]) + encode_batch(5, [(0, 0, b"b", b"1")])
    f = BatchFilter(KeyMap(10), 2**62, FAR_PAST, 0)
    with pytest.raises(CorruptRecordError, match="starts at offset 5, expected 1"):
        f.process(data, 4096)
    with pytest.raises(CorruptRecordError, match="expected 3"):
        BatchFilter(KeyMap(10), 2**62, FAR_PAST, 3).process(data)


# -- reading from and writing to files ---------------------------------------------------------

def test_file_variants_match_the_buffer_ones(tmp_path):
    data = random_log(random.Random(9), 40)
    path = tmp_path / "seg.log"
    path.write_bytes(b"\0" * 100 + data)
    fd = os.open(path, os.O_RDONLY)
    out_fd = os.open(tmp_path / "out.log", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        by_file, by_buffer = KeyMap(1000), KeyMap(1000)
        assert by_file.add_file(fd, 100, len(data), 0, 0) == by_buffer.add_batches(data, 0, 0)
        assert len(by_file) == len(by_buffer) and by_file.records_mapped == by_buffer.records_mapped
        expect, _ = run_filter(data, by_buffer)
        f = BatchFilter(by_file, 2**62, FAR_PAST, 0)
        pos, want, written = 0, 997, 7  # output goes where it is asked to
        while pos < len(data):
            consumed, need = f.process_file(fd, 100 + pos, min(want, len(data) - pos))
            pos += consumed
            want = max(997, need)
            written += f.drain_to(out_fd, written)
        f.finish()
        written += f.drain_to(out_fd, written)
        assert f.output_size == 0
        assert os.pread(out_fd, written, 0)[7:] == expect
        with pytest.raises(EOFError, match="truncated"):
            KeyMap(10).add_file(fd, 100, len(data) + 1, 0, 0)
        with pytest.raises(EOFError):
            BatchFilter(KeyMap(10), 0, 0, 0).process_file(fd, len(data), 500)
    finally:
        os.close(fd)
        os.close(out_fd)
