#include "tiling.h"

#include "bsq.h"
#include "error.h"
#include "tile_math.h"

int bsq_tile_overlap(int size)
{
    int ov = size / 16 > 2 ? size / 16 : 2;
    return ov < size / 2 ? ov : size / 2;
}

int bsq_tile_count(int total, int size)
{
    if (total <= size)
        return 1;
    /* enough tiles that neighbours overlap by at least bsq_tile_overlap():
     * abutting tiles leave a seam (measured: 0.5 dB lower PSNR within 4 px of
     * the border), overlapping ones blend it away */
    int ov = bsq_tile_overlap(size);
    return (total - ov + (size - ov) - 1) / (size - ov);
}

int bsq_tile_pos(int i, int n, int total, int size) { return bsq_tile_start(i, n, total, size); }

/* the largest total that bsq_tile_count() still covers with its tiles */
static int tile_cover(int total, int size)
{
    if (total <= size)
        return size;
    long span = size + (long)(bsq_tile_count(total, size) - 1) * (size - bsq_tile_overlap(size));
    return span > 65535 ? total : (int)span;
}

bsq_status bsq_tile_cover_size(const bsq_config *config, int width, int height,
                               int *cover_width, int *cover_height, bsq_error *err)
{
    if (!config || !cover_width || !cover_height)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_tile_cover_size: NULL argument");
    if (width < 1 || height < 1 || width > 65535 || height > 65535)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "picture size %dx%d out of range (1..65535)",
                        width, height);
    if (config->image_width < 1 || config->image_height < 1)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "the model's tile size %dx%d is not valid",
                        config->image_width, config->image_height);
    *cover_width = tile_cover(width, config->image_width);
    *cover_height = tile_cover(height, config->image_height);
    return BSQ_OK;
}

void bsq_tile_extract(const float *img, int T, int H, int W, int y0, int x0, int th, int tw,
                      float *tile)
{
    for (int c = 0; c < 3; c++)
        for (int t = 0; t < T; t++)
            for (int y = 0; y < th; y++) {
                const float *src = img + (((size_t)c * T + t) * H + bsq_tile_clamp(y0 + y, 0, H - 1)) * W;
                float *dst = tile + (((size_t)c * T + t) * th + y) * tw;
                for (int x = 0; x < tw; x++)
                    dst[x] = src[bsq_tile_clamp(x0 + x, 0, W - 1)];
            }
}

float bsq_tile_weight(int u, int i, int n, int total, int size)
{
    return bsq_tile_ramp(u, i, n, total, size);
}

void bsq_tile_accumulate(float *acc, float *wsum, const float *tile, int T, int H, int W, int iy,
                         int ny, int ix, int nx, int th, int tw)
{
    const int y0 = bsq_tile_pos(iy, ny, H, th), x0 = bsq_tile_pos(ix, nx, W, tw);
    const int yn = H - y0 < th ? H - y0 : th, xn = W - x0 < tw ? W - x0 : tw;
    for (int y = 0; y < yn; y++) {
        float wy = bsq_tile_weight(y, iy, ny, H, th);
        for (int x = 0; x < xn; x++) {
            float w = wy * bsq_tile_weight(x, ix, nx, W, tw);
            if (wsum)
                wsum[(size_t)(y0 + y) * W + x0 + x] += w;
            for (int c = 0; c < 3; c++)
                for (int t = 0; t < T; t++)
                    acc[(((size_t)c * T + t) * H + y0 + y) * W + x0 + x] +=
                        w * tile[(((size_t)c * T + t) * th + y) * tw + x];
        }
    }
}

void bsq_tile_weight_map(float *wsum, int H, int W, int th, int tw)
{
    const int ny = bsq_tile_count(H, th), nx = bsq_tile_count(W, tw);
    for (size_t i = 0; i < (size_t)H * W; i++)
        wsum[i] = 0.0f;
    for (int iy = 0; iy < ny; iy++)
        for (int ix = 0; ix < nx; ix++) {
            const int y0 = bsq_tile_pos(iy, ny, H, th), x0 = bsq_tile_pos(ix, nx, W, tw);
            for (int y = 0; y < th && y0 + y < H; y++)
                for (int x = 0; x < tw && x0 + x < W; x++)
                    wsum[(size_t)(y0 + y) * W + x0 + x] +=
                        bsq_tile_weight(y, iy, ny, H, th) * bsq_tile_weight(x, ix, nx, W, tw);
        }
}
