/* What bench/bench_cuda needs to know of the device beyond the ops table:
 * the cuBLAS bf16 product rate measured now (the ceiling the model's
 * products are compared with), and the device memory in use. C ABI. */
#include <stdio.h>

#include "kernels.h"

extern "C" {
#include "error.h"
}

extern "C" bsq_status bsq_cuda_gemm_rate(int device, int m, int n, int k, double *tflops,
                                         bsq_error *err)
{
    if (cudaSetDevice(device) != cudaSuccess)
        return bsq_fail(err, BSQ_ERR_DEVICE, "no CUDA device %d", device);
    void *a = NULL, *b = NULL, *c = NULL;
    cublasHandle_t h = NULL;
    cudaEvent_t t0 = NULL, t1 = NULL;
    bsq_status st = BSQ_OK;
    const float one = 1.0f, zero = 0.0f;
    float ms = 0;
    const int reps = 20;
    if (cudaMalloc(&a, (size_t)m * k * 2) != cudaSuccess ||
        cudaMalloc(&b, (size_t)k * n * 2) != cudaSuccess ||
        cudaMalloc(&c, (size_t)m * n * 4) != cudaSuccess) {
        st = bsq_fail(err, BSQ_ERR_NOMEM, "cannot allocate the product's operands");
        goto done;
    }
    cudaMemset(a, 0, (size_t)m * k * 2);
    cudaMemset(b, 0, (size_t)k * n * 2);
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS || cudaEventCreate(&t0) != cudaSuccess ||
        cudaEventCreate(&t1) != cudaSuccess) {
        st = bsq_fail(err, BSQ_ERR_DEVICE, "cuBLAS or events unavailable");
        goto done;
    }
    for (int i = 0; i < reps + 3; i++) {
        if (i == 3)
            cudaEventRecord(t0, 0);
        if (cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, a, CUDA_R_16BF, k, b,
                         CUDA_R_16BF, k, &zero, c, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
            st = bsq_fail(err, BSQ_ERR_DEVICE, "cublasGemmEx failed");
            goto done;
        }
    }
    cudaEventRecord(t1, 0);
    if (cudaEventSynchronize(t1) != cudaSuccess || cudaEventElapsedTime(&ms, t0, t1) != cudaSuccess) {
        st = bsq_fail(err, BSQ_ERR_DEVICE, "timing the product failed");
        goto done;
    }
    *tflops = 2.0 * m * n * k * reps / (ms * 1e-3) / 1e12;
done:
    if (t0)
        cudaEventDestroy(t0);
    if (t1)
        cudaEventDestroy(t1);
    if (h)
        cublasDestroy(h);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    cudaGetLastError();
    return st;
}

extern "C" bsq_status bsq_cuda_memory_used(int device, size_t *used, size_t *total, bsq_error *err)
{
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(device) != cudaSuccess || cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
        cudaGetLastError();
        return bsq_fail(err, BSQ_ERR_DEVICE, "no CUDA device %d", device);
    }
    *used = total_b - free_b;
    *total = total_b;
    return BSQ_OK;
}
