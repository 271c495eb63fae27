/* Frame-by-frame video with a key/value cache per transformer stack. With a
 * block-causal mask a frame's tokens depend only on frames 0..t of its
 * block, so caching the keys and values of earlier frames gives exactly what
 * encoding the whole block at once gives. */
#include <stdlib.h>
#include <string.h>

#include "context.h"
#include "error.h"
#include "graph.h"
#include "tiling.h"
#include "tokens.h"

struct bsq_stream {
    bsq_context *ctx;
    bsq_stream_mode mode;
    int H, W, th, tw, ny, nx, P;
    int pos;       /* next frame's index inside the block */
    bsq_kv kv;
    float *pix;    /* tiles of one frame [ny*nx][3][th][tw] (pinned on a GPU) */
    uint64_t *idx; /* their tokens, engine order (pinned on a GPU) */
    float *wsum;   /* blend weights [H][W] (decode, tiled on the host) */
    float *frame;  /* the frame on the backend, which tiles it itself (NULL: the host tiles) */
    float *rgb_dev;    /* RGB24 bytes of a frame on the backend (made on first use) */
    uint8_t *rgb_host; /* their pinned host side, packed rows */
    float *planar;     /* planar pixels for RGB24 frames converted on the host */
};

bsq_status bsq_stream_create(bsq_context *ctx, bsq_stream_mode mode, int height, int width,
                             bsq_stream **out, bsq_error *err)
{
    if (!ctx || !out || (mode != BSQ_STREAM_ENCODE && mode != BSQ_STREAM_DECODE) || height < 1 ||
        width < 1 || height > 1 << 16 || width > 1 << 16)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_stream_create: bad arguments");
    const bsq_config *c = &ctx->model->cfg;
    if (c->num_frames > 1 && !c->block_causal)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED,
                        "the model attends to later frames (no block-causal mask): it cannot stream");
    bsq_stream *s = calloc(1, sizeof *s);
    if (!s)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    s->ctx = ctx;
    s->mode = mode;
    s->H = height;
    s->W = width;
    s->th = c->image_height;
    s->tw = c->image_width;
    s->ny = bsq_tile_count(height, s->th);
    s->nx = bsq_tile_count(width, s->tw);
    s->P = (s->th / c->patch_size) * (s->tw / c->patch_size);
    size_t tiles = (size_t)s->ny * s->nx;
    s->pix = bsq_context_host_alloc(ctx, tiles * 3 * s->th * s->tw * sizeof(float));
    s->idx = bsq_context_host_alloc(ctx, tiles * s->P * sizeof(uint64_t));
    s->wsum = malloc((size_t)height * width * sizeof(float));
    const bsq_backend_ops *op = ctx->be->ops;
    if (!op->host_memory && op->tile_extract && op->tile_blend && op->zero)
        s->frame = op->alloc(ctx->be, (size_t)3 * height * width); /* NULL: tile on the host */
    bsq_status st = BSQ_OK;
    if (!s->pix || !s->idx || !s->wsum)
        st = bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    else if (c->num_frames > 1)
        st = bsq_kv_init(ctx, &s->kv, (int)tiles, err);
    if (st != BSQ_OK) {
        bsq_stream_destroy(s);
        return st;
    }
    bsq_tile_weight_map(s->wsum, height, width, s->th, s->tw);
    *out = s;
    return BSQ_OK;
}

void bsq_stream_destroy(bsq_stream *s)
{
    if (!s)
        return;
    bsq_kv_free(s->ctx, &s->kv);
    if (s->frame)
        s->ctx->be->ops->free(s->ctx->be, s->frame);
    if (s->rgb_dev)
        s->ctx->be->ops->free(s->ctx->be, s->rgb_dev);
    bsq_context_host_free(s->ctx, s->rgb_host);
    free(s->planar);
    bsq_context_host_free(s->ctx, s->pix);
    bsq_context_host_free(s->ctx, s->idx);
    free(s->wsum);
    free(s);
}

void bsq_stream_restart(bsq_stream *s) { s->pos = 0; }
int bsq_stream_position(const bsq_stream *s) { return s->pos; }

/* The frame's tiles on the backend, for graph calls that cut or blend them there. */
static bsq_tile_ref frame_ref(const bsq_stream *s)
{
    bsq_tile_ref r = {s->frame, {1, s->H, s->W, s->th, s->tw, s->ny, s->nx}, 0, NULL, 0, 0};
    return r;
}

static void advance(bsq_stream *s)
{
    if (++s->pos >= s->ctx->model->cfg.num_frames)
        s->pos = 0; /* the next frame opens a new block */
}

/* Encodes the frame: from host pixels `frame`, or (frame NULL) from the
 * pixels already in s->frame on the backend. */
static bsq_status encode_frame(bsq_stream *s, const float *frame, bsq_tokens **out, bsq_error *err)
{
    const bsq_config *c = &s->ctx->model->cfg;
    int tiles = s->ny * s->nx;
    size_t tile_px = (size_t)3 * s->th * s->tw;
    bsq_tile_ref ref = frame_ref(s);
    if (s->frame && frame) { /* the frame goes up whole; the backend cuts it */
        ref.upload_src = frame;
        ref.upload_count = (size_t)3 * s->H * s->W;
    } else if (!s->frame) {
        for (int i = 0; i < tiles; i++)
            bsq_tile_extract(frame, 1, s->H, s->W, bsq_tile_pos(i / s->nx, s->ny, s->H, s->th),
                             bsq_tile_pos(i % s->nx, s->nx, s->W, s->tw), s->th, s->tw,
                             s->pix + i * tile_px);
    }
    bsq_token_layout lay = {.L = c->L, .batch = 1, .frames = 1, .tiles_y = s->ny, .tiles_x = s->nx,
                            .grid_h = c->image_height / c->patch_size,
                            .grid_w = c->image_width / c->patch_size, .height = s->H, .width = s->W};
    bsq_tokens *tok;
    bsq_status st = bsq_tokens_create(&lay, &tok, err);
    if (st != BSQ_OK)
        return st;
    st = bsq_graph_encode_pinned(s->ctx, s->pix, s->frame ? &ref : NULL, tiles, s->pos,
                                 c->num_frames > 1 ? &s->kv : NULL, s->idx, err);
    if (st != BSQ_OK) {
        bsq_tokens_free(tok);
        return st;
    }
    /* one frame: engine order (tile, token) equals layout order */
    memcpy(tok->idx, s->idx, (size_t)tiles * s->P * sizeof(uint64_t));
    advance(s);
    *out = tok;
    return BSQ_OK;
}

bsq_status bsq_stream_encode(bsq_stream *s, const float *frame, bsq_tokens **out, bsq_error *err)
{
    if (!s || !frame || !out || s->mode != BSQ_STREAM_ENCODE)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_stream_encode: bad arguments");
    return encode_frame(s, frame, out, err);
}

static bsq_status check_frame_tokens(const bsq_stream *s, const bsq_tokens *tokens, bsq_error *err)
{
    const bsq_config *c = &s->ctx->model->cfg;
    const bsq_token_layout *l = &tokens->layout;
    if (l->L != c->L || l->batch != 1 || l->frames != 1 || l->tiles_y != s->ny ||
        l->tiles_x != s->nx || l->grid_h * l->grid_w != s->P || l->height != s->H ||
        l->width != s->W)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "tokens are not one %dx%d frame of this model", s->W, s->H);
    if (c->L < 64)
        for (size_t i = 0; i < l->count; i++)
            if (tokens->idx[i] >> c->L)
                return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "token %zu exceeds %d bits", i, c->L);
    return BSQ_OK;
}

/* Decodes one frame's tokens: to host pixels `frame`, or (frame NULL) into
 * s->frame on the backend. */
static bsq_status decode_frame(bsq_stream *s, const bsq_tokens *tokens, float *frame,
                               bsq_error *err)
{
    const bsq_config *c = &s->ctx->model->cfg;
    int tiles = s->ny * s->nx;
    bsq_status st = check_frame_tokens(s, tokens, err);
    if (st != BSQ_OK)
        return st;
    const int direct = frame && tiles == 1 && s->H == s->th && s->W == s->tw;
    const int on_backend = s->frame && !direct; /* blended into s->frame */
    memcpy(s->idx, tokens->idx, (size_t)tiles * s->P * sizeof(uint64_t));
    bsq_backend *be = s->ctx->be;
    bsq_tile_ref ref = frame_ref(s);
    if (on_backend)
        be->ops->zero(be, s->frame, (size_t)3 * s->H * s->W);
    st = bsq_graph_decode_pinned(s->ctx, s->idx, tiles, s->pos, c->num_frames > 1 ? &s->kv : NULL,
                                 direct ? frame : s->pix, on_backend ? &ref : NULL, err);
    if (st == BSQ_OK && on_backend && frame) {
        be->ops->download(be, frame, s->frame, (size_t)3 * s->H * s->W);
        st = be->ops->sync(be, err);
    }
    if (st != BSQ_OK)
        return st;
    if (!direct && !s->frame) {
        size_t plane = (size_t)s->H * s->W, tile_px = (size_t)3 * s->th * s->tw;
        memset(frame, 0, 3 * plane * sizeof(float));
        for (int i = 0; i < tiles; i++)
            bsq_tile_accumulate(frame, NULL, s->pix + i * tile_px, 1, s->H, s->W, i / s->nx, s->ny,
                                i % s->nx, s->nx, s->th, s->tw);
        for (int ch = 0; ch < 3; ch++)
            for (size_t i = 0; i < plane; i++)
                frame[ch * plane + i] /= s->wsum[i];
    }
    advance(s);
    return BSQ_OK;
}

bsq_status bsq_stream_decode(bsq_stream *s, const bsq_tokens *tokens, float *frame, bsq_error *err)
{
    if (!s || !tokens || !frame || s->mode != BSQ_STREAM_DECODE)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_stream_decode: bad arguments");
    return decode_frame(s, tokens, frame, err);
}

/* ---- RGB24 frames: converted on the backend where it holds the frame ---- */

/* The byte buffers of the RGB24 path on the backend, made on first use;
 * 0 when the backend cannot convert (the host converts then). */
static int rgb_on_backend(bsq_stream *s)
{
    const bsq_backend_ops *op = s->ctx->be->ops;
    if (!s->frame || !op->rgb8_to_planar || !op->planar_to_rgb8)
        return 0;
    size_t bytes = (size_t)3 * s->H * s->W, words = (bytes + 3) / 4;
    if (!s->rgb_dev)
        s->rgb_dev = op->alloc(s->ctx->be, words);
    if (!s->rgb_host)
        s->rgb_host = bsq_context_host_alloc(s->ctx, words * 4);
    return s->rgb_dev && s->rgb_host;
}

/* Host planar pixels for the RGB24 path on the host. */
static float *host_planar(bsq_stream *s)
{
    if (!s->planar)
        s->planar = malloc((size_t)3 * s->H * s->W * sizeof(float));
    return s->planar;
}

bsq_status bsq_stream_encode_rgb8(bsq_stream *s, const uint8_t *rgb, size_t stride,
                                  bsq_tokens **out, bsq_error *err)
{
    if (!s || !rgb || !out || s->mode != BSQ_STREAM_ENCODE || stride < (size_t)s->W * 3)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_stream_encode_rgb8: bad arguments");
    if (!rgb_on_backend(s)) {
        float *planar = host_planar(s);
        if (!planar)
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
        bsq_rgb8_to_planar(rgb, s->W, s->H, stride, planar);
        return encode_frame(s, planar, out, err);
    }
    /* bytes up (a quarter of the floats), converted there */
    const size_t row = (size_t)s->W * 3, words = ((size_t)s->H * row + 3) / 4;
    for (int y = 0; y < s->H; y++)
        memcpy(s->rgb_host + y * row, rgb + y * stride, row);
    bsq_backend *be = s->ctx->be;
    be->ops->upload(be, s->rgb_dev, (const float *)(const void *)s->rgb_host, words);
    be->ops->rgb8_to_planar(be, s->rgb_dev, s->frame, s->W, s->H);
    return encode_frame(s, NULL, out, err);
}

bsq_status bsq_stream_decode_rgb8(bsq_stream *s, const bsq_tokens *tokens, uint8_t *rgb,
                                  size_t stride, bsq_error *err)
{
    if (!s || !tokens || !rgb || s->mode != BSQ_STREAM_DECODE || stride < (size_t)s->W * 3)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_stream_decode_rgb8: bad arguments");
    if (!rgb_on_backend(s)) {
        float *planar = host_planar(s);
        if (!planar)
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
        bsq_status st = decode_frame(s, tokens, planar, err);
        if (st == BSQ_OK)
            bsq_planar_to_rgb8(planar, s->W, s->H, rgb, stride);
        return st;
    }
    bsq_status st = decode_frame(s, tokens, NULL, err);
    if (st != BSQ_OK)
        return st;
    const size_t row = (size_t)s->W * 3, words = ((size_t)s->H * row + 3) / 4;
    bsq_backend *be = s->ctx->be;
    be->ops->planar_to_rgb8(be, s->frame, s->rgb_dev, s->W, s->H);
    be->ops->download(be, (float *)(void *)s->rgb_host, s->rgb_dev, words);
    if ((st = be->ops->sync(be, err)) != BSQ_OK)
        return st;
    for (int y = 0; y < s->H; y++)
        memcpy(rgb + y * stride, s->rgb_host + y * row, row);
    return BSQ_OK;
}
