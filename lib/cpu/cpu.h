/* The CPU backend: OpenBLAS for matrix products (single-threaded inside our
 * own pool) and vectorised C for everything else. */
#ifndef BSQ_CPU_H
#define BSQ_CPU_H

#include "backend.h"
#include "threadpool.h"

/* The packed matrix-product micro-kernel chosen for this CPU (gemm.c);
 * fn NULL means OpenBLAS does the products. */
typedef struct bsq_gemm_kernel {
    void (*fn)(int kc, const float *a, const float *b, float *c, size_t ldc, int m, int n);
    int mr, nr;
} bsq_gemm_kernel;

typedef struct bsq_packed_w {
    const float *w;
    int k, n;
    float *data;
} bsq_packed_w;

typedef struct bsq_cpu {
    bsq_backend base;
    bsq_pool *pool;
    int threads;
    float **scratch;      /* per-thread attention scratch */
    size_t scratch_len;   /* floats per thread */
    bsq_gemm_kernel gemm;
    float **gemm_scratch; /* per-thread packing buffers */
    float *packed;        /* the input of a product, packed (grows) */
    size_t packed_len;
    float **kv_pack;      /* per-thread packed keys and values of one head */
    size_t kv_pack_len;   /* floats per thread */
    const float *weights_lo, *weights_hi; /* the model's immutable weights */
    bsq_packed_w *packed_w;               /* weight matrices packed once */
    size_t npacked_w, cap_packed_w;
    float *reduce;        /* partial sums of the backward reductions (grows) */
    size_t reduce_len;
    float **bwd_scratch;  /* per-thread attention backward scratch (grows) */
    size_t bwd_scratch_len;
    int failed;           /* an op ran out of memory: sync reports it */
} bsq_cpu;

/* Single-threaded C[m][n] += A[m][k] op(B), op(B) = B^T (B [n][k]) when
 * b_trans, else B [k][n]; m <= BSQ_GEMM_MAX_M, n <= BSQ_GEMM_MAX_N; scratch
 * holds bsq_cpu_gemm_scratch() floats. */
#define BSQ_GEMM_MAX_M 256
#define BSQ_GEMM_MAX_N 256
void bsq_cpu_gemm(const bsq_gemm_kernel *kn, int m, int n, int k, const float *a, size_t lda,
                  const float *b, size_t ldb, int b_trans, float *c, size_t ldc, float *scratch);
/* The same with op(A) = A^T (A stored [k][m]) when a_trans. */
void bsq_cpu_gemm_t(const bsq_gemm_kernel *kn, int m, int n, int k, const float *a, size_t lda,
                    int a_trans, const float *b, size_t ldb, int b_trans, float *c, size_t ldc,
                    float *scratch);

/* B packed once into NR-column micro-panels over its full depth k
 * ([n/NR][k][NR]; b_trans: B given as [n][k], else [k][n]), and products
 * C[m][n] += A[m][k] B against it (A packed per call into scratch). Only
 * with a packed kernel (kn->fn); pack size 0 means none. */
size_t bsq_cpu_pack_b_size(const bsq_gemm_kernel *kn, int n, int k);
void bsq_cpu_pack_b_full(const bsq_gemm_kernel *kn, const float *b, size_t ldb, int n, int k,
                         int b_trans, float *out);
void bsq_cpu_gemm_prepacked(const bsq_gemm_kernel *kn, int m, int n, int k, const float *a,
                            size_t lda, const float *pb, float *c, size_t ldc, float *scratch);
/* The same against rows [koff, koff + k) of B packed over `depth` rows. */
void bsq_cpu_gemm_prepacked_offset(const bsq_gemm_kernel *kn, int m, int n, int k, const float *a,
                                   size_t lda, const float *pb, size_t depth, size_t koff, float *c,
                                   size_t ldc, float *scratch);

/* Selects the matrix-product kernel; the packing buffers it needs per
 * thread, in floats. */
void bsq_cpu_gemm_init(bsq_cpu *cpu);
void bsq_cpu_gemm_release(bsq_cpu *cpu);
size_t bsq_cpu_gemm_scratch(void);

/* Vectorised elementwise kernels (kernels.c). Accurate to a few ulp of
 * float: exp within 2e-7 relative, erf within 2e-7 absolute. */
void bsq_cpu_exp_inplace(float *x, size_t n);
float bsq_cpu_max_span(const float *x, size_t n, float start);
float bsq_cpu_exp_sum_span(float *x, size_t n, float m);
void bsq_cpu_gelu_span(float *x, size_t n);
void bsq_cpu_tanh_span(float *x, size_t n);
void bsq_cpu_layernorm_row(const float *x, const float *w, const float *b, float *y, int d,
                           float eps);

/* Ops registered in the table (one file per idea). */
void bsq_cpu_linear(bsq_backend *be, const float *x, const float *w, const float *bias, float *y,
                    size_t rows, int k, int n);
void bsq_cpu_attention(bsq_backend *be, const bsq_attention_args *a);

/* Backward passes (backward.c, attention_backward.c). */
void bsq_cpu_matmul(bsq_backend *be, int a_trans, int b_trans, size_t m, size_t n, size_t k,
                    const float *a, size_t lda, const float *b, size_t ldb, float *c, size_t ldc,
                    int accumulate);
void bsq_cpu_attention_backward(bsq_backend *be, const bsq_attention_args *a, const float *dout,
                                float *dq, float *dk, float *dv);
void bsq_cpu_colsum(bsq_backend *be, const float *x, float *out, size_t rows, int n);
void bsq_cpu_layernorm_backward(bsq_backend *be, const float *x, const float *w, const float *dy,
                                float *dx, float *dw, float *db, size_t rows, int d, float eps);
void bsq_cpu_gelu_backward(bsq_backend *be, const float *x, float *dy, size_t n);
void bsq_cpu_tanh_backward(bsq_backend *be, const float *y, float *dy, size_t n);
void bsq_cpu_add_pos_backward(bsq_backend *be, const float *dx, float *dpos, float *dtpos,
                              int seqs, int frames, int tokens, int d, int t0);
void bsq_cpu_gelu_grad_span(const float *x, float *dy, size_t n);
void bsq_cpu_tanh_grad_span(const float *y, float *dy, size_t n);

/* Attention tile sizes; scratch per thread is sized from them. */
#define BSQ_ATT_QB 64
#define BSQ_ATT_KB 256
#define BSQ_ATT_MAX_HEAD_DIM 256

#endif
