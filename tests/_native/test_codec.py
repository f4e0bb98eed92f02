"""Unit tests of the record-batch codec: varints, CRC32C and RecordBatchView over real log bytes."""

from __future__ import annotations

import os
import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from logstore import PartitionLog, RecordBatchView
from logstore._native import codec
from logstore._native.codec import crc32c, crc32c_portable, decode_varint, encode_varint
from logstore.errors import CorruptRecordError, UnsupportedCodecError

# ---------------------------------------------------------------------------------------------
# zig-zag varints

# zig-zag maps 0,-1,1,-2,... to 0,1,2,3,...; the result is written 7 bits at a time, low first,
# with the high bit set on every byte but the last.
VARINT_VECTORS = [
    (0, "00"),
    (-1, "01"),
    (1, "02"),
    (63, "7e"),
    (-64, "7f"),
    (64, "8001"),
    (-65, "8101"),
    (8191, "fe7f"),
    (-8192, "ff7f"),
    (8192, "808001"),
    (2**31 - 1, "feffffff0f"),
    (-(2**31), "ffffffff0f"),
    (2**63 - 1, "feffffffffffffffff01"),
    (-(2**63), "ffffffffffffffffff01"),
]


@pytest.mark.parametrize("value,encoded", VARINT_VECTORS)
def test_encode_varint_vectors(value, encoded):
    assert encode_varint(value).hex() == encoded


@pytest.mark.parametrize("value,encoded", VARINT_VECTORS)
def test_decode_varint_vectors(value, encoded):
    raw = bytes.fromhex(encoded)
    assert decode_varint(raw) == (value, len(raw))
    # at a position inside a larger buffer, with trailing bytes that must not be consumed
    buf = b"\xaa\xbb\xcc" + raw + b"\x80\x80\x01"
    assert decode_varint(buf, 3) == (value, 3 + len(raw))
    assert decode_varint(bytearray(buf), 3) == (value, 3 + len(raw))
    assert decode_varint(memoryview(buf), 3) == (value, 3 + len(raw))


def _reference_varint(v: int) -> bytes:
    """Independent encoder: zig-zag with Python ints, then base-128 little-endian groups."""
    u = 2 * v if v >= 0 else -2 * v - 1
    out = bytearray()
    while True:
        b = u & 0x7F
        u >>= 7
        if u:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def test_varint_round_trip_many_values():
    rng = random.Random(1234)
    values = [0, 1, -1, 2**63 - 1, -(2**63)]
    for bits in range(1, 64):
        values += [2**bits - 1, 2**bits, -(2**bits), -(2**bits) - 1]
        values += [rng.randrange(-(2**bits), 2**bits) for _ in range(3)]
    values = [v for v in values if -(2**63) <= v < 2**63]
    stream = b"".join(encode_varint(v) for v in values)
    assert stream == b"".join(_reference_varint(v) for v in values)
    pos = 0
    decoded = []
    while pos < len(stream):
        v, pos = decode_varint(stream, pos)
        decoded.append(v)
    assert decoded == values
    assert pos == len(stream)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_varint_round_trip_property(v):
    raw = encode_varint(v)
    assert raw == _reference_varint(v)
    assert 1 <= len(raw) <= 10
    assert decode_varint(raw) == (v, len(raw))


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**70])
def test_encode_varint_rejects_out_of_int64(value):
    with pytest.raises(OverflowError):
        encode_varint(value)


@pytest.mark.parametrize("value,encoded", [v for v in VARINT_VECTORS if len(v[1]) > 2])
def test_decode_truncated_varint_raises(value, encoded):
    raw = bytes.fromhex(encoded)
    for cut in range(1, len(raw)):
        with pytest.raises(CorruptRecordError):
            decode_varint(raw[:cut])
    # a truncated varint at the end of a longer buffer must not read past it either
    with pytest.raises(CorruptRecordError):
        decode_varint(b"\x00\x00" + raw[:-1], 2)


@pytest.mark.parametrize("data,pos", [(b"", 0), (b"\x02", 1), (b"\x02", 5), (b"\x02", -1)])
def test_decode_varint_out_of_bounds_raises(data, pos):
    with pytest.raises(CorruptRecordError):
        decode_varint(data, pos)


def test_decode_overlong_varint_raises():
    # eleven bytes (ten continuation bytes) are longer than any int64 varint
    with pytest.raises(CorruptRecordError):
        decode_varint(b"\x80" * 10 + b"\x00")
    with pytest.raises(CorruptRecordError):
        decode_varint(b"\xff" * 16)
    # the int32 limit: five bytes decode, a sixth is overlong
    five = encode_varint(2**31 - 1)
    assert decode_varint(five, 0, 5) == (2**31 - 1, 5)
    six = encode_varint(2**35)
    assert len(six) == 6
    assert decode_varint(six) == (2**35, 6)
    with pytest.raises(CorruptRecordError):
        decode_varint(six, 0, 5)
    with pytest.raises(CorruptRecordError):
        decode_varint(b"\x80\x80\x80\x80\x80\x00", 0, 5)


# ---------------------------------------------------------------------------------------------
# CRC32C


def _crc32c_bitwise(data: bytes, crc: int = 0) -> int:
    """Bit-at-a-time reference (reflected Castagnoli polynomial)."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


CRC_VECTORS = [
    (b"", 0x00000000),
    (b"a", 0xC1D04330),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),  # RFC 3720 B.4, incrementing
    (bytes(range(31, -1, -1)), 0x113FDB5C),  # RFC 3720 B.4, decrementing
]


@pytest.mark.parametrize("fn", [crc32c, crc32c_portable], ids=["crc32c", "portable"])
@pytest.mark.parametrize("data,expected", CRC_VECTORS)
def test_crc32c_known_vectors(fn, data, expected):
    assert _crc32c_bitwise(data) == expected  # the reference agrees with the published value
    assert fn(data) == expected
    assert fn(bytearray(data)) == expected
    assert fn(memoryview(data)) == expected


@pytest.mark.parametrize("fn", [crc32c, crc32c_portable], ids=["crc32c", "portable"])
def test_crc32c_incremental_equals_one_shot(fn):
    msg = bytes(random.Random(7).randrange(256) for _ in range(300))
    whole = fn(msg)
    assert whole == _crc32c_bitwise(msg)
    for cut in range(len(msg) + 1):
        assert fn(msg[cut:], fn(msg[:cut])) == whole
    # three pieces
    assert fn(msg[200:], fn(msg[17:200], fn(msg[:17]))) == whole
    # an empty continuation keeps the running value
    assert fn(b"", 0x12345678) == 0x12345678


def test_crc32c_small_random_against_reference():
    rng = random.Random(99)
    for n in range(0, 80):
        data = rng.randbytes(n)
        seed = rng.randrange(2**32)
        assert crc32c(data) == _crc32c_bitwise(data)
        assert crc32c_portable(data) == _crc32c_bitwise(data)
        assert crc32c(data, seed) == _crc32c_bitwise(data, seed)
        assert crc32c_portable(data, seed) == _crc32c_bitwise(data, seed)


STRIDE = 8192  # wire.h LS_CRC_STRIDE: the hardware path interleaves 3 streams of this size
CRC_LENGTHS = sorted({
    *range(0, 40), 63, 64, 65, 127, 128, 129, 1000, 4095, 4096, 4097,
    STRIDE - 1, STRIDE, STRIDE + 1, 2 * STRIDE + 3,
    3 * STRIDE - 1, 3 * STRIDE, 3 * STRIDE + 1, 3 * STRIDE + 7, 3 * STRIDE + 8,
    4 * STRIDE + 5, 6 * STRIDE - 1, 6 * STRIDE, 6 * STRIDE + 13, 9 * STRIDE + 4321,
    (1 << 20) + 3,
})


@pytest.fixture(scope="module")
def random_blob():
    return random.Random(2024).randbytes((1 << 20) + 64)


def test_hardware_flag_is_bool():
    assert isinstance(codec.HARDWARE_CRC32C, bool)


def test_crc32c_equals_portable_many_lengths_and_alignments(random_blob):
    view = memoryview(random_blob)
    for n in CRC_LENGTHS:
        for start in (0, 1, 3, 7) if n > 40 else range(8):
            chunk = view[start:start + n]
            assert crc32c(chunk) == crc32c_portable(chunk), (n, start)
            # continuing from a non-zero CRC through the interleaved path
            assert crc32c(chunk, 0xDEADBEEF) == crc32c_portable(chunk, 0xDEADBEEF), (n, start)


def test_crc32c_large_matches_bitwise_reference(random_blob):
    # one length past the 3-way threshold, unaligned, checked against the bit-at-a-time reference
    chunk = random_blob[5:5 + 3 * STRIDE + 11]
    expected = _crc32c_bitwise(chunk)
    assert crc32c(chunk) == expected
    assert crc32c_portable(chunk) == expected


def test_crc32c_large_incremental_equals_one_shot(random_blob):
    data = random_blob[: 7 * STRIDE + 99]
    whole = crc32c(data)
    assert whole == crc32c_portable(data)
    for cut in (1, 5, STRIDE - 3, STRIDE, 3 * STRIDE, 3 * STRIDE + 1, 4 * STRIDE + 17, len(data) - 1):
        assert crc32c(data[cut:], crc32c(data[:cut])) == whole, cut
        assert crc32c_portable(data[cut:], crc32c_portable(data[:cut])) == whole, cut


def test_crc32c_accepts_numpy_buffer(random_blob):
    arr = np.frombuffer(random_blob[:4 * STRIDE], dtype=np.uint8)
    assert crc32c(arr) == crc32c_portable(random_blob[:4 * STRIDE])
    wide = np.frombuffer(random_blob[:4000], dtype=np.uint32)
    assert crc32c(wide) == crc32c_portable(random_blob[:4000])


# ---------------------------------------------------------------------------------------------
# RecordBatchView over a real log

# (value, key, headers, timestamp) per record, grouped as the appends that wrote them
APPENDS = [
    ("many", [
        (b"v0", b"k0", [("a", b"1"), ("b", None)], 1000),
        (b"", None, None, 1005),
        (None, b"", [("\u043a\u043b\u044e\u0447", b"\x00\xff"), ("empty", b"")], 999),
        (b"x" * 300, b"key3", [], 2000),
    ]),
    ("one", [(b"single", b"sk", [("h", b"v")], 3000)]),
    ("many", [(b"a", None, None, 5000), (b"b", None, None, 5001), (b"c", None, None, 5000)]),
    ("one", [(None, b"tombstone", None, 6000)]),
]


def _expected_records():
    out = []
    offset = 0
    for _, recs in APPENDS:
        for value, key, headers, ts in recs:
            out.append((offset, ts, key, value, list(headers) if headers else []))
            offset += 1
    return out


EXPECTED = _expected_records()
BATCH_SIZES = [len(recs) for _, recs in APPENDS]


def _write_log(path):
    log = PartitionLog.open(path, flush="never")
    try:
        for kind, recs in APPENDS:
            if kind == "one":
                value, key, headers, ts = recs[0]
                log.append(value, key=key, headers=headers, timestamp=ts)
            else:
                log.append_many([r[0] for r in recs], keys=[r[1] for r in recs],
                                headers=[r[2] for r in recs], timestamps=[r[3] for r in recs])
        assert log.log_end_offset == len(EXPECTED)
    finally:
        log.close()


@pytest.fixture(scope="module")
def log_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("codec_log")
    _write_log(path)
    with open(os.path.join(path, "%020d.log" % 0), "rb") as f:
        data = f.read()
    return data


def _as_tuples(view):
    return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in view]


def _batch_bounds(data):
    """(position, size) of each batch, walked with the length field (independent of the view)."""
    out = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        out.append((pos, length + 12))
        pos += length + 12
    assert pos == len(data)
    return out


def _recompute_crc(batch: bytearray) -> None:
    struct.pack_into(">I", batch, 17, crc32c(bytes(batch[21:])))


def test_view_reads_every_record(log_bytes):
    view = RecordBatchView(log_bytes)
    assert _as_tuples(view) == EXPECTED
    assert len(view) == len(EXPECTED)
    assert view.batch_count == len(APPENDS)
    assert view.next_offset == len(EXPECTED)
    assert view.size_bytes == len(log_bytes)
    assert bool(view)
    batches = view.batches()
    assert [b["record_count"] for b in batches] == BATCH_SIZES
    assert [(b["position"], b["size"]) for b in batches] == _batch_bounds(log_bytes)
    first = 0
    for b, n in zip(batches, BATCH_SIZES):
        assert b["base_offset"] == first
        assert b["last_offset"] == first + n - 1
        assert b["attributes"] == 0
        first += n


def test_view_indexing(log_bytes):
    view = RecordBatchView(log_bytes)
    assert (view[0].offset, view[0].value) == (0, b"v0")
    assert view[-1].offset == len(EXPECTED) - 1
    assert view[-1].value is None
    assert view[3] == list(view)[3]
    with pytest.raises(IndexError):
        view[len(EXPECTED)]
    with pytest.raises(IndexError):
        view[-len(EXPECTED) - 1]


def test_view_null_and_empty_keys_values(log_bytes):
    view = RecordBatchView(log_bytes)
    by_offset = {r.offset: r for r in view}
    assert by_offset[1].key is None and by_offset[1].value == b""
    assert by_offset[2].key == b"" and by_offset[2].value is None
    kl = view.key_lengths
    vl = view.value_lengths
    assert kl[1] == -1 and vl[1] == 0
    assert kl[2] == 0 and vl[2] == -1
    assert vl[len(EXPECTED) - 1] == -1


def test_view_headers_round_trip(log_bytes):
    view = RecordBatchView(log_bytes)
    got = {r.offset: r.headers for r in view}
    assert got[0] == [("a", b"1"), ("b", None)]
    assert got[1] == []
    assert got[2] == [("\u043a\u043b\u044e\u0447", b"\x00\xff"), ("empty", b"")]
    assert got[4] == [("h", b"v")]
    for headers in got.values():
        for k, v in headers:
            assert type(k) is str
            assert v is None or type(v) is bytes


def test_view_numpy_columns_agree_with_records(log_bytes):
    view = RecordBatchView(log_bytes)
    records = list(view)
    buf = view.buffer
    assert buf.dtype == np.uint8 and len(buf) == len(log_bytes)
    assert view.offsets.dtype == np.int64 and view.timestamps.dtype == np.int64
    assert view.key_lengths.dtype == np.int32 and view.value_lengths.dtype == np.int32
    assert view.offsets.tolist() == [r.offset for r in records]
    assert view.timestamps.tolist() == [r.timestamp for r in records]
    for i, r in enumerate(records):
        kl, vl = int(view.key_lengths[i]), int(view.value_lengths[i])
        if r.key is None:
            assert kl == -1
        else:
            kp = int(view.key_positions[i])
            assert kl == len(r.key)
            assert buf[kp:kp + kl].tobytes() == r.key
        if r.value is None:
            assert vl == -1
        else:
            vp = int(view.value_positions[i])
            assert vl == len(r.value)
            assert buf[vp:vp + vl].tobytes() == r.value
    for col in (view.offsets, view.timestamps, view.key_positions, view.key_lengths,
                view.value_positions, view.value_lengths):
        assert len(col) == len(records)
        assert not col.flags.writeable


def test_view_offset_filtering(log_bytes):
    n = len(EXPECTED)
    for lo in range(0, n + 2):
        for hi in range(lo, n + 3):
            view = RecordBatchView(log_bytes, min_offset=lo, max_offset=hi)
            want = [e for e in EXPECTED if lo <= e[0] < hi]
            assert _as_tuples(view) == want, (lo, hi)
            assert view.offsets.tolist() == [e[0] for e in want]
            assert len(view) == len(want)
            # every batch is in the view; reading continues after them, capped by max_offset
            assert view.next_offset == min(max(lo, n), hi), (lo, hi)
            assert view.batch_count == len(APPENDS)
            assert bytes(view.raw) == log_bytes


def test_view_start_end_select_batches(log_bytes):
    bounds = _batch_bounds(log_bytes)
    first = 0
    for (pos, size), count in zip(bounds, BATCH_SIZES):
        view = RecordBatchView(log_bytes, pos, pos + size)
        assert view.start == pos and view.end == pos + size
        assert bytes(view.raw) == log_bytes[pos:pos + size]
        assert view.batch_count == 1
        assert _as_tuples(view) == EXPECTED[first:first + count]
        assert view.next_offset == first + count
        # positions index the whole buffer, not the slice
        for i, r in enumerate(view):
            if r.value is not None:
                vp = int(view.value_positions[i])
                assert pos <= vp < pos + size
        first += count
    # the middle two batches together
    (p1, _), (p2, s2) = bounds[1], bounds[2]
    view = RecordBatchView(log_bytes, p1, p2 + s2)
    assert _as_tuples(view) == EXPECTED[BATCH_SIZES[0]:sum(BATCH_SIZES[:3])]


def test_view_bounds_validation(log_bytes):
    with pytest.raises(ValueError):
        RecordBatchView(log_bytes, 10, 5)
    with pytest.raises(ValueError):
        RecordBatchView(log_bytes, -1)
    with pytest.raises(ValueError):
        RecordBatchView(log_bytes, 0, len(log_bytes) + 1)


def test_empty_view(log_bytes):
    view = RecordBatchView(b"", 0, 0, 7, 9)
    assert len(view) == 0
    assert not view
    assert list(view) == []
    assert view.next_offset == 7
    assert view.offsets.tolist() == []


def test_view_accepts_bytearray_and_memoryview(log_bytes):
    assert _as_tuples(RecordBatchView(bytearray(log_bytes))) == EXPECTED
    assert _as_tuples(RecordBatchView(memoryview(log_bytes))) == EXPECTED


def test_view_of_log_read_matches_file_bytes(tmp_path, log_bytes):
    _write_log(tmp_path)
    with PartitionLog.open(tmp_path, flush="never") as log:
        view = log.read(0)
        assert bytes(view.raw) == log_bytes
        assert _as_tuples(view) == EXPECTED
        part = log.read(5, max_offset=7)
        assert _as_tuples(part) == EXPECTED[5:7]
        assert part.next_offset == 7


def test_stored_crc_is_crc32c_of_bytes_from_attributes(log_bytes):
    for pos, size in _batch_bounds(log_bytes):
        batch = log_bytes[pos:pos + size]
        assert batch[16] == 2  # magic
        (stored,) = struct.unpack_from(">I", batch, 17)
        assert stored == crc32c(batch[21:]) == _crc32c_bitwise(batch[21:])


def test_flipped_byte_raises_corrupt(log_bytes):
    pos, size = _batch_bounds(log_bytes)[0]
    batch = log_bytes[pos:pos + size]
    RecordBatchView(batch)  # intact: fine
    # length, magic, CRC and everything the CRC covers; base offset and leader epoch are not
    # covered by the CRC (the log rewrites them), so they are left out
    positions = [8, 9, 10, 11] + list(range(16, size))
    for i in positions:
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(batch)
            bad[i] ^= mask
            with pytest.raises(CorruptRecordError):
                RecordBatchView(bytes(bad))
    # also when the bad batch follows a good one
    bad = bytearray(log_bytes)
    second_pos = _batch_bounds(log_bytes)[1][0]
    bad[second_pos + 70] ^= 0x10
    with pytest.raises(CorruptRecordError):
        RecordBatchView(bytes(bad))


def test_flipped_byte_not_checked_without_verify_crc(log_bytes):
    pos, size = _batch_bounds(log_bytes)[1]
    batch = bytearray(log_bytes[pos:pos + size])
    i = batch.index(b"single")
    batch[i] ^= 0x20  # "single" -> "Single"
    with pytest.raises(CorruptRecordError):
        RecordBatchView(bytes(batch))
    view = RecordBatchView(bytes(batch), verify_crc=False)
    assert [r.value for r in view] == [b"Single"]


@pytest.mark.parametrize("cut", [1, 10, 30, 60, 61, 62])
def test_truncated_batch_raises_corrupt(log_bytes, cut):
    pos, size = _batch_bounds(log_bytes)[0]
    batch = log_bytes[pos:pos + size]
    with pytest.raises(CorruptRecordError):
        RecordBatchView(batch[:-cut] if cut < size else batch[:1])
    with pytest.raises(CorruptRecordError):
        RecordBatchView(log_bytes[:-cut])


def test_bad_magic_raises_corrupt(log_bytes):
    pos, size = _batch_bounds(log_bytes)[0]
    bad = bytearray(log_bytes[pos:pos + size])
    bad[16] = 1
    with pytest.raises(CorruptRecordError):
        RecordBatchView(bytes(bad))


def test_recomputed_crc_helper_is_identity_on_good_batch(log_bytes):
    pos, size = _batch_bounds(log_bytes)[0]
    batch = bytearray(log_bytes[pos:pos + size])
    _recompute_crc(batch)
    assert bytes(batch) == log_bytes[pos:pos + size]


@pytest.mark.parametrize("codec_bits", [1, 2, 3, 4, 7])
def test_compressed_batch_raises_unsupported_codec(log_bytes, codec_bits):
    pos, size = _batch_bounds(log_bytes)[0]
    batch = bytearray(log_bytes[pos:pos + size])
    (attrs,) = struct.unpack_from(">h", batch, 21)
    struct.pack_into(">h", batch, 21, attrs | codec_bits)
    # without a matching CRC it is plain corruption
    with pytest.raises(CorruptRecordError):
        RecordBatchView(bytes(batch))
    _recompute_crc(batch)
    with pytest.raises(UnsupportedCodecError):
        RecordBatchView(bytes(batch))
    # after a good batch as well
    data = log_bytes[:pos + size] + bytes(batch)
    with pytest.raises(UnsupportedCodecError):
        RecordBatchView(data)
    assert not issubclass(UnsupportedCodecError, CorruptRecordError)


def test_bad_record_framing_with_valid_crc_raises_corrupt_on_parse(log_bytes):
    pos, size = _batch_bounds(log_bytes)[0]
    good = log_bytes[pos:pos + size]
    (count,) = struct.unpack_from(">i", good, 57)

    # one record more than the batch holds
    more = bytearray(good)
    struct.pack_into(">i", more, 57, count + 1)
    _recompute_crc(more)
    # one record fewer: bytes left over
    fewer = bytearray(good)
    struct.pack_into(">i", fewer, 57, count - 1)
    _recompute_crc(fewer)
    # last offset delta smaller than the offsets inside
    delta = bytearray(good)
    struct.pack_into(">i", delta, 23, count - 2)
    _recompute_crc(delta)
    for bad in (more, fewer, delta):
        try:
            view = RecordBatchView(bytes(bad))  # the header and CRC are fine
        except CorruptRecordError:
            continue  # rejecting it up front is fine too
        with pytest.raises(CorruptRecordError):
            len(view)
