/* Media reader: anything libavformat/libavcodec can demux and decode, turned
 * into upright RGB24 frames (8 bits, full range) by libswscale with the
 * source's colour matrix and range, rotated as the display matrix says. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "media.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/display.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#include "error.h"

/* ACCURATE_RND and FULL_CHR_H_INT keep swscale off its fast YUV->RGB paths,
 * which replicate chroma instead of interpolating it and round coarsely;
 * bicubic is what the ffmpeg tool uses for its automatic conversions. */
#define IN_SWS_FLAGS (SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT)

struct bsq_media_in {
    char *name;             /* for messages: the path, or "stdin" */
    AVFormatContext *fmt;
    AVCodecContext *dec;
    AVPacket *pkt;
    AVFrame *frame;
    int stream_index;
    int pending;            /* frame holds a decoded frame not yet returned */
    int flushing;           /* demuxer done, decoder being drained */
    struct SwsContext *sws;
    int sws_w, sws_h, sws_fmt;
    uint8_t *buf;           /* RGB24 at the coded size, before rotation */
    int buf_stride;
    /* Orientation: output coordinates are mirrored first (hflip, vflip),
     * then read from the stored frame transposed or not. */
    int transpose, hflip, vflip;
    int64_t last_pts, duration, frames_out;
    bsq_media_info info;
};

/* ------------------------------------------------------------------------ */
/* Shared helpers (also used by media_out.c)                                 */

const char *bsq_media_strerror(int averror, char *buf, size_t size)
{
    if (!buf || size == 0)
        return "";
    /* av_strerror writes a generic text itself when the code is unknown */
    av_strerror(averror, buf, size);
    return buf;
}

bsq_status bsq_media_fail_av(bsq_error *err, int averror, const char *fmt, ...)
{
    bsq_status code;
    if (averror == AVERROR(ENOMEM))
        code = BSQ_ERR_NOMEM;
    else if (averror == AVERROR_INVALIDDATA || averror == AVERROR_EOF)
        code = BSQ_ERR_FORMAT;
    else if (averror == AVERROR_DECODER_NOT_FOUND || averror == AVERROR_ENCODER_NOT_FOUND ||
             averror == AVERROR_DEMUXER_NOT_FOUND || averror == AVERROR_MUXER_NOT_FOUND ||
             averror == AVERROR_PROTOCOL_NOT_FOUND || averror == AVERROR_PATCHWELCOME ||
             averror == AVERROR(ENOSYS))
        code = BSQ_ERR_UNSUPPORTED;
    else if (averror == AVERROR(EINVAL))
        code = BSQ_ERR_INVALID_ARGUMENT;
    else
        code = BSQ_ERR_IO;
    if (!err)
        return code;
    char what[384], text[AV_ERROR_MAX_STRING_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return bsq_fail(err, code, "%s: %s", what, bsq_media_strerror(averror, text, sizeof text));
}

int bsq_media_guess_matrix(int colorspace, int width, int height)
{
    switch (colorspace) {
    case AVCOL_SPC_BT709:
    case AVCOL_SPC_FCC:
    case AVCOL_SPC_BT470BG:
    case AVCOL_SPC_SMPTE170M:
    case AVCOL_SPC_SMPTE240M:
    case AVCOL_SPC_BT2020_NCL:
    case AVCOL_SPC_BT2020_CL: /* converted with the NCL matrix: swscale has no CL */
        return colorspace;
    default:
        /* mpv's rule; the ffmpeg tool itself always assumes BT.601 */
        return (width >= 1280 || height > 576) ? AVCOL_SPC_BT709 : AVCOL_SPC_SMPTE170M;
    }
}

/* ------------------------------------------------------------------------ */

static bsq_rational to_rat(AVRational r)
{
    if (r.num <= 0 || r.den <= 0)
        return (bsq_rational){0, 1};
    return (bsq_rational){r.num, r.den};
}

static int is_rgb_format(const AVPixFmtDescriptor *d)
{
    return (d->flags & (AV_PIX_FMT_FLAG_RGB | AV_PIX_FMT_FLAG_PAL | AV_PIX_FMT_FLAG_BAYER)) ||
           strncmp(d->name, "xyz", 3) == 0;
}

/* The yuvj formats are their yuv twins with a full-range flag; swscale
 * warns about them, so it gets the twin and the range explicitly. */
static int unjpeg_format(int f)
{
    switch (f) {
    case AV_PIX_FMT_YUVJ420P: return AV_PIX_FMT_YUV420P;
    case AV_PIX_FMT_YUVJ422P: return AV_PIX_FMT_YUV422P;
    case AV_PIX_FMT_YUVJ444P: return AV_PIX_FMT_YUV444P;
    case AV_PIX_FMT_YUVJ440P: return AV_PIX_FMT_YUV440P;
    case AV_PIX_FMT_YUVJ411P: return AV_PIX_FMT_YUV411P;
    default: return f;
    }
}

/* The display matrix of the stream, else of the first frame (JPEG EXIF
 * orientation arrives that way), or NULL. */
static const int32_t *display_matrix(const AVStream *st, const AVFrame *f)
{
#if LIBAVCODEC_VERSION_INT >= AV_VERSION_INT(60, 29, 100)
    const AVPacketSideData *psd = av_packet_side_data_get(
        st->codecpar->coded_side_data, st->codecpar->nb_coded_side_data, AV_PKT_DATA_DISPLAYMATRIX);
    if (psd && psd->size >= 9 * sizeof(int32_t))
        return (const int32_t *)psd->data;
#else
    size_t size = 0;
    const uint8_t *sd = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size);
    if (sd && size >= 9 * sizeof(int32_t))
        return (const int32_t *)sd;
#endif
    const AVFrameSideData *fsd = av_frame_get_side_data(f, AV_FRAME_DATA_DISPLAYMATRIX);
    if (fsd && fsd->size >= 9 * sizeof(int32_t))
        return (const int32_t *)fsd->data;
    return NULL;
}

/* Right-angle orientations, decided exactly as the ffmpeg tool (6.1+)
 * autorotates, so frames come out as players show them. Other angles are
 * left alone (rotation 0). */
static void set_orientation(bsq_media_in *in, const int32_t *m)
{
    double r = m ? av_display_rotation_get(m) : NAN;
    if (isnan(r))
        return;
    double theta = -round(r);
    theta -= 360 * floor(theta / 360 + 0.9 / 360);
    bsq_media_info *I = &in->info;
    if (fabs(theta - 90) < 1.0) {
        in->transpose = 1;
        if (m[3] > 0) {         /* transpose: rotate clockwise, then mirror */
            I->mirrored = 1;
        } else {                /* clockwise */
            in->hflip = 1;
        }
        I->rotation = 90;
    } else if (fabs(theta - 180) < 1.0) {
        in->hflip = m[0] < 0;
        in->vflip = m[4] < 0;
        I->rotation = in->vflip ? 180 : 0;
        I->mirrored = in->hflip != in->vflip;
    } else if (fabs(theta - 270) < 1.0) {
        in->transpose = 1;
        in->vflip = 1;          /* counterclockwise */
        if (m[3] < 0) {         /* anti-transpose: counterclockwise, then mirror */
            in->hflip = 1;
            I->mirrored = 1;
        }
        I->rotation = 270;
    } else if (fabs(theta) < 1.0 && m[4] < 0) {
        in->vflip = 1;          /* upside-down mirror: 180 degrees, then mirror */
        I->rotation = 180;
        I->mirrored = 1;
    }
}

/* Next decoded frame into in->frame: *got = 0 at the end. */
static bsq_status decode_next(bsq_media_in *in, int *got, bsq_error *err)
{
    *got = 0;
    for (;;) {
        int ret = avcodec_receive_frame(in->dec, in->frame);
        if (ret >= 0) {
            *got = 1;
            return BSQ_OK;
        }
        if (ret == AVERROR_EOF)
            return BSQ_OK;
        if (ret != AVERROR(EAGAIN) || in->flushing)
            return bsq_media_fail_av(err, ret, "%s: decoding", in->name);
        ret = av_read_frame(in->fmt, in->pkt);
        if (ret == AVERROR_EOF) {
            /* a NULL packet drains the frames the decoder still holds */
            in->flushing = 1;
            ret = avcodec_send_packet(in->dec, NULL);
            if (ret < 0 && ret != AVERROR_EOF)
                return bsq_media_fail_av(err, ret, "%s: decoding", in->name);
            continue;
        }
        if (ret < 0)
            return bsq_media_fail_av(err, ret, "%s: reading", in->name);
        if (in->pkt->stream_index != in->stream_index) {
            av_packet_unref(in->pkt);
            continue;
        }
        ret = avcodec_send_packet(in->dec, in->pkt);
        av_packet_unref(in->pkt);
        if (ret < 0)
            return bsq_media_fail_av(err, ret, "%s: decoding", in->name);
    }
}

/* Fills in->info from the stream and the first decoded frame (which knows
 * the real size, pixel format and colour tags better than the container). */
static void fill_info(bsq_media_in *in, const char *url)
{
    const AVStream *st = in->fmt->streams[in->stream_index];
    const AVCodecParameters *par = st->codecpar;
    AVFrame *f = in->frame;
    bsq_media_info *I = &in->info;
    const AVPixFmtDescriptor *d = av_pix_fmt_desc_get(f->format);

    I->coded_width = f->width;
    I->coded_height = f->height;
    I->time_base = to_rat(st->time_base);
    I->avg_frame_rate = to_rat(st->avg_frame_rate);
    I->r_frame_rate = to_rat(st->r_frame_rate);
    AVRational fr = av_guess_frame_rate(in->fmt, (AVStream *)st, f);
    I->frame_rate = fr.num > 0 && fr.den > 0 ? to_rat(fr) : (bsq_rational){25, 1};
    I->sample_aspect_ratio = to_rat(av_guess_sample_aspect_ratio(in->fmt, (AVStream *)st, f));

    I->color_primaries = f->color_primaries != AVCOL_PRI_UNSPECIFIED ? (int)f->color_primaries
                                                                     : (int)par->color_primaries;
    I->color_trc = f->color_trc != AVCOL_TRC_UNSPECIFIED ? (int)f->color_trc : (int)par->color_trc;
    I->colorspace = f->colorspace != AVCOL_SPC_UNSPECIFIED ? (int)f->colorspace
                                                           : (int)par->color_space;
    I->color_range = f->color_range != AVCOL_RANGE_UNSPECIFIED ? (int)f->color_range
                                                               : (int)par->color_range;

    I->is_rgb = is_rgb_format(d);
    I->has_alpha = (d->flags & AV_PIX_FMT_FLAG_ALPHA) != 0;
    I->bit_depth = d->comp[0].depth;
    if (I->is_rgb) {
        I->matrix_used = AVCOL_SPC_RGB;
        I->full_range_used = 1;
    } else {
        I->matrix_used = bsq_media_guess_matrix(I->colorspace, f->width, f->height);
        if (I->color_range == AVCOL_RANGE_JPEG)
            I->full_range_used = 1;
        else if (I->color_range == AVCOL_RANGE_MPEG)
            I->full_range_used = 0;
        else /* swscale's own default: yuvj and gray are full range */
            I->full_range_used = unjpeg_format(f->format) != f->format || d->nb_components <= 2;
    }
    snprintf(I->pix_fmt, sizeof I->pix_fmt, "%s", d->name);
    snprintf(I->codec, sizeof I->codec, "%s", avcodec_get_name(par->codec_id));
    snprintf(I->format, sizeof I->format, "%s", in->fmt->iformat->name);

    /* Stills: the image demuxers (png_pipe, jpeg_pipe, ...), and image2 on
     * a name without a %d pattern. */
    const char *dn = in->fmt->iformat->name;
    size_t dl = strlen(dn);
    I->is_still_image = (dl > 5 && strcmp(dn + dl - 5, "_pipe") == 0) ||
                        (strcmp(dn, "image2") == 0 && !av_filename_number_test(url));
    I->frame_count = I->is_still_image ? 1 : st->nb_frames > 0 ? st->nb_frames : 0;

    I->width = in->transpose ? f->height : f->width;
    I->height = in->transpose ? f->width : f->height;
    if (in->transpose) {
        int t = I->sample_aspect_ratio.num;
        if (t) {
            I->sample_aspect_ratio.num = I->sample_aspect_ratio.den;
            I->sample_aspect_ratio.den = t;
        }
    }
    /* one frame in the stream's time base, for timestamps that are missing */
    AVRational tb = st->time_base.num > 0 && st->time_base.den > 0 ? st->time_base
                                                                     : (AVRational){1, 25};
    in->duration = av_rescale_q(1, av_inv_q(av_make_q(I->frame_rate.num, I->frame_rate.den)), tb);
    if (in->duration < 1)
        in->duration = 1;
}

bsq_status bsq_media_in_open(const char *path, const bsq_media_in_options *opts,
                             bsq_media_in **out, bsq_error *err)
{
    if (!out)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "media input: no output handle");
    *out = NULL;
    if (!path || !*path)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "media input: empty path");
    static const bsq_media_in_options defaults = {0};
    if (!opts)
        opts = &defaults;

    bsq_media_in *in = calloc(1, sizeof *in);
    if (!in)
        return bsq_fail(err, BSQ_ERR_NOMEM, "media input: out of memory");
    bsq_status st = BSQ_OK;
    char *url = NULL;
    int is_stdin = strcmp(path, "-") == 0;
    in->name = strdup(is_stdin ? "stdin" : path);
    /* "file:" keeps names with a colon from being taken as protocols */
    size_t n = strlen(path) + 6;
    url = malloc(n);
    if (!in->name || !url) {
        st = bsq_fail(err, BSQ_ERR_NOMEM, "media input: out of memory");
        goto fail;
    }
    snprintf(url, n, "%s%s", is_stdin ? "pipe:0" : "file:", is_stdin ? "" : path);

    const char *fmt_name = opts->format ? opts->format : is_stdin ? "yuv4mpegpipe" : NULL;
    const AVInputFormat *ifmt = NULL;
    if (fmt_name && !(ifmt = av_find_input_format(fmt_name))) {
        st = bsq_fail(err, BSQ_ERR_UNSUPPORTED, "%s: unknown input format '%s'", in->name, fmt_name);
        goto fail;
    }

    AVDictionary *dict = NULL;
    av_dict_set(&dict, "protocol_whitelist", "file,pipe", 0);
    int ret = avformat_open_input(&in->fmt, url, ifmt, &dict);
    av_dict_free(&dict);
    if (ret < 0) {
        in->fmt = NULL; /* freed by avformat_open_input */
        st = bsq_media_fail_av(err, ret, "%s", in->name);
        goto fail;
    }
    ret = avformat_find_stream_info(in->fmt, NULL);
    if (ret < 0) {
        st = bsq_media_fail_av(err, ret, "%s: reading stream information", in->name);
        goto fail;
    }
    const AVCodec *codec = NULL;
    ret = av_find_best_stream(in->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (ret == AVERROR_STREAM_NOT_FOUND) {
        st = bsq_fail(err, BSQ_ERR_FORMAT, "%s: no video stream", in->name);
        goto fail;
    }
    if (ret < 0) {
        st = bsq_media_fail_av(err, ret, "%s: video stream", in->name);
        goto fail;
    }
    in->stream_index = ret;
    for (unsigned i = 0; i < in->fmt->nb_streams; i++)
        if ((int)i != in->stream_index)
            in->fmt->streams[i]->discard = AVDISCARD_ALL;
    AVStream *vst = in->fmt->streams[in->stream_index];

    in->dec = avcodec_alloc_context3(codec);
    in->pkt = av_packet_alloc();
    in->frame = av_frame_alloc();
    if (!in->dec || !in->pkt || !in->frame) {
        st = bsq_fail(err, BSQ_ERR_NOMEM, "%s: out of memory", in->name);
        goto fail;
    }
    ret = avcodec_parameters_to_context(in->dec, vst->codecpar);
    if (ret >= 0) {
        in->dec->pkt_timebase = vst->time_base;
        in->dec->thread_count = opts->threads > 0 ? opts->threads : 0;
        ret = avcodec_open2(in->dec, codec, NULL);
    }
    if (ret < 0) {
        st = bsq_media_fail_av(err, ret, "%s: opening the %s decoder", in->name, codec->name);
        goto fail;
    }

    int got = 0;
    st = decode_next(in, &got, err);
    if (st != BSQ_OK)
        goto fail;
    if (!got) {
        st = bsq_fail(err, BSQ_ERR_FORMAT, "%s: no video frame could be decoded", in->name);
        goto fail;
    }
    in->pending = 1;
    if (in->frame->width <= 0 || in->frame->height <= 0 || in->frame->format < 0) {
        st = bsq_fail(err, BSQ_ERR_FORMAT, "%s: decoded frame has no size", in->name);
        goto fail;
    }
    set_orientation(in, display_matrix(vst, in->frame));
    if (opts->no_autorotate) /* report the rotation, apply nothing */
        in->transpose = in->hflip = in->vflip = 0;
    fill_info(in, url);

    /* Conversion target: 64-byte aligned rows so swscale can use SIMD
     * whatever the caller's stride; the copy out also rotates. */
    in->buf_stride = FFALIGN(in->info.coded_width * 3, 64);
    in->buf = av_malloc((size_t)in->buf_stride * (size_t)in->info.coded_height + 64);
    if (!in->buf) {
        st = bsq_fail(err, BSQ_ERR_NOMEM, "%s: out of memory", in->name);
        goto fail;
    }
    free(url);
    *out = in;
    return BSQ_OK;

fail:
    free(url);
    bsq_media_in_close(in);
    return st;
}

const bsq_media_info *bsq_media_in_info(const bsq_media_in *in)
{
    return in ? &in->info : NULL;
}

/* in->frame -> in->buf (coded size, RGB24). */
static bsq_status convert(bsq_media_in *in, bsq_error *err)
{
    AVFrame *f = in->frame;
    if (!in->sws || f->width != in->sws_w || f->height != in->sws_h || f->format != in->sws_fmt) {
        sws_freeContext(in->sws);
        in->sws = sws_getContext(f->width, f->height, unjpeg_format(f->format), in->info.coded_width,
                                 in->info.coded_height, AV_PIX_FMT_RGB24, IN_SWS_FLAGS, NULL,
                                 NULL, NULL);
        if (!in->sws)
            return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "%s: cannot convert %s %dx%d to RGB",
                            in->name, av_get_pix_fmt_name(f->format), f->width, f->height);
        in->sws_w = f->width;
        in->sws_h = f->height;
        in->sws_fmt = f->format;
        const AVPixFmtDescriptor *d = av_pix_fmt_desc_get(f->format);
        if (d && !is_rgb_format(d)) {
            /* Start from swscale's details (brightness, contrast, saturation,
             * output table) and set the source matrix and range, as the
             * ffmpeg tool's scale filter does. */
            int *inv = NULL, *tbl = NULL, src_range = 0, dst_range = 1;
            int brightness = 0, contrast = 1 << 16, saturation = 1 << 16;
            sws_getColorspaceDetails(in->sws, &inv, &src_range, &tbl, &dst_range, &brightness,
                                     &contrast, &saturation);
            const int *coeffs = sws_getCoefficients(in->info.matrix_used);
            sws_setColorspaceDetails(in->sws, coeffs, in->info.full_range_used,
                                     tbl ? tbl : coeffs, 1, brightness, contrast, saturation);
        }
    }
    uint8_t *dst[4] = {in->buf, NULL, NULL, NULL};
    int dst_stride[4] = {in->buf_stride, 0, 0, 0};
    int h = sws_scale(in->sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dst,
                      dst_stride);
    if (h != in->info.coded_height)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "%s: converting %s to RGB failed", in->name,
                        av_get_pix_fmt_name(f->format));
    return BSQ_OK;
}

/* in->buf -> caller's buffer, in display orientation. */
static void orient_copy(const bsq_media_in *in, uint8_t *dst, size_t stride)
{
    const int W = in->info.width, H = in->info.height;
    const size_t bs = (size_t)in->buf_stride;
    for (int y = 0; y < H; y++) {
        uint8_t *d = dst + (size_t)y * stride;
        int y1 = in->vflip ? H - 1 - y : y;
        if (!in->transpose && !in->hflip) {
            memcpy(d, in->buf + (size_t)y1 * bs, (size_t)W * 3);
            continue;
        }
        for (int x = 0; x < W; x++) {
            int x1 = in->hflip ? W - 1 - x : x;
            const uint8_t *s = in->transpose ? in->buf + (size_t)x1 * bs + (size_t)y1 * 3
                                             : in->buf + (size_t)y1 * bs + (size_t)x1 * 3;
            d[3 * x] = s[0];
            d[3 * x + 1] = s[1];
            d[3 * x + 2] = s[2];
        }
    }
}

bsq_status bsq_media_in_read(bsq_media_in *in, uint8_t *rgb, size_t stride, int64_t *pts,
                             int *got_frame, bsq_error *err)
{
    if (got_frame)
        *got_frame = 0;
    if (!in || !rgb || !got_frame)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "media read: missing argument");
    if (stride < (size_t)in->info.width * 3)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "media read: stride %zu is less than width %d * 3", stride,
                        in->info.width);
    if (!in->pending) {
        int got = 0;
        bsq_status st = decode_next(in, &got, err);
        if (st != BSQ_OK || !got)
            return st;
    }
    in->pending = 0;
    bsq_status st = convert(in, err);
    int64_t t = in->frame->best_effort_timestamp;
    av_frame_unref(in->frame);
    if (st != BSQ_OK)
        return st;
    orient_copy(in, rgb, stride);

    /* Writers need increasing timestamps; a frame without one, or one that
     * goes backwards (broken files), is put a frame after the previous. */
    if (t == AV_NOPTS_VALUE)
        t = in->frames_out ? in->last_pts + in->duration : 0;
    else if (in->frames_out && t <= in->last_pts)
        t = in->last_pts + in->duration;
    in->last_pts = t;
    in->frames_out++;
    if (pts)
        *pts = t;
    *got_frame = 1;
    return BSQ_OK;
}

void bsq_media_in_close(bsq_media_in *in)
{
    if (!in)
        return;
    sws_freeContext(in->sws);
    av_free(in->buf);
    av_frame_free(&in->frame);
    av_packet_free(&in->pkt);
    avcodec_free_context(&in->dec);
    avformat_close_input(&in->fmt);
    free(in->name);
    free(in);
}
