/* The media layer (bsqcodec/media_in.c, media_out.c).
 *
 * Reader: inputs made at test time by the ffmpeg binary (odd sizes, 10-bit,
 * full range, tagged matrices, stills, rotation, gray, sequences) must give
 * the pixels ffmpeg itself gives when converting to rgb24 with the same
 * swscale flags, the right sizes, frame counts and increasing pts. Without
 * the binary those tests say so and pass.
 *
 * Writer: synthetic frames through y4m (4:2:0, 4:4:4), PNG, PNG sequences,
 * x264 in MKV/MP4, stdout/stdin pipes, read back: lossless paths exact,
 * YUV paths within the quantisation of 8-bit YCbCr; colour tags and VFR pts
 * kept; /dev/full and misuse reported as errors. */
#include <check.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libavutil/log.h>
#include <libavutil/pixfmt.h>

#include "media.h"

/* Flags media_in.c gives swscale, for ffmpeg's reference conversions. */
#define REF_SWS "bicubic+accurate_rnd+full_chroma_int"

static char g_dir[512];        /* inputs made once, in the parent */
static const char *g_ffmpeg;   /* NULL: binary absent */
static int g_inputs_ok;

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */

/* "<dir>/<name>" in one of a few rotating buffers (enough for one call). */
static const char *tp(const char *name)
{
    static char bufs[8][1024];
    static int next;
    char *b = bufs[next++ & 7];
    snprintf(b, sizeof bufs[0], "%s/%s", g_dir, name);
    return b;
}

static int run_ffmpeg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run_ffmpeg(const char *fmt, ...)
{
    char args[3000], cmd[3500];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' -nostdin -hide_banner -loglevel error -y %s </dev/null",
             g_ffmpeg, args);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "check_media: failed (%d): %s\n", rc, cmd);
    return rc;
}

#define NEED_FFMPEG()                                                                     \
    do {                                                                                  \
        if (!g_ffmpeg) {                                                                  \
            fprintf(stderr, "check_media: %s skipped: no ffmpeg binary\n", __func__);     \
            return;                                                                       \
        }                                                                                 \
        ck_assert_msg(g_inputs_ok, "making the test inputs with ffmpeg failed");          \
    } while (0)

static void *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (p) {
        ((char *)p)[n] = 0;
        *len = (size_t)n;
    }
    return p;
}

typedef struct clip {
    bsq_media_info info;
    int n;
    uint8_t *rgb;   /* n frames of width * height * 3 */
    int64_t *pts;
} clip;

static void clip_free(clip *c)
{
    free(c->rgb);
    free(c->pts);
    memset(c, 0, sizeof *c);
}

static size_t frame_bytes(const clip *c)
{
    return (size_t)c->info.width * (size_t)c->info.height * 3;
}

/* Reads every frame (through a padded stride, to exercise it). */
static bsq_status read_clip_opts(const char *path, const bsq_media_in_options *o, clip *c,
                                 bsq_error *err)
{
    memset(c, 0, sizeof *c);
    bsq_media_in *in = NULL;
    bsq_status st = bsq_media_in_open(path, o, &in, err);
    if (st != BSQ_OK)
        return st;
    c->info = *bsq_media_in_info(in);
    size_t row = (size_t)c->info.width * 3, stride = row + 7;
    uint8_t *tmp = malloc(stride * (size_t)c->info.height);
    ck_assert_ptr_nonnull(tmp);
    for (;;) {
        int got = 0;
        int64_t pts = 0;
        st = bsq_media_in_read(in, tmp, stride, &pts, &got, err);
        if (st != BSQ_OK || !got)
            break;
        c->rgb = realloc(c->rgb, frame_bytes(c) * (size_t)(c->n + 1));
        c->pts = realloc(c->pts, sizeof *c->pts * (size_t)(c->n + 1));
        ck_assert(c->rgb && c->pts);
        for (int y = 0; y < c->info.height; y++)
            memcpy(c->rgb + frame_bytes(c) * (size_t)c->n + row * (size_t)y,
                   tmp + stride * (size_t)y, row);
        c->pts[c->n++] = pts;
    }
    if (st == BSQ_OK) {
        /* the end stays the end */
        int got = 1;
        ck_assert_int_eq(bsq_media_in_read(in, tmp, stride, NULL, &got, err), BSQ_OK);
        ck_assert_int_eq(got, 0);
    }
    free(tmp);
    bsq_media_in_close(in);
    return st;
}

static void read_clip(const char *path, clip *c)
{
    bsq_error err = {0};
    bsq_status st = read_clip_opts(path, NULL, c, &err);
    ck_assert_msg(st == BSQ_OK, "reading %s: %s", path, err.message);
    ck_assert_msg(c->n > 0, "%s: no frames", path);
    for (int i = 1; i < c->n; i++)
        ck_assert_msg(c->pts[i] > c->pts[i - 1], "%s: pts %lld after %lld", path,
                      (long long)c->pts[i], (long long)c->pts[i - 1]);
}

static void diff_stats(const uint8_t *a, const uint8_t *b, size_t n, int *maxd, double *mean)
{
    long long sum = 0;
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        sum += d;
        if (d > m)
            m = d;
    }
    *maxd = m;
    *mean = n ? (double)sum / (double)n : 0;
}

static void expect_close(const char *what, const uint8_t *a, const uint8_t *b, size_t n,
                         int max_allowed, double mean_allowed)
{
    int m;
    double mean;
    diff_stats(a, b, n, &m, &mean);
    ck_assert_msg(m <= max_allowed && mean <= mean_allowed,
                  "%s: max abs diff %d (allowed %d), mean %.4f (allowed %.4f)", what, m,
                  max_allowed, mean, mean_allowed);
}

/* ffmpeg's own rgb24 frames for `in` (optionally through -vf). */
static uint8_t *ffmpeg_rgb(const char *in, const char *vf, size_t *len)
{
    const char *out = tp("ref.rgb");
    char vfarg[512] = "";
    if (vf)
        snprintf(vfarg, sizeof vfarg, "-vf '%s'", vf);
    ck_assert_int_eq(run_ffmpeg("-i '%s' %s -sws_flags %s -pix_fmt rgb24 -f rawvideo '%s'", in,
                                vfarg, REF_SWS, out),
                     0);
    uint8_t *p = read_file(out, len);
    ck_assert_ptr_nonnull(p);
    unlink(out);
    return p;
}

/* Reads `name` and compares every frame with ffmpeg's conversion. */
static void check_against_ffmpeg(const char *name, const char *vf, int w, int h, int frames,
                                 int max_allowed, double mean_allowed, clip *c)
{
    const char *path = tp(name);
    read_clip(path, c);
    ck_assert_msg(c->info.width == w && c->info.height == h, "%s: %dx%d, want %dx%d", name,
                  c->info.width, c->info.height, w, h);
    ck_assert_msg(c->n == frames, "%s: %d frames, want %d", name, c->n, frames);
    size_t len = 0;
    uint8_t *ref = ffmpeg_rgb(path, vf, &len);
    ck_assert_msg(len == frame_bytes(c) * (size_t)c->n, "%s: ffmpeg gave %zu bytes, we %zu",
                  name, len, frame_bytes(c) * (size_t)c->n);
    expect_close(name, c->rgb, ref, len, max_allowed, mean_allowed);
    free(ref);
}

/* Smooth RGB frames (4:2:0 keeps them well) or noise (worst case). */
static uint8_t *synth(int w, int h, int t, int noise)
{
    uint8_t *p = malloc((size_t)w * (size_t)h * 3);
    ck_assert_ptr_nonnull(p);
    uint32_t s = 12345u + 7919u * (uint32_t)t;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *q = p + ((size_t)y * (size_t)w + (size_t)x) * 3;
            if (noise) {
                for (int k = 0; k < 3; k++) {
                    s = s * 1664525u + 1013904223u;
                    q[k] = (uint8_t)(s >> 24);
                }
            } else {
                int v = (x + 2 * y + 6 * t) % 512;
                q[0] = (uint8_t)(16 + x * 223 / (w > 1 ? w - 1 : 1));
                q[1] = (uint8_t)(240 - y * 200 / (h > 1 ? h - 1 : 1));
                q[2] = (uint8_t)(v < 256 ? v : 511 - v);
            }
        }
    return p;
}

static bsq_media_out *open_out(const char *path, const bsq_media_out_options *o)
{
    bsq_error err = {0};
    bsq_media_out *out = NULL;
    bsq_status st = bsq_media_out_open(path, o, &out, &err);
    ck_assert_msg(st == BSQ_OK, "opening %s: %s", path, err.message);
    return out;
}

static void write_ok(bsq_media_out *out, const uint8_t *rgb, int w, int64_t pts)
{
    bsq_error err = {0};
    bsq_status st = bsq_media_out_write(out, rgb, (size_t)w * 3, pts, &err);
    ck_assert_msg(st == BSQ_OK, "write: %s", err.message);
}

static void close_ok(bsq_media_out *out)
{
    bsq_error err = {0};
    bsq_status st = bsq_media_out_close(out, &err);
    ck_assert_msg(st == BSQ_OK, "close: %s", err.message);
}

/* Writes `n` synthetic frames to `path`, keeping them in *frames. */
static uint8_t *write_clip(const char *path, const bsq_media_out_options *o, int n, int noise)
{
    size_t fb = (size_t)o->width * (size_t)o->height * 3;
    uint8_t *all = malloc(fb * (size_t)n);
    ck_assert_ptr_nonnull(all);
    bsq_media_out *out = open_out(path, o);
    for (int i = 0; i < n; i++) {
        uint8_t *f = synth(o->width, o->height, i, noise);
        memcpy(all + fb * (size_t)i, f, fb);
        write_ok(out, f, o->width, BSQ_MEDIA_NOPTS);
        free(f);
    }
    close_ok(out);
    return all;
}

/* ------------------------------------------------------------------------ */
/* inputs                                                                    */

static void make_inputs(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/check_media.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        exit(EXIT_FAILURE);
    }
    const char *env = getenv("FFMPEG");
    const char *bin = env && *env ? env : "ffmpeg";
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' -version >/dev/null 2>&1", bin);
    if (system(cmd) != 0) {
        fprintf(stderr, "check_media: no ffmpeg binary ('%s'): reader tests against ffmpeg "
                        "are skipped\n", bin);
        return;
    }
    g_ffmpeg = bin;
    /* format=rgb24 first: testsrc2 itself rounds odd sizes down in 4:2:0 */
    const char *src721 = "-f lavfi -i testsrc2=size=721x403:rate=25,format=rgb24 -frames:v 5";
    const char *small = "-f lavfi -i testsrc2=size=160x96:rate=25,format=rgb24";
    const char *tiny = "-f lavfi -i testsrc2=size=64x48:rate=25,format=rgb24 -frames:v 1";
    const char *x264 = "-c:v libx264 -preset ultrafast -g 4";
    int bad = 0;
    /* FFmpeg 5.1 writes broken y4m for odd sizes above 8 bits (chroma rows
     * of width bytes): 8 bits at the odd size, 10 bits at an even one */
    bad |= run_ffmpeg("%s -pix_fmt yuv420p '%s'", src721, tp("a721.y4m"));
    bad |= run_ffmpeg("%s -frames:v 5 -pix_fmt yuv420p10le -strict -1 '%s'", small,
                      tp("b10.y4m"));
    bad |= run_ffmpeg("%s -pix_fmt yuv420p10le -c:v ffv1 '%s'", src721, tp("a721.mkv"));
    bad |= run_ffmpeg("%s -frames:v 5 -pix_fmt yuv420p10le %s '%s'", small, x264, tp("b10.mp4"));
    bad |= run_ffmpeg("%s -frames:v 5 -pix_fmt yuv420p %s '%s'", small, x264, tp("b8.mp4"));
    bad |= run_ffmpeg("-i '%s' -c copy -metadata:s:v rotate=90 '%s'", tp("b8.mp4"),
                      tp("rot90.mp4"));
    bad |= run_ffmpeg("-i '%s' -c copy -metadata:s:v rotate=270 '%s'", tp("b8.mp4"),
                      tp("rot270.mp4"));
    bad |= run_ffmpeg("-i '%s' -c copy -metadata:s:v rotate=180 '%s'", tp("b8.mp4"),
                      tp("rot180.mp4"));
    bad |= run_ffmpeg("%s -pix_fmt yuvj420p '%s'", tiny, tp("still.jpg"));
    bad |= run_ffmpeg("%s -pix_fmt rgb24 '%s'", tiny, tp("still.png"));
    bad |= run_ffmpeg("%s -pix_fmt gray '%s'", tiny, tp("gray.png"));
    bad |= run_ffmpeg("%s -pix_fmt rgb48be '%s'", tiny, tp("deep.png"));
    bad |= run_ffmpeg("%s -frames:v 3 -pix_fmt gray -strict -1 '%s'", small, tp("gray.y4m"));
    bad |= run_ffmpeg("%s -frames:v 3 -pix_fmt yuv444p -c:v ffv1 -colorspace bt709 "
                      "-color_primaries bt709 -color_trc bt709 -color_range tv '%s'",
                      small, tp("y444.mkv"));
    bad |= run_ffmpeg("%s -frames:v 3 -pix_fmt yuv420p -c:v ffv1 -colorspace bt2020nc "
                      "-color_primaries bt2020 -color_trc smpte2084 -color_range pc '%s'",
                      small, tp("full2020.mkv"));
    bad |= run_ffmpeg("-f lavfi -i testsrc2=size=1280x720,format=rgb24 -frames:v 1 "
                      "-pix_fmt yuv420p -c:v ffv1 '%s'", tp("hd.mkv"));
    bad |= run_ffmpeg("%s -frames:v 3 -pix_fmt rgb24 '%s'", small, tp("seq%03d.png"));
    g_inputs_ok = !bad;
}

static void remove_inputs(void)
{
    if (!g_dir[0])
        return;
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "check_media: could not remove %s\n", g_dir);
}

/* ------------------------------------------------------------------------ */
/* reader                                                                    */

START_TEST(test_read_odd_10bit)
{
    NEED_FFMPEG();
    const char *names[] = {"a721.y4m", "a721.mkv", "b10.y4m"};
    for (int i = 0; i < 3; i++) {
        clip c;
        int w = i < 2 ? 721 : 160, h = i < 2 ? 403 : 96;
        check_against_ffmpeg(names[i], NULL, w, h, 5, 2, 0.5, &c);
        ck_assert_int_eq(c.info.bit_depth, i ? 10 : 8);
        ck_assert_str_eq(c.info.pix_fmt, i ? "yuv420p10le" : "yuv420p");
        ck_assert_int_eq(c.info.is_still_image, 0);
        ck_assert_int_eq(c.info.rotation, 0);
        ck_assert_int_eq(c.info.full_range_used, 0);
        ck_assert_int_eq(c.info.matrix_used, AVCOL_SPC_SMPTE170M); /* untagged SD */
        ck_assert_int_eq(c.info.frame_rate.num, 25);
        ck_assert_int_eq(c.info.frame_rate.den, 1);
        clip_free(&c);
    }
}
END_TEST

START_TEST(test_read_mp4)
{
    NEED_FFMPEG();
    const char *names[] = {"b10.mp4", "b8.mp4"};
    for (int i = 0; i < 2; i++) {
        clip c;
        check_against_ffmpeg(names[i], NULL, 160, 96, 5, 2, 0.5, &c);
        ck_assert_int_eq(c.info.frame_count, 5); /* nb_frames from the mp4 */
        ck_assert_int_eq(c.info.avg_frame_rate.num / c.info.avg_frame_rate.den, 25);
        /* pts one frame apart, in the stream's time base */
        for (int k = 1; k < c.n; k++)
            ck_assert_int_eq((c.pts[k] - c.pts[k - 1]) * 25 * c.info.time_base.num,
                             c.info.time_base.den);
        clip_free(&c);
    }
}
END_TEST

START_TEST(test_read_rotation)
{
    NEED_FFMPEG();
    clip plain;
    read_clip(tp("b8.mp4"), &plain);
    const char *names[] = {"rot90.mp4", "rot270.mp4", "rot180.mp4"};
    for (int i = 0; i < 3; i++) {
        clip c;
        int swap = i < 2;
        /* ffmpeg autorotates the same way, but transposes before converting
         * to RGB (so chroma is interpolated along the other axis of swscale,
         * at a slightly different precision): a few pixels differ by up to 6 */
        check_against_ffmpeg(names[i], NULL, swap ? 96 : 160, swap ? 160 : 96, 5, 6, 0.05, &c);
        ck_assert_int_ne(c.info.rotation, 0);
        ck_assert_int_eq(c.info.mirrored, 0);
        ck_assert_int_eq(c.info.coded_width, 160);
        ck_assert_int_eq(c.info.coded_height, 96);
        /* and the pixels are the unrotated ones moved about: check the
         * mapping exactly against the plain clip's first frame */
        const int W = c.info.width, H = c.info.height;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int sx, sy; /* where (x, y) comes from in the stored frame */
                if (c.info.rotation == 90) {
                    sx = y;
                    sy = 96 - 1 - x;
                } else if (c.info.rotation == 270) {
                    sx = 160 - 1 - y;
                    sy = x;
                } else {
                    sx = 160 - 1 - x;
                    sy = 96 - 1 - y;
                }
                const uint8_t *a = c.rgb + ((size_t)y * (size_t)W + (size_t)x) * 3;
                const uint8_t *b = plain.rgb + ((size_t)sy * 160 + (size_t)sx) * 3;
                for (int k = 0; k < 3; k++)
                    ck_assert_msg(a[k] == b[k], "%s: (%d,%d) %d vs (%d,%d) %d", names[i], x, y,
                                  a[k], sx, sy, b[k]);
            }
        clip_free(&c);
    }
    /* without autorotation: frames as stored, the rotation still reported */
    bsq_media_in_options o = {.no_autorotate = 1};
    clip c;
    bsq_error err = {0};
    ck_assert_int_eq(read_clip_opts(tp("rot90.mp4"), &o, &c, &err), BSQ_OK);
    ck_assert_int_eq(c.info.width, 160);
    ck_assert_int_eq(c.info.height, 96);
    ck_assert_int_ne(c.info.rotation, 0);
    ck_assert_int_eq(memcmp(c.rgb, plain.rgb, frame_bytes(&c) * 5), 0);
    clip_free(&c);
    clip_free(&plain);
}
END_TEST

START_TEST(test_read_stills)
{
    NEED_FFMPEG();
    clip c;
    /* rgb24 PNG: no conversion at all */
    check_against_ffmpeg("still.png", NULL, 64, 48, 1, 0, 0, &c);
    ck_assert_int_eq(c.info.is_still_image, 1);
    ck_assert_int_eq(c.info.frame_count, 1);
    ck_assert_int_eq(c.info.is_rgb, 1);
    clip_free(&c);
    /* 16-bit RGB PNG */
    check_against_ffmpeg("deep.png", NULL, 64, 48, 1, 1, 0.5, &c);
    ck_assert_int_eq(c.info.bit_depth, 16);
    clip_free(&c);
    /* yuvj420p JPEG: full range */
    check_against_ffmpeg("still.jpg", NULL, 64, 48, 1, 2, 0.5, &c);
    ck_assert_int_eq(c.info.is_still_image, 1);
    ck_assert_int_eq(c.info.full_range_used, 1);
    ck_assert_int_eq(c.info.color_range, AVCOL_RANGE_JPEG);
    clip_free(&c);
    /* gray PNG: full range, R = G = B */
    check_against_ffmpeg("gray.png", NULL, 64, 48, 1, 0, 0, &c);
    for (size_t i = 0; i < frame_bytes(&c); i += 3)
        ck_assert(c.rgb[i] == c.rgb[i + 1] && c.rgb[i] == c.rgb[i + 2]);
    clip_free(&c);
    /* a numbered sequence is a clip, not a still */
    check_against_ffmpeg("seq%03d.png", NULL, 160, 96, 3, 0, 0, &c);
    ck_assert_int_eq(c.info.is_still_image, 0);
    clip_free(&c);
}
END_TEST

/* still.jpg with an EXIF APP1 segment holding only an Orientation tag. */
static void make_exif_jpeg(const char *out_name, int orientation)
{
    size_t len = 0;
    uint8_t *jpg = read_file(tp("still.jpg"), &len);
    ck_assert(jpg && len > 2 && jpg[0] == 0xff && jpg[1] == 0xd8);
    static const uint8_t head[] = {
        0xff, 0xe1, 0, 34, 'E', 'x', 'i', 'f', 0, 0,         /* APP1, length 34 */
        'M', 'M', 0, 42, 0, 0, 0, 8,                         /* big-endian TIFF */
        0, 1,                                                /* one IFD entry: */
        0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0,            /* Orientation, SHORT */
        0, 0, 0, 0};                                         /* no next IFD */
    uint8_t seg[sizeof head];
    memcpy(seg, head, sizeof head);
    seg[4 + 6 + 8 + 2 + 8 + 1] = (uint8_t)orientation;       /* the SHORT's low byte */
    FILE *f = fopen(tp(out_name), "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert(fwrite(jpg, 1, 2, f) == 2 && fwrite(seg, 1, sizeof seg, f) == sizeof seg &&
              fwrite(jpg + 2, 1, len - 2, f) == len - 2);
    ck_assert_int_eq(fclose(f), 0);
    free(jpg);
}

/* EXIF orientation reaches the decoder's frames as a display matrix (the
 * ffmpeg 5.1 tool ignores it; players and later ffmpeg apply it). */
START_TEST(test_read_exif_orientation)
{
    NEED_FFMPEG();
    clip plain, c;
    read_clip(tp("still.jpg"), &plain);
    make_exif_jpeg("o6.jpg", 6); /* display rotated 90 degrees clockwise */
    read_clip(tp("o6.jpg"), &c);
    ck_assert_int_eq(c.info.width, 48);
    ck_assert_int_eq(c.info.height, 64);
    ck_assert_int_eq(c.info.rotation, 90);
    ck_assert_int_eq(c.info.mirrored, 0);
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 48; x++)
            ck_assert(memcmp(c.rgb + ((size_t)y * 48 + (size_t)x) * 3,
                             plain.rgb + ((size_t)(47 - x) * 64 + (size_t)y) * 3, 3) == 0);
    clip_free(&c);
    make_exif_jpeg("o2.jpg", 2); /* mirrored left to right */
    read_clip(tp("o2.jpg"), &c);
    ck_assert_int_eq(c.info.width, 64);
    ck_assert_int_eq(c.info.rotation, 0);
    ck_assert_int_eq(c.info.mirrored, 1);
    for (int y = 0; y < 48; y++)
        for (int x = 0; x < 64; x++)
            ck_assert(memcmp(c.rgb + ((size_t)y * 64 + (size_t)x) * 3,
                             plain.rgb + ((size_t)y * 64 + (size_t)(63 - x)) * 3, 3) == 0);
    clip_free(&c);
    clip_free(&plain);
}
END_TEST

START_TEST(test_read_colour)
{
    NEED_FFMPEG();
    clip c;
    check_against_ffmpeg("gray.y4m", NULL, 160, 96, 3, 2, 0.5, &c);
    clip_free(&c);

    check_against_ffmpeg("y444.mkv", NULL, 160, 96, 3, 2, 0.5, &c);
    ck_assert_int_eq(c.info.colorspace, AVCOL_SPC_BT709);
    ck_assert_int_eq(c.info.matrix_used, AVCOL_SPC_BT709);
    ck_assert_int_eq(c.info.color_primaries, AVCOL_PRI_BT709);
    ck_assert_int_eq(c.info.color_trc, AVCOL_TRC_BT709);
    ck_assert_int_eq(c.info.color_range, AVCOL_RANGE_MPEG);
    clip_free(&c);

    check_against_ffmpeg("full2020.mkv", NULL, 160, 96, 3, 2, 0.5, &c);
    ck_assert_int_eq(c.info.colorspace, AVCOL_SPC_BT2020_NCL);
    ck_assert_int_eq(c.info.color_primaries, AVCOL_PRI_BT2020);
    ck_assert_int_eq(c.info.color_trc, AVCOL_TRC_SMPTE2084);
    ck_assert_int_eq(c.info.full_range_used, 1);
    clip_free(&c);

    /* untagged HD: BT.709 as players assume (ffmpeg itself assumes BT.601,
     * so its reference is made with the matrix spelled out) */
    check_against_ffmpeg("hd.mkv", "scale=in_color_matrix=bt709:flags=" REF_SWS, 1280, 720, 1, 2,
                         0.5, &c);
    ck_assert_int_eq(c.info.matrix_used, AVCOL_SPC_BT709);
    size_t len = 0;
    uint8_t *bt601 = ffmpeg_rgb(tp("hd.mkv"), NULL, &len);
    int m;
    double mean;
    diff_stats(c.rgb, bt601, len, &m, &mean);
    ck_assert_msg(m > 10, "the BT.601 reading should differ (max %d)", m);
    free(bt601);
    clip_free(&c);
}
END_TEST

START_TEST(test_read_stdin)
{
    NEED_FFMPEG();
    clip ref, c;
    read_clip(tp("a721.y4m"), &ref);
    int saved = dup(STDIN_FILENO);
    int fd = open(tp("a721.y4m"), O_RDONLY);
    ck_assert(saved >= 0 && fd >= 0);
    dup2(fd, STDIN_FILENO);
    close(fd);
    read_clip("-", &c);
    dup2(saved, STDIN_FILENO);
    close(saved);
    ck_assert_int_eq(c.n, ref.n);
    ck_assert_int_eq(memcmp(c.rgb, ref.rgb, frame_bytes(&c) * (size_t)c.n), 0);
    clip_free(&c);
    clip_free(&ref);
}
END_TEST

START_TEST(test_read_errors)
{
    bsq_error err = {0};
    bsq_media_in *in = NULL;
    ck_assert_int_eq(bsq_media_in_open("/nonexistent/x.mp4", NULL, &in, &err), BSQ_ERR_IO);
    ck_assert_ptr_null(in);
    ck_assert_msg(strstr(err.message, "No such file") != NULL, "%s", err.message);

    char path[600];
    snprintf(path, sizeof path, "%s/garbage.mp4", g_dir);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 4096; i++)
        fputc((i * 7919) & 0xff, f);
    fclose(f);
    bsq_status st = bsq_media_in_open(path, NULL, &in, &err);
    ck_assert_msg(st == BSQ_ERR_FORMAT, "garbage: %d %s", st, err.message);
    ck_assert_ptr_null(in);

    /* a truncated y4m header */
    snprintf(path, sizeof path, "%s/trunc.y4m", g_dir);
    f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("YUV4MPEG2 W16 H16 F25:1 C420jpeg\nFRAME\n", f);
    fclose(f);
    st = bsq_media_in_open(path, NULL, &in, &err);
    ck_assert_msg(st != BSQ_OK, "truncated y4m opened");
    ck_assert_ptr_null(in);
    ck_assert_int_eq(bsq_media_in_open(path, NULL, NULL, &err), BSQ_ERR_INVALID_ARGUMENT);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* writer                                                                    */

START_TEST(test_png_single)
{
    bsq_media_out_options o;
    bsq_media_out_options_init(&o, 37, 21);
    const char *path = tp("one.png");
    uint8_t *f = synth(37, 21, 0, 1);
    bsq_media_out *out = open_out(path, &o);
    ck_assert_str_eq(bsq_media_out_kind(out), "png");
    write_ok(out, f, 37, 0);
    bsq_error err = {0};
    /* a second frame does not fit; the first is still written */
    ck_assert_int_eq(bsq_media_out_write(out, f, 37 * 3, 1, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(err.message, "one frame") != NULL, "%s", err.message);
    close_ok(out);
    clip c;
    read_clip(path, &c);
    ck_assert_int_eq(c.n, 1);
    ck_assert_int_eq(c.info.is_still_image, 1);
    ck_assert_int_eq(memcmp(c.rgb, f, 37 * 21 * 3), 0);
    clip_free(&c);
    /* none at all is an error */
    out = open_out(tp("none.png"), &o);
    ck_assert_int_eq(bsq_media_out_close(out, &err), BSQ_ERR_INVALID_ARGUMENT);
    free(f);
}
END_TEST

START_TEST(test_png_sequence_odd)
{
    bsq_media_out_options o;
    bsq_media_out_options_init(&o, 721, 403);
    const char *pattern = tp("out%04d.png");
    uint8_t *frames = write_clip(pattern, &o, 3, 1);
    struct stat sb;
    ck_assert_int_eq(stat(tp("out0001.png"), &sb), 0);
    ck_assert_int_eq(stat(tp("out0003.png"), &sb), 0);
    ck_assert_int_ne(stat(tp("out0004.png"), &sb), 0);
    ck_assert_int_ne(stat(tp("out0000.png"), &sb), 0);
    clip c;
    read_clip(pattern, &c);
    ck_assert_int_eq(c.info.width, 721);
    ck_assert_int_eq(c.info.height, 403);
    ck_assert_int_eq(c.n, 3);
    ck_assert_int_eq(memcmp(c.rgb, frames, frame_bytes(&c) * 3), 0);
    clip_free(&c);
    free(frames);
}
END_TEST

START_TEST(test_y4m_444_odd)
{
    bsq_media_out_options o;
    bsq_media_out_options_init(&o, 721, 403);
    o.chroma = 444;
    const char *path = tp("odd444.y4m");
    uint8_t *frames = write_clip(path, &o, 3, 1);
    size_t len = 0;
    char *head = read_file(path, &len);
    ck_assert_ptr_nonnull(head);
    ck_assert_msg(strncmp(head, "YUV4MPEG2 W721 H403 F25:1 Ip A0:0 C444 ", 39) == 0, "%.60s",
                  head);
    char *eol = strchr(head, '\n');
    ck_assert_ptr_nonnull(eol);
    ck_assert_uint_eq(len, (size_t)(eol - head + 1) + 3 * (6 + 721 * 403 * 3));
    free(head);
    clip c;
    read_clip(path, &c);
    ck_assert_int_eq(c.info.width, 721);
    ck_assert_int_eq(c.info.height, 403);
    ck_assert_int_eq(c.n, 3);
    /* 8-bit limited-range YCbCr: every channel within 2 of the original */
    expect_close("y4m 4:4:4", c.rgb, frames, frame_bytes(&c) * 3, 2, 0.6);
    clip_free(&c);
    free(frames);
}
END_TEST

START_TEST(test_y4m_420_and_pipes)
{
    bsq_media_out_options o;
    bsq_media_out_options_init(&o, 95, 61); /* odd: chroma rounds up */
    o.frame_rate = (bsq_rational){30000, 1001};
    o.color_range = AVCOL_RANGE_JPEG;
    const char *path = tp("smooth.y4m");
    uint8_t *frames = write_clip(path, &o, 4, 0);
    clip c;
    read_clip(path, &c);
    ck_assert_int_eq(c.n, 4);
    ck_assert_int_eq(c.info.width, 95);
    ck_assert_int_eq(c.info.frame_rate.num, 30000);
    ck_assert_int_eq(c.info.frame_rate.den, 1001);
    ck_assert_int_eq(c.info.color_range, AVCOL_RANGE_JPEG);
    expect_close("y4m 4:2:0 smooth", c.rgb, frames, frame_bytes(&c) * 4, 6, 1.0);

    /* "-": y4m to stdout, byte for byte the same as the file */
    const char *piped = tp("piped.y4m");
    int saved = dup(STDOUT_FILENO);
    int fd = open(piped, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert(saved >= 0 && fd >= 0);
    fflush(stdout);
    dup2(fd, STDOUT_FILENO);
    close(fd);
    bsq_media_out *out = open_out("-", &o);
    ck_assert_str_eq(bsq_media_out_kind(out), "y4m");
    size_t fb = frame_bytes(&c);
    for (int i = 0; i < 4; i++)
        write_ok(out, frames + fb * (size_t)i, 95, BSQ_MEDIA_NOPTS);
    close_ok(out);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    size_t la = 0, lb = 0;
    void *a = read_file(path, &la), *b = read_file(piped, &lb);
    ck_assert(a && b && la == lb && memcmp(a, b, la) == 0);
    free(a);
    free(b);

    /* Matroska streams to a pipe too */
    const char *mkv = tp("piped.mkv");
    saved = dup(STDOUT_FILENO);
    fd = open(mkv, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert(saved >= 0 && fd >= 0);
    dup2(fd, STDOUT_FILENO);
    close(fd);
    o.format = "mkv";
    o.chroma = 444;
    o.crf = 0;
    o.preset = "ultrafast";
    out = open_out("-", &o);
    for (int i = 0; i < 4; i++)
        write_ok(out, frames + fb * (size_t)i, 95, BSQ_MEDIA_NOPTS);
    close_ok(out);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    clip m;
    read_clip(mkv, &m);
    ck_assert_int_eq(m.n, 4);
    expect_close("mkv on a pipe", m.rgb, frames, fb * 4, 2, 0.6);
    clip_free(&m);
    clip_free(&c);
    free(frames);
}
END_TEST

START_TEST(test_x264_lossless_odd)
{
    bsq_media_out_options o;
    bsq_media_out_options_init(&o, 721, 403);
    o.crf = 0;
    o.preset = "ultrafast";
    const char *path = tp("odd.mkv");
    bsq_media_out *probe = open_out(path, &o);
    ck_assert_int_eq(bsq_media_out_chroma(probe), 444); /* odd size: 4:4:4 keeps every pixel */
    ck_assert_str_eq(bsq_media_out_kind(probe), "mkv");
    bsq_media_out_abort(probe);
    uint8_t *frames = write_clip(path, &o, 3, 1);
    clip c;
    read_clip(path, &c);
    ck_assert_int_eq(c.info.width, 721);
    ck_assert_int_eq(c.info.height, 403);
    ck_assert_int_eq(c.n, 3);
    ck_assert_str_eq(c.info.pix_fmt, "yuv444p");
    expect_close("x264 lossless 4:4:4", c.rgb, frames, frame_bytes(&c) * 3, 2, 0.6);
    clip_free(&c);
    free(frames);

    /* 4:2:0 asked for an odd size is refused, not silently cropped */
    o.chroma = 420;
    bsq_error err = {0};
    bsq_media_out *out = NULL;
    ck_assert_int_eq(bsq_media_out_open(tp("odd420.mp4"), &o, &out, &err),
                     BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(out);
}
END_TEST

START_TEST(test_x264_tags_and_pts)
{
    /* BT.709 limited in MP4, default CRF, 4:2:0, VFR pts */
    bsq_media_out_options o;
    bsq_media_out_options_init(&o, 128, 96); /* preset medium: B-frames */
    o.colorspace = AVCOL_SPC_BT709;
    o.color_primaries = AVCOL_PRI_BT709;
    o.color_trc = AVCOL_TRC_BT709;
    o.color_range = AVCOL_RANGE_MPEG;
    o.time_base = (bsq_rational){1, 25};
    o.sample_aspect_ratio = (bsq_rational){4, 3};
    const int64_t pts[] = {0, 1, 3, 7, 8, 12};
    const int n = 6;
    const char *names[] = {"tags.mp4", "tags.mkv", "tags.mov"};
    for (int k = 0; k < 3; k++) {
        bsq_media_out *out = open_out(tp(names[k]), &o);
        ck_assert_int_eq(bsq_media_out_chroma(out), 420);
        uint8_t *fr[6];
        for (int i = 0; i < n; i++) {
            fr[i] = synth(128, 96, i, 0);
            write_ok(out, fr[i], 128, pts[i]);
        }
        bsq_error err = {0};
        ck_assert_int_eq(bsq_media_out_write(out, fr[0], 128 * 3, 12, &err),
                         BSQ_ERR_INVALID_ARGUMENT); /* not after the last */
        close_ok(out);
        clip c;
        read_clip(tp(names[k]), &c);
        ck_assert_int_eq(c.n, n);
        ck_assert_int_eq(c.info.colorspace, AVCOL_SPC_BT709);
        ck_assert_int_eq(c.info.color_primaries, AVCOL_PRI_BT709);
        ck_assert_int_eq(c.info.color_trc, AVCOL_TRC_BT709);
        ck_assert_int_eq(c.info.color_range, AVCOL_RANGE_MPEG);
        ck_assert_int_eq(c.info.sample_aspect_ratio.num * 3, c.info.sample_aspect_ratio.den * 4);
        for (int i = 0; i < n; i++) {
            /* pts in seconds equal, relative to the first */
            int64_t a = (c.pts[i] - c.pts[0]) * c.info.time_base.num * 25;
            ck_assert_msg(a == pts[i] * c.info.time_base.den, "%s: frame %d at %lld/%d s",
                          names[k], i, (long long)(c.pts[i] - c.pts[0]) * c.info.time_base.num,
                          c.info.time_base.den);
            expect_close(names[k], c.rgb + frame_bytes(&c) * (size_t)i, fr[i], frame_bytes(&c),
                         12, 1.5);
            free(fr[i]);
        }
        clip_free(&c);
    }
}
END_TEST

START_TEST(test_roundtrip_keeps_colour)
{
    /* full-range BT.2020: reader info -> writer options -> reader */
    bsq_media_out_options o;
    bsq_media_out_options_init(&o, 64, 48);
    o.crf = 0;
    o.preset = "ultrafast";
    o.chroma = 444;
    o.colorspace = AVCOL_SPC_BT2020_NCL;
    o.color_primaries = AVCOL_PRI_BT2020;
    o.color_trc = AVCOL_TRC_SMPTE2084;
    o.color_range = AVCOL_RANGE_JPEG;
    uint8_t *frames = write_clip(tp("c2020.mkv"), &o, 2, 1);
    clip a;
    read_clip(tp("c2020.mkv"), &a);
    ck_assert_int_eq(a.info.matrix_used, AVCOL_SPC_BT2020_NCL);
    ck_assert_int_eq(a.info.full_range_used, 1);
    /* full range 4:4:4 8-bit: within 1-2 */
    expect_close("bt2020 full", a.rgb, frames, frame_bytes(&a) * 2, 2, 0.6);

    bsq_media_out_options o2;
    bsq_media_out_options_from_info(&o2, &a.info);
    o2.crf = 0;
    o2.preset = "ultrafast";
    o2.chroma = 444;
    bsq_media_out *out = open_out(tp("c2020b.mkv"), &o2);
    for (int i = 0; i < a.n; i++)
        write_ok(out, a.rgb + frame_bytes(&a) * (size_t)i, 64, a.pts[i]);
    close_ok(out);
    clip b;
    read_clip(tp("c2020b.mkv"), &b);
    ck_assert_int_eq(b.info.colorspace, AVCOL_SPC_BT2020_NCL);
    ck_assert_int_eq(b.info.color_primaries, AVCOL_PRI_BT2020);
    ck_assert_int_eq(b.info.color_trc, AVCOL_TRC_SMPTE2084);
    ck_assert_int_eq(b.info.color_range, AVCOL_RANGE_JPEG);
    expect_close("bt2020 second pass", b.rgb, a.rgb, frame_bytes(&a) * 2, 2, 0.6);
    clip_free(&a);
    clip_free(&b);
    free(frames);
}
END_TEST

/* Every output kind to /dev/full fails, at a write or at close. */
static void expect_full_disk(const char *format)
{
    bsq_media_out_options o;
    bsq_media_out_options_init(&o, 64, 48);
    o.format = format;
    o.preset = "ultrafast";
    bsq_error err = {0};
    bsq_media_out *out = NULL;
    bsq_status st = bsq_media_out_open("/dev/full", &o, &out, &err);
    uint8_t *f = synth(64, 48, 0, 1);
    for (int i = 0; st == BSQ_OK && i < 30; i++)
        st = bsq_media_out_write(out, f, 64 * 3, BSQ_MEDIA_NOPTS, &err);
    if (out) {
        bsq_status st2 = bsq_media_out_close(out, st == BSQ_OK ? &err : NULL);
        if (st == BSQ_OK)
            st = st2;
    }
    free(f);
    ck_assert_msg(st == BSQ_ERR_IO, "%s to /dev/full: status %d (%s)", format, st, err.message);
    ck_assert_msg(strstr(err.message, "No space left") != NULL, "%s: %s", format, err.message);
}

START_TEST(test_dev_full)
{
    if (access("/dev/full", W_OK) != 0) {
        fprintf(stderr, "check_media: test_dev_full skipped: no /dev/full\n");
        return;
    }
    expect_full_disk("y4m");
    expect_full_disk("mkv");
    expect_full_disk("mp4");
    expect_full_disk("png");
}
END_TEST

START_TEST(test_write_errors)
{
    bsq_media_out_options o;
    bsq_media_out_options_init(&o, 64, 48);
    bsq_error err = {0};
    bsq_media_out *out = NULL;
    ck_assert_int_eq(bsq_media_out_open(tp("x.avi"), &o, &out, &err), BSQ_ERR_UNSUPPORTED);
    ck_assert_int_eq(bsq_media_out_open(tp("noext"), &o, &out, &err), BSQ_ERR_UNSUPPORTED);
    ck_assert_int_eq(bsq_media_out_open("-", &(bsq_media_out_options){.width = 8, .height = 8,
                                                                     .format = "mp4"},
                                        &out, &err),
                     BSQ_ERR_UNSUPPORTED);
    ck_assert_int_eq(bsq_media_out_open("/nonexistent/dir/x.y4m", &o, &out, &err), BSQ_ERR_IO);
    ck_assert_int_eq(bsq_media_out_open("/nonexistent/dir/x.mkv", &o, &out, &err), BSQ_ERR_IO);
    ck_assert_ptr_null(out);
    o.width = 0;
    ck_assert_int_eq(bsq_media_out_open(tp("x.y4m"), &o, &out, &err), BSQ_ERR_INVALID_ARGUMENT);
    o.width = 64;
    o.chroma = 422;
    ck_assert_int_eq(bsq_media_out_open(tp("x.y4m"), &o, &out, &err), BSQ_ERR_INVALID_ARGUMENT);
    o.chroma = 0;
    out = open_out(tp("x.y4m"), &o);
    uint8_t *f = synth(64, 48, 0, 0);
    ck_assert_int_eq(bsq_media_out_write(out, f, 10, 0, &err), BSQ_ERR_INVALID_ARGUMENT);
    write_ok(out, f, 64, 0);
    close_ok(out);
    free(f);
    ck_assert_int_eq(bsq_media_out_close(NULL, &err), BSQ_OK);
    bsq_media_out_abort(NULL);
    bsq_media_in_close(NULL);
}
END_TEST

static Suite *media_suite(void)
{
    Suite *s = suite_create("media");
    TCase *rd = tcase_create("reader");
    tcase_set_timeout(rd, 120);
    tcase_add_test(rd, test_read_odd_10bit);
    tcase_add_test(rd, test_read_mp4);
    tcase_add_test(rd, test_read_rotation);
    tcase_add_test(rd, test_read_stills);
    tcase_add_test(rd, test_read_exif_orientation);
    tcase_add_test(rd, test_read_colour);
    tcase_add_test(rd, test_read_stdin);
    tcase_add_test(rd, test_read_errors);
    suite_add_tcase(s, rd);
    TCase *wr = tcase_create("writer");
    tcase_set_timeout(wr, 120);
    tcase_add_test(wr, test_png_single);
    tcase_add_test(wr, test_png_sequence_odd);
    tcase_add_test(wr, test_y4m_444_odd);
    tcase_add_test(wr, test_y4m_420_and_pipes);
    tcase_add_test(wr, test_x264_lossless_odd);
    tcase_add_test(wr, test_x264_tags_and_pts);
    tcase_add_test(wr, test_roundtrip_keeps_colour);
    tcase_add_test(wr, test_dev_full);
    tcase_add_test(wr, test_write_errors);
    suite_add_tcase(s, wr);
    return s;
}

int main(void)
{
    /* quiet libx264's statistics; errors still show */
    av_log_set_level(AV_LOG_ERROR);
    make_inputs();
    SRunner *sr = srunner_create(media_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    remove_inputs();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
