/* bench_bsq: encode/decode throughput and peak memory of libbsq, and the
 * rate of its matrix products against OpenBLAS sgemm on the model's shapes.
 *
 *   bench_bsq model PATH [--threads N] [--batch B] [--iters N] [--warmup N]
 *                        [--op encode|decode|both] [--device DEV] [--size WxH]
 *   bench_bsq gemm [--threads N] [--rows R[,R...]] [--min-ms MS] [--no-bias]
 *
 * --size times images of that size (tiled by the library) instead of the
 * model's own, e.g. 640x360 for the frame rates of the default models.
 * Output lines are machine-readable and mirror bench/torch_bsqvit.py:
 *   c encode 256 images_per_s=... best_images_per_s=... peak_rss_mb=... sec_per_batch=...
 *     batch=B threads=N
 *   gemm rows=1024 k=768 n=2304 threads=2 sgemm_gflops=... bsq_gflops=... ratio=...
 * bench/run drives both and prints the tables. */
#include <cblas.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <time.h>

#include "backend.h"
#include "bsq.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Process-wide high-water mark, the same figure torch_bsqvit.py reports. */
static double peak_rss_mb(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1.0;
    return (double)ru.ru_maxrss / 1024.0; /* KiB on Linux */
}

/* xorshift64*: reproducible inputs without touching the C library's rand. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}
static void fill_uniform(float *x, size_t n) /* [-1, 1) */
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((double)(rng_next() >> 11) * 0x1p-52 - 1.0);
}

static void die_bsq(const char *what, const bsq_error *err)
{
    fprintf(stderr, "bench_bsq: %s: %s (%s)\n", what, err->message, bsq_status_string(err->code));
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench_bsq: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static int parse_int(const char *s, const char *opt, int lo, int hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "bench_bsq: %s expects an integer in [%d, %d], got '%s'\n", opt, lo, hi, s);
        exit(2);
    }
    return (int)v;
}

static void usage(void)
{
    fputs("usage: bench_bsq model PATH [--threads N] [--batch B] [--iters N] [--warmup N]\n"
          "                            [--op encode|decode|both] [--device DEV] [--size WxH]\n"
          "       bench_bsq gemm [--threads N] [--rows R[,R...]] [--min-ms MS] [--no-bias]\n",
          stderr);
    exit(2);
}

/* ------------------------------------------------------------------ model */

/* images_per_s over the whole timed run; best_ from the fastest iteration,
 * since shared (virtual) machines have slow bursts. peak_rss_mb is the
 * process high-water mark: with --op both, decode's includes encode's. */
static void print_line(const char *op, int h, int w, int batch, int iters, double dt,
                       double best, int threads)
{
    char size[32];
    if (h == w)
        snprintf(size, sizeof size, "%d", h);
    else
        snprintf(size, sizeof size, "%dx%d", w, h);
    printf("c %s %s images_per_s=%.4f best_images_per_s=%.4f peak_rss_mb=%.1f "
           "sec_per_batch=%.4f batch=%d threads=%d\n",
           op, size, (double)iters * batch / dt, batch / best, peak_rss_mb(), dt / iters, batch,
           threads);
    fflush(stdout);
}

static int run_model(int argc, char **argv)
{
    const char *path = NULL, *device = "cpu", *op = "both";
    int threads = 2, batch = 1, iters = 3, warmup = 1, size_w = 0, size_h = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 < argc && !strcmp(a, "--size")) {
            if (sscanf(argv[++i], "%dx%d", &size_w, &size_h) != 2 || size_w < 1 || size_h < 1 ||
                size_w > 16384 || size_h > 16384) {
                fprintf(stderr, "bench_bsq: --size wants WIDTHxHEIGHT\n");
                exit(2);
            }
        } else if (i + 1 < argc && !strcmp(a, "--threads"))
            threads = parse_int(argv[++i], a, 0, 4096);
        else if (i + 1 < argc && !strcmp(a, "--batch"))
            batch = parse_int(argv[++i], a, 1, 1 << 16);
        else if (i + 1 < argc && !strcmp(a, "--iters"))
            iters = parse_int(argv[++i], a, 1, INT_MAX);
        else if (i + 1 < argc && !strcmp(a, "--warmup"))
            warmup = parse_int(argv[++i], a, 0, INT_MAX);
        else if (i + 1 < argc && !strcmp(a, "--op"))
            op = argv[++i];
        else if (i + 1 < argc && !strcmp(a, "--device"))
            device = argv[++i];
        else if (a[0] != '-' && !path)
            path = a;
        else
            usage();
    }
    int do_enc = !strcmp(op, "encode") || !strcmp(op, "both");
    int do_dec = !strcmp(op, "decode") || !strcmp(op, "both");
    if (!path || (!do_enc && !do_dec))
        usage();

    bsq_error err = {0};
    bsq_model *model = NULL;
    if (bsq_model_open(path, NULL, &model, &err) != BSQ_OK)
        die_bsq(path, &err);
    const bsq_config *c = bsq_model_config(model);
    bsq_context_options opt = {.threads = threads, .device = device};
    bsq_context *ctx = NULL;
    if (bsq_context_create(model, &opt, &ctx, &err) != BSQ_OK)
        die_bsq("context", &err);
    fprintf(stderr,
            "bsqcodec %s on %s, %d threads: model %dx%d p%d D%d layers %d+%d heads %d mlp %d "
            "ffn %d L%d, peak_rss_mb after open %.1f\n",
            bsq_version(), bsq_context_device(ctx), threads, c->image_height, c->image_width,
            c->patch_size, c->width, c->layers, c->layers, c->heads, c->mlp_dim,
            c->decoder_ffn_dim, c->L, peak_rss_mb());

    /* --size: images of that size, tiled by the library */
    const int h = size_h ? size_h : c->image_height, w = size_w ? size_w : c->image_width;
    const size_t npix = (size_t)batch * 3 * (size_t)h * (size_t)w;
    float *pix = xmalloc(npix * sizeof *pix);
    bsq_tokens *tok = NULL;

    if (do_enc) {
        fill_uniform(pix, npix);
        /* Warm-up runs let the context size its scratch memory and fault
         * in the weights before the clock starts. */
        double total = 0, best = 1e300;
        for (int i = 0; i < warmup + iters; i++) {
            bsq_tokens_free(tok);
            tok = NULL;
            double t0 = now_s();
            if (bsq_encode(ctx, pix, batch, 1, h, w, &tok, &err) != BSQ_OK)
                die_bsq("encode", &err);
            double dt = now_s() - t0;
            if (i >= warmup) {
                total += dt;
                best = dt < best ? dt : best;
            }
        }
        print_line("encode", h, w, batch, iters, total, best, threads);
    }

    if (do_dec) {
        if (!tok && size_w) { /* the tiled layout: from an untimed encode */
            fill_uniform(pix, npix);
            if (bsq_encode(ctx, pix, batch, 1, h, w, &tok, &err) != BSQ_OK)
                die_bsq("encode", &err);
        }
        if (!tok) {
            /* decode alone: random indices, so the peak is decode's own */
            bsq_token_layout lay = {
                .L = c->L, .batch = batch, .frames = 1, .tiles_y = 1, .tiles_x = 1,
                .grid_h = h / c->patch_size, .grid_w = w / c->patch_size,
                .height = h, .width = w,
            };
            if (bsq_tokens_create(&lay, &tok, &err) != BSQ_OK)
                die_bsq("tokens", &err);
            uint64_t mask = c->L >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << c->L) - 1;
            uint64_t *idx = bsq_tokens_indices_mut(tok);
            for (size_t i = 0; i < bsq_tokens_layout(tok)->count; i++)
                idx[i] = rng_next() & mask;
        }
        double total = 0, best = 1e300;
        for (int i = 0; i < warmup + iters; i++) {
            double t0 = now_s();
            if (bsq_decode(ctx, tok, pix, &err) != BSQ_OK)
                die_bsq("decode", &err);
            double dt = now_s() - t0;
            if (i >= warmup) {
                total += dt;
                best = dt < best ? dt : best;
            }
        }
        print_line("decode", h, w, batch, iters, total, best, threads);
    }

    bsq_tokens_free(tok);
    free(pix);
    bsq_context_destroy(ctx);
    bsq_model_close(model);
    return 0;
}

/* ------------------------------------------------------------------ gemm */

/* The products of one transformer block, y = x W^T: (K, N) of the packed
 * qkv projection, the attention output, MLP up and MLP down. */
static const int gemm_kn[][2] = {{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}};
#define N_KN ((int)(sizeof gemm_kn / sizeof gemm_kn[0]))

typedef struct gemm_case {
    size_t rows;
    int k, n;
    const float *x, *w;        /* host buffers for sgemm (no bias: pure product) */
    float *y;
    bsq_backend *be;           /* backend buffers for linear */
    float *bx, *bw, *bb, *by;
} gemm_case;

static void run_sgemm(gemm_case *g)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)g->rows, g->n, g->k, 1.0f, g->x,
                g->k, g->w, g->k, 0.0f, g->y, g->n);
}

static void run_linear(gemm_case *g)
{
    g->be->ops->linear(g->be, g->bx, g->bw, g->bb, g->by, g->rows, g->k, g->n);
}

static void sync_backend(bsq_backend *be)
{
    bsq_error err = {0};
    if (be && be->ops->sync(be, &err) != BSQ_OK)
        die_bsq("sync", &err);
}

/* GFLOP/s of fn: best of three windows of min_time/3 each, since this
 * kind of (virtual) machine shows bursts of interference. `be` (or NULL)
 * is synced so queued work is counted. */
static double rate(void (*fn)(gemm_case *), gemm_case *g, double min_time, bsq_backend *be)
{
    const double flops = 2.0 * (double)g->rows * g->k * g->n;
    fn(g); /* warm-up: thread start, page faults, packing buffers */
    sync_backend(be);
    double best = 0;
    for (int round = 0; round < 3; round++) {
        int reps = 0;
        double t0 = now_s(), dt;
        do {
            fn(g);
            reps++;
            sync_backend(be);
            dt = now_s() - t0;
        } while (dt < min_time / 3 || reps < 2);
        double r = flops * reps / dt * 1e-9;
        if (r > best)
            best = r;
    }
    return best;
}

/* OpenBLAS's own thread count; the library keeps it at 1 and splits the
 * work over its pool, so the reference sets it explicitly per measurement. */
static void blas_threads(int n)
{
#ifdef OPENBLAS_VERSION
    openblas_set_num_threads(n);
#else
    (void)n;
#endif
}

static int run_gemm(int argc, char **argv)
{
    int threads = 2, bias = 1;
    double min_time = 0.6;
    size_t rows[16] = {256, 1024};
    int nrows = 2;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 < argc && !strcmp(a, "--threads"))
            threads = parse_int(argv[++i], a, 1, 4096);
        else if (i + 1 < argc && !strcmp(a, "--min-ms"))
            min_time = parse_int(argv[++i], a, 1, 1000000) / 1000.0;
        else if (!strcmp(a, "--no-bias"))
            bias = 0;
        else if (i + 1 < argc && !strcmp(a, "--rows")) {
            char *s = argv[++i];
            nrows = 0;
            for (char *tokp = strtok(s, ","); tokp; tokp = strtok(NULL, ",")) {
                if (nrows == 16)
                    usage();
                rows[nrows++] = (size_t)parse_int(tokp, a, 1, 1 << 20);
            }
            if (!nrows)
                usage();
        } else
            usage();
    }
#ifdef OPENBLAS_VERSION
    fprintf(stderr, "%s, core %s\n", OPENBLAS_VERSION, openblas_get_corename());
    printf("openblas core=%s\n", openblas_get_corename());
#else
    fputs("bench_bsq: not OpenBLAS, the sgemm reference runs at the BLAS's default threads\n",
          stderr);
#endif

    size_t maxr = 0;
    for (int i = 0; i < nrows; i++)
        if (rows[i] > maxr)
            maxr = rows[i];
    const size_t maxkn = 3072 * 768, xn = maxr * 3072, yn = maxr * 3072;
    float *x = xmalloc(xn * sizeof *x), *w = xmalloc(maxkn * sizeof *w);
    float *b = xmalloc(3072 * sizeof *b), *y = xmalloc(yn * sizeof *y);
    fill_uniform(x, xn);
    fill_uniform(w, maxkn);
    fill_uniform(b, 3072);

    int counts[2] = {1, threads};
    for (int ti = 0; ti < (threads > 1 ? 2 : 1); ti++) {
        const int t = counts[ti];
        bsq_error err = {0};
        bsq_backend *be = NULL;
        blas_threads(1);
        if (bsq_backend_cpu_create(t, &be, &err) != BSQ_OK)
            die_bsq("cpu backend", &err);
        gemm_case g = {.x = x, .w = w, .y = y, .be = be};
        g.bx = be->ops->alloc(be, xn);
        g.bw = be->ops->alloc(be, maxkn);
        g.bb = be->ops->alloc(be, 3072);
        g.by = be->ops->alloc(be, yn);
        if (!g.bx || !g.bw || !g.bb || !g.by) {
            fprintf(stderr, "bench_bsq: backend allocation failed\n");
            return 1;
        }
        be->ops->upload(be, g.bx, x, xn);
        be->ops->upload(be, g.bw, w, maxkn);
        /* as a context does with a model: weights declared immutable, so
         * they are packed once (at the first, warm-up, product) */
        be->ops->set_weights(be, g.bw, maxkn);
        be->ops->upload(be, g.bb, b, 3072);
        float *bias_buf = g.bb;
        if (!bias)
            g.bb = NULL; /* --no-bias: the same product sgemm computes */

        for (int ri = 0; ri < nrows; ri++) {
            double flops_all = 0, t_ref = 0, t_bsq = 0; /* one block's worth */
            for (int s = 0; s < N_KN; s++) {
                g.rows = rows[ri];
                g.k = gemm_kn[s][0];
                g.n = gemm_kn[s][1];
                /* Interleaved per shape so both see the same machine state. */
                blas_threads(t);
                double r_ref = rate(run_sgemm, &g, min_time, NULL);
                blas_threads(1);
                /* OpenBLAS's threads spin for a while after a threaded call;
                 * let them go idle so they do not take cores from ours */
                usleep(300000);
                double r_bsq = rate(run_linear, &g, min_time, be);
                double f = 2.0 * (double)g.rows * g.k * g.n;
                flops_all += f;
                t_ref += f / r_ref;
                t_bsq += f / r_bsq;
                printf("gemm rows=%zu k=%d n=%d threads=%d sgemm_gflops=%.1f bsq_gflops=%.1f "
                       "ratio=%.3f\n",
                       g.rows, g.k, g.n, t, r_ref, r_bsq, r_bsq / r_ref);
                fflush(stdout);
            }
            /* time-weighted over the four products, as one block runs them */
            printf("gemm rows=%zu k=block n=block threads=%d sgemm_gflops=%.1f bsq_gflops=%.1f "
                   "ratio=%.3f\n",
                   rows[ri], t, flops_all / t_ref, flops_all / t_bsq, t_ref / t_bsq);
            fflush(stdout);
        }
        be->ops->free(be, g.bx);
        be->ops->free(be, g.bw);
        be->ops->free(be, bias_buf);
        be->ops->free(be, g.by);
        be->ops->destroy(be);
    }
    free(x);
    free(w);
    free(b);
    free(y);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    if (!strcmp(argv[1], "model"))
        return run_model(argc - 2, argv + 2);
    if (!strcmp(argv[1], "gemm"))
        return run_gemm(argc - 2, argv + 2);
    usage();
    return 2;
}
