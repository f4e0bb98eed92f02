# Record batch v2 codec: fields and signatures only (see codec.pyx for the format).
from libc.stdint cimport int16_t, int32_t, int64_t


cdef struct RecordSpec:
    const unsigned char *key
    Py_ssize_t key_len          # -1: null key
    const unsigned char *value
    Py_ssize_t value_len        # -1: null value (tombstone)
    const unsigned char *headers  # pre-encoded (count + entries); NULL: no headers
    Py_ssize_t headers_len
    int64_t timestamp
    Py_ssize_t body_size        # filled by plan_batch


cdef struct RecordColumns:
    int64_t *offsets
    int64_t *timestamps
    int64_t *key_positions
    int32_t *key_lengths
    int64_t *value_positions
    int32_t *value_lengths
    int64_t *header_positions


cdef struct BatchInfo:
    int64_t base_offset
    int64_t last_offset
    int32_t size                # whole batch, log overhead included
    int32_t leader_epoch
    int16_t attributes
    int32_t record_count
    int64_t base_timestamp
    int64_t max_timestamp


cdef class RecordInputs:
    cdef RecordSpec *specs
    cdef Py_ssize_t count
    cdef Py_ssize_t capacity
    cdef list keepalive
    cdef int load(self, values, keys, headers, timestamps, int64_t now_ms) except -1
    cdef int load_one(self, value, key, headers, timestamp, int64_t now_ms) except -1
    cdef int load_arrays(self, values, value_lengths, keys, key_lengths, timestamps,
                         int64_t now_ms) except -1
    cdef void clear(self)
    cdef int _reserve(self, Py_ssize_t n) except -1


cdef int64_t now_ms() noexcept nogil
cdef Py_ssize_t record_body_size(RecordSpec *s, int64_t ts_delta, Py_ssize_t offset_delta) noexcept nogil
cdef unsigned char *write_record(unsigned char *p, RecordSpec *s, int64_t ts_delta,
                                 Py_ssize_t offset_delta) noexcept nogil
cdef void write_batch_header(unsigned char *out, Py_ssize_t count, Py_ssize_t size, int64_t base_offset,
                             int32_t leader_epoch, int64_t base_timestamp, int64_t max_timestamp,
                             int64_t producer_id, int16_t producer_epoch, int32_t base_sequence,
                             int16_t attributes) noexcept nogil
cdef Py_ssize_t plan_batch(RecordSpec *specs, Py_ssize_t count, Py_ssize_t max_bytes,
                           Py_ssize_t *out_count) noexcept nogil
cdef void write_batch(unsigned char *out, RecordSpec *specs, Py_ssize_t count, Py_ssize_t size,
                      int64_t base_offset, int32_t leader_epoch, int64_t producer_id,
                      int16_t producer_epoch, int32_t base_sequence, int16_t attributes) noexcept nogil
cdef int read_batch_header(const unsigned char *p, Py_ssize_t avail, BatchInfo *info) noexcept nogil
cdef int check_batch(const unsigned char *p, Py_ssize_t avail, BatchInfo *info, bint verify_crc,
                     bint deep) noexcept nogil
cdef Py_ssize_t walk_records(const unsigned char *buf, Py_ssize_t pos, BatchInfo *info,
                             int64_t min_offset, int64_t max_offset, RecordColumns *cols,
                             Py_ssize_t *at) noexcept nogil
cdef raise_batch_error(int code, int64_t position)


cdef class RecordBatchView:
    cdef readonly object data       # the bytes object the view points into
    cdef readonly Py_ssize_t start
    cdef readonly Py_ssize_t end
    cdef readonly int64_t min_offset
    cdef readonly int64_t max_offset
    cdef readonly int64_t next_offset
    cdef readonly Py_ssize_t batch_count
    cdef public str topic           # set by a consumer: its records then name their topic
    cdef public int partition       # and partition (-1: not from a broker)
    cdef bint parsed
    cdef Py_ssize_t n
    cdef object _columns            # one uint8 array holding every column (see _parse)
    cdef Py_ssize_t _capacity       # record slots per column in _columns
    cdef int64_t *c_offsets
    cdef int64_t *c_timestamps
    cdef int64_t *c_key_positions
    cdef int32_t *c_key_lengths
    cdef int64_t *c_value_positions
    cdef int32_t *c_value_lengths
    cdef int64_t *c_header_positions
    cdef int _parse(self) except -1
    cdef object _column(self, Py_ssize_t at, Py_ssize_t width, object dtype)
    cdef Record _record(self, Py_ssize_t i)


cdef class Record:
    cdef readonly int64_t offset
    cdef readonly int64_t timestamp
    cdef RecordBatchView _view
    cdef Py_ssize_t _i
