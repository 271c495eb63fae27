/* Binary range coder: the parts off the per-bit hot path (see rangecoder.h). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "codec/rangecoder.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

void bsq_rc_enc_init(bsq_rc_encoder *enc)
{
    memset(enc, 0, sizeof *enc);
    enc->range = 0xFFFFFFFFu;
}

void bsq_rc_enc_free(bsq_rc_encoder *enc)
{
    free(enc->buf);
    enc->buf = NULL;
    enc->len = enc->cap = 0;
}

/* Appends one byte; on allocation failure remembers it and drops the rest
 * (finish reports it, so nothing is silently truncated). */
static void put_byte(bsq_rc_encoder *enc, uint8_t b)
{
    if (enc->len == enc->cap) {
        if (enc->failed)
            return;
        size_t cap = enc->cap ? enc->cap * 2 : 4096;
        uint8_t *buf = cap > enc->cap ? realloc(enc->buf, cap) : NULL;
        if (!buf) {
            enc->failed = 1;
            return;
        }
        enc->buf = buf;
        enc->cap = cap;
    }
    enc->buf[enc->len++] = b;
}

void bsq_rc_enc_flush_cache_(bsq_rc_encoder *enc, uint32_t carry)
{
    /* The first cache byte is the integer part of a value in [0, 1): always
     * 0 (intervals only nest, so no carry reaches it); it is not written. */
    if (enc->started)
        put_byte(enc, (uint8_t)(enc->cache + carry));
    enc->started = 1;
    for (; enc->pending; enc->pending--)
        put_byte(enc, (uint8_t)(0xFFu + carry));
}

bsq_status bsq_rc_enc_finish(bsq_rc_encoder *enc, uint8_t **out, size_t *out_len,
                             bsq_error *err)
{
    /* Five shifts push the cache, the pending bytes and all 4 bytes of low
     * out (the fifth leaves only a zero byte in the cache). Writing low
     * exactly lets the decoder check that its code register ends at 0. */
    for (int i = 0; i < 5; i++)
        bsq_rc_enc_shift_low_(enc);
    if (enc->failed) {
        bsq_rc_enc_free(enc);
        bsq_rc_enc_init(enc);
        return bsq_fail(err, BSQ_ERR_NOMEM, "range coder: out of memory for the output");
    }
    *out = enc->buf;
    *out_len = enc->len;
    enc->buf = NULL;
    bsq_rc_enc_init(enc);
    return BSQ_OK;
}

void bsq_rc_dec_init(bsq_rc_decoder *dec, const uint8_t *bytes, size_t len)
{
    dec->range = 0xFFFFFFFFu;
    dec->code = 0;
    dec->overrun = 0;
    dec->cur = len ? bytes : NULL;
    dec->end = len ? bytes + len : NULL;
    for (int i = 0; i < 4; i++)
        dec->code = (dec->code << 8) | bsq_rc_dec_byte_(dec);
}

bsq_status bsq_rc_dec_finish(const bsq_rc_decoder *dec, bsq_error *err)
{
    if (dec->overrun)
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "coded data truncated or corrupt: decoder ran %llu bytes past the end",
                        (unsigned long long)dec->overrun);
    if (dec->cur != dec->end)
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "coded data corrupt: %zu bytes left after the last symbol",
                        bsq_rc_dec_remaining(dec));
    if (dec->code != 0)
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "coded data corrupt: final code 0x%08x is not 0", (unsigned)dec->code);
    return BSQ_OK;
}
