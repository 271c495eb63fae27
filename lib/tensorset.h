/* A named collection of tensors: what a safetensors file or an official
 * checkpoint holds, before it becomes a model. Tensors either borrow their
 * bytes (from a memory-mapped file) or own them (heap). */
#ifndef BSQ_TENSORSET_H
#define BSQ_TENSORSET_H

#include <stddef.h>
#include <stdint.h>

#include "bsq.h"

typedef enum bsq_dt {
    BSQ_DT_F32, BSQ_DT_F16, BSQ_DT_BF16, BSQ_DT_F64,
    BSQ_DT_I64, BSQ_DT_I32, BSQ_DT_I16, BSQ_DT_I8, BSQ_DT_U8, BSQ_DT_BOOL
} bsq_dt;

#define BSQ_MAX_DIMS 8

typedef struct bsq_tensor {
    char *name;
    bsq_dt dtype;
    int ndim;
    int64_t shape[BSQ_MAX_DIMS];
    const void *data;   /* nbytes bytes, little-endian, possibly unaligned */
    size_t nbytes;
} bsq_tensor;

typedef struct bsq_tensorset {
    bsq_tensor *items;
    size_t count, cap;
    char **meta_keys, **meta_values; /* string metadata, meta_count pairs */
    size_t meta_count;
    void *map;          /* memory-mapped file the tensors may point into */
    size_t map_len;
    void **owned;       /* heap blocks freed with the set */
    size_t owned_count, owned_cap;
} bsq_tensorset;

void bsq_tensorset_init(bsq_tensorset *ts);
void bsq_tensorset_free(bsq_tensorset *ts);

/* Adds a tensor. With `take` non-zero the set frees `data` (malloc'd) later. */
bsq_status bsq_tensorset_add(bsq_tensorset *ts, const char *name, bsq_dt dtype,
                             int ndim, const int64_t *shape, const void *data,
                             size_t nbytes, int take, bsq_error *err);
bsq_status bsq_tensorset_set_meta(bsq_tensorset *ts, const char *key,
                                  const char *value, bsq_error *err);
const char *bsq_tensorset_meta(const bsq_tensorset *ts, const char *key);
const bsq_tensor *bsq_tensorset_find(const bsq_tensorset *ts, const char *name);
/* Keeps a heap block alive as long as the set (takes ownership). */
bsq_status bsq_tensorset_own(bsq_tensorset *ts, void *block, bsq_error *err);

size_t bsq_dt_size(bsq_dt dt);
const char *bsq_dt_name(bsq_dt dt);        /* safetensors spelling: "F32" */
int bsq_dt_from_name(const char *name, bsq_dt *out);
int64_t bsq_tensor_numel(const bsq_tensor *t);
/* Converts a floating tensor to f32 (out has numel entries). */
bsq_status bsq_tensor_to_f32(const bsq_tensor *t, float *out, bsq_error *err);

/* IEEE half and bfloat16 conversions (round to nearest even). */
float bsq_f16_to_f32(uint16_t h);
uint16_t bsq_f32_to_f16(float f);
float bsq_bf16_to_f32(uint16_t h);
uint16_t bsq_f32_to_bf16(float f);

#endif
