/* The CUDA backend against the CPU engine, in both precisions:
 *  - every op of the table on random data (sizes that are multiples of
 *    nothing convenient, key/value-cache attention, head sizes the tensor
 *    cores must pad);
 *  - the parity fixtures through whole models: fp32 within 1e-4 of the
 *    official outputs and every bit exact; bf16 with its errors reported and
 *    every bit exact wherever the fixture's |z| exceeds the z error seen.
 * Built twice: tests/check_cuda runs on a real GPU and is skipped (exit 77)
 * where there is none; tests/check_cuda_emu runs the same kernel sources
 * through the SIMT emulator (kernels/emu/) on any machine. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bsq.h"
#include "codec/gop.h"
#include "context.h"
#include "safetensors.h"
#include "testutil.h"
#include "tiling.h"

#ifdef BSQ_CUDA_EMULATE
#define GPU_CREATE bsq_backend_cuda_emu_create
#define GPU_GRAPH_COUNTS bsq_backend_cuda_emu_graph_counts
#else
#define GPU_CREATE bsq_backend_cuda_create
#define GPU_GRAPH_COUNTS bsq_backend_cuda_graph_counts
#endif

/* max |got - ref| / max |ref|: a product's error relative to its scale */
#define TOL_F32 1e-4
#define TOL_BF16 2e-2

static bsq_backend *gpu(int fp32)
{
    bsq_backend *be = NULL;
    bsq_error err;
    ck_assert_msg(GPU_CREATE(0, fp32, &be, &err) == BSQ_OK, "%s", err.message);
    ck_assert_int_eq(be->ops->fp32, fp32);
    return be;
}

static bsq_backend *cpu(void)
{
    bsq_backend *be = NULL;
    bsq_error err;
    ck_assert_msg(bsq_backend_cpu_create(1, &be, &err) == BSQ_OK, "%s", err.message);
    return be;
}

static float *fmalloc(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    ck_assert_ptr_nonnull(p);
    return p;
}

static float *random_floats(size_t n, uint64_t seed, float lo, float hi)
{
    float *p = fmalloc(n);
    tu_fill_uniform(p, n, seed, lo, hi);
    return p;
}

static float *dev_from(bsq_backend *be, const float *src, size_t n)
{
    float *d = be->ops->alloc(be, n);
    ck_assert_ptr_nonnull(d);
    be->ops->upload(be, d, src, n);
    return d;
}

/* device -> a fresh host array, after a sync that must succeed */
static float *dev_take(bsq_backend *be, const float *d, size_t n)
{
    float *h = fmalloc(n);
    bsq_error err;
    be->ops->download(be, h, d, n);
    ck_assert_msg(be->ops->sync(be, &err) == BSQ_OK, "%s", err.message);
    return h;
}

static double rel_err(const float *got, const float *ref, size_t n)
{
    double e = 0, m = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        ck_assert_msg(!isnan(got[i]), "NaN at %zu", i);
        e = d > e ? d : e;
        m = fabs(ref[i]) > m ? fabs(ref[i]) : m;
    }
    return e / m;
}

static void expect(const char *what, int fp32, double err, double tol_f32, double tol_bf16)
{
    double tol = fp32 ? tol_f32 : tol_bf16;
    printf("  %-44s %s  rel. error %.2e (limit %.0e)\n", what, fp32 ? "fp32" : "bf16", err, tol);
    ck_assert_msg(err <= tol, "%s (%s): error %.3e above %.0e", what, fp32 ? "fp32" : "bf16", err,
                  tol);
}

/* ---- ops ---- */

static void run_linear(int fp32, size_t rows, int k, int n, int in_block, int with_bias)
{
    bsq_backend *g = gpu(fp32), *c = cpu();
    float *x = random_floats(rows * k, 11 + rows, -1, 1);
    float *w = random_floats((size_t)n * k, 12 + k, -0.3f, 0.3f);
    float *b = random_floats((size_t)n, 13, -0.5f, 0.5f);
    /* a parameter block: 7 floats of padding, then w, then the bias */
    size_t blk_n = 7 + (size_t)n * k + n;
    float *blk = fmalloc(blk_n);
    memset(blk, 0, 7 * sizeof(float));
    memcpy(blk + 7, w, (size_t)n * k * sizeof(float));
    memcpy(blk + 7 + (size_t)n * k, b, (size_t)n * sizeof(float));
    float *dblk = dev_from(g, blk, blk_n), *dx = dev_from(g, x, rows * k);
    float *dy = g->ops->alloc(g, rows * n);
    if (in_block)
        g->ops->set_weights(g, dblk, blk_n);
    float *dw = in_block ? dblk + 7 : dev_from(g, w, (size_t)n * k);
    g->ops->linear(g, dx, dw, with_bias ? dblk + 7 + (size_t)n * k : NULL, dy, rows, k, n);
    float *got = dev_take(g, dy, rows * n), *ref = fmalloc(rows * n);
    c->ops->linear(c, x, w, with_bias ? b : NULL, ref, rows, k, n);
    char what[96];
    snprintf(what, sizeof what, "linear %zux%d -> %d%s%s", rows, k, n,
             in_block ? " (declared weights)" : "", with_bias ? " + bias" : "");
    expect(what, fp32, rel_err(got, ref, rows * n), TOL_F32, TOL_BF16);
    if (!in_block)
        g->ops->free(g, dw);
    g->ops->free(g, dblk);
    g->ops->free(g, dx);
    g->ops->free(g, dy);
    free(x), free(w), free(b), free(blk), free(got), free(ref);
    g->ops->destroy(g);
    c->ops->destroy(c);
}

START_TEST(test_linear)
{
    for (int fp32 = 1; fp32 >= 0; fp32--) {
        run_linear(fp32, 37, 40, 72, 0, 1);
        run_linear(fp32, 300, 64, 24, 1, 1);
        run_linear(fp32, 5, 18, 64, 1, 0);
        run_linear(fp32, 129, 192, 48, 0, 0);
    }
}
END_TEST

/* The fusions the graph uses when a backend has them: y = GELU(x w^T + b)
 * and y += x w^T + b, against the CPU's linear then gelu or add. */
START_TEST(test_fused_linear)
{
    const size_t rows = 45;
    const int k = 48, n = 80;
    for (int fp32 = 1; fp32 >= 0; fp32--)
        for (int kind = 0; kind < 2; kind++) {
            bsq_backend *g = gpu(fp32), *c = cpu();
            ck_assert(kind ? g->ops->linear_residual != NULL : g->ops->linear_gelu != NULL);
            float *x = random_floats(rows * k, 111, -1, 1);
            float *w = random_floats((size_t)n * k, 112, -0.3f, 0.3f);
            float *b = random_floats(n, 113, -0.5f, 0.5f), *y = random_floats(rows * n, 114, -2, 2);
            float *dx = dev_from(g, x, rows * k), *dw = dev_from(g, w, (size_t)n * k);
            float *db = dev_from(g, b, n), *dy = dev_from(g, y, rows * n), *t = fmalloc(rows * n);
            if (kind) {
                g->ops->linear_residual(g, dx, dw, db, dy, rows, k, n);
                c->ops->linear(c, x, w, b, t, rows, k, n);
                c->ops->add(c, y, t, rows * n);
            } else {
                g->ops->linear_gelu(g, dx, dw, db, dy, rows, k, n);
                c->ops->linear(c, x, w, b, y, rows, k, n);
                c->ops->gelu(c, y, rows * n);
            }
            float *got = dev_take(g, dy, rows * n);
            expect(kind ? "linear + residual add (fused)" : "linear + GELU (fused)", fp32,
                   rel_err(got, y, rows * n), TOL_F32, TOL_BF16);
            g->ops->free(g, dx), g->ops->free(g, dw), g->ops->free(g, db), g->ops->free(g, dy);
            free(x), free(w), free(b), free(y), free(t), free(got);
            g->ops->destroy(g);
            c->ops->destroy(c);
        }
}
END_TEST

START_TEST(test_layernorm)
{
    static const int dims[] = {64, 100, 33};
    for (int fp32 = 1; fp32 >= 0; fp32--)
        for (int di = 0; di < 3; di++) {
            int d = dims[di];
            size_t rows = 19;
            bsq_backend *g = gpu(fp32), *c = cpu();
            float *x = random_floats(rows * d, 21 + d, -3, 5);
            float *w = random_floats(d, 22, 0.5f, 1.5f), *b = random_floats(d, 23, -1, 1);
            float *dx = dev_from(g, x, rows * d), *dw = dev_from(g, w, d), *db = dev_from(g, b, d);
            g->ops->layernorm(g, dx, dw, db, dx, rows, d, 1e-5f); /* in place */
            float *got = dev_take(g, dx, rows * d), *ref = fmalloc(rows * d);
            c->ops->layernorm(c, x, w, b, ref, rows, d, 1e-5f);
            char what[64];
            snprintf(what, sizeof what, "layernorm d=%d (in place)", d);
            expect(what, fp32, rel_err(got, ref, rows * d), 1e-5, 1e-5);
            g->ops->free(g, dx), g->ops->free(g, dw), g->ops->free(g, db);
            free(x), free(w), free(b), free(got), free(ref);
            g->ops->destroy(g);
            c->ops->destroy(c);
        }
}
END_TEST

START_TEST(test_elementwise)
{
    const size_t n = 70001; /* more than one grid-stride pass of the smallest grid */
    for (int fp32 = 1; fp32 >= 0; fp32--)
        for (int op = 0; op < 3; op++) {
            bsq_backend *g = gpu(fp32), *c = cpu();
            float *x = random_floats(n, 31 + op, -6, 6), *y = random_floats(n, 41, -1, 1);
            float *dx = dev_from(g, x, n), *dy = dev_from(g, y, n);
            const char *name = op == 0 ? "gelu" : op == 1 ? "tanh" : "add";
            if (op == 0) {
                g->ops->gelu(g, dx, n);
                c->ops->gelu(c, x, n);
            } else if (op == 1) {
                g->ops->tanh(g, dx, n);
                c->ops->tanh(c, x, n);
            } else {
                g->ops->add(g, dx, dy, n);
                c->ops->add(c, x, y, n);
            }
            float *got = dev_take(g, dx, n);
            expect(name, fp32, rel_err(got, x, n), 1e-6, 1e-6);
            g->ops->free(g, dx), g->ops->free(g, dy);
            free(x), free(y), free(got);
            g->ops->destroy(g);
            c->ops->destroy(c);
        }
}
END_TEST

START_TEST(test_add_pos)
{
    const int seqs = 2, frames = 3, tokens = 5, d = 12, t0 = 1;
    const size_t n = (size_t)seqs * frames * tokens * d;
    for (int with_t = 0; with_t < 2; with_t++) {
        bsq_backend *g = gpu(1), *c = cpu();
        float *x = random_floats(n, 51, -1, 1), *pos = random_floats((size_t)tokens * d, 52, -1, 1);
        float *tpos = random_floats((size_t)(t0 + frames) * d, 53, -1, 1);
        float *dx = dev_from(g, x, n), *dp = dev_from(g, pos, (size_t)tokens * d);
        float *dt = dev_from(g, tpos, (size_t)(t0 + frames) * d);
        g->ops->add_pos(g, dx, dp, with_t ? dt : NULL, seqs, frames, tokens, d, t0);
        c->ops->add_pos(c, x, pos, with_t ? tpos : NULL, seqs, frames, tokens, d, t0);
        float *got = dev_take(g, dx, n);
        expect(with_t ? "add_pos (+ temporal)" : "add_pos", 1, rel_err(got, x, n), 1e-7, 1e-7);
        g->ops->free(g, dx), g->ops->free(g, dp), g->ops->free(g, dt);
        free(x), free(pos), free(tpos), free(got);
        g->ops->destroy(g);
        c->ops->destroy(c);
    }
}
END_TEST

START_TEST(test_patches_and_copies)
{
    const int seqs = 2, frames = 2, gh = 3, gw = 2, p = 4;
    const size_t n = (size_t)seqs * frames * gh * gw * 3 * p * p;
    bsq_backend *g = gpu(0), *c = cpu();
    float *pix = random_floats(n, 61, -1.5f, 1.5f), *tok = fmalloc(n), *back = fmalloc(n);
    float *dpix = dev_from(g, pix, n), *dtok = g->ops->alloc(g, n), *dback = g->ops->alloc(g, n);
    g->ops->patchify(g, dpix, dtok, seqs, frames, gh, gw, p);
    c->ops->patchify(c, pix, tok, seqs, frames, gh, gw, p);
    float *got = dev_take(g, dtok, n);
    ck_assert_msg(memcmp(got, tok, n * sizeof(float)) == 0, "patchify differs");
    free(got);
    for (int clamp = 0; clamp < 2; clamp++) {
        g->ops->unpatchify(g, dtok, dback, seqs, frames, gh, gw, p, clamp);
        c->ops->unpatchify(c, tok, back, seqs, frames, gh, gw, p, clamp);
        got = dev_take(g, dback, n);
        ck_assert_msg(memcmp(got, back, n * sizeof(float)) == 0, "unpatchify (clamp %d) differs",
                      clamp);
        free(got);
    }
    /* copy2d: 7 rows of 5 from a stride of 9 into a stride of 6 */
    float *src = random_floats(7 * 9, 62, -1, 1), dst[7 * 6], ref[7 * 6];
    for (int i = 0; i < 42; i++)
        dst[i] = ref[i] = (float)i;
    float *dsrc = dev_from(g, src, 63), *ddst = dev_from(g, dst, 42);
    g->ops->copy2d(g, ddst, 6, dsrc, 9, 7, 5);
    c->ops->copy2d(c, ref, 6, src, 9, 7, 5);
    got = dev_take(g, ddst, 42);
    ck_assert_msg(memcmp(got, ref, sizeof ref) == 0, "copy2d differs");
    printf("  patchify, unpatchify (clamped or not), copy2d: identical\n");
    free(got);
    g->ops->free(g, dpix), g->ops->free(g, dtok), g->ops->free(g, dback);
    g->ops->free(g, dsrc), g->ops->free(g, ddst);
    free(pix), free(tok), free(back), free(src);
    g->ops->destroy(g);
    c->ops->destroy(c);
}
END_TEST

/* Cutting tiles out of whole images and blending them back, on the device
 * against the CPU's ops (themselves checked against the host paths in
 * check_tiling), chunk by chunk as encode.c calls them. */
START_TEST(test_tiles)
{
    static const int shapes[3][6] = {/* T, H, W, th, B, chunk */
                                     {1, 300, 500, 256, 1, 2}, {2, 50, 70, 32, 3, 5}, {1, 20, 9, 32, 2, 1}};
    for (int k = 0; k < 3; k++) {
        const int T = shapes[k][0], H = shapes[k][1], W = shapes[k][2], th = shapes[k][3];
        const int B = shapes[k][4], chunk = shapes[k][5];
        bsq_backend *g = gpu(1), *c = cpu();
        const bsq_tile_grid grid = {T, H, W, th, th, bsq_tile_count(H, th), bsq_tile_count(W, th)};
        const int seqs = B * grid.ny * grid.nx;
        const size_t img_n = (size_t)B * 3 * T * H * W, tile_n = (size_t)seqs * 3 * T * th * th;
        const size_t tile_px = (size_t)3 * T * th * th;
        float *img = random_floats(img_n, 501 + k, -1, 1), *tiles = fmalloc(tile_n);
        float *dimg = dev_from(g, img, img_n), *dtiles = g->ops->alloc(g, tile_n);
        for (int s0 = 0; s0 < seqs; s0 += chunk) {
            int n = seqs - s0 < chunk ? seqs - s0 : chunk;
            g->ops->tile_extract(g, dimg, dtiles + s0 * tile_px, &grid, s0, n);
            c->ops->tile_extract(c, img, tiles + s0 * tile_px, &grid, s0, n);
        }
        float *got = dev_take(g, dtiles, tile_n);
        ck_assert_msg(memcmp(got, tiles, tile_n * sizeof(float)) == 0, "tile_extract differs");
        for (size_t i = 0; i < tile_n; i++)
            tiles[i] += 0.01f * (float)(i % 5);
        g->ops->upload(g, dtiles, tiles, tile_n);
        g->ops->zero(g, dimg, img_n);
        c->ops->zero(c, img, img_n);
        for (int s0 = 0; s0 < seqs; s0 += chunk) {
            int n = seqs - s0 < chunk ? seqs - s0 : chunk;
            g->ops->tile_blend(g, dtiles + s0 * tile_px, dimg, &grid, s0, n);
            c->ops->tile_blend(c, tiles + s0 * tile_px, img, &grid, s0, n);
        }
        float *back = dev_take(g, dimg, img_n);
        char what[80];
        snprintf(what, sizeof what, "tile_blend %dx%d, %d frames, tiles %d", W, H, T, th);
        expect(what, 1, rel_err(back, img, img_n), 1e-6, 1e-6);
        g->ops->free(g, dimg), g->ops->free(g, dtiles);
        free(img), free(tiles), free(got), free(back);
        g->ops->destroy(g);
        c->ops->destroy(c);
    }
}
END_TEST

/* RGB24 bytes <-> planar floats on the device, against the CPU's ops: every
 * byte value, and floats beyond [-1, 1] and at rounding ties. */
START_TEST(test_pixels)
{
    const int W = 37, H = 29;
    const size_t plane = (size_t)W * H, bytes = 3 * plane, words = (bytes + 3) / 4;
    bsq_backend *g = gpu(1), *c = cpu();
    uint8_t *rgb = malloc(words * 4), *back = malloc(words * 4), *ref = malloc(words * 4);
    ck_assert(rgb && back && ref);
    for (size_t i = 0; i < bytes; i++)
        rgb[i] = (uint8_t)(i * 37 % 256);
    float *planar = fmalloc(bytes), *drgb = g->ops->alloc(g, words), *dpl = g->ops->alloc(g, bytes);
    g->ops->upload(g, drgb, (const float *)(const void *)rgb, words);
    g->ops->rgb8_to_planar(g, drgb, dpl, W, H);
    float *got = dev_take(g, dpl, bytes);
    c->ops->rgb8_to_planar(c, rgb, planar, W, H);
    ck_assert(memcmp(got, planar, bytes * sizeof(float)) == 0);
    for (size_t i = 0; i < bytes; i++) /* out of range, and halfway between two bytes */
        planar[i] = i % 3 == 0 ? (float)(i % 11) * 0.3f - 1.6f : ((float)(i % 256) + 0.5f) / 127.5f - 1.0f;
    g->ops->upload(g, dpl, planar, bytes);
    g->ops->planar_to_rgb8(g, dpl, drgb, W, H);
    g->ops->download(g, (float *)(void *)back, drgb, words);
    bsq_error err;
    ck_assert_msg(g->ops->sync(g, &err) == BSQ_OK, "%s", err.message);
    c->ops->planar_to_rgb8(c, planar, ref, W, H);
    ck_assert(memcmp(back, ref, bytes) == 0);
    printf("  rgb8 <-> planar: identical to the CPU's\n");
    g->ops->free(g, drgb), g->ops->free(g, dpl);
    free(rgb), free(back), free(ref), free(planar), free(got);
    g->ops->destroy(g);
    c->ops->destroy(c);
}
END_TEST

START_TEST(test_quantize)
{
    static const int Ls[] = {18, 36, 64};
    const size_t rows = 300;
    for (int li = 0; li < 3; li++) {
        int L = Ls[li];
        bsq_backend *g = gpu(0), *c = cpu();
        float *v = random_floats(rows * L, 71 + L, -1, 1);
        v[5] = 0.0f; /* exactly zero is the code -1 */
        float *dv = dev_from(g, v, rows * L), *dz = g->ops->alloc(g, rows * L);
        uint64_t *gi = malloc(rows * 8), *ci = malloc(rows * 8);
        float *cz = fmalloc(rows * L);
        g->ops->quantize(g, dv, dz, gi, rows, L);
        c->ops->quantize(c, v, cz, ci, rows, L);
        float *gz = dev_take(g, dz, rows * L), *gc = dev_take(g, dv, rows * L);
        ck_assert_msg(memcmp(gi, ci, rows * 8) == 0, "L=%d: indices differ", L);
        ck_assert_msg(memcmp(gc, v, rows * L * sizeof(float)) == 0, "L=%d: codes differ", L);
        ck_assert_msg(rel_err(gz, cz, rows * L) < 1e-6, "L=%d: z differs", L);
        /* and back */
        float *dcodes = g->ops->alloc(g, rows * L);
        g->ops->dequantize(g, ci, dcodes, rows, L);
        c->ops->dequantize(c, ci, cz, rows, L);
        float *back = dev_take(g, dcodes, rows * L);
        ck_assert_msg(memcmp(back, cz, rows * L * sizeof(float)) == 0, "L=%d: dequantize differs", L);
        printf("  quantize / dequantize L=%d: indices and codes identical\n", L);
        g->ops->free(g, dv), g->ops->free(g, dz), g->ops->free(g, dcodes);
        free(v), free(gi), free(ci), free(cz), free(gz), free(gc), free(back);
        g->ops->destroy(g);
        c->ops->destroy(c);
    }
}
END_TEST

typedef struct {
    int batch, nq, nk, heads, hd, block, q_offset, cache;
} att_case;

static void run_attention(int fp32, const att_case *ac)
{
    bsq_backend *g = gpu(fp32), *c = cpu();
    const int D = ac->heads * ac->hd;
    /* packed qkv rows as the graph has them, or a separate cache for k, v */
    const size_t q_stride = ac->cache ? (size_t)D : 3 * (size_t)D;
    const size_t kv_stride = ac->cache ? (size_t)D : 3 * (size_t)D;
    const size_t q_n = (size_t)ac->batch * ac->nq * q_stride;
    const size_t kv_n = ac->cache ? (size_t)ac->batch * ac->nk * kv_stride : 0;
    float *q = random_floats(q_n, 81 + ac->nq, -2, 2);
    float *kv = ac->cache ? random_floats(2 * kv_n, 82, -2, 2) : NULL;
    const size_t out_n = (size_t)ac->batch * ac->nq * D;
    float *dq = dev_from(g, q, q_n), *dkv = kv ? dev_from(g, kv, 2 * kv_n) : NULL;
    float *dout = g->ops->alloc(g, out_n), *ref = fmalloc(out_n);
    bsq_attention_args a = {
        .q_stride = q_stride, .kv_stride = kv_stride, .out_stride = (size_t)D,
        .q_seq = (size_t)ac->nq, .kv_seq = ac->cache ? (size_t)ac->nk : (size_t)ac->nq,
        .out_seq = (size_t)ac->nq, .batch = ac->batch, .nq = ac->nq, .nk = ac->nk,
        .heads = ac->heads, .head_dim = ac->hd, .block = ac->block, .q_offset = ac->q_offset,
        .scale = 1.0f / sqrtf((float)ac->hd),
    };
    bsq_attention_args ga = a, ca = a;
    ga.q = dq, ga.out = dout;
    ga.k = ac->cache ? dkv : dq + D;
    ga.v = ac->cache ? dkv + kv_n : dq + 2 * D;
    ca.q = q, ca.out = ref;
    ca.k = ac->cache ? kv : q + D;
    ca.v = ac->cache ? kv + kv_n : q + 2 * D;
    g->ops->attention(g, &ga);
    c->ops->attention(c, &ca);
    float *got = dev_take(g, dout, out_n);
    char what[96];
    snprintf(what, sizeof what, "attention b%d q%d k%d h%d hd%d%s%s", ac->batch, ac->nq, ac->nk,
             ac->heads, ac->hd, ac->block ? " block-causal" : "", ac->cache ? " kv-cache" : "");
    expect(what, fp32, rel_err(got, ref, out_n), TOL_F32, TOL_BF16);
    g->ops->free(g, dq), g->ops->free(g, dout);
    if (dkv)
        g->ops->free(g, dkv);
    free(q), free(kv), free(ref), free(got);
    g->ops->destroy(g);
    c->ops->destroy(c);
}

START_TEST(test_attention)
{
    static const att_case cases[] = {
        {2, 70, 70, 2, 16, 0, 0, 0},    /* full, a partial query tile */
        {1, 64, 64, 2, 16, 16, 0, 0},   /* block-causal, 4 frames of 16 */
        {1, 130, 130, 1, 40, 0, 0, 0},  /* head size padded to 64, three query tiles */
        {2, 96, 96, 2, 64, 24, 0, 0},   /* block-causal, frames not tile-aligned */
        {1, 33, 33, 1, 128, 0, 0, 0},
        {2, 16, 48, 2, 32, 16, 32, 1},  /* streaming: frame 2 against a cache of 3 */
        {1, 20, 80, 1, 16, 20, 60, 1},  /* streaming: the 4th frame of 20 tokens */
    };
    for (int fp32 = 1; fp32 >= 0; fp32--)
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
            run_attention(fp32, &cases[i]);
}
END_TEST

/* ---- whole models on the parity fixtures ---- */

static void parity_case(const char *name, const char *io_name, int fp32)
{
    bsq_error err;
    char *wpath = tu_path(tu_data_dir(), name), *iopath = tu_path(tu_data_dir(), io_name);
    bsq_model *model;
    ck_assert_msg(bsq_model_open(wpath, NULL, &model, &err) == BSQ_OK, "%s", err.message);
    bsq_context *ctx;
    ck_assert_msg(bsq_context_create_on(model, gpu(fp32), &ctx, &err) == BSQ_OK, "%s", err.message);
    ck_assert_int_eq(bsq_context_precision(ctx), fp32 ? BSQ_PRECISION_FP32 : BSQ_PRECISION_BF16);
    const bsq_config *c = bsq_model_config(model);
    bsq_tensorset io;
    bsq_tensorset_init(&io);
    ck_assert_msg(bsq_safetensors_read(iopath, &io, &err) == BSQ_OK, "%s", err.message);
    const bsq_tensor *in = bsq_tensorset_find(&io, "input");
    int B = (int)in->shape[0], T = in->ndim == 5 ? (int)in->shape[2] : 1;
    int H = (int)in->shape[in->ndim - 2], W = (int)in->shape[in->ndim - 1], L = c->L;
    size_t N = (size_t)B * T * (H / c->patch_size) * (W / c->patch_size);
    int64_t n_in;
    float *input = tu_f32(&io, "input", &n_in), *z_ref = tu_f32(&io, "z", NULL);
    float *recon_ref = tu_f32(&io, "recon", NULL);
    const uint8_t *bits = bsq_tensorset_find(&io, "bits")->data;

    float *z = fmalloc(N * L), *recon = fmalloc((size_t)n_in);
    bsq_tokens *tok;
    ck_assert_msg(bsq_encode_latents(ctx, input, B, T, H, W, &tok, z, &err) == BSQ_OK, "%s",
                  err.message);
    double ez = tu_max_abs_diff(z, z_ref, N * L);
    size_t flips = 0, unexplained = 0;
    const uint64_t *idx = bsq_tokens_indices(tok);
    for (size_t i = 0; i < N; i++)
        for (int d = 0; d < L; d++)
            if (((idx[i] >> (L - 1 - d)) & 1) != bits[i * L + d]) {
                flips++;
                unexplained += fabsf(z_ref[i * L + d]) > ez;
            }
    /* the decoder from the fixture's tokens */
    uint64_t *ref_idx = bsq_tokens_indices_mut(tok);
    for (size_t i = 0; i < N; i++) {
        uint64_t v = 0;
        for (int d = 0; d < L; d++)
            v = v << 1 | bits[i * L + d];
        ref_idx[i] = v;
    }
    ck_assert_msg(bsq_decode(ctx, tok, recon, &err) == BSQ_OK, "%s", err.message);
    double er = tu_max_abs_diff(recon, recon_ref, (size_t)n_in);
    printf("  %-46s %s max|err| z %.2e recon %.2e; bit flips %zu (%zu beyond the z error)\n",
           io_name, fp32 ? "fp32" : "bf16", ez, er, flips, unexplained);
    if (fp32) {
        ck_assert_msg(ez <= 1e-4 && er <= 1e-4, "%s: fp32 error above 1e-4", io_name);
        ck_assert_msg(flips == 0, "%s: fp32 bits differ", io_name);
    } else {
        ck_assert_msg(ez <= 0.05 && er <= 0.1, "%s: bf16 error beyond reason", io_name);
        ck_assert_msg(unexplained == 0, "%s: a bit flipped where |z| exceeds the z error", io_name);
    }
    bsq_tokens_free(tok);
    bsq_context_destroy(ctx);
    bsq_model_close(model);
    bsq_tensorset_free(&io);
    free(input), free(z_ref), free(recon_ref), free(z), free(recon), free(wpath), free(iopath);
}

START_TEST(test_parity)
{
    static const char *const cases[][2] = {
        {"bsqvit-parity/img32_w64_l2_L18g9.weights.safetensors",
         "bsqvit-parity/img32_w64_l2_L18g9.io.safetensors"},
        {"bsqvit-parity/img32x48_w64_l2_L36g4.weights.safetensors",
         "bsqvit-parity/img32x48_w64_l2_L36g4.io.safetensors"},
        {"bsqvit-parity/vid4x32_w64_l2_L18g9_blockcausal.weights.safetensors",
         "bsqvit-parity/vid4x32_w64_l2_L18g9_blockcausal.t4.io.safetensors"},
        {"bsqvit-parity/vid4x32_w64_l2_L18g9_blockcausal.weights.safetensors",
         "bsqvit-parity/vid4x32_w64_l2_L18g9_blockcausal.t2.io.safetensors"},
    };
    for (int fp32 = 1; fp32 >= 0; fp32--)
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
            parity_case(cases[i][0], cases[i][1], fp32);
}
END_TEST

/* Streaming through the key/value cache gives what whole blocks give. */
START_TEST(test_stream)
{
    bsq_error err;
    char *wpath = tu_path(tu_data_dir(),
                          "bsqvit-parity/vid4x32_w64_l2_L18g9_blockcausal.weights.safetensors");
    bsq_model *model;
    ck_assert_msg(bsq_model_open(wpath, NULL, &model, &err) == BSQ_OK, "%s", err.message);
    bsq_context *ctx;
    ck_assert_msg(bsq_context_create_on(model, gpu(1), &ctx, &err) == BSQ_OK, "%s", err.message);
    const int T = 4, H = 40, W = 70; /* 2 x 3 tiles, cut and blended on the device */
    const size_t plane = (size_t)H * W;
    float *clip = random_floats(3 * T * plane, 91, -1, 1), *frame = fmalloc(3 * plane);
    bsq_tokens *whole;
    ck_assert_msg(bsq_encode(ctx, clip, 1, T, H, W, &whole, &err) == BSQ_OK, "%s", err.message);
    float *ref = fmalloc(3 * T * plane), *got = fmalloc(3 * plane);
    ck_assert_msg(bsq_decode(ctx, whole, ref, &err) == BSQ_OK, "%s", err.message);
    bsq_stream *s, *d;
    ck_assert_msg(bsq_stream_create(ctx, BSQ_STREAM_ENCODE, H, W, &s, &err) == BSQ_OK, "%s",
                  err.message);
    ck_assert_msg(bsq_stream_create(ctx, BSQ_STREAM_DECODE, H, W, &d, &err) == BSQ_OK, "%s",
                  err.message);
    const size_t P = bsq_tokens_layout(whole)->count / T;
    size_t differ = 0;
    double e = 0;
    /* three blocks: frame positions run plainly, then recorded, then replayed */
    for (int k = 0; k < 3 * T; k++) {
        const int t = k % T;
        for (int ch = 0; ch < 3; ch++)
            memcpy(frame + ch * plane, clip + ((size_t)ch * T + t) * plane, plane * sizeof(float));
        bsq_tokens *ft;
        ck_assert_msg(bsq_stream_encode(s, frame, &ft, &err) == BSQ_OK, "%s", err.message);
        for (size_t i = 0; i < P; i++)
            differ += bsq_tokens_indices(ft)[i] != bsq_tokens_indices(whole)[t * P + i];
        ck_assert_msg(bsq_stream_decode(d, ft, got, &err) == BSQ_OK, "%s", err.message);
        for (int ch = 0; ch < 3; ch++) {
            double de = tu_max_abs_diff(got + ch * plane, ref + ((size_t)ch * T + t) * plane, plane);
            e = de > e ? de : e;
        }
        bsq_tokens_free(ft);
    }
    unsigned long recorded, replayed;
    GPU_GRAPH_COUNTS(ctx->be, &recorded, &replayed);
    printf("  streaming 3 x 4 frames of 70x40 through the cache: %zu of %zu tokens differ from the block; "
           "decode max|diff| %.2e; %lu CUDA graphs recorded, %lu replays\n",
           differ, 3 * P * T, e, recorded, replayed);
    ck_assert_uint_eq(differ, 0);
    ck_assert(e <= 1e-4);
    const char *off = getenv("BSQ_CUDA_GRAPHS");
    if (!off || strcmp(off, "0") != 0) /* 4 frame positions, encode and decode */
        ck_assert(recorded >= 8 && replayed >= 8);
    bsq_stream_destroy(s);
    bsq_stream_destroy(d);
    bsq_tokens_free(whole);
    bsq_context_destroy(ctx);
    bsq_model_close(model);
    free(clip), free(frame), free(ref), free(got), free(wpath);
}
END_TEST

/* RGB24 frames converted on the device give what the float calls give with
 * the host's conversions, and the CPU's tokens (fp32). */
START_TEST(test_stream_rgb8)
{
    bsq_error err;
    char *wpath = tu_path(tu_data_dir(),
                          "bsqvit-parity/vid4x32_w64_l2_L18g9_blockcausal.weights.safetensors");
    bsq_model *model;
    ck_assert_msg(bsq_model_open(wpath, NULL, &model, &err) == BSQ_OK, "%s", err.message);
    bsq_context *g, *cpu;
    bsq_context_options co = {.threads = 1, .device = "cpu"};
    ck_assert_msg(bsq_context_create_on(model, gpu(1), &g, &err) == BSQ_OK, "%s", err.message);
    ck_assert_msg(bsq_context_create(model, &co, &cpu, &err) == BSQ_OK, "%s", err.message);
    const int H = 41, W = 70;
    const size_t stride = (size_t)W * 3 + 5;
    uint8_t *rgb = malloc(stride * H), *a = malloc(stride * H), *b = malloc(stride * H);
    float *planar = fmalloc((size_t)3 * H * W);
    ck_assert(rgb && a && b);
    bsq_stream *e8, *ef, *ec, *d8, *df;
    ck_assert_int_eq(bsq_stream_create(g, BSQ_STREAM_ENCODE, H, W, &e8, &err), BSQ_OK);
    ck_assert_int_eq(bsq_stream_create(g, BSQ_STREAM_ENCODE, H, W, &ef, &err), BSQ_OK);
    ck_assert_int_eq(bsq_stream_create(cpu, BSQ_STREAM_ENCODE, H, W, &ec, &err), BSQ_OK);
    ck_assert_int_eq(bsq_stream_create(g, BSQ_STREAM_DECODE, H, W, &d8, &err), BSQ_OK);
    ck_assert_int_eq(bsq_stream_create(g, BSQ_STREAM_DECODE, H, W, &df, &err), BSQ_OK);
    size_t differ = 0;
    for (int f = 0; f < 6; f++) {
        tu_fill_uniform(planar, (size_t)3 * H * W, 700 + f, -1, 1);
        memset(rgb, 0x55, stride * H);
        bsq_planar_to_rgb8(planar, W, H, rgb, stride);
        bsq_tokens *t8, *tf, *tc;
        ck_assert_msg(bsq_stream_encode_rgb8(e8, rgb, stride, &t8, &err) == BSQ_OK, "%s", err.message);
        ck_assert_msg(bsq_stream_encode_rgb8(ec, rgb, stride, &tc, &err) == BSQ_OK, "%s", err.message);
        bsq_rgb8_to_planar(rgb, W, H, stride, planar);
        ck_assert_msg(bsq_stream_encode(ef, planar, &tf, &err) == BSQ_OK, "%s", err.message);
        const size_t n = bsq_tokens_layout(t8)->count;
        ck_assert(memcmp(bsq_tokens_indices(t8), bsq_tokens_indices(tf), n * 8) == 0);
        for (size_t i = 0; i < n; i++)
            differ += bsq_tokens_indices(t8)[i] != bsq_tokens_indices(tc)[i];
        memset(a, 0xee, stride * H);
        memset(b, 0xee, stride * H);
        ck_assert_msg(bsq_stream_decode_rgb8(d8, t8, a, stride, &err) == BSQ_OK, "%s", err.message);
        ck_assert_msg(bsq_stream_decode(df, tf, planar, &err) == BSQ_OK, "%s", err.message);
        bsq_planar_to_rgb8(planar, W, H, b, stride);
        ck_assert(memcmp(a, b, stride * H) == 0);
        bsq_tokens_free(t8), bsq_tokens_free(tf), bsq_tokens_free(tc);
    }
    printf("  RGB24 streams: converted on the device = on the host; %zu tokens differ from the CPU's\n",
           differ);
    ck_assert_uint_eq(differ, 0);
    bsq_stream_destroy(e8), bsq_stream_destroy(ef), bsq_stream_destroy(ec);
    bsq_stream_destroy(d8), bsq_stream_destroy(df);
    free(rgb), free(a), free(b), free(planar), free(wpath);
    bsq_context_destroy(g);
    bsq_context_destroy(cpu);
    bsq_model_close(model);
}
END_TEST

/* Tokens made on the GPU (bf16) go through the prior and the range coder
 * and come back identical on the CPU, which decodes them to the pixels the
 * GPU's fp32 mode gives: what a file made on a GPU needs. */
START_TEST(test_codec_roundtrip)
{
    bsq_error err;
    char *wpath = tu_path(tu_data_dir(),
                          "bsqvit-parity/vid4x32_w64_l2_L18g9_blockcausal.weights.safetensors");
    bsq_model *model;
    ck_assert_msg(bsq_model_open(wpath, NULL, &model, &err) == BSQ_OK, "%s", err.message);
    bsq_context *g16, *g32, *cpu;
    bsq_context_options co = {.threads = 1, .device = "cpu"};
    ck_assert_msg(bsq_context_create_on(model, gpu(0), &g16, &err) == BSQ_OK, "%s", err.message);
    ck_assert_msg(bsq_context_create_on(model, gpu(1), &g32, &err) == BSQ_OK, "%s", err.message);
    ck_assert_msg(bsq_context_create(model, &co, &cpu, &err) == BSQ_OK, "%s", err.message);
    const int T = 4, H = 32, W = 32;
    const size_t npix = (size_t)3 * T * H * W;
    float *clip = random_floats(npix, 101, -1, 1);
    bsq_tokens *tok;
    ck_assert_msg(bsq_encode(g16, clip, 1, T, H, W, &tok, &err) == BSQ_OK, "%s", err.message);
    const bsq_token_layout *lay = bsq_tokens_layout(tok);
    const size_t per = lay->count / T;
    bsq_frame_geom geom = {.L = lay->L, .tiles_y = lay->tiles_y, .tiles_x = lay->tiles_x,
                           .grid_h = lay->grid_h, .grid_w = lay->grid_w};
    bsq_prior *enc, *dec;
    ck_assert_int_eq(bsq_prior_context_create(&geom, &enc, &err), BSQ_OK);
    ck_assert_int_eq(bsq_prior_context_create(&geom, &dec, &err), BSQ_OK);
    uint8_t *payload;
    size_t size;
    ck_assert_msg(bsq_gop_encode(enc, bsq_tokens_indices(tok), T, per, &payload, &size, &err) ==
                      BSQ_OK, "%s", err.message);
    bsq_tokens *back;
    ck_assert_int_eq(bsq_tokens_create(lay, &back, &err), BSQ_OK);
    ck_assert_msg(bsq_gop_decode(dec, payload, size, T, per, bsq_tokens_indices_mut(back), &err) ==
                      BSQ_OK, "%s", err.message);
    ck_assert(memcmp(bsq_tokens_indices(back), bsq_tokens_indices(tok), lay->count * 8) == 0);
    float *a = fmalloc(npix), *b = fmalloc(npix);
    ck_assert_msg(bsq_decode(cpu, back, a, &err) == BSQ_OK, "%s", err.message);
    ck_assert_msg(bsq_decode(g32, back, b, &err) == BSQ_OK, "%s", err.message);
    double e = tu_max_abs_diff(a, b, npix);
    printf("  GPU bf16 tokens -> %zu-byte payload -> CPU: identical tokens; CPU vs GPU fp32 "
           "decode max|diff| %.2e\n", size, e);
    ck_assert(e <= 1e-4);
    free(payload), free(clip), free(a), free(b), free(wpath);
    enc->ops->destroy(enc);
    dec->ops->destroy(dec);
    bsq_tokens_free(tok);
    bsq_tokens_free(back);
    bsq_context_destroy(g16);
    bsq_context_destroy(g32);
    bsq_context_destroy(cpu);
    bsq_model_close(model);
}
END_TEST

/* Many chunks per call (a small chunk size): the pipeline overlaps them in
 * two slots, and from their second occurrence the chunks' shapes run as
 * recorded CUDA graphs. In the emulator, queued work runs as late as CUDA
 * allows, so a missing wait or a buffer reused too early changes results.
 * Three calls each (plain, captured, replayed) against the CPU. */
START_TEST(test_pipeline)
{
    bsq_error err;
    char *wpath = tu_path(tu_data_dir(), "bsqvit-parity/img32_w64_l2_L18g9.weights.safetensors");
    bsq_model *model;
    ck_assert_msg(bsq_model_open(wpath, NULL, &model, &err) == BSQ_OK, "%s", err.message);
    const bsq_config *cfg = bsq_model_config(model);
    const int B = 2, H = 50, W = 70; /* 2 x 3 tiles of 32 x 32 each */
    const int P = (cfg->image_height / cfg->patch_size) * (cfg->image_width / cfg->patch_size);
    const size_t npix = (size_t)B * 3 * H * W;
    float *img = random_floats(npix, 303, -1, 1);
    bsq_context *cpu;
    bsq_context_options co = {.threads = 1, .device = "cpu"};
    ck_assert_msg(bsq_context_create(model, &co, &cpu, &err) == BSQ_OK, "%s", err.message);
    bsq_tokens *ref;
    ck_assert_msg(bsq_encode(cpu, img, B, 1, H, W, &ref, &err) == BSQ_OK, "%s", err.message);
    const size_t count = bsq_tokens_layout(ref)->count;
    float *ref_pix = fmalloc(npix), *pix = fmalloc(npix), *first = fmalloc(npix);
    ck_assert_msg(bsq_decode(cpu, ref, ref_pix, &err) == BSQ_OK, "%s", err.message);
    for (int fp32 = 1; fp32 >= 0; fp32--) {
        bsq_backend *be = gpu(fp32);
        bsq_context *g;
        ck_assert_msg(bsq_context_create_on(model, be, &g, &err) == BSQ_OK, "%s", err.message);
        g->chunk_rows = (size_t)5 * P; /* 12 tiles: chunks of 5, 5, 2 */
        bsq_tokens *t0 = NULL;
        for (int rep = 0; rep < 3; rep++) {
            bsq_tokens *t;
            ck_assert_msg(bsq_encode(g, img, B, 1, H, W, &t, &err) == BSQ_OK, "%s", err.message);
            size_t bits = 0;
            for (size_t i = 0; i < count; i++)
                bits += (size_t)__builtin_popcountll(bsq_tokens_indices(t)[i] ^ bsq_tokens_indices(ref)[i]);
            ck_assert_msg(bsq_decode(g, t, pix, &err) == BSQ_OK, "%s", err.message);
            double e = tu_max_abs_diff(pix, ref_pix, npix);
            printf("  pipeline %s call %d: %zu of %zu bits differ from the CPU's; decode max|diff| "
                   "%.2e\n", fp32 ? "fp32" : "bf16", rep + 1, bits, count * cfg->L, e);
            if (fp32) {
                ck_assert_uint_eq(bits, 0);
                ck_assert(e <= 1e-4);
            } else { /* bf16 flips bits where |z| is small (test_parity bounds them) */
                ck_assert(bits <= count * cfg->L / 100);
            }
            if (rep == 0) {
                t0 = t;
                memcpy(first, pix, npix * sizeof(float));
            } else { /* recorded and replayed work gives the same bits */
                ck_assert(memcmp(bsq_tokens_indices(t), bsq_tokens_indices(t0), count * 8) == 0);
                ck_assert(memcmp(pix, first, npix * sizeof(float)) == 0);
                bsq_tokens_free(t);
            }
        }
        unsigned long recorded, replayed;
        GPU_GRAPH_COUNTS(g->be, &recorded, &replayed);
        printf("  pipeline %s: %lu CUDA graphs recorded, %lu replays\n", fp32 ? "fp32" : "bf16",
               recorded, replayed);
        const char *off = getenv("BSQ_CUDA_GRAPHS");
        if (!off || strcmp(off, "0") != 0) {
            ck_assert_uint_ge(recorded, 4); /* encode and decode, both slots */
            ck_assert_uint_ge(replayed, 4);
        }
        bsq_tokens_free(t0);
        bsq_context_destroy(g);
    }
    bsq_tokens_free(ref);
    free(img), free(ref_pix), free(pix), free(first), free(wpath);
    bsq_context_destroy(cpu);
    bsq_model_close(model);
}
END_TEST

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines survive a failing (forked) test */
    bsq_backend *probe = NULL;
    bsq_error err;
    if (GPU_CREATE(0, 1, &probe, &err) != BSQ_OK) {
        printf("SKIP: no CUDA device to test (%s)\n", err.message);
        return 77;
    }
    probe->ops->destroy(probe);
    Suite *s = suite_create("cuda");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_linear);
    tcase_add_test(tc, test_fused_linear);
    tcase_add_test(tc, test_layernorm);
    tcase_add_test(tc, test_elementwise);
    tcase_add_test(tc, test_add_pos);
    tcase_add_test(tc, test_patches_and_copies);
    tcase_add_test(tc, test_tiles);
    tcase_add_test(tc, test_pixels);
    tcase_add_test(tc, test_quantize);
    tcase_add_test(tc, test_attention);
    suite_add_tcase(s, tc);
    TCase *tm = tcase_create("models");
    tcase_set_timeout(tm, 600);
    tcase_add_test(tm, test_parity);
    tcase_add_test(tm, test_stream);
    tcase_add_test(tm, test_stream_rgb8);
    tcase_add_test(tm, test_codec_roundtrip);
    tcase_add_test(tm, test_pipeline);
    suite_add_tcase(s, tm);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
