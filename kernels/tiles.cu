/* Tiles on the device: cut the tiles of a chunk of sequences out of whole
 * images, and blend decoded tiles back into them, so a frame crosses the
 * bus once each way instead of as overlapping tiles, and the host neither
 * cuts nor blends. The placement and weights are lib/tile_math.h's, as on
 * the host. One thread per tile element (cut) or image pixel (blend: a
 * gather over the covering tiles, so no two threads write one pixel). */
#include "device.h"
#include "kernels.h"
#include "tile_math.h"

namespace bsqk {

namespace {

const int THREADS = 256;

__global__ void k_tile_extract(const float *img, float *tiles, bsq_tile_grid g, int s0, size_t total)
{
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x)
        tiles[e] = img[bsq_tile_source(&g, s0, e)];
}

/* img covers images b0..; element e is (b - b0, c*T + t, y, x) */
__global__ void k_tile_blend(const float *tiles, float *img, bsq_tile_grid g, int s0, int n, int b0,
                             size_t total)
{
    const size_t plane = (size_t)g.H * g.W;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        int x = (int)(e % (size_t)g.W), y = (int)(e / (size_t)g.W % (size_t)g.H);
        size_t r = e / plane;
        int ct = (int)(r % ((size_t)3 * g.T)), b = b0 + (int)(r / ((size_t)3 * g.T));
        img[((size_t)b * 3 * g.T + ct) * plane + (size_t)y * g.W + x] +=
            bsq_tile_blend_pixel(tiles, &g, s0, n, b, ct, y, x);
    }
}

} // namespace

void tile_extract(cudaStream_t s, const float *img, float *tiles, const bsq_tile_grid *g, int s0,
                  int n)
{
    size_t total = (size_t)n * 3 * g->T * g->th * g->tw;
    if (total)
        BSQ_LAUNCH(k_tile_extract, grid_for(total, THREADS), THREADS, 0, s, img, tiles, *g, s0,
                   total);
}

void tile_blend(cudaStream_t s, const float *tiles, float *img, const bsq_tile_grid *g, int s0,
                int n)
{
    const int per = g->ny * g->nx, b0 = s0 / per, b1 = (s0 + n - 1) / per;
    size_t total = (size_t)(b1 - b0 + 1) * 3 * g->T * g->H * g->W;
    if (n > 0 && total)
        BSQ_LAUNCH(k_tile_blend, grid_for(total, THREADS), THREADS, 0, s, tiles, img, *g, s0, n, b0,
                   total);
}

} // namespace bsqk
