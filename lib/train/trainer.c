/* The training step: forward with saved activations, losses, backward
 * through the ops table, AdamW. See trainer.h. */
#include "trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "splitmix.h"
#include "model.h"
#include "train/entropy.h"
#include "train/optim.h"

/* Activations one transformer block keeps for its backward pass. */
typedef struct {
    float *x_in, *h1, *qkv, *att, *x_mid, *h2, *f, *g;
} block_act;

typedef struct {
    float *pre_in;   /* input of ln_pre (embedding + positions) */
    block_act *blk;  /* per layer */
    float *post_in;  /* input of ln_post */
    float *out;      /* output of ln_post */
} stack_act;

struct bsq_trainer {
    bsq_config cfg;
    bsq_train_options opt;
    bsq_backend *be;
    bsq_model *model;    /* current weights (model->data) */
    bsq_model_w w;       /* pointers into model->data */
    float *grad;         /* gradients, same layout */
    bsq_model_w gw;
    bsq_optim *optim;
    int64_t step;
    /* activations for `rows` rows */
    size_t rows;
    float *act;          /* one block holding everything below */
    float *pix, *tok, *v, *u, *codes, *recon;
    stack_act enc, dec;
    float *ffn_t;        /* tanh(ffn) [rows][F] */
    float *out_tok;      /* conv_out [rows][P3] */
    /* gradient scratch */
    float *d_x, *d_h, *d_qkv, *d_att, *d_mlp, *d_pix, *d_v, *d_c;
    float *inv_norm;     /* 1 / max(||v||, eps) per row */
};

void bsq_train_options_default(bsq_train_options *o)
{
    memset(o, 0, sizeof *o);
    o->lr = 5e-4;
    o->min_lr = 1e-5;
    o->warmup = 200;
    o->steps = 10000;
    o->beta1 = 0.9;
    o->beta2 = 0.99;
    o->adam_eps = 1e-8;
    o->weight_decay = 1e-4;
    o->clip = 1.0;
    o->ema = 0.999;
    o->l1 = 1.0;
    o->mse = 1.0;
    o->entropy = 0.1;
    o->entropy_start = 0.3;
    o->entropy_decay = 2000;
    o->inv_temp = 1.0;
    o->commit = 0.0;
    o->seed = 1;
}

/* ------------------------------------------------------------ init */
static double uniform(uint64_t *s)
{
    return ((bsq_splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* Normal draw truncated to two standard deviations (as trunc_normal_). */
static float trunc_normal(uint64_t *s, double std)
{
    for (;;) {
        double z = sqrt(-2.0 * log(uniform(s))) * cos(6.283185307179586 * uniform(s));
        if (fabs(z) <= 2.0)
            return (float)(z * std);
    }
}

static int is_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* Random weights as the official model initialises them: linear layers
 * truncated normal (std 0.02) with zero biases, LayerNorm 1 and 0,
 * positional embeddings width^-0.5 * N(0, 1). */
static void init_random(bsq_model *m, uint64_t seed)
{
    uint64_t s = seed;
    const double pos_scale = 1.0 / sqrt((double)m->cfg.width);
    for (size_t i = 0; i < m->nparams; i++) {
        const bsq_param *p = &m->params[i];
        float *d = m->data + p->offset;
        if (strstr(p->name, "positional_embedding")) {
            for (size_t k = 0; k < p->count; k++)
                d[k] = (float)(pos_scale * trunc_normal(&s, 1.0));
        } else if (p->ndim == 2) {
            for (size_t k = 0; k < p->count; k++)
                d[k] = trunc_normal(&s, 0.02);
        } else if (strstr(p->name, "ln_") && is_suffix(p->name, ".weight")) {
            for (size_t k = 0; k < p->count; k++)
                d[k] = 1.0f;
        } else {
            memset(d, 0, p->count * sizeof(float));
        }
    }
}

/* Copies `init`'s parameters by name; a temporal embedding the source lacks
 * (image model -> video model) starts at zero. */
static bsq_status init_from(bsq_model *m, const bsq_model *init, bsq_error *err)
{
    const bsq_config *a = &m->cfg, *b = &init->cfg;
    if (a->image_height != b->image_height || a->image_width != b->image_width ||
        a->patch_size != b->patch_size || a->width != b->width || a->layers != b->layers ||
        a->heads != b->heads || a->mlp_dim != b->mlp_dim ||
        a->decoder_ffn_dim != b->decoder_ffn_dim || a->L != b->L)
        return bsq_fail(err, BSQ_ERR_MODEL,
                        "the initial model's architecture differs from the one to train");
    if (b->num_frames > 1 && b->num_frames != a->num_frames)
        return bsq_fail(err, BSQ_ERR_MODEL, "the initial model has %d frames, not %d",
                        b->num_frames, a->num_frames);
    for (size_t i = 0; i < m->nparams; i++) {
        const bsq_param *p = &m->params[i];
        const bsq_param *q = NULL;
        for (size_t j = 0; j < init->nparams && !q; j++)
            if (!strcmp(init->params[j].name, p->name))
                q = &init->params[j];
        if (!q) {
            memset(m->data + p->offset, 0, p->count * sizeof(float));
            continue;
        }
        memcpy(m->data + p->offset, init->data + q->offset, p->count * sizeof(float));
    }
    return BSQ_OK;
}

/* ------------------------------------------------------------ create */
void bsq_trainer_destroy(bsq_trainer *t)
{
    if (!t)
        return;
    if (t->be) {
        t->be->ops->free(t->be, t->act);
        t->be->ops->destroy(t->be);
    }
    free(t->enc.blk);
    free(t->dec.blk);
    bsq_model_w_free(&t->w);
    bsq_model_w_free(&t->gw);
    free(t->grad);
    free(t->inv_norm);
    bsq_optim_destroy(t->optim);
    bsq_model_close(t->model);
    free(t);
}

bsq_status bsq_trainer_create(const bsq_config *cfg, const bsq_model *init,
                              const bsq_train_options *options, int threads,
                              bsq_trainer **out, bsq_error *err)
{
    bsq_trainer *t = calloc(1, sizeof *t);
    if (!t)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    t->cfg = *cfg;
    bsq_train_options_default(&t->opt);
    if (options)
        t->opt = *options;
    bsq_status st = bsq_model_alloc(cfg, &t->model, err);
    if (st != BSQ_OK)
        goto fail;
    if (cfg->width % cfg->heads || cfg->width / cfg->heads > 256) {
        st = bsq_fail(err, BSQ_ERR_MODEL, "head dimension must divide the width and be <= 256");
        goto fail;
    }
    if (init)
        st = init_from(t->model, init, err);
    else
        init_random(t->model, t->opt.seed);
    if (st != BSQ_OK)
        goto fail;
    size_t n = t->model->total;
    t->grad = aligned_alloc(64, (n * sizeof(float) + 63) & ~(size_t)63);
    t->enc.blk = calloc((size_t)cfg->layers, sizeof(block_act));
    t->dec.blk = calloc((size_t)cfg->layers, sizeof(block_act));
    if (!t->grad || !t->enc.blk || !t->dec.blk) {
        st = bsq_fail(err, BSQ_ERR_NOMEM, "out of memory for %zu gradients", n);
        goto fail;
    }
    memset(t->grad, 0, n * sizeof(float));
    if ((st = bsq_model_bind(t->model, t->model->data, &t->w, err)) != BSQ_OK ||
        (st = bsq_model_bind(t->model, t->grad, &t->gw, err)) != BSQ_OK ||
        (st = bsq_optim_create(t->model, &t->opt, &t->optim, err)) != BSQ_OK)
        goto fail;
    /* the backend is never told the weights are immutable (set_weights):
     * they change every step, so nothing may cache them */
    if ((st = bsq_backend_cpu_create(threads, &t->be, err)) != BSQ_OK)
        goto fail;
    if (!t->be->ops->matmul || !t->be->ops->attention_backward) {
        st = bsq_fail(err, BSQ_ERR_UNSUPPORTED, "the %s backend cannot train", t->be->ops->name);
        goto fail;
    }
    *out = t;
    return BSQ_OK;
fail:
    bsq_trainer_destroy(t);
    return st;
}

/* ------------------------------------------------------------ buffers */
static bsq_status ensure_rows(bsq_trainer *t, size_t rows, bsq_error *err)
{
    if (rows <= t->rows)
        return BSQ_OK;
    const bsq_config *c = &t->cfg;
    const size_t D = c->width, M = c->mlp_dim, F = c->decoder_ffn_dim, L = c->L;
    const size_t P3 = 3 * (size_t)c->patch_size * c->patch_size;
    const size_t per_block = 8 * D + 2 * M; /* x_in h1 qkv(3) att x_mid h2 f g */
    const size_t per_stack = 3 * D + (size_t)c->layers * per_block;
    size_t mx = M > F ? M : F; /* d_mlp holds the MLP's, the ffn's or the output's gradient */
    mx = mx > 3 * D ? mx : 3 * D;
    mx = mx > P3 ? mx : P3;
    size_t per_row = 2 * per_stack + P3 * 5 + 3 * L + F + /* grads: */ 3 * D + 3 * D + mx +
                     2 * L + 64;
    if (rows > ((size_t)1 << 40) / (per_row * sizeof(float)))
        return bsq_fail(err, BSQ_ERR_NOMEM, "batch too large");
    bsq_backend *be = t->be;
    be->ops->free(be, t->act);
    free(t->inv_norm);
    t->rows = 0;
    const size_t slack = 16 * (2 * (3 + 8 * (size_t)c->layers) + 24); /* TAKE's rounding */
    t->act = be->ops->alloc(be, rows * per_row + slack);
    t->inv_norm = malloc(rows * sizeof(float));
    if (!t->act || !t->inv_norm)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory for a training batch of %zu tokens (%zu MB)",
                        rows, rows * per_row * 4 >> 20);
    float *p = t->act;
#define TAKE(ptr, n) (ptr = p, p += (((n) * rows) + 15) & ~(size_t)15)
    stack_act *stacks[2] = {&t->enc, &t->dec};
    for (int s = 0; s < 2; s++) {
        stack_act *sa = stacks[s];
        TAKE(sa->pre_in, D);
        for (int l = 0; l < c->layers; l++) {
            block_act *b = &sa->blk[l];
            TAKE(b->x_in, D);
            TAKE(b->h1, D);
            TAKE(b->qkv, 3 * D);
            TAKE(b->att, D);
            TAKE(b->x_mid, D);
            TAKE(b->h2, D);
            TAKE(b->f, M);
            TAKE(b->g, M);
        }
        TAKE(sa->post_in, D);
        TAKE(sa->out, D);
    }
    TAKE(t->pix, P3);
    TAKE(t->tok, P3);
    TAKE(t->recon, P3);
    TAKE(t->out_tok, P3);
    TAKE(t->d_pix, P3);
    TAKE(t->v, L);
    TAKE(t->u, L);
    TAKE(t->codes, L);
    TAKE(t->ffn_t, F);
    TAKE(t->d_x, D);
    TAKE(t->d_h, D);
    TAKE(t->d_att, D);
    TAKE(t->d_qkv, 3 * D);
    TAKE(t->d_mlp, mx);
    TAKE(t->d_v, L);
    TAKE(t->d_c, L);
#undef TAKE
    t->rows = rows;
    return BSQ_OK;
}

/* ------------------------------------------------------------ forward */
typedef struct {
    int seqs, frames, P, D;
    size_t R;
} shape;

static bsq_attention_args att_args(const bsq_trainer *t, const shape *s, const float *qkv,
                                   float *out)
{
    const int D = s->D, hd = D / t->cfg.heads;
    const size_t seq_rows = (size_t)s->frames * s->P;
    bsq_attention_args a = {
        .q = qkv, .k = qkv + D, .v = qkv + 2 * D, .out = out,
        .q_stride = 3 * (size_t)D, .kv_stride = 3 * (size_t)D, .out_stride = (size_t)D,
        .q_seq = seq_rows, .kv_seq = seq_rows, .out_seq = seq_rows,
        .batch = s->seqs, .nq = (int)seq_rows, .nk = (int)seq_rows,
        .heads = t->cfg.heads, .head_dim = hd,
        .block = t->cfg.block_causal ? s->P : 0, .q_offset = 0,
        .scale = 1.0f / sqrtf((float)hd),
    };
    return a;
}

/* x [R][D] (embedded tokens, positions not yet added) through a stack;
 * the result is in sa->out. */
static void stack_forward(bsq_trainer *t, const bsq_stack_w *sw, stack_act *sa, const shape *s,
                          const float *x)
{
    bsq_backend *be = t->be;
    const bsq_backend_ops *op = be->ops;
    const int D = s->D, M = t->cfg.mlp_dim;
    const size_t R = s->R;
    const float eps = t->cfg.layer_norm_eps;
    op->copy2d(be, sa->pre_in, D, x, D, R, D);
    op->add_pos(be, sa->pre_in, sw->pos, sw->tpos, s->seqs, s->frames, s->P, D, 0);
    float *cur = t->cfg.layers ? sa->blk[0].x_in : sa->post_in;
    op->layernorm(be, sa->pre_in, sw->ln_pre_w, sw->ln_pre_b, cur, R, D, eps);
    for (int l = 0; l < t->cfg.layers; l++) {
        const bsq_block_w *bw = &sw->blocks[l];
        block_act *b = &sa->blk[l];
        op->layernorm(be, b->x_in, bw->ln1_w, bw->ln1_b, b->h1, R, D, eps);
        op->linear(be, b->h1, bw->qkv_w, bw->qkv_b, b->qkv, R, D, 3 * D);
        bsq_attention_args a = att_args(t, s, b->qkv, b->att);
        op->attention(be, &a);
        op->linear(be, b->att, bw->out_w, bw->out_b, b->x_mid, R, D, D);
        op->add(be, b->x_mid, b->x_in, R * D);
        op->layernorm(be, b->x_mid, bw->ln2_w, bw->ln2_b, b->h2, R, D, eps);
        op->linear(be, b->h2, bw->fc_w, bw->fc_b, b->f, R, D, M);
        op->copy2d(be, b->g, M, b->f, M, R, M);
        op->gelu(be, b->g, R * M);
        float *next = l + 1 < t->cfg.layers ? sa->blk[l + 1].x_in : sa->post_in;
        op->linear(be, b->g, bw->proj_w, bw->proj_b, next, R, M, D);
        op->add(be, next, b->x_mid, R * D);
    }
    op->layernorm(be, sa->post_in, sw->ln_post_w, sw->ln_post_b, sa->out, R, D, eps);
}

/* ------------------------------------------------------------ backward */
/* dW += dy^T x, db += sum dy, dx = dy W for y = x W^T + b (dx NULL: skip). */
static void linear_backward(bsq_trainer *t, const float *x, const float *w, const float *dy,
                            float *dx, float *dw, float *db, size_t R, int k, int n)
{
    bsq_backend *be = t->be;
    const bsq_backend_ops *op = be->ops;
    op->matmul(be, 1, 0, (size_t)n, (size_t)k, R, dy, (size_t)n, x, (size_t)k, dw, (size_t)k, 1);
    if (db)
        op->colsum(be, dy, db, R, n);
    if (dx)
        op->matmul(be, 0, 0, R, (size_t)k, (size_t)n, dy, (size_t)n, w, (size_t)k, dx, (size_t)k,
                   0);
}

/* Given d_out (gradient of the stack's output, in t->d_x), leaves the
 * gradient of the stack's input (before positions) in t->d_x and
 * accumulates every parameter gradient of the stack. */
static void stack_backward(bsq_trainer *t, const bsq_stack_w *sw, bsq_stack_w *gs,
                           const stack_act *sa, const shape *s)
{
    bsq_backend *be = t->be;
    const bsq_backend_ops *op = be->ops;
    const int D = s->D, M = t->cfg.mlp_dim;
    const size_t R = s->R;
    const float eps = t->cfg.layer_norm_eps;
    float *dx = t->d_x, *dh = t->d_h;
    op->layernorm_backward(be, sa->post_in, sw->ln_post_w, dx, dx, (float *)gs->ln_post_w,
                           (float *)gs->ln_post_b, R, D, eps);
    for (int l = t->cfg.layers - 1; l >= 0; l--) {
        const bsq_block_w *bw = &sw->blocks[l];
        bsq_block_w *gb = &gs->blocks[l];
        const block_act *b = &sa->blk[l];
        /* MLP branch */
        linear_backward(t, b->g, bw->proj_w, dx, t->d_mlp, (float *)gb->proj_w,
                        (float *)gb->proj_b, R, M, D);
        op->gelu_backward(be, b->f, t->d_mlp, R * M);
        linear_backward(t, b->h2, bw->fc_w, t->d_mlp, dh, (float *)gb->fc_w, (float *)gb->fc_b, R,
                        D, M);
        op->layernorm_backward(be, b->x_mid, bw->ln2_w, dh, dh, (float *)gb->ln2_w,
                               (float *)gb->ln2_b, R, D, eps);
        op->add(be, dx, dh, R * D);
        /* attention branch */
        linear_backward(t, b->att, bw->out_w, dx, t->d_att, (float *)gb->out_w,
                        (float *)gb->out_b, R, D, D);
        bsq_attention_args a = att_args(t, s, b->qkv, b->att);
        op->attention_backward(be, &a, t->d_att, t->d_qkv, t->d_qkv + D, t->d_qkv + 2 * D);
        linear_backward(t, b->h1, bw->qkv_w, t->d_qkv, dh, (float *)gb->qkv_w,
                        (float *)gb->qkv_b, R, D, 3 * D);
        op->layernorm_backward(be, b->x_in, bw->ln1_w, dh, dh, (float *)gb->ln1_w,
                               (float *)gb->ln1_b, R, D, eps);
        op->add(be, dx, dh, R * D);
    }
    op->layernorm_backward(be, sa->pre_in, sw->ln_pre_w, dx, dx, (float *)gs->ln_pre_w,
                           (float *)gs->ln_pre_b, R, D, eps);
    op->add_pos_backward(be, dx, (float *)gs->pos, (float *)gs->tpos, s->seqs, s->frames, s->P, D,
                         0);
}

/* ------------------------------------------------------------ one step */
static double entropy_weight(const bsq_trainer *t)
{
    const bsq_train_options *o = &t->opt;
    if (o->entropy_decay <= 0 || t->step >= o->entropy_decay)
        return o->entropy;
    double f = (double)t->step / o->entropy_decay;
    return o->entropy_start + (o->entropy - o->entropy_start) * f;
}

static bsq_status forward_backward(bsq_trainer *t, const float *pixels, int seqs, int frames,
                                   bsq_train_stats *st, bsq_error *err)
{
    const bsq_config *c = &t->cfg;
    if (seqs < 1 || frames < 1 || frames > c->num_frames)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "%d frames for a %d-frame model", frames,
                        c->num_frames);
    const int p = c->patch_size, gh = c->image_height / p, gw = c->image_width / p;
    shape s = {seqs, frames, gh * gw, c->width, (size_t)seqs * frames * gh * gw};
    const size_t R = s.R;
    const int D = c->width, L = c->L, F = c->decoder_ffn_dim, P3 = 3 * p * p;
    bsq_status status = ensure_rows(t, R, err);
    if (status != BSQ_OK)
        return status;
    bsq_backend *be = t->be;
    const bsq_backend_ops *op = be->ops;
    const size_t npix = R * P3;

    /* ---- forward ---- */
    op->upload(be, t->pix, pixels, npix);
    op->patchify(be, t->pix, t->tok, seqs, frames, gh, gw, p);
    op->linear(be, t->tok, t->w.embed_w, NULL, t->d_x, R, P3, D);
    stack_forward(t, &t->w.enc, &t->enc, &s, t->d_x);
    op->linear(be, t->enc.out, t->w.quant_w, t->w.quant_b, t->v, R, D, L);
    /* u = v / ||v||, codes = sign(u) / sqrt(L) (straight-through) */
    const float cval = 1.0f / sqrtf((float)L);
    for (size_t r = 0; r < R; r++) {
        const float *v = t->v + r * L;
        float *u = t->u + r * L, *cd = t->codes + r * L;
        double n2 = 0.0;
        for (int d = 0; d < L; d++)
            n2 += (double)v[d] * v[d];
        float n = (float)sqrt(n2);
        float inv = 1.0f / (n > 1e-12f ? n : 1e-12f);
        t->inv_norm[r] = inv;
        for (int d = 0; d < L; d++) {
            u[d] = v[d] * inv;
            cd[d] = u[d] > 0.0f ? cval : -cval;
        }
    }
    op->linear(be, t->codes, t->w.post_w, t->w.post_b, t->d_x, R, L, D);
    stack_forward(t, &t->w.dec, &t->dec, &s, t->d_x);
    op->linear(be, t->dec.out, t->w.ffn_w, t->w.ffn_b, t->ffn_t, R, D, F);
    op->tanh(be, t->ffn_t, R * F);
    op->linear(be, t->ffn_t, t->w.out_w, t->w.out_b, t->out_tok, R, F, P3);
    op->unpatchify(be, t->out_tok, t->recon, seqs, frames, gh, gw, p, 0);
    if ((status = op->sync(be, err)) != BSQ_OK)
        return status;

    /* ---- losses on pixels (training sees the unclamped output) ---- */
    double sa = 0.0, ss = 0.0, sc = 0.0;
    const double inv_n = 1.0 / (double)npix;
    for (size_t i = 0; i < npix; i++) {
        float e = t->recon[i] - t->pix[i];
        sa += fabsf(e);
        float rc = t->recon[i] < -1.0f ? -1.0f : t->recon[i] > 1.0f ? 1.0f : t->recon[i];
        sc += (double)(rc - t->pix[i]) * (rc - t->pix[i]);
        ss += (double)e * e;
        t->d_pix[i] = (float)(inv_n * (t->opt.l1 * (e > 0 ? 1.0 : e < 0 ? -1.0 : 0.0) +
                                       t->opt.mse * 2.0 * e));
    }
    memset(t->grad, 0, t->model->total * sizeof(float));
    st->l1 = sa * inv_n;
    st->mse = ss * inv_n;
    double mse_clamped = sc * inv_n;
    st->psnr = mse_clamped > 0 ? 10.0 * log10(4.0 / mse_clamped) : 99.0;

    /* ---- quantizer losses: gradient with respect to u ---- */
    bsq_entropy_stats es;
    const double we = entropy_weight(t);
    float *du = t->d_v;
    memset(du, 0, R * L * sizeof(float));
    status = bsq_entropy_loss(t->u, R, L, c->group_size, t->opt.inv_temp, we, du, &es, err);
    if (status != BSQ_OK)
        return status;
    double commit = 0.0;
    for (size_t i = 0; i < R * (size_t)L; i++) {
        float e = t->u[i] - t->codes[i];
        commit += (double)e * e;
        if (t->opt.commit > 0)
            du[i] += (float)(t->opt.commit * 2.0 * e / (double)R);
    }
    st->commit = commit / (double)R;
    st->h_sample = es.h_sample;
    st->h_codebook = es.h_codebook;
    st->bit_balance = es.bit_balance;
    st->loss = t->opt.l1 * st->l1 + t->opt.mse * st->mse + we * (es.h_sample - es.h_codebook) +
               t->opt.commit * st->commit;

    /* ---- backward ---- */
    float *d_tok = t->d_mlp; /* [R][P3] for the output layer's gradient */
    op->patchify(be, t->d_pix, d_tok, seqs, frames, gh, gw, p);
    /* the ffn activations' gradient reuses d_qkv when F <= 3D, else d_mlp:
     * d_tok is consumed by then */
    float *d_ffn = t->d_qkv;
    if ((size_t)F > 3 * (size_t)D) {
        /* keep d_tok elsewhere: copy it to d_pix's storage as tokens */
        op->copy2d(be, t->d_pix, P3, d_tok, P3, R, P3);
        d_tok = t->d_pix;
        d_ffn = t->d_mlp;
    }
    linear_backward(t, t->ffn_t, t->w.out_w, d_tok, d_ffn, (float *)t->gw.out_w,
                    (float *)t->gw.out_b, R, F, P3);
    op->tanh_backward(be, t->ffn_t, d_ffn, R * F);
    linear_backward(t, t->dec.out, t->w.ffn_w, d_ffn, t->d_x, (float *)t->gw.ffn_w,
                    (float *)t->gw.ffn_b, R, D, F);
    stack_backward(t, &t->w.dec, &t->gw.dec, &t->dec, &s);
    /* post_quant_embed: its input gradient is the codes' gradient, which
     * the straight-through estimator hands to u */
    float *dc = t->d_c;
    linear_backward(t, t->codes, t->w.post_w, t->d_x, dc, (float *)t->gw.post_w,
                    (float *)t->gw.post_b, R, L, D);
    if ((status = op->sync(be, err)) != BSQ_OK)
        return status;
    /* through u = v / ||v||: dv = (du - u (u . du)) / ||v|| */
    for (size_t r = 0; r < R; r++) {
        const float *u = t->u + r * L;
        float *g = du + r * L;
        const float *gc = dc + r * L;
        double dot = 0.0;
        for (int d = 0; d < L; d++) {
            g[d] += gc[d];
            dot += (double)u[d] * g[d];
        }
        for (int d = 0; d < L; d++)
            g[d] = (float)((g[d] - u[d] * dot) * t->inv_norm[r]);
    }
    linear_backward(t, t->enc.out, t->w.quant_w, du, t->d_x, (float *)t->gw.quant_w,
                    (float *)t->gw.quant_b, R, D, L);
    stack_backward(t, &t->w.enc, &t->gw.enc, &t->enc, &s);
    linear_backward(t, t->tok, t->w.embed_w, t->d_x, NULL, (float *)t->gw.embed_w, NULL, R, P3, D);
    return op->sync(be, err);
}

bsq_status bsq_trainer_gradients(bsq_trainer *t, const float *pixels, int seqs, int frames,
                                 bsq_train_stats *stats, bsq_error *err)
{
    bsq_train_stats local;
    return forward_backward(t, pixels, seqs, frames, stats ? stats : &local, err);
}

bsq_status bsq_trainer_step(bsq_trainer *t, const float *pixels, int seqs, int frames,
                            bsq_train_stats *stats, bsq_error *err)
{
    bsq_train_stats local;
    if (!stats)
        stats = &local;
    memset(stats, 0, sizeof *stats);
    bsq_status st = forward_backward(t, pixels, seqs, frames, stats, err);
    if (st != BSQ_OK)
        return st;
    if (!isfinite(stats->loss))
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "the loss is not finite at step %lld (learning rate too high?)",
                        (long long)t->step);
    bsq_optim_step(t->optim, t->model->data, t->grad, t->step, &stats->grad_norm, &stats->lr);
    t->step++;
    return BSQ_OK;
}

float *bsq_trainer_params(bsq_trainer *t, size_t *count)
{
    if (count)
        *count = t->model->total;
    return t->model->data;
}

const float *bsq_trainer_grads(const bsq_trainer *t) { return t->grad; }

int64_t bsq_trainer_step_count(const bsq_trainer *t) { return t->step; }

bsq_status bsq_trainer_model(const bsq_trainer *t, int ema, bsq_model **out, bsq_error *err)
{
    bsq_model *m;
    bsq_status st = bsq_model_alloc(&t->cfg, &m, err);
    if (st != BSQ_OK)
        return st;
    const float *src = ema ? bsq_optim_ema(t->optim) : NULL;
    memcpy(m->data, src ? src : t->model->data, m->total * sizeof(float));
    *out = m;
    return BSQ_OK;
}

bsq_status bsq_trainer_save(const bsq_trainer *t, const char *path, const char *extra,
                            bsq_error *err)
{
    return bsq_optim_save(t->optim, t->model, t->step, extra, path, err);
}

bsq_status bsq_trainer_load(bsq_trainer *t, const char *path, char **extra, bsq_error *err)
{
    return bsq_optim_load(t->optim, t->model, &t->step, extra, path, err);
}
