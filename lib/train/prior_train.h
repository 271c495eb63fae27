/* Training the learned prior's network (codec/prior_net.h) on token
 * sequences: floating point with Adam on the cross-entropy of every bit,
 * then quantisation to the integer network the coder runs. */
#ifndef BSQ_PRIOR_TRAIN_H
#define BSQ_PRIOR_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "bsq.h"
#include "codec/prior.h"

/* Token frames: `frames` frames of one geometry, frame-major; frame f has
 * the previous frame as context unless f % gop == 0 (a GOP starts). */
typedef struct bsq_prior_clip {
    bsq_frame_geom geom;
    const uint64_t *tokens;
    int frames, gop;
} bsq_prior_clip;

typedef struct bsq_prior_train_options {
    int hidden;        /* H (64) */
    int epochs;        /* passes over the tokens (4) */
    int batch;         /* tokens per step (256) */
    double lr;         /* Adam, decayed linearly to 0 (2e-3) */
    uint64_t seed;
    int verbose;       /* a line per epoch on stderr */
} bsq_prior_train_options;

void bsq_prior_train_options_default(bsq_prior_train_options *o);

typedef struct bsq_prior_train_report {
    size_t tokens;
    double float_bits;   /* mean bits per token of the float network, last epoch */
    double int_bits;     /* of the quantised network alone (no adaptation) */
} bsq_prior_train_report;

/* Trains on the clips and writes the integer network to `path`
 * (safetensors, atomically), tagged with the tokenizer's fingerprint. */
bsq_status bsq_prior_train(const bsq_prior_clip *clips, int nclips, int L,
                           const uint8_t tokenizer_fp[32], const bsq_prior_train_options *o,
                           const char *path, bsq_prior_train_report *report, bsq_error *err);

#endif
