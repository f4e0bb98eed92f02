"""Wire compatibility with kafka-python's record batch v2 reader and builder.

The log's segment files must be readable by a Kafka client library as-is, and batches built by
that library must be accepted, re-offset and served back unchanged in content.
"""

from __future__ import annotations

import os
import struct
import time
import warnings

import pytest

# importing the kafka package loads its protocol schemas with a deprecated importlib.resources
# call; that warning is kafka-python's, not ours (the suite runs with warnings as errors)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
    from kafka.record.util import calc_crc32c

from logstore import PartitionLog
from logstore.errors import InvalidRecordError, UnsupportedCodecError


def _split_batches(data: bytes) -> list[bytes]:
    """Cut a stream of v2 batches on their length fields."""
    out = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        out.append(data[pos:pos + 12 + length])
        pos += 12 + length
    assert pos == len(data)
    return out


def _decode(data: bytes):
    """Every batch in ``data`` decoded by kafka-python: [(batch, [records])], CRC checked first."""
    out = []
    for raw in _split_batches(data):
        batch = DefaultRecordBatch(raw)
        assert batch.validate_crc(), f"kafka-python rejects the CRC of the batch at {batch.base_offset}"
        assert batch.magic == 2
        assert batch.size_in_bytes == len(raw)
        records = list(batch)
        out.append((batch, records))
    return out


def _kafka_tuple(r):
    return (r.offset, r.timestamp, r.key, r.value, list(r.headers))


def _ours_tuple(r):
    return (r.offset, r.timestamp, r.key, r.value, r.headers)


def _segment_files(path) -> list[str]:
    return sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".log"))


def _builder(**kw):
    args = dict(magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1,
                base_sequence=-1, batch_size=1 << 20)
    args.update(kw)
    return DefaultRecordBatchBuilder(**args)


def _build(records, **kw) -> bytes:
    """records: (offset_delta, timestamp, key, value, headers)."""
    b = _builder(**kw)
    for off, ts, key, value, headers in records:
        assert b.append(off, ts, key, value, headers) is not None
    return bytes(b.build())


# ---------------------------------------------------------------------------------------------
# (a) what the log writes, kafka-python reads


def _append_mixed(log):
    """A mix of append_many and append calls; returns the expected (offset, ts, key, value,
    headers) per record, or ts None where the log stamps the current time, and each call's size."""
    expected = []
    calls = []

    def many(values, keys=None, headers=None, timestamps=None):
        first = log.append_many(values, keys=keys, headers=headers, timestamps=timestamps)
        assert first == len(expected)
        for i, v in enumerate(values):
            ts = timestamps[i] if isinstance(timestamps, list) else timestamps
            expected.append((first + i, ts, keys[i] if keys else None, v,
                             list(headers[i]) if headers and headers[i] else []))
        calls.append(len(values))

    def one(value, key=None, headers=None, timestamp=None):
        off = log.append(value, key=key, headers=headers, timestamp=timestamp)
        assert off == len(expected)
        expected.append((off, timestamp, key, value, list(headers) if headers else []))
        calls.append(1)

    many([b"v0", b"v1", b"v2"], keys=[b"k0", None, b"k2"],
         headers=[[("trace", b"abc")], None, [("a", None), ("b", b""), ("\u00e9t\u00e9", b"\x00\x01")]],
         timestamps=[1_700_000_000_000, 1_700_000_000_005, 1_699_999_999_990])
    one(b"solo", key=b"sk", headers=[("h", b"1")], timestamp=1_700_000_001_000)
    many([None, b"", b"x" * 1000], keys=[b"tomb", b"empty", None], timestamps=[5, 5, 6])
    one(None, key=b"deleted", timestamp=1_700_000_002_000)
    many([b"p%d" % i for i in range(50)], keys=[b"key-%d" % (i % 7) for i in range(50)],
         headers=[[("i", str(i).encode())] if i % 3 == 0 else [] for i in range(50)],
         timestamps=[1_700_000_003_000 + i * 10 for i in range(50)])
    log.set_leader_epoch(3)
    one(b"now", headers=None)  # timestamp: the append time
    many([b"q"], keys=[b"k"], timestamps=7)
    return expected, calls


def _check_decoded(decoded, expected, calls, now_range):
    lo, hi = now_range
    got = [_kafka_tuple(r) for _, records in decoded for r in records]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        if e[1] is None:
            assert lo <= g[1] <= hi, g
            g = (g[0], None) + g[2:]
        assert g == e
    # batches chain: each starts where the previous one ended, and holds one append call
    assert [len(records) for _, records in decoded] == calls
    next_offset = 0
    for batch, records in decoded:
        assert batch.base_offset == next_offset
        assert batch.records_count == len(records)
        assert batch.last_offset_delta == len(records) - 1
        assert [r.offset for r in records] == list(range(next_offset, next_offset + len(records)))
        assert batch.compression_type == 0
        assert batch.timestamp_type == 0
        assert not batch.is_transactional and not batch.is_control_batch
        assert batch.producer_id == -1
        ts = [r.timestamp for r in records]
        assert batch.first_timestamp == ts[0]
        assert batch.max_timestamp == max(ts)
        next_offset += len(records)
    # the leader epoch is stamped into the batches written after it was set
    epochs = [batch.leader_epoch for batch, _ in decoded]
    assert epochs == [0] * (len(calls) - 2) + [3, 3]


def test_log_segment_is_readable_by_kafka_python(tmp_path):
    log = PartitionLog.open(tmp_path, flush="never")
    before = int(time.time() * 1000)
    try:
        expected, calls = _append_mixed(log)
    finally:
        log.close()
    after = int(time.time() * 1000)
    files = _segment_files(tmp_path)
    assert len(files) == 1
    with open(files[0], "rb") as f:
        data = f.read()
    decoded = _decode(data)
    _check_decoded(decoded, expected, calls, (before, after))

    # and the log reads back what kafka-python saw
    with PartitionLog.open(tmp_path, flush="never") as log:
        view = log.read(0, max_bytes=1 << 24)
        assert [_ours_tuple(r) for r in view] == [_kafka_tuple(r) for _, rs in decoded for r in rs]


def test_every_segment_is_readable_by_kafka_python(tmp_path):
    # small segments: batches spread over several files, offsets chain across them
    log = PartitionLog.open(tmp_path, flush="never", segment_bytes=600)
    before = int(time.time() * 1000)
    try:
        expected, calls = _append_mixed(log)
    finally:
        log.close()
    after = int(time.time() * 1000)
    files = _segment_files(tmp_path)
    assert len(files) > 2
    decoded = []
    for path in files:
        with open(path, "rb") as f:
            segment = _decode(f.read())
        assert segment, path
        assert segment[0][0].base_offset == int(os.path.basename(path)[:-4])
        decoded.extend(segment)
    _check_decoded(decoded, expected, calls, (before, after))


# ---------------------------------------------------------------------------------------------
# (b) what kafka-python builds, the log accepts


BUILT_A = [
    (0, 1_600_000_000_000, b"ka", b"va", [("x", b"1")]),
    (1, 1_600_000_000_100, None, b"vb", []),
    (2, 1_599_999_999_000, b"kc", None, [("n", None), ("e", b"")]),
    (3, 1_600_000_000_050, b"", b"", []),
]
BUILT_B = [
    (0, 42, b"only", b"one", [("\u00fc", b"\xff")]),
]
BUILT_C = [(i, 10_000 + i, b"c%d" % i, b"value-%d" % i * 3, []) for i in range(20)]


def _expected_from_built(records, first):
    return [(first + off, ts, key, value, headers) for off, ts, key, value, headers in records]


def test_kafka_python_batches_round_trip(tmp_path):
    with PartitionLog.open(tmp_path, flush="never") as log:
        log.append_many([b"pre0", b"pre1"], timestamps=[1, 2])  # offsets are reassigned after these
        first_a = log.append_batch(_build(BUILT_A))
        assert first_a == 2
        assert log.log_end_offset == 2 + len(BUILT_A)
        log.append(b"between", timestamp=3)
        # two batches in one call
        first_b = log.append_batch(_build(BUILT_B) + _build(BUILT_C))
        assert first_b == 7
        assert log.log_end_offset == 7 + len(BUILT_B) + len(BUILT_C)

        expected = ([(0, 1, None, b"pre0", []), (1, 2, None, b"pre1", [])]
                    + _expected_from_built(BUILT_A, 2)
                    + [(6, 3, None, b"between", [])]
                    + _expected_from_built(BUILT_B, 7)
                    + _expected_from_built(BUILT_C, 8))
        view = log.read(0, max_bytes=1 << 24)
        assert [_ours_tuple(r) for r in view] == expected

        # a read from the middle of a built batch serves the whole batch, from the asked offset on
        part = log.read(4)
        assert [_ours_tuple(r) for r in part][:2] == expected[4:6]

        # the stored bytes still decode with kafka-python, CRC intact after re-offsetting
        decoded = _decode(bytes(view.raw))
        assert [_kafka_tuple(r) for _, rs in decoded for r in rs] == expected
        assert [b.base_offset for b, _ in decoded] == [0, 2, 6, 7, 8]
        # timestamps within a built batch are kept as built (create time)
        batch_a = decoded[1][0]
        assert batch_a.first_timestamp == BUILT_A[0][1]
        assert batch_a.max_timestamp == max(r[1] for r in BUILT_A)


def test_built_batch_header_fields_are_kept(tmp_path):
    raw = _build(BUILT_B, producer_id=1234, producer_epoch=5, base_sequence=17)
    with PartitionLog.open(tmp_path, flush="never") as log:
        log.append_many([b"a", b"b", b"c"], timestamps=9)
        log.set_leader_epoch(4)
        assert log.append_batch(raw) == 3
        stored = bytes(log.read(3).raw)
    (batch, records), = _decode(stored)
    assert batch.base_offset == 3
    assert batch.leader_epoch == 4
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (1234, 5, 17)
    assert [_kafka_tuple(r) for r in records] == _expected_from_built(BUILT_B, 3)
    # only the base offset and leader epoch differ from what the producer sent
    assert stored[16:] == raw[16:]
    assert stored[8:12] == raw[8:12]


def test_built_batch_survives_reopen(tmp_path):
    with PartitionLog.open(tmp_path, flush="never") as log:
        log.append(b"first", timestamp=1)
        log.append_batch(_build(BUILT_C))
    with PartitionLog.open(tmp_path, flush="never") as log:
        assert log.log_end_offset == 1 + len(BUILT_C)
        view = log.read(1, max_bytes=1 << 20)
        assert [_ours_tuple(r) for r in view] == _expected_from_built(BUILT_C, 1)


def test_built_batch_with_offset_gaps(tmp_path):
    # a compacted batch: offset deltas with holes; the log reserves the whole delta range
    records = [(0, 100, b"a", b"1", []), (2, 101, b"b", b"2", []), (5, 102, b"c", b"3", [])]
    with PartitionLog.open(tmp_path, flush="never") as log:
        log.append(b"x", timestamp=1)
        assert log.append_batch(_build(records)) == 1
        assert log.log_end_offset == 1 + 6
        assert [r.offset for r in log.read(1)] == [1, 3, 6]
        assert log.append(b"after", timestamp=2) == 7


# ---------------------------------------------------------------------------------------------
# (c), (d): rejected batches leave the log untouched


def _state(log):
    log.flush()
    sizes = [os.path.getsize(p) for p in _segment_files(log.path)]
    return log.log_end_offset, log.size_bytes, sizes, [_ours_tuple(r) for r in log.read(log.log_start_offset)]


def _compressed_batch() -> bytes:
    raw = _build([(i, 1000 + i, b"k", b"compress me " * 50, []) for i in range(10)], compression_type=1)
    (attrs,) = struct.unpack_from(">h", raw, 21)
    assert attrs & 0x07 == 1, "kafka-python did not compress the batch"
    assert DefaultRecordBatch(raw).validate_crc()
    return raw


def test_compressed_batch_is_rejected(tmp_path):
    raw = _compressed_batch()
    with PartitionLog.open(tmp_path, flush="never") as log:
        log.append_many([b"a", b"b"], keys=[b"1", b"2"], timestamps=[5, 6])
        before = _state(log)
        with pytest.raises(UnsupportedCodecError):
            log.append_batch(raw)
        assert _state(log) == before
        # all or nothing: a good batch in front of the compressed one is not written either
        with pytest.raises(UnsupportedCodecError):
            log.append_batch(_build(BUILT_B) + raw)
        assert _state(log) == before
        # and the log keeps working
        assert log.append_batch(_build(BUILT_B)) == 2
    files = _segment_files(tmp_path)
    with open(files[0], "rb") as f:
        decoded = _decode(f.read())
    assert [b.compression_type for b, _ in decoded] == [0, 0]
    assert sum(len(rs) for _, rs in decoded) == 3


def _corrupt_in_record(raw: bytes, needle: bytes) -> bytes:
    bad = bytearray(raw)
    i = bad.index(needle)
    assert i >= 61
    bad[i] ^= 0x01
    return bytes(bad)


def test_corrupted_batch_is_rejected(tmp_path):
    good = _build(BUILT_A)
    bad = _corrupt_in_record(good, b"vb")
    assert not DefaultRecordBatch(bad).validate_crc()  # kafka-python agrees it is corrupt
    with PartitionLog.open(tmp_path, flush="never") as log:
        log.append(b"keep", timestamp=1)
        before = _state(log)
        with pytest.raises(InvalidRecordError):
            log.append_batch(bad)
        assert _state(log) == before
        # behind a good batch: nothing of the call is written
        with pytest.raises(InvalidRecordError):
            log.append_batch(good + bad)
        assert _state(log) == before
        # cut short
        with pytest.raises(InvalidRecordError):
            log.append_batch(good[:-1])
        assert _state(log) == before
        # a header field the CRC covers
        hdr = bytearray(good)
        hdr[60] ^= 0x01  # record count
        with pytest.raises(InvalidRecordError):
            log.append_batch(bytes(hdr))
        assert _state(log) == before
        assert log.append_batch(good) == 1
    files = _segment_files(tmp_path)
    with open(files[0], "rb") as f:
        decoded = _decode(f.read())
    assert [len(rs) for _, rs in decoded] == [1, len(BUILT_A)]


def test_batch_with_valid_crc_but_bad_records_is_rejected(tmp_path):
    # framing errors the CRC cannot see: the producer computed the CRC over bad records
    good = bytearray(_build(BUILT_A))
    struct.pack_into(">i", good, 57, len(BUILT_A) + 1)  # claims one record more
    struct.pack_into(">I", good, 17, calc_crc32c(memoryview(bytes(good[21:]))))
    assert DefaultRecordBatch(bytes(good)).validate_crc()
    with PartitionLog.open(tmp_path, flush="never") as log:
        log.append(b"keep", timestamp=1)
        before = _state(log)
        with pytest.raises(InvalidRecordError):
            log.append_batch(bytes(good))
        assert _state(log) == before
