/* AdamW with warm-up and cosine decay, global gradient-norm clipping, and
 * an exponential moving average of the weights; and the training state on
 * disk (safetensors). */
#ifndef BSQ_TRAIN_OPTIM_H
#define BSQ_TRAIN_OPTIM_H

#include <stdint.h>

#include "model.h"
#include "train/trainer.h"

typedef struct bsq_optim bsq_optim;

bsq_status bsq_optim_create(const bsq_model *m, const bsq_train_options *o, bsq_optim **out,
                            bsq_error *err);
void bsq_optim_destroy(bsq_optim *opt);
/* The learning rate at a step. */
double bsq_optim_lr(const bsq_train_options *o, int64_t step);
/* One update of params from grad (grad is clipped in place). */
void bsq_optim_step(bsq_optim *opt, float *params, float *grad, int64_t step, double *grad_norm,
                    double *lr);
const float *bsq_optim_ema(const bsq_optim *opt); /* NULL without EMA */

bsq_status bsq_optim_save(const bsq_optim *opt, const bsq_model *m, int64_t step,
                          const char *extra, const char *path, bsq_error *err);
bsq_status bsq_optim_load(bsq_optim *opt, bsq_model *m, int64_t *step, char **extra,
                          const char *path, bsq_error *err);

#endif
