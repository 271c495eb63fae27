/* Image preparation for bsqcodec tokenize: decode, resize, centre crop. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "imageprep.h"

#include <stdlib.h>
#include <string.h>

#include <libavutil/mem.h>

#include "error.h"
#include "media.h"
#include "resize.h"

struct bsq_prep {
    uint8_t *rgb; /* the decoded picture, RGB24 */
    size_t rgb_cap;
    bsq_resizer *rs;
};

bsq_prep *bsq_prep_create(void)
{
    bsq_prep *p = calloc(1, sizeof(bsq_prep));
    if (p && !(p->rs = bsq_resizer_create(1) /* callers run one per thread */)) {
        free(p);
        p = NULL;
    }
    return p;
}

void bsq_prep_destroy(bsq_prep *p)
{
    if (!p)
        return;
    av_free(p->rgb);
    bsq_resizer_destroy(p->rs);
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
    if (rw > (1 << 16) || rh > (1 << 16))
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED,
                        "a %dx%d image is too elongated to resize to a short side of %d", W, H, N);
    const uint8_t *from; /* rgb itself when already the right size: crop only */
    bsq_status st = bsq_resize_frame(p->rs, rgb, W, H, stride, (int)rw, (int)rh, &from, err);
    if (st != BSQ_OK)
        return st;
    const size_t from_stride = rw == W && rh == H ? stride : (size_t)rw * 3;
    for (int y = 0; y < N; y++)
        memcpy(dst + (size_t)y * N * 3, from + (size_t)(y0 + y) * from_stride + (size_t)x0 * 3,
               (size_t)N * 3);
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
