/* BSQ quantization: one thread per token row (L is small: 18..64 bits), so
 * the MSB-first index is built in a register with no cross-thread packing. */
#include "kernels.h"

namespace bsqk {

namespace {

const int THREADS = 128;

__global__ void k_quantize(float *v, float *z, uint64_t *idx, size_t rows, int L, float code)
{
    size_t r = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows)
        return;
    float *row = v + r * (size_t)L;
    double ss = 0.0; /* as the CPU engine: no overflow for any float input */
    for (int d = 0; d < L; d++)
        ss += (double)row[d] * row[d];
    float norm = (float)sqrt(ss);
    float inv = 1.0f / (norm > 1e-12f ? norm : 1e-12f);
    uint64_t index = 0;
    for (int d = 0; d < L; d++) {
        float u = row[d] * inv;
        if (z)
            z[r * (size_t)L + d] = u;
        uint64_t bit = u > 0.0f; /* exactly zero is the code -1 */
        index = index << 1 | bit;
        row[d] = bit ? code : -code;
    }
    idx[r] = index;
}

__global__ void k_dequantize(const uint64_t *idx, float *codes, size_t total, int L, float code)
{
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        size_t r = e / (size_t)L;
        int d = (int)(e % (size_t)L);
        codes[e] = (idx[r] >> (L - 1 - d)) & 1 ? code : -code;
    }
}

float code_of(int L) { return (float)(1.0 / sqrt((double)L)); } /* correctly rounded, as PyTorch */

} // namespace

void quantize(cudaStream_t s, float *v, float *z, uint64_t *idx, size_t rows, int L)
{
    if (rows)
        BSQ_LAUNCH(k_quantize, dim3((unsigned)((rows + THREADS - 1) / THREADS)), THREADS, 0, s, v, z,
                   idx, rows, L, code_of(L));
}

void dequantize(cudaStream_t s, const uint64_t *idx, float *codes, size_t rows, int L)
{
    size_t total = rows * (size_t)L, b = (total + THREADS - 1) / THREADS;
    if (total)
        BSQ_LAUNCH(k_dequantize, dim3((unsigned)(b < 8192 ? b : 8192)), THREADS, 0, s, idx, codes,
                   total, L, code_of(L));
}

} // namespace bsqk
