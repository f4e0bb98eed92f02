# Sparse offset and time indexes over memory-mapped, preallocated files.
from libc.stdint cimport int64_t


cdef class MappedIndex:
    cdef readonly str path
    cdef readonly int64_t base_offset
    cdef readonly Py_ssize_t entries
    cdef readonly Py_ssize_t max_entries
    cdef readonly int entry_size
    cdef object _file
    cdef object _mmap
    cdef object _view
    cdef unsigned char *base
    cdef int _map(self, Py_ssize_t nbytes) except -1
    cdef int _unmap(self) except -1
    cdef int64_t rel_offset_at(self, Py_ssize_t i) noexcept nogil


cdef class OffsetIndex(MappedIndex):
    cdef int64_t last_offset(self) noexcept nogil
    cdef int append_entry(self, int64_t offset, int64_t position) except -1
    cdef Py_ssize_t _count_at_or_below(self, int64_t offset) noexcept nogil
    cdef Py_ssize_t floor_position(self, int64_t offset) noexcept nogil


cdef class TimeIndex(MappedIndex):
    cdef int64_t last_timestamp(self) noexcept nogil
    cdef int maybe_append_entry(self, int64_t timestamp, int64_t offset) except -1
    cdef Py_ssize_t _count_at_or_below(self, int64_t timestamp) noexcept nogil
    cdef int64_t floor_offset(self, int64_t timestamp) noexcept nogil
