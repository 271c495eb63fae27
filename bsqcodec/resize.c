/* RGB24 resampling through libswscale, one plane at a time (resize.h). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "resize.h"

#include <pthread.h>
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
    uint8_t *frame; /* bsq_resize_frame's output */
    size_t frame_cap;
    struct SwsContext *sws[3]; /* one per plane: a context is not shared by threads */
    int threads;
};

bsq_resizer *bsq_resizer_create(int threads)
{
    bsq_resizer *r = calloc(1, sizeof(bsq_resizer));
    if (r)
        r->threads = threads < 1 ? 1 : threads > 3 ? 3 : threads;
    return r;
}

void bsq_resizer_destroy(bsq_resizer *r)
{
    if (!r)
        return;
    av_free(r->planes);
    av_free(r->frame);
    for (int c = 0; c < 3; c++)
        sws_freeContext(r->sws[c]);
    free(r);
}

typedef struct plane_job {
    struct SwsContext *sws;
    const uint8_t *in;
    uint8_t *out;
    int in_stride, out_stride, in_h, out_h;
    int ok;
} plane_job;

static void *scale_plane(void *arg)
{
    plane_job *j = arg;
    const uint8_t *in[4] = {j->in, NULL, NULL, NULL};
    uint8_t *out[4] = {j->out, NULL, NULL, NULL};
    int is[4] = {j->in_stride, 0, 0, 0}, os[4] = {j->out_stride, 0, 0, 0};
    j->ok = sws_scale(j->sws, in, is, 0, j->in_h, out, os) == j->out_h;
    return NULL;
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
    plane_job jobs[3];
    for (int c = 0; c < 3; c++) {
        r->sws[c] = sws_getCachedContext(r->sws[c], sw, sh, AV_PIX_FMT_GRAY8, dw, dh,
                                         AV_PIX_FMT_GRAY8, RESIZE_SWS_FLAGS, NULL, NULL,
                                         bicubic_bc);
        if (!r->sws[c])
            return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "cannot resize %dx%d to %dx%d", sw, sh,
                            dw, dh);
        jobs[c] = (plane_job){r->sws[c], sp + c * src_plane, dp + c * dst_plane, (int)ss,
                              (int)ds, sh, dh, 0};
    }
    /* the planes side by side on up to 3 threads (bit-exact either way);
     * a thread that cannot start leaves its plane to this one */
    pthread_t tid[3];
    int started[3] = {0, 0, 0};
    for (int c = 1; c < r->threads; c++)
        started[c] = pthread_create(&tid[c], NULL, scale_plane, &jobs[c]) == 0;
    for (int c = 0; c < 3; c++)
        if (c == 0 || c >= r->threads || !started[c])
            scale_plane(&jobs[c]);
    for (int c = 1; c < 3; c++)
        if (started[c])
            pthread_join(tid[c], NULL);
    for (int c = 0; c < 3; c++)
        if (!jobs[c].ok)
            return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "resizing %dx%d to %dx%d failed", sw, sh,
                            dw, dh);
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

bsq_status bsq_resize_frame(bsq_resizer *r, const uint8_t *src, int sw, int sh, size_t sstride,
                            int dw, int dh, const uint8_t **out, bsq_error *err)
{
    *out = src;
    if (sw == dw && sh == dh)
        return BSQ_OK;
    size_t need = (size_t)(dw > 0 ? dw : 1) * (size_t)(dh > 0 ? dh : 1) * 3;
    if (need > r->frame_cap) {
        av_free(r->frame);
        r->frame = av_malloc(need);
        r->frame_cap = r->frame ? need : 0;
        if (!r->frame)
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory for a %dx%d picture", dw, dh);
    }
    bsq_status st = bsq_resize_rgb8(r, src, sw, sh, sstride, r->frame, dw, dh, (size_t)dw * 3, err);
    if (st == BSQ_OK)
        *out = r->frame;
    return st;
}
