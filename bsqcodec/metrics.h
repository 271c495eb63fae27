/* Full-reference picture quality metrics between two 8-bit RGB frames, in
 * double precision: PSNR over RGB and per channel, PSNR of luma, SSIM and
 * MS-SSIM of luma. Used by `bsqcodec compare`; no FFmpeg here.
 *
 * Definitions (bsqcodec(1), under compare, says the same for users):
 *
 *   Luma     Y = 0.299 R + 0.587 G + 0.114 B (BT.601 weights, full range,
 *            0..255), kept as a double, not rounded.
 *   MSE      mean squared difference; over RGB it is the mean over all
 *            three channels of all pixels. PSNR = 10 log10(255^2 / MSE),
 *            +infinity when MSE is 0.
 *   SSIM     Wang, Bovik, Sheikh, Simoncelli 2004: an 11x11 Gaussian window
 *            (sigma 1.5, weights normalised to sum 1), K1 = 0.01,
 *            K2 = 0.03, peak L = 255, population (weighted) variances,
 *            averaged over the positions where the window lies wholly
 *            inside the picture (no padding). A picture narrower or lower
 *            than 11 pixels gets a window cut to its size on that axis
 *            (the same Gaussian, renormalised).
 *   MS-SSIM  Wang, Simoncelli, Bovik 2003: the mean contrast-structure term
 *            cs at scales 1..M-1 and the mean full SSIM (luminance times cs)
 *            at scale M, combined as prod cs_j^w_j * ssim_M^w_M with the
 *            weights 0.0448 0.2856 0.3001 0.2363 0.1333. Each scale is the
 *            previous one averaged over 2x2 blocks (size ceil(n/2); an odd
 *            last row or column is averaged with itself). M is 5, or fewer
 *            when the picture is too small: the largest M <= 5 whose
 *            coarsest scale is still at least 11x11 (at least 1), with the
 *            first M weights scaled to add up to what the five do (1.0001;
 *            with 5 scales the weights are used as published). Negative
 *            terms are clamped to 0 before the powers (as TensorFlow and
 *            pytorch-msssim do), so MS-SSIM is in [0, 1]. */
#ifndef BSQCODEC_METRICS_H
#define BSQCODEC_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define BSQ_SSIM_WINDOW 11
#define BSQ_SSIM_SIGMA 1.5
#define BSQ_MSSSIM_MAX_SCALES 5

typedef struct bsq_frame_quality {
    double mse_rgb;     /* mean over the three channels */
    double mse_chan[3]; /* R, G, B */
    double mse_y;
    double ssim_y;
    double msssim_y;
    int msssim_scales;  /* M actually used */
} bsq_frame_quality;

/* Scratch buffers reused across frames of one size; start zeroed. */
typedef struct bsq_metrics_ws {
    double *buf;
    size_t cap; /* doubles */
} bsq_metrics_ws;

/* Compares two width x height RGB24 frames (rows `ref_stride` and
 * `dist_stride` bytes apart). Returns 0, or -1 when memory runs out. */
int bsq_metrics_frame(bsq_metrics_ws *ws, const uint8_t *ref, size_t ref_stride,
                      const uint8_t *dist, size_t dist_stride, int width, int height,
                      bsq_frame_quality *q);
void bsq_metrics_ws_free(bsq_metrics_ws *ws);

/* 10 log10(peak^2 / mse); +INFINITY for mse <= 0. */
double bsq_psnr(double mse, double peak);

/* SSIM of two width x height planes of doubles (rows `stride` doubles
 * apart) with peak value `peak`; *cs_out (may be NULL) gets the mean
 * contrast-structure term. `ws` provides scratch. Returns NaN when memory
 * runs out. */
double bsq_ssim_plane(bsq_metrics_ws *ws, const double *a, const double *b, int width,
                      int height, size_t stride, double peak, double *cs_out);

/* MS-SSIM of two planes (contiguous rows); *scales_out (may be NULL) gets
 * M. Returns NaN on memory failure. */
double bsq_msssim_plane(bsq_metrics_ws *ws, const double *a, const double *b, int width,
                        int height, double peak, int *scales_out);

/* M for a width x height picture (rule above). */
int bsq_msssim_scales(int width, int height);

/* -10 log10(1 - msssim): +INFINITY at 1. */
double bsq_msssim_db(double msssim);

#endif
