/* The arithmetic of tiling (lib/tiling.h) for one pixel at a time, shared by
 * the host code, the CPU backend's tile ops and the CUDA kernels (compiled
 * for the device there), so every path places and blends tiles alike. */
#ifndef BSQ_TILE_MATH_H
#define BSQ_TILE_MATH_H

#include <stddef.h>

#include "host_device.h"

/* Images [B][3][T][H][W] covered by ny x nx tiles of th x tw each; a
 * sequence s is tile (s % (ny*nx)) of image s / (ny*nx), row-major. */
typedef struct bsq_tile_grid {
    int T, H, W;
    int th, tw, ny, nx;
} bsq_tile_grid;

/* Start of tile i of n along an axis (0 when the image is smaller):
 * round(i * (total - size) / (n - 1)) in integers. */
BSQ_HOST_DEVICE static inline int bsq_tile_start(int i, int n, int total, int size)
{
    if (n <= 1 || total <= size)
        return 0;
    long num = (long)i * (total - size);
    return (int)((2 * num + (n - 1)) / (2 * (long)(n - 1)));
}

/* Blending weight of local coordinate u in tile i of n: linear ramps across
 * the overlaps with the neighbours, 1 elsewhere; never 0 inside a tile. */
BSQ_HOST_DEVICE static inline float bsq_tile_ramp(int u, int i, int n, int total, int size)
{
    int p = bsq_tile_start(i, n, total, size);
    float w = 1.0f;
    if (i > 0) { /* ramp up across the overlap with the previous tile */
        int ov = bsq_tile_start(i - 1, n, total, size) + size - p;
        if (ov > 0 && u < ov)
            w *= ((float)u + 0.5f) / (float)ov;
    }
    if (i < n - 1) { /* ramp down across the overlap with the next tile */
        int ov = p + size - bsq_tile_start(i + 1, n, total, size);
        if (ov > 0 && u >= size - ov)
            w *= ((float)(size - u) - 0.5f) / (float)ov;
    }
    return w;
}

BSQ_HOST_DEVICE static inline int bsq_tile_clamp(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* The last tile along an axis that starts at or before coordinate v; the
 * tiles covering v are it and those before it that still reach v. */
BSQ_HOST_DEVICE static inline int bsq_tile_last_covering(int v, int n, int total, int size)
{
    int i = total > size && n > 1 ? (int)((long)v * (n - 1) / (total - size)) : 0;
    i = bsq_tile_clamp(i, 0, n - 1);
    while (i > 0 && bsq_tile_start(i, n, total, size) > v)
        i--;
    while (i < n - 1 && bsq_tile_start(i + 1, n, total, size) <= v)
        i++;
    return i;
}

/* Element e of the tiles of sequences s0.. laid out [n][3][T][th][tw]:
 * the image pixel it copies (edges replicated outside the image). */
BSQ_HOST_DEVICE static inline size_t bsq_tile_source(const bsq_tile_grid *g, int s0, size_t e)
{
    size_t x = e % (size_t)g->tw, r = e / (size_t)g->tw;
    size_t y = r % (size_t)g->th;
    r /= (size_t)g->th; /* (sequence - s0) * 3 * T + c * T + t */
    size_t ct = r % ((size_t)3 * g->T), s = (size_t)s0 + r / ((size_t)3 * g->T);
    size_t tiles = (size_t)g->ny * g->nx, b = s / tiles, tile = s % tiles;
    int iy = (int)(tile / (size_t)g->nx), ix = (int)(tile % (size_t)g->nx);
    int yy = bsq_tile_clamp(bsq_tile_start(iy, g->ny, g->H, g->th) + (int)y, 0, g->H - 1);
    int xx = bsq_tile_clamp(bsq_tile_start(ix, g->nx, g->W, g->tw) + (int)x, 0, g->W - 1);
    return ((b * 3 * g->T + ct) * g->H + (size_t)yy) * g->W + (size_t)xx;
}

/* Pixel (c, t, y, x) of image b blended from the tiles of sequences s0 ..
 * s0+n-1 (laid out [n][3][T][th][tw]) that cover it, each weighted by its
 * ramps over the sum of the weights of every tile covering the pixel: the
 * parts from all sequences add up to the blended image. */
BSQ_HOST_DEVICE static inline float bsq_tile_blend_pixel(const float *tiles, const bsq_tile_grid *g,
                                                         int s0, int n, int b, int ct, int y, int x)
{
    const int tiles_per = g->ny * g->nx;
    const int ly = bsq_tile_last_covering(y, g->ny, g->H, g->th);
    const int lx = bsq_tile_last_covering(x, g->nx, g->W, g->tw);
    float wsum = 0.0f, acc = 0.0f;
    for (int iy = ly; iy >= 0; iy--) {
        int y0 = bsq_tile_start(iy, g->ny, g->H, g->th);
        if (y0 + g->th <= y)
            break;
        float wy = bsq_tile_ramp(y - y0, iy, g->ny, g->H, g->th);
        for (int ix = lx; ix >= 0; ix--) {
            int x0 = bsq_tile_start(ix, g->nx, g->W, g->tw);
            if (x0 + g->tw <= x)
                break;
            float w = wy * bsq_tile_ramp(x - x0, ix, g->nx, g->W, g->tw);
            wsum += w;
            int s = b * tiles_per + iy * g->nx + ix;
            if (s >= s0 && s < s0 + n)
                acc += w * tiles[(((size_t)(s - s0) * 3 * g->T + ct) * g->th + (size_t)(y - y0)) *
                                     g->tw + (size_t)(x - x0)];
        }
    }
    return acc / wsum;
}

#endif
