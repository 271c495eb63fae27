/* Elementwise kernels: grid-stride loops over flat arrays. */
#include "device.h"
#include "kernels.h"

namespace bsqk {

namespace {

const int THREADS = 256;

__device__ __forceinline__ size_t gtid() { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t gstride() { return (size_t)gridDim.x * blockDim.x; }

__global__ void k_gelu(float *x, size_t n)
{
    for (size_t i = gtid(); i < n; i += gstride()) {
        x[i] = gelu_erf(x[i]);
    }
}

__global__ void k_tanh(float *x, size_t n, bsq_bf16 *xb)
{
    for (size_t i = gtid(); i < n; i += gstride()) {
        float v = tanhf(x[i]);
        x[i] = v;
        if (xb)
            xb[i] = __float2bfloat16_rn(v);
    }
}

__global__ void k_add(float *y, const float *x, size_t n)
{
    for (size_t i = gtid(); i < n; i += gstride())
        y[i] += x[i];
}

__global__ void k_add_bias(float *y, const float *bias, size_t total, int n)
{
    for (size_t i = gtid(); i < total; i += gstride())
        y[i] += bias[i % (size_t)n];
}

__global__ void k_bias_gelu(float *y, const float *bias, size_t total, int n, bsq_bf16 *yb)
{
    for (size_t i = gtid(); i < total; i += gstride()) {
        float v = gelu_erf(y[i] + (bias ? bias[i % (size_t)n] : 0.0f));
        y[i] = v;
        if (yb)
            yb[i] = __float2bfloat16_rn(v);
    }
}

/* x[s][t][j][c] += pos[j][c] + tpos[t0 + t][c] */
__global__ void k_add_pos(float *x, const float *pos, const float *tpos, size_t total, int frames,
                          int tokens, int d, int t0)
{
    for (size_t i = gtid(); i < total; i += gstride()) {
        size_t row = i / (size_t)d;
        int c = (int)(i % (size_t)d), j = (int)(row % (size_t)tokens);
        int t = (int)(row / (size_t)tokens % (size_t)frames);
        float add = pos[(size_t)j * d + c];
        if (tpos)
            add += tpos[(size_t)(t0 + t) * d + c];
        x[i] += add;
    }
}

__global__ void k_to_bf16(const float *x, bsq_bf16 *y, size_t n)
{
    for (size_t i = gtid(); i < n; i += gstride())
        y[i] = __float2bfloat16(x[i]);
}

__global__ void k_copy2d(float *dst, size_t dst_stride, const float *src, size_t src_stride,
                         size_t rows, size_t cols)
{
    size_t total = rows * cols;
    for (size_t i = gtid(); i < total; i += gstride()) {
        size_t r = i / cols, c = i % cols;
        dst[r * dst_stride + c] = src[r * src_stride + c];
    }
}

} // namespace

void gelu(cudaStream_t s, float *x, size_t n)
{
    if (n)
        BSQ_LAUNCH(k_gelu, grid_for(n, THREADS), THREADS, 0, s, x, n);
}

void tanh_(cudaStream_t s, float *x, size_t n, bsq_bf16 *xb)
{
    if (n)
        BSQ_LAUNCH(k_tanh, grid_for(n, THREADS), THREADS, 0, s, x, n, xb);
}

void add(cudaStream_t s, float *y, const float *x, size_t n)
{
    if (n)
        BSQ_LAUNCH(k_add, grid_for(n, THREADS), THREADS, 0, s, y, x, n);
}

void add_bias(cudaStream_t s, float *y, const float *bias, size_t rows, int n)
{
    size_t total = rows * (size_t)n;
    if (total)
        BSQ_LAUNCH(k_add_bias, grid_for(total, THREADS), THREADS, 0, s, y, bias, total, n);
}

void bias_gelu(cudaStream_t s, float *y, const float *bias, size_t rows, int n, bsq_bf16 *yb)
{
    size_t total = rows * (size_t)n;
    if (total)
        BSQ_LAUNCH(k_bias_gelu, grid_for(total, THREADS), THREADS, 0, s, y, bias, total, n, yb);
}

void add_pos(cudaStream_t s, float *x, const float *pos, const float *tpos, int seqs, int frames,
             int tokens, int d, int t0)
{
    size_t total = (size_t)seqs * frames * tokens * d;
    if (total)
        BSQ_LAUNCH(k_add_pos, grid_for(total, THREADS), THREADS, 0, s, x, pos, tpos, total, frames, tokens,
                   d, t0);
}

void to_bf16(cudaStream_t s, const float *x, bsq_bf16 *y, size_t n)
{
    if (n)
        BSQ_LAUNCH(k_to_bf16, grid_for(n, THREADS), THREADS, 0, s, x, y, n);
}

void copy2d(cudaStream_t s, float *dst, size_t dst_stride, const float *src, size_t src_stride,
            size_t rows, size_t cols)
{
    if (rows && cols)
        BSQ_LAUNCH(k_copy2d, grid_for(rows * cols, THREADS), THREADS, 0, s, dst, dst_stride, src,
                   src_stride, rows, cols);
}

} // namespace bsqk
