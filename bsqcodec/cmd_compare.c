/* bsqcodec compare: PSNR, SSIM and MS-SSIM between two images or videos */
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bsq.h"
#include "cli.h"
#include "commands.h"
#include "media.h"
#include "metrics.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: bsqcodec compare REF DIST [--frames N] [--json]\n\n"
            "Compares DIST with the reference REF (images or videos, anything FFmpeg\n"
            "reads; '-' reads y4m from stdin), frame by frame in 8-bit RGB, and prints\n"
            "averages over the frames:\n"
            "  PSNR-RGB    from the mean squared error over R, G and B (peak 255), with\n"
            "              each channel's PSNR; the MSE is averaged over frames first\n"
            "              (as FFmpeg's psnr filter does), the mean of per-frame PSNRs\n"
            "              follows for videos\n"
            "  PSNR-Y      the same on luma Y = 0.299 R + 0.587 G + 0.114 B (BT.601\n"
            "              weights, full range, not rounded)\n"
            "  SSIM-Y      SSIM of luma: 11x11 Gaussian window (sigma 1.5), K1 0.01,\n"
            "              K2 0.03, valid positions only; mean of the frames\n"
            "  MS-SSIM-Y   MS-SSIM of luma: 5 scales of 2x2 means, weights 0.0448 0.2856\n"
            "              0.3001 0.2363 0.1333 (fewer scales, weights renormalised,\n"
            "              when the coarsest would be under 11x11); also in dB,\n"
            "              -10 log10(1 - MS-SSIM); mean of the frames\n"
            "Identical inputs give PSNR 'inf' (null in JSON). Both inputs must have the\n"
            "same size and, without --frames, the same number of frames.\n\n"
            "Options:\n"
            "      --frames N   compare the first N frames only (both need at least N)\n"
            "      --json       one JSON object instead of text\n"
            "  -h, --help       show this help\n");
}

typedef struct {
    double mse_rgb, mse_chan[3], mse_y, ssim, msssim;
    double psnr_rgb_frames, psnr_y_frames; /* sums of per-frame PSNR (may be inf) */
    int scales;
    int64_t frames;
} totals;

/* A number for JSON: null when not finite. */
static void json_num(const char *key, double v, const char *fmt, int last)
{
    printf("\"%s\": ", key);
    if (isfinite(v))
        printf(fmt, v);
    else
        printf("null");
    printf(last ? "" : ", ");
}

static void json_str(const char *key, const char *s)
{
    printf("\"%s\": \"", key);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    printf("\", ");
}

/* "inf" or the value with 4 decimals */
static const char *db(double v, char *buf, size_t n)
{
    if (isfinite(v))
        snprintf(buf, n, "%.4f", v);
    else
        snprintf(buf, n, "inf");
    return buf;
}

/* Reads what is left of a stream, to say how many frames it has. */
static int64_t count_rest(bsq_media_in *in, uint8_t *rgb, size_t stride)
{
    int64_t n = 0;
    int got;
    bsq_error err;
    while (bsq_media_in_read(in, rgb, stride, NULL, &got, &err) == BSQ_OK && got)
        n++;
    return n;
}

static void report(const char *ref, const char *dist, int w, int h, const totals *t, int json)
{
    double n = (double)t->frames;
    double mse_rgb = t->mse_rgb / n, mse_y = t->mse_y / n;
    double psnr_rgb = bsq_psnr(mse_rgb, 255), psnr_y = bsq_psnr(mse_y, 255);
    double chan[3];
    for (int c = 0; c < 3; c++)
        chan[c] = bsq_psnr(t->mse_chan[c] / n, 255);
    double ssim = t->ssim / n, msssim = t->msssim / n, msdb = bsq_msssim_db(msssim);
    double frames_rgb = t->psnr_rgb_frames / n, frames_y = t->psnr_y_frames / n;
    if (json) {
        printf("{");
        json_str("ref", ref);
        json_str("dist", dist);
        printf("\"width\": %d, \"height\": %d, \"frames\": %lld, \"identical\": %s, ", w, h,
               (long long)t->frames, t->mse_rgb == 0 ? "true" : "false");
        json_num("psnr_rgb", psnr_rgb, "%.6f", 0);
        json_num("psnr_r", chan[0], "%.6f", 0);
        json_num("psnr_g", chan[1], "%.6f", 0);
        json_num("psnr_b", chan[2], "%.6f", 0);
        json_num("psnr_y", psnr_y, "%.6f", 0);
        json_num("psnr_rgb_frame_mean", frames_rgb, "%.6f", 0);
        json_num("psnr_y_frame_mean", frames_y, "%.6f", 0);
        json_num("mse_rgb", mse_rgb, "%.9g", 0);
        json_num("mse_y", mse_y, "%.9g", 0);
        json_num("ssim_y", ssim, "%.8f", 0);
        json_num("msssim_y", msssim, "%.8f", 0);
        json_num("msssim_y_db", msdb, "%.6f", 0);
        printf("\"msssim_scales\": %d}\n", t->scales);
        return;
    }
    char b0[32], b1[32], b2[32], b3[32], b4[32];
    printf("%s vs %s: %dx%d, %lld frame%s\n", ref, dist, w, h, (long long)t->frames,
           t->frames == 1 ? "" : "s");
    printf("  PSNR-RGB   %s dB  (R %s, G %s, B %s)\n", db(psnr_rgb, b0, sizeof b0),
           db(chan[0], b1, sizeof b1), db(chan[1], b2, sizeof b2), db(chan[2], b3, sizeof b3));
    printf("  PSNR-Y     %s dB  (BT.601 luma, full range)\n", db(psnr_y, b4, sizeof b4));
    if (t->frames > 1)
        printf("  per-frame  mean PSNR-RGB %s dB, PSNR-Y %s dB\n", db(frames_rgb, b0, sizeof b0),
               db(frames_y, b1, sizeof b1));
    printf("  SSIM-Y     %.6f\n", ssim);
    printf("  MS-SSIM-Y  %.6f  (%s dB, %d scale%s)\n", msssim, db(msdb, b0, sizeof b0),
           t->scales, t->scales == 1 ? "" : "s");
}

int cmd_compare(int argc, char **argv)
{
    static const struct option opts[] = {{"frames", required_argument, NULL, 'F'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    long long max_frames = -1;
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        long long v;
        switch (c) {
        case 'j': json = 1; break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'F':
            if (!cli_parse_count(optarg, 1LL << 40, &v) || v < 1) {
                cli_error("compare: bad number of frames '%s'", optarg);
                return EXIT_USAGE;
            }
            max_frames = v;
            break;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc - 2) {
        cli_error("compare: need REF and DIST");
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *path[2] = {argv[optind], argv[optind + 1]};
    const char *name[2] = {"REF", "DIST"};
    if (!strcmp(path[0], "-") && !strcmp(path[1], "-")) {
        cli_error("compare: only one input can be standard input");
        return EXIT_USAGE;
    }
    bsq_media_in *in[2] = {NULL, NULL};
    uint8_t *rgb[2] = {NULL, NULL};
    bsq_metrics_ws ws = {0};
    bsq_error err;
    int rc = EXIT_RUNTIME;
    for (int i = 0; i < 2; i++)
        if (bsq_media_in_open(path[i], NULL, &in[i], &err) != BSQ_OK) {
            cli_error("compare: %s (%s)", err.message, name[i]); /* the message names the file */
            goto done;
        }
    const bsq_media_info *ia = bsq_media_in_info(in[0]), *ib = bsq_media_in_info(in[1]);
    const int w = ia->width, h = ia->height;
    if (ib->width != w || ib->height != h) {
        cli_error("compare: sizes differ: %s (REF) is %dx%d, %s (DIST) is %dx%d", path[0], w, h,
                  path[1], ib->width, ib->height);
        goto done;
    }
    const size_t stride = (size_t)w * 3;
    for (int i = 0; i < 2; i++)
        if (!(rgb[i] = malloc(stride * (size_t)h))) {
            cli_error("compare: out of memory");
            goto done;
        }
    totals t;
    memset(&t, 0, sizeof t);
    for (;;) {
        if (max_frames >= 0 && t.frames == max_frames)
            break;
        int got[2];
        for (int i = 0; i < 2; i++)
            if (bsq_media_in_read(in[i], rgb[i], stride, NULL, &got[i], &err) != BSQ_OK) {
                cli_error("compare: %s (%s, frame %lld)", err.message, name[i],
                          (long long)t.frames);
                goto done;
            }
        if (!got[0] && !got[1]) {
            if (max_frames >= 0) {
                cli_error("compare: --frames %lld: both inputs have only %lld frames",
                          max_frames, (long long)t.frames);
                goto done;
            }
            break;
        }
        if (!got[0] || !got[1]) {
            int s = got[0] ? 1 : 0; /* the shorter one */
            if (max_frames >= 0) {
                cli_error("compare: --frames %lld: %s (%s) has only %lld frames", max_frames,
                          path[s], name[s], (long long)t.frames);
            } else {
                int64_t more = 1 + count_rest(in[1 - s], rgb[1 - s], stride);
                cli_error("compare: frame counts differ: %s (%s) has %lld, %s (%s) has %lld; "
                          "--frames N compares the first N",
                          path[s], name[s], (long long)t.frames, path[1 - s], name[1 - s],
                          (long long)(t.frames + more));
            }
            goto done;
        }
        bsq_frame_quality q;
        if (bsq_metrics_frame(&ws, rgb[0], stride, rgb[1], stride, w, h, &q)) {
            cli_error("compare: out of memory");
            goto done;
        }
        t.mse_rgb += q.mse_rgb;
        for (int k = 0; k < 3; k++)
            t.mse_chan[k] += q.mse_chan[k];
        t.mse_y += q.mse_y;
        t.ssim += q.ssim_y;
        t.msssim += q.msssim_y;
        t.psnr_rgb_frames += bsq_psnr(q.mse_rgb, 255);
        t.psnr_y_frames += bsq_psnr(q.mse_y, 255);
        t.scales = q.msssim_scales;
        t.frames++;
    }
    if (t.frames == 0) { /* cannot happen: opening decodes a first frame */
        cli_error("compare: no frames to compare");
        goto done;
    }
    report(path[0], path[1], w, h, &t, json);
    if (fflush(stdout) || ferror(stdout)) {
        cli_error("compare: cannot write the results");
        goto done;
    }
    rc = EXIT_OK;
done:
    for (int i = 0; i < 2; i++) {
        bsq_media_in_close(in[i]);
        free(rgb[i]);
    }
    bsq_metrics_ws_free(&ws);
    return rc;
}
