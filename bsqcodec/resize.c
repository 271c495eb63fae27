/* RGB24 resampling through libswscale, one plane at a time (resize.h). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "resize.h"

#include <stdlib.h>
#include <string.h>

#include <libavutil/mem.h>
#include <libavutil/pixfmt.h>
#include <libswscale/swscale.h>

#include "error.h"

/* Bit-exact C paths and accurate rounding: the same pixels on every CPU. */
#define RESIZE_SWS_FLAGS (SWS_BICUBIC | SWS_ACCURATE_RND | SWS_BITEXACT)
#define RESIZE_MAX_SIDE (1 << 16)

struct bsq_resizer {
    uint8_t *planes; /* 3 source planes, then 3 resized planes */
    size_t planes_cap;
    struct SwsContext *sws;
};

bsq_resizer *bsq_resizer_create(void)
{
    return calloc(1, sizeof(bsq_resizer));
}

void bsq_resizer_destroy(bsq_resizer *r)
{
    if (!r)
        return;
    av_free(r->planes);
    sws_freeContext(r->sws);
    free(r);
}

#define ALIGN64(x) (((x) + 63) & ~(size_t)63)

bsq_status bsq_resize_rgb8(bsq_resizer *r, const uint8_t *src, int sw, int sh, size_t sstride,
                           uint8_t *dst, int dw, int dh, size_t dstride, bsq_error *err)
{
    if (sw < 1 || sh < 1 || dw < 1 || dh < 1 || sw > RESIZE_MAX_SIDE || sh > RESIZE_MAX_SIDE ||
        dw > RESIZE_MAX_SIDE || dh > RESIZE_MAX_SIDE)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "cannot resize %dx%d to %dx%d", sw, sh,
                        dw, dh);
    if (sw == dw && sh == dh) {
        for (int y = 0; y < sh; y++)
            memcpy(dst + (size_t)y * dstride, src + (size_t)y * sstride, (size_t)sw * 3);
        return BSQ_OK;
    }
    /* Each plane on its own, as GRAY8: swscale then only filters (an RGB
     * format would go through its YUV intermediate). */
    const size_t ss = ALIGN64((size_t)sw), ds = ALIGN64((size_t)dw);
    const size_t src_plane = ss * (size_t)sh, dst_plane = ds * (size_t)dh;
    const size_t need = 3 * (src_plane + dst_plane) + 64;
    if (need > r->planes_cap) {
        av_free(r->planes);
        r->planes = av_malloc(need);
        r->planes_cap = r->planes ? need : 0;
        if (!r->planes)
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory resizing %dx%d to %dx%d", sw, sh,
                            dw, dh);
    }
    uint8_t *sp = r->planes, *dp = r->planes + 3 * src_plane;
    for (int y = 0; y < sh; y++) {
        const uint8_t *s = src + (size_t)y * sstride;
        uint8_t *pr = sp + (size_t)y * ss, *pg = pr + src_plane, *pb = pg + src_plane;
        for (int x = 0; x < sw; x++) {
            pr[x] = s[3 * x];
            pg[x] = s[3 * x + 1];
            pb[x] = s[3 * x + 2];
        }
    }
    static const double bicubic_bc[2] = {0.0, 0.5}; /* B, C: Catmull-Rom */
    r->sws = sws_getCachedContext(r->sws, sw, sh, AV_PIX_FMT_GRAY8, dw, dh, AV_PIX_FMT_GRAY8,
                                  RESIZE_SWS_FLAGS, NULL, NULL, bicubic_bc);
    if (!r->sws)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "cannot resize %dx%d to %dx%d", sw, sh, dw, dh);
    for (int c = 0; c < 3; c++) {
        const uint8_t *in[4] = {sp + c * src_plane, NULL, NULL, NULL};
        uint8_t *out[4] = {dp + c * dst_plane, NULL, NULL, NULL};
        int in_stride[4] = {(int)ss, 0, 0, 0}, out_stride[4] = {(int)ds, 0, 0, 0};
        if (sws_scale(r->sws, in, in_stride, 0, sh, out, out_stride) != dh)
            return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "resizing %dx%d to %dx%d failed", sw, sh,
                            dw, dh);
    }
    for (int y = 0; y < dh; y++) {
        const uint8_t *pr = dp + (size_t)y * ds, *pg = pr + dst_plane, *pb = pg + dst_plane;
        uint8_t *d = dst + (size_t)y * dstride;
        for (int x = 0; x < dw; x++) {
            d[3 * x] = pr[x];
            d[3 * x + 1] = pg[x];
            d[3 * x + 2] = pb[x];
        }
    }
    return BSQ_OK;
}
