"""The properties every fuzz target checks, shared by the atheris harnesses (``fuzz/fuzz_*.py``)
and the regression replay (``tests/test_fuzz_regressions.py``), so both judge an input alike.

Each target is a function ``check_<name>(data: bytes) -> None``. It feeds ``data`` to one native
decoder (or, for ``checkpoint``, the checkpoint parser) and returns quietly when the input was
either accepted and decoded consistently, or rejected with a ``LogstoreError``. Anything else
escapes: a ``Finding`` when a property is violated, or the unexpected exception itself (a
``TypeError``, ``OverflowError``, ``SystemError``...). A crash (segfault, sanitizer report) is a
finding too, of course, but only the harness process can see it.

Inputs start with a few bytes of parameters (flags, offsets, sizes; see each target); a short
input reads as if padded with zero bytes. Targets whose decoder checks a CRC32C have a flag that
makes the harness recompute the CRCs first, so that mutations reach the record walker instead of
dying at the checksum.

This module needs only logstore (numpy comes with it), never atheris.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from bisect import bisect_right
from collections.abc import Callable

import xxhash

from logstore import PartitionLog
from logstore._native.codec import RecordBatchView, crc32c, decode_varint
from logstore._native.index import OffsetIndex, TimeIndex
from logstore._native.segment import Segment
from logstore.errors import CorruptRecordError, InvalidArgumentError, LogstoreError, UnsupportedCodecError
from logstore.log.checkpoint import Checkpoint

INT64_MAX = 2**63 - 1
HEADER = 61  # record batch v2 header size
OVERHEAD = 12  # base offset + batch length, not counted in the batch length


class Finding(AssertionError):
    """A property of a decoder does not hold for this input."""


def expect(cond: object, message: str) -> None:
    if not cond:
        raise Finding(message)


def _params(data: bytes, n: int) -> tuple[bytes, bytes]:
    """The first ``n`` parameter bytes (zero-padded) and the payload after them."""
    head = data[:n]
    return head + bytes(n - len(head)), data[n:]


def _scratch_root() -> str:
    # LOGSTORE_FUZZ_TMP if set (the CI scripts point it at a directory they remove), else tmpfs
    # when there is one: the index and segment targets create files on every input
    root = os.environ.get("LOGSTORE_FUZZ_TMP")
    if root:
        os.makedirs(root, exist_ok=True)
        return root
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


_SCRATCH: dict[str, str] = {}
_LOGS: dict[bool, PartitionLog] = {}  # the append_batch target's scratch logs


def scratch_dir(name: str) -> str:
    """An empty directory for this process and target (emptied again on every call)."""
    d = _SCRATCH.get(name)
    if d is None or not os.path.isdir(d):
        d = _SCRATCH[name] = tempfile.mkdtemp(prefix=f"logstore-fuzz-{name}-", dir=_scratch_root())
    else:
        for entry in os.listdir(d):
            p = os.path.join(d, entry)
            if os.path.isdir(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
    return d


def cleanup() -> None:
    """Remove this process's scratch directories and logs (harnesses call it at exit)."""
    for log in _LOGS.values():
        log.close()
    _LOGS.clear()
    for d in _SCRATCH.values():
        shutil.rmtree(d, ignore_errors=True)
    _SCRATCH.clear()


# ---------------------------------------------------------------------------------------------
# a pure-Python reading of the batch format (docs/format.md), used as the reference


def reference_varint(buf: bytes, pos: int, max_bytes: int, end: int | None = None) -> tuple[int, int] | None:
    """Decode a zig-zag varint of at most ``max_bytes`` bytes at ``pos`` (bits past 64 are
    dropped, as in a 64-bit accumulator), reading nothing at or after ``end``: ``(value,
    next position)``, or None if it is truncated or longer than ``max_bytes``."""
    if end is None:
        end = len(buf)
    v, shift = 0, 0
    for i in range(max_bytes):
        if pos + i >= end:
            return None
        b = buf[pos + i]
        v = (v | (b & 0x7F) << shift) & (2**64 - 1)
        if not b & 0x80:
            return (v >> 1) ^ -(v & 1), pos + i + 1
        shift += 7
    return None


def batch_header(buf: bytes, pos: int) -> dict[str, int] | None:
    """Fields of the batch header at ``pos`` if it is sane (size, magic, offsets, count) and the
    whole batch is there; None otherwise."""
    if len(buf) - pos < HEADER:
        return None
    (base, length, epoch, magic, crc, attrs, last_delta, base_ts, max_ts, _pid, _pepoch, _seq,
     count) = struct.unpack_from(">qiibIhiqqqhii", buf, pos)
    if length < HEADER - OVERHEAD or length > 0x7FFFFFFF - OVERHEAD or magic != 2:
        return None
    size = length + OVERHEAD
    # the offset after the batch (last + 1) must be an int64 too
    if base < 0 or last_delta < 0 or base + last_delta >= INT64_MAX or count < 0 or len(buf) - pos < size:
        return None
    return {"base": base, "size": size, "epoch": epoch, "crc": crc, "attrs": attrs,
            "last": base + last_delta, "base_ts": base_ts, "max_ts": max_ts, "count": count,
            "pid": _pid, "pepoch": _pepoch, "seq": _seq}


def crc_ok(buf: bytes, pos: int, h: dict[str, int]) -> bool:
    return crc32c(buf[pos + 21:pos + h["size"]]) == h["crc"]


def _wrap64(v: int) -> int:
    return (v + 2**63) % 2**64 - 2**63


Ref = tuple[int, int, "bytes | None", "bytes | None", "list[tuple[str, bytes | None]]"]


def reference_records(buf: bytes, pos: int, h: dict[str, int]) -> list[Ref] | None:
    """Decode the records of the batch at ``pos`` (header ``h``) as docs/format.md describes:
    ``(offset, timestamp, key, value, headers)`` each, or None if the framing is malformed.
    Int32 fields are varints of at most 5 bytes, int64 of at most 10; offset deltas strictly
    increase and stay within lastOffsetDelta; records fill the batch exactly. Timestamps wrap
    like Java longs (base + delta); with the log-append-time flag every record has maxTimestamp."""
    end = pos + h["size"]
    p = pos + HEADER
    out: list[Ref] = []
    prev = -1
    for _ in range(h["count"]):
        r = reference_varint(buf, p, 5, end)
        if r is None or r[0] < 1 or r[0] > end - r[1]:
            return None
        length, p = r
        rec_end = p + length
        p += 1  # attributes
        r = reference_varint(buf, p, 10, rec_end)
        if r is None:
            return None
        ts_delta, p = r
        r = reference_varint(buf, p, 5, rec_end)
        if r is None or r[0] <= prev or r[0] > h["last"] - h["base"]:
            return None
        off_delta, p = r
        prev = off_delta
        fields: list[bytes | None] = []
        for _kv in range(2):
            r = reference_varint(buf, p, 5, rec_end)
            if r is None or r[0] < -1 or r[0] > rec_end - r[1]:
                return None
            n, p = r
            fields.append(None if n < 0 else buf[p:p + n])
            p += max(n, 0)
        r = reference_varint(buf, p, 5, rec_end)
        if r is None or r[0] < 0:
            return None
        hcount, p = r
        headers: list[tuple[str, bytes | None]] = []
        for _h in range(hcount):
            r = reference_varint(buf, p, 5, rec_end)
            if r is None or r[0] < 0 or r[0] > rec_end - r[1]:
                return None
            klen, p = r
            key = buf[p:p + klen].decode("utf-8", "surrogateescape")
            p += klen
            r = reference_varint(buf, p, 5, rec_end)
            if r is None or r[0] < -1 or r[0] > rec_end - r[1]:
                return None
            vlen, p = r
            headers.append((key, None if vlen < 0 else buf[p:p + vlen]))
            p += max(vlen, 0)
        if p != rec_end:
            return None
        ts = h["max_ts"] if h["attrs"] & 8 else _wrap64(h["base_ts"] + ts_delta)
        out.append((h["base"] + off_delta, ts, fields[0], fields[1], headers))
    if p != end:
        return None
    return out


def reference_batches(buf: bytes, verify_crc: bool) -> list[tuple[int, dict[str, int]]] | None:
    """``(position, header)`` of every batch if ``buf`` is whole, valid, uncompressed batches."""
    out, pos = [], 0
    while pos < len(buf):
        h = batch_header(buf, pos)
        if h is None or (verify_crc and not crc_ok(buf, pos, h)) or h["attrs"] & 7:
            return None
        out.append((pos, h))
        pos += h["size"]
    return out


def fix_crcs(buf: bytes) -> bytes:
    """Recompute the CRC32C of every batch whose header frames a whole batch, front to back."""
    out = bytearray(buf)
    pos = 0
    while len(out) - pos >= HEADER:
        length = struct.unpack_from(">i", out, pos + 8)[0]
        size = length + OVERHEAD
        if length < HEADER - OVERHEAD or pos + size > len(out):
            break
        struct.pack_into(">I", out, pos + 17, crc32c(bytes(out[pos + 21:pos + size])))
        pos += size
    return bytes(out)


def _check_view(view: RecordBatchView, payload: bytes, min_offset: int, max_offset: int) -> int:
    """Everything a reader can ask of a view whose records decoded must be consistent and inside
    the buffer. Returns the number of records."""
    expect(view.size_bytes == view.end - view.start, "size_bytes disagrees with start/end")
    expect(bytes(view.raw) == payload[view.start:view.end], "raw is not the viewed bytes")
    n = len(view)
    cols = {name: getattr(view, name) for name in (
        "offsets", "timestamps", "key_positions", "key_lengths", "value_positions", "value_lengths",
        "header_positions")}
    for name, col in cols.items():
        expect(len(col) == n, f"column {name} has {len(col)} entries for {n} records")
        expect(not col.flags.writeable, f"column {name} is writeable")
    size = len(view.data)
    buffer = view.buffer
    expect(len(buffer) == size, "buffer is not the whole read buffer")
    records = list(view)
    expect(len(records) == n, "iteration and len() disagree")
    for i, r in enumerate(records):
        off = int(cols["offsets"][i])
        expect(r.offset == off, "record offset differs from the offsets column")
        expect(min_offset <= off < max_offset, f"offset {off} outside the view [{min_offset}, {max_offset})")
        expect(r.timestamp == int(cols["timestamps"][i]), "record timestamp differs from the column")
        for what, pos_col, len_col, value in (("key", "key_positions", "key_lengths", r.key),
                                              ("value", "value_positions", "value_lengths", r.value)):
            p, ln = int(cols[pos_col][i]), int(cols[len_col][i])
            expect(ln >= -1, f"{what} length {ln}")
            if ln < 0:
                expect(value is None, f"null {what} decoded as bytes")
                continue
            expect(view.start <= p and p + ln <= view.end, f"{what} [{p}, {p + ln}) leaves the view")
            expect(value == payload[p:p + ln], f"{what} bytes differ from the buffer slice")
        hp = int(cols["header_positions"][i])
        expect(view.start <= hp < view.end, f"header position {hp} leaves the view")
        headers = r.headers
        expect(isinstance(headers, list), "headers is not a list")
        for item in headers:
            expect(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                   and (item[1] is None or isinstance(item[1], bytes)), f"bad header item {item!r}")
        repr(r)
    if n:
        expect(view[-1].offset == records[-1].offset, "view[-1] is not the last record")
    try:
        view[n]
    except IndexError:
        pass
    else:
        raise Finding("view[len(view)] did not raise IndexError")
    batches = view.batches()
    expect(len(batches) == view.batch_count, "batches() and batch_count disagree")
    expect(sum(b["size"] for b in batches) == view.end - view.start, "batch sizes do not add up")
    repr(view)
    return n


def _records(view: RecordBatchView) -> list[Ref]:
    return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in view]


def reference_view(buf: bytes, verify_crc: bool, min_offset: int, max_offset: int
                   ) -> tuple[list[tuple[int, dict[str, int]]] | None, list[Ref] | None]:
    """The reference reading of a buffer of batches: its batches (None if a header, CRC or
    codec is bad) and the records in ``[min_offset, max_offset)`` (None if any batch's record
    framing is bad)."""
    batches = reference_batches(buf, verify_crc)
    if batches is None:
        return None, None
    records: list[Ref] = []
    for pos, h in batches:
        recs = reference_records(buf, pos, h)
        if recs is None:
            return batches, None
        records += [r for r in recs if min_offset <= r[0] < max_offset]
    return batches, records


# ---------------------------------------------------------------------------------------------
# target: batch -- RecordBatchView over arbitrary bytes


def check_batch(data: bytes) -> None:
    """``[flags, lo, span] payload``: flags bit 0 verify CRCs, bit 1 fix CRCs first, bit 2 view
    only offsets ``[lo, lo + span)``. The view must accept exactly the buffers the reference
    accepts (at construction or, for record framing, at first access: either is fine) and then
    yield exactly the reference's records, through iteration, columns and headers alike."""
    (flags, lo, span), payload = _params(data, 3)
    if flags & 2:
        payload = fix_crcs(payload)
    verify = bool(flags & 1)
    min_offset, max_offset = (lo, lo + span) if flags & 4 else (0, INT64_MAX)
    ref_batches, ref_records = reference_view(payload, verify, min_offset, max_offset)
    try:
        view = RecordBatchView(payload, 0, -1, min_offset, max_offset, verify)
    except LogstoreError as e:
        expect(ref_records is None, f"RecordBatchView rejected a valid buffer: {e}")
        return
    expect(ref_batches is not None, "RecordBatchView accepted a bad batch header, CRC or codec")
    assert ref_batches is not None
    expect(view.start == 0 and view.end == len(payload), "default view bounds are not the whole buffer")
    expect(view.batch_count == len(ref_batches), f"{view.batch_count} batches, the reference has {len(ref_batches)}")
    want_next = min(max([min_offset] + [h["last"] + 1 for _, h in ref_batches]), max_offset)
    expect(view.next_offset == want_next, f"next_offset {view.next_offset}, expected {want_next}")
    try:
        len(view)
    except LogstoreError as e:
        expect(ref_records is None, f"records the reference decodes were rejected: {e}")
        for name in ("offsets", "timestamps", "key_positions"):
            try:
                getattr(view, name)
            except LogstoreError:
                continue
            raise Finding(f"len() rejected the records but .{name} did not") from None
        return
    expect(ref_records is not None, "decoded records whose framing the reference rejects")
    _check_view(view, payload, min_offset, max_offset)
    expect(_records(view) == ref_records, "records differ from the reference decoding")


# ---------------------------------------------------------------------------------------------
# target: append_batch -- PartitionLog.append_batch on a scratch log

LOG_RESET_BYTES = 256 * 1024  # a fresh scratch log once the current one holds this much
APPEND_MAX_BATCH = 8192  # the scratch logs' max_record_bytes


def _log_bytes(log: PartitionLog, offset: int) -> bytes:
    """The stored batches from the one holding ``offset`` to the end, read segment by segment."""
    out = []
    while offset < log.log_end_offset:
        view = log.read(offset, 1 << 30)
        if view.size_bytes == 0:
            break
        out.append(bytes(view.raw))
        offset = view.next_offset
    return b"".join(out)


def _scratch_log(log_append_time: bool) -> tuple[PartitionLog, bytes]:
    """The scratch log for this timestamp type and its current bytes (a new log when full)."""
    log = _LOGS.get(log_append_time)
    if log is not None:
        before = _log_bytes(log, log.log_start_offset)
        if len(before) < LOG_RESET_BYTES:
            # each input meets a log that has seen no producer (idempotence_ok's premise): an
            # earlier input's producer id would turn this one into a retry or a sequence gap
            log.producer_state.clear()
            return log, before
        log.close()
    path = os.path.join(scratch_dir(f"append-{int(log_append_time)}"), "log")
    log = _LOGS[log_append_time] = PartitionLog.open(
        path, segment_bytes=64 * 1024, max_record_bytes=APPEND_MAX_BATCH, index_interval_bytes=512, flush="never",
        timestamp_type="log_append_time" if log_append_time else "create_time")
    return log, b""


def idempotence_ok(headers: list[dict[str, int]]) -> bool:
    """The idempotent producer's rules for one append_batch call on a log that has not seen the
    producer: batches with a producer id come from one producer, with epoch and sequence >= 0,
    consecutive sequences within one epoch, and no sequence past 2**31 - 1; no mixing with
    batches without a producer id."""
    if not headers or headers[0]["pid"] < 0:
        return all(h["pid"] < 0 for h in headers)
    first = headers[0]
    if first["seq"] < 0 or first["pepoch"] < 0:
        return False
    expected = first["seq"]
    for h in headers:
        if h["pid"] != first["pid"] or h["pepoch"] != first["pepoch"] or h["seq"] != expected:
            return False
        last = h["seq"] + h["last"] - h["base"]
        if last > 0x7FFFFFFF:
            return False
        expected = 0 if last == 0x7FFFFFFF else last + 1
    return True


def check_append_batch(data: bytes) -> None:
    """``[flags] payload``: flags bit 0 fix CRCs first, bit 1 a log with log_append_time.
    A rejected append raises a LogstoreError and leaves the log as it was; an accepted one
    stores the batches byte for byte (offsets and epoch restamped; with log_append_time also
    the timestamp type, max timestamp and CRC) and reads back the same records."""
    (flags,), payload = _params(data, 1)
    if flags & 1:
        payload = fix_crcs(payload)
    append_time = bool(flags & 2)
    log, before = _scratch_log(append_time)
    leo = log.log_end_offset
    ref_batches, ref_records = reference_view(payload, True, 0, INT64_MAX)
    valid = bool(payload) and ref_records is not None and all(
        not h["attrs"] & 0x30 and h["size"] <= APPEND_MAX_BATCH and h["count"] > 0 for _, h in ref_batches or [])
    valid = valid and idempotence_ok([h for _, h in ref_batches or []])
    try:
        first = log.append_batch(payload)
    except LogstoreError as e:
        expect(log.log_end_offset == leo, "a rejected append moved the log end offset")
        expect(_log_bytes(log, log.log_start_offset) == before, "a rejected append changed the log's bytes")
        expect(not valid, f"append_batch rejected valid batches: {e}")
        return
    expect(valid, "append_batch accepted batches that are not whole, valid, uncompressed, "
                  "non-transactional, non-empty and within max_record_bytes")
    expect(first == leo, f"append_batch returned {first}, the log end offset was {leo}")
    stored = _log_bytes(log, log.log_start_offset)
    expect(stored[:len(before)] == before, "an append changed earlier bytes")
    added = stored[len(before):]
    expect(len(added) == len(payload), f"{len(payload)} bytes appended, {len(added)} stored")
    pos, base = 0, first
    while pos < len(payload):
        h, s = batch_header(payload, pos), batch_header(added, pos)
        expect(h is not None and s is not None, f"batch at {pos} unreadable after a successful append")
        assert h is not None and s is not None
        end = pos + h["size"]
        expect(s["size"] == h["size"], f"batch at {pos} changed size")
        expect(s["base"] == base and s["epoch"] == log.leader_epoch, f"batch at {pos} not restamped")
        expect(s["last"] - s["base"] == h["last"] - h["base"], f"batch at {pos} changed its offset span")
        if append_time:
            expect(s["attrs"] == h["attrs"] | 8, f"batch at {pos}: attributes {s['attrs']} for {h['attrs']}")
            expect(added[pos + 23:pos + 35] == payload[pos + 23:pos + 35], f"batch at {pos}: header changed")
            expect(added[pos + 43:end] == payload[pos + 43:end], f"batch at {pos}: records changed")
            expect(crc32c(added[pos + 21:end]) == s["crc"], f"batch at {pos}: restamped CRC is wrong")
        else:
            expect(added[pos + 16:end] == payload[pos + 16:end], f"batch at {pos} changed beyond offsets and epoch")
        # record by record: the same content, offsets moved with the batch
        before_view = RecordBatchView(payload, pos, end, 0, INT64_MAX, True)
        after_view = RecordBatchView(added, pos, end, 0, INT64_MAX, True)
        olds, news = list(before_view), list(after_view)  # append_batch walked them: no error here
        expect(len(olds) == len(news) == h["count"], f"batch at {pos}: {len(olds)}/{len(news)} of {h['count']} records")
        for o, n in zip(olds, news):
            expect(n.offset - s["base"] == o.offset - h["base"], f"batch at {pos}: offset deltas changed")
            expect((n.key, n.value, n.headers) == (o.key, o.value, o.headers), f"batch at {pos}: record changed")
            expect(n.timestamp == (s["max_ts"] if append_time else o.timestamp), f"batch at {pos}: timestamp")
        base = s["last"] + 1
        pos = end
    expect(log.log_end_offset == base, f"log end offset {log.log_end_offset}, expected {base}")


# ---------------------------------------------------------------------------------------------
# target: varint -- decode_varint against a pure-Python decoder


def check_varint(data: bytes) -> None:
    """``[pos, max_bytes] payload``: decode at ``pos % (len + 1)`` with ``max_bytes`` in 0..15
    (the codec itself uses 5 and 10; a 64-bit value never needs more than 10). The result must
    match the reference, or be a LogstoreError exactly when the reference finds the varint
    truncated or overlong; a ``max_bytes`` of 0 or over 10 may instead be refused as an
    invalid argument."""
    (p, m), payload = _params(data, 2)
    pos = p % (len(payload) + 1)
    max_bytes = m % 16
    want = reference_varint(payload, pos, max_bytes)
    try:
        got = decode_varint(payload, pos, max_bytes)
    except InvalidArgumentError:
        expect(not 1 <= max_bytes <= 10, f"decode_varint refused max_bytes={max_bytes}")
        return
    except LogstoreError:
        expect(want is None, f"decode_varint rejected a varint the reference reads as {want}")
        return
    expect(got == want, f"decode_varint gave {got}, the reference {want}")


# ---------------------------------------------------------------------------------------------
# target: index -- OffsetIndex / TimeIndex files of arbitrary content


def check_index(data: bytes) -> None:
    """``[flags, base:8, log_size:4, next_delta:4, probe:4] file``: flags bit 0 a time index
    (else an offset index). The file is opened without preallocation; entries, check() and
    lookup() are compared with a pure-Python reading of the same bytes."""
    head, payload = _params(data, 21)
    flags = head[0]
    base = int.from_bytes(head[1:9], "big") & INT64_MAX
    log_size = int.from_bytes(head[9:13], "big")
    next_offset = min(base + int.from_bytes(head[13:17], "big"), INT64_MAX)
    probe = int.from_bytes(head[17:21], "big")
    is_time = bool(flags & 1)
    d = scratch_dir("index")
    path = os.path.join(d, "00000000000000000000" + (".timeindex" if is_time else ".index"))
    with open(path, "wb") as f:
        f.write(payload)
    cls = TimeIndex if is_time else OffsetIndex
    size = 12 if is_time else 8
    try:
        idx = cls(path, base, 1 << 20, False)
    except LogstoreError:
        return  # e.g. a base offset too close to 2**63 for base + 32-bit relative offsets
    try:
        n = len(payload) // size
        expect(idx.entries == n, f"{idx.entries} entries in a {len(payload)}-byte file")
        raw = [payload[i * size:(i + 1) * size] for i in range(n)]
        if is_time:
            want = [(int.from_bytes(e[:8], "big", signed=True), base + int.from_bytes(e[8:], "big")) for e in raw]
        else:
            want = [(base + int.from_bytes(e[:4], "big"), int.from_bytes(e[4:], "big")) for e in raw]
        for i in range(n):
            expect(idx.raw_entry(i) == raw[i], f"raw_entry({i}) differs from the file")
            expect(idx.entry(i) == want[i], f"entry({i}) = {idx.entry(i)}, file says {want[i]}")
        for bad in (-1, n):
            try:
                idx.entry(bad)
            except IndexError:
                pass
            else:
                raise Finding(f"entry({bad}) of {n} did not raise IndexError")
        if is_time:
            # strictly increasing timestamps (the first above -(2**63 - 1), the check's floor),
            # non-decreasing offsets
            ok = all(want[i][0] > (want[i - 1][0] if i else -INT64_MAX) and (i == 0 or want[i][1] >= want[i - 1][1])
                     for i in range(n)) and all(off < next_offset for _ts, off in want)
        else:
            ok = all(want[i][0] > want[i - 1][0] and want[i][1] > want[i - 1][1] for i in range(1, n)) \
                and all(0 < pos < log_size and off < next_offset for off, pos in want)
        try:
            idx.check(next_offset) if is_time else idx.check(log_size, next_offset)
            passed = True
        except LogstoreError:
            passed = False
        expect(passed == ok, f"check() {'passed' if passed else 'failed'}; the reference says {ok}")
        probes = {0, base, probe, base + probe, INT64_MAX} if not is_time else {-1, 0, probe, INT64_MAX, -INT64_MAX}
        probes |= {k + d for k, _ in want for d in (-1, 0, 1)}
        keys = sorted(k for k in probes if -INT64_MAX - 1 <= k <= INT64_MAX)
        for key in keys:
            got = idx.lookup(key)
            expect(isinstance(got, tuple) and len(got) == 2, "lookup did not return a pair")
            if ok:  # sorted entries: lookup is a floor search
                sort_keys = [e[0] for e in want]
                i = bisect_right(sort_keys, key)
                ref = want[i - 1] if i else ((-1, base) if is_time else (base, 0))
                expect(got == ref, f"lookup({key}) = {got}, reference {ref}")
        if ok and not is_time:
            cut = base + probe % (max(n, 1) + 1)
            idx.truncate_to(cut)
            expect(idx.entries == sum(1 for off, _ in want if off < cut), "truncate_to kept the wrong entries")
    finally:
        idx.close()


# ---------------------------------------------------------------------------------------------
# target: checkpoint -- Checkpoint.decode


def check_checkpoint(data: bytes) -> None:
    """``[flags] body``: flags bit 0 appends a correct ``xxh64`` line to the body (so mutations
    reach the field parser). decode() returns a Checkpoint or None and never raises; a decoded
    checkpoint has non-negative offsets and encodes back to something that decodes to itself."""
    (flags,), body = _params(data, 1)
    if flags & 1:
        body = body + f"xxh64 {xxhash.xxh64_hexdigest(body)}\n".encode()
    cp = Checkpoint.decode(body)
    if cp is None:
        return
    expect(isinstance(cp, Checkpoint), f"decode returned {type(cp).__name__}")
    for name in ("recovery_point", "log_start_offset", "high_watermark"):
        v = getattr(cp, name)
        expect(type(v) is int and 0 <= v, f"{name} = {v!r}")
    for e in cp.epochs:
        expect(isinstance(e, tuple) and len(e) == 2 and all(type(x) is int for x in e), f"epoch entry {e!r}")
    again = Checkpoint.decode(cp.encode())
    expect(again == cp, f"{cp} does not survive encode/decode: {again}")


# ---------------------------------------------------------------------------------------------
# target: segment -- Segment.recover() (and load()) on an arbitrary .log file


def _reference_recover(buf: bytes, base_offset: int) -> tuple[int, int]:
    """Length of the longest prefix of whole, valid batches with dense offsets from
    ``base_offset`` whose records decode (what recovery must keep: a batch kept there is served
    to readers, so one they cannot decode is damage too), and the next offset after it."""
    pos, expect_offset = 0, base_offset
    while pos < len(buf):
        h = batch_header(buf, pos)
        if h is None or h["base"] != expect_offset or h["last"] - base_offset > 0x7FFFFFFF:
            break
        if not crc_ok(buf, pos, h) or h["attrs"] & 7 or reference_records(buf, pos, h) is None:
            break  # (a compressed batch makes recover() raise UnsupportedCodecError instead)
        pos += h["size"]
        expect_offset = h["last"] + 1
    return pos, expect_offset


def check_segment(data: bytes) -> None:
    """``[flags, interval:2, base:2, index_len:2, timeindex_len:2] payload``: flags bit 0 the
    segment is active, bit 1 fix CRCs first, bit 2 the payload starts with .index and
    .timeindex file contents (index_len, timeindex_len bytes) and load() is tried on them
    first. Then recover() must keep exactly the longest valid prefix of the .log bytes, and
    its rebuilt indexes must pass load() after a reopen."""
    head, payload = _params(data, 9)
    flags = head[0]
    interval = int.from_bytes(head[1:3], "big")
    base = int.from_bytes(head[3:5], "big")
    active = bool(flags & 1)
    index_bytes = timeindex_bytes = b""
    if flags & 4:
        li, lt = int.from_bytes(head[5:7], "big"), int.from_bytes(head[7:9], "big")
        index_bytes, timeindex_bytes, payload = payload[:li], payload[li:li + lt], payload[li + lt:]
    if flags & 2:
        payload = fix_crcs(payload)
    d = scratch_dir("segment")
    stem = os.path.join(d, "%020d" % base)
    for suffix, content in ((".log", payload), (".index", index_bytes), (".timeindex", timeindex_bytes)):
        if content or suffix == ".log":
            with open(stem + suffix, "wb") as f:
                f.write(content)
    max_index = 1 << 16
    seg = Segment(d, base, interval, max_index, active)
    try:
        if flags & 4:
            try:
                seg.load()
            except LogstoreError:
                pass
        try:
            truncated, epochs = seg.recover(True, base)
        except UnsupportedCodecError:
            return  # a compressed batch is reported, not cut away
        keep, next_offset = _reference_recover(payload, base)
        expect(seg.size == keep and truncated == len(payload) - keep,
               f"recover kept {seg.size} bytes (cut {truncated}); the longest valid prefix is {keep}")
        with open(stem + ".log", "rb") as f:
            expect(f.read() == payload[:keep], "the recovered file is not a prefix of the input")
        expect(seg.next_offset == next_offset, f"next_offset {seg.next_offset}, expected {next_offset}")
        expect(all(isinstance(e, tuple) for e in epochs), "epochs is not a list of pairs")
        seg.offset_index.check(seg.size, seg.next_offset)
        seg.time_index.check(seg.next_offset)
        if keep:
            # every kept batch is served, record for record
            view = seg.read(base, 1 << 30)
            expect(view is not None and view.size_bytes == keep, "a read does not return the kept batches")
            assert view is not None
            try:
                _check_view(view, view.data, base, INT64_MAX)
            except LogstoreError as e:
                raise Finding(f"recovered batches cannot be read: {e}") from None
            expect(_records(view) == reference_view(payload[:keep], True, base, INT64_MAX)[1],
                   "recovered records differ from the reference decoding")
        max_ts, nxt = seg.max_timestamp, seg.next_offset
        if active:
            seg.seal()
        seg.close()
        # what recovery rebuilt is what a clean reopen trusts
        seg = Segment(d, base, interval, max_index, active)
        try:
            got = seg.load()
        except LogstoreError as e:
            raise Finding(f"load() rejects the indexes recover() built: {e}") from None
        expect(got == nxt and seg.max_timestamp == max_ts,
               f"load() restored next_offset {got}/max_timestamp {seg.max_timestamp}, recover had {nxt}/{max_ts}")
    finally:
        seg.close()


# ---------------------------------------------------------------------------------------------
# target: open -- PartitionLog.open on a directory of arbitrary segment files and checkpoint

OPEN_KINDS = (".log", ".index", ".timeindex")


def open_files(data: bytes) -> tuple[int, dict[str, bytes]]:
    """Parse the ``open`` layout: ``[flags]`` then entries ``[kind, base:8, length:2, bytes]``
    (kind % 4: 0 .log, 1 .index, 2 .timeindex, 3 the checkpoint file; base is the unsigned
    64-bit number in the file name, which may exceed 2**63 - 1)."""
    (flags,), rest = _params(data, 1)
    files: dict[str, bytes] = {}
    pos = 0
    while pos + 11 <= len(rest):
        kind, base, length = rest[pos], int.from_bytes(rest[pos + 1:pos + 9], "big"), \
            int.from_bytes(rest[pos + 9:pos + 11], "big")
        content = rest[pos + 11:pos + 11 + length]
        pos += 11 + length
        if kind % 4 == 3:
            files["partition.checkpoint"] = content
        else:
            files["%020d" % base + OPEN_KINDS[kind % 4]] = content
    return flags, files


def _all_records(log: PartitionLog) -> list[Ref]:
    out: list[Ref] = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        view = log.read(offset, 1 << 30)
        if view.size_bytes == 0:
            break
        recs = _records(view)
        expect(all(log.log_start_offset <= r[0] < log.log_end_offset for r in recs), "read outside the log")
        expect(not out or not recs or recs[0][0] > out[-1][0], "reads went backwards")
        out += recs
        offset = view.next_offset
    return out


def _readable(log: PartitionLog, full: bool) -> list[Ref] | None:
    """Every record of the log (full recovery), or None (auto recovery).

    Recovery "auto" trusts the segments below the checkpointed recovery point after a sanity
    check of their last batches, without reading them (as Kafka does). Damage there that a CRC
    catches surfaces as a CorruptRecordError on read, never as data (and a compressed batch as
    an UnsupportedCodecError, which full recovery raises at open instead); but a batch rewritten with
    a valid CRC and, say, a larger lastOffsetDelta is believed, and readers then skip what it
    claims to cover. So with "auto" the reads are only required not to fail in any other way;
    with "full" every batch was validated, and every kept record must read back."""
    try:
        records = _all_records(log)
    except (CorruptRecordError, UnsupportedCodecError) as e:
        expect(not full, f"a log opened with full recovery cannot read its own records: {e}")
        return None
    except Finding:
        if full:
            raise
        return None
    return records if full else None


def check_open(data: bytes) -> None:
    """``[flags] entries`` (see ``open_files``): flags bit 0 a clean-shutdown marker, bit 1
    recovery="full", bit 2 fix the CRCs of the .log files. Opening raises a LogstoreError or
    gives a consistent log: its records read back (see ``_readable``), an append lands at the log
    end, and a close + reopen is clean and sees the same records."""
    flags, files = open_files(data)
    full = bool(flags & 2)
    d = os.path.join(scratch_dir("open"), "log")
    os.makedirs(d)
    for name, content in files.items():
        if flags & 4 and name.endswith(".log"):
            content = fix_crcs(content)
        with open(os.path.join(d, name), "wb") as f:
            f.write(content)
    if flags & 1:
        open(os.path.join(d, ".clean_shutdown"), "wb").close()
    config = {"flush": "never", "index_interval_bytes": 256, "segment_bytes": 4096,
              "recovery": "full" if full else "auto"}
    try:
        log = PartitionLog.open(d, **config)
    except LogstoreError:
        return
    try:
        start, end = log.log_start_offset, log.log_end_offset
        expect(0 <= start <= log.high_watermark <= end, f"start {start}, hw {log.high_watermark}, end {end}")
        records = _readable(log, full)
        try:
            first = log.append_many([b"fuzz"], keys=[b"k"], timestamps=[1])
        except LogstoreError:
            first = None  # e.g. the offset space is exhausted: refused, not corrupted
        expect(first is None or first == end, f"an append landed at {first}, the log end was {end}")
        end_after = log.log_end_offset
        expect(end_after == (end if first is None else end + 1), f"log end {end_after} after one append at {end}")
        if first is not None and records is not None:
            records.append((end, 1, b"k", b"fuzz", []))
    finally:
        log.close()
    log = PartitionLog.open(d, **config)
    try:
        expect(log.recovery.clean_shutdown and not log.recovery.cut, f"a clean close was recovered: {log.recovery}")
        expect(log.log_end_offset == end_after, f"reopened at {log.log_end_offset}, closed at {end_after}")
        if records is not None:
            expect(_readable(log, full) == records, "a reopen changed the records")
    finally:
        log.close()


CHECKS: dict[str, Callable[[bytes], None]] = {
    "batch": check_batch,
    "append_batch": check_append_batch,
    "varint": check_varint,
    "index": check_index,
    "checkpoint": check_checkpoint,
    "segment": check_segment,
    "open": check_open,
}
