/* SHA-256 (FIPS 180-4), for model fingerprints. */
#ifndef BSQ_SHA256_H
#define BSQ_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct bsq_sha256 {
    uint32_t h[8];
    uint64_t len;      /* bytes hashed so far */
    uint8_t block[64];
    size_t fill;
} bsq_sha256;

void bsq_sha256_init(bsq_sha256 *s);
void bsq_sha256_update(bsq_sha256 *s, const void *data, size_t n);
void bsq_sha256_final(bsq_sha256 *s, uint8_t out[32]);

#endif
