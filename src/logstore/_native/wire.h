/* Wire primitives for the record-batch codec: big-endian loads/stores,
 * Kafka's zig-zag varints, and CRC32C (Castagnoli) with a hardware path.
 *
 * Everything here is static inline: it is compiled into each extension that
 * includes it, so the hot loops never cross a module boundary.
 */
#ifndef LOGSTORE_WIRE_H
#define LOGSTORE_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- big-endian fixed-width fields (Kafka is big-endian on the wire) ---- */

#if defined(_MSC_VER)
#include <stdlib.h>
#define LS_BSWAP16(x) _byteswap_ushort(x)
#define LS_BSWAP32(x) _byteswap_ulong(x)
#define LS_BSWAP64(x) _byteswap_uint64(x)
#else
#define LS_BSWAP16(x) __builtin_bswap16(x)
#define LS_BSWAP32(x) __builtin_bswap32(x)
#define LS_BSWAP64(x) __builtin_bswap64(x)
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define LS_BE16(x) (x)
#define LS_BE32(x) (x)
#define LS_BE64(x) (x)
#else
#define LS_BE16(x) LS_BSWAP16(x)
#define LS_BE32(x) LS_BSWAP32(x)
#define LS_BE64(x) LS_BSWAP64(x)
#endif

static inline uint16_t ls_load_u16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return LS_BE16(v); }
static inline uint32_t ls_load_u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return LS_BE32(v); }
static inline uint64_t ls_load_u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return LS_BE64(v); }
static inline int16_t ls_load_i16(const unsigned char *p) { return (int16_t)ls_load_u16(p); }
static inline int32_t ls_load_i32(const unsigned char *p) { return (int32_t)ls_load_u32(p); }
static inline int64_t ls_load_i64(const unsigned char *p) { return (int64_t)ls_load_u64(p); }
static inline void ls_store_u16(unsigned char *p, uint16_t v) { v = LS_BE16(v); memcpy(p, &v, 2); }
static inline void ls_store_u32(unsigned char *p, uint32_t v) { v = LS_BE32(v); memcpy(p, &v, 4); }
static inline void ls_store_u64(unsigned char *p, uint64_t v) { v = LS_BE64(v); memcpy(p, &v, 8); }
static inline void ls_store_i16(unsigned char *p, int16_t v) { ls_store_u16(p, (uint16_t)v); }
static inline void ls_store_i32(unsigned char *p, int32_t v) { ls_store_u32(p, (uint32_t)v); }
static inline void ls_store_i64(unsigned char *p, int64_t v) { ls_store_u64(p, (uint64_t)v); }

/* ---- zig-zag varints (protobuf style, as Kafka's record fields) ---- */

static inline uint64_t ls_zigzag64(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static inline int64_t ls_unzigzag64(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

static inline int ls_uvarint_size(uint64_t v) {
    int n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}
static inline int ls_varint_size(int64_t v) { return ls_uvarint_size(ls_zigzag64(v)); }

static inline unsigned char *ls_put_uvarint(unsigned char *p, uint64_t v) {
    while (v >= 0x80) { *p++ = (unsigned char)(v | 0x80); v >>= 7; }
    *p++ = (unsigned char)v;
    return p;
}
static inline unsigned char *ls_put_varint(unsigned char *p, int64_t v) { return ls_put_uvarint(p, ls_zigzag64(v)); }

/* Decode a zig-zag varint of at most `max_bytes` (5 for int32, 10 for int64)
 * from [p, end). Returns the byte after it, or NULL if it is truncated or too
 * long: malformed input must never read past `end`. */
static inline const unsigned char *ls_get_varint(const unsigned char *p, const unsigned char *end,
                                                 int max_bytes, int64_t *out) {
    uint64_t v = 0;
    int shift = 0, i;
    for (i = 0; i < max_bytes; i++) {
        unsigned char b;
        if (p >= end) return NULL;
        b = *p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) { *out = ls_unzigzag64(v); return p; }
        shift += 7;
    }
    return NULL;
}

/* ---- CRC32C (Castagnoli, reflected polynomial 0x82F63B78) ---- */

static uint32_t ls_crc32c_table[8][256];
static int ls_crc32c_ready = 0;
static int ls_crc32c_hw = 0;

static void ls_crc32c_init_table(void) {
    uint32_t i, j, c;
    for (i = 0; i < 256; i++) {
        c = i;
        for (j = 0; j < 8; j++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
        ls_crc32c_table[0][i] = c;
    }
    for (i = 0; i < 256; i++) {
        c = ls_crc32c_table[0][i];
        for (j = 1; j < 8; j++) { c = ls_crc32c_table[0][c & 0xff] ^ (c >> 8); ls_crc32c_table[j][i] = c; }
    }
}

/* Portable slicing-by-8; `crc` is the raw register (pre-inverted by caller). */
static uint32_t ls_crc32c_sw(uint32_t crc, const unsigned char *p, size_t n) {
    while (n && ((uintptr_t)p & 7)) { crc = ls_crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8); n--; }
    while (n >= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4); memcpy(&hi, p + 4, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        lo = LS_BSWAP32(lo); hi = LS_BSWAP32(hi);
#endif
        lo ^= crc;
        crc = ls_crc32c_table[7][lo & 0xff] ^ ls_crc32c_table[6][(lo >> 8) & 0xff] ^
              ls_crc32c_table[5][(lo >> 16) & 0xff] ^ ls_crc32c_table[4][lo >> 24] ^
              ls_crc32c_table[3][hi & 0xff] ^ ls_crc32c_table[2][(hi >> 8) & 0xff] ^
              ls_crc32c_table[1][(hi >> 16) & 0xff] ^ ls_crc32c_table[0][hi >> 24];
        p += 8; n -= 8;
    }
    while (n--) crc = ls_crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define LS_CRC32C_X86 1
#include <nmmintrin.h>
/* Three independent streams hide the 3-cycle latency of the crc32 instruction;
 * the partial CRCs are merged with the table-driven shift below. */
__attribute__((target("sse4.2")))
static uint32_t ls_crc32c_x86_1(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = crc;
    while (n && ((uintptr_t)p & 7)) { c = _mm_crc32_u8((uint32_t)c, *p++); n--; }
    while (n >= 8) { uint64_t w; memcpy(&w, p, 8); c = _mm_crc32_u64(c, w); p += 8; n -= 8; }
    while (n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return (uint32_t)c;
}
#endif

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define LS_CRC32C_ARM 1
#include <arm_acle.h>
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#endif
#if defined(__clang__)
__attribute__((target("crc")))
#else
__attribute__((target("+crc")))
#endif
static uint32_t ls_crc32c_arm_1(uint32_t crc, const unsigned char *p, size_t n) {
    while (n && ((uintptr_t)p & 7)) { crc = __crc32cb(crc, *p++); n--; }
    while (n >= 8) { uint64_t w; memcpy(&w, p, 8); crc = __crc32cd(crc, w); p += 8; n -= 8; }
    while (n--) crc = __crc32cb(crc, *p++);
    return crc;
}
#endif

/* Multiply-free CRC shift: the CRC register of (data || zeros(len)) computed
 * with a 32x32 GF(2) matrix power, used to combine interleaved streams. */
static uint32_t ls_gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    while (vec) { if (vec & 1) sum ^= *mat; vec >>= 1; mat++; }
    return sum;
}
static void ls_gf2_square(uint32_t *sq, const uint32_t *mat) {
    int n;
    for (n = 0; n < 32; n++) sq[n] = ls_gf2_times(mat, mat[n]);
}

/* Operator that appends `len` zero bytes to a raw CRC register. */
static void ls_crc32c_zeros_op(uint32_t *op, size_t len) {
    uint32_t odd[32], even[32], row = 1;
    int n, first = 1;
    odd[0] = 0x82F63B78u;
    for (n = 1; n < 32; n++) { odd[n] = row; row <<= 1; }
    ls_gf2_square(even, odd);   /* 2 zero bits */
    ls_gf2_square(odd, even);   /* 4 zero bits */
    /* now odd = 4 bits; squaring gives 8 bits = 1 byte */
    for (n = 0; n < 32; n++) op[n] = (uint32_t)1 << n;
    do {
        ls_gf2_square(even, odd);           /* even: 2^k bytes */
        if (len & 1) {
            uint32_t t[32];
            for (n = 0; n < 32; n++) t[n] = ls_gf2_times(even, op[n]);
            memcpy(op, t, sizeof t);
        }
        len >>= 1;
        if (!len) break;
        ls_gf2_square(odd, even);
        if (len & 1) {
            uint32_t t[32];
            for (n = 0; n < 32; n++) t[n] = ls_gf2_times(odd, op[n]);
            memcpy(op, t, sizeof t);
        }
        len >>= 1;
        (void)first;
    } while (len);
}

#define LS_CRC_STRIDE 8192
static uint32_t ls_crc32c_stride_op[32];

static void ls_crc32c_init(void) {
    if (ls_crc32c_ready) return;
    ls_crc32c_init_table();
    ls_crc32c_zeros_op(ls_crc32c_stride_op, LS_CRC_STRIDE);
#if defined(LS_CRC32C_X86)
    ls_crc32c_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#elif defined(LS_CRC32C_ARM) && defined(__linux__)
    ls_crc32c_hw = (getauxval(AT_HWCAP) & HWCAP_CRC32) ? 1 : 0;
#elif defined(LS_CRC32C_ARM) && defined(__APPLE__)
    ls_crc32c_hw = 1;  /* every Apple arm64 core has the CRC extension */
#endif
    ls_crc32c_ready = 1;
}

#if defined(LS_CRC32C_X86)
/* Three streams over consecutive LS_CRC_STRIDE blocks, merged by shifting. */
__attribute__((target("sse4.2")))
static uint32_t ls_crc32c_x86_3way(uint32_t crc, const unsigned char *p, size_t n) {
    while (n >= 3 * LS_CRC_STRIDE) {
        uint64_t a = crc, b = 0, c = 0;
        const unsigned char *pa = p, *pb = p + LS_CRC_STRIDE, *pc = p + 2 * LS_CRC_STRIDE;
        size_t i;
        for (i = 0; i < LS_CRC_STRIDE; i += 8) {
            uint64_t wa, wb, wc;
            memcpy(&wa, pa + i, 8); memcpy(&wb, pb + i, 8); memcpy(&wc, pc + i, 8);
            a = _mm_crc32_u64(a, wa); b = _mm_crc32_u64(b, wb); c = _mm_crc32_u64(c, wc);
        }
        crc = ls_gf2_times(ls_crc32c_stride_op, (uint32_t)a) ^ (uint32_t)b;
        crc = ls_gf2_times(ls_crc32c_stride_op, crc) ^ (uint32_t)c;
        p += 3 * LS_CRC_STRIDE; n -= 3 * LS_CRC_STRIDE;
    }
    return ls_crc32c_x86_1(crc, p, n);
}
#endif

/* CRC32C of `n` bytes at `p`, continuing from `crc` (0 to start). The tables are static, so
 * each extension module that includes this header has its own copy: initialise on first use. */
static inline uint32_t ls_crc32c(uint32_t crc, const unsigned char *p, size_t n) {
    if (!ls_crc32c_ready) ls_crc32c_init();
    crc = ~crc;
#if defined(LS_CRC32C_X86)
    if (ls_crc32c_hw) return ~ls_crc32c_x86_3way(crc, p, n);
#elif defined(LS_CRC32C_ARM)
    if (ls_crc32c_hw) return ~ls_crc32c_arm_1(crc, p, n);
#endif
    return ~ls_crc32c_sw(crc, p, n);
}

static inline uint32_t ls_crc32c_sw_only(uint32_t crc, const unsigned char *p, size_t n) {
    if (!ls_crc32c_ready) ls_crc32c_init();
    return ~ls_crc32c_sw(~crc, p, n);
}

/* ---- record batch v2 layout (see docs/format.md) ---- */
enum {
    LS_BASE_OFFSET = 0,
    LS_BATCH_LENGTH = 8,
    LS_LEADER_EPOCH = 12,
    LS_MAGIC = 16,
    LS_CRC = 17,
    LS_ATTRIBUTES = 21,
    LS_LAST_OFFSET_DELTA = 23,
    LS_BASE_TIMESTAMP = 27,
    LS_MAX_TIMESTAMP = 35,
    LS_PRODUCER_ID = 43,
    LS_PRODUCER_EPOCH = 51,
    LS_BASE_SEQUENCE = 53,
    LS_RECORD_COUNT = 57,
    LS_BATCH_HEADER_SIZE = 61,
    LS_LOG_OVERHEAD = 12,          /* base offset + length: not counted in batch length */
    LS_CRC_START = 21,             /* CRC covers attributes .. end of batch */
    LS_MAGIC_V2 = 2,
    LS_COMPRESSION_MASK = 0x07,
    LS_TIMESTAMP_TYPE_MASK = 0x08,
    LS_TRANSACTIONAL_MASK = 0x10,
    LS_CONTROL_MASK = 0x20
};

#endif
