/* The CPU backend: OpenBLAS for matrix products (single-threaded inside our
 * own pool) and vectorised C for everything else. */
#ifndef BSQ_CPU_H
#define BSQ_CPU_H

#include "backend.h"
#include "threadpool.h"

typedef struct bsq_cpu {
    bsq_backend base;
    bsq_pool *pool;
    int threads;
    float **scratch;     /* per-thread attention scratch */
    size_t scratch_len;  /* floats per thread */
} bsq_cpu;

/* Vectorised elementwise kernels (kernels.c). Accurate to a few ulp of
 * float: exp within 2e-7 relative, erf within 2e-7 absolute. */
void bsq_cpu_exp_inplace(float *x, size_t n);
void bsq_cpu_gelu_span(float *x, size_t n);
void bsq_cpu_tanh_span(float *x, size_t n);
void bsq_cpu_layernorm_row(const float *x, const float *w, const float *b, float *y, int d,
                           float eps);

/* Ops registered in the table (one file per idea). */
void bsq_cpu_linear(bsq_backend *be, const float *x, const float *w, const float *bias, float *y,
                    size_t rows, int k, int n);
void bsq_cpu_attention(bsq_backend *be, const bsq_attention_args *a);

/* Attention tile sizes; scratch per thread is sized from them. */
#define BSQ_ATT_QB 64
#define BSQ_ATT_KB 256
#define BSQ_ATT_MAX_HEAD_DIM 256

#endif
