#include "train/optim.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model_config.h"
#include "safetensors.h"

struct bsq_optim {
    bsq_train_options o;
    size_t n;
    float *m, *v, *ema;
    uint8_t *decay; /* per float: weight decay applies (matrices, not embeddings) */
};

void bsq_optim_destroy(bsq_optim *p)
{
    if (!p)
        return;
    free(p->m), free(p->v), free(p->ema), free(p->decay);
    free(p);
}

bsq_status bsq_optim_create(const bsq_model *m, const bsq_train_options *o, bsq_optim **out,
                            bsq_error *err)
{
    bsq_optim *p = calloc(1, sizeof *p);
    if (!p)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    p->o = *o;
    p->n = m->total;
    p->m = calloc(p->n, sizeof(float));
    p->v = calloc(p->n, sizeof(float));
    p->decay = calloc(p->n, 1);
    if (o->ema > 0 && (p->ema = malloc(p->n * sizeof(float))))
        memcpy(p->ema, m->data, p->n * sizeof(float));
    if (!p->m || !p->v || !p->decay || (o->ema > 0 && !p->ema)) {
        bsq_optim_destroy(p);
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory for the optimiser state");
    }
    for (size_t i = 0; i < m->nparams; i++) {
        const bsq_param *q = &m->params[i];
        if (q->ndim == 2 && !strstr(q->name, "positional_embedding"))
            memset(p->decay + q->offset, 1, q->count);
    }
    *out = p;
    return BSQ_OK;
}

double bsq_optim_lr(const bsq_train_options *o, int64_t step)
{
    if (o->warmup > 0 && step < o->warmup)
        return o->lr * (double)(step + 1) / o->warmup;
    int64_t span = o->steps - o->warmup;
    double f = span > 0 ? (double)(step - o->warmup) / (double)span : 1.0;
    if (f > 1.0)
        f = 1.0;
    return o->min_lr + (o->lr - o->min_lr) * 0.5 * (1.0 + cos(3.141592653589793 * f));
}

void bsq_optim_step(bsq_optim *p, float *w, float *g, int64_t step, double *grad_norm, double *lr_out)
{
    const bsq_train_options *o = &p->o;
    double n2 = 0.0;
    for (size_t i = 0; i < p->n; i++)
        n2 += (double)g[i] * g[i];
    double norm = sqrt(n2), scale = 1.0;
    if (o->clip > 0 && norm > o->clip)
        scale = o->clip / norm;
    double lr = bsq_optim_lr(o, step);
    const double t = (double)(step + 1);
    const double bc1 = 1.0 - pow(o->beta1, t), bc2 = 1.0 - pow(o->beta2, t);
    const float b1 = (float)o->beta1, b2 = (float)o->beta2;
    const float step_size = (float)(lr / bc1), inv_bc2 = (float)(1.0 / bc2);
    const float eps = (float)o->adam_eps, wd = (float)(lr * o->weight_decay), sc = (float)scale;
    for (size_t i = 0; i < p->n; i++) {
        float gi = g[i] * sc;
        p->m[i] = b1 * p->m[i] + (1.0f - b1) * gi;
        p->v[i] = b2 * p->v[i] + (1.0f - b2) * gi * gi;
        if (p->decay[i])
            w[i] -= wd * w[i];
        w[i] -= step_size * p->m[i] / (sqrtf(p->v[i] * inv_bc2) + eps);
    }
    if (p->ema) {
        /* the average warms up too, so short runs are not dominated by the
         * random initial weights */
        double d = o->ema, warm = (1.0 + t) / (10.0 + t);
        float dd = (float)(d < warm ? d : warm);
        for (size_t i = 0; i < p->n; i++)
            p->ema[i] = dd * p->ema[i] + (1.0f - dd) * w[i];
    }
    *grad_norm = norm;
    *lr_out = lr;
}

const float *bsq_optim_ema(const bsq_optim *p) { return p->ema; }

/* ---------------------------------------------------------------- state */
static const char *const state_names[] = {"params", "adam_m", "adam_v", "ema"};

bsq_status bsq_optim_save(const bsq_optim *p, const bsq_model *m, int64_t step, const char *extra,
                          const char *path, bsq_error *err)
{
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    const float *blocks[4] = {m->data, p->m, p->v, p->ema};
    int64_t shape[1] = {(int64_t)p->n};
    bsq_status st = BSQ_OK;
    for (int i = 0; i < 4 && st == BSQ_OK; i++)
        if (blocks[i])
            st = bsq_tensorset_add(&ts, state_names[i], BSQ_DT_F32, 1, shape, blocks[i],
                                   p->n * sizeof(float), 0, err);
    char buf[64];
    char *cfg = bsq_config_to_json(&m->cfg);
    snprintf(buf, sizeof buf, "%" PRId64, step);
    if (st == BSQ_OK && !cfg)
        st = bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    if (st == BSQ_OK)
        st = bsq_tensorset_set_meta(&ts, "format", "bsqcodec-train-state-1", err);
    if (st == BSQ_OK)
        st = bsq_tensorset_set_meta(&ts, "config", cfg, err);
    if (st == BSQ_OK)
        st = bsq_tensorset_set_meta(&ts, "step", buf, err);
    if (st == BSQ_OK && extra)
        st = bsq_tensorset_set_meta(&ts, "extra", extra, err);
    if (st == BSQ_OK)
        st = bsq_safetensors_write(path, &ts, err);
    free(cfg);
    bsq_tensorset_free(&ts);
    return st;
}

bsq_status bsq_optim_load(bsq_optim *p, bsq_model *m, int64_t *step, char **extra, const char *path,
                          bsq_error *err)
{
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    bsq_status st = bsq_safetensors_read(path, &ts, err);
    if (st != BSQ_OK)
        return st;
    const char *fmt = bsq_tensorset_meta(&ts, "format");
    const char *cfg_json = bsq_tensorset_meta(&ts, "config");
    const char *step_s = bsq_tensorset_meta(&ts, "step");
    bsq_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if (!fmt || strcmp(fmt, "bsqcodec-train-state-1") || !cfg_json || !step_s) {
        st = bsq_fail(err, BSQ_ERR_FORMAT, "%s: not a bsqcodec training state", path);
    } else if ((st = bsq_config_parse_json(cfg_json, &cfg, err)) == BSQ_OK) {
        char *a = bsq_config_to_json(&cfg), *b = bsq_config_to_json(&m->cfg);
        if (!a || !b || strcmp(a, b))
            st = bsq_fail(err, BSQ_ERR_MODEL,
                          "%s: the saved model's configuration differs from this one", path);
        free(a), free(b);
    }
    float *blocks[4] = {m->data, p->m, p->v, p->ema};
    for (int i = 0; i < 4 && st == BSQ_OK; i++) {
        const bsq_tensor *t = bsq_tensorset_find(&ts, state_names[i]);
        if (!blocks[i])
            continue;
        if (!t && i == 3) { /* saved without EMA: start it from the weights */
            memcpy(p->ema, m->data, p->n * sizeof(float));
            continue;
        }
        if (!t || t->dtype != BSQ_DT_F32 || t->nbytes != p->n * sizeof(float))
            st = bsq_fail(err, BSQ_ERR_FORMAT, "%s: tensor '%s' missing or mis-sized", path,
                          state_names[i]);
        else
            memcpy(blocks[i], t->data, t->nbytes);
    }
    if (st == BSQ_OK) {
        char *end;
        long long s = strtoll(step_s, &end, 10);
        if (*end || s < 0)
            st = bsq_fail(err, BSQ_ERR_FORMAT, "%s: bad step '%s'", path, step_s);
        *step = s;
        const char *x = bsq_tensorset_meta(&ts, "extra");
        if (st == BSQ_OK && extra)
            *extra = x ? strdup(x) : NULL;
    }
    bsq_tensorset_free(&ts);
    return st;
}
