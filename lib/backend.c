/* Picks a backend from a device string. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"

#ifndef BSQ_HAVE_CUDA_BACKEND
bsq_status bsq_backend_cuda_create(int device, int fp32, bsq_backend **out, bsq_error *err)
{
    (void)device;
    (void)fp32;
    (void)out;
    return bsq_fail(err, BSQ_ERR_DEVICE, "this build of libbsq has no CUDA backend");
}

bsq_status bsq_cuda_gemm_rate(int device, int m, int n, int k, double *tflops, bsq_error *err)
{
    (void)device, (void)m, (void)n, (void)k, (void)tflops;
    return bsq_fail(err, BSQ_ERR_DEVICE, "this build of libbsq has no CUDA backend");
}

bsq_status bsq_cuda_memory_used(int device, size_t *used, size_t *total, bsq_error *err)
{
    (void)device, (void)used, (void)total;
    return bsq_fail(err, BSQ_ERR_DEVICE, "this build of libbsq has no CUDA backend");
}
#endif

bsq_status bsq_backend_open(const char *device, int threads, bsq_precision precision,
                            bsq_backend **out, bsq_error *err)
{
    if (precision != BSQ_PRECISION_AUTO && precision != BSQ_PRECISION_FP32 &&
        precision != BSQ_PRECISION_BF16)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "unknown precision %d", (int)precision);
    const int fp32 = precision == BSQ_PRECISION_FP32;
    if (!device || strcmp(device, "auto") == 0) {
        bsq_error ignored;
        if (bsq_backend_cuda_create(0, fp32, out, &ignored) == BSQ_OK)
            return BSQ_OK;
        if (precision == BSQ_PRECISION_BF16)
            return bsq_fail(err, BSQ_ERR_UNSUPPORTED,
                            "bf16 needs a CUDA device (%s); the CPU computes in fp32", ignored.message);
        return bsq_backend_cpu_create(threads, out, err);
    }
    if (strcmp(device, "cpu") == 0) {
        if (precision == BSQ_PRECISION_BF16)
            return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "the CPU computes in fp32 only, not bf16");
        return bsq_backend_cpu_create(threads, out, err);
    }
    if (strncmp(device, "cuda", 4) == 0) {
        int n = 0;
        if (device[4] == ':') {
            char *end;
            long v = strtol(device + 5, &end, 10);
            if (end == device + 5 || *end || v < 0 || v > 1024)
                return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bad device \"%s\" (cuda:N)", device);
            n = (int)v;
        } else if (device[4]) {
            return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bad device \"%s\"", device);
        }
        return bsq_backend_cuda_create(n, fp32, out, err);
    }
    return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                    "unknown device \"%s\" (expected auto, cpu, cuda or cuda:N)", device);
}
