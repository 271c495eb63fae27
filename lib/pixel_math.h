/* One pixel value between RGB24 bytes and the model's [-1, 1] floats, shared
 * by the host conversions (encode.c), the CPU backend and the CUDA kernels,
 * so a frame converted on a GPU matches one converted on the host. */
#ifndef BSQ_PIXEL_MATH_H
#define BSQ_PIXEL_MATH_H

#include <math.h>
#include <stdint.h>

#include "host_device.h"

BSQ_HOST_DEVICE static inline float bsq_unit_of_u8(uint8_t v) { return v / 127.5f - 1.0f; }

/* round half to even, clamped to 0..255 */
BSQ_HOST_DEVICE static inline uint8_t bsq_u8_of_unit(float x)
{
    float v = (x + 1.0f) * 127.5f;
    v = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
    return (uint8_t)lrintf(v);
}

#endif
