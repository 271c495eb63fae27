/* Probability models for token bits ("priors"), behind one interface so the
 * context-adaptive baseline and a learned prior plug into the same coder.
 *
 * A prior codes whole frames: it owns the order in which a frame's bits are
 * visited (raster, checkerboard, ...) and calls the binary arithmetic coder
 * for each bit with an integer probability. Everything it computes is
 * integer arithmetic, so an encoder and a decoder on any machine, compiler
 * or thread count agree bit for bit. It remembers what it has coded since
 * the last reset (earlier frames of the GOP) as context. */
#ifndef BSQ_PRIOR_H
#define BSQ_PRIOR_H

#include <stddef.h>
#include <stdint.h>

#include "bsq.h"
#include "codec/rangecoder.h"

/* One frame's token grid: tiles_y x tiles_x tiles of grid_h x grid_w tokens
 * of L bits, in layout order (tile row, tile column, grid row, grid column),
 * as bsq_tokens holds them for one frame. */
typedef struct bsq_frame_geom {
    int L;
    int tiles_y, tiles_x;
    int grid_h, grid_w;
} bsq_frame_geom;

typedef struct bsq_prior bsq_prior;

typedef struct bsq_prior_ops {
    const char *name; /* "context", "learned", ... as recorded in files */
    /* Forgets all history: the next frame opens a GOP (decodes on its own). */
    void (*reset)(bsq_prior *p);
    /* Codes the `count` tokens of one frame (count = tiles * grid), then
     * remembers them as the previous frame. */
    bsq_status (*encode_frame)(bsq_prior *p, const uint64_t *tokens, bsq_rc_encoder *rc,
                               bsq_error *err);
    bsq_status (*decode_frame)(bsq_prior *p, uint64_t *tokens, bsq_rc_decoder *rc,
                               bsq_error *err);
    void (*destroy)(bsq_prior *p);
} bsq_prior_ops;

struct bsq_prior {
    const bsq_prior_ops *ops;
    bsq_frame_geom geom;
    uint8_t fingerprint[16]; /* identifies the model and its parameters */
};

/* The context-adaptive baseline (codec/context_model.c). */
bsq_status bsq_prior_context_create(const bsq_frame_geom *geom, bsq_prior **out, bsq_error *err);

/* The learned prior: the same adaptive tables, with a trained network's
 * prediction (codec/prior_net.h) as one more input to the mixer. Takes
 * ownership of `net` (freed with the prior, or on failure). */
struct bsq_prior_net;
bsq_status bsq_prior_learned_create(const bsq_frame_geom *geom, struct bsq_prior_net *net,
                                    bsq_prior **out, bsq_error *err);

#endif
