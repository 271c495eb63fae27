#include "codec/gop.h"

#include "error.h"

bsq_status bsq_gop_encode(bsq_prior *prior, const uint64_t *tokens, int frames, size_t per_frame,
                          uint8_t **payload, size_t *size, bsq_error *err)
{
    bsq_rc_encoder rc;
    bsq_rc_enc_init(&rc);
    prior->ops->reset(prior);
    for (int f = 0; f < frames; f++) {
        bsq_status st = prior->ops->encode_frame(prior, tokens + (size_t)f * per_frame, &rc, err);
        if (st != BSQ_OK) {
            bsq_rc_enc_free(&rc);
            prior->ops->reset(prior);
            return st;
        }
    }
    return bsq_rc_enc_finish(&rc, payload, size, err);
}

bsq_status bsq_gop_decode(bsq_prior *prior, const uint8_t *payload, size_t size, int frames,
                          size_t per_frame, uint64_t *tokens, bsq_error *err)
{
    bsq_rc_decoder rc;
    bsq_rc_dec_init(&rc, payload, size);
    prior->ops->reset(prior);
    bsq_status st = BSQ_OK;
    for (int f = 0; f < frames && st == BSQ_OK; f++)
        st = prior->ops->decode_frame(prior, tokens + (size_t)f * per_frame, &rc, err);
    if (st == BSQ_OK)
        st = bsq_rc_dec_finish(&rc, err);
    if (st != BSQ_OK)
        prior->ops->reset(prior); /* its state is undefined after a failure */
    return st;
}
