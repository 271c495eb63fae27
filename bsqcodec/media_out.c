/* Media writer: RGB24 frames -> y4m (written here), H.264 in MP4/MKV/MOV
 * (libx264 through libavcodec/libavformat), or PNG images (libavcodec's PNG
 * encoder, files written here). RGB -> YUV uses the colour description
 * given (matrix and range), which is also tagged in the output. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "media.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>

#include "error.h"

/* FULL_CHR_H_INP: chroma computed at full width, then filtered down, rather
 * than point-sampled; ACCURATE_RND also keeps swscale off its RGB->YUV fast
 * path, which ignores the requested matrix. */
#define OUT_SWS_FLAGS (SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP)

enum out_kind { K_Y4M, K_MP4, K_MKV, K_MOV, K_PNG, K_PNGSEQ };

static const char *const kind_names[] = {"y4m", "mp4", "mkv", "mov", "png", "png-sequence"};

struct bsq_media_out {
    enum out_kind kind;
    char *name;              /* for messages: the path, or "stdout" */
    char *path;              /* the name or PNG pattern as given */
    int width, height, chroma;
    AVRational tb, fr, sar;
    int matrix, full;        /* RGB -> YUV conversion used (and tagged) */
    struct SwsContext *sws;
    AVFrame *frame;          /* YUV for y4m and x264, RGB24 for PNG */
    AVFrame *rgb;            /* padded copy of the caller's RGB for swscale */
    FILE *fp;                /* y4m */
    AVCodecContext *enc;     /* x264, PNG */
    AVPacket *pkt;
    AVFormatContext *fmt;    /* x264 */
    AVStream *st;
    int header_written;
    int failed;              /* a write failed: close only frees */
    int64_t frames, last_pts, duration, number;
};

void bsq_media_out_options_init(bsq_media_out_options *opts, int width, int height)
{
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->width = width;
    opts->height = height;
    opts->sample_aspect_ratio = (bsq_rational){0, 1};
    opts->color_primaries = AVCOL_PRI_UNSPECIFIED;
    opts->color_trc = AVCOL_TRC_UNSPECIFIED;
    opts->colorspace = AVCOL_SPC_UNSPECIFIED;
    opts->color_range = AVCOL_RANGE_UNSPECIFIED;
    opts->crf = 18;
    opts->start_number = 1;
}

void bsq_media_out_options_from_info(bsq_media_out_options *opts, const bsq_media_info *info)
{
    if (!opts || !info)
        return;
    bsq_media_out_options_init(opts, info->width, info->height);
    opts->frame_rate = info->frame_rate;
    opts->time_base = info->time_base;
    opts->sample_aspect_ratio = info->sample_aspect_ratio;
    opts->color_primaries = info->color_primaries;
    opts->color_trc = info->color_trc;
    if (!info->is_rgb) {
        /* the matrix the reader converted with, tagged or guessed */
        opts->colorspace = info->matrix_used;
        opts->color_range = info->full_range_used ? AVCOL_RANGE_JPEG : AVCOL_RANGE_MPEG;
    }
}

const char *bsq_media_out_kind(const bsq_media_out *out)
{
    return out ? kind_names[out->kind] : "";
}

int bsq_media_out_chroma(const bsq_media_out *out)
{
    return out ? out->chroma : 0;
}

/* errno text, thread-safe. */
static bsq_status fail_errno(bsq_error *err, int e, const char *what, const char *name)
{
    char text[AV_ERROR_MAX_STRING_SIZE];
    return bsq_fail(err, e == ENOMEM ? BSQ_ERR_NOMEM : BSQ_ERR_IO, "%s: %s: %s", name, what,
                    bsq_media_strerror(AVERROR(e), text, sizeof text));
}

static int kind_from_name(const char *s, const char *path, enum out_kind *k)
{
    int pattern = av_filename_number_test(path) != 0;
    if (!strcasecmp(s, "y4m") || !strcasecmp(s, "yuv4mpegpipe"))
        *k = K_Y4M;
    else if (!strcasecmp(s, "mp4") || !strcasecmp(s, "m4v"))
        *k = K_MP4;
    else if (!strcasecmp(s, "mkv") || !strcasecmp(s, "matroska"))
        *k = K_MKV;
    else if (!strcasecmp(s, "mov"))
        *k = K_MOV;
    else if (!strcasecmp(s, "png"))
        *k = pattern ? K_PNGSEQ : K_PNG;
    else
        return -1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* RGB -> YUV                                                                */

static bsq_status setup_yuv(bsq_media_out *out, bsq_error *err)
{
    enum AVPixelFormat pf = out->chroma == 444 ? AV_PIX_FMT_YUV444P : AV_PIX_FMT_YUV420P;
    out->sws = sws_getContext(out->width, out->height, AV_PIX_FMT_RGB24, out->width, out->height,
                              pf, OUT_SWS_FLAGS, NULL, NULL, NULL);
    if (!out->sws)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "%s: cannot convert RGB to %s", out->name,
                        av_get_pix_fmt_name(pf));
    int *inv = NULL, *tbl = NULL, src_range = 1, dst_range = 0;
    int brightness = 0, contrast = 1 << 16, saturation = 1 << 16;
    sws_getColorspaceDetails(out->sws, &inv, &src_range, &tbl, &dst_range, &brightness, &contrast,
                             &saturation);
    const int *coeffs = sws_getCoefficients(out->matrix);
    sws_setColorspaceDetails(out->sws, inv ? inv : coeffs, 1, coeffs, out->full, brightness,
                             contrast, saturation);
    out->frame = av_frame_alloc();
    out->rgb = av_frame_alloc();
    if (!out->frame || !out->rgb)
        return bsq_fail(err, BSQ_ERR_NOMEM, "%s: out of memory", out->name);
    out->frame->format = pf;
    out->rgb->format = AV_PIX_FMT_RGB24;
    out->frame->width = out->rgb->width = out->width;
    out->frame->height = out->rgb->height = out->height;
    int ret = av_frame_get_buffer(out->frame, 0);
    if (ret >= 0)
        ret = av_frame_get_buffer(out->rgb, 0);
    if (ret < 0)
        return bsq_media_fail_av(err, ret, "%s: frame buffer", out->name);
    return BSQ_OK;
}

/* Copies rows of RGB24 into a frame's (aligned, padded) buffer. */
static void copy_rgb(AVFrame *f, const uint8_t *rgb, size_t stride)
{
    for (int y = 0; y < f->height; y++)
        memcpy(f->data[0] + (size_t)y * (size_t)f->linesize[0], rgb + (size_t)y * stride,
               (size_t)f->width * 3);
}

static bsq_status to_yuv(bsq_media_out *out, const uint8_t *rgb, size_t stride, bsq_error *err)
{
    /* the encoder may still hold a reference to the previous frame */
    int ret = av_frame_make_writable(out->frame);
    if (ret < 0)
        return bsq_media_fail_av(err, ret, "%s: frame buffer", out->name);
    /* swscale's SIMD input readers may read past the end of a row, so it
     * reads our padded copy, never the caller's buffer */
    copy_rgb(out->rgb, rgb, stride);
    int h = sws_scale(out->sws, (const uint8_t *const *)out->rgb->data, out->rgb->linesize, 0,
                      out->height, out->frame->data, out->frame->linesize);
    if (h != out->height)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "%s: RGB to YUV conversion failed", out->name);
    return BSQ_OK;
}

/* ------------------------------------------------------------------------ */
/* y4m                                                                       */

static bsq_status open_y4m(bsq_media_out *out, int to_stdout, bsq_error *err)
{
    if (to_stdout) {
        /* a duplicate, so closing (and its error check) leaves stdout open */
        int fd = dup(STDOUT_FILENO);
        if (fd < 0)
            return fail_errno(err, errno, "dup", out->name);
        out->fp = fdopen(fd, "wb");
        if (!out->fp) {
            int e = errno;
            close(fd);
            return fail_errno(err, e, "fdopen", out->name);
        }
    } else {
        out->fp = fopen(out->path, "wb");
        if (!out->fp)
            return fail_errno(err, errno, "cannot create", out->name);
    }
    bsq_status st = setup_yuv(out, err);
    if (st != BSQ_OK)
        return st;
    /* FFmpeg's tags: C420jpeg is centred chroma, which is swscale's siting;
     * XCOLORRANGE is read by FFmpeg. y4m has no tag for the matrix. */
    const char *c = out->chroma == 444 ? "C444 XYSCSS=444" : "C420jpeg XYSCSS=420JPEG";
    if (fprintf(out->fp, "YUV4MPEG2 W%d H%d F%d:%d Ip A%d:%d %s XCOLORRANGE=%s\n", out->width,
                out->height, out->fr.num, out->fr.den, out->sar.num, out->sar.num ? out->sar.den : 0,
                c, out->full ? "FULL" : "LIMITED") < 0)
        return fail_errno(err, errno, "write error", out->name);
    return BSQ_OK;
}

static bsq_status write_y4m(bsq_media_out *out, bsq_error *err)
{
    if (fputs("FRAME\n", out->fp) == EOF)
        return fail_errno(err, errno, "write error", out->name);
    for (int p = 0; p < 3; p++) {
        int w = p && out->chroma == 420 ? (out->width + 1) >> 1 : out->width;
        int h = p && out->chroma == 420 ? (out->height + 1) >> 1 : out->height;
        const uint8_t *row = out->frame->data[p];
        for (int y = 0; y < h; y++, row += out->frame->linesize[p])
            if (fwrite(row, 1, (size_t)w, out->fp) != (size_t)w)
                return fail_errno(err, errno, "write error", out->name);
    }
    return BSQ_OK;
}

static bsq_status close_y4m(bsq_media_out *out, bsq_error *err)
{
    /* a full disk often shows only when the buffer is flushed */
    int bad = fflush(out->fp) != 0 || ferror(out->fp);
    int e = errno;
    int closed = fclose(out->fp);
    if (!bad && closed != 0) {
        bad = 1;
        e = errno;
    }
    out->fp = NULL;
    return bad ? fail_errno(err, e ? e : EIO, "write error", out->name) : BSQ_OK;
}

/* ------------------------------------------------------------------------ */
/* x264 in MP4 / MKV / MOV                                                   */

static bsq_status open_x264(bsq_media_out *out, const bsq_media_out_options *o, int to_stdout,
                            bsq_error *err)
{
    const char *muxer = out->kind == K_MP4 ? "mp4" : out->kind == K_MKV ? "matroska" : "mov";
    int ret = avformat_alloc_output_context2(&out->fmt, NULL, muxer, NULL);
    if (ret < 0 || !out->fmt)
        return bsq_media_fail_av(err, ret < 0 ? ret : AVERROR(ENOMEM), "%s: %s muxer", out->name,
                                 muxer);
    const AVCodec *codec = avcodec_find_encoder_by_name("libx264");
    if (!codec)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "%s: FFmpeg was built without libx264",
                        out->name);
    bsq_status st = setup_yuv(out, err);
    if (st != BSQ_OK)
        return st;

    AVCodecContext *c = out->enc = avcodec_alloc_context3(codec);
    out->pkt = av_packet_alloc();
    if (!c || !out->pkt)
        return bsq_fail(err, BSQ_ERR_NOMEM, "%s: out of memory", out->name);
    c->width = out->width;
    c->height = out->height;
    c->pix_fmt = out->frame->format;
    c->time_base = out->tb;
    c->framerate = out->fr;
    c->sample_aspect_ratio = out->sar;
    c->color_primaries = o->color_primaries;
    c->color_trc = o->color_trc;
    c->colorspace = out->matrix;
    c->color_range = out->full ? AVCOL_RANGE_JPEG : AVCOL_RANGE_MPEG;
    if (out->chroma == 420)
        c->chroma_sample_location = AVCHROMA_LOC_CENTER; /* where swscale put it */
    c->thread_count = o->threads > 0 ? o->threads : 0;
    if (out->fmt->oformat->flags & AVFMT_GLOBALHEADER)
        c->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;

    AVDictionary *dict = NULL;
    char crf[32];
    snprintf(crf, sizeof crf, "%g", (double)o->crf);
    av_dict_set(&dict, "crf", crf, 0);
    av_dict_set(&dict, "preset", o->preset ? o->preset : "medium", 0);
    ret = avcodec_open2(c, codec, &dict);
    av_dict_free(&dict);
    if (ret < 0)
        return bsq_media_fail_av(err, ret, "%s: opening libx264 (%dx%d, %s, crf %s)", out->name,
                                 out->width, out->height, av_get_pix_fmt_name(c->pix_fmt), crf);

    out->st = avformat_new_stream(out->fmt, NULL);
    if (!out->st)
        return bsq_fail(err, BSQ_ERR_NOMEM, "%s: out of memory", out->name);
    ret = avcodec_parameters_from_context(out->st->codecpar, c);
    if (ret < 0)
        return bsq_media_fail_av(err, ret, "%s: stream parameters", out->name);
    out->st->time_base = c->time_base; /* a hint: the muxer may change it */
    out->st->avg_frame_rate = out->fr;
    out->st->sample_aspect_ratio = out->sar;

    char *url = NULL;
    if (to_stdout) {
        url = strdup("pipe:1");
    } else {
        size_t n = strlen(out->path) + 6;
        if ((url = malloc(n)))
            snprintf(url, n, "file:%s", out->path);
    }
    if (!url)
        return bsq_fail(err, BSQ_ERR_NOMEM, "%s: out of memory", out->name);
    ret = avio_open(&out->fmt->pb, url, AVIO_FLAG_WRITE);
    free(url);
    if (ret < 0)
        return bsq_media_fail_av(err, ret, "%s: cannot create", out->name);
    ret = avformat_write_header(out->fmt, NULL);
    if (ret < 0)
        return bsq_media_fail_av(err, ret, "%s: writing the header", out->name);
    out->header_written = 1;
    return BSQ_OK;
}

/* Moves every packet the encoder has ready into the muxer. */
static bsq_status drain_x264(bsq_media_out *out, bsq_error *err)
{
    for (;;) {
        int ret = avcodec_receive_packet(out->enc, out->pkt);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF)
            return BSQ_OK;
        if (ret < 0)
            return bsq_media_fail_av(err, ret, "%s: encoding", out->name);
        av_packet_rescale_ts(out->pkt, out->enc->time_base, out->st->time_base);
        out->pkt->stream_index = out->st->index;
        ret = av_interleaved_write_frame(out->fmt, out->pkt); /* takes the packet */
        if (ret < 0)
            return bsq_media_fail_av(err, ret, "%s: write error", out->name);
    }
}

static bsq_status write_x264(bsq_media_out *out, int64_t pts, bsq_error *err)
{
    out->frame->pts = pts;
    out->frame->color_range = out->enc->color_range;
    out->frame->colorspace = out->enc->colorspace;
    out->frame->color_primaries = out->enc->color_primaries;
    out->frame->color_trc = out->enc->color_trc;
    out->frame->sample_aspect_ratio = out->sar;
    int ret = avcodec_send_frame(out->enc, out->frame);
    if (ret < 0)
        return bsq_media_fail_av(err, ret, "%s: encoding", out->name);
    return drain_x264(out, err);
}

static bsq_status close_x264(bsq_media_out *out, bsq_error *err)
{
    int ret = avcodec_send_frame(out->enc, NULL);
    if (ret < 0)
        return bsq_media_fail_av(err, ret, "%s: encoding", out->name);
    bsq_status st = drain_x264(out, err);
    if (st != BSQ_OK)
        return st;
    ret = av_write_trailer(out->fmt);
    out->header_written = 0;
    if (ret < 0)
        return bsq_media_fail_av(err, ret, "%s: write error", out->name);
    /* avio_close does not report a failed final flush: check it here */
    avio_flush(out->fmt->pb);
    ret = out->fmt->pb->error;
    int ret2 = avio_closep(&out->fmt->pb);
    if (ret < 0 || ret2 < 0)
        return bsq_media_fail_av(err, ret < 0 ? ret : ret2, "%s: write error", out->name);
    return BSQ_OK;
}

/* ------------------------------------------------------------------------ */
/* PNG                                                                       */

static bsq_status open_png(bsq_media_out *out, const bsq_media_out_options *o, bsq_error *err)
{
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_PNG);
    if (!codec)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "%s: FFmpeg was built without a PNG encoder",
                        out->name);
    AVCodecContext *c = out->enc = avcodec_alloc_context3(codec);
    out->pkt = av_packet_alloc();
    out->frame = av_frame_alloc();
    if (!c || !out->pkt || !out->frame)
        return bsq_fail(err, BSQ_ERR_NOMEM, "%s: out of memory", out->name);
    c->width = out->width;
    c->height = out->height;
    c->pix_fmt = AV_PIX_FMT_RGB24;
    c->time_base = out->tb;
    c->sample_aspect_ratio = out->sar;      /* pHYs */
    c->color_primaries = o->color_primaries; /* cHRM, sRGB */
    c->color_trc = o->color_trc;            /* gAMA */
    c->thread_count = 1;                    /* packets at once, in order */
    int ret = avcodec_open2(c, codec, NULL);
    if (ret < 0)
        return bsq_media_fail_av(err, ret, "%s: opening the PNG encoder", out->name);
    out->frame->format = AV_PIX_FMT_RGB24;
    out->frame->width = out->width;
    out->frame->height = out->height;
    ret = av_frame_get_buffer(out->frame, 0);
    if (ret < 0)
        return bsq_media_fail_av(err, ret, "%s: frame buffer", out->name);
    return BSQ_OK;
}

static bsq_status write_file(const char *path, const uint8_t *data, size_t size, bsq_error *err)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return fail_errno(err, errno, "cannot create", path);
    int bad = fwrite(data, 1, size, f) != size || fflush(f) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    return bad ? fail_errno(err, e ? e : EIO, "write error", path) : BSQ_OK;
}

static bsq_status write_png(bsq_media_out *out, const uint8_t *rgb, size_t stride, bsq_error *err)
{
    int ret = av_frame_make_writable(out->frame);
    if (ret < 0)
        return bsq_media_fail_av(err, ret, "%s: frame buffer", out->name);
    copy_rgb(out->frame, rgb, stride);
    out->frame->pts = out->frames;
    ret = avcodec_send_frame(out->enc, out->frame);
    if (ret >= 0)
        ret = avcodec_receive_packet(out->enc, out->pkt);
    if (ret < 0)
        return bsq_media_fail_av(err, ret, "%s: PNG encoding", out->name);

    bsq_status st;
    if (out->kind == K_PNG) {
        st = write_file(out->path, out->pkt->data, (size_t)out->pkt->size, err);
    } else {
        char name[PATH_MAX];
        if (out->number > INT_MAX ||
            av_get_frame_filename2(name, sizeof name, out->path, (int)out->number, 0) < 0)
            st = bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "%s: cannot number frame %lld",
                          out->name, (long long)out->number);
        else
            st = write_file(name, out->pkt->data, (size_t)out->pkt->size, err);
        out->number++;
    }
    av_packet_unref(out->pkt);
    return st;
}

/* ------------------------------------------------------------------------ */

static void free_out(bsq_media_out *out)
{
    if (!out)
        return;
    if (out->fp)
        fclose(out->fp);
    if (out->fmt) {
        if (out->fmt->pb)
            avio_closep(&out->fmt->pb);
        avformat_free_context(out->fmt);
    }
    avcodec_free_context(&out->enc);
    av_packet_free(&out->pkt);
    av_frame_free(&out->frame);
    av_frame_free(&out->rgb);
    sws_freeContext(out->sws);
    free(out->name);
    free(out->path);
    free(out);
}

bsq_status bsq_media_out_open(const char *path, const bsq_media_out_options *o,
                              bsq_media_out **outp, bsq_error *err)
{
    if (!outp)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "media output: no output handle");
    *outp = NULL;
    if (!path || !*path || !o)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "media output: missing path or options");
    if (o->width <= 0 || o->height <= 0 || o->width > 32768 || o->height > 32768)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "%s: bad frame size %dx%d", path,
                        o->width, o->height);
    int to_stdout = strcmp(path, "-") == 0;

    enum out_kind kind;
    if (o->format) {
        if (kind_from_name(o->format, path, &kind) < 0)
            return bsq_fail(err, BSQ_ERR_UNSUPPORTED,
                            "%s: unknown output format '%s' (y4m, mp4, mkv, mov, png)", path,
                            o->format);
    } else if (to_stdout) {
        kind = K_Y4M;
    } else {
        const char *slash = strrchr(path, '/');
        const char *dot = strrchr(slash ? slash : path, '.');
        if (!dot || kind_from_name(dot + 1, path, &kind) < 0 || !strcasecmp(dot + 1, "matroska") ||
            !strcasecmp(dot + 1, "yuv4mpegpipe"))
            return bsq_fail(err, BSQ_ERR_UNSUPPORTED,
                            "%s: cannot tell the output format from the name "
                            "(.y4m, .mp4, .mkv, .mov, .png, name%%04d.png)",
                            path);
    }
    if (to_stdout && kind != K_Y4M && kind != K_MKV)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED,
                        "stdout: only y4m and mkv can be written to a pipe, not %s",
                        kind_names[kind]);

    int chroma = o->chroma;
    int x264 = kind == K_MP4 || kind == K_MKV || kind == K_MOV;
    int odd = (o->width | o->height) & 1;
    if (chroma == 0)
        chroma = x264 && odd ? 444 : 420;
    if (chroma != 420 && chroma != 444)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "%s: chroma must be 420 or 444, not %d",
                        path, o->chroma);
    if (x264 && odd && chroma == 420)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "%s: 4:2:0 H.264 needs an even size, not %dx%d (use 444)", path,
                        o->width, o->height);
    if (x264 && (o->crf < 0 || o->crf > 51))
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "%s: crf %g is outside 0..51", path,
                        (double)o->crf);
    if (kind == K_PNGSEQ && o->start_number < 0)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "%s: negative start number", path);

    bsq_media_out *out = calloc(1, sizeof *out);
    if (!out)
        return bsq_fail(err, BSQ_ERR_NOMEM, "media output: out of memory");
    out->kind = kind;
    out->name = strdup(to_stdout ? "stdout" : path);
    out->path = strdup(path);
    if (!out->name || !out->path) {
        free_out(out);
        return bsq_fail(err, BSQ_ERR_NOMEM, "media output: out of memory");
    }
    out->width = o->width;
    out->height = o->height;
    out->chroma = kind == K_PNG || kind == K_PNGSEQ ? 0 : chroma;
    out->fr = o->frame_rate.num > 0 && o->frame_rate.den > 0
                  ? av_make_q(o->frame_rate.num, o->frame_rate.den)
                  : av_make_q(25, 1);
    out->tb = o->time_base.num > 0 && o->time_base.den > 0
                  ? av_make_q(o->time_base.num, o->time_base.den)
                  : av_inv_q(out->fr);
    out->sar = o->sample_aspect_ratio.num > 0 && o->sample_aspect_ratio.den > 0
                   ? av_make_q(o->sample_aspect_ratio.num, o->sample_aspect_ratio.den)
                   : av_make_q(0, 1);
    out->duration = av_rescale_q(1, av_inv_q(out->fr), out->tb);
    if (out->duration < 1)
        out->duration = 1;
    out->number = o->start_number;
    /* an RGB "matrix" would mean G/B/R planes: pick a real one instead */
    out->matrix = bsq_media_guess_matrix(o->colorspace == AVCOL_SPC_RGB ? AVCOL_SPC_UNSPECIFIED
                                                                        : o->colorspace,
                                         o->width, o->height);
    if (out->matrix == AVCOL_SPC_BT2020_CL)
        out->matrix = AVCOL_SPC_BT2020_NCL; /* what swscale computes */
    out->full = o->color_range == AVCOL_RANGE_JPEG;

    bsq_status st;
    switch (kind) {
    case K_Y4M: st = open_y4m(out, to_stdout, err); break;
    case K_MP4:
    case K_MKV:
    case K_MOV: st = open_x264(out, o, to_stdout, err); break;
    default: st = open_png(out, o, err); break;
    }
    if (st != BSQ_OK) {
        free_out(out);
        return st;
    }
    *outp = out;
    return BSQ_OK;
}

bsq_status bsq_media_out_write(bsq_media_out *out, const uint8_t *rgb, size_t stride, int64_t pts,
                               bsq_error *err)
{
    if (!out || !rgb)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "media write: missing argument");
    if (out->failed)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "%s: an earlier write failed", out->name);
    if (stride < (size_t)out->width * 3 || stride > INT_MAX)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "%s: bad stride %zu for width %d",
                        out->name, stride, out->width);
    if (pts == BSQ_MEDIA_NOPTS)
        pts = out->frames ? out->last_pts + out->duration : 0;
    else if (out->frames && pts <= out->last_pts)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "%s: pts %lld does not follow the previous one (%lld)", out->name,
                        (long long)pts, (long long)out->last_pts);
    if (out->kind == K_PNG && out->frames > 0)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "%s: a single PNG holds one frame (use a %%04d pattern for a sequence)",
                        out->name);

    /* the argument checks above leave the output usable; a failure below
     * may have left it half-written */
    bsq_status st;
    if (out->kind == K_PNG || out->kind == K_PNGSEQ) {
        st = write_png(out, rgb, stride, err);
    } else {
        st = to_yuv(out, rgb, stride, err);
        if (st == BSQ_OK)
            st = out->kind == K_Y4M ? write_y4m(out, err) : write_x264(out, pts, err);
    }
    if (st != BSQ_OK) {
        out->failed = 1;
        return st;
    }
    out->last_pts = pts;
    out->frames++;
    return BSQ_OK;
}

bsq_status bsq_media_out_close(bsq_media_out *out, bsq_error *err)
{
    if (!out)
        return BSQ_OK;
    bsq_status st = BSQ_OK;
    if (out->failed) {
        st = bsq_fail(err, BSQ_ERR_IO, "%s: not finished after a failed write", out->name);
    } else if (out->kind == K_Y4M) {
        st = close_y4m(out, err);
    } else if (out->kind == K_PNG || out->kind == K_PNGSEQ) {
        if (out->frames == 0)
            st = bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "%s: no frame was written", out->name);
    } else {
        st = close_x264(out, err);
    }
    free_out(out);
    return st;
}

void bsq_media_out_abort(bsq_media_out *out)
{
    free_out(out);
}
