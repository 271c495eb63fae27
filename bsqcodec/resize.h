/* Resampling of RGB24 pictures, shared by dataset preparation (tokenize)
 * and the codec's coded size (encode --scale, and decode back to the
 * presentation size).
 *
 * libswscale bicubic with B = 0, C = 0.5 (Keys' kernel with a = -0.5, i.e.
 * Catmull-Rom, the kernel of PIL's BICUBIC), applied to each of the R, G
 * and B planes separately on the 8-bit gamma-encoded values (no colour-space
 * round trip), with accurate rounding and swscale's bit-exact C code paths,
 * so every machine makes the same pixels. When shrinking, swscale stretches
 * the kernel by the scale factor, which low-pass filters the picture first
 * (anti-aliased, as PIL and torchvision's antialias=True do). */
#ifndef BSQCODEC_RESIZE_H
#define BSQCODEC_RESIZE_H

#include <stddef.h>
#include <stdint.h>

#include "bsq.h"

/* Scratch planes and cached scalers, reused from picture to picture; one
 * per calling thread. `threads` (1..3; others are clamped) scale the R, G
 * and B planes side by side: the same pixels whatever the count. */
typedef struct bsq_resizer bsq_resizer;

bsq_resizer *bsq_resizer_create(int threads);
void bsq_resizer_destroy(bsq_resizer *r);

/* Resamples src (sw x sh, sstride bytes per row) to dst (dw x dh, dstride
 * bytes per row). Sizes up to 65536 a side; equal sizes copy. */
bsq_status bsq_resize_rgb8(bsq_resizer *r, const uint8_t *src, int sw, int sh, size_t sstride,
                           uint8_t *dst, int dw, int dh, size_t dstride, bsq_error *err);

/* The same into a picture the resizer keeps: *out is that picture (dw * 3
 * bytes per row, valid until the next call), or src itself when the sizes
 * are equal. For callers that resample every frame of a stream. */
bsq_status bsq_resize_frame(bsq_resizer *r, const uint8_t *src, int sw, int sh, size_t sstride,
                            int dw, int dh, const uint8_t **out, bsq_error *err);

#endif
