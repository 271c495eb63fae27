/* bench_cuda: the CUDA backend on the official BSQ-ViT architecture (D 768,
 * 12+12 layers, 12 heads, MLP and FFN 3072, L 18, patch 8; random weights),
 * in one run: a check against the CPU engine, then images/s at 128x128 and
 * 256x256 (batch 1, 64 and 256: the last runs as a pipeline of 64k-token
 * chunks), 720p and 1080p frames/s through 256x256 tiles (1 and 8 frames
 * per call), encode and decode apart, batch 1 at 128x128 again with CUDA
 * graphs off, peak device memory, and the model's achieved TFLOP/s against
 * the cuBLAS bf16 rate measured in the same run.
 *
 *   bench_cuda [--device cuda:N] [--quick] [--fp32]
 *
 * --quick: fewer iterations, batches of 16 and 64, 4 frames per call.
 * Prints a markdown table (bench/cuda.sh runs this after the tests). */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "bsq.h"
#include "model.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, const bsq_error *err)
{
    fprintf(stderr, "bench_cuda: %s: %s\n", what, err->message);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench_cuda: out of memory\n");
        exit(1);
    }
    return p;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float uniform(void) /* [-1, 1) */
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (float)((double)((rng * 0x2545F4914F6CDD1Dull) >> 11) * 0x1p-52 - 1.0);
}

/* The official architecture at size x size, weights uniform in +-1/sqrt(D)
 * (LayerNorm gains near 1), so activations stay in a sane range. */
static bsq_model *official(int size)
{
    bsq_config c = {.image_height = size, .image_width = size, .patch_size = 8, .width = 768,
                    .layers = 12, .heads = 12, .mlp_dim = 3072, .decoder_ffn_dim = 3072, .L = 18,
                    .group_size = 9, .num_frames = 1, .block_causal = 0, .layer_norm_eps = 1e-5f};
    bsq_model *m;
    bsq_error err;
    if (bsq_model_alloc(&c, &m, &err) != BSQ_OK)
        die("model", &err);
    rng = 0x9E3779B97F4A7C15ull + (uint64_t)size;
    for (size_t i = 0; i < m->total; i++)
        m->data[i] = uniform() * 0.036f;
    return m;
}

static double flops_per_image(const bsq_config *c, int decode)
{
    double N = (double)(c->image_height / c->patch_size) * (c->image_width / c->patch_size);
    double D = c->width, M = c->mlp_dim, F = c->decoder_ffn_dim, L = c->L;
    double P3 = 3.0 * c->patch_size * c->patch_size;
    double stack = c->layers * (N * (8 * D * D + 4 * D * M) + 4 * N * N * D);
    return decode ? stack + 2 * N * (L * D + D * F + F * P3) : stack + 2 * N * (P3 * D + D * L);
}

typedef struct {
    int dev;
    size_t base, peak;
} memwatch;

static void mem_sample(memwatch *w)
{
    size_t used, total;
    bsq_error err;
    if (bsq_cuda_memory_used(w->dev, &used, &total, &err) == BSQ_OK && used > w->peak)
        w->peak = used;
}

/* Times encode (or decode) of `batch` images of h x w; returns images/s. */
static double time_op(bsq_context *ctx, int decode, int batch, int h, int w, int iters,
                      memwatch *mw)
{
    bsq_error err;
    size_t n = (size_t)batch * 3 * h * w;
    float *pix = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        pix[i] = uniform();
    bsq_tokens *tok = NULL;
    if (bsq_encode(ctx, pix, batch, 1, h, w, &tok, &err) != BSQ_OK)
        die("encode", &err);
    mem_sample(mw);
    double best = 1e300;
    for (int i = 0; i < iters + 1; i++) {
        double t0 = now_s();
        if (decode) {
            if (bsq_decode(ctx, tok, pix, &err) != BSQ_OK)
                die("decode", &err);
        } else {
            bsq_tokens_free(tok);
            if (bsq_encode(ctx, pix, batch, 1, h, w, &tok, &err) != BSQ_OK)
                die("encode", &err);
        }
        double dt = now_s() - t0;
        mem_sample(mw);
        if (i > 0 && dt < best) /* the first is a warm-up */
            best = dt;
    }
    bsq_tokens_free(tok);
    free(pix);
    return batch / best;
}

/* One image through the GPU and the CPU: token bits that differ and the
 * largest pixel difference of the decodes of the same tokens. */
static void check_against_cpu(bsq_model *m, const char *device, bsq_precision prec)
{
    bsq_error err;
    const bsq_config *c = bsq_model_config(m);
    bsq_context *g, *cpu;
    bsq_context_options go = {.device = device, .precision = prec}, co = {.device = "cpu"};
    if (bsq_context_create(m, &go, &g, &err) != BSQ_OK)
        die("context", &err);
    if (bsq_context_create(m, &co, &cpu, &err) != BSQ_OK)
        die("cpu context", &err);
    const int h = c->image_height, w = c->image_width;
    size_t n = (size_t)3 * h * w;
    float *pix = xmalloc(n * sizeof(float)), *a = xmalloc(n * sizeof(float)),
          *b = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        pix[i] = uniform();
    bsq_tokens *tg, *tc;
    if (bsq_encode(g, pix, 1, 1, h, w, &tg, &err) != BSQ_OK ||
        bsq_encode(cpu, pix, 1, 1, h, w, &tc, &err) != BSQ_OK)
        die("encode", &err);
    size_t count = bsq_tokens_layout(tc)->count, flips = 0;
    for (size_t i = 0; i < count; i++)
        flips += (size_t)__builtin_popcountll(bsq_tokens_indices(tg)[i] ^ bsq_tokens_indices(tc)[i]);
    if (bsq_decode(g, tc, a, &err) != BSQ_OK || bsq_decode(cpu, tc, b, &err) != BSQ_OK)
        die("decode", &err);
    double e = 0;
    for (size_t i = 0; i < n; i++)
        e = fmax(e, fabs((double)a[i] - b[i]));
    printf("| %s vs CPU fp32, %dx%d, one image | %zu of %zu bits differ (%.3f%%) | decode max |diff| %.2e |\n",
           prec == BSQ_PRECISION_FP32 ? "GPU fp32" : "GPU bf16", w, h, flips,
           count * (size_t)c->L, 100.0 * flips / (double)(count * (size_t)c->L), e);
    bsq_tokens_free(tg);
    bsq_tokens_free(tc);
    bsq_context_destroy(g);
    bsq_context_destroy(cpu);
    free(pix), free(a), free(b);
}

int main(int argc, char **argv)
{
    const char *device = "cuda:0";
    int quick = 0;
    bsq_precision prec = BSQ_PRECISION_BF16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc)
            device = argv[++i];
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--fp32"))
            prec = BSQ_PRECISION_FP32;
        else {
            fprintf(stderr, "usage: bench_cuda [--device cuda:N] [--quick] [--fp32]\n");
            return 2;
        }
    }
    memwatch mw = {.dev = strncmp(device, "cuda:", 5) == 0 ? atoi(device + 5) : 0};
    bsq_error err;
    size_t total;
    if (bsq_cuda_memory_used(mw.dev, &mw.base, &total, &err) != BSQ_OK)
        die(device, &err);
    double peak_tf = 0;
    if (bsq_cuda_gemm_rate(mw.dev, 8192, 8192, 8192, &peak_tf, &err) != BSQ_OK)
        die("cuBLAS rate", &err);
    const int iters = quick ? 3 : 10, big = quick ? 16 : 64;

    printf("## bsqcodec CUDA backend: BSQ-ViT D768 12+12 layers L18 p8, random weights, %s\n\n",
           prec == BSQ_PRECISION_FP32 ? "fp32" : "bf16");
    printf("cuBLAS bf16 product 8192^3 in this run: %.1f TFLOP/s\n\n", peak_tf);
    printf("| check | tokens | pixels |\n|---|---|---|\n");
    bsq_model *m256 = official(256), *m128 = official(128);
    check_against_cpu(m256, device, BSQ_PRECISION_FP32);
    check_against_cpu(m256, device, BSQ_PRECISION_BF16);

    printf("\n| input | batch | encode /s | decode /s | enc+dec /s | encode TFLOP/s | decode TFLOP/s | of cuBLAS |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    bsq_model *models[2] = {m128, m256};
    for (int mi = 0; mi < 2; mi++) {
        bsq_context *ctx;
        bsq_context_options o = {.device = device, .precision = prec};
        if (bsq_context_create(models[mi], &o, &ctx, &err) != BSQ_OK)
            die("context", &err);
        const bsq_config *c = bsq_model_config(models[mi]);
        const int s = c->image_height;
        const double fe = flops_per_image(c, 0), fd = flops_per_image(c, 1);
        /* batch 4*big: several 64k-token chunks, so the pipeline overlaps them */
        const int batches[3] = {1, big, 4 * big};
        for (int bi = 0; bi < 3; bi++) {
            double e = time_op(ctx, 0, batches[bi], s, s, iters, &mw);
            double d = time_op(ctx, 1, batches[bi], s, s, iters, &mw);
            printf("| %dx%d images | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f%% |\n", s, s,
                   batches[bi], e, d, 1.0 / (1.0 / e + 1.0 / d), e * fe / 1e12, d * fd / 1e12,
                   100.0 * (fe + fd) / (1.0 / e + 1.0 / d) / 1e12 / peak_tf);
        }
        if (s == 256) {
            static const int sizes[2][2] = {{1280, 720}, {1920, 1080}};
            const int fb[2] = {1, quick ? 4 : 8};
            for (int k = 0; k < 2; k++)
                for (int j = 0; j < 2; j++) {
                    int w = sizes[k][0], h = sizes[k][1];
                    double e = time_op(ctx, 0, fb[j], h, w, iters, &mw);
                    double d = time_op(ctx, 1, fb[j], h, w, iters, &mw);
                    printf("| %dp frames (256x256 tiles) | %d | %.1f | %.1f | %.1f | | | |\n", h,
                           fb[j], e, d, 1.0 / (1.0 / e + 1.0 / d));
                }
        }
        bsq_context_destroy(ctx);
    }
    /* what CUDA graphs save where launches dominate: one small image at a time */
    setenv("BSQ_CUDA_GRAPHS", "0", 1);
    {
        bsq_context *ctx;
        bsq_context_options o = {.device = device, .precision = prec};
        if (bsq_context_create(m128, &o, &ctx, &err) != BSQ_OK)
            die("context", &err);
        double e = time_op(ctx, 0, 1, 128, 128, iters, &mw);
        double d = time_op(ctx, 1, 1, 128, 128, iters, &mw);
        printf("| 128x128 images, CUDA graphs off | 1 | %.1f | %.1f | %.1f | | | |\n", e, d,
               1.0 / (1.0 / e + 1.0 / d));
        bsq_context_destroy(ctx);
    }
    unsetenv("BSQ_CUDA_GRAPHS");
    printf("\nPeak device memory in use: %.0f MB (%.0f MB before the first context)\n",
           mw.peak / 1048576.0, mw.base / 1048576.0);
    bsq_model_close(m128);
    bsq_model_close(m256);
    return 0;
}
