/* The quality metrics of bsqcodec compare (bsqcodec/metrics.c): known
 * answers (identical frames, constant offsets, flat pictures), the
 * separable SSIM filter against a direct two-dimensional window, MS-SSIM
 * against a direct pyramid, the scale-count rule, and tiny pictures. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

/* A deterministic picture with texture: smooth gradients plus a
 * pseudo-random component (xorshift). */
static uint8_t *make_rgb(int w, int h, uint32_t seed, int lo, int hi)
{
    uint8_t *p = malloc((size_t)w * h * 3);
    ck_assert_ptr_nonnull(p);
    uint32_t s = seed ? seed : 1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                int v = (x * 7 + y * 3 + c * 50) % 160 + (int)(s % 60);
                v = lo + v * (hi - lo) / 220;
                p[((size_t)y * w + x) * 3 + c] = (uint8_t)v;
            }
    return p;
}

static void luma(const uint8_t *rgb, int w, int h, double *y)
{
    for (size_t i = 0; i < (size_t)w * h; i++)
        y[i] = 0.299 * rgb[3 * i] + 0.587 * rgb[3 * i + 1] + 0.114 * rgb[3 * i + 2];
}

/* SSIM with the full 2-D window at each valid position, no separation. */
static double naive_ssim(const double *a, const double *b, int w, int h, double *cs_out)
{
    int kw = w < 11 ? w : 11, kh = h < 11 ? h : 11;
    double g[11][11], s = 0;
    for (int i = 0; i < kh; i++)
        for (int j = 0; j < kw; j++) {
            double dy = i - (kh - 1) / 2.0, dx = j - (kw - 1) / 2.0;
            g[i][j] = exp(-(dx * dx + dy * dy) / (2 * 1.5 * 1.5));
            s += g[i][j];
        }
    const double c1 = 2.55 * 2.55, c2 = 7.65 * 7.65;
    double sum = 0, sumcs = 0;
    int n = 0;
    for (int y = 0; y + kh <= h; y++)
        for (int x = 0; x + kw <= w; x++) {
            double ma = 0, mb = 0, aa = 0, bb = 0, ab = 0;
            for (int i = 0; i < kh; i++)
                for (int j = 0; j < kw; j++) {
                    double wt = g[i][j] / s, va = a[(y + i) * w + x + j], vb = b[(y + i) * w + x + j];
                    ma += wt * va;
                    mb += wt * vb;
                    aa += wt * va * va;
                    bb += wt * vb * vb;
                    ab += wt * va * vb;
                }
            double l = (2 * ma * mb + c1) / (ma * ma + mb * mb + c1);
            double cs = (2 * (ab - ma * mb) + c2) / (aa - ma * ma + bb - mb * mb + c2);
            sum += l * cs;
            sumcs += cs;
            n++;
        }
    *cs_out = sumcs / n;
    return sum / n;
}

START_TEST(test_identical)
{
    const int w = 67, h = 45;
    uint8_t *a = make_rgb(w, h, 7, 0, 255);
    bsq_metrics_ws ws = {0};
    bsq_frame_quality q;
    ck_assert_int_eq(bsq_metrics_frame(&ws, a, (size_t)w * 3, a, (size_t)w * 3, w, h, &q), 0);
    ck_assert(q.mse_rgb == 0 && q.mse_y == 0);
    ck_assert(isinf(bsq_psnr(q.mse_rgb, 255)) && bsq_psnr(q.mse_rgb, 255) > 0);
    ck_assert_msg(q.ssim_y == 1.0, "SSIM of identical frames %.17g", q.ssim_y);
    ck_assert_msg(q.msssim_y == 1.0, "MS-SSIM of identical frames %.17g", q.msssim_y);
    ck_assert(isinf(bsq_msssim_db(q.msssim_y)));
    bsq_metrics_ws_free(&ws);
    free(a);
}
END_TEST

START_TEST(test_constant_offset)
{
    /* +9 on every sample, no clipping: MSE 81 on every channel and on Y */
    const int w = 40, h = 30;
    uint8_t *a = make_rgb(w, h, 3, 10, 200), *b = malloc((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        b[i] = (uint8_t)(a[i] + 9);
    bsq_metrics_ws ws = {0};
    bsq_frame_quality q;
    ck_assert_int_eq(bsq_metrics_frame(&ws, a, (size_t)w * 3, b, (size_t)w * 3, w, h, &q), 0);
    ck_assert(q.mse_rgb == 81 && q.mse_chan[0] == 81 && q.mse_chan[1] == 81 && q.mse_chan[2] == 81);
    ck_assert_double_eq_tol(q.mse_y, 81, 1e-9);
    ck_assert_double_eq_tol(bsq_psnr(q.mse_rgb, 255), 20 * log10(255.0 / 9), 1e-12);
    ck_assert_double_eq_tol(bsq_psnr(q.mse_rgb, 255), 29.0459534, 1e-6);
    /* an offset changes luminance only: SSIM just below 1, cs exactly 1 */
    ck_assert(q.ssim_y < 1 && q.ssim_y > 0.99);
    /* the red channel alone: a third of the MSE over RGB */
    memcpy(b, a, (size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h; i++)
        b[3 * i] = (uint8_t)(a[3 * i] + 9);
    ck_assert_int_eq(bsq_metrics_frame(&ws, a, (size_t)w * 3, b, (size_t)w * 3, w, h, &q), 0);
    ck_assert(q.mse_chan[0] == 81 && q.mse_chan[1] == 0 && q.mse_chan[2] == 0);
    ck_assert(q.mse_rgb == 27);
    ck_assert_double_eq_tol(q.mse_y, 0.299 * 0.299 * 81, 1e-9);
    bsq_metrics_ws_free(&ws);
    free(a);
    free(b);
}
END_TEST

START_TEST(test_flat)
{
    /* flat planes a and b: cs = 1 everywhere, l = (2ab+C1)/(a^2+b^2+C1);
     * MS-SSIM = l^0.1333 (5 scales at 200x180, cs^w = 1 below) */
    const int w = 200, h = 180;
    double *pa = malloc(sizeof(double) * w * h), *pb = malloc(sizeof(double) * w * h);
    for (int i = 0; i < w * h; i++) {
        pa[i] = 100;
        pb[i] = 140;
    }
    const double c1 = 2.55 * 2.55, l = (2 * 100.0 * 140 + c1) / (100.0 * 100 + 140.0 * 140 + c1);
    bsq_metrics_ws ws = {0};
    double cs;
    ck_assert_double_eq_tol(bsq_ssim_plane(&ws, pa, pb, w, h, (size_t)w, 255, &cs), l, 1e-9);
    ck_assert_double_eq_tol(cs, 1, 1e-9);
    int m;
    ck_assert_double_eq_tol(bsq_msssim_plane(&ws, pa, pb, w, h, 255, &m), pow(l, 0.1333), 1e-9);
    ck_assert_int_eq(m, 5);
    bsq_metrics_ws_free(&ws);
    free(pa);
    free(pb);
}
END_TEST

START_TEST(test_separable_equals_direct)
{
    static const int sizes[][2] = {{37, 23}, {11, 11}, {12, 40}, {8, 5}, {1, 30}, {1, 1}};
    bsq_metrics_ws ws = {0};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int w = sizes[k][0], h = sizes[k][1];
        uint8_t *a = make_rgb(w, h, 11 + (uint32_t)k, 0, 255), *b = make_rgb(w, h, 99, 0, 255);
        /* b: a with part of another picture's texture, so SSIM is mid-range */
        for (size_t i = 0; i < (size_t)w * h * 3; i++)
            b[i] = (uint8_t)((a[i] * 3 + b[i]) / 4);
        double *ya = malloc(sizeof(double) * w * h), *yb = malloc(sizeof(double) * w * h);
        luma(a, w, h, ya);
        luma(b, w, h, yb);
        double cs, cs_ref, s = bsq_ssim_plane(&ws, ya, yb, w, h, (size_t)w, 255, &cs);
        double ref = naive_ssim(ya, yb, w, h, &cs_ref);
        ck_assert_msg(fabs(s - ref) < 1e-12 && fabs(cs - cs_ref) < 1e-12,
                      "%dx%d: SSIM %.15f cs %.15f, direct %.15f %.15f", w, h, s, cs, ref, cs_ref);
        ck_assert(s > 0.05 && s < 0.999);
        /* symmetric */
        ck_assert_double_eq_tol(bsq_ssim_plane(&ws, yb, ya, w, h, (size_t)w, 255, NULL), s, 1e-12);
        /* the frame function agrees with the plane function */
        bsq_frame_quality q;
        ck_assert_int_eq(bsq_metrics_frame(&ws, a, (size_t)w * 3, b, (size_t)w * 3, w, h, &q), 0);
        ck_assert_double_eq_tol(q.ssim_y, s, 1e-12);
        free(ya);
        free(yb);
        free(a);
        free(b);
    }
    bsq_metrics_ws_free(&ws);
}
END_TEST

START_TEST(test_stride)
{
    /* rows with padding between them give the same numbers */
    const int w = 30, h = 20;
    const size_t stride = (size_t)w * 3 + 17;
    uint8_t *a = make_rgb(w, h, 5, 0, 255), *b = make_rgb(w, h, 6, 0, 255);
    uint8_t *pa = calloc(stride * h, 1), *pb = calloc(stride * h, 1);
    for (int y = 0; y < h; y++) {
        memcpy(pa + y * stride, a + (size_t)y * w * 3, (size_t)w * 3);
        memcpy(pb + y * stride, b + (size_t)y * w * 3, (size_t)w * 3);
    }
    bsq_metrics_ws ws = {0};
    bsq_frame_quality q1, q2;
    ck_assert_int_eq(bsq_metrics_frame(&ws, a, (size_t)w * 3, b, (size_t)w * 3, w, h, &q1), 0);
    ck_assert_int_eq(bsq_metrics_frame(&ws, pa, stride, pb, stride, w, h, &q2), 0);
    ck_assert(q1.mse_rgb == q2.mse_rgb && q1.ssim_y == q2.ssim_y && q1.msssim_y == q2.msssim_y);
    bsq_metrics_ws_free(&ws);
    free(a);
    free(b);
    free(pa);
    free(pb);
}
END_TEST

START_TEST(test_scales_rule)
{
    ck_assert_int_eq(bsq_msssim_scales(768, 512), 5);
    ck_assert_int_eq(bsq_msssim_scales(176, 176), 5);
    ck_assert_int_eq(bsq_msssim_scales(175, 175), 5); /* 175 88 44 22 11 */
    ck_assert_int_eq(bsq_msssim_scales(161, 500), 5); /* 161 81 41 21 11 */
    ck_assert_int_eq(bsq_msssim_scales(160, 500), 4); /* 160 80 40 20 | 10 */
    ck_assert_int_eq(bsq_msssim_scales(21, 21), 2);
    ck_assert_int_eq(bsq_msssim_scales(20, 100), 1);
    ck_assert_int_eq(bsq_msssim_scales(1, 1), 1);
}
END_TEST

/* 2x2 means with the last odd row/column doubled, done directly */
static double *naive_down(const double *p, int w, int h)
{
    int dw = (w + 1) / 2, dh = (h + 1) / 2;
    double *o = malloc(sizeof(double) * dw * dh);
    for (int y = 0; y < dh; y++)
        for (int x = 0; x < dw; x++) {
            double s = 0;
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++) {
                    int yy = 2 * y + i < h ? 2 * y + i : h - 1;
                    int xx = 2 * x + j < w ? 2 * x + j : w - 1;
                    s += p[yy * w + xx];
                }
            o[y * dw + x] = s / 4;
        }
    return o;
}

static double naive_msssim(const double *a0, const double *b0, int w, int h)
{
    static const double wt[5] = {0.0448, 0.2856, 0.3001, 0.2363, 0.1333};
    int m = bsq_msssim_scales(w, h);
    double tot = 0, part = 0;
    for (int j = 0; j < 5; j++) {
        tot += wt[j];
        if (j < m)
            part += wt[j];
    }
    double k = m == 5 ? 1 : tot / part, r = 1;
    double *a = malloc(sizeof(double) * w * h), *b = malloc(sizeof(double) * w * h);
    memcpy(a, a0, sizeof(double) * w * h);
    memcpy(b, b0, sizeof(double) * w * h);
    for (int j = 0; j < m; j++) {
        double cs, s = naive_ssim(a, b, w, h, &cs), t = j == m - 1 ? s : cs;
        r *= pow(t > 0 ? t : 0, wt[j] * k);
        double *na = naive_down(a, w, h), *nb = naive_down(b, w, h);
        free(a);
        free(b);
        a = na;
        b = nb;
        w = (w + 1) / 2;
        h = (h + 1) / 2;
    }
    free(a);
    free(b);
    return r;
}

START_TEST(test_msssim_direct)
{
    static const int sizes[][2] = {{181, 177}, {100, 60}, {33, 25}, {9, 7}};
    bsq_metrics_ws ws = {0};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int w = sizes[k][0], h = sizes[k][1];
        uint8_t *a = make_rgb(w, h, 21 + (uint32_t)k, 0, 255), *b = make_rgb(w, h, 77, 0, 255);
        for (size_t i = 0; i < (size_t)w * h * 3; i++)
            b[i] = (uint8_t)((a[i] * 5 + b[i] * 3) / 8);
        double *ya = malloc(sizeof(double) * w * h), *yb = malloc(sizeof(double) * w * h);
        luma(a, w, h, ya);
        luma(b, w, h, yb);
        int m;
        double v = bsq_msssim_plane(&ws, ya, yb, w, h, 255, &m), ref = naive_msssim(ya, yb, w, h);
        ck_assert_int_eq(m, bsq_msssim_scales(w, h));
        ck_assert_msg(fabs(v - ref) < 1e-12, "%dx%d: MS-SSIM %.15f, direct %.15f", w, h, v, ref);
        ck_assert(v > 0.1 && v < 0.9999);
        bsq_frame_quality q;
        ck_assert_int_eq(bsq_metrics_frame(&ws, a, (size_t)w * 3, b, (size_t)w * 3, w, h, &q), 0);
        ck_assert_double_eq_tol(q.msssim_y, v, 1e-12);
        ck_assert_int_eq(q.msssim_scales, m);
        free(ya);
        free(yb);
        free(a);
        free(b);
    }
    bsq_metrics_ws_free(&ws);
}
END_TEST

START_TEST(test_monotone_in_noise)
{
    /* more noise: lower PSNR, SSIM and MS-SSIM */
    const int w = 96, h = 64;
    uint8_t *a = make_rgb(w, h, 8, 0, 255), *b = malloc((size_t)w * h * 3);
    bsq_metrics_ws ws = {0};
    double last_psnr = INFINITY, last_ssim = 1.0, last_ms = 1.0;
    for (int amp = 2; amp <= 64; amp *= 2) {
        uint32_t s = 12345;
        for (size_t i = 0; i < (size_t)w * h * 3; i++) {
            s = s * 1664525u + 1013904223u;
            int v = a[i] + (int)((s >> 16) % (unsigned)(2 * amp + 1)) - amp;
            b[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
        bsq_frame_quality q;
        ck_assert_int_eq(bsq_metrics_frame(&ws, a, (size_t)w * 3, b, (size_t)w * 3, w, h, &q), 0);
        double p = bsq_psnr(q.mse_rgb, 255);
        ck_assert(p < last_psnr && q.ssim_y < last_ssim && q.msssim_y < last_ms);
        ck_assert(q.msssim_y >= 0 && q.ssim_y > -1);
        last_psnr = p;
        last_ssim = q.ssim_y;
        last_ms = q.msssim_y;
    }
    bsq_metrics_ws_free(&ws);
    free(a);
    free(b);
}
END_TEST

START_TEST(test_db)
{
    ck_assert_double_eq_tol(bsq_msssim_db(0.9), 10.0, 1e-12);
    ck_assert_double_eq_tol(bsq_msssim_db(0.99), 20.0, 1e-9);
    ck_assert_double_eq_tol(bsq_psnr(1.0, 255), 48.1308036, 1e-6);
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *t = tcase_create("metrics");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_identical);
    tcase_add_test(t, test_constant_offset);
    tcase_add_test(t, test_flat);
    tcase_add_test(t, test_separable_equals_direct);
    tcase_add_test(t, test_stride);
    tcase_add_test(t, test_scales_rule);
    tcase_add_test(t, test_msssim_direct);
    tcase_add_test(t, test_monotone_in_noise);
    tcase_add_test(t, test_db);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(metrics_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
