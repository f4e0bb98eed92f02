# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, autotestdict=False
"""Log compaction's per-record work: the key map and the batch filter.

``KeyMap`` maps the XXH64 (seed 0) of each record key to the latest offset at which that key
was seen, over the dirty part of a log. It is an open-addressing table (linear probing) of
(hash, offset) pairs, 16 bytes a slot, kept at most 3/4 full. Keys themselves are not stored,
so two keys whose 64-bit hashes collide count as one (as in Kafka, whose map stores only a
digest): with n keys the chance of any collision is about n^2 / 2^65, 4e-7 at 4 million keys.

``BatchFilter`` rewrites record batches keeping:

* every record with a null key;
* a keyed record unless the map holds a later offset for its key (a newer value exists);
* except a tombstone (null value) below ``clean_upto`` whose timestamp is older than
  ``tombstone_horizon`` (now - delete_retention_ms): it has done its job and goes.

Each batch keeps its base offset, last offset delta, timestamps, attributes, leader epoch and
producer fields; the retained records' bytes are copied verbatim (their offset and timestamp
deltas stay valid because the batch's base offset and base timestamp do not change), and only
the record count, batch length and CRC32C are recomputed. A batch left with no records stays as
a header-only batch (record count 0), because readers and recovery need each batch to start
where the previous one ended; consecutive header-only batches merge into one spanning their
offsets when they share leader epoch and attributes and either carry no producer id or carry
the same producer id and epoch with contiguous sequence numbers (so the merged header still
says which sequence numbers the producer wrote: base sequence + last offset delta is the last).

Both walk the whole batches of a chunk of a segment (``*_file``: read from a descriptor into a
buffer they keep; or a caller's buffer) with the GIL released, and validate every batch first
(CRC32C and record framing): compaction must never give a damaged batch a fresh, valid CRC.
"""

import os

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EINTR, errno
from libc.stdint cimport int16_t, int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

from logstore._native.codec cimport BatchInfo, check_batch, raise_batch_error
from logstore._native.includes cimport *

from logstore.errors import CorruptRecordError

ls_crc32c_init()

DEF OK = 0
DEF E_TRUNCATED = 1
DEF E_NOT_DENSE = 100
DEF E_NO_MEMORY = 101
DEF E_RECORD = 102

DEF NO_OFFSET = -1


cdef struct RecordRef:
    const unsigned char *end       # the byte after the record
    int64_t ts_delta
    int64_t offset_delta
    const unsigned char *key
    int64_t key_len                # -1: null key
    int64_t value_len              # -1: null value (tombstone)


cdef inline const unsigned char *_parse_record(const unsigned char *p, const unsigned char *end,
                                               RecordRef *r) noexcept nogil:
    """Fields of the record at ``p`` that compaction needs; NULL if its framing is broken. The
    batch was validated record by record (check_batch deep), so this is a bounds-checked skim."""
    cdef int64_t length
    cdef const unsigned char *rec_end
    p = ls_get_varint(p, end, 5, &length)
    if p == NULL or length < 1 or length > end - p:
        return NULL
    rec_end = p + length
    r.end = rec_end
    p += 1  # record attributes
    p = ls_get_varint(p, rec_end, 10, &r.ts_delta)
    if p == NULL:
        return NULL
    p = ls_get_varint(p, rec_end, 5, &r.offset_delta)
    if p == NULL:
        return NULL
    p = ls_get_varint(p, rec_end, 5, &r.key_len)
    if p == NULL or r.key_len < -1 or r.key_len > rec_end - p:
        return NULL
    r.key = p
    if r.key_len > 0:
        p += r.key_len
    p = ls_get_varint(p, rec_end, 5, &r.value_len)
    if p == NULL or r.value_len < -1 or r.value_len > rec_end - p:
        return NULL
    return rec_end


cdef inline int64_t _record_timestamp(BatchInfo *info, RecordRef *r) noexcept nogil:
    if info.attributes & LS_TIMESTAMP_TYPE_MASK:
        return info.max_timestamp  # log-append time: the batch's timestamp is every record's
    return <int64_t>(<uint64_t>info.base_timestamp + <uint64_t>r.ts_delta)  # wraps as a Java long


cdef object _raise(int code, Py_ssize_t position, int64_t expect, int64_t got):
    if code == E_NOT_DENSE:
        raise CorruptRecordError(f"record batch at position {position} starts at offset {got}, expected {expect}")
    if code == E_NO_MEMORY:
        raise MemoryError()
    if code == E_RECORD:
        raise CorruptRecordError(f"malformed record in the batch at position {position}")
    raise_batch_error(code, position)


cdef struct Buffer:
    unsigned char *data
    Py_ssize_t cap


cdef int _read_into(Buffer *b, int fd, int64_t position, Py_ssize_t n, Py_ssize_t *got) noexcept nogil:
    """pread ``n`` bytes at ``position`` into ``b`` (grown as needed); ``got`` < n at the end of
    the file. Returns 0 or an errno (-1: out of memory)."""
    cdef unsigned char *p
    cdef Py_ssize_t have = 0, r
    if n > b.cap:
        p = <unsigned char *>realloc(b.data, n)
        if p == NULL:
            return -1
        b.data = p
        b.cap = n
    while have < n:
        r = ls_pread(fd, b.data + have, n - have, position + have)
        if r < 0:
            if errno == EINTR:
                continue
            return errno
        if r == 0:
            break
        have += r
    got[0] = have
    return 0


cdef object _raise_read(int err, Py_ssize_t got, Py_ssize_t n, int64_t position):
    if err == -1:
        raise MemoryError()
    if err:
        raise OSError(err, os.strerror(err))
    if got < n:
        raise EOFError(f"the file ends at {position + got}, before {position + n}: it was truncated")


cdef struct Slot:
    uint64_t hash
    int64_t offset                 # NO_OFFSET marks an empty slot


cdef class KeyMap:
    """XXH64(key) -> latest offset. ``max_records`` bounds how many keys a compaction maps in
    one pass (``add_batches`` stops before a batch that could pass it); the table itself starts
    small (``expected`` keys, at most 64 Ki) and doubles as it fills, so a pass over few distinct
    keys keeps its table in the CPU caches."""

    cdef Slot *slots_
    cdef Py_ssize_t capacity       # a power of two
    cdef readonly Py_ssize_t size
    cdef readonly Py_ssize_t max_records
    cdef readonly int64_t records_mapped
    cdef Buffer inbuf              # add_file's read buffer

    def __cinit__(self):
        self.slots_ = NULL
        self.capacity = 0
        self.size = 0
        self.inbuf.data = NULL
        self.inbuf.cap = 0

    def __init__(self, Py_ssize_t max_records=4000000, Py_ssize_t expected=0):
        cdef Py_ssize_t want, cap = 1024
        if max_records < 1:
            raise ValueError(f"max_records must be positive, not {max_records}")
        self.max_records = max_records
        want = min(expected if expected > 0 else max_records, max_records, 1 << 16)
        while cap * 3 < want * 4:
            cap *= 2
        if self._allocate(cap) != 0:
            raise MemoryError()
        self.records_mapped = 0

    def __dealloc__(self):
        free(self.slots_)
        free(self.inbuf.data)

    cdef int _allocate(self, Py_ssize_t cap) noexcept nogil:
        cdef Slot *t = <Slot *>malloc(cap * sizeof(Slot))
        cdef Py_ssize_t i
        if t == NULL:
            return -1
        for i in range(cap):
            t[i].offset = NO_OFFSET
        free(self.slots_)
        self.slots_ = t
        self.capacity = cap
        self.size = 0
        return 0

    cdef inline Py_ssize_t _slot(self, uint64_t h) noexcept nogil:
        cdef Py_ssize_t mask = self.capacity - 1
        cdef Py_ssize_t i = <Py_ssize_t>((h ^ (h >> 32)) & <uint64_t>mask)
        while self.slots_[i].offset != NO_OFFSET and self.slots_[i].hash != h:
            i = (i + 1) & mask
        return i

    cdef int _grow(self) noexcept nogil:
        cdef Slot *old = self.slots_
        cdef Py_ssize_t old_cap = self.capacity, old_size = self.size, i, j
        self.slots_ = NULL
        if self._allocate(old_cap * 2) != 0:
            self.slots_ = old
            self.capacity = old_cap
            self.size = old_size
            return -1
        for i in range(old_cap):
            if old[i].offset != NO_OFFSET:
                j = self._slot(old[i].hash)
                self.slots_[j] = old[i]
        self.size = old_size
        free(old)
        return 0

    cdef int put(self, uint64_t h, int64_t offset) noexcept nogil:
        cdef Py_ssize_t i = self._slot(h)
        if self.slots_[i].offset == NO_OFFSET:
            if (self.size + 1) * 4 > self.capacity * 3:
                if self._grow() != 0:
                    return -1
                i = self._slot(h)
            self.slots_[i].hash = h
            self.slots_[i].offset = offset
            self.size += 1
        elif offset > self.slots_[i].offset:
            self.slots_[i].offset = offset
        self.records_mapped += 1
        return 0

    cdef inline int64_t get(self, uint64_t h) noexcept nogil:
        return self.slots_[self._slot(h)].offset

    # -- Python API (tests, tools) -------------------------------------------------------------

    def __len__(self):
        return self.size

    @property
    def slots(self):
        """Slots in the table (a power of two); memory is 16 bytes a slot."""
        return self.capacity

    def put_key(self, key, int64_t offset):
        """Record that ``key`` (bytes-like) was seen at ``offset``."""
        cdef const unsigned char[::1] mv = memoryview(key).cast("B")
        cdef unsigned char empty = 0
        if offset < 0:
            raise ValueError(f"offset must not be negative, not {offset}")
        if self.put(ls_xxh64(&mv[0] if mv.shape[0] else &empty, mv.shape[0], 0), offset) != 0:
            raise MemoryError()

    def get_key(self, key):
        """Latest offset recorded for ``key``, or None."""
        cdef const unsigned char[::1] mv = memoryview(key).cast("B")
        cdef unsigned char empty = 0
        cdef int64_t o = self.get(ls_xxh64(&mv[0] if mv.shape[0] else &empty, mv.shape[0], 0))
        return None if o == NO_OFFSET else o

    cdef int _add(self, const unsigned char *p, Py_ssize_t n, int64_t start_offset, bint verify_crc,
                  Py_ssize_t *consumed, Py_ssize_t *need, int64_t *expect, bint *stopped,
                  int64_t *got) noexcept nogil:
        """The work of add_batches (see there); returns OK or an error code."""
        cdef BatchInfo info
        cdef RecordRef r
        cdef const unsigned char *q
        cdef const unsigned char *end
        cdef Py_ssize_t pos = 0
        cdef int32_t i
        cdef int rc = OK
        cdef int64_t offset
        cdef unsigned char empty = 0
        need[0] = 0
        stopped[0] = False
        while pos < n:
            rc = check_batch(p + pos, n - pos, &info, verify_crc, True)
            if rc == E_TRUNCATED:
                need[0] = info.size if n - pos >= LS_BATCH_HEADER_SIZE else LS_BATCH_HEADER_SIZE
                rc = OK
                break
            if rc != OK:
                break
            if expect[0] >= 0 and info.base_offset != expect[0]:
                rc = E_NOT_DENSE
                got[0] = info.base_offset
                break
            if info.last_offset >= start_offset and info.record_count > 0:
                if self.size > 0 and self.size + info.record_count > self.max_records:
                    stopped[0] = True
                    break
                q = p + pos + LS_BATCH_HEADER_SIZE
                end = p + pos + info.size
                for i in range(info.record_count):
                    q = _parse_record(q, end, &r)
                    if q == NULL:
                        rc = E_RECORD
                        break
                    offset = info.base_offset + r.offset_delta
                    if r.key_len >= 0 and offset >= start_offset:
                        if self.put(ls_xxh64(r.key if r.key_len > 0 else &empty, r.key_len, 0), offset) != 0:
                            rc = E_NO_MEMORY
                            break
                if rc != OK:
                    break
            expect[0] = info.last_offset + 1
            pos += info.size
        consumed[0] = pos
        return rc

    def add_batches(self, data, int64_t start_offset, int64_t expect_offset, Py_ssize_t position=0,
                    bint verify_crc=True):
        """Map the keyed records at or after ``start_offset`` in the whole batches at the start of
        ``data``. The first batch must start at ``expect_offset`` and each later one where the
        previous one ended (-1: do not check the first). Stops before a batch that could take the
        map past ``max_records`` keys (unless the map is empty: a pass maps at least one batch).

        Returns ``(consumed, need, next_offset, stopped)``: bytes of whole batches walked; the
        size of the batch cut off at the end of ``data`` (0 if none); the offset after the last
        batch walked; whether it stopped because the map is full (at ``next_offset``).
        ``position`` is where ``data`` starts in its file, for error messages."""
        cdef const unsigned char[::1] mv = memoryview(data).cast("B")
        cdef Py_ssize_t n = mv.shape[0], consumed = 0, need = 0
        cdef int64_t expect = expect_offset, got = 0
        cdef bint stopped = False
        cdef int rc = OK
        if n == 0:
            return (0, 0, expect_offset, False)
        with nogil:
            rc = self._add(&mv[0], n, start_offset, verify_crc, &consumed, &need, &expect, &stopped, &got)
        if rc != OK:
            _raise(rc, position + consumed, expect, got)
        return (consumed, need, expect, stopped)

    def add_file(self, int fd, int64_t position, Py_ssize_t length, int64_t start_offset, int64_t expect_offset,
                 bint verify_crc=True):
        """``add_batches`` over ``length`` bytes read from file descriptor ``fd`` at ``position``
        (into a buffer the map keeps; the GIL is released for the read too). EOFError if the file
        is shorter."""
        cdef Py_ssize_t consumed = 0, need = 0, got_bytes = 0
        cdef int64_t expect = expect_offset, got = 0
        cdef bint stopped = False
        cdef int rc = OK, err
        if length <= 0:
            return (0, 0, expect_offset, False)
        with nogil:
            err = _read_into(&self.inbuf, fd, position, length, &got_bytes)
            if err == 0 and got_bytes == length:
                rc = self._add(self.inbuf.data, length, start_offset, verify_crc, &consumed, &need, &expect,
                               &stopped, &got)
        _raise_read(err, got_bytes, length, position)
        if rc != OK:
            _raise(rc, position + consumed, expect, got)
        return (consumed, need, expect, stopped)


cdef class BatchFilter:
    """Rewrites the batches of one output segment (see the module docstring for the rules).

    Feed it the input segments' bytes in order with ``process``, collect what it wrote with
    ``take_output``, and call ``finish`` at the end of the output segment (it writes a pending
    header-only batch). Statistics accumulate in its read-only attributes."""

    cdef KeyMap keymap
    cdef readonly int64_t clean_upto
    cdef readonly int64_t tombstone_horizon
    cdef readonly int64_t next_offset
    cdef bint verify_crc
    # the header-only batch being grown from consecutive emptied batches
    cdef bint has_pending
    cdef unsigned char pending[61]
    cdef int64_t pending_last
    cdef int64_t pending_max_ts
    # output not yet taken
    cdef unsigned char *out
    cdef Py_ssize_t out_len
    cdef Py_ssize_t out_cap
    cdef Buffer inbuf              # process_file's read buffer
    # statistics
    cdef readonly int64_t records_read
    cdef readonly int64_t records_kept
    cdef readonly int64_t records_removed      # superseded by a later record with the same key
    cdef readonly int64_t tombstones_removed
    cdef readonly int64_t null_key_records
    cdef readonly int64_t batches_read
    cdef readonly int64_t batches_written
    cdef readonly int64_t empty_batches_merged
    cdef readonly int64_t bytes_read
    cdef readonly int64_t bytes_written

    def __cinit__(self):
        self.out = NULL
        self.out_len = 0
        self.out_cap = 0
        self.inbuf.data = NULL
        self.inbuf.cap = 0

    def __init__(self, KeyMap keymap not None, int64_t clean_upto, int64_t tombstone_horizon,
                 int64_t first_offset, bint verify_crc=True):
        self.keymap = keymap
        self.clean_upto = clean_upto
        self.tombstone_horizon = tombstone_horizon
        self.next_offset = first_offset
        self.verify_crc = verify_crc
        self.has_pending = False
        self.out_len = 0

    def __dealloc__(self):
        free(self.out)
        free(self.inbuf.data)

    @property
    def changed(self):
        """Whether the output differs from the input (records dropped or batches merged)."""
        return self.records_removed + self.tombstones_removed + self.empty_batches_merged > 0

    cdef int _reserve(self, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t cap
        cdef unsigned char *p
        if self.out_len + n <= self.out_cap:
            return 0
        cap = max(self.out_cap * 2, self.out_len + n, 1 << 16)
        p = <unsigned char *>realloc(self.out, cap)
        if p == NULL:
            return -1
        self.out = p
        self.out_cap = cap
        return 0

    cdef inline bint _merges_with_pending(self, const unsigned char *h, BatchInfo *info) noexcept nogil:
        """Can the emptied batch with header ``h`` extend the pending header-only batch?"""
        cdef const unsigned char *q = self.pending
        cdef int64_t pid = ls_load_i64(h + LS_PRODUCER_ID), next_seq
        if ls_load_i32(h + LS_LEADER_EPOCH) != ls_load_i32(q + LS_LEADER_EPOCH):
            return False
        if ls_load_i16(h + LS_ATTRIBUTES) != ls_load_i16(q + LS_ATTRIBUTES):
            return False
        if pid != ls_load_i64(q + LS_PRODUCER_ID) or ls_load_i16(h + LS_PRODUCER_EPOCH) != ls_load_i16(q + LS_PRODUCER_EPOCH):
            return False
        if pid < 0:
            return True  # no idempotent producer: nothing to keep apart
        # same producer: only if the sequence numbers run on, so base + delta stays the last one
        if ls_load_i32(q + LS_BASE_SEQUENCE) < 0:
            return False
        next_seq = <int64_t>ls_load_i32(q + LS_BASE_SEQUENCE) + (self.pending_last - ls_load_i64(q + LS_BASE_OFFSET)) + 1
        return next_seq <= 0x7fffffff and ls_load_i32(h + LS_BASE_SEQUENCE) == next_seq

    cdef void _write_pending(self) noexcept nogil:
        """Append the pending header-only batch to the output (room was reserved)."""
        cdef unsigned char *h = self.out + self.out_len
        memcpy(h, self.pending, LS_BATCH_HEADER_SIZE)
        ls_store_i32(h + LS_BATCH_LENGTH, LS_BATCH_HEADER_SIZE - LS_LOG_OVERHEAD)
        ls_store_i32(h + LS_LAST_OFFSET_DELTA, <int32_t>(self.pending_last - ls_load_i64(h + LS_BASE_OFFSET)))
        ls_store_i64(h + LS_MAX_TIMESTAMP, self.pending_max_ts)
        ls_store_i32(h + LS_RECORD_COUNT, 0)
        ls_store_u32(h + LS_CRC, ls_crc32c(0, h + LS_CRC_START, LS_BATCH_HEADER_SIZE - LS_CRC_START))
        self.out_len += LS_BATCH_HEADER_SIZE
        self.batches_written += 1
        self.bytes_written += LS_BATCH_HEADER_SIZE
        self.has_pending = False

    cdef int _filter_batch(self, const unsigned char *b, BatchInfo *info) noexcept nogil:
        """Filter one validated batch into the output."""
        cdef Py_ssize_t lead = LS_BATCH_HEADER_SIZE if self.has_pending else 0
        cdef unsigned char *dst
        cdef unsigned char *w
        cdef unsigned char *h
        cdef const unsigned char *q = b + LS_BATCH_HEADER_SIZE
        cdef const unsigned char *end = b + info.size
        cdef const unsigned char *run = NULL
        cdef const unsigned char *rec_end
        cdef RecordRef r
        cdef int32_t i, kept = 0
        cdef int64_t offset, latest
        cdef Py_ssize_t size
        cdef bint keep
        cdef unsigned char empty = 0
        if self._reserve(2 * LS_BATCH_HEADER_SIZE + info.size) != 0:
            return E_NO_MEMORY
        # kept records go straight to where they end up: after the pending batch's header (if it
        # has to be written first) and this batch's header
        dst = self.out + self.out_len + lead + LS_BATCH_HEADER_SIZE
        w = dst
        for i in range(info.record_count):
            rec_end = _parse_record(q, end, &r)
            if rec_end == NULL:
                return E_RECORD
            offset = info.base_offset + r.offset_delta
            keep = True
            if r.key_len < 0:
                self.null_key_records += 1
            else:
                latest = self.keymap.get(ls_xxh64(r.key if r.key_len > 0 else &empty, r.key_len, 0))
                if latest > offset:
                    keep = False
                    self.records_removed += 1
                elif r.value_len < 0 and offset < self.clean_upto \
                        and _record_timestamp(info, &r) < self.tombstone_horizon:
                    keep = False
                    self.tombstones_removed += 1
            if keep:
                if run == NULL:
                    run = q
                kept += 1
            elif run != NULL:
                memcpy(w, run, q - run)
                w += q - run
                run = NULL
            q = rec_end
        if run != NULL:
            memcpy(w, run, q - run)
            w += q - run
        self.records_read += info.record_count
        self.records_kept += kept
        self.batches_read += 1
        self.bytes_read += info.size
        if kept > 0:
            if self.has_pending:
                self._write_pending()
            h = self.out + self.out_len
            memcpy(h, b, LS_BATCH_HEADER_SIZE)
            size = LS_BATCH_HEADER_SIZE + (w - dst)
            if kept < info.record_count:
                ls_store_i32(h + LS_BATCH_LENGTH, <int32_t>(size - LS_LOG_OVERHEAD))
                ls_store_i32(h + LS_RECORD_COUNT, kept)
                ls_store_u32(h + LS_CRC, ls_crc32c(0, h + LS_CRC_START, size - LS_CRC_START))
            self.out_len += size
            self.batches_written += 1
            self.bytes_written += size
        elif self.has_pending and self._merges_with_pending(b, info):
            self.pending_last = info.last_offset
            if info.max_timestamp > self.pending_max_ts:
                self.pending_max_ts = info.max_timestamp
            self.empty_batches_merged += 1
        else:
            if self.has_pending:
                self._write_pending()
            memcpy(self.pending, b, LS_BATCH_HEADER_SIZE)
            self.pending_last = info.last_offset
            self.pending_max_ts = info.max_timestamp
            self.has_pending = True
        return OK

    cdef int _process(self, const unsigned char *p, Py_ssize_t n, Py_ssize_t *consumed, Py_ssize_t *need,
                      int64_t *expect, int64_t *got) noexcept nogil:
        """The work of process (see there); returns OK or an error code."""
        cdef BatchInfo info
        cdef Py_ssize_t pos = 0
        cdef int rc = OK
        need[0] = 0
        while pos < n:
            rc = check_batch(p + pos, n - pos, &info, self.verify_crc, True)
            if rc == E_TRUNCATED:
                need[0] = info.size if n - pos >= LS_BATCH_HEADER_SIZE else LS_BATCH_HEADER_SIZE
                rc = OK
                break
            if rc != OK:
                break
            if self.next_offset >= 0 and info.base_offset != self.next_offset:
                rc = E_NOT_DENSE
                expect[0] = self.next_offset
                got[0] = info.base_offset
                break
            rc = self._filter_batch(p + pos, &info)
            if rc != OK:
                break
            self.next_offset = info.last_offset + 1
            pos += info.size
        consumed[0] = pos
        return rc

    def process(self, data, Py_ssize_t position=0):
        """Filter the whole batches at the start of ``data``; returns ``(consumed, need)``: bytes
        of whole batches processed and the size of a batch cut off at the end (0 if none).
        ``position`` is where ``data`` starts in its file, for error messages."""
        cdef const unsigned char[::1] mv = memoryview(data).cast("B")
        cdef Py_ssize_t n = mv.shape[0], consumed = 0, need = 0
        cdef int64_t expect = self.next_offset, got = 0
        cdef int rc = OK
        if n == 0:
            return (0, 0)
        with nogil:
            rc = self._process(&mv[0], n, &consumed, &need, &expect, &got)
        if rc != OK:
            _raise(rc, position + consumed, expect, got)
        return (consumed, need)

    def process_file(self, int fd, int64_t position, Py_ssize_t length):
        """``process`` over ``length`` bytes read from file descriptor ``fd`` at ``position``
        (into a buffer the filter keeps; the GIL is released for the read too). EOFError if the
        file is shorter."""
        cdef Py_ssize_t consumed = 0, need = 0, got_bytes = 0
        cdef int64_t expect = self.next_offset, got = 0
        cdef int rc = OK, err
        if length <= 0:
            return (0, 0)
        with nogil:
            err = _read_into(&self.inbuf, fd, position, length, &got_bytes)
            if err == 0 and got_bytes == length:
                rc = self._process(self.inbuf.data, length, &consumed, &need, &expect, &got)
        _raise_read(err, got_bytes, length, position)
        if rc != OK:
            _raise(rc, position + consumed, expect, got)
        return (consumed, need)

    def drain_to(self, int fd, int64_t position):
        """Write the output not yet taken to file descriptor ``fd`` at ``position`` (GIL
        released); returns the number of bytes written."""
        cdef Py_ssize_t done = 0, r, n = self.out_len
        cdef int err = 0
        with nogil:
            while done < n:
                r = ls_pwrite(fd, self.out + done, n - done, position + done)
                if r < 0:
                    if errno == EINTR:
                        continue
                    err = errno
                    break
                done += r
        if err:
            raise OSError(err, os.strerror(err))
        self.out_len = 0
        return n

    def finish(self):
        """End of the output segment: write the pending header-only batch, if any."""
        if self.has_pending:
            if self._reserve(LS_BATCH_HEADER_SIZE) != 0:
                raise MemoryError()
            self._write_pending()

    @property
    def output_size(self):
        """Bytes written and not yet taken."""
        return self.out_len

    def take_output(self):
        """The batches written since the last call, as bytes."""
        cdef bytes data = PyBytes_FromStringAndSize(<char *>self.out if self.out != NULL else <char *>"", self.out_len)
        self.out_len = 0
        return data
