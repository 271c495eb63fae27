/* A loaded BSQ-ViT model: configuration plus every parameter as f32 in one
 * host block, named and shaped as in the official state dict. */
#ifndef BSQ_MODEL_H
#define BSQ_MODEL_H

#include "bsq.h"
#include "tensorset.h"

typedef struct bsq_block_w {
    const float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *out_w, *out_b;
    const float *ln2_w, *ln2_b, *fc_w, *fc_b, *proj_w, *proj_b;
} bsq_block_w;

typedef struct bsq_stack_w {
    const float *pos, *tpos; /* tpos NULL for image models */
    const float *ln_pre_w, *ln_pre_b, *ln_post_w, *ln_post_b;
    bsq_block_w *blocks;     /* cfg.layers entries */
} bsq_stack_w;

/* Pointers to every parameter, in some memory space (host or device). */
typedef struct bsq_model_w {
    const float *embed_w;
    bsq_stack_w enc, dec;
    const float *quant_w, *quant_b, *post_w, *post_b;
    const float *ffn_w, *ffn_b, *out_w, *out_b;
} bsq_model_w;

typedef struct bsq_param {
    char name[80];
    int ndim;
    int64_t shape[2];
    size_t offset, count; /* in floats, within the parameter block */
} bsq_param;

#include <pthread.h>

struct bsq_model {
    bsq_config cfg;
    bsq_param *params;
    size_t nparams;
    size_t total;    /* floats in the block */
    float *data;     /* the parameter block (64-byte aligned) */
    bsq_model_w w;   /* pointers into data */
    pthread_mutex_t fp_lock; /* guards the lazily computed fingerprint */
    int fp_done;
    uint8_t fp[32];
};

/* Builds a model from named tensors (safetensors or checkpoint contents):
 * every expected tensor must be present with its exact shape; unknown ones
 * are refused by name (the quantizer's integer buffers excepted). */
bsq_status bsq_model_from_tensors(const bsq_tensorset *ts, const bsq_config *cfg,
                                  bsq_model **out, bsq_error *err);
/* A model of the given configuration with zeroed parameters. */
bsq_status bsq_model_alloc(const bsq_config *cfg, bsq_model **out, bsq_error *err);
/* Points `w` at the parameters as laid out from `base` (the model's own
 * block, or a copy of it in device memory). w->enc/dec.blocks are
 * malloc'd: release with bsq_model_w_free. */
bsq_status bsq_model_bind(const bsq_model *m, const float *base, bsq_model_w *w, bsq_error *err);
void bsq_model_w_free(bsq_model_w *w);
/* The parameters as a tensor set (f32 tensors borrow the model's data, other
 * dtypes are converted copies), with "config" and "format" metadata. */
bsq_status bsq_model_to_tensors(const bsq_model *m, bsq_dtype dtype, bsq_tensorset *ts,
                                bsq_error *err);

#endif
