/* BSQ quantization of one token row, shared by the CPU backend and the CUDA
 * kernel (compiled for the device there), so both decide every bit alike:
 * z = v / max(||v||, 1e-12) (written when z is not NULL), the row replaced
 * by its codes +-code, and the MSB-first index returned. */
#ifndef BSQ_QUANTIZE_ROW_H
#define BSQ_QUANTIZE_ROW_H

#include <math.h>
#include <stdint.h>

#include "host_device.h"

BSQ_HOST_DEVICE static inline uint64_t bsq_quantize_row(float *row, float *z, int L, float code)
{
    double ss = 0.0; /* double: no overflow for any float input */
    for (int d = 0; d < L; d++)
        ss += (double)row[d] * row[d];
    float norm = (float)sqrt(ss);
    float inv = 1.0f / (norm > 1e-12f ? norm : 1e-12f);
    uint64_t index = 0;
    for (int d = 0; d < L; d++) {
        float u = row[d] * inv;
        if (z)
            z[d] = u;
        uint64_t bit = u > 0.0f; /* exactly zero is the code -1 */
        index = index << 1 | bit;
        row[d] = bit ? code : -code;
    }
    return index;
}

#endif
