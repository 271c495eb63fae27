/* Covering an image of any size with tiles of the model's size: the fewest
 * tiles per axis that, spread evenly from edge to edge, overlap their
 * neighbours by at least bsq_tile_overlap(size) pixels (so no padding is
 * needed); images smaller than a tile are edge-padded. Decoding blends
 * overlaps with linear ramps so borders do not show. The placement is a pure
 * function of (total, size): token layouts need only record the counts. */
#ifndef BSQ_TILING_H
#define BSQ_TILING_H

#include <stddef.h>

int bsq_tile_count(int total, int size);
/* The least overlap between neighbouring tiles: size / 16, at least 2. */
int bsq_tile_overlap(int size);
/* Start of tile i of n along an axis (0 when the image is smaller). */
int bsq_tile_pos(int i, int n, int total, int size);

/* Copies the tile at (y0, x0) of planar img [3][T][H][W] into tile
 * [3][T][th][tw], replicating edge pixels outside the image. */
void bsq_tile_extract(const float *img, int T, int H, int W, int y0, int x0, int th, int tw,
                      float *tile);

/* Blending weight of local coordinate u in tile i of n along an axis. */
float bsq_tile_weight(int u, int i, int n, int total, int size);

/* wsum [H][W] = the sum of every tile's blend weight at each pixel (zeroed
 * first); dividing accumulated tiles by it normalises the blend. */
void bsq_tile_weight_map(float *wsum, int H, int W, int th, int tw);

/* acc [3][T][H][W] += weight * tile (the part inside the image); wsum
 * [H][W] (when not NULL) += weight. */
void bsq_tile_accumulate(float *acc, float *wsum, const float *tile, int T, int H, int W, int iy,
                         int ny, int ix, int nx, int th, int tw);

#endif
