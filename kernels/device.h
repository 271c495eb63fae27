/* Small pieces every kernel file uses: launch sizing for grid-stride loops,
 * warp reductions and the exact GELU. */
#ifndef BSQ_KERNELS_DEVICE_H
#define BSQ_KERNELS_DEVICE_H

#include <math.h>
#include <stddef.h>

#include "cuda_compat.h"

namespace bsqk {

/* Blocks of `threads` for n elements of a grid-stride loop: enough to fill
 * any GPU, few enough that a block does several elements. */
static inline dim3 grid_for(size_t n, int threads)
{
    size_t blocks = (n + (size_t)threads - 1) / (size_t)threads;
    return dim3((unsigned)(blocks < 8192 ? (blocks ? blocks : 1) : 8192));
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int m = 16; m > 0; m >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, m);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int m = 16; m > 0; m >>= 1) {
        float o = __shfl_xor_sync(0xffffffffu, v, m);
        v = o > v ? o : v;
    }
    return v;
}

__device__ __forceinline__ float gelu_erf(float v) /* exact (erf) GELU */
{
    return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

} // namespace bsqk

#endif
