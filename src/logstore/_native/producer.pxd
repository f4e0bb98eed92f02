# The producer's hot path: partitioners and the native send.
from libc.stdint cimport int16_t, int32_t, int64_t, uint64_t

from logstore._native.core cimport SequenceCounters


cdef class RecordMetadata:
    cdef readonly str topic
    cdef readonly int partition
    cdef readonly int64_t offset
    cdef readonly int64_t timestamp       # -1 for an idempotent retry of a log-append-time record


cdef class TopicRoute:
    cdef readonly str name
    cdef readonly list logs               # LogCore per partition
    cdef int count
    cdef readonly bint compacted           # keyless records are refused
    cdef readonly bint durable             # flush="always": sends wait for the fsync
    cdef int sticky                       # keyless records go here until sticky_bytes >= batch size
    cdef Py_ssize_t sticky_bytes
    cdef SequenceCounters sequences       # this producer's next sequence per partition


cdef class ProducerCore:
    cdef dict _routes                     # topic name -> TopicRoute
    cdef public int _partitioner          # 0 default (xxh64), 1 murmur2
    cdef public Py_ssize_t _batch_size
    cdef public int64_t _producer_id      # -1: not idempotent
    cdef public int16_t _producer_epoch
    cdef uint64_t _rng
    cdef public bint _closed

    cdef uint64_t _random(self) noexcept
    cdef int _pick(self, TopicRoute route, object key, Py_ssize_t value_size) except -1
    cdef RecordMetadata _append(self, TopicRoute route, int p, value, key, headers, timestamp_ms)
