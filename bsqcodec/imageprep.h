/* Image preparation for dataset tokenization: the first picture of a file,
 * resized so that its short side is N, then centre-cropped to N x N.
 *
 * Resampling: resize.h (swscale Catmull-Rom bicubic per RGB plane,
 * bit-exact, anti-aliased when shrinking). An image already N pixels on its
 * short side is not resampled.
 *
 * Sizes: with W <= H the image becomes N x floor(H * N / W) (and the other
 * way round), as torchvision's Resize(N) computes it; the crop starts at
 * floor((long side - N) / 2). */
#ifndef BSQCODEC_IMAGEPREP_H
#define BSQCODEC_IMAGEPREP_H

#include <stdint.h>

#include "bsq.h"

/* One line describing the above, recorded in the manifests. */
#define BSQ_PREP_DESCRIPTION                                                                   \
    "short side to N by swscale bicubic (B=0, C=0.5; per RGB plane; anti-aliased when "        \
    "shrinking), long side floor(long*N/short), centre crop N x N at floor((long-N)/2)"

/* Scratch buffers and a scaler, reused from image to image. One per thread. */
typedef struct bsq_prep bsq_prep;

bsq_prep *bsq_prep_create(void);
void bsq_prep_destroy(bsq_prep *p);

/* Reads the first picture of `path` (anything FFmpeg decodes, rotation
 * applied; alpha dropped) into dst (N x N RGB24, N * 3 bytes per row) and
 * returns its size before resizing. Text files that FFmpeg would render as
 * ANSI art are refused as not images. */
bsq_status bsq_prep_image(bsq_prep *p, const char *path, int N, uint8_t *dst, int *width,
                          int *height, bsq_error *err);

/* The resize-and-crop step alone, on an RGB24 image (stride bytes per row). */
bsq_status bsq_prep_resize_crop(bsq_prep *p, const uint8_t *rgb, int width, int height,
                                size_t stride, int N, uint8_t *dst, bsq_error *err);

#endif
