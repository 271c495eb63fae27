/* Synthetic token frames for the coder's tests and benchmark (the same data
 * in both, so figures from one explain the other). */
#ifndef BSQ_SYNTH_TOKENS_H
#define BSQ_SYNTH_TOKENS_H

#include <stdint.h>

#include "codec/prior.h"

/* splitmix64: the fixed integer PRNG every synthetic input comes from. */
uint64_t synth_rnd(uint64_t *state);

enum synth_source {
    SYNTH_UNIFORM, /* i.i.d. uniform bits */
    SYNTH_FLIP,    /* a random first frame, then 2% of bits flipped per frame */
    SYNTH_REGIONS  /* moving Voronoi regions of one token each, 3% bit noise */
};

/* Fills out[frames * tokens per frame] (layout order, frame-major);
 * `regions` sites per tile for SYNTH_REGIONS (at most 64). */
void synth_token_frames(enum synth_source src, const bsq_frame_geom *g, int frames, int regions,
                        uint64_t seed, uint64_t *out);

#endif
