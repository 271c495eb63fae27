/* PSNR, SSIM and MS-SSIM between RGB24 frames; definitions in metrics.h. */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double msssim_weights[BSQ_MSSSIM_MAX_SCALES] = {0.0448, 0.2856, 0.3001, 0.2363,
                                                             0.1333};

double bsq_psnr(double mse, double peak)
{
    return mse > 0 ? 10.0 * log10(peak * peak / mse) : INFINITY;
}

double bsq_msssim_db(double msssim)
{
    return msssim < 1.0 ? -10.0 * log10(1.0 - msssim) : INFINITY;
}

static int ws_reserve(bsq_metrics_ws *ws, size_t n)
{
    if (n <= ws->cap)
        return 0;
    double *p = realloc(ws->buf, n * sizeof *p);
    if (!p)
        return -1;
    ws->buf = p;
    ws->cap = n;
    return 0;
}

void bsq_metrics_ws_free(bsq_metrics_ws *ws)
{
    free(ws->buf);
    ws->buf = NULL;
    ws->cap = 0;
}

/* The normalised Gaussian of n taps (n <= BSQ_SSIM_WINDOW) centred on the
 * window's middle. */
static void gaussian(double *g, int n)
{
    double c = (n - 1) / 2.0, s = 0;
    for (int i = 0; i < n; i++) {
        double d = i - c;
        g[i] = exp(-d * d / (2.0 * BSQ_SSIM_SIGMA * BSQ_SSIM_SIGMA));
        s += g[i];
    }
    for (int i = 0; i < n; i++)
        g[i] /= s;
}

/* Doubles of scratch for ssim_core: the horizontally filtered rows of the
 * five moments that one window height spans (a ring), and one output row. */
static size_t ssim_scratch_size(int w, int h)
{
    int kw = w < BSQ_SSIM_WINDOW ? w : BSQ_SSIM_WINDOW;
    int kh = h < BSQ_SSIM_WINDOW ? h : BSQ_SSIM_WINDOW;
    size_t ow = (size_t)(w - kw + 1);
    return 5 * ow * (size_t)kh + 5 * ow;
}

/* SSIM over the valid positions of a separable Gaussian window; `t` holds
 * ssim_scratch_size(w, h) doubles. Rows are filtered horizontally as the
 * window reaches them, then each output row vertically. */
static double ssim_core(const double *a, const double *b, int w, int h, size_t stride,
                        double peak, double *t, double *cs_out)
{
    const int kw = w < BSQ_SSIM_WINDOW ? w : BSQ_SSIM_WINDOW;
    const int kh = h < BSQ_SSIM_WINDOW ? h : BSQ_SSIM_WINDOW;
    const size_t ow = (size_t)(w - kw + 1), oh = (size_t)(h - kh + 1);
    const size_t plane = ow * (size_t)kh; /* one moment's ring of kh rows */
    const double c1 = (0.01 * peak) * (0.01 * peak), c2 = (0.03 * peak) * (0.03 * peak);
    double gx[BSQ_SSIM_WINDOW], gy[BSQ_SSIM_WINDOW];
    gaussian(gx, kw);
    gaussian(gy, kh);
    double *ma = t, *mb = t + plane, *maa = t + 2 * plane, *mbb = t + 3 * plane,
           *mab = t + 4 * plane;
    double *acc = t + 5 * plane;
    double sum_ssim = 0, sum_cs = 0;
    for (int r = 0; r < h; r++) {
        /* horizontal pass of row r into its ring slot */
        const double *ra = a + (size_t)r * stride, *rb = b + (size_t)r * stride;
        size_t o = (size_t)(r % kh) * ow;
        for (size_t x = 0; x < ow; x++) {
            double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
            for (int k = 0; k < kw; k++) {
                double va = ra[x + (size_t)k], vb = rb[x + (size_t)k], g = gx[k];
                sa += g * va;
                sb += g * vb;
                saa += g * va * va;
                sbb += g * vb * vb;
                sab += g * va * vb;
            }
            ma[o + x] = sa;
            mb[o + x] = sb;
            maa[o + x] = saa;
            mbb[o + x] = sbb;
            mab[o + x] = sab;
        }
        if (r < kh - 1)
            continue;
        /* vertical pass: output row y = r - kh + 1 from rows y .. r */
        const int y = r - kh + 1;
        memset(acc, 0, 5 * ow * sizeof *acc);
        for (int k = 0; k < kh; k++) {
            size_t slot = (size_t)((y + k) % kh) * ow;
            double g = gy[k];
            for (size_t q = 0; q < 5; q++) {
                const double *src = t + q * plane + slot;
                double *dst = acc + q * ow;
                for (size_t x = 0; x < ow; x++)
                    dst[x] += g * src[x];
            }
        }
        double row_ssim = 0, row_cs = 0;
        for (size_t x = 0; x < ow; x++) {
            double mua = acc[x], mub = acc[ow + x];
            double va = acc[2 * ow + x] - mua * mua, vb = acc[3 * ow + x] - mub * mub;
            double cov = acc[4 * ow + x] - mua * mub;
            double l = (2 * mua * mub + c1) / (mua * mua + mub * mub + c1);
            double cs = (2 * cov + c2) / (va + vb + c2);
            row_ssim += l * cs;
            row_cs += cs;
        }
        sum_ssim += row_ssim;
        sum_cs += row_cs;
    }
    double n = (double)ow * (double)oh;
    if (cs_out)
        *cs_out = sum_cs / n;
    return sum_ssim / n;
}

double bsq_ssim_plane(bsq_metrics_ws *ws, const double *a, const double *b, int width,
                      int height, size_t stride, double peak, double *cs_out)
{
    if (width < 1 || height < 1 || ws_reserve(ws, ssim_scratch_size(width, height)))
        return NAN;
    return ssim_core(a, b, width, height, stride, peak, ws->buf, cs_out);
}

int bsq_msssim_scales(int width, int height)
{
    int m = 1;
    while (m < BSQ_MSSSIM_MAX_SCALES) {
        /* the size after m halvings (rounding up) */
        int w = width, h = height;
        for (int i = 0; i < m; i++) {
            w = (w + 1) / 2;
            h = (h + 1) / 2;
        }
        if (w < BSQ_SSIM_WINDOW || h < BSQ_SSIM_WINDOW)
            break;
        m++;
    }
    return m;
}

/* 2x2 block means; an odd last row or column is averaged with itself. */
static void downsample(const double *src, int w, int h, double *dst)
{
    int dw = (w + 1) / 2, dh = (h + 1) / 2;
    for (int y = 0; y < dh; y++) {
        const double *r0 = src + (size_t)(2 * y) * (size_t)w;
        const double *r1 = 2 * y + 1 < h ? r0 + w : r0;
        double *o = dst + (size_t)y * (size_t)dw;
        for (int x = 0; x < dw; x++) {
            int x0 = 2 * x, x1 = 2 * x + 1 < w ? 2 * x + 1 : 2 * x;
            o[x] = 0.25 * (r0[x0] + r0[x1] + r1[x0] + r1[x1]);
        }
    }
}

static double msssim_core(const double *a, const double *b, int w, int h, double peak,
                          double *pyr, double *scratch, int *scales_out)
{
    int m = bsq_msssim_scales(w, h);
    /* fewer scales: the first m weights scaled to the five's total (the
     * published five add up to 1.0001 and are used as they are) */
    double wsum = 0, wall = 0;
    for (int j = 0; j < BSQ_MSSSIM_MAX_SCALES; j++) {
        wall += msssim_weights[j];
        if (j < m)
            wsum += msssim_weights[j];
    }
    double scale = m == BSQ_MSSSIM_MAX_SCALES ? 1.0 : wall / wsum;
    double result = 1.0;
    for (int j = 0; j < m; j++) {
        double cs, s = ssim_core(a, b, w, h, (size_t)w, peak, scratch, &cs);
        double term = j == m - 1 ? s : cs;
        result *= pow(term > 0 ? term : 0.0, msssim_weights[j] * scale);
        if (j == m - 1)
            break;
        /* next scale: two planes side by side in `pyr` */
        size_t n = (size_t)((w + 1) / 2) * (size_t)((h + 1) / 2);
        double *na = pyr, *nb = pyr + n;
        downsample(a, w, h, na);
        downsample(b, w, h, nb);
        a = na;
        b = nb;
        w = (w + 1) / 2;
        h = (h + 1) / 2;
        pyr += 2 * n;
    }
    if (scales_out)
        *scales_out = m;
    return result;
}

/* Doubles for the pyramid below full size: every coarser scale of two
 * planes. */
static size_t pyramid_size(int w, int h)
{
    size_t n = 0;
    for (int j = 1; j < BSQ_MSSSIM_MAX_SCALES; j++) {
        w = (w + 1) / 2;
        h = (h + 1) / 2;
        n += 2 * (size_t)w * (size_t)h;
    }
    return n;
}

double bsq_msssim_plane(bsq_metrics_ws *ws, const double *a, const double *b, int width,
                        int height, double peak, int *scales_out)
{
    if (width < 1 || height < 1)
        return NAN;
    size_t np = pyramid_size(width, height);
    if (ws_reserve(ws, np + ssim_scratch_size(width, height)))
        return NAN;
    return msssim_core(a, b, width, height, peak, ws->buf, ws->buf + np, scales_out);
}

int bsq_metrics_frame(bsq_metrics_ws *ws, const uint8_t *ref, size_t ref_stride,
                      const uint8_t *dist, size_t dist_stride, int width, int height,
                      bsq_frame_quality *q)
{
    if (width < 1 || height < 1)
        return -1;
    const size_t npix = (size_t)width * (size_t)height;
    const size_t np = pyramid_size(width, height);
    if (ws_reserve(ws, 2 * npix + np + ssim_scratch_size(width, height)))
        return -1;
    double *ya = ws->buf, *yb = ya + npix, *pyr = yb + npix, *scratch = pyr + np;
    uint64_t sq[3] = {0, 0, 0};
    double sqy = 0;
    for (int y = 0; y < height; y++) {
        const uint8_t *ra = ref + (size_t)y * ref_stride, *rb = dist + (size_t)y * dist_stride;
        double *oa = ya + (size_t)y * (size_t)width, *ob = yb + (size_t)y * (size_t)width;
        uint64_t row[3] = {0, 0, 0};
        double rowy = 0;
        for (int x = 0; x < width; x++) {
            const uint8_t *pa = ra + 3 * (size_t)x, *pb = rb + 3 * (size_t)x;
            for (int c = 0; c < 3; c++) {
                int d = (int)pa[c] - (int)pb[c];
                row[c] += (uint64_t)(d * d);
            }
            double la = 0.299 * pa[0] + 0.587 * pa[1] + 0.114 * pa[2];
            double lb = 0.299 * pb[0] + 0.587 * pb[1] + 0.114 * pb[2];
            oa[x] = la;
            ob[x] = lb;
            rowy += (la - lb) * (la - lb);
        }
        for (int c = 0; c < 3; c++)
            sq[c] += row[c];
        sqy += rowy;
    }
    for (int c = 0; c < 3; c++)
        q->mse_chan[c] = (double)sq[c] / (double)npix;
    q->mse_rgb = (double)(sq[0] + sq[1] + sq[2]) / (3.0 * (double)npix);
    q->mse_y = sqy / (double)npix;
    q->ssim_y = ssim_core(ya, yb, width, height, (size_t)width, 255.0, scratch, NULL);
    q->msssim_y = msssim_core(ya, yb, width, height, 255.0, pyr, scratch, &q->msssim_scales);
    return 0;
}
