/* One GOP of token frames <-> one payload: the prior, reset at the GOP's
 * start so the payload decodes on its own, drives the range coder over the
 * frames in order. */
#ifndef BSQ_GOP_H
#define BSQ_GOP_H

#include <stddef.h>
#include <stdint.h>

#include "codec/prior.h"

/* tokens: `frames` frames of `per_frame` tokens, frame-major. *payload is
 * malloc'd (free it). */
bsq_status bsq_gop_encode(bsq_prior *prior, const uint64_t *tokens, int frames, size_t per_frame,
                          uint8_t **payload, size_t *size, bsq_error *err);
/* The inverse. Damage (a payload that ends early, or leaves bytes or a
 * non-zero code behind) is an error: garbage is never returned as tokens. */
bsq_status bsq_gop_decode(bsq_prior *prior, const uint8_t *payload, size_t size, int frames,
                          size_t per_frame, uint64_t *tokens, bsq_error *err);

#endif
