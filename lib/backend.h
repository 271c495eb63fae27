/* The operations table every backend implements (dav1d DSP-table / ggml
 * backend pattern). The model graph (graph.c) is written once against this
 * table; the CPU backend (cpu/) and the CUDA backend (kernels/) fill it.
 *
 * All tensors are row-major float32 buffers owned by the backend (host
 * memory for the CPU, device memory for CUDA); `rows` counts tokens. */
#ifndef BSQ_BACKEND_H
#define BSQ_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "bsq.h"
#include "tile_math.h"

typedef struct bsq_backend bsq_backend;

/* One attention call: `batch` independent sequences, each with nq query
 * rows and nk key/value rows, `heads` heads of `head_dim`. Row r of sequence
 * b of q starts at q + (b * q_seq + r) * q_stride (same for k, v, out with
 * their strides). Query row i sits at absolute position q_offset + i; with
 * block-causal masking (block > 0) it sees keys [0, (pos / block + 1) *
 * block), otherwise all nk. */
typedef struct bsq_attention_args {
    const float *q, *k, *v;
    float *out;
    size_t q_stride, kv_stride, out_stride; /* floats between rows */
    size_t q_seq, kv_seq, out_seq;          /* rows between sequences */
    int batch, nq, nk, heads, head_dim;
    int block;                              /* tokens per frame, 0 = full */
    int q_offset;
    float scale;
} bsq_attention_args;

typedef struct bsq_backend_ops {
    const char *name;
    int host_memory; /* buffers are host memory: model weights are used in place */
    int fp32;        /* computes in fp32 (else: bf16 products, fp32 accumulation) */
    size_t preferred_rows; /* tokens per graph call that keep this backend busy */
    void (*destroy)(bsq_backend *be);

    /* memory */
    float *(*alloc)(bsq_backend *be, size_t count); /* NULL on failure */
    void (*free)(bsq_backend *be, float *p);
    void (*upload)(bsq_backend *be, float *dst, const float *src, size_t count);
    void (*download)(bsq_backend *be, float *dst, const float *src, size_t count);
    /* Optional: host memory the device copies from and to fastest (pinned);
     * NULL means malloc and free. */
    void *(*host_alloc)(bsq_backend *be, size_t bytes);
    void (*host_free)(bsq_backend *be, void *p);
    /* Declares the model's parameter block: immutable while the backend
     * lives, so weight matrices inside it may be kept in a faster layout. */
    void (*set_weights)(bsq_backend *be, const float *block, size_t count);
    /* Optional: the graph call that follows multiplies at most `rows` x
     * `width` inputs, so scratch memory can be sized once for it. */
    void (*reserve)(bsq_backend *be, size_t rows, int width);
    /* Finishes all queued work; returns non-zero with a message on failure. */
    bsq_status (*sync)(bsq_backend *be, bsq_error *err);

    /* Optional, in backends whose ops only queue work (NULL where each op
     * has finished when it returns). A pipeline runs chunks alternately in
     * slots 0 and 1: a chunk's ops are queued between begin(slot) and
     * end(slot); its uploads wait only for the slot's previous chunk, and
     * its downloads run beside the next chunk's compute. finish(slot) waits
     * until the slot's chunk is done (host buffers it read or wrote are
     * free again) and reports the first failure since the last report. */
    void (*begin)(bsq_backend *be, int slot);
    void (*end)(bsq_backend *be, int slot);
    bsq_status (*finish)(bsq_backend *be, int slot, bsq_error *err);
    /* Optional: replay of recorded work (CUDA graphs) for fixed shapes.
     * replay(key) either queues the work recorded under `key` and returns 1,
     * or returns 0: the caller then queues the ops itself and calls
     * record_end(key), and the backend may record them for next time. A key
     * stands for every op, size and pointer in between (host pointers among
     * them are pinned buffers from host_alloc); none is an upload or
     * download. */
    int (*replay)(bsq_backend *be, uint64_t key);
    void (*record_end)(bsq_backend *be, uint64_t key);

    /* y[rows][n] = x[rows][k] * w[n][k]^T (+ bias[n] when not NULL) */
    void (*linear)(bsq_backend *be, const float *x, const float *w, const float *bias, float *y,
                   size_t rows, int k, int n);
    /* Optional fusions (NULL: the graph calls linear, then gelu or add):
     * y = GELU(x w^T + bias), and y += x w^T + bias (the residual add). */
    void (*linear_gelu)(bsq_backend *be, const float *x, const float *w, const float *bias,
                        float *y, size_t rows, int k, int n);
    void (*linear_residual)(bsq_backend *be, const float *x, const float *w, const float *bias,
                            float *y, size_t rows, int k, int n);
    /* y = LayerNorm(x) * w + b over the last dimension d (y may equal x) */
    void (*layernorm)(bsq_backend *be, const float *x, const float *w, const float *b, float *y,
                      size_t rows, int d, float eps);
    void (*gelu)(bsq_backend *be, float *x, size_t count);  /* exact, erf form */
    void (*tanh)(bsq_backend *be, float *x, size_t count);
    void (*add)(bsq_backend *be, float *y, const float *x, size_t count); /* y += x */
    /* x[b][t][j][:] += pos[j][:] + (tpos ? tpos[t0 + t][:] : 0) for each of
     * `seqs` sequences of `frames` frames of `tokens` tokens */
    void (*add_pos)(bsq_backend *be, float *x, const float *pos, const float *tpos, int seqs,
                    int frames, int tokens, int d, int t0);
    void (*attention)(bsq_backend *be, const bsq_attention_args *a);
    /* pixels [seqs][3][frames][H][W] (H = gh*p, W = gw*p) -> tokens
     * [seqs][frames][gh][gw][3*p*p], channel-major inside a patch */
    void (*patchify)(bsq_backend *be, const float *pix, float *tok, int seqs, int frames, int gh,
                     int gw, int p);
    /* the inverse, clamping to [-1, 1] when `clamp` is set */
    void (*unpatchify)(bsq_backend *be, const float *tok, float *pix, int seqs, int frames, int gh,
                       int gw, int p, int clamp);
    /* dst[r][0..cols) = src[r][0..cols) for `rows` rows with the given strides */
    void (*copy2d)(bsq_backend *be, float *dst, size_t dst_stride, const float *src,
                   size_t src_stride, size_t rows, size_t cols);
    /* x[0..count) = 0 */
    void (*zero)(bsq_backend *be, float *x, size_t count);
    /* Tiles (lib/tile_math.h): tiles [n][3][T][th][tw] of sequences s0 ..
     * s0+n-1 cut from images [B][3][T][H][W]; and back, blending them into
     * the images (img += their weighted share: images that started at zero
     * are complete once every sequence has been blended in). */
    void (*tile_extract)(bsq_backend *be, const float *img, float *tiles, const bsq_tile_grid *g,
                         int s0, int n);
    void (*tile_blend)(bsq_backend *be, const float *tiles, float *img, const bsq_tile_grid *g,
                       int s0, int n);
    /* Pixels (lib/pixel_math.h): interleaved RGB24 bytes [H][W][3] (in a
     * buffer from alloc) <-> planar [3][H][W] in [-1, 1]. */
    void (*rgb8_to_planar)(bsq_backend *be, const void *rgb, float *planar, int W, int H);
    void (*planar_to_rgb8)(bsq_backend *be, const float *planar, void *rgb, int W, int H);
    /* BSQ: z = v / max(||v||, 1e-12) per row of L (written to z when not
     * NULL), codes = (z > 0 ? 1 : -1) / sqrt(L) written in place of v, and
     * the MSB-first index of each row to idx (host memory, rows entries). */
    void (*quantize)(bsq_backend *be, float *v, float *z, uint64_t *idx, size_t rows, int L);
    /* codes[rows][L] = (bit ? 1 : -1) / sqrt(L) from MSB-first indices */
    void (*dequantize)(bsq_backend *be, const uint64_t *idx, float *codes, size_t rows, int L);

    /* ---- training: backward passes (NULL in a backend that cannot train) */
    /* c[m][n] = (accumulate ? c : 0) + op(a) op(b): op(a) = a^T when a_trans
     * (a stored [k][m]), else a [m][k]; op(b) = b^T when b_trans (b stored
     * [n][k]), else b [k][n]. The gradients of a linear layer y = x W^T + b
     * are dx = dy W and dW += dy^T x. */
    void (*matmul)(bsq_backend *be, int a_trans, int b_trans, size_t m, size_t n, size_t k,
                   const float *a, size_t lda, const float *b, size_t ldb, float *c, size_t ldc,
                   int accumulate);
    /* out[n] += sum over rows of x[rows][n] (bias gradients) */
    void (*colsum)(bsq_backend *be, const float *x, float *out, size_t rows, int n);
    /* given LayerNorm's input x and the gradient dy of its output: dx
     * (written; may alias dy), dw and db (accumulated) */
    void (*layernorm_backward)(bsq_backend *be, const float *x, const float *w, const float *dy,
                               float *dx, float *dw, float *db, size_t rows, int d, float eps);
    /* dy *= gelu'(x), x the GELU's input */
    void (*gelu_backward)(bsq_backend *be, const float *x, float *dy, size_t count);
    /* dy *= 1 - y^2, y the tanh's output */
    void (*tanh_backward)(bsq_backend *be, const float *y, float *dy, size_t count);
    /* the gradients of add_pos: dpos and dtpos (when not NULL) accumulated */
    void (*add_pos_backward)(bsq_backend *be, const float *dx, float *dpos, float *dtpos,
                             int seqs, int frames, int tokens, int d, int t0);
    /* Gradients of attention (no key/value cache: nq == nk, q_offset 0):
     * given a's q, k, v and the forward output in a->out, and dout (laid
     * out like out), writes dq, dk, dv laid out like q, k, v. */
    void (*attention_backward)(bsq_backend *be, const bsq_attention_args *a, const float *dout,
                               float *dq, float *dk, float *dv);
} bsq_backend_ops;

struct bsq_backend {
    const bsq_backend_ops *ops;
};

/* Backends that exist in this build. The CUDA backend computes in bf16
 * (products and attention on tensor cores) unless fp32 is set. */
bsq_status bsq_backend_cpu_create(int threads, bsq_backend **out, bsq_error *err);
bsq_status bsq_backend_cuda_create(int device, int fp32, bsq_backend **out, bsq_error *err);
/* The CUDA backend's sources built for the CPU through the SIMT emulator
 * (kernels/emu/): only in tests/check_cuda_emu. */
bsq_status bsq_backend_cuda_emu_create(int device, int fp32, bsq_backend **out, bsq_error *err);
/* For the tests: CUDA graphs a CUDA backend recorded, and replays of them. */
void bsq_backend_cuda_graph_counts(const bsq_backend *be, unsigned long *recorded,
                                   unsigned long *replayed);
void bsq_backend_cuda_emu_graph_counts(const bsq_backend *be, unsigned long *recorded,
                                       unsigned long *replayed);

/* For bench/bench_cuda (CUDA builds only): the cuBLAS bf16 product rate
 * measured on an m x n x k product, and the device memory in use. */
bsq_status bsq_cuda_gemm_rate(int device, int m, int n, int k, double *tflops, bsq_error *err);
bsq_status bsq_cuda_memory_used(int device, size_t *used, size_t *total, bsq_error *err);

/* Opens the backend a device string asks for ("auto", "cpu", "cuda[:N]"). */
bsq_status bsq_backend_open(const char *device, int threads, bsq_precision precision,
                            bsq_backend **out, bsq_error *err);

#endif
