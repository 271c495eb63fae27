/* The CUDA backend's kernels, as host functions that queue them on a
 * stream (C++, internal to kernels/). Tensors are row-major float32 in
 * device memory, laid out as lib/backend.h describes for each op. */
#ifndef BSQ_KERNELS_H
#define BSQ_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "cuda_compat.h"

extern "C" {
#include "backend.h"
}

namespace bsqk {

/* elementwise.cu */
void gelu(cudaStream_t s, float *x, size_t n);
void tanh_(cudaStream_t s, float *x, size_t n, bsq_bf16 *xb); /* xb: as bias_gelu's yb */
void add(cudaStream_t s, float *y, const float *x, size_t n);
void add_bias(cudaStream_t s, float *y, const float *bias, size_t rows, int n);
/* y = GELU(y + bias) (bias may be NULL); also to yb in bf16 when not NULL,
 * the input the next product needs (no conversion pass of its own) */
void bias_gelu(cudaStream_t s, float *y, const float *bias, size_t rows, int n, bsq_bf16 *yb);
void add_pos(cudaStream_t s, float *x, const float *pos, const float *tpos, int seqs, int frames,
             int tokens, int d, int t0);
void to_bf16(cudaStream_t s, const float *x, bsq_bf16 *y, size_t n);
void copy2d(cudaStream_t s, float *dst, size_t dst_stride, const float *src, size_t src_stride,
            size_t rows, size_t cols);

/* layernorm.cu */
/* yb: as bias_gelu's */
void layernorm(cudaStream_t s, const float *x, const float *w, const float *b, float *y,
               size_t rows, int d, float eps, bsq_bf16 *yb);

/* patch.cu */
void patchify(cudaStream_t s, const float *pix, float *tok, int seqs, int frames, int gh, int gw,
              int p);
void unpatchify(cudaStream_t s, const float *tok, float *pix, int seqs, int frames, int gh, int gw,
                int p, int clamp);

/* tiles.cu */
void tile_extract(cudaStream_t s, const float *img, float *tiles, const bsq_tile_grid *g, int s0,
                  int n);
void tile_blend(cudaStream_t s, const float *tiles, float *img, const bsq_tile_grid *g, int s0,
                int n);

/* pixels.cu: rgb [plane][3] bytes <-> planar [3][plane] */
void rgb8_to_planar(cudaStream_t s, const uint8_t *rgb, float *planar, size_t plane);
void planar_to_rgb8(cudaStream_t s, const float *planar, uint8_t *rgb, size_t plane);

/* quantize.cu: idx in device memory */
void quantize(cudaStream_t s, float *v, float *z, uint64_t *idx, size_t rows, int L);
void dequantize(cudaStream_t s, const uint64_t *idx, float *codes, size_t rows, int L);

/* attention.cu: fp32 SIMT (the checking mode), and bf16 on tensor cores.
 * Both stream over keys with an online softmax: no nq x nk scores. At most
 * 65535 heads (the grid's y dimension; the caller checks). */
void attention_f32(cudaStream_t s, const bsq_attention_args *a);
/* Dynamic shared memory the tensor-core kernel needs for a head size, or 0
 * when it does not handle that size. */
size_t attention_bf16_smem(int head_dim);
cudaError_t attention_bf16_prepare(int max_smem); /* opts the kernels in to large smem */
void attention_bf16(cudaStream_t s, const bsq_attention_args *a);

} // namespace bsqk

#endif
