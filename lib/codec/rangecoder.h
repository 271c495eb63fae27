/* Binary arithmetic (range) coder with integer probabilities.
 *
 * Design (LZMA-style): 32-bit range kept in [2^24, 2^32) by byte-wise
 * renormalisation, 64-bit low whose bit 32 is the carry, and a cached byte
 * plus a count of pending 0xFF bytes so a carry reaches bytes not yet
 * written. Only integer +, -, *, shifts and compares on fixed-width types:
 * the bytes are the same on every platform, compiler and optimisation level.
 *
 * Probabilities: p1 = P(bit = 1) in 1/65536 units, 1 <= p1 <= 65535
 * (BSQ_RC_PROB_MIN..BSQ_RC_PROB_MAX). Both sub-intervals then stay >= 256
 * wide, so two renormalisation steps always suffice. A p1 outside that range
 * is a caller bug: output is then undefined but nothing loops or overflows.
 *
 * Stream layout: the encoder's first byte is always 0 and is not written;
 * finish writes the 4 bytes of low. A decoder therefore consumes exactly the
 * encoder's bytes: on a valid stream it never reads past the end, and after
 * the last symbol its code register is 0 (bsq_rc_dec_finish checks both).
 * Past the end it reads zeros and counts them (bsq_rc_dec_overrun), so
 * truncated or corrupt input decodes to something in bounded time, is never
 * read out of bounds, and is reported. */
#ifndef BSQ_RANGECODER_H
#define BSQ_RANGECODER_H

#include <stddef.h>
#include <stdint.h>

#include "bsq.h"

#define BSQ_RC_PROB_BITS 16
#define BSQ_RC_PROB_ONE (1u << BSQ_RC_PROB_BITS)
#define BSQ_RC_PROB_MIN 1u
#define BSQ_RC_PROB_MAX (BSQ_RC_PROB_ONE - 1u)
#define BSQ_RC_TOP (1u << 24) /* renormalise when range drops below */

/* ------------------------------------------------------------------ encoder */

typedef struct bsq_rc_encoder {
    uint64_t low;     /* bits 0..31: interval start; bit 32: carry */
    uint32_t range;
    uint8_t cache;    /* last byte not yet written (a carry may still reach it) */
    int started;      /* 0 until the always-zero first byte has been dropped */
    uint64_t pending; /* 0xFF bytes after cache, also waiting for a carry */
    uint8_t *buf;     /* growable output, malloc'd */
    size_t len, cap;
    int failed;       /* allocation failed: output incomplete, finish reports it */
} bsq_rc_encoder;

/* Starts an empty stream. No allocation until the first byte. */
void bsq_rc_enc_init(bsq_rc_encoder *enc);
/* Writes the final 4 bytes and hands the stream over: *out (malloc'd, never
 * NULL on success; free() it) and *out_len (>= 4, even with no symbols).
 * The encoder is left empty (init again to reuse). Fails with BSQ_ERR_NOMEM
 * if any allocation failed on the way; the buffer is then freed. */
bsq_status bsq_rc_enc_finish(bsq_rc_encoder *enc, uint8_t **out, size_t *out_len,
                             bsq_error *err);
/* Frees the buffer without finishing (error paths). */
void bsq_rc_enc_free(bsq_rc_encoder *enc);
/* Exactly the bytes bsq_rc_enc_finish would return if called now. */
static inline uint64_t bsq_rc_enc_size(const bsq_rc_encoder *enc)
{
    return (uint64_t)enc->len + (enc->started ? 1u : 0u) + enc->pending + 4u;
}

/* Out of line: writes cache and pending bytes (growing the buffer). */
void bsq_rc_enc_flush_cache_(bsq_rc_encoder *enc, uint32_t carry);

/* Moves the top byte of low out: it is final unless it is 0xFF with no carry
 * yet (a later carry could still turn it into 0x00 and bump the byte before). */
static inline void bsq_rc_enc_shift_low_(bsq_rc_encoder *enc)
{
    if ((uint32_t)enc->low < 0xFF000000u || (enc->low >> 32) != 0) {
        bsq_rc_enc_flush_cache_(enc, (uint32_t)(enc->low >> 32));
        enc->cache = (uint8_t)(enc->low >> 24);
    } else {
        enc->pending++;
    }
    enc->low = (enc->low & 0x00FFFFFFu) << 8;
}

static inline void bsq_rc_enc_normalize_(bsq_rc_encoder *enc)
{
    /* at most two steps: range >= 256 after any valid symbol */
    if (enc->range < BSQ_RC_TOP) {
        enc->range <<= 8;
        bsq_rc_enc_shift_low_(enc);
        if (enc->range < BSQ_RC_TOP) {
            enc->range <<= 8;
            bsq_rc_enc_shift_low_(enc);
        }
    }
}

/* One coded bit's arithmetic on a copy of the state (hot loops keep low and
 * range in registers, and store them back to renormalise, below). bit is 0
 * or 1. Written without a branch on the bit: coded bits are hard to
 * predict. */
static inline void bsq_rc_encode_step(uint64_t *low, uint32_t *range, int bit, uint32_t p1)
{
    const uint32_t bound = (*range >> BSQ_RC_PROB_BITS) * p1;
    const uint32_t zero = (uint32_t)bit - 1u; /* all ones when bit is 0 */
    *low += bound & zero;
    *range = bit ? bound : *range - bound;
}

/* Codes one bit (0 or 1) with P(bit = 1) = p1 / 65536. Bit 1 takes the low
 * part. */
static inline void bsq_rc_encode(bsq_rc_encoder *enc, int bit, uint32_t p1)
{
    bsq_rc_encode_step(&enc->low, &enc->range, bit, p1);
    bsq_rc_enc_normalize_(enc);
}

/* Codes one equiprobable bit (half the range, no multiply). */
static inline void bsq_rc_encode_bypass(bsq_rc_encoder *enc, int bit)
{
    uint32_t bound = enc->range >> 1;
    if (bit) {
        enc->range = bound;
    } else {
        enc->low += bound;
        enc->range -= bound;
    }
    bsq_rc_enc_normalize_(enc);
}

/* Codes the low n bits of value (0 <= n <= 64), most significant first, as
 * bypass bits. */
static inline void bsq_rc_encode_bits(bsq_rc_encoder *enc, uint64_t value, int n)
{
    for (int i = n - 1; i >= 0; i--)
        bsq_rc_encode_bypass(enc, (int)((value >> i) & 1u));
}

/* ------------------------------------------------------------------ decoder */

typedef struct bsq_rc_decoder {
    uint32_t range;
    uint32_t code;       /* stream value minus interval start */
    const uint8_t *cur;  /* next byte to read; never moves past end */
    const uint8_t *end;
    uint64_t overrun;    /* zero bytes supplied past the end */
} bsq_rc_decoder;

/* Starts decoding bytes[0..len) (bytes may be NULL when len is 0). The
 * bytes must stay valid while decoding. */
void bsq_rc_dec_init(bsq_rc_decoder *dec, const uint8_t *bytes, size_t len);

static inline uint32_t bsq_rc_dec_byte_(bsq_rc_decoder *dec)
{
    if (dec->cur < dec->end)
        return *dec->cur++;
    dec->overrun++;
    return 0;
}

static inline void bsq_rc_dec_normalize_(bsq_rc_decoder *dec)
{
    if (dec->range < BSQ_RC_TOP) {
        dec->range <<= 8;
        dec->code = (dec->code << 8) | bsq_rc_dec_byte_(dec);
        if (dec->range < BSQ_RC_TOP) {
            dec->range <<= 8;
            dec->code = (dec->code << 8) | bsq_rc_dec_byte_(dec);
        }
    }
}

/* One decoded bit's arithmetic on a copy of the state (see
 * bsq_rc_encode_step). */
static inline int bsq_rc_decode_step(uint32_t *code, uint32_t *range, uint32_t p1)
{
    const uint32_t bound = (*range >> BSQ_RC_PROB_BITS) * p1;
    const uint32_t bit = *code < bound, zero = bit - 1u;
    *code -= bound & zero;
    *range = bit ? bound : *range - bound;
    return (int)bit;
}

/* Decodes one bit coded with the same p1. */
static inline int bsq_rc_decode(bsq_rc_decoder *dec, uint32_t p1)
{
    int bit = bsq_rc_decode_step(&dec->code, &dec->range, p1);
    bsq_rc_dec_normalize_(dec);
    return bit;
}

static inline int bsq_rc_decode_bypass(bsq_rc_decoder *dec)
{
    uint32_t bound = dec->range >> 1;
    int bit;
    if (dec->code < bound) {
        dec->range = bound;
        bit = 1;
    } else {
        dec->code -= bound;
        dec->range -= bound;
        bit = 0;
    }
    bsq_rc_dec_normalize_(dec);
    return bit;
}

static inline uint64_t bsq_rc_decode_bits(bsq_rc_decoder *dec, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 1) | (uint64_t)bsq_rc_decode_bypass(dec);
    return v;
}

/* Nonzero once the decoder has read past the end of its bytes (the stream
 * is truncated or corrupt, or more symbols were decoded than were coded). */
static inline int bsq_rc_dec_overrun(const bsq_rc_decoder *dec) { return dec->overrun != 0; }

/* Bytes not yet consumed. */
static inline size_t bsq_rc_dec_remaining(const bsq_rc_decoder *dec)
{
    return (size_t)(dec->end - dec->cur);
}

/* After the last symbol: BSQ_OK when the stream was consumed exactly (no
 * overrun, no bytes left, code register 0), else BSQ_ERR_FORMAT with a
 * message. A corrupt stream passes this by chance with probability about
 * 2^-24 or less; containers add their own checksums. */
bsq_status bsq_rc_dec_finish(const bsq_rc_decoder *dec, bsq_error *err);

#endif
