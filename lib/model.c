#include "model.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "checkpoint.h"
#include "model_config.h"
#include "error.h"
#include "safetensors.h"
#include "sha256.h"

/* Walks the official state-dict layout for a configuration. For each
 * parameter it records name/shape/offset in `out` (when not NULL) and, when
 * `w` is not NULL, points the matching slot at base + offset. */
typedef struct {
    bsq_param *out;
    size_t n, total;
    const float *base;
} walker;

static void param(walker *wk, const float **slot, int ndim, int64_t d0, int64_t d1,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void param(walker *wk, const float **slot, int ndim, int64_t d0, int64_t d1,
                  const char *fmt, ...)
{
    size_t count = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);
    if (wk->out) {
        bsq_param *p = &wk->out[wk->n];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->name, sizeof p->name, fmt, ap);
        va_end(ap);
        p->ndim = ndim;
        p->shape[0] = d0;
        p->shape[1] = d1;
        p->offset = wk->total;
        p->count = count;
    }
    if (slot)
        *slot = wk->base + wk->total;
    wk->n++;
    /* keep every tensor 64-byte aligned for vector loads */
    wk->total += (count + 15) & ~(size_t)15;
}

static void walk_stack(walker *wk, const bsq_config *c, bsq_stack_w *s, const char *pre)
{
    const int64_t D = c->width, M = c->mlp_dim;
    const int64_t n = (int64_t)(c->image_height / c->patch_size) * (c->image_width / c->patch_size);
    param(wk, s ? &s->pos : NULL, 2, n, D, "%s.positional_embedding", pre);
    if (c->num_frames > 1)
        param(wk, s ? &s->tpos : NULL, 2, c->num_frames, D, "%s.temporal_positional_embedding", pre);
    param(wk, s ? &s->ln_pre_w : NULL, 1, D, 0, "%s.ln_pre.weight", pre);
    param(wk, s ? &s->ln_pre_b : NULL, 1, D, 0, "%s.ln_pre.bias", pre);
    for (int i = 0; i < c->layers; i++) {
        bsq_block_w *b = s ? &s->blocks[i] : NULL;
#define BLK(field, nd, a, bb, suffix) \
    param(wk, b ? &b->field : NULL, nd, a, bb, "%s.transformer.resblocks.%d." suffix, pre, i)
        BLK(ln1_w, 1, D, 0, "ln_1.weight");
        BLK(ln1_b, 1, D, 0, "ln_1.bias");
        BLK(qkv_w, 2, 3 * D, D, "attn.in_proj_weight");
        BLK(qkv_b, 1, 3 * D, 0, "attn.in_proj_bias");
        BLK(out_w, 2, D, D, "attn.out_proj.weight");
        BLK(out_b, 1, D, 0, "attn.out_proj.bias");
        BLK(ln2_w, 1, D, 0, "ln_2.weight");
        BLK(ln2_b, 1, D, 0, "ln_2.bias");
        BLK(fc_w, 2, M, D, "mlp.c_fc.weight");
        BLK(fc_b, 1, M, 0, "mlp.c_fc.bias");
        BLK(proj_w, 2, D, M, "mlp.c_proj.weight");
        BLK(proj_b, 1, D, 0, "mlp.c_proj.bias");
#undef BLK
    }
    param(wk, s ? &s->ln_post_w : NULL, 1, D, 0, "%s.ln_post.weight", pre);
    param(wk, s ? &s->ln_post_b : NULL, 1, D, 0, "%s.ln_post.bias", pre);
}

static void walk(walker *wk, const bsq_config *c, bsq_model_w *w)
{
    const int64_t D = c->width, P3 = 3 * (int64_t)c->patch_size * c->patch_size;
    const int64_t L = c->L, F = c->decoder_ffn_dim;
    param(wk, w ? &w->embed_w : NULL, 2, D, P3, "encoder.conv1.weight");
    walk_stack(wk, c, w ? &w->enc : NULL, "encoder");
    param(wk, w ? &w->quant_w : NULL, 2, L, D, "quant_embed.weight");
    param(wk, w ? &w->quant_b : NULL, 1, L, 0, "quant_embed.bias");
    param(wk, w ? &w->post_w : NULL, 2, D, L, "post_quant_embed.weight");
    param(wk, w ? &w->post_b : NULL, 1, D, 0, "post_quant_embed.bias");
    walk_stack(wk, c, w ? &w->dec : NULL, "decoder");
    param(wk, w ? &w->ffn_w : NULL, 2, F, D, "decoder.ffn.0.weight");
    param(wk, w ? &w->ffn_b : NULL, 1, F, 0, "decoder.ffn.0.bias");
    param(wk, w ? &w->out_w : NULL, 2, P3, F, "decoder.conv_out.weight");
    param(wk, w ? &w->out_b : NULL, 1, P3, 0, "decoder.conv_out.bias");
}

void bsq_model_w_free(bsq_model_w *w)
{
    free(w->enc.blocks);
    free(w->dec.blocks);
    w->enc.blocks = w->dec.blocks = NULL;
}

bsq_status bsq_model_bind(const bsq_model *m, const float *base, bsq_model_w *w, bsq_error *err)
{
    memset(w, 0, sizeof *w);
    int layers = m->cfg.layers;
    w->enc.blocks = calloc((size_t)layers + 1, sizeof(bsq_block_w));
    w->dec.blocks = calloc((size_t)layers + 1, sizeof(bsq_block_w));
    if (!w->enc.blocks || !w->dec.blocks) {
        bsq_model_w_free(w);
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    }
    walker wk = {NULL, 0, 0, base};
    walk(&wk, &m->cfg, w);
    return BSQ_OK;
}

bsq_status bsq_model_alloc(const bsq_config *cfg, bsq_model **out, bsq_error *err)
{
    bsq_status st = bsq_config_validate(cfg, err);
    if (st != BSQ_OK)
        return st;
    bsq_model *m = calloc(1, sizeof *m);
    if (!m)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    m->cfg = *cfg;
    pthread_mutex_init(&m->fp_lock, NULL);
    walker count = {NULL, 0, 0, NULL};
    walk(&count, cfg, NULL);
    m->params = calloc(count.n, sizeof *m->params);
    m->nparams = count.n;
    m->total = count.total;
    if (m->params && count.total < ((size_t)1 << 34) / sizeof(float))
        m->data = aligned_alloc(64, ((count.total * sizeof(float)) + 63) & ~(size_t)63);
    if (!m->params || !m->data) {
        bsq_model_close(m);
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory for %zu parameters", count.total);
    }
    memset(m->data, 0, count.total * sizeof(float));
    walker fill = {m->params, 0, 0, m->data};
    walk(&fill, cfg, NULL);
    if ((st = bsq_model_bind(m, m->data, &m->w, err)) != BSQ_OK) {
        bsq_model_close(m);
        return st;
    }
    *out = m;
    return BSQ_OK;
}

void bsq_model_close(bsq_model *m)
{
    if (!m)
        return;
    bsq_model_w_free(&m->w);
    pthread_mutex_destroy(&m->fp_lock);
    free(m->params);
    free(m->data);
    free(m);
}

bsq_status bsq_model_fingerprint(const bsq_model *cm, uint8_t out[32], bsq_error *err)
{
    if (!cm || !out)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_model_fingerprint: NULL argument");
    bsq_model *m = (bsq_model *)cm; /* the cache is not part of the model's value */
    pthread_mutex_lock(&m->fp_lock);
    if (!m->fp_done) {
        char *json = bsq_config_to_json(&m->cfg);
        if (!json) {
            pthread_mutex_unlock(&m->fp_lock);
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
        }
        bsq_sha256 h;
        bsq_sha256_init(&h);
        bsq_sha256_update(&h, "bsq-model-fingerprint-v1", 25);
        bsq_sha256_update(&h, json, strlen(json) + 1);
        free(json);
        for (size_t i = 0; i < m->nparams; i++) {
            const bsq_param *p = &m->params[i];
            bsq_sha256_update(&h, p->name, strlen(p->name) + 1);
            /* floats as little-endian bytes, whatever the host */
            unsigned char buf[4096];
            const float *src = m->data + p->offset;
            for (size_t j = 0; j < p->count;) {
                size_t n = 0;
                for (; n < sizeof buf && j < p->count; n += 4, j++) {
                    uint32_t u;
                    memcpy(&u, &src[j], 4);
                    buf[n] = (unsigned char)u;
                    buf[n + 1] = (unsigned char)(u >> 8);
                    buf[n + 2] = (unsigned char)(u >> 16);
                    buf[n + 3] = (unsigned char)(u >> 24);
                }
                bsq_sha256_update(&h, buf, n);
            }
        }
        bsq_sha256_final(&h, m->fp);
        m->fp_done = 1;
    }
    memcpy(out, m->fp, 32);
    pthread_mutex_unlock(&m->fp_lock);
    return BSQ_OK;
}

const bsq_config *bsq_model_config(const bsq_model *m) { return &m->cfg; }

/* The quantizer's integer lookup buffers carry nothing the forward pass
 * needs (bits are packed with integer shifts). */
static int ignorable(const char *name) { return strncmp(name, "quantize.", 9) == 0; }

static const bsq_param *find_param(const bsq_model *m, const char *name)
{
    for (size_t i = 0; i < m->nparams; i++)
        if (strcmp(m->params[i].name, name) == 0)
            return &m->params[i];
    return NULL;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < n)
        snprintf(buf + o, n - o, "]");
}

bsq_status bsq_model_from_tensors(const bsq_tensorset *ts, const bsq_config *cfg,
                                  bsq_model **out, bsq_error *err)
{
    bsq_model *m;
    bsq_status st = bsq_model_alloc(cfg, &m, err);
    if (st != BSQ_OK)
        return st;
    unsigned char *seen = calloc(m->nparams, 1);
    if (!seen) {
        bsq_model_close(m);
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < ts->count && st == BSQ_OK; i++) {
        const bsq_tensor *t = &ts->items[i];
        if (ignorable(t->name))
            continue;
        const bsq_param *p = find_param(m, t->name);
        if (!p) {
            st = bsq_fail(err, BSQ_ERR_MODEL, "unexpected tensor %s (not part of this model)",
                          t->name);
            break;
        }
        if (t->ndim != p->ndim || t->shape[0] != p->shape[0] ||
            (p->ndim == 2 && t->shape[1] != p->shape[1])) {
            char want[64], got[64];
            shape_str(want, sizeof want, p->ndim, p->shape);
            shape_str(got, sizeof got, t->ndim, t->shape);
            st = bsq_fail(err, BSQ_ERR_MODEL, "tensor %s has shape %s, the configuration needs %s",
                          t->name, got, want);
            break;
        }
        seen[p - m->params] = 1;
        st = bsq_tensor_to_f32(t, m->data + p->offset, err);
    }
    for (size_t i = 0; i < m->nparams && st == BSQ_OK; i++)
        if (!seen[i])
            st = bsq_fail(err, BSQ_ERR_MODEL, "missing tensor %s", m->params[i].name);
    free(seen);
    if (st != BSQ_OK) {
        bsq_model_close(m);
        return st;
    }
    *out = m;
    return BSQ_OK;
}

/* A model from a tensor set holding a safetensors file's or a checkpoint's
 * contents: configuration from the metadata, completed by hints and shapes. */
static bsq_status model_from_set(const bsq_tensorset *ts, const bsq_config *hints,
                                 bsq_model **out, bsq_error *err)
{
    bsq_status st;
    bsq_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.block_causal = -1;
    const char *json = bsq_tensorset_meta(ts, "config");
    if (json && (st = bsq_config_parse_json(json, &cfg, err)) != BSQ_OK)
        return st;
    if (hints) { /* the file's own values win; hints fill the gaps */
#define FILL(f) if (!cfg.f) cfg.f = hints->f
        FILL(image_height); FILL(image_width); FILL(patch_size); FILL(width); FILL(layers);
        FILL(heads); FILL(mlp_dim); FILL(decoder_ffn_dim); FILL(L); FILL(group_size);
        FILL(num_frames);
#undef FILL
        if (cfg.block_causal < 0 && hints->block_causal)
            cfg.block_causal = hints->block_causal > 0; /* hints: 1 block-causal, -1 full */
        if (cfg.layer_norm_eps == 0)
            cfg.layer_norm_eps = hints->layer_norm_eps;
    }
    if ((st = bsq_config_complete(&cfg, ts, err)) == BSQ_OK) {
        if (cfg.block_causal < 0 && cfg.num_frames > 1)
            st = bsq_fail(err, BSQ_ERR_MODEL,
                          "a %d-frame video model without a recorded attention mask; give it "
                          "(bsqcodec import --mask block-causal|none)", cfg.num_frames);
        if (cfg.block_causal < 0)
            cfg.block_causal = 0; /* image models attend fully */
        if (st == BSQ_OK)
            st = bsq_model_from_tensors(ts, &cfg, out, err);
    }
    return st;
}

bsq_status bsq_model_open_memory(const void *bytes, size_t len, const bsq_config *hints,
                                 bsq_model **out, bsq_error *err)
{
    if (!bytes || !out)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_model_open_memory: NULL argument");
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    bsq_status st = bsq_safetensors_parse(bytes, len, &ts, err);
    if (st == BSQ_OK)
        st = model_from_set(&ts, hints, out, err);
    bsq_tensorset_free(&ts);
    return st;
}

bsq_status bsq_model_open(const char *path, const bsq_config *hints, bsq_model **out,
                          bsq_error *err)
{
    if (!path || !out)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_model_open: NULL argument");
    unsigned char head[9] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return bsq_fail(err, BSQ_ERR_IO, "%s: %s", path, strerror(errno));
    ssize_t got = read(fd, head, sizeof head);
    close(fd);
    /* a safetensors file opens with an 8-byte length, then its JSON header */
    if (got == (ssize_t)sizeof head && !bsq_checkpoint_sniff(head, 4) && head[8] != '{')
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "%s: neither a safetensors model nor a PyTorch checkpoint (zip)", path);

    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    bsq_status st;
    if (got >= 4 && bsq_checkpoint_sniff(head, 4))
        st = bsq_checkpoint_read(path, &ts, err);
    else
        st = bsq_safetensors_read(path, &ts, err);
    if (st != BSQ_OK) {
        bsq_tensorset_free(&ts);
        return st;
    }
    st = model_from_set(&ts, hints, out, err);
    bsq_tensorset_free(&ts);
    if (st != BSQ_OK)
        bsq_fail_prefix(err, st, "%s", path);
    return st;
}

bsq_status bsq_model_to_tensors(const bsq_model *m, bsq_dtype dtype, bsq_tensorset *ts,
                                bsq_error *err)
{
    bsq_status st = BSQ_OK;
    char *json = bsq_config_to_json(&m->cfg);
    if (!json)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    st = bsq_tensorset_set_meta(ts, "config", json, err);
    free(json);
    if (st == BSQ_OK)
        st = bsq_tensorset_set_meta(ts, "format", "official-bsq-vit-state-dict", err);
    for (size_t i = 0; i < m->nparams && st == BSQ_OK; i++) {
        const bsq_param *p = &m->params[i];
        const float *src = m->data + p->offset;
        if (dtype == BSQ_F32) {
            st = bsq_tensorset_add(ts, p->name, BSQ_DT_F32, p->ndim, p->shape, src,
                                   p->count * 4, 0, err);
            continue;
        }
        unsigned char *buf = malloc(p->count * 2 + 1);
        if (!buf)
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
        for (size_t j = 0; j < p->count; j++) {
            uint16_t h = dtype == BSQ_F16 ? bsq_f32_to_f16(src[j]) : bsq_f32_to_bf16(src[j]);
            buf[2 * j] = (unsigned char)(h & 0xff);
            buf[2 * j + 1] = (unsigned char)(h >> 8);
        }
        st = bsq_tensorset_add(ts, p->name, dtype == BSQ_F16 ? BSQ_DT_F16 : BSQ_DT_BF16, p->ndim,
                               p->shape, buf, p->count * 2, 1, err);
    }
    return st;
}

bsq_status bsq_model_save(const bsq_model *m, const char *path, bsq_dtype dtype, bsq_error *err)
{
    if (!m || !path)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_model_save: NULL argument");
    if (dtype != BSQ_F32 && dtype != BSQ_F16 && dtype != BSQ_BF16)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_model_save: unknown dtype %d", dtype);
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    bsq_status st = bsq_model_to_tensors(m, dtype, &ts, err);
    if (st == BSQ_OK)
        st = bsq_safetensors_write(path, &ts, err);
    bsq_tensorset_free(&ts);
    return st;
}
