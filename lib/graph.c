#include "graph.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "error.h"


typedef struct {
    size_t rows;
    int P, D, M, F, L, P3, T;
    float *pix, *tok, *x, *h, *qkv, *att, *mlp, *v;
} buffers;

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

static bsq_status setup(bsq_context *ctx, int slot, int seqs, int frames, buffers *b,
                        bsq_error *err)
{
    const bsq_config *c = &ctx->model->cfg;
    b->P = (c->image_height / c->patch_size) * (c->image_width / c->patch_size);
    b->D = c->width;
    b->M = c->mlp_dim;
    b->F = c->decoder_ffn_dim;
    b->L = c->L;
    b->P3 = 3 * c->patch_size * c->patch_size;
    b->T = frames;
    b->rows = (size_t)seqs * frames * b->P;
    size_t R = b->rows;
    size_t need = R * ((size_t)b->P3 * 2 + (size_t)b->D * 6 + max_sz((size_t)b->M, (size_t)b->F) +
                       (size_t)b->L) + 16 * 8;
    float *ws;
    bsq_status st = bsq_context_workspace(ctx, slot, need, &ws, err);
    if (st != BSQ_OK)
        return st;
    if (ctx->be->ops->reserve) { /* the widest product input: encode and decode alike */
        int widest = b->P3;
        const int dims[4] = {b->D, b->M, b->F, b->L};
        for (int i = 0; i < 4; i++)
            widest = dims[i] > widest ? dims[i] : widest;
        ctx->be->ops->reserve(ctx->be, R, widest);
    }
    /* carve, keeping 64-byte alignment */
#define CARVE(ptr, n) (ptr = ws, ws += ((n) + 15) & ~(size_t)15)
    CARVE(b->pix, R * b->P3);
    CARVE(b->tok, R * b->P3);
    CARVE(b->x, R * b->D);
    CARVE(b->h, R * b->D);
    CARVE(b->qkv, R * 3 * b->D);
    CARVE(b->att, R * b->D);
    CARVE(b->mlp, R * max_sz((size_t)b->M, (size_t)b->F));
    CARVE(b->v, R * b->L);
#undef CARVE
    return BSQ_OK;
}

int bsq_graph_chunk(const bsq_context *ctx, int frames)
{
    const bsq_config *c = &ctx->model->cfg;
    int per = frames * (c->image_height / c->patch_size) * (c->image_width / c->patch_size);
    size_t rows = ctx->chunk_rows          ? ctx->chunk_rows
                  : ctx->be->ops->preferred_rows ? ctx->be->ops->preferred_rows
                                                 : 8192;
    int n = (int)(rows / (size_t)per);
    return n < 1 ? 1 : n;
}

bsq_status bsq_kv_init(bsq_context *ctx, bsq_kv *kv, int seqs, bsq_error *err)
{
    const bsq_config *c = &ctx->model->cfg;
    size_t P = (size_t)(c->image_height / c->patch_size) * (c->image_width / c->patch_size);
    memset(kv, 0, sizeof *kv);
    kv->layers = c->layers;
    kv->seqs = seqs;
    kv->cap_frames = c->num_frames;
    size_t n = (size_t)c->layers * 2 * seqs * c->num_frames * P * c->width;
    if (n == 0)
        return BSQ_OK;
    kv->block = ctx->be->ops->alloc(ctx->be, n);
    if (!kv->block)
        return bsq_fail(err, BSQ_ERR_NOMEM, "cannot allocate a %zu MB key/value cache", n * 4 >> 20);
    return BSQ_OK;
}

void bsq_kv_free(bsq_context *ctx, bsq_kv *kv)
{
    if (kv->block)
        ctx->be->ops->free(ctx->be, kv->block);
    memset(kv, 0, sizeof *kv);
}

/* x += in w^T + bias, fused where the backend can (tmp: rows x n scratch). */
static void residual(bsq_backend *be, const float *in, const float *w, const float *bias, float *x,
                     float *tmp, size_t rows, int k, int n)
{
    if (be->ops->linear_residual) {
        be->ops->linear_residual(be, in, w, bias, x, rows, k, n);
    } else {
        be->ops->linear(be, in, w, bias, tmp, rows, k, n);
        be->ops->add(be, x, tmp, rows * (size_t)n);
    }
}

/* x [seqs][T][P][D] through one transformer stack (spec §2, §3). */
static void run_stack(bsq_context *ctx, const bsq_stack_w *sw, const buffers *b, int seqs, int t0,
                      bsq_kv *kv)
{
    bsq_backend *be = ctx->be;
    const bsq_backend_ops *op = be->ops;
    const bsq_config *c = &ctx->model->cfg;
    const int D = b->D, hd = D / c->heads;
    const size_t R = b->rows, seq_rows = (size_t)b->T * b->P;
    const float eps = c->layer_norm_eps;

    op->add_pos(be, b->x, sw->pos, sw->tpos, seqs, b->T, b->P, D, t0);
    op->layernorm(be, b->x, sw->ln_pre_w, sw->ln_pre_b, b->x, R, D, eps);
    for (int l = 0; l < c->layers; l++) {
        const bsq_block_w *bw = &sw->blocks[l];
        op->layernorm(be, b->x, bw->ln1_w, bw->ln1_b, b->h, R, D, eps);
        op->linear(be, b->h, bw->qkv_w, bw->qkv_b, b->qkv, R, D, 3 * D);

        bsq_attention_args a = {
            .q = b->qkv, .out = b->att,
            .q_stride = 3 * (size_t)D, .out_stride = (size_t)D,
            .q_seq = seq_rows, .out_seq = seq_rows,
            .batch = seqs, .nq = (int)seq_rows, .heads = c->heads, .head_dim = hd,
            .block = c->block_causal ? b->P : 0,
            .scale = 1.0f / sqrtf((float)hd),
        };
        if (kv) {
            /* append this call's keys and values after the cached frames */
            size_t cap_rows = (size_t)kv->cap_frames * b->P;
            float *kc = kv->block + (size_t)l * 2 * kv->seqs * cap_rows * D;
            float *vc = kc + (size_t)kv->seqs * cap_rows * D;
            for (int s = 0; s < seqs; s++) {
                size_t dst = ((size_t)s * cap_rows + (size_t)t0 * b->P) * D;
                const float *src = b->qkv + (size_t)s * seq_rows * 3 * D;
                op->copy2d(be, kc + dst, D, src + D, 3 * (size_t)D, seq_rows, D);
                op->copy2d(be, vc + dst, D, src + 2 * D, 3 * (size_t)D, seq_rows, D);
            }
            a.k = kc;
            a.v = vc;
            a.kv_stride = D;
            a.kv_seq = cap_rows;
            a.nk = (t0 + b->T) * b->P;
            a.q_offset = t0 * b->P;
        } else {
            a.k = b->qkv + D;
            a.v = b->qkv + 2 * D;
            a.kv_stride = 3 * (size_t)D;
            a.kv_seq = seq_rows;
            a.nk = (int)seq_rows;
            a.q_offset = 0;
        }
        op->attention(be, &a);
        residual(be, b->att, bw->out_w, bw->out_b, b->x, b->h, R, D, D);

        op->layernorm(be, b->x, bw->ln2_w, bw->ln2_b, b->h, R, D, eps);
        if (op->linear_gelu) {
            op->linear_gelu(be, b->h, bw->fc_w, bw->fc_b, b->mlp, R, D, b->M);
        } else {
            op->linear(be, b->h, bw->fc_w, bw->fc_b, b->mlp, R, D, b->M);
            op->gelu(be, b->mlp, R * b->M);
        }
        residual(be, b->mlp, bw->proj_w, bw->proj_b, b->x, b->h, R, b->M, D);
    }
    op->layernorm(be, b->x, sw->ln_post_w, sw->ln_post_b, b->x, R, D, eps);
}

static bsq_status check_frames(bsq_context *ctx, int seqs, int frames, int t0, bsq_kv *kv,
                               bsq_error *err)
{
    const bsq_config *c = &ctx->model->cfg;
    if (seqs < 1 || frames < 1 || t0 < 0 || t0 + frames > c->num_frames)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "frames %d..%d outside the model's %d-frame block", t0, t0 + frames - 1,
                        c->num_frames);
    if (t0 > 0 && (!kv || kv->seqs < seqs))
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "frame offset %d needs a key/value cache", t0);
    return BSQ_OK;
}

/* A key for the backend's recorded work (replay): the call's kind, sizes
 * and every buffer its ops touch. */
static uint64_t graph_key(const uint64_t *v, int n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 8; j++)
            h = (h ^ ((v[i] >> (8 * j)) & 0xff)) * 1099511628211ull;
    return h;
}

/* How one graph call runs: `slot` names the workspace; `piped` when the
 * call is a chunk of a pipeline (its host buffers untouched until
 * bsq_graph_finish), so the backend may overlap it with the other slot;
 * `pinned` when its host buffers come from the backend's host_alloc, so the
 * backend may record the work and replay it. */
typedef struct {
    int slot, piped, pinned;
} run_mode;

static bsq_status encode_run(bsq_context *ctx, run_mode m, const float *pix,
                             const bsq_tile_ref *src, int seqs, int frames, int t0, bsq_kv *kv,
                             uint64_t *idx, float *z, const bsq_taps *taps, bsq_error *err)
{
    const bsq_config *c = &ctx->model->cfg;
    bsq_backend *be = ctx->be;
    const bsq_backend_ops *op = be->ops;
    buffers b;
    bsq_status st = check_frames(ctx, seqs, frames, t0, kv, err);
    if (st != BSQ_OK || (st = setup(ctx, m.slot, seqs, frames, &b, err)) != BSQ_OK)
        return st;
    const int gh = c->image_height / c->patch_size, gw = c->image_width / c->patch_size;
    const int piped = m.piped && op->begin, keyed = m.pinned && op->replay && !taps;

    if (piped)
        op->begin(be, m.slot);
    if (!src)
        op->upload(be, b.pix, pix, b.rows * b.P3);
    else if (src->upload_count)
        op->upload(be, src->img + src->upload_off, src->upload_src, src->upload_count);
    const uint64_t kv_[] = {1, (uint64_t)seqs, (uint64_t)frames, (uint64_t)(uintptr_t)b.pix,
                            (uint64_t)(uintptr_t)idx, z != NULL, (uint64_t)(uintptr_t)ctx->weights,
                            (uint64_t)t0, (uint64_t)(uintptr_t)(kv ? kv->block : NULL),
                            (uint64_t)(uintptr_t)(src ? src->img : NULL),
                            src ? (uint64_t)src->s0 : 0,
                            src ? (uint64_t)src->grid.H << 32 | (uint64_t)src->grid.W : 0};
    const uint64_t key = keyed ? graph_key(kv_, 12) : 0;
    if (!keyed || !op->replay(be, key)) {
        if (src)
            op->tile_extract(be, src->img, b.pix, &src->grid, src->s0, seqs);
        op->patchify(be, b.pix, b.tok, seqs, frames, gh, gw, c->patch_size);
        op->linear(be, b.tok, ctx->w.embed_w, NULL, b.x, b.rows, b.P3, b.D);
        run_stack(ctx, &ctx->w.enc, &b, seqs, t0, kv);
        if (taps && taps->encoder_out)
            op->download(be, taps->encoder_out, b.x, b.rows * b.D);
        op->linear(be, b.x, ctx->w.quant_w, ctx->w.quant_b, b.v, b.rows, b.D, b.L);
        if (taps && taps->pre_quant)
            op->download(be, taps->pre_quant, b.v, b.rows * b.L);
        /* z reuses the patch buffer, free by now */
        op->quantize(be, b.v, z ? b.tok : NULL, idx, b.rows, b.L);
        if (keyed)
            op->record_end(be, key);
    }
    if (z)
        op->download(be, z, b.tok, b.rows * b.L);
    if (piped)
        op->end(be, m.slot);
    return BSQ_OK;
}

static bsq_status decode_run(bsq_context *ctx, run_mode m, const uint64_t *idx, int seqs,
                             int frames, int t0, bsq_kv *kv, float *pix, const bsq_tile_ref *dst,
                             const bsq_taps *taps, bsq_error *err)
{
    const bsq_config *c = &ctx->model->cfg;
    bsq_backend *be = ctx->be;
    const bsq_backend_ops *op = be->ops;
    buffers b;
    bsq_status st = check_frames(ctx, seqs, frames, t0, kv, err);
    if (st != BSQ_OK || (st = setup(ctx, m.slot, seqs, frames, &b, err)) != BSQ_OK)
        return st;
    const int gh = c->image_height / c->patch_size, gw = c->image_width / c->patch_size;
    const int piped = m.piped && op->begin, keyed = m.pinned && op->replay && !taps;

    if (piped)
        op->begin(be, m.slot);
    const uint64_t kv_[] = {2, (uint64_t)seqs, (uint64_t)frames, (uint64_t)(uintptr_t)b.pix,
                            (uint64_t)(uintptr_t)idx, (uint64_t)(uintptr_t)ctx->weights,
                            (uint64_t)t0, (uint64_t)(uintptr_t)(kv ? kv->block : NULL),
                            (uint64_t)(uintptr_t)(dst ? dst->img : NULL),
                            dst ? (uint64_t)dst->s0 : 0,
                            dst ? (uint64_t)dst->grid.H << 32 | (uint64_t)dst->grid.W : 0};
    const uint64_t key = keyed ? graph_key(kv_, 11) : 0;
    if (!keyed || !op->replay(be, key)) {
        op->dequantize(be, idx, b.v, b.rows, b.L);
        op->linear(be, b.v, ctx->w.post_w, ctx->w.post_b, b.x, b.rows, b.L, b.D);
        run_stack(ctx, &ctx->w.dec, &b, seqs, t0, kv);
        op->linear(be, b.x, ctx->w.ffn_w, ctx->w.ffn_b, b.mlp, b.rows, b.D, b.F);
        op->tanh(be, b.mlp, b.rows * b.F);
        op->linear(be, b.mlp, ctx->w.out_w, ctx->w.out_b, b.tok, b.rows, b.F, b.P3);
        if (taps && taps->decoder_out) {
            op->unpatchify(be, b.tok, b.pix, seqs, frames, gh, gw, c->patch_size, 0);
            op->download(be, taps->decoder_out, b.pix, b.rows * b.P3);
        }
        op->unpatchify(be, b.tok, b.pix, seqs, frames, gh, gw, c->patch_size, 1);
        if (dst)
            op->tile_blend(be, b.pix, dst->img, &dst->grid, dst->s0, seqs);
        if (keyed)
            op->record_end(be, key);
    }
    if (!dst)
        op->download(be, pix, b.pix, b.rows * b.P3);
    if (piped)
        op->end(be, m.slot);
    return BSQ_OK;
}

bsq_status bsq_graph_encode(bsq_context *ctx, const float *pix, int seqs, int frames, int t0,
                            bsq_kv *kv, uint64_t *idx, float *z, const bsq_taps *taps,
                            bsq_error *err)
{
    run_mode m = {0, 0, 0};
    bsq_status st = encode_run(ctx, m, pix, NULL, seqs, frames, t0, kv, idx, z, taps, err);
    return st != BSQ_OK ? st : ctx->be->ops->sync(ctx->be, err);
}

bsq_status bsq_graph_decode(bsq_context *ctx, const uint64_t *idx, int seqs, int frames, int t0,
                            bsq_kv *kv, float *pix, const bsq_taps *taps, bsq_error *err)
{
    run_mode m = {0, 0, 0};
    bsq_status st = decode_run(ctx, m, idx, seqs, frames, t0, kv, pix, NULL, taps, err);
    return st != BSQ_OK ? st : ctx->be->ops->sync(ctx->be, err);
}

bsq_status bsq_graph_encode_pinned(bsq_context *ctx, const float *pix, const bsq_tile_ref *src,
                                   int seqs, int t0, bsq_kv *kv, uint64_t *idx, bsq_error *err)
{
    run_mode m = {0, 0, 1};
    bsq_status st = encode_run(ctx, m, pix, src, seqs, 1, t0, kv, idx, NULL, NULL, err);
    return st != BSQ_OK ? st : ctx->be->ops->sync(ctx->be, err);
}

bsq_status bsq_graph_decode_pinned(bsq_context *ctx, const uint64_t *idx, int seqs, int t0,
                                   bsq_kv *kv, float *pix, const bsq_tile_ref *dst, bsq_error *err)
{
    run_mode m = {0, 0, 1};
    bsq_status st = decode_run(ctx, m, idx, seqs, 1, t0, kv, pix, dst, NULL, err);
    return st != BSQ_OK ? st : ctx->be->ops->sync(ctx->be, err);
}

bsq_status bsq_graph_encode_queue(bsq_context *ctx, int slot, const float *pix,
                                  const bsq_tile_ref *src, int seqs, int frames, uint64_t *idx,
                                  float *z, bsq_error *err)
{
    run_mode m = {slot, 1, 1};
    return encode_run(ctx, m, pix, src, seqs, frames, 0, NULL, idx, z, NULL, err);
}

bsq_status bsq_graph_decode_queue(bsq_context *ctx, int slot, const uint64_t *idx, int seqs,
                                  int frames, float *pix, const bsq_tile_ref *dst, bsq_error *err)
{
    run_mode m = {slot, 1, 1};
    return decode_run(ctx, m, idx, seqs, frames, 0, NULL, pix, dst, NULL, err);
}

bsq_status bsq_graph_finish(bsq_context *ctx, int slot, bsq_error *err)
{
    const bsq_backend_ops *op = ctx->be->ops;
    return op->finish ? op->finish(ctx->be, slot, err) : op->sync(ctx->be, err);
}

int bsq_graph_slots(const bsq_context *ctx) { return ctx->be->ops->begin ? 2 : 1; }
