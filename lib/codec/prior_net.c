#include "codec/prior_net.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "error.h"
#include "safetensors.h"
#include "sha256.h"

void bsq_prior_net_free(bsq_prior_net *net)
{
    if (!net)
        return;
    free(net->block);
    free(net);
}

static int meta_int(const bsq_tensorset *ts, const char *key, int lo, int hi, int *out)
{
    const char *s = bsq_tensorset_meta(ts, key);
    if (!s)
        return 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi)
        return 0;
    *out = (int)v;
    return 1;
}

static int hex32(const char *s, uint8_t out[32])
{
    if (!s || strlen(s) != 64)
        return 0;
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1)
            return 0;
        out[i] = (uint8_t)v;
    }
    return 1;
}

/* Copies tensor `name` (dtype dt, shape d0 x d1; d1 = 0 for 1-D) into dst. */
static bsq_status take(const bsq_tensorset *ts, const char *name, bsq_dt dt, int64_t d0, int64_t d1,
                       void *dst, bsq_sha256 *h, bsq_error *err)
{
    const bsq_tensor *t = bsq_tensorset_find(ts, name);
    int ndim = d1 ? 2 : 1;
    if (!t || t->dtype != dt || t->ndim != ndim || t->shape[0] != d0 || (d1 && t->shape[1] != d1))
        return bsq_fail(err, BSQ_ERR_MODEL, "prior network: tensor '%s' missing or mis-shaped",
                        name);
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1) * bsq_dt_size(dt);
    if (t->nbytes != n)
        return bsq_fail(err, BSQ_ERR_MODEL, "prior network: tensor '%s' has %zu bytes", name,
                        t->nbytes);
    /* little-endian on disk; every supported platform is little-endian */
    memcpy(dst, t->data, n);
    bsq_sha256_update(h, t->data, n);
    return BSQ_OK;
}

bsq_status bsq_prior_net_from_tensors(const bsq_tensorset *ts, bsq_prior_net **out,
                                      bsq_error *err)
{
    const char *fmt = bsq_tensorset_meta(ts, "format");
    if (!fmt || strcmp(fmt, "bsq-prior-net-1"))
        return bsq_fail(err, BSQ_ERR_FORMAT, "not a bsqcodec prior network (format %s)",
                        fmt ? fmt : "missing");
    const bsq_tensor *w1 = bsq_tensorset_find(ts, "w1");
    const bsq_tensor *c = bsq_tensorset_find(ts, "c");
    if (!w1 || !c || w1->ndim != 2 || c->ndim != 1)
        return bsq_fail(err, BSQ_ERR_MODEL, "prior network: w1 or c missing");
    bsq_prior_net *net = calloc(1, sizeof *net);
    if (!net)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    net->L = (int)c->shape[0];
    net->H = (int)w1->shape[0];
    net->nin = (int)w1->shape[1];
    bsq_status st = BSQ_OK;
    if (net->L < 1 || net->L > BSQ_NET_MAX_L || net->H < 1 || net->H > BSQ_NET_MAX_H ||
        net->nin != BSQ_NET_REFS * net->L + BSQ_NET_REFS)
        st = bsq_fail(err, BSQ_ERR_MODEL, "prior network: bad sizes L=%d H=%d inputs=%d", net->L,
                      net->H, net->nin);
    else if (!meta_int(ts, "shift1", 0, 30, &net->shift1) ||
             !meta_int(ts, "shift2", 0, 30, &net->shift2) ||
             !hex32(bsq_tensorset_meta(ts, "tokenizer"), net->tokenizer))
        st = bsq_fail(err, BSQ_ERR_MODEL, "prior network: shift1, shift2 or tokenizer missing");
    const size_t L = (size_t)net->L, H = (size_t)net->H, nin = (size_t)net->nin;
    int16_t *w1buf = NULL;
    if (st == BSQ_OK) {
        size_t bytes = nin * H * 4 + nin * H * 2 + H * 4 + L * H * 2 + L * L * 2 +
                       L * BSQ_NET_REFS * BSQ_NET_MIS * 2 + L * 4;
        net->block = calloc(1, bytes + 64);
        w1buf = malloc(nin * H * 2);
        if (!net->block || !w1buf)
            st = bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    }
    if (st == BSQ_OK) {
        char *p = net->block; /* the int32 arrays first: all stay aligned */
        net->w1w = (int32_t *)p, p += nin * H * 4;
        net->b1 = (int32_t *)p, p += H * 4;
        net->c = (int32_t *)p, p += L * 4;
        net->w1t = (int16_t *)p, p += nin * H * 2;
        net->v = (int16_t *)p, p += L * H * 2;
        net->u = (int16_t *)p, p += L * L * 2;
        net->a = (int16_t *)p;
        bsq_sha256 h;
        bsq_sha256_init(&h);
        if ((st = take(ts, "w1", BSQ_DT_I16, net->H, net->nin, w1buf, &h, err)) == BSQ_OK &&
            (st = take(ts, "b1", BSQ_DT_I32, net->H, 0, net->b1, &h, err)) == BSQ_OK &&
            (st = take(ts, "v", BSQ_DT_I16, net->L, net->H, net->v, &h, err)) == BSQ_OK &&
            (st = take(ts, "u", BSQ_DT_I16, net->L, net->L, net->u, &h, err)) == BSQ_OK &&
            (st = take(ts, "a", BSQ_DT_I16, net->L, BSQ_NET_REFS * BSQ_NET_MIS, net->a, &h,
                       err)) == BSQ_OK &&
            (st = take(ts, "c", BSQ_DT_I32, net->L, 0, net->c, &h, err)) == BSQ_OK) {
            char shifts[32];
            snprintf(shifts, sizeof shifts, "%d,%d", net->shift1, net->shift2);
            bsq_sha256_update(&h, shifts, strlen(shifts));
            uint8_t digest[32];
            bsq_sha256_final(&h, digest);
            memcpy(net->fp, digest, 16);
            /* every sum the decoder forms must fit in int32 */
            for (size_t d = 0; d < L && st == BSQ_OK; d++) {
                int64_t m = net->c[d] < 0 ? -(int64_t)net->c[d] : net->c[d];
                for (size_t k = 0; k < H; k++)
                    m += 255 * (int64_t)abs(net->v[d * H + k]);
                for (size_t j = 0; j < L; j++)
                    m += abs(net->u[d * L + j]);
                for (int r = 0; r < BSQ_NET_REFS; r++) { /* the largest level counts */
                    int mx = 0;
                    for (int k = 0; k < BSQ_NET_MIS; k++) {
                        int v = abs(net->a[(d * BSQ_NET_REFS + r) * BSQ_NET_MIS + k]);
                        mx = v > mx ? v : mx;
                    }
                    m += mx;
                }
                if (m >= ((int64_t)1 << 31))
                    st = bsq_fail(err, BSQ_ERR_MODEL, "prior network: bit %zu can overflow", d);
            }
            for (size_t k = 0; k < H && st == BSQ_OK; k++) {
                int64_t m = net->b1[k] < 0 ? -(int64_t)net->b1[k] : net->b1[k];
                for (size_t i = 0; i < nin; i++)
                    m += abs(w1buf[k * nin + i]);
                if (m >= ((int64_t)1 << 31))
                    st = bsq_fail(err, BSQ_ERR_MODEL, "prior network: unit %zu can overflow", k);
            }
            for (size_t i = 0; i < nin; i++) /* transpose: a column per input */
                for (size_t k = 0; k < H; k++)
                    net->w1w[i * H + k] = net->w1t[i * H + k] = w1buf[k * nin + i];
        }
    }
    free(w1buf);
    if (st != BSQ_OK) {
        bsq_prior_net_free(net);
        return st;
    }
    *out = net;
    return BSQ_OK;
}

bsq_status bsq_prior_net_open_memory(const void *bytes, size_t len, bsq_prior_net **out,
                                     bsq_error *err)
{
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    bsq_status st = bsq_safetensors_parse(bytes, len, &ts, err);
    if (st == BSQ_OK)
        st = bsq_prior_net_from_tensors(&ts, out, err);
    bsq_tensorset_free(&ts);
    return st;
}

bsq_status bsq_prior_net_open(const char *path, bsq_prior_net **out, bsq_error *err)
{
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    bsq_status st = bsq_safetensors_read(path, &ts, err);
    if (st == BSQ_OK)
        st = bsq_prior_net_from_tensors(&ts, out, err);
    bsq_tensorset_free(&ts);
    if (st != BSQ_OK)
        bsq_fail_prefix(err, st, "%s", path);
    return st;
}

uint32_t bsq_prior_net_refs(const uint64_t *cur, const uint64_t *prev, int grid_w, int grid_h,
                            size_t j, uint64_t *refs)
{
    const int x = (int)(j % (size_t)grid_w), y = (int)(j / (size_t)grid_w);
    const int W = x > 0, E = x + 1 < grid_w, N = y > 0, S = y + 1 < grid_h;
    static const int dx[BSQ_NET_REFS] = {0, -1, 1, 0, 0, -1, 1, -1, 1, -1, 0, -1, 1};
    static const int dy[BSQ_NET_REFS] = {0, 0, 0, -1, 1, -1, -1, 1, 1, 0, -1, -1, -1};
    uint32_t present = 0;
    for (int k = 0; k < BSQ_NET_REFS; k++) {
        const int in_prev = k < 9;
        const int ok = (dx[k] < 0 ? W : dx[k] > 0 ? E : 1) & (dy[k] < 0 ? N : dy[k] > 0 ? S : 1);
        refs[k] = 0;
        if (!ok || (in_prev && !prev))
            continue;
        const ptrdiff_t at = (ptrdiff_t)j + (ptrdiff_t)dy[k] * grid_w + dx[k];
        refs[k] = (in_prev ? prev : cur)[at];
        present |= 1u << k;
    }
    return present;
}

void bsq_prior_net_hidden(const bsq_prior_net *net, const uint64_t *refs, uint32_t present,
                          uint8_t *h)
{
    const int L = net->L, H = net->H;
    /* Sums W1's columns of the inputs that are 1: bit d of a reference (d = 0
     * the most significant) is input r L + d, its presence input 13 L + r.
     * Integer sums: any order gives the same (and no partial sum overflows:
     * the load checks the sums of absolute values). */
#if defined(__SSE2__)
    /* the inputs first, then 16 units at a time summed in registers */
    int in[BSQ_NET_REFS * (BSQ_NET_MAX_L + 1)], n = 0;
    for (int r = 0; r < BSQ_NET_REFS; r++) {
        if (!(present >> r & 1))
            continue;
        in[n++] = BSQ_NET_REFS * L + r;
        for (uint64_t b = refs[r]; b; b &= b - 1)
            in[n++] = r * L + (L - 1 - __builtin_ctzll(b));
    }
    const __m128i shift = _mm_cvtsi32_si128(net->shift1);
    int k0 = 0;
    for (; k0 + 16 <= H; k0 += 16) {
        __m128i a0 = _mm_loadu_si128((const __m128i *)(net->b1 + k0));
        __m128i a1 = _mm_loadu_si128((const __m128i *)(net->b1 + k0 + 4));
        __m128i a2 = _mm_loadu_si128((const __m128i *)(net->b1 + k0 + 8));
        __m128i a3 = _mm_loadu_si128((const __m128i *)(net->b1 + k0 + 12));
        for (int c = 0; c < n; c++) {
            const __m128i *col = (const __m128i *)(net->w1w + (size_t)in[c] * H + k0);
            a0 = _mm_add_epi32(a0, _mm_loadu_si128(col));
            a1 = _mm_add_epi32(a1, _mm_loadu_si128(col + 1));
            a2 = _mm_add_epi32(a2, _mm_loadu_si128(col + 2));
            a3 = _mm_add_epi32(a3, _mm_loadu_si128(col + 3));
        }
        /* arithmetic shifts, then saturation to int16 and to 0..255: the
         * clamp below */
        const __m128i lo = _mm_packs_epi32(_mm_sra_epi32(a0, shift), _mm_sra_epi32(a1, shift));
        const __m128i hi = _mm_packs_epi32(_mm_sra_epi32(a2, shift), _mm_sra_epi32(a3, shift));
        _mm_storeu_si128((__m128i *)(h + k0), _mm_packus_epi16(lo, hi));
    }
    for (; k0 < H; k0++) {
        int32_t acc = net->b1[k0];
        for (int c = 0; c < n; c++)
            acc += net->w1w[(size_t)in[c] * H + k0];
        int32_t v = acc >> net->shift1; /* arithmetic: see context_model.c */
        h[k0] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
#else
    int32_t acc[BSQ_NET_MAX_H];
    memcpy(acc, net->b1, (size_t)H * sizeof *acc);
    for (int r = 0; r < BSQ_NET_REFS; r++) {
        if (!(present >> r & 1))
            continue;
        const int16_t *col = net->w1t + (size_t)(BSQ_NET_REFS * L + r) * H;
        for (int k = 0; k < H; k++)
            acc[k] += col[k];
        for (uint64_t b = refs[r]; b; b &= b - 1) {
            int s = __builtin_ctzll(b);
            const int16_t *cw = net->w1t + (size_t)(r * L + (L - 1 - s)) * H;
            for (int k = 0; k < H; k++)
                acc[k] += cw[k];
        }
    }
    for (int k = 0; k < H; k++) {
        int32_t v = acc[k] >> net->shift1; /* arithmetic: see context_model.c */
        h[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
#endif
}

void bsq_prior_net_base(const bsq_prior_net *net, const uint8_t *h, int32_t *base)
{
    const int L = net->L, H = net->H;
    for (int d = 0; d < L; d++) {
        const int16_t *v = net->v + (size_t)d * H;
        int32_t z = net->c[d];
        for (int k = 0; k < H; k++)
            z += (int32_t)v[k] * h[k];
        base[d] = z;
    }
}
