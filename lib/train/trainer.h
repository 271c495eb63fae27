/* Training BSQ-ViT models (internal to the project: bsqcodec train and the
 * tests use it). One optimisation step takes a batch of pixels, runs the
 * model forward keeping every activation the backward pass needs, computes
 * the losses, back-propagates through the same ops table the inference
 * graph uses (backend.h: the forward ops plus their backward passes), and
 * updates the weights with AdamW. */
#ifndef BSQ_TRAINER_H
#define BSQ_TRAINER_H

#include <stdint.h>

#include "bsq.h"

typedef struct bsq_train_options {
    double lr;             /* peak learning rate */
    double min_lr;         /* the cosine's floor */
    int warmup;            /* linear warm-up steps */
    int steps;             /* total steps (the schedule's length) */
    double beta1, beta2, adam_eps, weight_decay; /* AdamW (decay on matrices only) */
    double clip;           /* global gradient-norm clip; 0: none */
    double ema;            /* EMA decay of the weights (0: none) */
    /* losses */
    double l1, mse;        /* on pixels in [-1, 1] */
    double entropy;        /* weight of H_sample - H_codebook (spec §7) */
    double entropy_start;  /* weight at step 0, decaying linearly to `entropy` ... */
    int entropy_decay;     /* ... over this many steps */
    double inv_temp;       /* inverse temperature of the soft assignment */
    double commit;         /* commitment: mean ||u - codes||^2 */
    uint64_t seed;         /* initial weights */
} bsq_train_options;

void bsq_train_options_default(bsq_train_options *o);

typedef struct bsq_train_stats {
    double loss, l1, mse, psnr;          /* psnr of this batch, 8-bit scale */
    double h_sample, h_codebook;         /* entropy terms (nats, summed over groups) */
    double commit;
    double grad_norm;                    /* before clipping */
    double lr;
    double bit_balance;                  /* mean over bits of min(p1, 1-p1) * 2: 1 = balanced */
} bsq_train_stats;

typedef struct bsq_trainer bsq_trainer;

/* A trainer for a model of configuration `cfg`, starting from `init`'s
 * weights when given (it must have the same configuration, except that a
 * video model may start from an image model: temporal embeddings start at
 * zero), else from random weights drawn from options->seed. */
bsq_status bsq_trainer_create(const bsq_config *cfg, const bsq_model *init,
                              const bsq_train_options *options, int threads,
                              bsq_trainer **out, bsq_error *err);
void bsq_trainer_destroy(bsq_trainer *t);

/* One step on pixels [seqs][3][frames][H][W] (the model's size, frames <=
 * num_frames). */
bsq_status bsq_trainer_step(bsq_trainer *t, const float *pixels, int seqs, int frames,
                            bsq_train_stats *stats, bsq_error *err);
/* Forward and backward only (no update): fills the gradient of the loss
 * with respect to every parameter and returns the loss; for tests. */
bsq_status bsq_trainer_gradients(bsq_trainer *t, const float *pixels, int seqs, int frames,
                                 bsq_train_stats *stats, bsq_error *err);
/* The parameter and gradient blocks, laid out as the model's (model.h). */
float *bsq_trainer_params(bsq_trainer *t, size_t *count);
const float *bsq_trainer_grads(const bsq_trainer *t);
int64_t bsq_trainer_step_count(const bsq_trainer *t);

/* A model from the current weights (ema = 0) or their EMA (ema = 1). */
bsq_status bsq_trainer_model(const bsq_trainer *t, int ema, bsq_model **out, bsq_error *err);

/* The whole state (weights, EMA, AdamW moments, step, options, the
 * caller's string `extra`) as safetensors, written atomically; and back. */
bsq_status bsq_trainer_save(const bsq_trainer *t, const char *path, const char *extra,
                            bsq_error *err);
/* Restores into a trainer created with the same configuration; *extra
 * (malloc'd, may be NULL) receives the saved string. */
bsq_status bsq_trainer_load(bsq_trainer *t, const char *path, char **extra, bsq_error *err);

#endif
