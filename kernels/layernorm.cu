/* LayerNorm over the last dimension: one warp per row, two passes (mean,
 * then the centred variance) as the CPU engine does, for the same accuracy. */
#include "device.h"
#include "kernels.h"

namespace bsqk {

namespace {

const int WARPS = 8;

__global__ void k_layernorm(const float *x, const float *w, const float *b, float *y, size_t rows,
                            int d, float eps, bsq_bf16 *yb)
{
    const int lane = (int)(threadIdx.x % 32);
    size_t row = (size_t)blockIdx.x * WARPS + threadIdx.x / 32;
    if (row >= rows)
        return; /* whole warps leave together: no block barrier below */
    const float *xr = x + row * (size_t)d;
    float *yr = y + row * (size_t)d;
    float sum = 0.0f;
    for (int i = lane; i < d; i += 32)
        sum += xr[i];
    const float mean = warp_sum(sum) / (float)d;
    float var = 0.0f;
    for (int i = lane; i < d; i += 32) {
        float c = xr[i] - mean;
        var += c * c;
    }
    const float inv = rsqrtf(warp_sum(var) / (float)d + eps);
    for (int i = lane; i < d; i += 32) { /* y may be x: each element is read before written */
        float v = (xr[i] - mean) * inv * w[i] + b[i];
        yr[i] = v;
        if (yb)
            yb[row * (size_t)d + i] = __float2bfloat16_rn(v);
    }
}

} // namespace

void layernorm(cudaStream_t s, const float *x, const float *w, const float *b, float *y,
               size_t rows, int d, float eps, bsq_bf16 *yb)
{
    if (rows)
        BSQ_LAUNCH(k_layernorm, dim3((unsigned)((rows + WARPS - 1) / WARPS)), WARPS * 32, 0, s, x, w,
                   b, y, rows, d, eps, yb);
}

} // namespace bsqk
