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

bsq_status bsq_stream_encode(bsq_stream *s, const float *frame, bsq_tokens **out, bsq_error *err)
{
    if (!s || !frame || !out || s->mode != BSQ_STREAM_ENCODE)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_stream_encode: bad arguments");
    const bsq_config *c = &s->ctx->model->cfg;
    int tiles = s->ny * s->nx;
    size_t tile_px = (size_t)3 * s->th * s->tw;
    bsq_tile_ref ref = frame_ref(s);
    if (s->frame) { /* the frame goes up whole; the backend cuts it */
        ref.upload_src = frame;
        ref.upload_count = (size_t)3 * s->H * s->W;
    } else {
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

bsq_status bsq_stream_decode(bsq_stream *s, const bsq_tokens *tokens, float *frame, bsq_error *err)
{
    if (!s || !tokens || !frame || s->mode != BSQ_STREAM_DECODE)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_stream_decode: bad arguments");
    const bsq_config *c = &s->ctx->model->cfg;
    const bsq_token_layout *l = &tokens->layout;
    int tiles = s->ny * s->nx;
    if (l->L != c->L || l->batch != 1 || l->frames != 1 || l->tiles_y != s->ny ||
        l->tiles_x != s->nx || l->grid_h * l->grid_w != s->P || l->height != s->H ||
        l->width != s->W)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "tokens are not one %dx%d frame of this model", s->W, s->H);
    if (c->L < 64)
        for (size_t i = 0; i < l->count; i++)
            if (tokens->idx[i] >> c->L)
                return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "token %zu exceeds %d bits", i, c->L);
    const int direct = tiles == 1 && s->H == s->th && s->W == s->tw;
    memcpy(s->idx, tokens->idx, (size_t)tiles * s->P * sizeof(uint64_t));
    bsq_backend *be = s->ctx->be;
    bsq_tile_ref ref = frame_ref(s);
    if (s->frame && !direct) /* the backend blends the tiles into the frame */
        be->ops->zero(be, s->frame, (size_t)3 * s->H * s->W);
    bsq_status st = bsq_graph_decode_pinned(s->ctx, s->idx, tiles, s->pos,
                                            c->num_frames > 1 ? &s->kv : NULL,
                                            direct ? frame : s->pix,
                                            s->frame && !direct ? &ref : NULL, err);
    if (st == BSQ_OK && s->frame && !direct) {
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
