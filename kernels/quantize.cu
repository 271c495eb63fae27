/* BSQ quantization: one thread per token row (L is small: 18..64 bits), so
 * the MSB-first index is built in a register with no cross-thread packing;
 * the row's arithmetic is the CPU backend's (lib/quantize_row.h). */
#include "device.h"
#include "kernels.h"
#include "quantize_row.h"

namespace bsqk {

namespace {

const int THREADS = 128;

__global__ void k_quantize(float *v, float *z, uint64_t *idx, size_t rows, int L, float code)
{
    size_t r = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (r < rows)
        idx[r] = bsq_quantize_row(v + r * (size_t)L, z ? z + r * (size_t)L : NULL, L, code);
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
    size_t total = rows * (size_t)L;
    if (total)
        BSQ_LAUNCH(k_dequantize, grid_for(total, THREADS), THREADS, 0, s, idx, codes,
                   total, L, code_of(L));
}

} // namespace bsqk
