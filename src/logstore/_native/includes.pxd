# C declarations shared by the native units: one place, no logic.
from libc.stdint cimport int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t

cdef extern from "wire.h" nogil:
    uint16_t ls_load_u16(const unsigned char *p)
    uint32_t ls_load_u32(const unsigned char *p)
    int16_t ls_load_i16(const unsigned char *p)
    int32_t ls_load_i32(const unsigned char *p)
    int64_t ls_load_i64(const unsigned char *p)
    void ls_store_u32(unsigned char *p, uint32_t v)
    void ls_store_i16(unsigned char *p, int16_t v)
    void ls_store_i32(unsigned char *p, int32_t v)
    void ls_store_i64(unsigned char *p, int64_t v)

    int ls_varint_size(int64_t v)
    unsigned char *ls_put_varint(unsigned char *p, int64_t v)
    const unsigned char *ls_get_varint(const unsigned char *p, const unsigned char *end,
                                       int max_bytes, int64_t *out)

    void ls_crc32c_init()
    uint32_t ls_crc32c(uint32_t crc, const unsigned char *p, size_t n)
    uint32_t ls_crc32c_sw_only(uint32_t crc, const unsigned char *p, size_t n)
    int ls_crc32c_hw

    enum:
        LS_BASE_OFFSET
        LS_BATCH_LENGTH
        LS_LEADER_EPOCH
        LS_MAGIC
        LS_CRC
        LS_ATTRIBUTES
        LS_LAST_OFFSET_DELTA
        LS_BASE_TIMESTAMP
        LS_MAX_TIMESTAMP
        LS_PRODUCER_ID
        LS_PRODUCER_EPOCH
        LS_BASE_SEQUENCE
        LS_RECORD_COUNT
        LS_BATCH_HEADER_SIZE
        LS_LOG_OVERHEAD
        LS_CRC_START
        LS_MAGIC_V2
        LS_COMPRESSION_MASK
        LS_TIMESTAMP_TYPE_MASK
        LS_TRANSACTIONAL_MASK
        LS_CONTROL_MASK

cdef extern from "compat.h" nogil:
    ctypedef long long ls_ssize_t
    ls_ssize_t ls_pread(int fd, void *buf, size_t n, int64_t pos)
    ls_ssize_t ls_pwrite(int fd, const void *buf, size_t n, int64_t pos)
    int ls_fdatasync(int fd)
    int ls_ftruncate(int fd, int64_t size)
    int ls_close(int fd)
    int64_t ls_now_ms()

cdef extern from "hash.h" nogil:
    uint64_t ls_xxh64(const unsigned char *p, size_t n, uint64_t seed)
    uint32_t ls_murmur2(const unsigned char *p, size_t n)
