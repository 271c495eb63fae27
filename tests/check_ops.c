/* Unit tests of every op of the CPU backend's operations table against
 * plain reference implementations written here (double accumulation where
 * it matters), on random data of sizes that are multiples of nothing
 * convenient (gemm tiles, elementwise spans, attention tiles), through the
 * backend's own alloc/upload/download. Every op runs at 1, 2 and 3 threads:
 * each result is checked against the reference, and the three must be
 * bit-identical. The largest error seen per op is printed. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "testutil.h"

#define NT 3
static const int thread_counts[NT] = {1, 2, 3};

/* ---- helpers ---- */

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

static void open_all(bsq_backend *be[NT])
{
    for (int i = 0; i < NT; i++) {
        bsq_error err;
        ck_assert_msg(bsq_backend_cpu_create(thread_counts[i], &be[i], &err) == BSQ_OK, "%s",
                      err.message);
        ck_assert_ptr_nonnull(be[i]);
        ck_assert_str_eq(be[i]->ops->name, "cpu");
    }
}

static void close_all(bsq_backend *be[NT])
{
    for (int i = 0; i < NT; i++)
        be[i]->ops->destroy(be[i]);
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    ck_assert_ptr_nonnull(p);
    return p;
}

static float *fmalloc(size_t n) { return xmalloc(n * sizeof(float)); }
static double *dmalloc(size_t n) { return xmalloc(n * sizeof(double)); }

static void fill_const(float *x, size_t n, float v)
{
    for (size_t i = 0; i < n; i++)
        x[i] = v;
}

static void dev_sync(bsq_backend *be)
{
    bsq_error err;
    ck_assert_msg(be->ops->sync(be, &err) == BSQ_OK, "%s", err.message);
}

/* Backend buffer holding a copy of n host floats. */
static float *dev_from(bsq_backend *be, const float *src, size_t n)
{
    float *p = be->ops->alloc(be, n ? n : 1);
    ck_assert_ptr_nonnull(p);
    if (n)
        be->ops->upload(be, p, src, n);
    return p;
}

/* Backend buffer of n NaNs: outputs must overwrite every element. */
static float *dev_poison(bsq_backend *be, size_t n)
{
    float *h = fmalloc(n);
    fill_const(h, n, NAN);
    float *p = dev_from(be, h, n);
    dev_sync(be);
    free(h);
    return p;
}

/* Downloads n floats to dst and frees the backend buffer. */
static void dev_take(bsq_backend *be, float *dst, float *src, size_t n)
{
    if (n)
        be->ops->download(be, dst, src, n);
    dev_sync(be);
    be->ops->free(be, src);
}

/* Checks |got - ref| <= abs_tol + rel_tol * |ref| everywhere (NaN fails);
 * returns the largest |got - ref|. */
static double check_close(const char *what, const float *got, const double *ref, size_t n,
                          double abs_tol, double rel_tol)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        double tol = abs_tol + rel_tol * fabs(ref[i]);
        if (!(e <= tol))
            ck_abort_msg("%s: element %zu: got %.9g, want %.9g (error %.3g > tolerance %.3g)",
                         what, i, (double)got[i], ref[i], e, tol);
        if (e > m)
            m = e;
    }
    return m;
}

/* The output at thread_counts[t] must be bit-identical to the one at 1. */
static void check_same(const char *what, const float *got, const float *first, size_t n, int t)
{
    if (memcmp(got, first, n * sizeof(float)) == 0)
        return;
    size_t i = 0;
    while (i < n && memcmp(got + i, first + i, sizeof(float)) == 0)
        i++;
    ck_abort_msg("%s: %d threads gives %.9g at element %zu, 1 thread %.9g", what,
                 thread_counts[t], (double)got[i], i, (double)first[i]);
}

/* Exact equality with a float reference (bitwise, NaN-aware). */
static void check_exact(const char *what, const float *got, const float *ref, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(got + i, ref + i, sizeof(float)) != 0)
            ck_abort_msg("%s: element %zu: got %.9g, want %.9g", what, i, (double)got[i],
                         (double)ref[i]);
}

/* ---- linear ---- */

/* |error| <= LIN_TOL * sqrt(k) for x, w, bias uniform in [-1, 1] */
#define LIN_TOL 3e-6

START_TEST(test_linear)
{
    static const size_t rows_list[] = {1, 7, 257, 300};
    /* k 300 > 256: more than one depth block of a packed kernel */
    static const int k_list[] = {1, 3, 97, 130, 300};
    static const int n_list[] = {1, 5, 129, 259};
    bsq_backend *be[NT];
    open_all(be);
    double max_err = 0, max_scaled = 0;
    uint64_t seed = 100;
    for (size_t ri = 0; ri < sizeof rows_list / sizeof *rows_list; ri++)
        for (size_t ki = 0; ki < sizeof k_list / sizeof *k_list; ki++)
            for (size_t ni = 0; ni < sizeof n_list / sizeof *n_list; ni++) {
                const size_t rows = rows_list[ri];
                const int k = k_list[ki], n = n_list[ni];
                float *x = fmalloc(rows * k), *w = fmalloc((size_t)n * k), *bias = fmalloc(n);
                tu_fill_uniform(x, rows * k, seed++, -1, 1);
                tu_fill_uniform(w, (size_t)n * k, seed++, -1, 1);
                tu_fill_uniform(bias, n, seed++, -1, 1);
                double *ref = dmalloc(rows * n), *refb = dmalloc(rows * n);
                for (size_t r = 0; r < rows; r++)
                    for (int j = 0; j < n; j++) {
                        double s = 0;
                        for (int i = 0; i < k; i++)
                            s += (double)x[r * k + i] * w[(size_t)j * k + i];
                        ref[r * n + j] = s;
                        refb[r * n + j] = s + bias[j];
                    }
                const double tol = LIN_TOL * sqrt((double)k);
                float *out[NT];
                for (int use_bias = 0; use_bias < 2; use_bias++) {
                    char what[96];
                    snprintf(what, sizeof what, "linear rows=%zu k=%d n=%d bias=%d", rows, k, n,
                             use_bias);
                    for (int t = 0; t < NT; t++) {
                        bsq_backend *b = be[t];
                        float *dx = dev_from(b, x, rows * k), *dw = dev_from(b, w, (size_t)n * k);
                        float *db = use_bias ? dev_from(b, bias, n) : NULL;
                        float *dy = dev_poison(b, rows * n);
                        b->ops->linear(b, dx, dw, db, dy, rows, k, n);
                        out[t] = fmalloc(rows * n);
                        dev_take(b, out[t], dy, rows * n);
                        b->ops->free(b, dx);
                        b->ops->free(b, dw);
                        if (db)
                            b->ops->free(b, db);
                        double e = check_close(what, out[t], use_bias ? refb : ref, rows * n, tol,
                                               0);
                        if (e > max_err)
                            max_err = e;
                        if (e / sqrt((double)k) > max_scaled)
                            max_scaled = e / sqrt((double)k);
                        if (t)
                            check_same(what, out[t], out[0], rows * n, t);
                    }
                    for (int t = 0; t < NT; t++)
                        free(out[t]);
                }
                free(x);
                free(w);
                free(bias);
                free(ref);
                free(refb);
            }
    report("linear: max |err| %.3g, max |err|/sqrt(k) %.3g (tolerance %.1g*sqrt(k))\n", max_err,
           max_scaled, LIN_TOL);
    close_all(be);
}
END_TEST

/* ---- layernorm ---- */

/* |error| <= LN_TOL * sqrt(d) * (1 + |mean| / std) * (1 + |y|) per row: the
 * mean and variance are float sums, whose rounding grows with d, and the
 * mean's rounding error, relative to the row's spread, shows in every y */
#define LN_TOL 5e-7

START_TEST(test_layernorm)
{
    static const size_t rows_list[] = {1, 7, 257, 300};
    static const int d_list[] = {1, 3, 97, 130, 768};
    const float eps = 1e-5f;
    bsq_backend *be[NT];
    open_all(be);
    double max_err = 0, max_scaled = 0;
    uint64_t seed = 200;
    for (size_t ri = 0; ri < sizeof rows_list / sizeof *rows_list; ri++)
        for (size_t di = 0; di < sizeof d_list / sizeof *d_list; di++) {
            const size_t rows = rows_list[ri];
            const int d = d_list[di];
            const size_t cnt = rows * d;
            float *x = fmalloc(cnt), *w = fmalloc(d), *b = fmalloc(d);
            tu_fill_uniform(x, cnt, seed++, -2, 2);
            /* rows with a large mean and rows with a tiny spread */
            for (size_t r = 0; r < rows; r++)
                for (int i = 0; i < d; i++) {
                    float *v = &x[r * d + i];
                    if (r % 3 == 1)
                        *v += 5.0f + (float)r * 0.01f;
                    else if (r % 3 == 2)
                        *v *= 0.01f;
                }
            tu_fill_uniform(w, d, seed++, 0.5f, 1.5f);
            tu_fill_uniform(b, d, seed++, -0.5f, 0.5f);
            double *ref = dmalloc(cnt), *rtol = dmalloc(rows);
            for (size_t r = 0; r < rows; r++) {
                const float *xr = x + r * d;
                double mean = 0, var = 0;
                for (int i = 0; i < d; i++)
                    mean += xr[i];
                mean /= d;
                for (int i = 0; i < d; i++)
                    var += (xr[i] - mean) * (xr[i] - mean);
                var /= d;
                double inv = 1.0 / sqrt(var + (double)eps);
                rtol[r] = sqrt((double)d) * (1 + fabs(mean) * inv);
                for (int i = 0; i < d; i++)
                    ref[r * d + i] = (xr[i] - mean) * inv * w[i] + b[i];
            }
            char what[96];
            float *out[NT], *inpl = fmalloc(cnt);
            for (int t = 0; t < NT; t++) {
                bsq_backend *bk = be[t];
                float *dx = dev_from(bk, x, cnt), *dw = dev_from(bk, w, d);
                float *db = dev_from(bk, b, d), *dy = dev_poison(bk, cnt);
                bk->ops->layernorm(bk, dx, dw, db, dy, rows, d, eps);
                out[t] = fmalloc(cnt);
                dev_take(bk, out[t], dy, cnt);
                /* in place: y == x */
                bk->ops->layernorm(bk, dx, dw, db, dx, rows, d, eps);
                dev_take(bk, inpl, dx, cnt);
                bk->ops->free(bk, dw);
                bk->ops->free(bk, db);

                snprintf(what, sizeof what, "layernorm rows=%zu d=%d threads=%d", rows, d,
                         thread_counts[t]);
                for (size_t i = 0; i < cnt; i++) {
                    double e = fabs(out[t][i] - ref[i]), sc = rtol[i / d] * (1 + fabs(ref[i]));
                    if (!(e <= LN_TOL * sc))
                        ck_abort_msg("%s: element %zu: got %.9g, want %.9g (error %.3g > "
                                     "tolerance %.3g)",
                                     what, i, (double)out[t][i], ref[i], e, LN_TOL * sc);
                    max_err = e > max_err ? e : max_err;
                    max_scaled = e / sc > max_scaled ? e / sc : max_scaled;
                }
                snprintf(what, sizeof what, "layernorm in place rows=%zu d=%d threads=%d", rows,
                         d, thread_counts[t]);
                check_exact(what, inpl, out[t], cnt);
                if (t)
                    check_same(what, out[t], out[0], cnt, t);
            }
            for (int t = 0; t < NT; t++)
                free(out[t]);
            free(inpl);
            free(x);
            free(w);
            free(b);
            free(ref);
            free(rtol);
        }
    report("layernorm: max |err| %.3g, max |err|/(sqrt(d)(1+|mean|/std)(1+|y|)) %.3g (tolerance "
           "%.1g); in place bit-identical\n",
           max_err, max_scaled, LN_TOL);
    close_all(be);
}
END_TEST

/* ---- gelu, tanh (in place, elementwise) ---- */

/* Runs gelu (op 0) or tanh (op 1) on a copy of `in` at every thread count,
 * checks the results are bit-identical and returns the one at 1 thread in
 * out. */
static void run_unary(bsq_backend *be[NT], int op, const float *in, float *out, size_t n)
{
    float *res = fmalloc(n);
    for (int t = 0; t < NT; t++) {
        bsq_backend *b = be[t];
        float *dx = dev_from(b, in, n);
        if (op == 0)
            b->ops->gelu(b, dx, n);
        else
            b->ops->tanh(b, dx, n);
        dev_take(b, t ? res : out, dx, n);
        if (t)
            check_same(op == 0 ? "gelu" : "tanh", res, out, n, t);
    }
    free(res);
}

/* Appends +-v for each v of list to x at *n. */
static void push_pm(float *x, size_t *n, const double *list, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        x[(*n)++] = (float)list[i];
        x[(*n)++] = -(float)list[i];
    }
}

/* Fills x with `count` values of random sign and magnitude 10^U(lo, hi). */
static void fill_logmag(float *x, size_t count, uint64_t seed, float lo, float hi)
{
    float *u = fmalloc(2 * count);
    tu_fill_uniform(u, 2 * count, seed, 0, 1);
    for (size_t i = 0; i < count; i++) {
        float m = powf(10.0f, lo + (hi - lo) * u[2 * i]);
        x[i] = u[2 * i + 1] < 0.5f ? -m : m;
    }
    free(u);
}

START_TEST(test_gelu)
{
    static const double special[] = {
        0.0,   1e-42, 1e-38, 1e-20, 1e-7, 1e-3, 0.5,  1.0,  2.0,  3.0,  5.0,  8.0,  9.99,
        10.0,  10.5,  12.0,  20.0,  50.0, 100,  1e3,  1e4,  1e6,  1e10, 1e20, 1e30, 1e38,
        FLT_MAX};
    const size_t nlin = 20001, nrand = 10000, nlog = 5000;
    const size_t cap = nlin + nrand + nlog + 2 * (sizeof special / sizeof *special);
    float *x = fmalloc(cap);
    size_t n = 0;
    for (size_t i = 0; i < nlin; i++) /* -10 .. 10 in steps of 1e-3 */
        x[n++] = (float)(-10.0 + 20.0 * (double)i / (double)(nlin - 1));
    tu_fill_uniform(x + n, nrand, 300, -8, 8);
    n += nrand;
    fill_logmag(x + n, nlog, 301, -8, 38);
    n += nlog;
    push_pm(x, &n, special, sizeof special / sizeof *special);

    bsq_backend *be[NT];
    open_all(be);
    float *y = fmalloc(n);
    run_unary(be, 0, x, y, n);
    double max_err = 0, max_rel = 0;
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        double ref = 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
        double e = fabs((double)y[i] - ref), scale = fabs(v) > 1 ? fabs(v) : 1;
        if (!(e <= 1e-6 * scale))
            ck_abort_msg("gelu(%.9g) = %.9g, want %.9g (error %.3g)", v, (double)y[i], ref, e);
        if (e > max_err)
            max_err = e;
        if (e / scale > max_rel)
            max_rel = e / scale;
    }
    report("gelu: %zu values in [-FLT_MAX, FLT_MAX]: max |err| %.3g, max |err|/max(1,|x|) %.3g "
           "(tolerance 1e-6)\n",
           n, max_err, max_rel);
    free(x);
    free(y);
    close_all(be);
}
END_TEST

#define TANH_REL_TOL 2e-6 /* relative to |tanh(x)|, so tiny inputs count */

START_TEST(test_tanh)
{
    static const double special[] = {
        0.0,   1e-42, 1e-38, 1e-30, 1e-20, 1e-10, 1e-7, 1e-5,  1e-4,   1e-3, 0.01,
        0.05,  0.1,   0.12,  0.1249, 0.125, 0.1251, 0.13, 0.2,  0.5,    1.0,  2.0,
        5.0,   9.0,   10.0,  20.0,  30.0,  44.0,  50.0, 88.0,  100.0, 1e4,  1e10,
        1e30,  FLT_MAX};
    const size_t nlin = 40001, nlog = 6000;
    const size_t cap = nlin + nlog + 2 * (sizeof special / sizeof *special);
    float *x = fmalloc(cap);
    size_t n = 0;
    for (size_t i = 0; i < nlin; i++) /* -20 .. 20 in steps of 1e-3 */
        x[n++] = (float)(-20.0 + 40.0 * (double)i / (double)(nlin - 1));
    fill_logmag(x + n, nlog, 400, -12, 1.5f);
    n += nlog;
    push_pm(x, &n, special, sizeof special / sizeof *special);

    bsq_backend *be[NT];
    open_all(be);
    float *y = fmalloc(n);
    run_unary(be, 1, x, y, n);
    double max_err = 0, max_rel = 0, max_rel_small = 0;
    for (size_t i = 0; i < n; i++) {
        double v = x[i], ref = tanh(v);
        double e = fabs((double)y[i] - ref);
        if (!(e <= TANH_REL_TOL * fabs(ref)))
            ck_abort_msg("tanh(%.9g) = %.9g, want %.9g (relative error %.3g)", v, (double)y[i],
                         ref, ref != 0 ? e / fabs(ref) : e);
        if (v == 0 && signbit(y[i]) != signbit(x[i]))
            ck_abort_msg("tanh(%g) = %g: sign of zero lost", v, (double)y[i]);
        double rel = ref != 0 ? e / fabs(ref) : 0;
        if (e > max_err)
            max_err = e;
        if (rel > max_rel)
            max_rel = rel;
        if (fabs(v) < 0.125 && rel > max_rel_small)
            max_rel_small = rel;
    }
    report("tanh: %zu values: max |err| %.3g, max relative err %.3g (%.3g for |x| < 0.125; "
           "tolerance %.1g relative)\n",
           n, max_err, max_rel, max_rel_small, TANH_REL_TOL);
    free(x);
    free(y);
    close_all(be);
}
END_TEST

/* ---- add ---- */

START_TEST(test_add)
{
    static const size_t n_list[] = {1, 7, 16385, 40000};
    bsq_backend *be[NT];
    open_all(be);
    for (size_t ni = 0; ni < sizeof n_list / sizeof *n_list; ni++) {
        const size_t n = n_list[ni];
        float *y = fmalloc(n), *x = fmalloc(n), *ref = fmalloc(n), *out = fmalloc(n);
        tu_fill_uniform(y, n, 500 + ni, -1, 1);
        tu_fill_uniform(x, n, 600 + ni, -100, 100);
        for (size_t i = 0; i < n; i++)
            ref[i] = y[i] + x[i]; /* one correctly rounded float add */
        char what[64];
        for (int t = 0; t < NT; t++) {
            bsq_backend *b = be[t];
            float *dy = dev_from(b, y, n), *dx = dev_from(b, x, n);
            b->ops->add(b, dy, dx, n);
            dev_take(b, out, dy, n);
            b->ops->free(b, dx);
            snprintf(what, sizeof what, "add n=%zu threads=%d", n, thread_counts[t]);
            check_exact(what, out, ref, n); /* also bit-identical across threads */
        }
        free(y);
        free(x);
        free(ref);
        free(out);
    }
    report("add: n = 1, 7, 16385, 40000: max |err| 0 (exact float sums)\n");
    close_all(be);
}
END_TEST

/* ---- add_pos ---- */

START_TEST(test_add_pos)
{
    static const struct {
        int seqs, frames, tokens, d, t0, with_tpos;
    } cases[] = {
        {1, 1, 1, 1, 0, 0},  {1, 1, 1, 1, 0, 1},  {2, 3, 7, 5, 0, 1},   {2, 3, 7, 5, 2, 1},
        {3, 2, 65, 24, 0, 0}, {2, 4, 16, 64, 3, 1}, {1, 5, 13, 97, 4, 1},
    };
    bsq_backend *be[NT];
    open_all(be);
    double max_err = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const int S = cases[ci].seqs, T = cases[ci].frames, P = cases[ci].tokens;
        const int d = cases[ci].d, t0 = cases[ci].t0;
        const size_t cnt = (size_t)S * T * P * d, npos = (size_t)P * d;
        const size_t ntpos = (size_t)(t0 + T) * d; /* exactly the rows used */
        float *x = fmalloc(cnt), *pos = fmalloc(npos), *tpos = fmalloc(ntpos);
        tu_fill_uniform(x, cnt, 700 + ci, -1, 1);
        tu_fill_uniform(pos, npos, 710 + ci, -1, 1);
        tu_fill_uniform(tpos, ntpos, 720 + ci, -1, 1);
        double *ref = dmalloc(cnt);
        for (int s = 0; s < S; s++)
            for (int t = 0; t < T; t++)
                for (int j = 0; j < P; j++)
                    for (int c = 0; c < d; c++) {
                        size_t i = (((size_t)s * T + t) * P + j) * d + c;
                        ref[i] = (double)x[i] + pos[(size_t)j * d + c];
                        if (cases[ci].with_tpos)
                            ref[i] += tpos[(size_t)(t0 + t) * d + c];
                    }
        float *out[NT];
        char what[96];
        snprintf(what, sizeof what, "add_pos seqs=%d frames=%d tokens=%d d=%d t0=%d tpos=%d", S,
                 T, P, d, t0, cases[ci].with_tpos);
        for (int t = 0; t < NT; t++) {
            bsq_backend *b = be[t];
            float *dx = dev_from(b, x, cnt), *dp = dev_from(b, pos, npos);
            float *dt = cases[ci].with_tpos ? dev_from(b, tpos, ntpos) : NULL;
            b->ops->add_pos(b, dx, dp, dt, S, T, P, d, t0);
            out[t] = fmalloc(cnt);
            dev_take(b, out[t], dx, cnt);
            b->ops->free(b, dp);
            if (dt)
                b->ops->free(b, dt);
            double e = check_close(what, out[t], ref, cnt, 5e-7, 0);
            if (e > max_err)
                max_err = e;
            if (t)
                check_same(what, out[t], out[0], cnt, t);
        }
        for (int t = 0; t < NT; t++)
            free(out[t]);
        free(x);
        free(pos);
        free(tpos);
        free(ref);
    }
    report("add_pos: max |err| %.3g (tolerance 5e-7, |values| <= 3)\n", max_err);
    close_all(be);
}
END_TEST

/* ---- patchify / unpatchify ---- */

typedef struct {
    int seqs, frames, gh, gw, p;
} patch_case;

static const patch_case patch_cases[] = {
    {1, 1, 1, 1, 1}, {2, 3, 2, 3, 8}, {1, 2, 3, 2, 3}, {2, 1, 4, 5, 7}, {1, 1, 3, 3, 16},
};

/* Index of pixel (s, c, t, y, x) in [seqs][3][frames][H][W] and of the same
 * value in the tokens [seqs][frames][gh][gw][3*p*p]: value index
 * c*p*p + row*p + col inside a patch, tokens frame-major, then grid row,
 * then grid column. */
static void patch_index(const patch_case *pc, int s, int c, int t, int y, int x, size_t *pix_i,
                        size_t *tok_i)
{
    const size_t H = (size_t)pc->gh * pc->p, W = (size_t)pc->gw * pc->p;
    *pix_i = (((size_t)s * 3 + c) * pc->frames + t) * H * W + (size_t)y * W + x;
    int gy = y / pc->p, row = y % pc->p, gx = x / pc->p, col = x % pc->p;
    size_t token = (((size_t)s * pc->frames + t) * pc->gh + gy) * pc->gw + gx;
    *tok_i = token * 3 * pc->p * pc->p + ((size_t)c * pc->p + row) * pc->p + col;
}

static float clamp1(float v) { return v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v; }

START_TEST(test_patchify)
{
    bsq_backend *be[NT];
    open_all(be);
    for (size_t ci = 0; ci < sizeof patch_cases / sizeof *patch_cases; ci++) {
        const patch_case *pc = &patch_cases[ci];
        const int H = pc->gh * pc->p, W = pc->gw * pc->p;
        const size_t cnt = (size_t)pc->seqs * 3 * pc->frames * H * W;
        float *pix = fmalloc(cnt), *tok_ref = fmalloc(cnt), *tok = fmalloc(cnt);
        float *back = fmalloc(cnt);
        tu_fill_uniform(pix, cnt, 800 + ci, -1, 1);
        for (int s = 0; s < pc->seqs; s++)
            for (int c = 0; c < 3; c++)
                for (int t = 0; t < pc->frames; t++)
                    for (int y = 0; y < H; y++)
                        for (int x = 0; x < W; x++) {
                            size_t pi, ti;
                            patch_index(pc, s, c, t, y, x, &pi, &ti);
                            tok_ref[ti] = pix[pi];
                        }
        char what[112];
        for (int t = 0; t < NT; t++) {
            bsq_backend *b = be[t];
            snprintf(what, sizeof what, "patchify seqs=%d frames=%d grid=%dx%d p=%d threads=%d",
                     pc->seqs, pc->frames, pc->gh, pc->gw, pc->p, thread_counts[t]);
            float *dp = dev_from(b, pix, cnt), *dt = dev_poison(b, cnt);
            b->ops->patchify(b, dp, dt, pc->seqs, pc->frames, pc->gh, pc->gw, pc->p);
            b->ops->download(b, tok, dt, cnt);
            dev_sync(b);
            check_exact(what, tok, tok_ref, cnt);
            /* round trip, with and without the clamp (pixels are in [-1, 1]) */
            for (int clamp = 0; clamp < 2; clamp++) {
                float *dq = dev_poison(b, cnt);
                b->ops->unpatchify(b, dt, dq, pc->seqs, pc->frames, pc->gh, pc->gw, pc->p, clamp);
                dev_take(b, back, dq, cnt);
                snprintf(what, sizeof what, "patchify round trip p=%d clamp=%d threads=%d",
                         pc->p, clamp, thread_counts[t]);
                check_exact(what, back, pix, cnt);
            }
            b->ops->free(b, dp);
            b->ops->free(b, dt);
        }
        free(pix);
        free(tok_ref);
        free(tok);
        free(back);
    }
    report("patchify: %zu shapes, exact against the index formula and round trip\n",
           sizeof patch_cases / sizeof *patch_cases);
    close_all(be);
}
END_TEST

START_TEST(test_unpatchify)
{
    bsq_backend *be[NT];
    open_all(be);
    for (size_t ci = 0; ci < sizeof patch_cases / sizeof *patch_cases; ci++) {
        const patch_case *pc = &patch_cases[ci];
        const int H = pc->gh * pc->p, W = pc->gw * pc->p;
        const size_t cnt = (size_t)pc->seqs * 3 * pc->frames * H * W;
        float *tok = fmalloc(cnt), *ref = fmalloc(cnt), *out = fmalloc(cnt);
        tu_fill_uniform(tok, cnt, 900 + ci, -1.5f, 1.5f);
        for (size_t i = 0; i < cnt; i += 5) /* the clamp bounds themselves */
            tok[i] = i % 2 ? 1.0f : -1.0f;
        for (int clamp = 0; clamp < 2; clamp++) {
            for (int s = 0; s < pc->seqs; s++)
                for (int c = 0; c < 3; c++)
                    for (int t = 0; t < pc->frames; t++)
                        for (int y = 0; y < H; y++)
                            for (int x = 0; x < W; x++) {
                                size_t pi, ti;
                                patch_index(pc, s, c, t, y, x, &pi, &ti);
                                ref[pi] = clamp ? clamp1(tok[ti]) : tok[ti];
                            }
            char what[112];
            for (int t = 0; t < NT; t++) {
                bsq_backend *b = be[t];
                float *dt = dev_from(b, tok, cnt), *dp = dev_poison(b, cnt);
                b->ops->unpatchify(b, dt, dp, pc->seqs, pc->frames, pc->gh, pc->gw, pc->p, clamp);
                dev_take(b, out, dp, cnt);
                b->ops->free(b, dt);
                snprintf(what, sizeof what,
                         "unpatchify seqs=%d frames=%d grid=%dx%d p=%d clamp=%d threads=%d",
                         pc->seqs, pc->frames, pc->gh, pc->gw, pc->p, clamp, thread_counts[t]);
                check_exact(what, out, ref, cnt);
            }
        }
        free(tok);
        free(ref);
        free(out);
    }
    report("unpatchify: %zu shapes x clamp on/off, exact against the index formula\n",
           sizeof patch_cases / sizeof *patch_cases);
    close_all(be);
}
END_TEST

/* ---- copy2d ---- */

START_TEST(test_copy2d)
{
    static const struct {
        size_t rows, cols, dst_stride, src_stride, src_off;
    } cases[] = {
        {1, 1, 1, 1, 0},       {7, 5, 5, 5, 0},       {7, 5, 16, 9, 0},
        {300, 129, 129, 200, 3}, {257, 64, 64, 192, 64}, /* a k slice of [rows][3D] */
        {300, 24, 97, 72, 48},
    };
    bsq_backend *be[NT];
    open_all(be);
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const size_t rows = cases[ci].rows, cols = cases[ci].cols;
        const size_t ds = cases[ci].dst_stride, ss = cases[ci].src_stride, off = cases[ci].src_off;
        const size_t nsrc = off + (rows - 1) * ss + cols, ndst = rows * ds;
        float *src = fmalloc(nsrc), *dst0 = fmalloc(ndst), *ref = fmalloc(ndst);
        float *out = fmalloc(ndst);
        tu_fill_uniform(src, nsrc, 1000 + ci, -1, 1);
        tu_fill_uniform(dst0, ndst, 1100 + ci, 10, 20); /* outside the copy: kept */
        memcpy(ref, dst0, ndst * sizeof(float));
        for (size_t r = 0; r < rows; r++)
            for (size_t c = 0; c < cols; c++)
                ref[r * ds + c] = src[off + r * ss + c];
        char what[112];
        snprintf(what, sizeof what, "copy2d rows=%zu cols=%zu dst_stride=%zu src_stride=%zu",
                 rows, cols, ds, ss);
        for (int t = 0; t < NT; t++) {
            bsq_backend *b = be[t];
            float *dsrc = dev_from(b, src, nsrc), *ddst = dev_from(b, dst0, ndst);
            b->ops->copy2d(b, ddst, ds, dsrc + off, ss, rows, cols);
            dev_take(b, out, ddst, ndst);
            b->ops->free(b, dsrc);
            check_exact(what, out, ref, ndst);
        }
        free(src);
        free(dst0);
        free(ref);
        free(out);
    }
    report("copy2d: %zu stride cases, exact, untouched outside the rows\n",
           sizeof cases / sizeof *cases);
    close_all(be);
}
END_TEST

/* ---- quantize / dequantize ---- */

static const int L_list[] = {1, 18, 36, 63, 64};
static const size_t qrows_list[] = {1, 7, 300};

static uint64_t mask_L(int L) { return L == 64 ? ~(uint64_t)0 : ((uint64_t)1 << L) - 1; }

/* Codes are +-1/sqrt(L) to within one float rounding. */
static void check_codes(const char *what, const float *codes, const uint64_t *idx, size_t rows,
                        int L, double *max_err)
{
    const double c = 1.0 / sqrt((double)L);
    for (size_t r = 0; r < rows; r++)
        for (int d = 0; d < L; d++) {
            double want = (idx[r] >> (L - 1 - d)) & 1 ? c : -c;
            double e = fabs((double)codes[r * L + d] - want);
            if (!(e <= c * FLT_EPSILON))
                ck_abort_msg("%s: row %zu dim %d: code %.9g, want %.9g", what, r, d,
                             (double)codes[r * L + d], want);
            if (e > *max_err)
                *max_err = e;
        }
}

START_TEST(test_quantize)
{
    bsq_backend *be[NT];
    open_all(be);
    double max_z = 0, max_code = 0;
    uint64_t seed = 1200;
    for (size_t li = 0; li < sizeof L_list / sizeof *L_list; li++)
        for (size_t ri = 0; ri < sizeof qrows_list / sizeof *qrows_list; ri++) {
            const int L = L_list[li];
            const size_t rows = qrows_list[ri], cnt = rows * L;
            float *v = fmalloc(cnt);
            tu_fill_uniform(v, cnt, seed++, -1, 1);
            /* special rows when there are enough: zero, some exact zeros, a norm
             * below 1e-12 (the clamp), one sign throughout, large values */
            for (size_t r = 1; r < rows && r < 7; r++)
                for (int d = 0; d < L; d++) {
                    float *e = &v[r * L + d];
                    if (r == 1 || (r == 2 && d % 3 == 0))
                        *e = 0.0f;
                    else if (r == 3)
                        *e *= 1e-14f;
                    else if (r == 4)
                        *e = fabsf(*e) + 1e-3f;
                    else if (r == 5)
                        *e = -fabsf(*e);
                    else if (r == 6)
                        *e *= 1e3f;
                }
            double *zref = dmalloc(cnt);
            uint64_t *idx_ref = xmalloc(rows * sizeof(uint64_t));
            for (size_t r = 0; r < rows; r++) {
                double ss = 0;
                for (int d = 0; d < L; d++)
                    ss += (double)v[r * L + d] * v[r * L + d];
                double den = sqrt(ss) > 1e-12 ? sqrt(ss) : 1e-12;
                uint64_t index = 0;
                for (int d = 0; d < L; d++) {
                    zref[r * L + d] = v[r * L + d] / den;
                    if (zref[r * L + d] > 0)
                        index |= (uint64_t)1 << (L - 1 - d);
                }
                idx_ref[r] = index;
            }
            float *codes[NT], *z = fmalloc(cnt), *codes_noz = fmalloc(cnt);
            uint64_t *idx = xmalloc(rows * sizeof(uint64_t));
            uint64_t *idx_noz = xmalloc(rows * sizeof(uint64_t));
            char what[96];
            for (int t = 0; t < NT; t++) {
                bsq_backend *b = be[t];
                snprintf(what, sizeof what, "quantize L=%d rows=%zu threads=%d", L, rows,
                         thread_counts[t]);
                float *dv = dev_from(b, v, cnt), *dz = dev_poison(b, cnt);
                memset(idx, 0xa5, rows * sizeof(uint64_t));
                b->ops->quantize(b, dv, dz, idx, rows, L);
                codes[t] = fmalloc(cnt);
                dev_take(b, codes[t], dv, cnt);
                dev_take(b, z, dz, cnt);
                for (size_t r = 0; r < rows; r++)
                    if (idx[r] != idx_ref[r])
                        ck_abort_msg("%s: row %zu: index %#llx, want %#llx", what, r,
                                     (unsigned long long)idx[r], (unsigned long long)idx_ref[r]);
                double e = check_close(what, z, zref, cnt, 1e-6, 0);
                if (e > max_z)
                    max_z = e;
                check_codes(what, codes[t], idx_ref, rows, L, &max_code);
                if (t)
                    check_same(what, codes[t], codes[0], cnt, t);
                /* without z: the same codes and indices */
                dv = dev_from(b, v, cnt);
                memset(idx_noz, 0x5a, rows * sizeof(uint64_t));
                b->ops->quantize(b, dv, NULL, idx_noz, rows, L);
                dev_take(b, codes_noz, dv, cnt);
                snprintf(what, sizeof what, "quantize without z L=%d rows=%zu threads=%d", L,
                         rows, thread_counts[t]);
                check_exact(what, codes_noz, codes[t], cnt);
                ck_assert_msg(memcmp(idx_noz, idx, rows * sizeof(uint64_t)) == 0, "%s", what);
            }
            for (int t = 0; t < NT; t++)
                free(codes[t]);
            free(v);
            free(zref);
            free(idx_ref);
            free(z);
            free(codes_noz);
            free(idx);
            free(idx_noz);
        }
    report("quantize: L = 1, 18, 36, 63, 64, rows 1/7/300: indices exact, max |z err| %.3g, "
           "max |code - 1/sqrt(L)| %.3g\n",
           max_z, max_code);
    close_all(be);
}
END_TEST

START_TEST(test_dequantize)
{
    bsq_backend *be[NT];
    open_all(be);
    double max_code = 0;
    uint64_t seed = 1300;
    for (size_t li = 0; li < sizeof L_list / sizeof *L_list; li++)
        for (size_t ri = 0; ri < sizeof qrows_list / sizeof *qrows_list; ri++) {
            const int L = L_list[li];
            const size_t rows = qrows_list[ri], cnt = rows * L;
            uint64_t *idx = xmalloc(rows * sizeof(uint64_t)), *back = xmalloc(rows * sizeof(uint64_t));
            float *u = fmalloc(4 * rows);
            tu_fill_uniform(u, 4 * rows, seed++, 0, 65536);
            for (size_t r = 0; r < rows; r++) {
                uint64_t x = 0;
                for (int q = 0; q < 4; q++)
                    x = x << 16 | ((uint64_t)u[4 * r + q] & 0xffff);
                idx[r] = x & mask_L(L);
            }
            idx[0] = rows > 1 ? 0 : idx[0];
            if (rows > 2)
                idx[1] = mask_L(L), idx[2] = (uint64_t)1 << (L - 1); /* all ones, MSB only */
            float *codes[NT], *requant = fmalloc(cnt);
            char what[96];
            for (int t = 0; t < NT; t++) {
                bsq_backend *b = be[t];
                snprintf(what, sizeof what, "dequantize L=%d rows=%zu threads=%d", L, rows,
                         thread_counts[t]);
                float *dc = dev_poison(b, cnt);
                b->ops->dequantize(b, idx, dc, rows, L);
                codes[t] = fmalloc(cnt);
                b->ops->download(b, codes[t], dc, cnt);
                dev_sync(b);
                check_codes(what, codes[t], idx, rows, L, &max_code);
                if (t)
                    check_same(what, codes[t], codes[0], cnt, t);
                /* quantize is its inverse: same indices, same codes */
                memset(back, 0, rows * sizeof(uint64_t));
                b->ops->quantize(b, dc, NULL, back, rows, L);
                dev_take(b, requant, dc, cnt);
                for (size_t r = 0; r < rows; r++)
                    if (back[r] != idx[r])
                        ck_abort_msg("%s: quantize(dequantize(%#llx)) = %#llx", what,
                                     (unsigned long long)idx[r], (unsigned long long)back[r]);
                check_exact(what, requant, codes[t], cnt);
            }
            for (int t = 0; t < NT; t++)
                free(codes[t]);
            free(idx);
            free(back);
            free(u);
            free(requant);
        }
    report("dequantize: L = 1, 18, 36, 63, 64: max |code - 1/sqrt(L)| %.3g, quantize inverts "
           "it exactly\n",
           max_code);
    close_all(be);
}
END_TEST

/* ---- attention ---- */

typedef struct {
    const char *name;
    int batch, heads, hd;
    int nq, nk, block, q_offset;
    /* layout 0: self-attention, q/k/v interleaved in one [batch*n][3D]
     * buffer as the graph's qkv projection leaves them (nq == nk);
     * layout 1: key/value cache, q from a [batch][q_seq][3D] buffer, k and v
     * in separate [batch][kv_seq][D] buffers with kv_seq > nk */
    int layout, kv_seq;
    int gap;   /* layout 1: extra rows per sequence in q and out (q_seq = nq + gap) */
    int pad;   /* extra floats per output row (out_stride = D + pad) */
    float scale; /* 0: 1/sqrt(head_dim) */
} att_case;

static const att_case att_cases[] = {
    {"full n=1", 2, 3, 64, 1, 1, 0, 0, 0, 0, 0, 0, 0},
    {"full n=65", 2, 3, 64, 65, 65, 0, 0, 0, 0, 0, 0, 0},
    {"full n=300 hd=40", 2, 1, 40, 300, 300, 0, 0, 0, 0, 0, 0, 0},
    {"full n=600 hd=24", 2, 1, 24, 600, 600, 0, 0, 0, 0, 0, 0, 0},
    {"full n=300 peaky (scale 1)", 1, 2, 64, 300, 300, 0, 0, 0, 0, 0, 3, 1.0f},
    {"causal n=65 block=13", 2, 3, 64, 65, 65, 13, 0, 0, 0, 0, 0, 0},
    {"causal n=300 block=60 hd=40", 2, 1, 40, 300, 300, 60, 0, 0, 0, 0, 0, 0},
    {"causal n=600 block=75 hd=24", 1, 2, 24, 600, 600, 75, 0, 0, 0, 0, 0, 0},
    {"causal n=300 block=64 (partial last frame)", 1, 2, 64, 300, 300, 64, 0, 0, 0, 0, 2, 0},
    {"causal n=300 block=1 peaky", 1, 1, 24, 300, 300, 1, 0, 0, 0, 0, 0, 1.0f},
    {"cache nq=50 nk=300 block=50", 2, 2, 64, 50, 300, 50, 250, 1, 400, 2, 5, 0},
    {"cache nq=225 nk=600 block=75 hd=40", 2, 1, 40, 225, 600, 75, 375, 1, 675, 0, 0, 0},
    {"cache nq=1 nk=600 block=1 hd=24", 2, 2, 24, 1, 600, 1, 599, 1, 608, 0, 0, 0},
    {"cache nq=65 nk=300 full hd=24", 2, 3, 24, 65, 300, 0, 235, 1, 320, 3, 1, 0},
    {"cache nq=65 nk=300 block=64 q_offset=100", 2, 2, 64, 65, 300, 64, 100, 1, 301, 1, 0, 0},
    {"cache nq=130 nk=390 block=65 peaky", 2, 1, 40, 130, 390, 65, 260, 1, 455, 0, 0, 1.0f},
};

/* softmax(q k^T * scale) v over the visible keys, in double; out is dense
 * [batch][nq][heads * head_dim]. Returns the largest |score| seen. */
static double attention_ref(const bsq_attention_args *a, double *out)
{
    double smax = 0;
    const int hd = a->head_dim, D = a->heads * hd;
    double *s = dmalloc((size_t)a->nk), *acc = dmalloc((size_t)hd);
    for (int b = 0; b < a->batch; b++)
        for (int h = 0; h < a->heads; h++)
            for (int i = 0; i < a->nq; i++) {
                const float *q = a->q + ((size_t)b * a->q_seq + i) * a->q_stride + (size_t)h * hd;
                int lim = a->nk;
                if (a->block > 0) {
                    int pos = a->q_offset + i, end = (pos / a->block + 1) * a->block;
                    lim = end < a->nk ? end : a->nk;
                }
                double m = -INFINITY;
                for (int j = 0; j < lim; j++) {
                    const float *k =
                        a->k + ((size_t)b * a->kv_seq + j) * a->kv_stride + (size_t)h * hd;
                    double dot = 0;
                    for (int c = 0; c < hd; c++)
                        dot += (double)q[c] * k[c];
                    s[j] = dot * a->scale;
                    m = s[j] > m ? s[j] : m;
                    smax = fabs(s[j]) > smax ? fabs(s[j]) : smax;
                }
                double sum = 0;
                for (int c = 0; c < hd; c++)
                    acc[c] = 0;
                for (int j = 0; j < lim; j++) {
                    const float *v =
                        a->v + ((size_t)b * a->kv_seq + j) * a->kv_stride + (size_t)h * hd;
                    double p = exp(s[j] - m);
                    sum += p;
                    for (int c = 0; c < hd; c++)
                        acc[c] += p * v[c];
                }
                double *o = out + ((size_t)b * a->nq + i) * D + (size_t)h * hd;
                for (int c = 0; c < hd; c++)
                    o[c] = acc[c] / sum;
            }
    free(s);
    free(acc);
    return smax;
}

/* |error| <= ATT_TOL * (1 + max |score|) with v in [-1, 1]: a float score
 * s carries a rounding error of about FLT_EPSILON * |s|, which exp turns into
 * a relative error of the weights */
#define ATT_TOL 5e-7

START_TEST(test_attention)
{
    bsq_backend *be[NT];
    open_all(be);
    double max_err = 0;
    for (size_t ci = 0; ci < sizeof att_cases / sizeof *att_cases; ci++) {
        const att_case *ac = &att_cases[ci];
        const int B = ac->batch, D = ac->heads * ac->hd;
        const size_t q_seq = (size_t)ac->nq + (ac->layout ? ac->gap : 0);
        const size_t kv_seq = ac->layout ? (size_t)ac->kv_seq : (size_t)ac->nk;
        const size_t out_stride = (size_t)D + ac->pad, out_seq = q_seq;
        ck_assert(ac->layout || ac->nq == ac->nk);
        ck_assert(!ac->layout || kv_seq > (size_t)ac->nk);

        /* host inputs: the qkv buffer, and for the cache the k/v buffers
         * whose rows past nk (never visible) hold NaN */
        const size_t nqkv = (size_t)B * q_seq * 3 * D, nkv = ac->layout ? (size_t)B * kv_seq * D : 0;
        const size_t nout = (size_t)B * out_seq * out_stride;
        float *qkv = fmalloc(nqkv), *kc = fmalloc(nkv), *vc = fmalloc(nkv);
        tu_fill_uniform(qkv, nqkv, 1400 + ci, -2, 2);
        for (int b = 0; b < B; b++) /* the gap rows of q are never read */
            fill_const(qkv + ((size_t)b * q_seq + ac->nq) * 3 * D, (q_seq - ac->nq) * 3 * D, NAN);
        if (ac->layout) {
            tu_fill_uniform(kc, nkv, 1500 + ci, -2, 2);
            tu_fill_uniform(vc, nkv, 1600 + ci, -1, 1);
            for (int b = 0; b < B; b++) {
                fill_const(kc + ((size_t)b * kv_seq + ac->nk) * D, (kv_seq - ac->nk) * D, NAN);
                fill_const(vc + ((size_t)b * kv_seq + ac->nk) * D, (kv_seq - ac->nk) * D, NAN);
            }
        }
        bsq_attention_args ha = {
            .q = qkv,
            .k = ac->layout ? kc : qkv + D,
            .v = ac->layout ? vc : qkv + 2 * D,
            .q_stride = 3 * (size_t)D,
            .kv_stride = ac->layout ? (size_t)D : 3 * (size_t)D,
            .out_stride = out_stride,
            .q_seq = q_seq,
            .kv_seq = kv_seq,
            .out_seq = out_seq,
            .batch = B,
            .nq = ac->nq,
            .nk = ac->nk,
            .heads = ac->heads,
            .head_dim = ac->hd,
            .block = ac->block,
            .q_offset = ac->q_offset,
            .scale = ac->scale != 0 ? ac->scale : 1.0f / sqrtf((float)ac->hd),
        };
        const size_t ndense = (size_t)B * ac->nq * D;
        double *ref = dmalloc(ndense);
        const double smax = attention_ref(&ha, ref), tol = ATT_TOL * (1 + smax);

        float *out[NT], *dense = fmalloc(ndense);
        char what[128];
        for (int t = 0; t < NT; t++) {
            bsq_backend *bk = be[t];
            snprintf(what, sizeof what, "attention %s batch=%d heads=%d hd=%d threads=%d",
                     ac->name, B, ac->heads, ac->hd, thread_counts[t]);
            float *dqkv = dev_from(bk, qkv, nqkv);
            float *dk = ac->layout ? dev_from(bk, kc, nkv) : NULL;
            float *dv = ac->layout ? dev_from(bk, vc, nkv) : NULL;
            float *dout = dev_poison(bk, nout);
            bsq_attention_args da = ha;
            da.q = dqkv;
            da.k = ac->layout ? dk : dqkv + D;
            da.v = ac->layout ? dv : dqkv + 2 * D;
            da.out = dout;
            bk->ops->attention(bk, &da);
            out[t] = fmalloc(nout);
            dev_take(bk, out[t], dout, nout);
            bk->ops->free(bk, dqkv);
            if (dk) {
                bk->ops->free(bk, dk);
                bk->ops->free(bk, dv);
            }
            /* the rows and columns outside the output keep their NaN */
            for (int b = 0; b < B; b++)
                for (size_t r = 0; r < out_seq; r++)
                    for (size_t c = 0; c < out_stride; c++) {
                        float x = out[t][((size_t)b * out_seq + r) * out_stride + c];
                        if (r < (size_t)ac->nq && c < (size_t)D)
                            dense[((size_t)b * ac->nq + r) * D + c] = x;
                        else if (!isnan(x))
                            ck_abort_msg("%s: wrote %g outside the output (seq %d row %zu col %zu)",
                                         what, (double)x, b, r, c);
                    }
            double e = check_close(what, dense, ref, ndense, tol, 0);
            if (e > max_err)
                max_err = e;
            if (t)
                check_same(what, out[t], out[0], nout, t);
            if (t == NT - 1)
                report("attention %-42s batch=%d heads=%d hd=%-2d: max |score| %4.1f, max |err| "
                       "%.3g (tolerance %.2g)\n",
                       ac->name, B, ac->heads, ac->hd, smax, e, tol);
        }
        for (int t = 0; t < NT; t++)
            free(out[t]);
        free(dense);
        free(ref);
        free(qkv);
        free(kc);
        free(vc);
    }
    report("attention: max |err| %.3g over %zu cases (tolerance %.1g * (1 + max |score|))\n",
           max_err, sizeof att_cases / sizeof *att_cases, ATT_TOL);
    close_all(be);
}
END_TEST

/* ---- backend creation ---- */

START_TEST(test_create)
{
    bsq_backend *be = NULL;
    bsq_error err;
    ck_assert_int_eq(bsq_backend_cpu_create(0, &be, &err), BSQ_OK); /* all CPUs */
    ck_assert_ptr_nonnull(be);
    ck_assert_int_eq(be->ops->host_memory, 1);
    be->ops->destroy(be);
    be = NULL;
    ck_assert_int_eq(bsq_backend_cpu_create(100000, &be, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(be);
}
END_TEST

static TCase *new_tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 300); /* sanitizer builds at -O0 on slow machines */
    suite_add_tcase(s, tc);
    return tc;
}

int main(void)
{
    Suite *s = suite_create("ops");
    tcase_add_test(new_tcase(s, "create"), test_create);
    tcase_add_test(new_tcase(s, "linear"), test_linear);
    tcase_add_test(new_tcase(s, "layernorm"), test_layernorm);
    tcase_add_test(new_tcase(s, "gelu"), test_gelu);
    tcase_add_test(new_tcase(s, "tanh"), test_tanh);
    tcase_add_test(new_tcase(s, "add"), test_add);
    tcase_add_test(new_tcase(s, "add_pos"), test_add_pos);
    tcase_add_test(new_tcase(s, "patchify"), test_patchify);
    tcase_add_test(new_tcase(s, "unpatchify"), test_unpatchify);
    tcase_add_test(new_tcase(s, "copy2d"), test_copy2d);
    tcase_add_test(new_tcase(s, "quantize"), test_quantize);
    tcase_add_test(new_tcase(s, "dequantize"), test_dequantize);
    tcase_add_test(new_tcase(s, "attention"), test_attention);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);

    /* the products again through every lesser kernel this CPU can run (the
     * AVX2 kernel and OpenBLAS), picked by BSQ_CPU_GEMM at backend creation */
    static const char *const kernels[] = {"avx2", "blas"};
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++) {
        setenv("BSQ_CPU_GEMM", kernels[i], 1);
        printf("products with BSQ_CPU_GEMM=%s\n", kernels[i]);
        Suite *k = suite_create(kernels[i]);
        tcase_add_test(new_tcase(k, "linear"), test_linear);
        tcase_add_test(new_tcase(k, "attention"), test_attention);
        sr = srunner_create(k);
        srunner_run_all(sr, CK_NORMAL);
        failed += srunner_ntests_failed(sr);
        srunner_free(sr);
    }
    unsetenv("BSQ_CPU_GEMM");
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
