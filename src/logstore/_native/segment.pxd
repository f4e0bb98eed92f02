# One segment of a partition: its .log file (buffered writer + pread reader) and its two indexes.
from libc.stdint cimport int64_t

from libc.stdint cimport int16_t, int32_t

from logstore._native.codec cimport BatchInfo, RecordBatchView, RecordSpec
from logstore._native.index cimport OffsetIndex, TimeIndex


cdef class Segment:
    cdef readonly int64_t base_offset
    cdef readonly str log_path
    cdef int fd
    cdef readonly OffsetIndex offset_index
    cdef readonly TimeIndex time_index
    cdef readonly Py_ssize_t file_size        # bytes handed to the OS (the readable part)
    cdef unsigned char *wbuf                  # appended batches not yet written to the file
    cdef Py_ssize_t wlen
    cdef Py_ssize_t wcap
    cdef readonly int64_t next_offset          # last offset + 1; base_offset when empty
    cdef readonly int64_t max_timestamp        # -1 when empty
    cdef readonly int64_t offset_of_max_timestamp
    cdef readonly int64_t first_batch_timestamp  # -1 when empty
    cdef public int64_t created_ms             # wall clock of the first append; anchors segment_ms
    cdef Py_ssize_t bytes_since_index
    cdef readonly int index_interval
    cdef readonly Py_ssize_t max_index_bytes
    cdef readonly bint sealed
    # the open batch: single-record appends grow one batch in the write buffer until it is sealed
    cdef Py_ssize_t open_pos                  # its offset in wbuf; -1 when there is none
    cdef Py_ssize_t open_size
    cdef Py_ssize_t open_count
    cdef int64_t open_base_offset
    cdef int64_t open_base_timestamp
    cdef int64_t open_max_timestamp
    cdef int32_t open_epoch
    cdef int16_t open_attributes
    cdef int64_t open_producer_id             # -1: no idempotent producer
    cdef int16_t open_producer_epoch
    cdef int32_t open_base_sequence
    cdef unsigned char *scratch               # reused pread buffer for header scans
    cdef Py_ssize_t scratch_cap

    cdef unsigned char *reserve(self, Py_ssize_t n) except NULL
    cdef int commit(self, Py_ssize_t size, int64_t base_offset, int64_t last_offset,
                    int64_t max_timestamp) except -1
    cdef int _account(self, Py_ssize_t position, Py_ssize_t size, int64_t base_offset,
                      int64_t last_offset, int64_t max_timestamp) except -1
    cdef int drain(self) except -1
    cdef void seal_open_batch(self) noexcept
    cdef int append_single(self, RecordSpec *spec, int64_t offset, int32_t leader_epoch,
                           int16_t attributes, Py_ssize_t batch_limit, int64_t producer_id,
                           int16_t producer_epoch, int32_t sequence) except -1
    cdef const unsigned char *read_scratch(self, Py_ssize_t pos, Py_ssize_t n, Py_ssize_t *got) except NULL
    cdef Py_ssize_t locate(self, int64_t offset, BatchInfo *info) except -2
    cdef RecordBatchView read_from(self, int64_t offset, Py_ssize_t max_bytes, int64_t max_offset,
                                   bint verify_crc)
