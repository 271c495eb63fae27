/* Whole images and clips of any size: split into tiles of the model's size,
 * run in chunks of sequences through the graph, reorder tokens from engine
 * order (batch, tile, frame, token) to layout order (batch, frame, tile,
 * token), and blend decoded tiles back together. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "context.h"
#include "error.h"
#include "graph.h"
#include "pixel_math.h"
#include "tiling.h"
#include "tokens.h"

typedef struct {
    int B, T, H, W;         /* input */
    int th, tw, ny, nx, P;  /* tiles */
    int seqs;               /* B * ny * nx */
} plan;

static bsq_status make_plan(const bsq_context *ctx, int batch, int frames, int height, int width,
                            plan *p, bsq_error *err)
{
    const bsq_config *c = &ctx->model->cfg;
    if (batch < 1 || frames < 1 || height < 1 || width < 1 || height > 1 << 16 || width > 1 << 16)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bad input size %dx%d, %d frames, batch %d",
                        width, height, frames, batch);
    if (frames > c->num_frames)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "%d frames exceed the model's %d-frame block (use the stream API)", frames,
                        c->num_frames);
    p->B = batch;
    p->T = frames;
    p->H = height;
    p->W = width;
    p->th = c->image_height;
    p->tw = c->image_width;
    p->ny = bsq_tile_count(height, p->th);
    p->nx = bsq_tile_count(width, p->tw);
    p->P = (p->th / c->patch_size) * (p->tw / c->patch_size);
    p->seqs = batch * p->ny * p->nx;
    return BSQ_OK;
}

/* Sequences in the chunk that starts at s0 (the last one may be short). */
static int chunk_size(const plan *p, int s0, int chunk)
{
    return p->seqs - s0 < chunk ? p->seqs - s0 : chunk;
}

/* Engine sequence s = (b, tile) and frame t -> first token in layout order. */
static size_t layout_offset(const plan *p, int s, int t)
{
    int tiles = p->ny * p->nx, b = s / tiles, tile = s % tiles;
    return ((((size_t)b * p->T + t) * tiles) + tile) * p->P;
}

/* Chunks of sequences go through the graph in a pipeline of bsq_graph_slots()
 * slots: while the backend computes one chunk, the host prepares the next
 * (tiles, indices) and collects the previous (tokens, blending). Where the
 * backend holds the images itself (a GPU), it cuts and blends the tiles:
 * each image crosses once each way. */
typedef struct {
    int pending[2]; /* chunk queued in each slot, -1 if none */
    int slots;
} pipeline;

/* Waits for every queued chunk (also after a failure: nothing may still
 * use the buffers); returns the first failure. */
static bsq_status drain_all(bsq_context *ctx, pipeline *pl, bsq_status st, bsq_error *err)
{
    for (int sl = 0; sl < pl->slots; sl++)
        if (pl->pending[sl] >= 0) {
            bsq_error e2;
            bsq_status s2 = bsq_graph_finish(ctx, sl, st == BSQ_OK ? err : &e2);
            if (st == BSQ_OK)
                st = s2;
            pl->pending[sl] = -1;
        }
    return st;
}

static void collect_tokens(const plan *p, const bsq_config *c, bsq_tokens *tok, float *z,
                           const uint64_t *idx, const float *zc, int s0, int n)
{
    for (int i = 0; i < n; i++)
        for (int t = 0; t < p->T; t++) {
            size_t dst = layout_offset(p, s0 + i, t), src = ((size_t)i * p->T + t) * p->P;
            memcpy(tok->idx + dst, idx + src, p->P * sizeof(uint64_t));
            if (z)
                memcpy(z + dst * c->L, zc + src * c->L, (size_t)p->P * c->L * sizeof(float));
        }
}

static bsq_status encode_impl(bsq_context *ctx, const float *pixels, int batch, int frames,
                              int height, int width, bsq_tokens **out, float *z, bsq_error *err)
{
    if (!ctx || !pixels || !out)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_encode: NULL argument");
    const bsq_config *c = &ctx->model->cfg;
    plan p;
    bsq_status st = make_plan(ctx, batch, frames, height, width, &p, err);
    if (st != BSQ_OK)
        return st;
    bsq_token_layout lay = {.L = c->L, .batch = batch, .frames = frames, .tiles_y = p.ny,
                            .tiles_x = p.nx, .grid_h = c->image_height / c->patch_size,
                            .grid_w = c->image_width / c->patch_size, .height = height,
                            .width = width};
    bsq_tokens *tok;
    if ((st = bsq_tokens_create(&lay, &tok, err)) != BSQ_OK)
        return st;
    const int chunk = bsq_graph_chunk(ctx, frames), tiles = p.ny * p.nx;
    const size_t tile_px = (size_t)3 * frames * p.th * p.tw, img_px = (size_t)3 * frames * height * width;
    const size_t seq_tok = (size_t)frames * p.P;
    const int nchunks = (p.seqs + chunk - 1) / chunk;
    pipeline pl = {{-1, -1}, nchunks > 1 ? bsq_graph_slots(ctx) : 1};
    float *pix[2] = {NULL, NULL}, *zc[2] = {NULL, NULL};
    uint64_t *idx[2] = {NULL, NULL};
    float *dimg = bsq_context_images(ctx, img_px * batch);
    const bsq_tile_grid grid = {frames, height, width, p.th, p.tw, p.ny, p.nx};
    int uploaded = 0; /* images already on the backend */
    for (int sl = 0; sl < pl.slots; sl++) {
        if (!dimg)
            pix[sl] = bsq_context_host(ctx, BSQ_HOST(BSQ_HOST_PIX, sl), tile_px * chunk * sizeof(float));
        idx[sl] = bsq_context_host(ctx, BSQ_HOST(BSQ_HOST_IDX, sl), seq_tok * chunk * sizeof(uint64_t));
        if (z)
            zc[sl] = bsq_context_host(ctx, BSQ_HOST(BSQ_HOST_AUX, sl),
                                      seq_tok * chunk * c->L * sizeof(float));
        if ((!dimg && !pix[sl]) || !idx[sl] || (z && !zc[sl])) {
            bsq_tokens_free(tok);
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
        }
    }
    for (int k = 0; k < nchunks && st == BSQ_OK; k++) {
        const int sl = k % pl.slots;
        if (pl.pending[sl] >= 0) { /* the slot's previous chunk: wait, then take its tokens */
            int j = pl.pending[sl], s0 = j * chunk;
            pl.pending[sl] = -1;
            if ((st = bsq_graph_finish(ctx, sl, err)) != BSQ_OK)
                break;
            collect_tokens(&p, c, tok, z, idx[sl], zc[sl], s0, chunk_size(&p, s0, chunk));
        }
        const int s0 = k * chunk, n = chunk_size(&p, s0, chunk);
        bsq_tile_ref ref = {dimg, grid, s0, NULL, 0, 0};
        if (dimg) { /* the images this chunk is the first to need go up with it */
            int need = (s0 + n - 1) / tiles + 1;
            if (need > uploaded) {
                ref.upload_src = pixels + (size_t)uploaded * img_px;
                ref.upload_off = (size_t)uploaded * img_px;
                ref.upload_count = (size_t)(need - uploaded) * img_px;
                uploaded = need;
            }
        } else {
            for (int i = 0; i < n; i++) {
                int s = s0 + i, b = s / tiles, iy = (s % tiles) / p.nx, ix = s % p.nx;
                bsq_tile_extract(pixels + (size_t)b * img_px, frames, height, width,
                                 bsq_tile_pos(iy, p.ny, height, p.th),
                                 bsq_tile_pos(ix, p.nx, width, p.tw), p.th, p.tw,
                                 pix[sl] + (size_t)i * tile_px);
            }
        }
        st = bsq_graph_encode_queue(ctx, sl, pix[sl], dimg ? &ref : NULL, n, frames, idx[sl],
                                    zc[sl], err);
        if (st == BSQ_OK)
            pl.pending[sl] = k;
    }
    /* the chunks still in flight, oldest first */
    int left[2] = {pl.pending[0], pl.pending[1]};
    st = drain_all(ctx, &pl, st, err);
    for (int sl = 0; sl < pl.slots && st == BSQ_OK; sl++)
        if (left[sl] >= 0) {
            int s0 = left[sl] * chunk;
            collect_tokens(&p, c, tok, z, idx[sl], zc[sl], s0, chunk_size(&p, s0, chunk));
        }
    if (st != BSQ_OK) {
        bsq_tokens_free(tok);
        return st;
    }
    *out = tok;
    return BSQ_OK;
}

bsq_status bsq_encode(bsq_context *ctx, const float *pixels, int batch, int frames, int height,
                      int width, bsq_tokens **out, bsq_error *err)
{
    return encode_impl(ctx, pixels, batch, frames, height, width, out, NULL, err);
}

bsq_status bsq_encode_latents(bsq_context *ctx, const float *pixels, int batch, int frames,
                              int height, int width, bsq_tokens **out, float *z, bsq_error *err)
{
    return encode_impl(ctx, pixels, batch, frames, height, width, out, z, err);
}

/* Checks that tokens fit the context's model. */
static bsq_status check_tokens(const bsq_context *ctx, const bsq_tokens *t, bsq_error *err)
{
    const bsq_config *c = &ctx->model->cfg;
    const bsq_token_layout *l = &t->layout;
    if (l->L != c->L || l->grid_h != c->image_height / c->patch_size ||
        l->grid_w != c->image_width / c->patch_size)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "tokens (L=%d, grid %dx%d) do not match the model (L=%d, grid %dx%d)", l->L,
                        l->grid_w, l->grid_h, c->L, c->image_width / c->patch_size,
                        c->image_height / c->patch_size);
    if (l->tiles_y != bsq_tile_count(l->height, c->image_height) ||
        l->tiles_x != bsq_tile_count(l->width, c->image_width))
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "a %dx%d image needs %dx%d tiles, the tokens have %dx%d", l->width,
                        l->height, bsq_tile_count(l->width, c->image_width),
                        bsq_tile_count(l->height, c->image_height), l->tiles_x, l->tiles_y);
    if (c->L < 64)
        for (size_t i = 0; i < l->count; i++)
            if (t->idx[i] >> c->L)
                return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                                "token %zu has index %llu, beyond %d bits", i,
                                (unsigned long long)t->idx[i], c->L);
    return BSQ_OK;
}

/* Decoded tiles of sequences s0 .. s0+n-1 into the output: copied when
 * the tiles are the images, else blended (weights summed in wsum). */
static void collect_pixels(const plan *p, float *pixels, const float *pix, int s0, int n, int direct)
{
    const int tiles = p->ny * p->nx;
    const size_t tile_px = (size_t)3 * p->T * p->th * p->tw, img_px = (size_t)3 * p->T * p->H * p->W;
    if (direct) {
        memcpy(pixels + (size_t)s0 * img_px, pix, (size_t)n * img_px * sizeof(float));
        return;
    }
    for (int i = 0; i < n; i++) {
        int s = s0 + i, b = s / tiles;
        bsq_tile_accumulate(pixels + (size_t)b * img_px, NULL, pix + (size_t)i * tile_px, p->T, p->H,
                            p->W, (s % tiles) / p->nx, p->ny, s % p->nx, p->nx, p->th, p->tw);
    }
}

bsq_status bsq_decode(bsq_context *ctx, const bsq_tokens *tokens, float *pixels, bsq_error *err)
{
    if (!ctx || !tokens || !pixels)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_decode: NULL argument");
    const bsq_token_layout *l = &tokens->layout;
    plan p;
    bsq_status st = check_tokens(ctx, tokens, err);
    if (st != BSQ_OK ||
        (st = make_plan(ctx, l->batch, l->frames, l->height, l->width, &p, err)) != BSQ_OK)
        return st;
    const int frames = p.T, chunk = bsq_graph_chunk(ctx, frames);
    const size_t tile_px = (size_t)3 * frames * p.th * p.tw;
    const size_t img_px = (size_t)3 * frames * p.H * p.W, seq_tok = (size_t)frames * p.P;
    const int direct = p.ny * p.nx == 1 && p.H == p.th && p.W == p.tw;
    const int nchunks = (p.seqs + chunk - 1) / chunk;
    pipeline pl = {{-1, -1}, nchunks > 1 ? bsq_graph_slots(ctx) : 1};
    float *pix[2] = {NULL, NULL};
    uint64_t *idx[2] = {NULL, NULL};
    float *dimg = bsq_context_images(ctx, img_px * p.B);
    const bsq_tile_grid grid = {frames, p.H, p.W, p.th, p.tw, p.ny, p.nx};
    float *wsum = direct || dimg ? NULL : bsq_context_host(ctx, BSQ_HOST(BSQ_HOST_AUX, 0),
                                                           (size_t)p.H * p.W * sizeof(float));
    for (int sl = 0; sl < pl.slots; sl++) {
        if (!dimg)
            pix[sl] = bsq_context_host(ctx, BSQ_HOST(BSQ_HOST_PIX, sl), tile_px * chunk * sizeof(float));
        idx[sl] = bsq_context_host(ctx, BSQ_HOST(BSQ_HOST_IDX, sl), seq_tok * chunk * sizeof(uint64_t));
        if ((!dimg && !pix[sl]) || !idx[sl])
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    }
    if (!direct && !dimg && !wsum)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    if (dimg) {
        ctx->be->ops->zero(ctx->be, dimg, img_px * p.B); /* tiles are blended into it */
    } else if (!direct) {
        memset(pixels, 0, img_px * p.B * sizeof(float));
        bsq_tile_weight_map(wsum, p.H, p.W, p.th, p.tw); /* the same for every image */
    }
    for (int k = 0; k < nchunks && st == BSQ_OK; k++) {
        const int sl = k % pl.slots;
        if (pl.pending[sl] >= 0) {
            int s0 = pl.pending[sl] * chunk;
            pl.pending[sl] = -1;
            if ((st = bsq_graph_finish(ctx, sl, err)) != BSQ_OK)
                break;
            if (!dimg)
                collect_pixels(&p, pixels, pix[sl], s0, chunk_size(&p, s0, chunk),
                               direct);
        }
        const int s0 = k * chunk, n = chunk_size(&p, s0, chunk);
        for (int i = 0; i < n; i++)
            for (int t = 0; t < frames; t++)
                memcpy(idx[sl] + ((size_t)i * frames + t) * p.P,
                       tokens->idx + layout_offset(&p, s0 + i, t), p.P * sizeof(uint64_t));
        bsq_tile_ref ref = {dimg, grid, s0, NULL, 0, 0};
        st = bsq_graph_decode_queue(ctx, sl, idx[sl], n, frames, pix[sl], dimg ? &ref : NULL, err);
        if (st == BSQ_OK)
            pl.pending[sl] = k;
    }
    int left[2] = {pl.pending[0], pl.pending[1]};
    st = drain_all(ctx, &pl, st, err);
    for (int sl = 0; sl < pl.slots && st == BSQ_OK && !dimg; sl++)
        if (left[sl] >= 0) {
            int s0 = left[sl] * chunk;
            collect_pixels(&p, pixels, pix[sl], s0, chunk_size(&p, s0, chunk), direct);
        }
    if (st == BSQ_OK && dimg) { /* the blended images, in one piece */
        ctx->be->ops->download(ctx->be, pixels, dimg, img_px * p.B);
        return ctx->be->ops->sync(ctx->be, err);
    }
    if (st == BSQ_OK && !direct)
        for (int b = 0; b < p.B; b++)
            for (size_t plane = 0; plane < (size_t)3 * frames; plane++) {
                float *o = pixels + (size_t)b * img_px + plane * p.H * p.W;
                for (size_t i = 0; i < (size_t)p.H * p.W; i++)
                    o[i] /= wsum[i];
            }
    return st;
}

bsq_status bsq_encode_rgb8(bsq_context *ctx, const uint8_t *rgb, int width, int height,
                           size_t stride, bsq_tokens **out, bsq_error *err)
{
    if (!rgb || width < 1 || height < 1 || stride < (size_t)width * 3)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_encode_rgb8: bad image arguments");
    size_t plane = (size_t)width * height;
    float *pix = malloc(plane * 3 * sizeof(float));
    if (!pix)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    bsq_rgb8_to_planar(rgb, width, height, stride, pix);
    bsq_status st = bsq_encode(ctx, pix, 1, 1, height, width, out, err);
    free(pix);
    return st;
}

bsq_status bsq_decode_rgb8(bsq_context *ctx, const bsq_tokens *tokens, uint8_t *rgb, size_t stride,
                           bsq_error *err)
{
    if (!tokens || !rgb)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_decode_rgb8: NULL argument");
    const bsq_token_layout *l = &tokens->layout;
    if (l->batch != 1 || l->frames != 1 || stride < (size_t)l->width * 3)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "bsq_decode_rgb8 takes one image (batch 1, 1 frame) and a stride >= 3*width");
    size_t plane = (size_t)l->width * l->height;
    float *pix = malloc(plane * 3 * sizeof(float));
    if (!pix)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    bsq_status st = bsq_decode(ctx, tokens, pix, err);
    if (st == BSQ_OK)
        bsq_planar_to_rgb8(pix, l->width, l->height, rgb, stride);
    free(pix);
    return st;
}

void bsq_rgb8_to_planar(const uint8_t *rgb, int width, int height, size_t stride, float *planar)
{
    const size_t plane = (size_t)width * height;
    for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
            for (int c = 0; c < 3; c++)
                planar[c * plane + (size_t)y * width + x] =
                    bsq_unit_of_u8(rgb[y * stride + 3 * (size_t)x + c]);
}

void bsq_planar_to_rgb8(const float *planar, int width, int height, uint8_t *rgb, size_t stride)
{
    const size_t plane = (size_t)width * height;
    for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
            for (int c = 0; c < 3; c++)
                rgb[y * stride + 3 * (size_t)x + c] =
                    bsq_u8_of_unit(planar[c * plane + (size_t)y * width + x]);
}
