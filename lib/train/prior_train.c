#include "train/prior_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/prior_net.h"
#include "error.h"
#include "splitmix.h"
#include "safetensors.h"

#define HCAP 8.0f /* the float hidden layer is clamped to [0, HCAP]: 255 steps */
#define NREF BSQ_NET_REFS
#define NMIS BSQ_NET_MIS

void bsq_prior_train_options_default(bsq_prior_train_options *o)
{
    memset(o, 0, sizeof *o);
    o->hidden = 64;
    o->epochs = 4;
    o->batch = 256;
    o->lr = 2e-3;
    o->seed = 1;
}

/* The 13 references of token i of frame f (codec/prior_net.c defines
 * them, for the coder too). */
static uint32_t references(const bsq_prior_clip *c, int f, size_t i, uint64_t *r)
{
    const bsq_frame_geom *g = &c->geom;
    const size_t tile = (size_t)g->grid_h * g->grid_w;
    const size_t per = tile * (size_t)g->tiles_y * g->tiles_x;
    const uint64_t *cur = c->tokens + (size_t)f * per + (i - i % tile);
    return bsq_prior_net_refs(cur, f % c->gop ? cur - per : NULL, g->grid_w, g->grid_h,
                              i % tile, r);
}

typedef struct {
    int L, H, nin;
    float *w1t, *b1, *v, *u, *a, *c; /* w1t [nin][H] */
    size_t n;                         /* floats in the block */
    float *block;
} fnet;

static int fnet_alloc(fnet *m, int L, int H)
{
    m->L = L, m->H = H, m->nin = NREF * L + NREF;
    m->n = (size_t)m->nin * H + H + (size_t)L * H + (size_t)L * L + (size_t)L * NREF * NMIS + L;
    m->block = calloc(m->n, sizeof(float));
    if (!m->block)
        return -1;
    float *p = m->block;
    m->w1t = p, p += (size_t)m->nin * H;
    m->b1 = p, p += H;
    m->v = p, p += (size_t)L * H;
    m->u = p, p += (size_t)L * L;
    m->a = p, p += (size_t)L * NREF * NMIS;
    m->c = p;
    return 0;
}

static float unif(uint64_t *s)
{
    return (float)((bsq_splitmix64(s) >> 40) * (1.0 / 16777216.0)) * 2 - 1;
}

/* Active inputs of a token: (reference, bit) pairs that are set, then the
 * presence inputs. */
static int active_inputs(int L, const uint64_t *r, uint32_t present, int *idx)
{
    int n = 0;
    for (int k = 0; k < NREF; k++) {
        if (!(present >> k & 1))
            continue;
        idx[n++] = NREF * L + k;
        for (uint64_t b = r[k]; b; b &= b - 1)
            idx[n++] = k * L + (L - 1 - __builtin_ctzll(b));
    }
    return n;
}

/* Forward (and, with g not NULL, backward into g) for one token; returns
 * its cross-entropy in nats. */
static double token_pass(const fnet *m, const uint64_t *r, uint32_t present, uint64_t tok,
                         fnet *g)
{
    const int L = m->L, H = m->H;
    int idx[NREF * (BSQ_NET_MAX_L + 1)];
    int na = active_inputs(L, r, present, idx);
    float acc[BSQ_NET_MAX_H], h[BSQ_NET_MAX_H], dh[BSQ_NET_MAX_H];
    memcpy(acc, m->b1, (size_t)H * sizeof(float));
    for (int q = 0; q < na; q++) {
        const float *col = m->w1t + (size_t)idx[q] * H;
        for (int k = 0; k < H; k++)
            acc[k] += col[k];
    }
    for (int k = 0; k < H; k++) {
        h[k] = acc[k] < 0 ? 0 : acc[k] > HCAP ? HCAP : acc[k];
        dh[k] = 0;
    }
    double loss = 0;
    float s[BSQ_NET_MAX_L];
    int mis[NREF] = {0};
    for (int d = 0; d < L; d++) {
        const int sh = L - 1 - d;
        const float *v = m->v + (size_t)d * H;
        float z = m->c[d];
        for (int k = 0; k < H; k++)
            z += v[k] * h[k];
        const float *u = m->u + (size_t)d * L;
        for (int j = 0; j < d; j++)
            z += u[j] * s[j];
        const float *a = m->a + (size_t)d * NREF * NMIS;
        float t[NREF];
        for (int k = 0; k < NREF; k++) {
            t[k] = present >> k & 1 ? ((r[k] >> sh & 1) ? 1.0f : -1.0f) : 0.0f;
            z += a[k * NMIS + mis[k]] * t[k];
        }
        const int bit = (int)(tok >> sh & 1);
        /* binary cross-entropy with logits: softplus(z) - bit z, stably */
        double lz = z;
        loss += (lz > 0 ? lz : 0) + log1p(exp(-fabs(lz))) - bit * lz;
        s[d] = bit ? 1.0f : -1.0f;
        if (g) {
            float p = 1.0f / (1.0f + expf(-z));
            float e = p - (float)bit;
            g->c[d] += e;
            float *gv = g->v + (size_t)d * H;
            for (int k = 0; k < H; k++) {
                gv[k] += e * h[k];
                dh[k] += e * v[k];
            }
            float *gu = g->u + (size_t)d * L;
            for (int j = 0; j < d; j++)
                gu[j] += e * s[j];
            float *ga = g->a + (size_t)d * NREF * NMIS;
            for (int k = 0; k < NREF; k++)
                ga[k * NMIS + mis[k]] += e * t[k];
        }
        for (int k = 0; k < NREF; k++) {
            mis[k] += (int)(r[k] >> sh & 1) != bit;
            mis[k] = mis[k] > 3 ? 3 : mis[k];
        }
    }
    if (g) {
        for (int k = 0; k < H; k++)
            dh[k] = acc[k] > 0 && acc[k] < HCAP ? dh[k] : 0;
        for (int k = 0; k < H; k++)
            g->b1[k] += dh[k];
        for (int q = 0; q < na; q++) {
            float *col = g->w1t + (size_t)idx[q] * H;
            for (int k = 0; k < H; k++)
                col[k] += dh[k];
        }
    }
    return loss;
}

/* ---------------------------------------------------------------- quantise */
typedef struct {
    int16_t *w1;  /* [H][nin] as stored */
    int32_t *b1, *c;
    int16_t *v, *u, *a;
    int shift1, shift2;
} qnet;

static int16_t q16(double x) { return (int16_t)lrint(x); }

/* Largest shift in [0, 30] with every scaled value within int16 and every
 * sum the decoder forms within int32 (see prior_net.c). */
static int pick_shift1(const fnet *m)
{
    const double step = HCAP / 255.0; /* float hidden value of one integer step */
    for (int sh = 30; sh > 0; sh--) {
        double scale = ldexp(1.0, sh) / step, worst = 0;
        int ok = 1;
        for (int k = 0; k < m->H && ok; k++) {
            double sum = fabs(m->b1[k]) * scale;
            for (int i = 0; i < m->nin; i++) {
                double w = fabs(m->w1t[(size_t)i * m->H + k]) * scale;
                ok &= w < 32000;
                sum += w;
            }
            worst = sum > worst ? sum : worst;
        }
        if (ok && worst < 2.0e9)
            return sh;
    }
    return 0;
}

static int pick_shift2(const fnet *m)
{
    const double step = HCAP / 255.0;
    for (int sh = 30; sh > 0; sh--) {
        double scale = 256.0 * ldexp(1.0, sh);
        int ok = 1;
        for (int d = 0; d < m->L && ok; d++) {
            double sum = fabs(m->c[d]) * scale;
            for (int k = 0; k < m->H; k++) {
                double w = fabs(m->v[(size_t)d * m->H + k]) * scale * step;
                ok &= w < 32000;
                sum += 255 * w;
            }
            for (int j = 0; j < m->L; j++) {
                double w = fabs(m->u[(size_t)d * m->L + j]) * scale;
                ok &= w < 32000;
                sum += w;
            }
            for (int r = 0; r < NREF; r++) {
                double mx = 0;
                for (int k = 0; k < NMIS; k++) {
                    double w = fabs(m->a[((size_t)d * NREF + r) * NMIS + k]) * scale;
                    mx = w > mx ? w : mx;
                }
                ok &= mx < 32000;
                sum += mx;
            }
            ok &= sum < 2.0e9;
        }
        if (ok)
            return sh;
    }
    return 0;
}

static int quantise(const fnet *m, qnet *q)
{
    const int L = m->L, H = m->H, nin = m->nin;
    q->w1 = malloc((size_t)H * nin * sizeof *q->w1);
    q->b1 = malloc((size_t)H * sizeof *q->b1);
    q->c = malloc((size_t)L * sizeof *q->c);
    q->v = malloc((size_t)L * H * sizeof *q->v);
    q->u = calloc((size_t)L * L, sizeof *q->u);
    q->a = malloc((size_t)L * NREF * NMIS * sizeof *q->a);
    if (!q->w1 || !q->b1 || !q->c || !q->v || !q->u || !q->a)
        return -1;
    const double step = HCAP / 255.0;
    q->shift1 = pick_shift1(m);
    q->shift2 = pick_shift2(m);
    const double s1 = ldexp(1.0, q->shift1) / step, s2 = 256.0 * ldexp(1.0, q->shift2);
    for (int k = 0; k < H; k++) {
        q->b1[k] = (int32_t)lrint(m->b1[k] * s1);
        for (int i = 0; i < nin; i++)
            q->w1[(size_t)k * nin + i] = q16(m->w1t[(size_t)i * H + k] * s1);
    }
    for (int d = 0; d < L; d++) {
        q->c[d] = (int32_t)lrint(m->c[d] * s2);
        for (int k = 0; k < H; k++)
            q->v[(size_t)d * H + k] = q16(m->v[(size_t)d * H + k] * s2 * step);
        for (int j = 0; j < d; j++) /* only below the diagonal is ever used */
            q->u[(size_t)d * L + j] = q16(m->u[(size_t)d * L + j] * s2);
        for (int r = 0; r < NREF * NMIS; r++)
            q->a[(size_t)d * NREF * NMIS + r] = q16(m->a[(size_t)d * NREF * NMIS + r] * s2);
    }
    return 0;
}

static void qnet_free(qnet *q)
{
    free(q->w1), free(q->b1), free(q->c), free(q->v), free(q->u), free(q->a);
}

/* ---------------------------------------------------------------- train */
typedef struct {
    int clip, frame;
    size_t tok;
} sample_ref;

bsq_status bsq_prior_train(const bsq_prior_clip *clips, int nclips, int L,
                           const uint8_t tokenizer_fp[32], const bsq_prior_train_options *opt,
                           const char *path, bsq_prior_train_report *rep, bsq_error *err)
{
    bsq_prior_train_options o;
    bsq_prior_train_options_default(&o);
    if (opt)
        o = *opt;
    if (L < 1 || L > BSQ_NET_MAX_L || o.hidden < 1 || o.hidden > BSQ_NET_MAX_H || o.epochs < 1 ||
        o.batch < 1)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "prior training: bad options");
    size_t total = 0;
    for (int c = 0; c < nclips; c++) {
        const bsq_frame_geom *g = &clips[c].geom;
        if (g->L != L || clips[c].gop < 1)
            return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "prior training: clip %d mismatched", c);
        total += (size_t)clips[c].frames * g->tiles_y * g->tiles_x * g->grid_h * g->grid_w;
    }
    if (!total)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "prior training: no tokens");
    fnet m = {0}, g = {0}, mm = {0}, vv = {0};
    sample_ref *order = malloc(total * sizeof *order);
    qnet q = {0};
    bsq_status st = BSQ_OK;
    if (!order || fnet_alloc(&m, L, o.hidden) || fnet_alloc(&g, L, o.hidden) ||
        fnet_alloc(&mm, L, o.hidden) || fnet_alloc(&vv, L, o.hidden)) {
        st = bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t n = 0;
    for (int c = 0; c < nclips; c++) {
        const bsq_frame_geom *gm = &clips[c].geom;
        size_t per = (size_t)gm->tiles_y * gm->tiles_x * gm->grid_h * gm->grid_w;
        for (int f = 0; f < clips[c].frames; f++)
            for (size_t i = 0; i < per; i++)
                order[n++] = (sample_ref){c, f, i};
    }
    uint64_t rng = o.seed * 0x9e3779b97f4a7c15ull + 7;
    /* small random first layer (so hidden units differ), the rest zero */
    for (size_t i = 0; i < (size_t)m.nin * m.H; i++)
        m.w1t[i] = 0.1f * unif(&rng);
    for (int k = 0; k < m.H; k++)
        m.b1[k] = 0.5f;
    const int64_t steps = (int64_t)o.epochs * (int64_t)((total + o.batch - 1) / o.batch);
    int64_t step = 0;
    double last_bits = 0;
    for (int ep = 0; ep < o.epochs; ep++) {
        for (size_t i = total; i > 1; i--) { /* shuffle */
            size_t j = bsq_splitmix64(&rng) % i;
            sample_ref t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
        double loss = 0;
        for (size_t b0 = 0; b0 < total; b0 += (size_t)o.batch, step++) {
            size_t b1 = b0 + (size_t)o.batch < total ? b0 + (size_t)o.batch : total;
            memset(g.block, 0, g.n * sizeof(float));
            for (size_t k = b0; k < b1; k++) {
                const bsq_prior_clip *c = &clips[order[k].clip];
                uint64_t r[NREF];
                uint32_t pr = references(c, order[k].frame, order[k].tok, r);
                size_t per = (size_t)c->geom.tiles_y * c->geom.tiles_x * c->geom.grid_h *
                             c->geom.grid_w;
                uint64_t tok = c->tokens[(size_t)order[k].frame * per + order[k].tok];
                loss += token_pass(&m, r, pr, tok, &g);
            }
            /* Adam, mean over the batch, learning rate decaying linearly */
            const float lr = (float)(o.lr * (1.0 - (double)step / (double)steps));
            const float inv = 1.0f / (float)(b1 - b0);
            const double t = (double)(step + 1);
            const float bc1 = (float)(1 - pow(0.9, t)), bc2 = (float)(1 - pow(0.999, t));
            for (size_t i = 0; i < m.n; i++) {
                float gi = g.block[i] * inv;
                mm.block[i] = 0.9f * mm.block[i] + 0.1f * gi;
                vv.block[i] = 0.999f * vv.block[i] + 0.001f * gi * gi;
                m.block[i] -= lr * (mm.block[i] / bc1) / (sqrtf(vv.block[i] / bc2) + 1e-8f);
            }
        }
        last_bits = loss / (double)total / log(2.0);
        if (o.verbose)
            fprintf(stderr, "prior: epoch %d/%d: %.4f bits per token (%.4f per bit)\n", ep + 1,
                    o.epochs, last_bits, last_bits / L);
    }
    if (quantise(&m, &q)) {
        st = bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    /* save, then measure the integer network as the coder will run it */
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    const int64_t H = o.hidden, nin = m.nin;
    int64_t sh[6][2] = {{H, nin}, {H, 0}, {L, H}, {L, L}, {L, NREF * NMIS}, {L, 0}};
    const char *names[6] = {"w1", "b1", "v", "u", "a", "c"};
    const void *data[6] = {q.w1, q.b1, q.v, q.u, q.a, q.c};
    const bsq_dt dts[6] = {BSQ_DT_I16, BSQ_DT_I32, BSQ_DT_I16, BSQ_DT_I16, BSQ_DT_I16, BSQ_DT_I32};
    for (int i = 0; i < 6 && st == BSQ_OK; i++)
        st = bsq_tensorset_add(&ts, names[i], dts[i], sh[i][1] ? 2 : 1, sh[i], data[i],
                               (size_t)sh[i][0] * (size_t)(sh[i][1] ? sh[i][1] : 1) *
                                   bsq_dt_size(dts[i]),
                               0, err);
    char buf[80], hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", tokenizer_fp[i]);
    if (st == BSQ_OK)
        st = bsq_tensorset_set_meta(&ts, "format", "bsq-prior-net-1", err);
    snprintf(buf, sizeof buf, "%d", q.shift1);
    if (st == BSQ_OK)
        st = bsq_tensorset_set_meta(&ts, "shift1", buf, err);
    snprintf(buf, sizeof buf, "%d", q.shift2);
    if (st == BSQ_OK)
        st = bsq_tensorset_set_meta(&ts, "shift2", buf, err);
    if (st == BSQ_OK)
        st = bsq_tensorset_set_meta(&ts, "tokenizer", hex, err);
    snprintf(buf, sizeof buf, "%zu tokens, %d epochs, %.4f bits per token (float)", total,
             o.epochs, last_bits);
    if (st == BSQ_OK)
        st = bsq_tensorset_set_meta(&ts, "trained_on", buf, err);
    bsq_prior_net *net = NULL;
    if (st == BSQ_OK)
        st = bsq_prior_net_from_tensors(&ts, &net, err);
    if (st == BSQ_OK)
        st = bsq_safetensors_write(path, &ts, err);
    bsq_tensorset_free(&ts);
    double ibits = 0;
    for (size_t k = 0; st == BSQ_OK && k < total; k++) {
        const bsq_prior_clip *c = &clips[order[k].clip];
        uint64_t r[NREF];
        uint32_t pr = references(c, order[k].frame, order[k].tok, r);
        size_t per =
            (size_t)c->geom.tiles_y * c->geom.tiles_x * c->geom.grid_h * c->geom.grid_w;
        uint64_t tok = c->tokens[(size_t)order[k].frame * per + order[k].tok];
        uint8_t hid[BSQ_NET_MAX_H];
        int32_t base[BSQ_NET_MAX_L];
        uint8_t mis[NREF] = {0};
        bsq_prior_net_hidden(net, r, pr, hid);
        bsq_prior_net_base(net, hid, base);
        for (int d = 0; d < L; d++) {
            int32_t z = bsq_prior_net_z(net, d, base[d], tok, r, pr, mis);
            int32_t qz = z >> net->shift2;
            qz = qz > 2047 ? 2047 : qz < -2047 ? -2047 : qz; /* the mixer's range */
            double lz = (double)qz / 256.0;
            uint32_t bit = (uint32_t)(tok >> (L - 1 - d) & 1);
            ibits += ((lz > 0 ? lz : 0) + log1p(exp(-fabs(lz))) - bit * lz) / log(2.0);
            bsq_prior_net_mis_update(net, d, bit, r, mis);
        }
    }
    bsq_prior_net_free(net);
    if (rep && st == BSQ_OK) {
        rep->tokens = total;
        rep->float_bits = last_bits;
        rep->int_bits = ibits / (double)total;
    }
done:
    free(order);
    free(m.block), free(g.block), free(mm.block), free(vv.block);
    qnet_free(&q);
    return st;
}
