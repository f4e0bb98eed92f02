# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Kafka record batch v2 (magic 2), field for field.

    RecordBatch (all integers big-endian):
      0  baseOffset           int64   offset of the first record
      8  batchLength          int32   bytes after this field (whole batch = batchLength + 12)
      12 partitionLeaderEpoch int32
      16 magic                int8    = 2
      17 crc                  uint32  CRC32C of bytes [21, end)
      21 attributes           int16   bits 0-2 codec (0 none), 3 timestamp type (1 log-append),
                                      4 transactional, 5 control, 6 delete horizon
      23 lastOffsetDelta      int32
      27 baseTimestamp        int64
      35 maxTimestamp         int64
      43 producerId           int64
      51 producerEpoch        int16
      53 baseSequence         int32
      57 recordCount          int32
      61 records...

    Record (zig-zag varints):
      length varint | attributes int8 | timestampDelta varlong | offsetDelta varint |
      keyLength varint (-1 null) | key | valueLength varint (-1 null) | value |
      headerCount varint | [headerKeyLength varint | headerKey utf8 |
                            headerValueLength varint (-1 null) | headerValue] ...

The CRC does not cover base offset, length, leader epoch or magic, so the log can assign offsets and
stamp its epoch into a producer's batch without recomputing it. docs/format.md is the long form.
"""

cimport cython
cimport numpy as cnp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.stdint cimport int16_t, int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

from logstore._native.includes cimport *

import numpy as np

from logstore.errors import CorruptRecordError, InvalidArgumentError, InvalidRecordError, UnsupportedCodecError

cnp.import_array()
ls_crc32c_init()

HEADER_SIZE = LS_BATCH_HEADER_SIZE
LOG_OVERHEAD = LS_LOG_OVERHEAD
MAGIC = LS_MAGIC_V2
TIMESTAMP_TYPE_LOG_APPEND = LS_TIMESTAMP_TYPE_MASK
HARDWARE_CRC32C = bool(ls_crc32c_hw)

# check_batch results
DEF OK = 0
DEF E_TRUNCATED = 1
DEF E_LENGTH = 2
DEF E_MAGIC = 3
DEF E_CRC = 4
DEF E_CODEC = 5
DEF E_RECORDS = 6
# bytes per record of a parsed view's columns: offsets, timestamps, key/value/header positions
# (int64 each), key and value lengths (int32 each)
DEF COLUMN_BYTES = 48

cdef dict _MESSAGES = {
    E_TRUNCATED: "truncated record batch",
    E_LENGTH: "record batch length out of range",
    E_MAGIC: "record batch magic is not 2",
    E_CRC: "record batch CRC32C mismatch",
    E_RECORDS: "malformed records inside a record batch",
}


cdef raise_batch_error(int code, int64_t position):
    if code == E_CODEC:
        raise UnsupportedCodecError(
            f"record batch at position {position} is compressed; this build reads only uncompressed (codec 0) batches")
    raise CorruptRecordError(f"{_MESSAGES.get(code, 'invalid record batch')} at position {position}")


# ---------------------------------------------------------------------------------------------
# small public helpers (tests, tools)

def crc32c(data, uint32_t crc=0):
    """CRC32C (Castagnoli) of a bytes-like object, continuing from ``crc``."""
    cdef const unsigned char[::1] mv = memoryview(data).cast("B")
    if mv.shape[0] == 0:
        return crc
    return ls_crc32c(crc, &mv[0], mv.shape[0])


def xxh64(data, uint64_t seed=0):
    """XXH64 of a bytes-like object (the default partitioner's and the compactor's key hash)."""
    cdef const unsigned char[::1] mv = memoryview(data).cast("B")
    cdef unsigned char empty = 0
    return ls_xxh64(&mv[0] if mv.shape[0] else &empty, mv.shape[0], seed)


def murmur2(data):
    """Kafka's murmur2 of a bytes-like object, as the Java client computes it (a signed int)."""
    cdef const unsigned char[::1] mv = memoryview(data).cast("B")
    cdef unsigned char empty = 0
    return <int32_t>ls_murmur2(&mv[0] if mv.shape[0] else &empty, mv.shape[0])


def crc32c_portable(data, uint32_t crc=0):
    """CRC32C computed by the portable table path (to test the hardware path against)."""
    cdef const unsigned char[::1] mv = memoryview(data).cast("B")
    if mv.shape[0] == 0:
        return crc
    return ls_crc32c_sw_only(crc, &mv[0], mv.shape[0])


def encode_varint(int64_t value):
    """Kafka's zig-zag varint encoding of a signed 64-bit integer."""
    cdef unsigned char buf[10]
    cdef unsigned char *end = ls_put_varint(buf, value)
    return PyBytes_FromStringAndSize(<char *>buf, end - buf)


def decode_varint(data, Py_ssize_t pos=0, int max_bytes=10):
    """Decode a zig-zag varint at ``pos``; returns ``(value, next_pos)``."""
    cdef const unsigned char[::1] mv = memoryview(data).cast("B")
    cdef int64_t out = 0
    cdef const unsigned char *p
    if max_bytes < 1 or max_bytes > 10:
        raise InvalidArgumentError(f"max_bytes must be 1..10 (a 64-bit varint has at most 10 bytes), not {max_bytes}")
    if pos < 0 or pos >= mv.shape[0]:
        raise CorruptRecordError("varint out of bounds")
    p = ls_get_varint(&mv[pos], &mv[0] + mv.shape[0], max_bytes, &out)
    if p == NULL:
        raise CorruptRecordError("truncated or overlong varint")
    return out, p - &mv[0]


cdef int64_t now_ms() noexcept nogil:
    return ls_now_ms()


# ---------------------------------------------------------------------------------------------
# inputs: Python objects -> RecordSpec array (validated before anything is written)

cdef inline int _bytes_like(object obj, list keepalive, const unsigned char **ptr, Py_ssize_t *n,
                            str what) except -1:
    if obj is None:
        ptr[0] = NULL
        n[0] = -1
        return 0
    if type(obj) is bytes:
        ptr[0] = <const unsigned char *>PyBytes_AS_STRING(obj)
        n[0] = PyBytes_GET_SIZE(obj)
        return 0
    if isinstance(obj, (bytearray, memoryview)) or hasattr(obj, "__buffer__") or _has_buffer(obj):
        b = bytes(obj)  # a private copy: the caller may mutate theirs while we encode
        keepalive.append(b)
        ptr[0] = <const unsigned char *>PyBytes_AS_STRING(b)
        n[0] = PyBytes_GET_SIZE(b)
        return 0
    raise InvalidRecordError(f"{what} must be bytes-like or None, not {type(obj).__name__}")


cdef bint _has_buffer(object obj):
    try:
        memoryview(obj)
    except TypeError:
        return False
    return True


cdef bytes _encode_headers(object headers):
    """Encode a header list to its wire form (count + entries)."""
    cdef list parts = []
    cdef Py_ssize_t count = 0
    cdef unsigned char buf[10]
    cdef unsigned char *e
    if isinstance(headers, (str, bytes, dict)):
        if isinstance(headers, dict):
            headers = list(headers.items())
        else:
            raise InvalidRecordError("headers must be a sequence of (key, value) pairs")
    try:
        items = list(headers)
    except TypeError:
        raise InvalidRecordError(f"headers must be a sequence of (key, value) pairs, not {type(headers).__name__}")
    for item in items:
        try:
            k, v = item
        except (TypeError, ValueError):
            raise InvalidRecordError(f"a header must be a (key, value) pair, not {item!r}")
        if isinstance(k, str):
            kb = (<str>k).encode("utf-8")
        elif isinstance(k, bytes):
            try:
                (<bytes>k).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRecordError("a header key must be valid UTF-8")
            kb = k
        else:
            raise InvalidRecordError(f"a header key must be str, not {type(k).__name__}")
        e = ls_put_varint(buf, len(kb))
        parts.append(PyBytes_FromStringAndSize(<char *>buf, e - buf))
        parts.append(kb)
        if v is None:
            e = ls_put_varint(buf, -1)
            parts.append(PyBytes_FromStringAndSize(<char *>buf, e - buf))
        else:
            if not isinstance(v, bytes):
                if isinstance(v, str) or not _has_buffer(v):
                    raise InvalidRecordError(f"a header value must be bytes-like or None, not {type(v).__name__}")
                v = bytes(v)
            e = ls_put_varint(buf, len(v))
            parts.append(PyBytes_FromStringAndSize(<char *>buf, e - buf))
            parts.append(v)
        count += 1
    e = ls_put_varint(buf, count)
    return PyBytes_FromStringAndSize(<char *>buf, e - buf) + b"".join(parts)


cdef inline int64_t _timestamp(object ts) except? -2:
    cdef int64_t v
    if isinstance(ts, bool) or not hasattr(ts, "__index__"):
        raise InvalidRecordError(f"a timestamp must be an int (ms since the epoch), not {type(ts).__name__}")
    try:
        v = ts
    except OverflowError:
        raise InvalidRecordError(f"timestamp {ts} is out of range")
    if v < 0:
        raise InvalidRecordError(f"timestamp {v} is negative")
    return v


cdef class RecordInputs:
    """Scratch array of validated records, reused across appends (one per log)."""

    def __cinit__(self):
        self.specs = NULL
        self.count = 0
        self.capacity = 0
        self.keepalive = []

    def __dealloc__(self):
        PyMem_Free(self.specs)

    cdef int _reserve(self, Py_ssize_t n) except -1:
        cdef RecordSpec *p
        if n > self.capacity:
            p = <RecordSpec *>PyMem_Realloc(self.specs, n * sizeof(RecordSpec))
            if p == NULL:
                raise MemoryError()
            self.specs = p
            self.capacity = n
        return 0

    cdef void clear(self):
        self.count = 0
        if len(self.keepalive):
            self.keepalive = []

    cdef int load_one(self, value, key, headers, timestamp, int64_t now) except -1:
        cdef RecordSpec *s
        self.clear()
        self._reserve(1)
        s = &self.specs[0]
        _bytes_like(value, self.keepalive, &s.value, &s.value_len, "value")
        _bytes_like(key, self.keepalive, &s.key, &s.key_len, "key")
        if headers is None:
            s.headers = NULL
            s.headers_len = 0
        else:
            hb = _encode_headers(headers)
            self.keepalive.append(hb)
            s.headers = <const unsigned char *>PyBytes_AS_STRING(hb)
            s.headers_len = PyBytes_GET_SIZE(hb)
        s.timestamp = now if timestamp is None else _timestamp(timestamp)
        self.count = 1
        return 0

    cdef int load(self, values, keys, headers, timestamps, int64_t now) except -1:
        cdef Py_ssize_t n, i
        cdef RecordSpec *s
        cdef int64_t ts_all = now
        cdef const int64_t[::1] ts_arr
        cdef bint ts_list = False, ts_array = False
        self.clear()
        if isinstance(values, (bytes, bytearray, str, memoryview)) or values is None:
            raise InvalidRecordError("values must be a sequence of bytes-like objects")
        if not isinstance(values, (list, tuple)):
            try:
                values = list(values)
            except TypeError:
                raise InvalidRecordError(f"values must be a sequence, not {type(values).__name__}")
        n = len(values)
        if keys is not None:
            if isinstance(keys, (bytes, bytearray, str, memoryview)):
                raise InvalidRecordError("keys must be a sequence (one key per value) or None")
            if not isinstance(keys, (list, tuple)):
                keys = list(keys)
            if len(keys) != n:
                raise InvalidRecordError(f"{len(keys)} keys for {n} values")
        if headers is not None:
            if not isinstance(headers, (list, tuple)):
                headers = list(headers)
            if len(headers) != n:
                raise InvalidRecordError(f"{len(headers)} header lists for {n} values")
        if timestamps is not None:
            if isinstance(timestamps, int):
                ts_all = _timestamp(timestamps)
            elif isinstance(timestamps, np.ndarray):
                if timestamps.dtype.kind not in "iu":
                    raise InvalidRecordError("timestamps must be an integer array")
                if len(timestamps) != n:
                    raise InvalidRecordError(f"{len(timestamps)} timestamps for {n} values")
                arr = np.ascontiguousarray(timestamps, dtype=np.int64)
                if n and arr.min() < 0:
                    raise InvalidRecordError("timestamps must not be negative")
                ts_arr = arr
                ts_array = True
            else:
                if not isinstance(timestamps, (list, tuple)):
                    timestamps = list(timestamps)
                if len(timestamps) != n:
                    raise InvalidRecordError(f"{len(timestamps)} timestamps for {n} values")
                ts_list = True
        self._reserve(n if n > 0 else 1)
        for i in range(n):
            s = &self.specs[i]
            if type(values) is list:
                v = <object>PyList_GET_ITEM(values, i)
            else:
                v = values[i]
            if type(v) is bytes:
                s.value = <const unsigned char *>PyBytes_AS_STRING(v)
                s.value_len = PyBytes_GET_SIZE(v)
            else:
                _bytes_like(v, self.keepalive, &s.value, &s.value_len, "value")
            if keys is None:
                s.key = NULL
                s.key_len = -1
            else:
                k = keys[i]
                if type(k) is bytes:
                    s.key = <const unsigned char *>PyBytes_AS_STRING(k)
                    s.key_len = PyBytes_GET_SIZE(k)
                else:
                    _bytes_like(k, self.keepalive, &s.key, &s.key_len, "key")
            s.headers = NULL
            s.headers_len = 0
            if headers is not None:
                h = headers[i]
                if h is not None:
                    hb = _encode_headers(h)
                    self.keepalive.append(hb)
                    s.headers = <const unsigned char *>PyBytes_AS_STRING(hb)
                    s.headers_len = PyBytes_GET_SIZE(hb)
            if ts_array:
                s.timestamp = ts_arr[i]
            elif ts_list:
                s.timestamp = _timestamp(timestamps[i])
            else:
                s.timestamp = ts_all
        self.count = n
        return 0

    cdef int load_arrays(self, values, value_lengths, keys, key_lengths, timestamps,
                         int64_t now) except -1:
        cdef const unsigned char[::1] vbuf
        cdef const unsigned char[::1] kbuf
        cdef const int64_t[::1] vl, kl, ts
        cdef Py_ssize_t n, i, vpos = 0, kpos = 0
        cdef RecordSpec *s
        cdef bint has_keys = keys is not None, has_ts = timestamps is not None
        self.clear()
        try:
            vmv = memoryview(values).cast("B")
        except TypeError:
            raise InvalidRecordError("values must be a bytes-like buffer")
        if not vmv.contiguous:
            vmv = memoryview(bytes(vmv))
        # The lengths are copied into our own int64 arrays; the payload buffers are pinned for the call.
        vl = np.ascontiguousarray(value_lengths, dtype=np.int64)
        n = vl.shape[0]
        self.keepalive.append(vmv)
        vbuf = vmv
        if has_keys:
            if key_lengths is None:
                raise InvalidRecordError("keys given without key_lengths")
            kmv = memoryview(keys).cast("B")
            if not kmv.contiguous:
                kmv = memoryview(bytes(kmv))
            self.keepalive.append(kmv)
            kbuf = kmv
            kl = np.ascontiguousarray(key_lengths, dtype=np.int64)
            if kl.shape[0] != n:
                raise InvalidRecordError(f"{kl.shape[0]} key lengths for {n} values")
        if has_ts:
            tsa = np.ascontiguousarray(timestamps, dtype=np.int64)
            if tsa.shape[0] != n:
                raise InvalidRecordError(f"{tsa.shape[0]} timestamps for {n} values")
            if n and tsa.min() < 0:
                raise InvalidRecordError("timestamps must not be negative")
            ts = tsa
        self._reserve(n if n > 0 else 1)
        for i in range(n):
            s = &self.specs[i]
            if vl[i] < -1:
                raise InvalidRecordError(f"value length {vl[i]} at {i} is invalid")
            if vl[i] < 0:
                s.value = NULL
                s.value_len = -1
            else:
                if vpos + vl[i] > vbuf.shape[0]:
                    raise InvalidRecordError("value_lengths add up to more than the values buffer")
                s.value = &vbuf[0] + vpos
                s.value_len = vl[i]
                vpos += vl[i]
            if has_keys and kl[i] >= 0:
                if kpos + kl[i] > kbuf.shape[0]:
                    raise InvalidRecordError("key_lengths add up to more than the keys buffer")
                s.key = &kbuf[0] + kpos
                s.key_len = kl[i]
                kpos += kl[i]
            elif has_keys and kl[i] < -1:
                raise InvalidRecordError(f"key length {kl[i]} at {i} is invalid")
            else:
                s.key = NULL
                s.key_len = -1
            s.headers = NULL
            s.headers_len = 0
            s.timestamp = ts[i] if has_ts else now
        self.count = n
        return 0


# ---------------------------------------------------------------------------------------------
# encoding

cdef Py_ssize_t record_body_size(RecordSpec *s, int64_t ts_delta, Py_ssize_t offset_delta) noexcept nogil:
    """Bytes of a record after its length varint."""
    cdef Py_ssize_t b = 1 + ls_varint_size(ts_delta) + ls_varint_size(offset_delta)
    b += ls_varint_size(s.key_len) + (s.key_len if s.key_len > 0 else 0)
    b += ls_varint_size(s.value_len) + (s.value_len if s.value_len > 0 else 0)
    b += s.headers_len if s.headers != NULL else 1
    return b


cdef Py_ssize_t plan_batch(RecordSpec *specs, Py_ssize_t count, Py_ssize_t max_bytes,
                           Py_ssize_t *out_count) noexcept nogil:
    """Size the longest prefix of ``specs`` that fits one batch of ``max_bytes`` (at least one
    record, even if it alone is larger: the caller checks). Fills each spec's body_size."""
    cdef Py_ssize_t total = LS_BATCH_HEADER_SIZE, i, body, rec
    cdef int64_t base_ts = specs[0].timestamp
    for i in range(count):
        body = record_body_size(&specs[i], specs[i].timestamp - base_ts, i)
        rec = ls_varint_size(body) + body
        if i > 0 and total + rec > max_bytes:
            out_count[0] = i
            return total
        specs[i].body_size = body
        total += rec
    out_count[0] = count
    return total


cdef unsigned char *write_record(unsigned char *p, RecordSpec *s, int64_t ts_delta,
                                 Py_ssize_t offset_delta) noexcept nogil:
    """Encode one record (body_size already planned) at ``p``; returns the byte after it."""
    p = ls_put_varint(p, s.body_size)
    p[0] = 0
    p += 1
    p = ls_put_varint(p, ts_delta)
    p = ls_put_varint(p, offset_delta)
    p = ls_put_varint(p, s.key_len)
    if s.key_len > 0:
        memcpy(p, s.key, s.key_len)
        p += s.key_len
    p = ls_put_varint(p, s.value_len)
    if s.value_len > 0:
        memcpy(p, s.value, s.value_len)
        p += s.value_len
    if s.headers != NULL:
        memcpy(p, s.headers, s.headers_len)
        p += s.headers_len
    else:
        p[0] = 0
        p += 1
    return p


cdef void write_batch_header(unsigned char *out, Py_ssize_t count, Py_ssize_t size, int64_t base_offset,
                             int32_t leader_epoch, int64_t base_timestamp, int64_t max_timestamp,
                             int64_t producer_id, int16_t producer_epoch, int32_t base_sequence,
                             int16_t attributes) noexcept nogil:
    """Fill the 61-byte header of a batch whose records are already at ``out + 61`` and seal
    it with its CRC32C."""
    ls_store_i64(out + LS_BASE_OFFSET, base_offset)
    ls_store_i32(out + LS_BATCH_LENGTH, <int32_t>(size - LS_LOG_OVERHEAD))
    ls_store_i32(out + LS_LEADER_EPOCH, leader_epoch)
    out[LS_MAGIC] = LS_MAGIC_V2
    ls_store_i16(out + LS_ATTRIBUTES, attributes)
    ls_store_i32(out + LS_LAST_OFFSET_DELTA, <int32_t>(count - 1))
    ls_store_i64(out + LS_BASE_TIMESTAMP, base_timestamp)
    ls_store_i64(out + LS_MAX_TIMESTAMP, max_timestamp)
    ls_store_i64(out + LS_PRODUCER_ID, producer_id)
    ls_store_i16(out + LS_PRODUCER_EPOCH, producer_epoch)
    ls_store_i32(out + LS_BASE_SEQUENCE, base_sequence)
    ls_store_i32(out + LS_RECORD_COUNT, <int32_t>count)
    ls_store_u32(out + LS_CRC, ls_crc32c(0, out + LS_CRC_START, size - LS_CRC_START))


cdef void write_batch(unsigned char *out, RecordSpec *specs, Py_ssize_t count, Py_ssize_t size,
                      int64_t base_offset, int32_t leader_epoch, int64_t producer_id,
                      int16_t producer_epoch, int32_t base_sequence, int16_t attributes) noexcept nogil:
    """Encode ``count`` planned records as one batch of ``size`` bytes at ``out``."""
    cdef unsigned char *p = out + LS_BATCH_HEADER_SIZE
    cdef int64_t base_ts = specs[0].timestamp, max_ts = specs[0].timestamp
    cdef Py_ssize_t i
    for i in range(count):
        if specs[i].timestamp > max_ts:
            max_ts = specs[i].timestamp
        p = write_record(p, &specs[i], specs[i].timestamp - base_ts, i)
    write_batch_header(out, count, size, base_offset, leader_epoch, base_ts, max_ts, producer_id,
                       producer_epoch, base_sequence, attributes)


# ---------------------------------------------------------------------------------------------
# decoding

cdef int read_batch_header(const unsigned char *p, Py_ssize_t avail, BatchInfo *info) noexcept nogil:
    """Parse and sanity-check a batch header; the batch body is not looked at."""
    cdef int32_t length
    if avail < LS_BATCH_HEADER_SIZE:
        return E_TRUNCATED
    length = ls_load_i32(p + LS_BATCH_LENGTH)
    if length < LS_BATCH_HEADER_SIZE - LS_LOG_OVERHEAD or length > 0x7fffffff - LS_LOG_OVERHEAD:
        return E_LENGTH
    if p[LS_MAGIC] != LS_MAGIC_V2:
        return E_MAGIC
    info.base_offset = ls_load_i64(p + LS_BASE_OFFSET)
    info.size = length + LS_LOG_OVERHEAD
    info.leader_epoch = ls_load_i32(p + LS_LEADER_EPOCH)
    info.attributes = ls_load_i16(p + LS_ATTRIBUTES)
    length = ls_load_i32(p + LS_LAST_OFFSET_DELTA)
    if length < 0 or info.base_offset > <int64_t>0x7fffffffffffffff - 1 - length:
        return E_LENGTH  # the offset after the batch (last + 1) must fit int64 too
    info.last_offset = info.base_offset + length
    info.record_count = ls_load_i32(p + LS_RECORD_COUNT)
    info.base_timestamp = ls_load_i64(p + LS_BASE_TIMESTAMP)
    info.max_timestamp = ls_load_i64(p + LS_MAX_TIMESTAMP)
    if info.base_offset < 0 or info.last_offset < info.base_offset or info.record_count < 0:
        return E_LENGTH
    if avail < info.size:
        return E_TRUNCATED
    return OK


cdef int check_batch(const unsigned char *p, Py_ssize_t avail, BatchInfo *info, bint verify_crc,
                     bint deep) noexcept nogil:
    """Validate one batch: header, CRC32C, codec and (``deep``) every record's framing."""
    cdef int rc = read_batch_header(p, avail, info)
    if rc != OK:
        return rc
    # every record takes at least 7 bytes (length, attributes, timestamp delta, offset delta, key
    # length, value length, header count): a larger count is a lie that readers would allocate by
    if info.record_count > (info.size - LS_BATCH_HEADER_SIZE) // 7:
        return E_RECORDS
    if verify_crc and ls_load_u32(p + LS_CRC) != ls_crc32c(0, p + LS_CRC_START, info.size - LS_CRC_START):
        return E_CRC
    if info.attributes & LS_COMPRESSION_MASK:
        return E_CODEC
    if deep and walk_records(p, 0, info, -1, 0x7fffffffffffffff, NULL, NULL) != info.record_count:
        return E_RECORDS
    return OK


cdef inline const unsigned char *_skip_bytes(const unsigned char *p, const unsigned char *end,
                                             int64_t *length) noexcept nogil:
    p = ls_get_varint(p, end, 5, length)
    if p == NULL or length[0] < -1 or (length[0] > 0 and length[0] > end - p):
        return NULL
    return p + (length[0] if length[0] > 0 else 0)


cdef Py_ssize_t walk_records(const unsigned char *buf, Py_ssize_t pos, BatchInfo *info,
                             int64_t min_offset, int64_t max_offset, RecordColumns *cols,
                             Py_ssize_t *at) noexcept nogil:
    """Walk the records of the batch at ``buf[pos:]``, storing those with min_offset <= offset <
    max_offset into ``cols`` at index ``*at`` onward, advancing it (cols may be NULL: validate only). Returns the number
    of records walked (stored or not), or -1 if the framing is malformed."""
    cdef const unsigned char *p = buf + pos + LS_BATCH_HEADER_SIZE
    cdef const unsigned char *end = buf + pos + info.size
    cdef const unsigned char *rec_end
    cdef const unsigned char *q
    cdef int64_t length, ts_delta, off_delta, klen, vlen, hcount, hlen, offset, prev_delta = -1
    cdef Py_ssize_t i, j, k, kpos, vpos, hpos
    cdef bint log_append_time = (info.attributes & LS_TIMESTAMP_TYPE_MASK) != 0
    for i in range(info.record_count):
        p = ls_get_varint(p, end, 5, &length)
        if p == NULL or length < 1 or length > end - p:
            return -1
        rec_end = p + length
        p += 1  # record attributes (unused in v2)
        p = ls_get_varint(p, rec_end, 10, &ts_delta)
        if p == NULL:
            return -1
        p = ls_get_varint(p, rec_end, 5, &off_delta)
        if p == NULL or off_delta <= prev_delta or off_delta > info.last_offset - info.base_offset:
            return -1
        prev_delta = off_delta
        # key and value start where their bytes end minus their length: their length varints
        # may be longer than the minimal encoding (Kafka's readers accept that too)
        p = _skip_bytes(p, rec_end, &klen)
        if p == NULL:
            return -1
        kpos = (p - buf) - (klen if klen > 0 else 0)
        p = _skip_bytes(p, rec_end, &vlen)
        if p == NULL:
            return -1
        vpos = (p - buf) - (vlen if vlen > 0 else 0)
        hpos = p - buf
        p = ls_get_varint(p, rec_end, 5, &hcount)
        if p == NULL or hcount < 0:
            return -1
        for j in range(hcount):
            q = ls_get_varint(p, rec_end, 5, &hlen)
            if q == NULL or hlen < 0 or hlen > rec_end - q:
                return -1
            p = _skip_bytes(q + hlen, rec_end, &hlen)
            if p == NULL:
                return -1
        if p != rec_end:
            return -1
        offset = info.base_offset + off_delta
        if cols != NULL and offset >= min_offset and offset < max_offset:
            k = at[0]
            cols.offsets[k] = offset
            cols.timestamps[k] = info.max_timestamp if log_append_time else <int64_t>(<uint64_t>info.base_timestamp + <uint64_t>ts_delta)  # wraps as a Java long
            cols.key_positions[k] = kpos
            cols.key_lengths[k] = <int32_t>klen
            cols.value_positions[k] = vpos
            cols.value_lengths[k] = <int32_t>vlen
            cols.header_positions[k] = hpos
            at[0] = k + 1
    if p != end:
        return -1
    return info.record_count


# ---------------------------------------------------------------------------------------------
# the read-side view

@cython.final
cdef class RecordBatchView:
    """Whole record batches read from a log, viewed without copying.

    Iterate it for :class:`Record` objects, or use the numpy columns (``offsets``, ``timestamps``,
    ``key_positions``/``key_lengths``, ``value_positions``/``value_lengths``), whose positions index
    ``buffer``. Only records with ``min_offset <= offset < max_offset`` are visible; ``raw`` is the
    batches' bytes exactly as stored (for shipping to a follower or a Kafka client). Null keys and
    values have length -1.
    """

    def __init__(self, data, Py_ssize_t start=0, Py_ssize_t end=-1, int64_t min_offset=0,
                 int64_t max_offset=0x7fffffffffffffff, bint verify_crc=True):
        cdef BatchInfo info
        cdef const unsigned char *base
        cdef Py_ssize_t pos
        cdef int rc
        if type(data) is not bytes:
            data = bytes(data)
        if end < 0:
            end = PyBytes_GET_SIZE(data)
        if start < 0 or end > PyBytes_GET_SIZE(data) or start > end:
            raise ValueError("view bounds out of range")
        self.data = data
        self.start = start
        self.end = end
        self.min_offset = min_offset
        self.max_offset = max_offset
        self.next_offset = min_offset
        self.parsed = False
        self.batch_count = 0
        self.topic = None
        self.partition = -1
        base = <const unsigned char *>PyBytes_AS_STRING(data)
        pos = start
        while pos < end:
            rc = check_batch(base + pos, end - pos, &info, verify_crc, False)
            if rc != OK:
                raise_batch_error(rc, pos)
            pos += info.size
            self.batch_count += 1
            if info.last_offset + 1 > self.next_offset:
                self.next_offset = info.last_offset + 1
        if self.next_offset > max_offset:
            self.next_offset = max_offset

    cdef int _parse(self) except -1:
        cdef BatchInfo info
        cdef const unsigned char *base = <const unsigned char *>PyBytes_AS_STRING(self.data)
        cdef Py_ssize_t pos = self.start, total = 0, at = 0
        cdef RecordColumns cols
        cdef unsigned char *block
        if self.parsed:
            return 0
        while pos < self.end:
            read_batch_header(base + pos, self.end - pos, &info)
            total += info.record_count
            pos += info.size
        # one allocation for the seven columns (five int64, then two int32); the numpy arrays
        # over it are made only when a column is asked for (most readers want records)
        self._columns = np.empty(total * COLUMN_BYTES, dtype=np.uint8)
        self._capacity = total
        block = <unsigned char *>cnp.PyArray_DATA(self._columns)
        cols.offsets = <int64_t *>block
        cols.timestamps = <int64_t *>(block + total * 8)
        cols.key_positions = <int64_t *>(block + total * 16)
        cols.value_positions = <int64_t *>(block + total * 24)
        cols.header_positions = <int64_t *>(block + total * 32)
        cols.key_lengths = <int32_t *>(block + total * 40)
        cols.value_lengths = <int32_t *>(block + total * 44)
        pos = self.start
        while pos < self.end:
            read_batch_header(base + pos, self.end - pos, &info)
            if info.last_offset >= self.min_offset and info.base_offset < self.max_offset:
                if walk_records(base, pos, &info, self.min_offset, self.max_offset, &cols, &at) < 0:
                    raise_batch_error(E_RECORDS, pos)
            elif walk_records(base, pos, &info, 0, 0, NULL, NULL) < 0:
                raise_batch_error(E_RECORDS, pos)
            pos += info.size
        self.n = at
        self.c_offsets = cols.offsets
        self.c_timestamps = cols.timestamps
        self.c_key_positions = cols.key_positions
        self.c_key_lengths = cols.key_lengths
        self.c_value_positions = cols.value_positions
        self.c_value_lengths = cols.value_lengths
        self.c_header_positions = cols.header_positions
        self._columns.flags.writeable = False
        self.parsed = True
        return 0

    cdef object _column(self, Py_ssize_t at, Py_ssize_t width, object dtype):
        """A read-only numpy view of one column (``at``: its start, in bytes per record slot)."""
        self._parse()
        start = at * self._capacity
        return self._columns[start:start + width * self.n].view(dtype)

    cdef Record _record(self, Py_ssize_t i):
        cdef Record r = Record.__new__(Record)
        r.offset = self.c_offsets[i]
        r.timestamp = self.c_timestamps[i]
        r._view = self
        r._i = i
        return r

    def __len__(self):
        self._parse()
        return self.n

    def records(self, Py_ssize_t start=0, Py_ssize_t limit=-1):
        """Records ``start`` .. ``start + limit`` (all after ``start`` when limit < 0) as a list."""
        cdef Py_ssize_t i, end
        cdef list out
        self._parse()
        if start < 0:
            start = 0
        end = self.n if limit < 0 or start + limit > self.n else start + limit
        out = [None] * max(end - start, 0)
        for i in range(start, end):
            out[i - start] = self._record(i)
        return out

    def __bool__(self):
        return self.end > self.start and len(self) > 0

    def __iter__(self):
        self._parse()
        return _RecordIterator(self)

    def __getitem__(self, Py_ssize_t i):
        self._parse()
        if i < 0:
            i += self.n
        if i < 0 or i >= self.n:
            raise IndexError("record index out of range")
        return self._record(i)

    def __repr__(self):
        return (f"RecordBatchView(batches={self.batch_count}, bytes={self.end - self.start}, "
                f"next_offset={self.next_offset})")

    @property
    def size_bytes(self):
        """Bytes of whole batches in the view."""
        return self.end - self.start

    @property
    def raw(self):
        """The stored batches, byte for byte (a memoryview; no copy)."""
        return memoryview(self.data)[self.start:self.end]

    @property
    def buffer(self):
        """The read buffer as a read-only numpy uint8 array; the *_positions columns index it."""
        return np.frombuffer(self.data, dtype=np.uint8)

    @property
    def offsets(self):
        return self._column(0, 8, np.int64)

    @property
    def timestamps(self):
        return self._column(8, 8, np.int64)

    @property
    def key_positions(self):
        return self._column(16, 8, np.int64)

    @property
    def key_lengths(self):
        return self._column(40, 4, np.int32)

    @property
    def value_positions(self):
        return self._column(24, 8, np.int64)

    @property
    def value_lengths(self):
        return self._column(44, 4, np.int32)

    @property
    def header_positions(self):
        return self._column(32, 8, np.int64)

    def batches(self):
        """Header fields of each batch in the view, as dicts (diagnostics and tools)."""
        cdef BatchInfo info
        cdef const unsigned char *base = <const unsigned char *>PyBytes_AS_STRING(self.data)
        cdef Py_ssize_t pos = self.start
        out = []
        while pos < self.end:
            read_batch_header(base + pos, self.end - pos, &info)
            out.append({
                "position": pos, "base_offset": info.base_offset, "last_offset": info.last_offset,
                "size": info.size, "leader_epoch": info.leader_epoch, "attributes": info.attributes,
                "record_count": info.record_count, "base_timestamp": info.base_timestamp,
                "max_timestamp": info.max_timestamp,
                "producer_id": ls_load_i64(base + pos + LS_PRODUCER_ID),
                "producer_epoch": ls_load_i16(base + pos + LS_PRODUCER_EPOCH),
                "base_sequence": ls_load_i32(base + pos + LS_BASE_SEQUENCE),
            })
            pos += info.size
        return out


@cython.final
cdef class _RecordIterator:
    cdef RecordBatchView view
    cdef Py_ssize_t i

    def __cinit__(self, RecordBatchView view):
        self.view = view
        self.i = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.i >= self.view.n:
            raise StopIteration
        r = self.view._record(self.i)
        self.i += 1
        return r


@cython.final
@cython.freelist(256)
@cython.no_gc  # it holds only its view, which never refers back: no cycles to collect
cdef class Record:
    """One record of a :class:`RecordBatchView`; key, value and headers are decoded on access."""

    @property
    def key(self):
        cdef int32_t n = self._view.c_key_lengths[self._i]
        if n < 0:
            return None
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(self._view.data) + self._view.c_key_positions[self._i], n)

    @property
    def value(self):
        cdef int32_t n = self._view.c_value_lengths[self._i]
        if n < 0:
            return None
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(self._view.data) + self._view.c_value_positions[self._i], n)

    @property
    def headers(self):
        cdef const unsigned char *base = <const unsigned char *>PyBytes_AS_STRING(self._view.data)
        cdef const unsigned char *p = base + self._view.c_header_positions[self._i]
        cdef const unsigned char *end = base + PyBytes_GET_SIZE(self._view.data)
        cdef int64_t count, klen, vlen, j
        p = ls_get_varint(p, end, 5, &count)
        out = []
        for j in range(count):
            p = ls_get_varint(p, end, 5, &klen)
            k = PyBytes_FromStringAndSize(<const char *>p, klen).decode("utf-8", "surrogateescape")
            p += klen
            p = ls_get_varint(p, end, 5, &vlen)
            if vlen < 0:
                out.append((k, None))
            else:
                out.append((k, PyBytes_FromStringAndSize(<const char *>p, vlen)))
                p += vlen
        return out

    @property
    def topic(self):
        """The topic it was consumed from (None when read from a bare PartitionLog)."""
        return self._view.topic

    @property
    def partition(self):
        """The partition it was consumed from (-1 when read from a bare PartitionLog)."""
        return self._view.partition

    def __repr__(self):
        if self._view.topic is not None:
            return (f"Record(topic={self._view.topic!r}, partition={self._view.partition}, offset={self.offset}, "
                    f"timestamp={self.timestamp}, key={self.key!r}, value={self.value!r})")
        return f"Record(offset={self.offset}, timestamp={self.timestamp}, key={self.key!r}, value={self.value!r})"

    def __eq__(self, other):
        if not isinstance(other, Record):
            return NotImplemented
        return (self.offset, self.timestamp, self.key, self.value, self.headers) == \
               (other.offset, other.timestamp, other.key, other.value, other.headers)

    def __hash__(self):
        return hash((self.offset, self.timestamp, self.key, self.value))
