# cython: language_level=3, boundscheck=False, cdivision=True
"""One segment: ``<base offset:020d>.log`` plus its ``.index`` and ``.timeindex``.

Writes are buffered in user space (one ``write`` per ~1 MiB, never one per record) and reads use
``pread`` on the part already handed to the OS, so a reader never sees half a batch. Recovery
(``recover``) trusts the file, not any recorded size: it walks batches from position 0, stops at
the first that fails validation, cuts the file there and rebuilds both indexes.
"""

import os

import numpy as np

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.errno cimport EINTR, errno
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from logstore._native.codec cimport (BatchInfo, RecordBatchView, RecordSpec, check_batch,
                                     raise_batch_error, read_batch_header, record_body_size,
                                     write_batch_header, write_record)
from logstore._native.includes cimport (ls_close, ls_fdatasync, ls_ftruncate, ls_pread, ls_pwrite,
                                        ls_varint_size, LS_TIMESTAMP_TYPE_MASK)
from logstore._native.index cimport OffsetIndex, TimeIndex

from logstore.errors import CorruptRecordError

DEF WRITE_BUFFER = 1 << 20
DEF SCAN_CHUNK = 1 << 22


def segment_name(int64_t base_offset):
    return "%020d" % base_offset


cdef bytes _pread(int fd, Py_ssize_t pos, Py_ssize_t n):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef char *p = PyBytes_AS_STRING(out)
    cdef Py_ssize_t got = 0, r
    while got < n:
        with nogil:
            r = ls_pread(fd, p + got, n - got, pos + got)
        if r < 0:
            if errno == EINTR:
                continue
            raise OSError(errno, os.strerror(errno))
        if r == 0:
            break
        got += r
    if got < n:
        out = out[:got]
    return out


cdef class Segment:
    """A segment's log file and indexes. Opening never scans: call ``load`` (trusting the indexes
    after a sanity check) or ``recover`` (validating every batch) before use."""

    def __cinit__(self):
        self.fd = -1
        self.wbuf = NULL
        self.wlen = 0
        self.wcap = 0
        self.open_pos = -1
        self.scratch = NULL
        self.scratch_cap = 0

    def __init__(self, str directory, int64_t base_offset, int index_interval, Py_ssize_t max_index_bytes,
                 bint active):
        name = segment_name(base_offset)
        self.base_offset = base_offset
        self.log_path = os.path.join(directory, name + ".log")
        self.index_interval = index_interval
        self.max_index_bytes = max_index_bytes
        self.fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
        self.file_size = os.fstat(self.fd).st_size
        self.offset_index = OffsetIndex(os.path.join(directory, name + ".index"), base_offset,
                                        max_index_bytes, active)
        self.time_index = TimeIndex(os.path.join(directory, name + ".timeindex"), base_offset,
                                    max_index_bytes, active)
        self.sealed = not active
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = base_offset
        self.first_batch_timestamp = -1
        self.created_ms = -1
        self.bytes_since_index = 0

    def __dealloc__(self):
        PyMem_Free(self.wbuf)
        PyMem_Free(self.scratch)
        if self.fd >= 0:
            ls_close(self.fd)

    # -- writer -----------------------------------------------------------------------------

    cdef unsigned char *reserve(self, Py_ssize_t n) except NULL:
        """Room for ``n`` bytes at the end of the write buffer (for a new batch)."""
        cdef unsigned char *p
        if self.open_pos >= 0:
            self.seal_open_batch()
        if self.wlen + n > self.wcap:
            if self.wlen:
                self.drain()
            if n > self.wcap:
                p = <unsigned char *>PyMem_Realloc(self.wbuf, max(n, WRITE_BUFFER))
                if p == NULL:
                    raise MemoryError()
                self.wbuf = p
                self.wcap = max(n, WRITE_BUFFER)
        return self.wbuf + self.wlen

    cdef int commit(self, Py_ssize_t size, int64_t base_offset, int64_t last_offset,
                    int64_t max_timestamp) except -1:
        """Account for a batch just encoded at ``reserve``'s pointer and index it if due."""
        self._account(self.file_size + self.wlen, size, base_offset, last_offset, max_timestamp)
        self.wlen += size
        if self.wlen >= WRITE_BUFFER:
            self.drain()
        return 0

    cdef int _account(self, Py_ssize_t position, Py_ssize_t size, int64_t base_offset,
                      int64_t last_offset, int64_t max_timestamp) except -1:
        """Index bookkeeping shared by the writer and recovery, so both build the same indexes."""
        if self.bytes_since_index >= self.index_interval and position > 0:
            self.offset_index.append_entry(base_offset, position)
            if self.max_timestamp >= 0:
                self.time_index.maybe_append_entry(self.max_timestamp, self.offset_of_max_timestamp)
            self.bytes_since_index = 0
        self.bytes_since_index += size
        self.next_offset = last_offset + 1
        if max_timestamp > self.max_timestamp:
            # the time index points at the batch where a new maximum appeared (by its base
            # offset, which the writer knows before the batch is complete)
            self.max_timestamp = max_timestamp
            self.offset_of_max_timestamp = base_offset
        if self.first_batch_timestamp < 0:
            self.first_batch_timestamp = max_timestamp
        return 0

    cdef int drain(self) except -1:
        """Hand buffered batches to the OS at the end of the file (pwrite: the position is ours,
        not the descriptor's). On failure the file is cut back to its last whole batch."""
        cdef const unsigned char *p = self.wbuf
        cdef Py_ssize_t left, r, at
        cdef int err
        if self.open_pos >= 0:
            self.seal_open_batch()
        left = self.wlen
        at = self.file_size
        while left > 0:
            with nogil:
                r = ls_pwrite(self.fd, p, left, at)
            if r < 0:
                err = errno
                if err == EINTR:
                    continue
                ls_ftruncate(self.fd, self.file_size)
                self.wlen = 0
                raise OSError(err, os.strerror(err), self.log_path)
            p += r
            left -= r
            at += r
        self.file_size += self.wlen
        self.wlen = 0
        return 0

    cdef void seal_open_batch(self) noexcept:
        """Write the open batch's header and CRC: from here on it is an ordinary batch."""
        write_batch_header(self.wbuf + self.open_pos, self.open_count, self.open_size,
                           self.open_base_offset, self.open_epoch, self.open_base_timestamp,
                           self.open_max_timestamp, self.open_producer_id, self.open_producer_epoch,
                           self.open_base_sequence, self.open_attributes)
        self.open_pos = -1

    cdef int append_single(self, RecordSpec *spec, int64_t offset, int32_t leader_epoch,
                           int16_t attributes, Py_ssize_t batch_limit, int64_t producer_id,
                           int16_t producer_epoch, int32_t sequence) except -1:
        """Append one record at ``offset``: into the open batch if it fits (same leader epoch,
        attributes and producer, next sequence, batch stays under ``batch_limit``), else as a new
        open batch. Consecutive single appends so cost one batch header per ~``batch_limit``
        bytes, not one per record. Returns 1 if the record joined the open batch, else 0."""
        cdef int64_t ts_delta
        cdef Py_ssize_t body, rec, size
        cdef unsigned char *p
        if self.open_pos >= 0 and self.open_epoch == leader_epoch and self.open_attributes == attributes \
                and self.open_producer_id == producer_id and self.open_producer_epoch == producer_epoch \
                and (producer_id < 0 or <int64_t>sequence == <int64_t>self.open_base_sequence + self.open_count) \
                and (not (attributes & LS_TIMESTAMP_TYPE_MASK) or spec.timestamp == self.open_max_timestamp):
            # (log append time: every record of a batch has the batch's time, so only appends of
            # the same millisecond share one)
            ts_delta = spec.timestamp - self.open_base_timestamp
            body = record_body_size(spec, ts_delta, self.open_count)
            rec = ls_varint_size(body) + body
            if self.open_size + rec <= batch_limit and self.wlen + rec <= self.wcap \
                    and offset - self.open_base_offset == self.open_count:
                spec.body_size = body
                write_record(self.wbuf + self.wlen, spec, ts_delta, self.open_count)
                self.wlen += rec
                self.open_size += rec
                self.open_count += 1
                self.bytes_since_index += rec
                self.next_offset = offset + 1
                if spec.timestamp > self.open_max_timestamp:
                    self.open_max_timestamp = spec.timestamp
                if spec.timestamp > self.max_timestamp:
                    self.max_timestamp = spec.timestamp
                    self.offset_of_max_timestamp = self.open_base_offset
                return 1
        body = record_body_size(spec, 0, 0)
        spec.body_size = body
        size = 61 + ls_varint_size(body) + body
        p = self.reserve(size)  # seals the previous open batch
        write_record(p + 61, spec, 0, 0)
        self._account(self.file_size + self.wlen, size, offset, offset, spec.timestamp)
        self.open_pos = self.wlen
        self.open_size = size
        self.open_count = 1
        self.open_base_offset = offset
        self.open_base_timestamp = spec.timestamp
        self.open_max_timestamp = spec.timestamp
        self.open_epoch = leader_epoch
        self.open_attributes = attributes
        self.open_producer_id = producer_id
        self.open_producer_epoch = producer_epoch
        self.open_base_sequence = sequence if producer_id >= 0 else -1
        self.wlen += size
        if self.wlen >= WRITE_BUFFER:
            self.drain()
        return 0

    cdef const unsigned char *read_scratch(self, Py_ssize_t pos, Py_ssize_t n, Py_ssize_t *got) except NULL:
        """pread up to ``n`` bytes at ``pos`` into the segment's reusable scratch buffer."""
        cdef unsigned char *p
        cdef Py_ssize_t r, have = 0
        if n > self.scratch_cap:
            p = <unsigned char *>PyMem_Realloc(self.scratch, n)
            if p == NULL:
                raise MemoryError()
            self.scratch = p
            self.scratch_cap = n
        while have < n:
            with nogil:
                r = ls_pread(self.fd, self.scratch + have, n - have, pos + have)
            if r < 0:
                if errno == EINTR:
                    continue
                raise OSError(errno, os.strerror(errno), self.log_path)
            if r == 0:
                break
            have += r
        got[0] = have
        return self.scratch if self.scratch != NULL else <const unsigned char *>""

    def flush_buffer(self):
        self.drain()

    def sync(self):
        """fdatasync the log file and flush the index maps (buffer must be drained)."""
        cdef int rc, fd = self.fd
        if fd < 0:
            return
        with nogil:
            rc = ls_fdatasync(fd)
        if rc != 0:
            raise OSError(errno, os.strerror(errno), self.log_path)
        self.offset_index.flush()
        self.time_index.flush()

    def sync_data(self):
        """fdatasync the log file only (group commit in flush="always")."""
        cdef int rc, fd = self.fd
        if fd < 0:
            return
        with nogil:
            rc = ls_fdatasync(fd)
        if rc != 0:
            raise OSError(errno, os.strerror(errno), self.log_path)

    @property
    def size(self):
        """Bytes of whole batches in this segment, buffered ones included."""
        return self.file_size + self.wlen

    @property
    def buffered_bytes(self):
        return self.wlen

    @property
    def is_empty(self):
        return self.file_size + self.wlen == 0

    @property
    def index_full(self):
        return self.offset_index.is_full or self.time_index.is_full

    # -- reader -----------------------------------------------------------------------------

    cdef Py_ssize_t locate(self, int64_t offset, BatchInfo *info) except -2:
        """Position of the first batch whose last offset is >= ``offset`` (its header in ``info``),
        or -1 if there is none in the readable part of the file."""
        cdef Py_ssize_t pos = self.offset_index.floor_position(offset), chunk_pos = pos, avail = 0, rel
        cdef Py_ssize_t want = 512  # often the indexed batch is the one: its header is enough
        cdef const unsigned char *p = NULL
        cdef int rc
        while pos < self.file_size:
            rel = pos - chunk_pos
            if rel + 61 > avail:
                p = self.read_scratch(pos, min(self.file_size - pos, want), &avail)
                want = self.index_interval + 512
                chunk_pos = pos
                rel = 0
            rc = read_batch_header(p + rel, avail - rel, info)
            if rc == 1 and avail - rel >= 61:
                rc = 0  # the body runs past the chunk; the header is all we need to step over it
            if rc != 0:
                raise_batch_error(rc, pos)
            if pos + info.size > self.file_size:
                raise_batch_error(1, pos)
            if info.last_offset >= offset:
                return pos
            pos += info.size
        return -1

    cdef RecordBatchView read_from(self, int64_t offset, Py_ssize_t max_bytes, int64_t max_offset,
                                   bint verify_crc):
        """Whole batches from the one holding ``offset``, up to ``max_bytes`` (at least one batch),
        stopping before any batch that starts at or after ``max_offset``. None if nothing."""
        cdef BatchInfo info
        cdef Py_ssize_t start = self.locate(offset, &info), pos, end, n
        cdef bytes data
        cdef const unsigned char *p
        if start < 0 or info.base_offset >= max_offset:
            return None
        n = max(max_bytes, info.size)
        if n > self.file_size - start:
            n = self.file_size - start
        data = _pread(self.fd, start, n)
        p = <const unsigned char *>PyBytes_AS_STRING(data)
        pos = info.size
        end = info.size
        while pos < len(data):
            if read_batch_header(p + pos, len(data) - pos, &info) != 0:
                break  # a partial batch at the end of what max_bytes covered
            if info.base_offset >= max_offset:
                break
            pos += info.size
            end = pos
        return RecordBatchView(data, 0, end, offset, max_offset, verify_crc)

    def read(self, int64_t offset, Py_ssize_t max_bytes=1 << 20, int64_t max_offset=0x7fffffffffffffff,
             bint verify_crc=True):
        return self.read_from(offset, max_bytes, max_offset, verify_crc)

    def position_of(self, int64_t offset):
        """File position of the batch holding ``offset`` (-1 if not in this segment)."""
        cdef BatchInfo info
        return self.locate(offset, &info)

    def read_bytes(self, Py_ssize_t position, Py_ssize_t n):
        return _pread(self.fd, position, n)

    def find_timestamp(self, int64_t timestamp, int64_t min_offset=0):
        """(offset, timestamp) of the first record at or after ``min_offset`` whose timestamp is
        >= ``timestamp``, or None. The time index gives where to start; batch headers' max
        timestamps skip whole batches; one batch is decoded."""
        cdef int64_t start_offset = max(self.time_index.floor_offset(timestamp), min_offset)
        cdef BatchInfo info
        cdef Py_ssize_t pos = self.locate(start_offset, &info), got
        cdef const unsigned char *p
        cdef int rc
        if pos < 0:
            return None
        while pos < self.file_size:
            p = self.read_scratch(pos, 61, &got)
            rc = read_batch_header(p, got, &info)
            if rc != 0 and not (rc == 1 and got == 61):
                raise_batch_error(rc, pos)
            if info.max_timestamp >= timestamp and info.last_offset >= min_offset:
                view = self.read_from(max(info.base_offset, min_offset), info.size, 0x7fffffffffffffff, True)
                hits = np.flatnonzero(view.timestamps >= timestamp)
                if len(hits):
                    return (int(view.offsets[hits[0]]), int(view.timestamps[hits[0]]))
            pos += info.size
        return None

    # -- open, recovery, truncation -------------------------------------------------------

    def load(self):
        """Restore in-memory state of a cleanly written segment from its indexes (sanity-checked)
        and the batch headers after the last index entry. Raises CorruptRecordError if the files
        disagree or the index is missing entries the writer would have made."""
        cdef BatchInfo info
        cdef Py_ssize_t pos = 0, last_pos = 0, indexed_pos = 0, time_pos = 0
        cdef const unsigned char *p
        cdef Py_ssize_t got
        cdef int rc
        cdef int64_t time_last = -1
        if self.offset_index.entries:
            indexed_pos = pos = self.offset_index.floor_position(0x7fffffffffffffff)
            self.next_offset = self.offset_index.last_offset()
        if self.time_index.entries:
            # The last time entry must hold the segment's largest timestamp: check every batch
            # from the one it names (usually the last few) so a lost final entry is noticed.
            time_last, off = self.time_index.last_entry()
            time_pos = self.offset_index.floor_position(off)
            if time_pos < pos:
                pos = time_pos
                self.next_offset = self.offset_index.lookup(off)[0]
        while pos < self.file_size:
            p = self.read_scratch(pos, 61, &got)
            rc = read_batch_header(p, got, &info)
            if rc == 1 and got == 61:
                rc = 0
            if rc != 0 or pos + info.size > self.file_size or info.base_offset != self.next_offset:
                raise CorruptRecordError(f"segment {self.log_path} does not end on a whole batch")
            if self.time_index.entries and info.max_timestamp > time_last:
                raise CorruptRecordError(f"time index {self.time_index.path} is missing its last entries")
            if info.max_timestamp > self.max_timestamp:
                self.max_timestamp = info.max_timestamp
                self.offset_of_max_timestamp = info.base_offset
            if pos >= indexed_pos:
                last_pos = pos
            self.next_offset = info.last_offset + 1
            pos += info.size
        # The writer indexes a batch once index_interval bytes have passed since the last entry,
        # so every batch after the last entry starts less than that far from it.
        if last_pos > indexed_pos and last_pos - indexed_pos >= self.index_interval:
            raise CorruptRecordError(f"offset index {self.offset_index.path} is missing entries")
        if self.time_index.entries == 0 and self.max_timestamp >= 0:
            raise CorruptRecordError(f"time index {self.time_index.path} is empty")
        if self.file_size:
            p = self.read_scratch(0, 61, &got)
            if read_batch_header(p, got, &info) in (0, 1):
                self.first_batch_timestamp = info.max_timestamp
        self.offset_index.check(self.file_size, self.next_offset)
        self.time_index.check(self.next_offset)
        ts, off = self.time_index.last_entry()
        if ts > self.max_timestamp:
            self.max_timestamp = ts
            self.offset_of_max_timestamp = off
        self.bytes_since_index = self.file_size - indexed_pos
        return self.next_offset

    def recover(self, bint verify_crc=True, int64_t min_offset=-1):
        """Validate every batch from position 0, cut the file at the first bad or torn one, and
        rebuild both indexes. Batches must have increasing offsets starting at or above
        ``min_offset``. Returns ``(truncated_bytes, epochs)`` where ``epochs`` lists
        ``(leader_epoch, first_offset)`` each time the epoch changes."""
        cdef BatchInfo info
        cdef Py_ssize_t pos = 0, chunk_pos = 0, avail = 0, rel
        cdef bytes chunk = b""
        cdef const unsigned char *p = NULL
        cdef int rc
        cdef int64_t expect = max(self.base_offset, min_offset)
        cdef int last_epoch = -1
        epochs = []
        # rebuild into preallocated indexes (a sealed segment's are trimmed); re-trimmed below
        self.offset_index.reset()
        self.time_index.reset()
        self.offset_index.grow(self.max_index_bytes)
        self.time_index.grow(self.max_index_bytes)
        self.next_offset = self.base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = self.base_offset
        self.first_batch_timestamp = -1
        self.bytes_since_index = 0
        self.wlen = 0
        self.open_pos = -1
        while pos < self.file_size:
            rel = pos - chunk_pos
            if rel + 61 > avail or rel + ls_batch_size(p + rel, avail - rel) > avail:
                chunk = _pread(self.fd, pos, min(self.file_size - pos, max(SCAN_CHUNK, _peek_size(self.fd, pos))))
                chunk_pos = pos
                rel = 0
                avail = len(chunk)
                p = <const unsigned char *>PyBytes_AS_STRING(chunk)
            rc = check_batch(p + rel, avail - rel, &info, verify_crc, True)  # records too: a kept batch is served
            if rc == 5:
                raise_batch_error(rc, pos)  # a compressed batch is not damage: do not cut it away
            # offsets are dense: a batch that does not start where the last one ended is damage
            # (base offsets are outside the CRC)
            if rc != 0 or info.base_offset != expect or info.last_offset - self.base_offset > 0x7fffffff:
                break
            if self.offset_index.entries + 1 >= self.offset_index.max_entries:
                self.offset_index.grow(2 * self.offset_index.max_entries * 8)
            if self.time_index.entries + 1 >= self.time_index.max_entries:
                self.time_index.grow(2 * self.time_index.max_entries * 12)
            if info.leader_epoch != last_epoch:
                epochs.append((info.leader_epoch, info.base_offset))
                last_epoch = info.leader_epoch
            # re-index exactly as the writer does
            self._account(pos, info.size, info.base_offset, info.last_offset, info.max_timestamp)
            expect = info.last_offset + 1
            pos += info.size
        truncated = self.file_size - pos
        if truncated:
            if ls_ftruncate(self.fd, pos) != 0:
                raise OSError(errno, os.strerror(errno), self.log_path)
            self.file_size = pos
        if self.sealed:
            self._seal_indexes()
        return truncated, epochs

    def truncate_to(self, int64_t offset):
        """Remove every batch whose last offset is >= ``offset`` (batch granularity: a batch is
        never split). Returns the new next offset of this segment."""
        cdef BatchInfo info
        cdef Py_ssize_t pos
        self.drain()
        pos = self.locate(offset, &info)
        if pos < 0:
            return self.next_offset
        if ls_ftruncate(self.fd, pos) != 0:
            raise OSError(errno, os.strerror(errno), self.log_path)
        self.file_size = pos
        # what is left is re-derived from the file, as on recovery (truncation is rare)
        self.recover(False)
        return self.next_offset

    def seal(self):
        """The segment stops being active: drain, add the final time index entry, trim indexes."""
        self.drain()
        self._seal_indexes()
        self.sealed = True
        # a sealed segment is only read: give back its write and scratch buffers (1 MiB+ each
        # segment otherwise, for as long as the log stays open)
        PyMem_Free(self.wbuf)
        self.wbuf = NULL
        self.wcap = 0
        PyMem_Free(self.scratch)
        self.scratch = NULL
        self.scratch_cap = 0

    def _seal_indexes(self):
        if self.max_timestamp >= 0:
            if self.time_index.entries >= self.time_index.max_entries:
                self.time_index.grow((self.time_index.entries + 1) * 12)
            self.time_index.maybe_append_entry(self.max_timestamp, self.offset_of_max_timestamp)
        self.offset_index.trim()
        self.time_index.trim()

    def activate(self, Py_ssize_t max_index_bytes):
        """Make a sealed segment appendable again (the last one, on reopen or after truncation)."""
        self.offset_index.grow(max_index_bytes)
        self.time_index.grow(max_index_bytes)
        self.sealed = False

    def close(self):
        if self.fd >= 0:
            try:
                self.drain()
            finally:
                ls_close(self.fd)
                self.fd = -1
                self.offset_index.close()
                self.time_index.close()

    def delete(self):
        if self.fd >= 0:
            ls_close(self.fd)
            self.fd = -1
        self.wlen = 0
        self.open_pos = -1
        self.offset_index.delete()
        self.time_index.delete()
        try:
            os.unlink(self.log_path)
        except FileNotFoundError:
            pass

    @property
    def closed(self):
        return self.fd < 0

    def __repr__(self):
        return f"Segment(base_offset={self.base_offset}, size={self.size}, next_offset={self.next_offset})"


cdef inline Py_ssize_t ls_batch_size(const unsigned char *p, Py_ssize_t avail) noexcept nogil:
    """Size the header at ``p`` claims (61 for garbage, so the validator gets to report it)."""
    cdef BatchInfo info
    cdef int rc
    if p == NULL or avail < 61:
        return 0x7fffffff
    rc = read_batch_header(p, avail, &info)
    if (rc == 0 or rc == 1) and info.size > 0:
        return info.size
    return 61


cdef Py_ssize_t _peek_size(int fd, Py_ssize_t pos):
    cdef bytes h = _pread(fd, pos, 61)
    cdef BatchInfo info
    if len(h) < 61:
        return 61
    read_batch_header(<const unsigned char *>PyBytes_AS_STRING(h), 61, &info)
    if info.size > 0:
        return info.size
    return 61
