# The partition log's hot paths (append, read); slow paths live in logstore.log.partition.
from libc.stdint cimport int16_t, int32_t, int64_t, uint64_t

from logstore._native.codec cimport RecordBatchView, RecordInputs
from logstore._native.segment cimport Segment


cdef class ProducerEntry:
    cdef readonly int64_t producer_id
    cdef readonly int16_t epoch
    cdef readonly int32_t last_sequence
    cdef readonly int64_t last_offset
    cdef int32_t first_seqs[5]
    cdef int32_t last_seqs[5]
    cdef int64_t first_offsets[5]
    cdef int count
    cdef int head
    cdef void push(self, int32_t first_seq, int32_t last_seq, int64_t first_offset) noexcept
    cdef void extend(self, int32_t last_seq) noexcept
    cdef int64_t find(self, int32_t first_seq, int32_t last_seq) noexcept


cdef class ProducerStateTable:
    cdef dict entries
    cdef ProducerEntry last
    cdef ProducerEntry get(self, int64_t producer_id)
    cdef int64_t check(self, int64_t producer_id, int16_t epoch, int32_t first_seq,
                       int32_t last_seq) except -2
    cdef int update(self, int64_t producer_id, int16_t epoch, int32_t first_seq, int32_t last_seq,
                    int64_t first_offset, bint extended) except -1


cdef class SequenceCounters:
    cdef int32_t *values
    cdef readonly Py_ssize_t capacity
    cdef int grow(self, Py_ssize_t count) except -1


cdef class AppendNotifier:
    cdef object cond
    cdef public int waiters
    cdef uint64_t version
    cdef void notify(self) noexcept


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
    cdef public bint _hw_follows_leo          # single-node broker: the HW moves with every append
    cdef public ProducerStateTable _producers
    cdef public object _notifier               # an AppendNotifier or None
    cdef RecordInputs _inputs

    cdef int64_t append_record(self, value, key, headers, timestamp, int64_t producer_id,
                               int16_t producer_epoch, SequenceCounters counters, Py_ssize_t slot,
                               int64_t *out_timestamp) except -2
    cdef void _appended(self) noexcept

    cdef int _enter(self) except -1
    cdef void _exit(self) noexcept
    cdef int64_t _write(self, int64_t now, int64_t producer_id, int producer_epoch,
                        int64_t base_sequence) except -1
    cdef int _maybe_roll(self, Py_ssize_t size, Py_ssize_t count, int64_t now) except -1
    cdef Py_ssize_t _segment_index(self, int64_t offset) noexcept
    cdef RecordBatchView _read(self, int64_t offset, Py_ssize_t max_bytes, int64_t max_offset)
