/* Media input and output for the bsqcodec CLI: FFmpeg (libavformat,
 * libavcodec, libswscale) behind a small interface of interleaved RGB24
 * frames (8 bits, full range), which is what libbsq's _rgb8 calls take.
 *
 * This header does not include FFmpeg's, so the CLI can use it without them;
 * colour fields hold FFmpeg's AVCOL_* code points (the ITU-T H.273 numbers)
 * as plain ints.
 *
 * Nothing here touches FFmpeg's process-wide state (log level, callbacks):
 * that is the CLI's business. */
#ifndef BSQ_MEDIA_H
#define BSQ_MEDIA_H

#include <stddef.h>
#include <stdint.h>

#include "bsq.h"

typedef struct bsq_rational {
    int num, den;
} bsq_rational;

/* A pts meaning "none": the writer then places the frame one frame
 * duration (at the frame rate) after the previous one. */
#define BSQ_MEDIA_NOPTS INT64_MIN

/* ------------------------------------------------------------------------ */
/* Reader                                                                    */

typedef struct bsq_media_info {
    int width, height;               /* of the RGB frames read: rotation applied */
    int coded_width, coded_height;   /* as decoded, before rotation */
    bsq_rational time_base;          /* of the pts returned by bsq_media_in_read */
    bsq_rational avg_frame_rate;     /* from the container; 0/1 when unknown */
    bsq_rational r_frame_rate;       /* FFmpeg's guess of the base rate; 0/1 when unknown */
    bsq_rational frame_rate;         /* best guess (av_guess_frame_rate), else 25/1 */
    bsq_rational sample_aspect_ratio;/* of the frames read (swapped by 90/270); 0/1 unknown */
    /* Colour description as tagged in the source (AVCOL_PRI_*, AVCOL_TRC_*,
     * AVCOL_SPC_*, AVCOL_RANGE_*; 2/2/2/0 when untagged). */
    int color_primaries, color_trc, colorspace, color_range;
    /* What the conversion to RGB actually used: the matrix (AVCOL_SPC_*;
     * the tag, or BT.601 for SD and BT.709 for HD when untagged;
     * AVCOL_SPC_RGB for RGB and palette sources) and whether samples were
     * taken as full range (tag, else the pixel format: yuvj and gray full). */
    int matrix_used;
    int full_range_used;
    int rotation;      /* clockwise degrees applied for display: 0, 90, 180, 270 */
    int mirrored;      /* 1 when the display matrix also mirrors (applied too) */
    int64_t frame_count; /* container's count (nb_frames), 1 for a still, 0 unknown */
    int is_still_image;  /* a single picture (PNG, JPEG, ... file), not a sequence */
    int is_rgb;          /* source samples are RGB or palette: no matrix involved */
    int has_alpha;       /* the source has alpha; it is dropped, not composited */
    int bit_depth;       /* bits per component of the source */
    char pix_fmt[32];    /* FFmpeg names, for messages */
    char codec[32];
    char format[32];
} bsq_media_info;

typedef struct bsq_media_in_options {
    const char *format;  /* demuxer to force (FFmpeg's name); NULL: probe, or
                            "yuv4mpegpipe" when reading "-" */
    int threads;         /* decoder threads; 0: FFmpeg's choice */
    int no_autorotate;   /* 1: frames as stored; rotation still reported */
} bsq_media_in_options;

typedef struct bsq_media_in bsq_media_in;

/* Opens `path` ("-": y4m on stdin) and decodes the first frame, so a file
 * with no decodable video fails here. Only the file and pipe protocols are
 * allowed (playlists cannot reach the network). `opts` may be NULL. */
bsq_status bsq_media_in_open(const char *path, const bsq_media_in_options *opts,
                             bsq_media_in **out, bsq_error *err);
const bsq_media_info *bsq_media_in_info(const bsq_media_in *in);
/* Reads the next frame into `rgb` (info.height rows of info.width * 3 bytes,
 * `stride` bytes apart) and its pts in info.time_base (strictly increasing:
 * a missing or non-increasing timestamp becomes the previous one plus a
 * frame duration). Returns BSQ_OK with *got_frame = 1, or BSQ_OK with
 * *got_frame = 0 at the end of the stream (rgb untouched); any other status
 * is an error. A frame whose size or format changes mid-stream is scaled to
 * the first frame's size. `pts` may be NULL. */
bsq_status bsq_media_in_read(bsq_media_in *in, uint8_t *rgb, size_t stride,
                             int64_t *pts, int *got_frame, bsq_error *err);
void bsq_media_in_close(bsq_media_in *in);

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */

/* Start from bsq_media_out_options_init or _from_info: a zeroed struct
 * means crf 0 (lossless) and PNG numbering from 0. */
typedef struct bsq_media_out_options {
    int width, height;
    /* "y4m", "mp4", "mkv", "mov" or "png" (a single image, or a sequence
     * when the name holds a %d pattern); NULL: from the name's extension
     * (.y4m, .mp4/.m4v, .mkv, .mov, .png), and "-" is y4m on stdout. */
    const char *format;
    bsq_rational frame_rate;          /* 0/0: 25/1 */
    bsq_rational time_base;           /* of the pts given to write; 0/0: 1/frame_rate */
    bsq_rational sample_aspect_ratio; /* 0/1: unknown */
    /* Colour description (AVCOL_*) to convert with and tag. An unspecified
     * (or RGB) matrix becomes BT.601 for SD and BT.709 for HD, an
     * unspecified range limited; both are then tagged explicitly. Primaries
     * and transfer are only tagged. */
    int color_primaries, color_trc, colorspace, color_range;
    /* 420 or 444 for YUV outputs. 0: 420, except x264 with an odd width or
     * height, which gets 444 since 4:2:0 H.264 cannot code odd sizes. */
    int chroma;
    float crf;           /* x264 quality, 0 = lossless; default 18 */
    const char *preset;  /* x264 preset; NULL: "medium" */
    int start_number;    /* first number of a PNG sequence; default 1 */
    int threads;         /* encoder threads; 0: FFmpeg's choice */
} bsq_media_out_options;

/* Defaults for a width x height output (everything else unknown). */
void bsq_media_out_options_init(bsq_media_out_options *opts, int width, int height);
/* Defaults carrying over what a reader found: size, rates, aspect, and the
 * colour description (matrix and range only for YUV sources, where the
 * matrix is the one the reader converted with, so a round trip through
 * these two layers keeps colours). */
void bsq_media_out_options_from_info(bsq_media_out_options *opts,
                                     const bsq_media_info *info);

typedef struct bsq_media_out bsq_media_out;

/* Creates the output (files are written in place; the caller handles
 * temporary names). */
bsq_status bsq_media_out_open(const char *path, const bsq_media_out_options *opts,
                              bsq_media_out **out, bsq_error *err);
/* Writes one RGB24 frame (height rows of width * 3 bytes, `stride` apart)
 * at `pts` (in opts.time_base, strictly increasing; BSQ_MEDIA_NOPTS: next
 * frame at the frame rate). y4m ignores pts (it has only a frame rate). A
 * single .png takes exactly one frame. */
bsq_status bsq_media_out_write(bsq_media_out *out, const uint8_t *rgb,
                               size_t stride, int64_t pts, bsq_error *err);
/* Flushes the encoder, finishes the file and frees everything, reporting
 * any write error (full disk, ...). Must be called for the output to be
 * complete; NULL is a no-op. */
bsq_status bsq_media_out_close(bsq_media_out *out, bsq_error *err);
/* Frees without finishing (on an error path). */
void bsq_media_out_abort(bsq_media_out *out);
/* The kind chosen ("y4m", "mp4", "mkv", "mov", "png", "png-sequence") and
 * the chroma format written (420, 444; 0 for PNG). */
const char *bsq_media_out_kind(const bsq_media_out *out);
int bsq_media_out_chroma(const bsq_media_out *out);

/* ------------------------------------------------------------------------ */
/* Shared helpers                                                            */

/* The matrix to use for AVCOL_SPC_* `colorspace` at this size: tagged
 * matrices swscale knows are kept, anything else becomes BT.601
 * (AVCOL_SPC_SMPTE170M) below 1280x577 and BT.709 (AVCOL_SPC_BT709) from
 * there on, as players do. */
int bsq_media_guess_matrix(int colorspace, int width, int height);
/* av_strerror into the caller's buffer (thread-safe: no static storage);
 * returns buf. */
const char *bsq_media_strerror(int averror, char *buf, size_t size);
/* bsq_fail with "<message>: <FFmpeg's text for averror>" and a status that
 * fits the code (ENOMEM: NOMEM, INVALIDDATA: FORMAT, *_NOT_FOUND and
 * PATCHWELCOME: UNSUPPORTED, EINVAL: INVALID_ARGUMENT, else IO). */
bsq_status bsq_media_fail_av(bsq_error *err, int averror, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
