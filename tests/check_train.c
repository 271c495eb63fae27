/* Training: every backward op of the CPU backend against central finite
 * differences of its forward op; the whole tiny model's gradients against
 * finite differences of the training loss; determinism across thread
 * counts; resuming from a saved state; and that training learns. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "testutil.h"
#include "train/entropy.h"
#include "train/trainer.h"

static bsq_backend *cpu(int threads)
{
    bsq_backend *be;
    bsq_error err;
    ck_assert_msg(bsq_backend_cpu_create(threads, &be, &err) == BSQ_OK, "%s", err.message);
    return be;
}

static float *rnd(size_t n, uint64_t seed, float lo, float hi)
{
    float *x = malloc(n * sizeof(float));
    ck_assert_ptr_nonnull(x);
    tu_fill_uniform(x, n, seed, lo, hi);
    return x;
}

static double dot(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* Compares an analytic gradient with finite differences at up to `probes`
 * entries (the largest analytic ones and a spread of others). f(x) is the
 * scalar being differentiated. */
typedef double (*scalar_fn)(void *ctx, float *x);

static void check_fd(const char *what, scalar_fn f, void *ctx, float *x, const float *grad,
                     size_t n, float h, double rel_tol)
{
    double worst = 0.0, gmax = 0.0;
    for (size_t i = 0; i < n; i++)
        gmax = fabs(grad[i]) > gmax ? fabs(grad[i]) : gmax;
    ck_assert_msg(gmax > 0.0, "%s: gradient is all zero", what);
    size_t step = n > 40 ? n / 40 : 1;
    for (size_t i = 0; i < n; i += step) {
        float keep = x[i];
        x[i] = keep + h;
        double fp = f(ctx, x);
        x[i] = keep - h;
        double fm = f(ctx, x);
        x[i] = keep;
        double fd = (fp - fm) / (2.0 * h);
        double e = fabs(fd - grad[i]) / (fabs(grad[i]) + 0.05 * gmax);
        worst = e > worst ? e : worst;
        ck_assert_msg(e < rel_tol, "%s: entry %zu analytic %.6g finite-difference %.6g", what, i,
                      grad[i], fd);
    }
    printf("%-28s worst relative error %.2e over %zu entries\n", what, worst, (n + step - 1) / step);
}

/* ------------------------------------------------------------ LayerNorm */
typedef struct {
    bsq_backend *be;
    float *x, *w, *b, *y, *r;
    size_t rows;
    int d;
    int which; /* 0: x, 1: w, 2: b */
} ln_ctx;

static double ln_f(void *c_, float *p)
{
    ln_ctx *c = c_;
    (void)p;
    c->be->ops->layernorm(c->be, c->x, c->w, c->b, c->y, c->rows, c->d, 1e-5f);
    return dot(c->y, c->r, c->rows * c->d);
}

START_TEST(test_layernorm_backward)
{
    ln_ctx c = {cpu(2), NULL, NULL, NULL, NULL, NULL, 300, 37, 0};
    size_t n = c.rows * c.d;
    c.x = rnd(n, 1, -2, 2);
    c.w = rnd(c.d, 2, 0.5f, 1.5f);
    c.b = rnd(c.d, 3, -1, 1);
    c.r = rnd(n, 4, -1, 1);
    c.y = malloc(n * sizeof(float));
    float *dx = malloc(n * sizeof(float)), *dw = calloc(c.d, sizeof(float)),
          *db = calloc(c.d, sizeof(float));
    c.be->ops->layernorm_backward(c.be, c.x, c.w, c.r, dx, dw, db, c.rows, c.d, 1e-5f);
    check_fd("layernorm dx", ln_f, &c, c.x, dx, n, 1e-2f, 2e-2);
    check_fd("layernorm dw", ln_f, &c, c.w, dw, c.d, 1e-2f, 2e-2);
    check_fd("layernorm db", ln_f, &c, c.b, db, c.d, 1e-2f, 2e-2);
    /* dx may alias dy */
    float *alias = malloc(n * sizeof(float));
    memcpy(alias, c.r, n * sizeof(float));
    memset(dw, 0, c.d * sizeof(float));
    memset(db, 0, c.d * sizeof(float));
    c.be->ops->layernorm_backward(c.be, c.x, c.w, alias, alias, dw, db, c.rows, c.d, 1e-5f);
    ck_assert(memcmp(alias, dx, n * sizeof(float)) == 0);
    c.be->ops->destroy(c.be);
    free(c.x), free(c.w), free(c.b), free(c.r), free(c.y), free(dx), free(dw), free(db);
    free(alias);
}
END_TEST

/* ------------------------------------------------------------ GELU, tanh */
typedef struct {
    bsq_backend *be;
    float *x, *y, *r;
    size_t n;
    int tanh;
} ew_ctx;

static double ew_f(void *c_, float *p)
{
    ew_ctx *c = c_;
    (void)p;
    memcpy(c->y, c->x, c->n * sizeof(float));
    if (c->tanh)
        c->be->ops->tanh(c->be, c->y, c->n);
    else
        c->be->ops->gelu(c->be, c->y, c->n);
    return dot(c->y, c->r, c->n);
}

START_TEST(test_elementwise_backward)
{
    for (int k = 0; k < 2; k++) {
        ew_ctx c = {cpu(2), NULL, NULL, NULL, 40000, k};
        c.x = rnd(c.n, 10 + k, -5, 5);
        c.r = rnd(c.n, 20 + k, -1, 1);
        c.y = malloc(c.n * sizeof(float));
        float *g = malloc(c.n * sizeof(float));
        memcpy(g, c.r, c.n * sizeof(float));
        if (k) {
            ew_f(&c, c.x); /* y = tanh(x): its backward takes the output */
            c.be->ops->tanh_backward(c.be, c.y, g, c.n);
        } else {
            c.be->ops->gelu_backward(c.be, c.x, g, c.n);
        }
        check_fd(k ? "tanh dx" : "gelu dx", ew_f, &c, c.x, g, c.n, 1e-2f, 1e-2);
        c.be->ops->destroy(c.be);
        free(c.x), free(c.r), free(c.y), free(g);
    }
}
END_TEST

/* ------------------------------------------------------------ matmul */
START_TEST(test_matmul)
{
    /* every transpose combination against a plain triple loop */
    bsq_backend *be = cpu(3);
    const size_t m = 300, n = 141, k = 517;
    float *a = rnd(m * k, 31, -1, 1), *b = rnd(k * n, 32, -1, 1);
    float *c = malloc(m * n * sizeof(float)), *ref = malloc(m * n * sizeof(float));
    for (int at = 0; at < 2; at++)
        for (int bt = 0; bt < 2; bt++) {
            size_t lda = at ? m : k, ldb = bt ? k : n;
            for (size_t i = 0; i < m; i++)
                for (size_t j = 0; j < n; j++) {
                    double s = 0.5; /* the accumulate flag keeps what c held */
                    for (size_t q = 0; q < k; q++)
                        s += (double)(at ? a[q * lda + i] : a[i * lda + q]) *
                             (bt ? b[j * ldb + q] : b[q * ldb + j]);
                    ref[i * n + j] = (float)s;
                }
            for (size_t i = 0; i < m * n; i++)
                c[i] = 0.5f;
            be->ops->matmul(be, at, bt, m, n, k, a, lda, b, ldb, c, n, 1);
            double e = tu_max_abs_diff(c, ref, m * n);
            ck_assert_msg(e < 1e-4, "matmul at=%d bt=%d: max error %g", at, bt, e);
            for (size_t i = 0; i < m * n; i++)
                c[i] = 1e30f;
            be->ops->matmul(be, at, bt, m, n, k, a, lda, b, ldb, c, n, 0);
            for (size_t i = 0; i < m * n; i++)
                ref[i] -= 0.5f;
            e = tu_max_abs_diff(c, ref, m * n);
            ck_assert_msg(e < 1e-4, "matmul at=%d bt=%d (overwrite): max error %g", at, bt, e);
        }
    /* colsum */
    float *out = calloc(n, sizeof(float));
    be->ops->colsum(be, b, out, k, (int)n);
    for (size_t j = 0; j < n; j++) {
        double s = 0.0;
        for (size_t q = 0; q < k; q++)
            s += b[q * n + j];
        ck_assert_msg(fabs(s - out[j]) < 1e-4, "colsum column %zu", j);
    }
    be->ops->destroy(be);
    free(a), free(b), free(c), free(ref), free(out);
}
END_TEST

/* ------------------------------------------------------------ attention */
typedef struct {
    bsq_backend *be;
    bsq_attention_args a;
    float *qkv, *out, *r;
    size_t rows, D;
} att_ctx;

static double att_f(void *c_, float *p)
{
    att_ctx *c = c_;
    (void)p;
    c->be->ops->attention(c->be, &c->a);
    return dot(c->out, c->r, c->rows * c->D);
}

static void attention_case(int block)
{
    att_ctx c;
    memset(&c, 0, sizeof c);
    c.be = cpu(2);
    const int seqs = 2, n = 75, heads = 3, hd = 16;
    c.D = (size_t)heads * hd;
    c.rows = (size_t)seqs * n;
    c.qkv = rnd(c.rows * 3 * c.D, 40 + block, -1.5f, 1.5f);
    c.out = malloc(c.rows * c.D * sizeof(float));
    c.r = rnd(c.rows * c.D, 50 + block, -1, 1);
    c.a = (bsq_attention_args){
        .q = c.qkv, .k = c.qkv + c.D, .v = c.qkv + 2 * c.D, .out = c.out,
        .q_stride = 3 * c.D, .kv_stride = 3 * c.D, .out_stride = c.D,
        .q_seq = (size_t)n, .kv_seq = (size_t)n, .out_seq = (size_t)n,
        .batch = seqs, .nq = n, .nk = n, .heads = heads, .head_dim = hd,
        .block = block, .q_offset = 0, .scale = 1.0f / sqrtf((float)hd),
    };
    att_f(&c, NULL);
    float *g = malloc(c.rows * 3 * c.D * sizeof(float));
    for (size_t i = 0; i < c.rows * 3 * c.D; i++)
        g[i] = NAN; /* every entry must be written */
    c.be->ops->attention_backward(c.be, &c.a, c.r, g, g + c.D, g + 2 * c.D);
    for (size_t i = 0; i < c.rows * 3 * c.D; i++)
        ck_assert_msg(isfinite(g[i]), "attention gradient entry %zu not written", i);
    check_fd(block ? "attention (block-causal)" : "attention (full)", att_f, &c, c.qkv, g,
             c.rows * 3 * c.D, 5e-3f, 2e-2);
    c.be->ops->destroy(c.be);
    free(c.qkv), free(c.out), free(c.r), free(g);
}

START_TEST(test_attention_backward)
{
    attention_case(0);
    attention_case(25); /* 3 frames of 25 tokens */
}
END_TEST

/* ------------------------------------------------------------ entropy */
typedef struct {
    float *u;
    size_t rows;
    int L, g;
} ent_ctx;

static double ent_f(void *c_, float *p)
{
    ent_ctx *c = c_;
    (void)p;
    bsq_entropy_stats s;
    bsq_error err;
    ck_assert(bsq_entropy_loss(c->u, c->rows, c->L, c->g, 1.0, 0.0, NULL, &s, &err) == BSQ_OK);
    return s.h_sample - s.h_codebook;
}

START_TEST(test_entropy)
{
    ent_ctx c = {NULL, 200, 6, 3};
    c.u = rnd(c.rows * c.L, 60, -1, 1);
    float *du = calloc(c.rows * c.L, sizeof(float));
    bsq_entropy_stats s;
    bsq_error err;
    ck_assert(bsq_entropy_loss(c.u, c.rows, c.L, c.g, 1.0, 1.0, du, &s, &err) == BSQ_OK);
    /* bounds: per group, entropies lie in [0, g ln 2] */
    ck_assert(s.h_sample > 0 && s.h_sample <= 2 * 3 * log(2.0) + 1e-9);
    ck_assert(s.h_codebook > 0 && s.h_codebook <= 2 * 3 * log(2.0) + 1e-9);
    check_fd("entropy du", ent_f, &c, c.u, du, c.rows * c.L, 1e-3f, 2e-2);
    free(c.u), free(du);
}
END_TEST

/* ------------------------------------------------------------ whole model */
static bsq_config tiny_config(int frames)
{
    bsq_config c;
    memset(&c, 0, sizeof c);
    c.image_height = 16;
    c.image_width = 24;
    c.patch_size = 8;
    c.width = 32;
    c.layers = 2;
    c.heads = 2;
    c.mlp_dim = 64;
    c.decoder_ffn_dim = 48;
    c.L = 6;
    c.group_size = 3;
    c.num_frames = frames;
    c.block_causal = frames > 1;
    c.layer_norm_eps = 1e-5f;
    return c;
}

typedef struct {
    bsq_trainer *t;
    const float *pix;
    int seqs, frames;
} model_ctx;

static double model_f(void *c_, float *p)
{
    model_ctx *c = c_;
    (void)p;
    bsq_train_stats s;
    bsq_error err;
    ck_assert_msg(bsq_trainer_gradients(c->t, c->pix, c->seqs, c->frames, &s, &err) == BSQ_OK,
                  "%s", err.message);
    return s.loss;
}

/* Finite differences of the loss against the analytic gradient of every
 * parameter tensor the chosen losses reach smoothly. With pixel losses the
 * encoder sits behind the straight-through estimator (its gradient is a
 * surrogate, not a derivative), so those runs check the decoder side; runs
 * with only the entropy and commitment terms check the encoder. */
static void model_case(int frames, int pixel_losses)
{
    bsq_config cfg = tiny_config(frames);
    bsq_train_options o;
    bsq_train_options_default(&o);
    o.entropy_decay = 0;
    o.l1 = pixel_losses ? 0.5 : 0.0;
    o.mse = pixel_losses ? 1.0 : 0.0;
    o.entropy = pixel_losses ? 0.1 : 1.0;
    o.commit = pixel_losses || frames > 1 ? 0.0 : 0.5; /* (a sign flip under a probe is a jump) */
    o.seed = 7 + frames;
    bsq_trainer *t;
    bsq_error err;
    ck_assert_msg(bsq_trainer_create(&cfg, NULL, &o, 2, &t, &err) == BSQ_OK, "%s", err.message);
    const int seqs = 2;
    size_t npix = (size_t)seqs * 3 * frames * cfg.image_height * cfg.image_width;
    float *pix = rnd(npix, 70 + frames, -1, 1);
    model_ctx c = {t, pix, seqs, frames};
    size_t count;
    float *params = bsq_trainer_params(t, &count);
    /* weights far larger than the initial ones, so every gradient stands
     * well above the loss's rounding noise */
    bsq_model *shape_of;
    ck_assert(bsq_trainer_model(t, 0, &shape_of, &err) == BSQ_OK);
    for (size_t i = 0; i < shape_of->nparams; i++) {
        const bsq_param *p = &shape_of->params[i];
        tu_fill_uniform(params + p->offset, p->count, 100 + i, -0.4f, 0.4f);
        if (strstr(p->name, "ln_") && strstr(p->name, ".weight"))
            for (size_t k = 0; k < p->count; k++)
                params[p->offset + k] += 1.0f;
    }
    bsq_model_close(shape_of);
    model_f(&c, NULL);
    float *grad = malloc(count * sizeof(float));
    memcpy(grad, bsq_trainer_grads(t), count * sizeof(float));
    bsq_model *m;
    ck_assert(bsq_trainer_model(t, 0, &m, &err) == BSQ_OK);
    int checked = 0;
    for (size_t i = 0; i < m->nparams; i++) {
        const bsq_param *p = &m->params[i];
        int decoder_side = strncmp(p->name, "decoder.", 8) == 0 ||
                           strncmp(p->name, "post_quant", 10) == 0;
        if (pixel_losses != decoder_side)
            continue;
        char what[128];
        snprintf(what, sizeof what, "%s%s", frames > 1 ? "video " : "", p->name);
        check_fd(what, model_f, &c, params + p->offset, grad + p->offset, p->count, 2e-3f, 6e-2);
        checked++;
    }
    ck_assert_int_gt(checked, 10);
    bsq_model_close(m);
    bsq_trainer_destroy(t);
    free(pix), free(grad);
}

START_TEST(test_model_gradients_decoder) { model_case(1, 1); }
END_TEST
START_TEST(test_model_gradients_encoder) { model_case(1, 0); }
END_TEST
START_TEST(test_model_gradients_video) { model_case(3, 1); model_case(3, 0); }
END_TEST

/* ------------------------------------------------------------ determinism, resume */
static void train_steps(bsq_trainer *t, const float *pix, int n, int frames)
{
    bsq_error err;
    bsq_train_stats s;
    for (int i = 0; i < n; i++)
        ck_assert_msg(bsq_trainer_step(t, pix, 4, frames, &s, &err) == BSQ_OK, "%s", err.message);
}

START_TEST(test_deterministic_and_resume)
{
    bsq_config cfg = tiny_config(2);
    bsq_train_options o;
    bsq_train_options_default(&o);
    o.warmup = 2;
    o.steps = 10;
    bsq_trainer *t1, *t3, *t4;
    bsq_error err;
    ck_assert(bsq_trainer_create(&cfg, NULL, &o, 1, &t1, &err) == BSQ_OK);
    ck_assert(bsq_trainer_create(&cfg, NULL, &o, 3, &t3, &err) == BSQ_OK);
    size_t npix = (size_t)4 * 3 * 2 * 16 * 24;
    float *pix = rnd(npix, 80, -1, 1);
    train_steps(t1, pix, 3, 2);
    train_steps(t3, pix, 3, 2);
    size_t n;
    float *p1 = bsq_trainer_params(t1, &n), *p3 = bsq_trainer_params(t3, NULL);
    ck_assert_msg(memcmp(p1, p3, n * sizeof(float)) == 0, "1 and 3 threads differ");

    char *dir = tu_tmpdir();
    char *state = tu_path(dir, "state.safetensors");
    ck_assert_msg(bsq_trainer_save(t1, state, "{\"k\":1}", &err) == BSQ_OK, "%s", err.message);
    train_steps(t1, pix, 2, 2);
    ck_assert(bsq_trainer_create(&cfg, NULL, &o, 2, &t4, &err) == BSQ_OK);
    char *extra = NULL;
    ck_assert_msg(bsq_trainer_load(t4, state, &extra, &err) == BSQ_OK, "%s", err.message);
    ck_assert_str_eq(extra, "{\"k\":1}");
    ck_assert_int_eq(bsq_trainer_step_count(t4), 3);
    train_steps(t4, pix, 2, 2);
    ck_assert_msg(memcmp(p1, bsq_trainer_params(t4, NULL), n * sizeof(float)) == 0,
                  "resumed training differs from uninterrupted training");

    /* a state for another configuration is refused */
    bsq_config other = tiny_config(1);
    bsq_trainer *t5;
    ck_assert(bsq_trainer_create(&other, NULL, &o, 1, &t5, &err) == BSQ_OK);
    ck_assert(bsq_trainer_load(t5, state, NULL, &err) == BSQ_ERR_MODEL);
    /* a model file is not a state */
    ck_assert(bsq_trainer_load(t5, "/nonexistent/state", NULL, &err) != BSQ_OK);
    bsq_trainer_destroy(t5);

    free(extra);
    bsq_trainer_destroy(t1);
    bsq_trainer_destroy(t3);
    bsq_trainer_destroy(t4);
    free(pix);
    free(state);
    tu_rmdir(dir);
}
END_TEST

/* Smooth colour fields with an edge: what a tiny model can learn fast. */
static void smooth_images(float *pix, int n, int h, int w, uint64_t seed)
{
    float coef[8];
    for (int i = 0; i < n; i++) {
        tu_fill_uniform(coef, 8, seed + (uint64_t)i, -1, 1);
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    float v = 0.6f * coef[ch] + 0.3f * coef[3 + ch] * ((float)x / w - 0.5f) * 2 +
                              0.3f * coef[6] * ((float)y / h - 0.5f) * 2 +
                              (x > w / 2 + coef[7] * 4 ? 0.3f : 0.0f);
                    pix[(((size_t)i * 3 + ch) * h + y) * w + x] = v;
                }
    }
}

START_TEST(test_training_learns)
{
    bsq_config cfg = tiny_config(1);
    bsq_train_options o;
    bsq_train_options_default(&o);
    o.lr = 2e-3;
    o.warmup = 10;
    o.steps = 150;
    o.entropy_decay = 0;
    bsq_trainer *t;
    bsq_error err;
    ck_assert(bsq_trainer_create(&cfg, NULL, &o, 2, &t, &err) == BSQ_OK);
    const int batch = 16;
    float *pix = malloc((size_t)batch * 3 * 16 * 24 * sizeof(float));
    bsq_train_stats first = {0}, last = {0};
    double early = 0, late = 0; /* mean PSNR of the first and last 20 steps */
    for (int s = 0; s < o.steps; s++) {
        smooth_images(pix, batch, 16, 24, (uint64_t)s * batch);
        ck_assert(bsq_trainer_step(t, pix, batch, 1, s == 0 ? &first : &last, &err) == BSQ_OK);
        if (s < 20)
            early += (s == 0 ? first.psnr : last.psnr) / 20;
        if (s >= o.steps - 20)
            late += last.psnr / 20;
        if (getenv("VERBOSE") && s % 10 == 0)
            printf("step %d loss %.4f psnr %.2f hs %.3f hc %.3f gn %.3f lr %.2e bal %.2f\n", s,
                   last.loss, last.psnr, last.h_sample, last.h_codebook, last.grad_norm, last.lr,
                   last.bit_balance);
    }
    printf("training: mean PSNR of the first 20 steps %.2f dB, of the last 20 %.2f dB\n", early,
           late);
    ck_assert_msg(late > early + 2.5, "PSNR did not improve by 2.5 dB");
    /* the EMA model decodes through the inference engine */
    bsq_model *m;
    ck_assert(bsq_trainer_model(t, 1, &m, &err) == BSQ_OK);
    bsq_context *ctx;
    ck_assert(bsq_context_create(m, &(bsq_context_options){.threads = 1}, &ctx, &err) == BSQ_OK);
    smooth_images(pix, 1, 16, 24, 99999);
    bsq_tokens *tok;
    ck_assert(bsq_encode(ctx, pix, 1, 1, 16, 24, &tok, &err) == BSQ_OK);
    float *back = malloc((size_t)3 * 16 * 24 * sizeof(float));
    ck_assert(bsq_decode(ctx, tok, back, &err) == BSQ_OK);
    double mse = 0;
    for (int i = 0; i < 3 * 16 * 24; i++)
        mse += (double)(back[i] - pix[i]) * (back[i] - pix[i]);
    mse /= 3 * 16 * 24;
    double psnr = 10 * log10(4.0 / mse);
    printf("EMA model on a new image: %.2f dB\n", psnr);
    ck_assert_msg(psnr > early + 2.5, "the EMA model does not reconstruct (%.2f dB)", psnr);
    bsq_tokens_free(tok);
    bsq_context_destroy(ctx);
    bsq_model_close(m);
    bsq_trainer_destroy(t);
    free(pix), free(back);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("backward");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_layernorm_backward);
    tcase_add_test(tc, test_elementwise_backward);
    tcase_add_test(tc, test_matmul);
    tcase_add_test(tc, test_attention_backward);
    tcase_add_test(tc, test_entropy);
    tcase_add_test(tc, test_model_gradients_decoder);
    tcase_add_test(tc, test_model_gradients_encoder);
    tcase_add_test(tc, test_model_gradients_video);
    tcase_add_test(tc, test_deterministic_and_resume);
    tcase_add_test(tc, test_training_learns);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
