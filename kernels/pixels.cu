/* RGB24 bytes <-> the model's planar [-1, 1] floats on the device, so video
 * frames cross the bus as bytes (a quarter of the floats) and the host does
 * no per-pixel work. The arithmetic is lib/pixel_math.h's, as on the host.
 * One thread per pixel. */
#include "device.h"
#include "kernels.h"
#include "pixel_math.h"

namespace bsqk {

namespace {

const int THREADS = 256;

__global__ void k_rgb8_to_planar(const uint8_t *rgb, float *planar, size_t plane)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < plane;
         i += (size_t)gridDim.x * blockDim.x)
        for (int c = 0; c < 3; c++)
            planar[c * plane + i] = bsq_unit_of_u8(rgb[3 * i + c]);
}

__global__ void k_planar_to_rgb8(const float *planar, uint8_t *rgb, size_t plane)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < plane;
         i += (size_t)gridDim.x * blockDim.x)
        for (int c = 0; c < 3; c++)
            rgb[3 * i + c] = bsq_u8_of_unit(planar[c * plane + i]);
}

} // namespace

void rgb8_to_planar(cudaStream_t s, const uint8_t *rgb, float *planar, size_t plane)
{
    if (plane)
        BSQ_LAUNCH(k_rgb8_to_planar, grid_for(plane, THREADS), THREADS, 0, s, rgb, planar, plane);
}

void planar_to_rgb8(cudaStream_t s, const float *planar, uint8_t *rgb, size_t plane)
{
    if (plane)
        BSQ_LAUNCH(k_planar_to_rgb8, grid_for(plane, THREADS), THREADS, 0, s, planar, rgb, plane);
}

} // namespace bsqk
