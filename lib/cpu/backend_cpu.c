/* The CPU backend's operations table. Work is split into fixed-size tasks
 * (independent of the thread count) and run on the pool. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu.h"
#include "quantize_row.h"
#include "error.h"

#define SPAN 16384 /* elements per task for elementwise ops */
#define ROWS 16    /* rows per task for row-wise ops */

static bsq_pool *pool_of(bsq_backend *be) { return ((bsq_cpu *)be)->pool; }

static float *cpu_alloc(bsq_backend *be, size_t count)
{
    (void)be;
    if (count > SIZE_MAX / sizeof(float) - 64)
        return NULL;
    return aligned_alloc(64, (count * sizeof(float) + 63) & ~(size_t)63);
}

static void cpu_free(bsq_backend *be, float *p)
{
    (void)be;
    free(p);
}

static void cpu_copy(bsq_backend *be, float *dst, const float *src, size_t count)
{
    (void)be;
    if (dst != src)
        memcpy(dst, src, count * sizeof(float));
}

static bsq_status cpu_sync(bsq_backend *be, bsq_error *err)
{
    bsq_cpu *cpu = (bsq_cpu *)be;
    if (cpu->failed) {
        cpu->failed = 0;
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory for the CPU backend's scratch buffers");
    }
    return BSQ_OK;
}

/* ---- row-wise LayerNorm ---- */
typedef struct {
    const float *x, *w, *b;
    float *y;
    size_t rows;
    int d;
    float eps;
} ln_job;

static void ln_task(void *arg, size_t task, int thread)
{
    (void)thread;
    const ln_job *j = arg;
    size_t r1 = (task + 1) * ROWS < j->rows ? (task + 1) * ROWS : j->rows;
    for (size_t r = task * ROWS; r < r1; r++)
        bsq_cpu_layernorm_row(j->x + r * (size_t)j->d, j->w, j->b, j->y + r * (size_t)j->d, j->d,
                              j->eps);
}

static void cpu_layernorm(bsq_backend *be, const float *x, const float *w, const float *b,
                          float *y, size_t rows, int d, float eps)
{
    ln_job j = {x, w, b, y, rows, d, eps};
    bsq_pool_run(pool_of(be), (rows + ROWS - 1) / ROWS, ln_task, &j);
}

/* ---- elementwise ---- */
typedef struct {
    float *y;
    const float *x;
    size_t n;
    int kind; /* 0 gelu, 1 tanh, 2 add */
} ew_job;

static void ew_task(void *arg, size_t task, int thread)
{
    (void)thread;
    const ew_job *j = arg;
    size_t i0 = task * SPAN, n = j->n - i0 < SPAN ? j->n - i0 : SPAN;
    float *y = j->y + i0;
    if (j->kind == 0) {
        bsq_cpu_gelu_span(y, n);
    } else if (j->kind == 1) {
        bsq_cpu_tanh_span(y, n);
    } else {
        const float *x = j->x + i0;
        for (size_t i = 0; i < n; i++)
            y[i] += x[i];
    }
}

static void run_ew(bsq_backend *be, float *y, const float *x, size_t n, int kind)
{
    ew_job j = {y, x, n, kind};
    bsq_pool_run(pool_of(be), (n + SPAN - 1) / SPAN, ew_task, &j);
}

static void cpu_gelu(bsq_backend *be, float *x, size_t n) { run_ew(be, x, NULL, n, 0); }
static void cpu_tanh(bsq_backend *be, float *x, size_t n) { run_ew(be, x, NULL, n, 1); }
static void cpu_add(bsq_backend *be, float *y, const float *x, size_t n) { run_ew(be, y, x, n, 2); }

static void cpu_add_pos(bsq_backend *be, float *x, const float *pos, const float *tpos, int seqs,
                        int frames, int tokens, int d, int t0)
{
    (void)be;
    for (int s = 0; s < seqs; s++)
        for (int t = 0; t < frames; t++)
            for (int j = 0; j < tokens; j++) {
                float *row = x + (((size_t)s * frames + t) * tokens + j) * d;
                const float *p = pos + (size_t)j * d;
                const float *tp = tpos ? tpos + (size_t)(t0 + t) * d : NULL;
                for (int c = 0; c < d; c++)
                    row[c] += p[c] + (tp ? tp[c] : 0.0f);
            }
}

/* ---- patches ---- */
static void cpu_patchify(bsq_backend *be, const float *pix, float *tok, int seqs, int frames,
                         int gh, int gw, int p)
{
    (void)be;
    const size_t H = (size_t)gh * p, W = (size_t)gw * p, plane = (size_t)frames * H * W;
    const size_t P3 = 3 * (size_t)p * p;
    for (int s = 0; s < seqs; s++)
        for (int t = 0; t < frames; t++)
            for (int gy = 0; gy < gh; gy++)
                for (int gx = 0; gx < gw; gx++) {
                    float *o = tok + ((((size_t)s * frames + t) * gh + gy) * gw + gx) * P3;
                    for (int c = 0; c < 3; c++)
                        for (int r = 0; r < p; r++) {
                            const float *src = pix + (size_t)s * 3 * plane + c * plane +
                                               ((size_t)t * H + (size_t)gy * p + r) * W +
                                               (size_t)gx * p;
                            memcpy(o + ((size_t)c * p + r) * p, src, (size_t)p * sizeof(float));
                        }
                }
}

static void unpatch(const float *tok, float *pix, int seqs, int frames, int gh, int gw, int p,
                    int clamp)
{
    const size_t H = (size_t)gh * p, W = (size_t)gw * p, plane = (size_t)frames * H * W;
    const size_t P3 = 3 * (size_t)p * p;
    for (int s = 0; s < seqs; s++)
        for (int t = 0; t < frames; t++)
            for (int gy = 0; gy < gh; gy++)
                for (int gx = 0; gx < gw; gx++) {
                    const float *in = tok + ((((size_t)s * frames + t) * gh + gy) * gw + gx) * P3;
                    for (int c = 0; c < 3; c++)
                        for (int r = 0; r < p; r++) {
                            float *dst = pix + (size_t)s * 3 * plane + c * plane +
                                         ((size_t)t * H + (size_t)gy * p + r) * W + (size_t)gx * p;
                            const float *src = in + ((size_t)c * p + r) * p;
                            for (int x = 0; x < p; x++) {
                                float v = src[x];
                                dst[x] = clamp ? (v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v) : v;
                            }
                        }
                }
}

static void cpu_unpatchify(bsq_backend *be, const float *tok, float *pix, int seqs, int frames,
                           int gh, int gw, int p, int clamp)
{
    (void)be;
    unpatch(tok, pix, seqs, frames, gh, gw, p, clamp);
}

static void cpu_copy2d(bsq_backend *be, float *dst, size_t dst_stride, const float *src,
                       size_t src_stride, size_t rows, size_t cols)
{
    (void)be;
    for (size_t r = 0; r < rows; r++)
        memcpy(dst + r * dst_stride, src + r * src_stride, cols * sizeof(float));
}

static void cpu_zero(bsq_backend *be, float *x, size_t count)
{
    (void)be;
    memset(x, 0, count * sizeof(float));
}

/* ---- tiles (the host paths in encode.c do the same with tiling.h) ---- */
static void cpu_tile_extract(bsq_backend *be, const float *img, float *tiles,
                             const bsq_tile_grid *g, int s0, int n)
{
    (void)be;
    size_t total = (size_t)n * 3 * g->T * g->th * g->tw;
    for (size_t e = 0; e < total; e++)
        tiles[e] = img[bsq_tile_source(g, s0, e)];
}

static void cpu_tile_blend(bsq_backend *be, const float *tiles, float *img, const bsq_tile_grid *g,
                           int s0, int n)
{
    (void)be;
    const int per = g->ny * g->nx, b0 = s0 / per, b1 = (s0 + n - 1) / per;
    const size_t plane = (size_t)g->H * g->W;
    for (int b = b0; b <= b1; b++)
        for (int ct = 0; ct < 3 * g->T; ct++) {
            float *o = img + ((size_t)b * 3 * g->T + ct) * plane;
            for (int y = 0; y < g->H; y++)
                for (int x = 0; x < g->W; x++)
                    o[(size_t)y * g->W + x] += bsq_tile_blend_pixel(tiles, g, s0, n, b, ct, y, x);
        }
}

static void cpu_rgb8_to_planar(bsq_backend *be, const void *rgb, float *planar, int W, int H)
{
    (void)be;
    bsq_rgb8_to_planar(rgb, W, H, (size_t)W * 3, planar);
}

static void cpu_planar_to_rgb8(bsq_backend *be, const float *planar, void *rgb, int W, int H)
{
    (void)be;
    bsq_planar_to_rgb8(planar, W, H, rgb, (size_t)W * 3);
}

/* ---- BSQ ---- */
static void cpu_quantize(bsq_backend *be, float *v, float *z, uint64_t *idx, size_t rows, int L)
{
    (void)be;
    const float code = (float)(1.0 / sqrt((double)L)); /* correctly rounded, as PyTorch's */
    for (size_t r = 0; r < rows; r++)
        idx[r] = bsq_quantize_row(v + r * (size_t)L, z ? z + r * (size_t)L : NULL, L, code);
}

static void cpu_dequantize(bsq_backend *be, const uint64_t *idx, float *codes, size_t rows, int L)
{
    (void)be;
    const float code = (float)(1.0 / sqrt((double)L));
    for (size_t r = 0; r < rows; r++)
        for (int d = 0; d < L; d++)
            codes[r * (size_t)L + d] = (idx[r] >> (L - 1 - d)) & 1 ? code : -code;
}

static void cpu_destroy(bsq_backend *be);

static void cpu_set_weights(bsq_backend *be, const float *block, size_t count)
{
    bsq_cpu *cpu = (bsq_cpu *)be;
    bsq_cpu_gemm_release(cpu);
    cpu->weights_lo = block;
    cpu->weights_hi = block + count;
}

static const bsq_backend_ops cpu_ops = {
    .name = "cpu",
    .host_memory = 1,
    .fp32 = 1,
    .preferred_rows = 8192, /* large enough for efficient GEMMs, small enough for the caches */
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sync = cpu_sync,
    .set_weights = cpu_set_weights,
    .linear = bsq_cpu_linear,
    .layernorm = cpu_layernorm,
    .gelu = cpu_gelu,
    .tanh = cpu_tanh,
    .add = cpu_add,
    .add_pos = cpu_add_pos,
    .attention = bsq_cpu_attention,
    .patchify = cpu_patchify,
    .unpatchify = cpu_unpatchify,
    .copy2d = cpu_copy2d,
    .zero = cpu_zero,
    .tile_extract = cpu_tile_extract,
    .tile_blend = cpu_tile_blend,
    .rgb8_to_planar = cpu_rgb8_to_planar,
    .planar_to_rgb8 = cpu_planar_to_rgb8,
    .quantize = cpu_quantize,
    .dequantize = cpu_dequantize,
    .matmul = bsq_cpu_matmul,
    .colsum = bsq_cpu_colsum,
    .layernorm_backward = bsq_cpu_layernorm_backward,
    .gelu_backward = bsq_cpu_gelu_backward,
    .tanh_backward = bsq_cpu_tanh_backward,
    .add_pos_backward = bsq_cpu_add_pos_backward,
    .attention_backward = bsq_cpu_attention_backward,
};

static void cpu_destroy(bsq_backend *be)
{
    bsq_cpu *cpu = (bsq_cpu *)be;
    if (!cpu)
        return;
    bsq_pool_destroy(cpu->pool);
    bsq_cpu_gemm_release(cpu);
    for (int i = 0; i < cpu->threads; i++) {
        if (cpu->scratch)
            free(cpu->scratch[i]);
        if (cpu->gemm_scratch)
            free(cpu->gemm_scratch[i]);
        if (cpu->kv_pack)
            free(cpu->kv_pack[i]);
        if (cpu->bwd_scratch)
            free(cpu->bwd_scratch[i]);
    }
    free(cpu->bwd_scratch);
    free(cpu->reduce);
    free(cpu->scratch);
    free(cpu->gemm_scratch);
    free(cpu->kv_pack);
    free(cpu->packed);
    free(cpu);
}

bsq_status bsq_backend_cpu_create(int threads, bsq_backend **out, bsq_error *err)
{
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    if (threads > 1024)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "%d threads is too many", threads);
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    /* our pool parallelises; OpenBLAS's own threads would fight it */
    openblas_set_num_threads(1);
#endif
    bsq_cpu *cpu = calloc(1, sizeof *cpu);
    if (!cpu)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    cpu->base.ops = &cpu_ops;
    cpu->threads = threads;
    /* scores, accumulator, max, sum, scaled queries */
    cpu->scratch_len = BSQ_ATT_QB * BSQ_ATT_KB + 2 * BSQ_ATT_QB * BSQ_ATT_MAX_HEAD_DIM + 2 * BSQ_ATT_QB;
    cpu->scratch = calloc((size_t)threads, sizeof *cpu->scratch);
    cpu->gemm_scratch = calloc((size_t)threads, sizeof *cpu->gemm_scratch);
    cpu->kv_pack = calloc((size_t)threads, sizeof *cpu->kv_pack);
    cpu->bwd_scratch = calloc((size_t)threads, sizeof *cpu->bwd_scratch);
    cpu->pool = bsq_pool_create(threads);
    bsq_cpu_gemm_init(cpu);
    int ok = cpu->scratch && cpu->gemm_scratch && cpu->kv_pack && cpu->bwd_scratch && cpu->pool;
    for (int i = 0; ok && i < threads; i++)
        ok = (cpu->scratch[i] = aligned_alloc(64, cpu->scratch_len * sizeof(float))) != NULL &&
             (cpu->gemm_scratch[i] = aligned_alloc(64, bsq_cpu_gemm_scratch() * sizeof(float))) != NULL;
    if (!ok) {
        cpu_destroy(&cpu->base);
        return bsq_fail(err, BSQ_ERR_NOMEM, "cannot create %d CPU threads", threads);
    }
    *out = &cpu->base;
    return BSQ_OK;
}
