/* Training data for bsqcodec train: folders of images and videos decoded
 * once through FFmpeg into memory (with 1/2 and 1/4 scale copies, so crops
 * see objects at several sizes), then random crops, flips and, for video
 * models, clips of T frames cut by background threads. Batch k depends only
 * on (seed, k), never on thread timing: a resumed run sees the same data. */
#ifndef BSQCODEC_TRAIN_DATA_H
#define BSQCODEC_TRAIN_DATA_H

#include <stdint.h>

#include "bsq.h"

typedef struct train_data train_data;

typedef struct train_data_options {
    int height, width; /* crop size: the model's */
    int frames;        /* 1 for image models */
    int batch;
    uint64_t seed;
    int threads;       /* background loader threads */
    int max_side;      /* sources larger than this are downscaled first (0: 2048) */
} train_data_options;

/* Loads every image and video under `paths` (files or folders, searched
 * recursively; unreadable files are reported and skipped). Fails when
 * nothing usable remains. */
bsq_status train_data_open(char *const *paths, int npaths, const train_data_options *o,
                           train_data **out, bsq_error *err);
/* The batch for step `step`: pixels [batch][3][frames][height][width] in
 * [-1, 1], valid until the next call. Blocks until it is ready. */
const float *train_data_batch(train_data *d, int64_t step);
void train_data_close(train_data *d);
/* What was loaded, for the log. */
void train_data_describe(const train_data *d, int *images, int *clips, int64_t *frames,
                         int *skipped);

#endif
