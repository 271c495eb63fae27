/* What the kernels see of CUDA: the real toolkit under nvcc, or the SIMT
 * emulator (kernels/emu/) when BSQ_CUDA_EMULATE is defined, so the same
 * sources run on a CPU in the tests. Kernels launch through BSQ_LAUNCH and
 * declare dynamic shared memory with BSQ_DYNAMIC_SMEM. */
#ifndef BSQ_CUDA_COMPAT_H
#define BSQ_CUDA_COMPAT_H

#ifdef BSQ_CUDA_EMULATE
#include "emu/simt.h"
/* a namespace of their own, so emulated kernels never satisfy a real
 * backend's references when both are in one program */
#define bsqk bsqk_emu
#else
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>
#define BSQ_LAUNCH(kernel, grid, block, smem, stream, ...)                                         \
    kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define BSQ_DYNAMIC_SMEM(name) extern __shared__ __align__(128) char name[]
#endif

typedef __nv_bfloat16 bsq_bf16;

#endif
