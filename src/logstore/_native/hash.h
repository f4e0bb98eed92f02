/* Key hashes: XXH64 (the default partitioner and the compactor's key map) and Kafka's murmur2
 * (the Java client's default partitioner, for users who share topics with Kafka).
 *
 * Both are written from their public specifications:
 *   XXH64   https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md (little-endian lanes)
 *   murmur2 Kafka's org.apache.kafka.common.utils.Utils.murmur2 (seed 0x9747b28c, Java int
 *           arithmetic, tail bytes read as unsigned)
 * Results do not depend on the host's byte order or word size: keys hash to the same partition
 * on every platform and across restarts.
 */
#ifndef LOGSTORE_HASH_H
#define LOGSTORE_HASH_H

#include <stddef.h>
#include <stdint.h>

#define LS_XXH_P1 0x9E3779B185EBCA87ULL
#define LS_XXH_P2 0xC2B2AE3D27D4EB4FULL
#define LS_XXH_P3 0x165667B19E3779F9ULL
#define LS_XXH_P4 0x85EBCA77C2B2AE63ULL
#define LS_XXH_P5 0x27D4EB2F165667C5ULL

static inline uint64_t ls_rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t ls_le64(const unsigned char *p) {
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) | ((uint64_t)p[3] << 24) |
           ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) | ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

static inline uint32_t ls_le32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t ls_xxh64_round(uint64_t acc, uint64_t lane) {
    acc += lane * LS_XXH_P2;
    acc = ls_rotl64(acc, 31);
    return acc * LS_XXH_P1;
}

static inline uint64_t ls_xxh64_merge(uint64_t acc, uint64_t v) {
    acc ^= ls_xxh64_round(0, v);
    return acc * LS_XXH_P1 + LS_XXH_P4;
}

static inline uint64_t ls_xxh64(const unsigned char *p, size_t n, uint64_t seed) {
    const unsigned char *end = p + n;
    uint64_t h;
    if (n >= 32) {
        uint64_t v1 = seed + LS_XXH_P1 + LS_XXH_P2, v2 = seed + LS_XXH_P2, v3 = seed, v4 = seed - LS_XXH_P1;
        const unsigned char *limit = end - 32;
        do {
            v1 = ls_xxh64_round(v1, ls_le64(p));
            v2 = ls_xxh64_round(v2, ls_le64(p + 8));
            v3 = ls_xxh64_round(v3, ls_le64(p + 16));
            v4 = ls_xxh64_round(v4, ls_le64(p + 24));
            p += 32;
        } while (p <= limit);
        h = ls_rotl64(v1, 1) + ls_rotl64(v2, 7) + ls_rotl64(v3, 12) + ls_rotl64(v4, 18);
        h = ls_xxh64_merge(h, v1);
        h = ls_xxh64_merge(h, v2);
        h = ls_xxh64_merge(h, v3);
        h = ls_xxh64_merge(h, v4);
    } else {
        h = seed + LS_XXH_P5;
    }
    h += (uint64_t)n;
    while (end - p >= 8) {
        h ^= ls_xxh64_round(0, ls_le64(p));
        h = ls_rotl64(h, 27) * LS_XXH_P1 + LS_XXH_P4;
        p += 8;
    }
    if (end - p >= 4) {
        h ^= (uint64_t)ls_le32(p) * LS_XXH_P1;
        h = ls_rotl64(h, 23) * LS_XXH_P2 + LS_XXH_P3;
        p += 4;
    }
    while (p < end) {
        h ^= (uint64_t)(*p) * LS_XXH_P5;
        h = ls_rotl64(h, 11) * LS_XXH_P1;
        p++;
    }
    h ^= h >> 33;
    h *= LS_XXH_P2;
    h ^= h >> 29;
    h *= LS_XXH_P3;
    h ^= h >> 32;
    return h;
}

/* Kafka's murmur2, in unsigned 32-bit arithmetic (Java's int wraps the same way; >>> is the
 * unsigned shift). Returns the same bits as the Java int. */
static inline uint32_t ls_murmur2(const unsigned char *p, size_t n) {
    const uint32_t m = 0x5bd1e995u;
    uint32_t h = 0x9747b28cu ^ (uint32_t)n;
    size_t i, n4 = n / 4;
    for (i = 0; i < n4; i++) {
        uint32_t k = ls_le32(p + 4 * i);
        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (n & 3) {
        case 3: h ^= (uint32_t)p[(n & ~(size_t)3) + 2] << 16; /* fall through */
        case 2: h ^= (uint32_t)p[(n & ~(size_t)3) + 1] << 8;  /* fall through */
        case 1: h ^= (uint32_t)p[n & ~(size_t)3]; h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

#endif
