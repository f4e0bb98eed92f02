# The partition log's hot paths (append, read); slow paths live in logstore.log.partition.
from libc.stdint cimport int32_t, int64_t

from logstore._native.codec cimport RecordBatchView, RecordInputs
from logstore._native.segment cimport Segment


cdef class LogCore:
    cdef readonly object _lock
    cdef readonly list _segments
    cdef readonly Segment _active
    cdef readonly int64_t log_end_offset
    cdef public int64_t _log_start_offset
    cdef public int64_t _high_watermark
    cdef public int64_t _segment_bytes
    cdef public int64_t _segment_ms
    cdef public Py_ssize_t _max_record_bytes
    cdef public int32_t _leader_epoch
    cdef public bint _verify_crc
    cdef public bint _log_append_time
    cdef public bint _closed
    cdef RecordInputs _inputs

    cdef int _enter(self) except -1
    cdef void _exit(self) noexcept
    cdef int64_t _write(self, int64_t now, int64_t producer_id, int producer_epoch,
                        int64_t base_sequence) except -1
    cdef int _maybe_roll(self, Py_ssize_t size, Py_ssize_t count, int64_t now) except -1
    cdef Py_ssize_t _segment_index(self, int64_t offset) noexcept
    cdef RecordBatchView _read(self, int64_t offset, Py_ssize_t max_bytes, int64_t max_offset)
