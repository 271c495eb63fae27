/* Image preparation for bsqcodec tokenize: decode, resize, centre crop. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "imageprep.h"

#include <stdlib.h>
#include <string.h>

#include <libavutil/mem.h>
#include <libavutil/pixfmt.h>
#include <libswscale/swscale.h>

#include "error.h"
#include "media.h"

/* Bit-exact C paths and accurate rounding: the same pixels on every CPU. */
#define PREP_SWS_FLAGS (SWS_BICUBIC | SWS_ACCURATE_RND | SWS_BITEXACT)

struct bsq_prep {
    uint8_t *rgb;          /* the decoded picture, RGB24 */
    size_t rgb_cap;
    uint8_t *planes;       /* 3 source planes, then 3 resized planes */
    size_t planes_cap;
    struct SwsContext *sws;
};

bsq_prep *bsq_prep_create(void)
{
    return calloc(1, sizeof(bsq_prep));
}

void bsq_prep_destroy(bsq_prep *p)
{
    if (!p)
        return;
    av_free(p->rgb);
    av_free(p->planes);
    sws_freeContext(p->sws);
    free(p);
}

static int grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 1;
    av_free(*buf);
    *buf = av_malloc(need);
    *cap = *buf ? need : 0;
    return *buf != NULL;
}

#define ALIGN64(x) (((x) + 63) & ~(size_t)63)

bsq_status bsq_prep_resize_crop(bsq_prep *p, const uint8_t *rgb, int W, int H, size_t stride,
                                int N, uint8_t *dst, bsq_error *err)
{
    if (W < 1 || H < 1 || N < 1)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bad image size %dx%d", W, H);
    int64_t rw, rh; /* short side N, long side floor(long * N / short) */
    if (W <= H) {
        rw = N;
        rh = (int64_t)H * N / W;
    } else {
        rh = N;
        rw = (int64_t)W * N / H;
    }
    if (rw < N)
        rw = N;
    if (rh < N)
        rh = N;
    const int x0 = (int)((rw - N) / 2), y0 = (int)((rh - N) / 2);
    if (rw == W && rh == H) { /* already the right size: crop only */
        for (int y = 0; y < N; y++)
            memcpy(dst + (size_t)y * N * 3, rgb + (size_t)(y0 + y) * stride + (size_t)x0 * 3,
                   (size_t)N * 3);
        return BSQ_OK;
    }
    if (rw > (1 << 16) || rh > (1 << 16))
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED,
                        "a %dx%d image is too elongated to resize to a short side of %d", W, H, N);
    /* Each plane on its own, as GRAY8: swscale then only filters (an RGB
     * format would go through its YUV intermediate). */
    const size_t ss = ALIGN64((size_t)W), ds = ALIGN64((size_t)rw);
    const size_t src_plane = ss * (size_t)H, dst_plane = ds * (size_t)rh;
    if (!grow(&p->planes, &p->planes_cap, 3 * (src_plane + dst_plane) + 64))
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory for a %dx%d image", W, H);
    uint8_t *sp = p->planes, *dp = p->planes + 3 * src_plane;
    for (int y = 0; y < H; y++) {
        const uint8_t *s = rgb + (size_t)y * stride;
        uint8_t *r = sp + (size_t)y * ss, *g = r + src_plane, *b = g + src_plane;
        for (int x = 0; x < W; x++) {
            r[x] = s[3 * x];
            g[x] = s[3 * x + 1];
            b[x] = s[3 * x + 2];
        }
    }
    static const double bicubic_bc[2] = {0.0, 0.5}; /* B, C: Catmull-Rom */
    p->sws = sws_getCachedContext(p->sws, W, H, AV_PIX_FMT_GRAY8, (int)rw, (int)rh,
                                  AV_PIX_FMT_GRAY8, PREP_SWS_FLAGS, NULL, NULL, bicubic_bc);
    if (!p->sws)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "cannot resize %dx%d to %lldx%lld", W, H,
                        (long long)rw, (long long)rh);
    for (int c = 0; c < 3; c++) {
        const uint8_t *in[4] = {sp + c * src_plane, NULL, NULL, NULL};
        uint8_t *out[4] = {dp + c * dst_plane, NULL, NULL, NULL};
        int in_stride[4] = {(int)ss, 0, 0, 0}, out_stride[4] = {(int)ds, 0, 0, 0};
        if (sws_scale(p->sws, in, in_stride, 0, H, out, out_stride) != (int)rh)
            return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "resizing %dx%d to %lldx%lld failed", W, H,
                            (long long)rw, (long long)rh);
    }
    for (int y = 0; y < N; y++) {
        const uint8_t *r = dp + (size_t)(y0 + y) * ds + x0, *g = r + dst_plane, *b = g + dst_plane;
        uint8_t *d = dst + (size_t)y * N * 3;
        for (int x = 0; x < N; x++) {
            d[3 * x] = r[x];
            d[3 * x + 1] = g[x];
            d[3 * x + 2] = b[x];
        }
    }
    return BSQ_OK;
}

bsq_status bsq_prep_image(bsq_prep *p, const char *path, int N, uint8_t *dst, int *width,
                          int *height, bsq_error *err)
{
    bsq_media_in *in = NULL;
    /* one decoder thread: the caller runs many decoders side by side */
    bsq_media_in_options opt = {.threads = 1};
    bsq_status st = bsq_media_in_open(path, &opt, &in, err);
    if (st != BSQ_OK)
        return st;
    const bsq_media_info *mi = bsq_media_in_info(in);
    const int W = mi->width, H = mi->height;
    if (!strcmp(mi->format, "tty")) {
        st = bsq_fail(err, BSQ_ERR_FORMAT, "%s: not an image (a text file)", path);
        goto done;
    }
    const size_t stride = ALIGN64((size_t)W * 3);
    if ((uint64_t)stride * (uint64_t)H > ((uint64_t)1 << 34) ||
        !grow(&p->rgb, &p->rgb_cap, stride * (size_t)H + 64)) {
        st = bsq_fail(err, BSQ_ERR_NOMEM, "%s: out of memory for a %dx%d picture", path, W, H);
        goto done;
    }
    int got = 0;
    st = bsq_media_in_read(in, p->rgb, stride, NULL, &got, err);
    if (st == BSQ_OK && !got)
        st = bsq_fail(err, BSQ_ERR_FORMAT, "%s: no picture could be decoded", path);
    if (st == BSQ_OK && (st = bsq_prep_resize_crop(p, p->rgb, W, H, stride, N, dst, err)) != BSQ_OK)
        bsq_fail_prefix(err, st, "%s", path);
    *width = W;
    *height = H;
done:
    bsq_media_in_close(in);
    return st;
}
