/* The .bsq container: writer and reader (doc/bsq-format.md). */
#include "codec/container.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <zlib.h>

#include "error.h"

/* ------------------------------------------------------------------------ */
/* Format constants (doc/bsq-format.md)                                      */

static const uint8_t file_magic[8] = {0x89, 'B', 'S', 'Q', '\r', '\n', 0x1a, '\n'};
static const uint8_t chunk_sync[4] = {'B', 'S', 'Q', 'C'};

/* Frame numbers stay below this, so first_frame + count never overflows. */
#define MAX_FRAMES (UINT64_C(1) << 48)
#define GOP_FIXED_SIZE 24     /* payload offset, count, first frame, flags, reserved */
#define INDEX_HEAD_SIZE 8     /* entry count, entry size */
#define INDEX_ENTRY_SIZE 40   /* what version 1.0 writes */
#define INDEX_ENTRY_MAX 1024  /* the largest entry size a reader accepts */
#define FOOTER_BODY_SIZE 16   /* index offset, frame count */
#define SCAN_WINDOW 65536     /* bytes examined per step when resynchronising */

/* Header field offsets (version 1.0). */
enum {
    H_MAJOR = 8, H_MINOR = 10, H_SIZE = 12, H_FLAGS = 16,
    H_WIDTH = 20, H_HEIGHT = 24, H_TB_NUM = 28, H_TB_DEN = 32,
    H_FR_NUM = 36, H_FR_DEN = 40, H_SAR_NUM = 44, H_SAR_DEN = 48,
    H_PRIMARIES = 52, H_TRANSFER = 53, H_MATRIX = 54, H_RANGE = 55,
    H_ROTATION = 56, H_FRAME_COUNT = 64,
    H_L = 72, H_NUM_FRAMES = 74, H_GRID_H = 76, H_GRID_W = 78,
    H_TILES_Y = 80, H_TILES_X = 82, H_TOKEN_W = 84, H_TOKEN_H = 88,
    H_PRIOR_NAME = 96, H_TOK_FP = 112, H_PRIOR_FP = 144,
    H_CRC = BSQ_FILE_HEADER_SIZE - 4
};

/* ------------------------------------------------------------------------ */
/* Little-endian fields and CRC-32                                           */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

/* zlib's crc32 takes a uInt length: feed large buffers in pieces. */
static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n)
{
    while (n > 0) {
        uInt k = n > (1u << 30) ? (uInt)(1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, p, k);
        p += k;
        n -= k;
    }
    return crc;
}
static uint32_t crc_of(const uint8_t *p, size_t n) { return crc_update(0, p, n); }

/* Whether a stored CRC matches the bytes. BSQ_FUZZ_IGNORE_CRC (fuzzing
 * builds only, never a product) accepts any value, so that a fuzzer can
 * reach the checks that lie behind the CRCs. */
static int crc_matches(const uint8_t *p, size_t n, uint32_t stored)
{
#ifdef BSQ_FUZZ_IGNORE_CRC
    (void)crc_of(p, n);
    (void)stored;
    return 1;
#else
    return crc_of(p, n) == stored;
#endif
}

/* A chunk type as printable text for messages. */
static void fourcc_text(uint32_t t, char out[5])
{
    for (int i = 0; i < 4; i++) {
        unsigned c = (t >> (8 * i)) & 0xff;
        out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[4] = 0;
}

/* ------------------------------------------------------------------------ */
/* Stream information                                                        */

void bsq_hex(const uint8_t *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = 0;
}

uint64_t bsq_stream_info_tokens_per_frame(const bsq_stream_info *info)
{
    if (info->tiles_y <= 0 || info->tiles_x <= 0 || info->grid_h <= 0 || info->grid_w <= 0)
        return 0;
    return (uint64_t)info->tiles_y * (uint64_t)info->tiles_x * (uint64_t)info->grid_h *
           (uint64_t)info->grid_w;
}

/* Length of a prior name, or -1 when it is not 1..15 printable ASCII
 * characters followed by a NUL. */
static int prior_name_length(const char *name)
{
    for (int i = 0; i < BSQ_PRIOR_NAME_SIZE; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == 0)
            return i > 0 ? i : -1;
        if (c < 0x21 || c > 0x7e)
            return -1;
    }
    return -1;
}

bsq_status bsq_stream_info_validate(const bsq_stream_info *in, bsq_status code,
                                    bsq_error *err)
{
    const char *what = code == BSQ_ERR_FORMAT ? "header at offset 0: " : "";
    if (in->width < 1 || in->width > BSQ_MAX_DIMENSION || in->height < 1 ||
        in->height > BSQ_MAX_DIMENSION)
        return bsq_fail(err, code, "%spicture size %ux%u out of range (1..%u)", what,
                        (unsigned)in->width, (unsigned)in->height, BSQ_MAX_DIMENSION);
    if (in->time_base_num == 0 || in->time_base_den == 0)
        return bsq_fail(err, code, "%stime base %u/%u is not positive", what,
                        (unsigned)in->time_base_num, (unsigned)in->time_base_den);
    if (in->rotation >= 360)
        return bsq_fail(err, code, "%srotation %u is not in 0..359 degrees", what,
                        (unsigned)in->rotation);
    if (in->frame_count >= MAX_FRAMES)
        return bsq_fail(err, code, "%sframe count %llu too large", what,
                        (unsigned long long)in->frame_count);
    if (in->L < 1 || in->L > 64)
        return bsq_fail(err, code, "%sL = %d bits per token (1..64 allowed)", what, in->L);
    if (in->num_frames < 1 || in->num_frames > 65535)
        return bsq_fail(err, code, "%s%d frames per GOP (1..65535 allowed)", what,
                        in->num_frames);
    if (in->grid_h < 1 || in->grid_h > 65535 || in->grid_w < 1 || in->grid_w > 65535 ||
        in->tiles_y < 1 || in->tiles_y > 65535 || in->tiles_x < 1 || in->tiles_x > 65535)
        return bsq_fail(err, code, "%stoken grid %dx%d in %dx%d tiles out of range", what,
                        in->grid_w, in->grid_h, in->tiles_x, in->tiles_y);
    if (bsq_stream_info_tokens_per_frame(in) > BSQ_MAX_TOKENS_PER_FRAME)
        return bsq_fail(err, code, "%s%llu tokens per frame (at most %u)", what,
                        (unsigned long long)bsq_stream_info_tokens_per_frame(in),
                        BSQ_MAX_TOKENS_PER_FRAME);
    if (in->token_width < 1 || (unsigned)in->token_width > BSQ_MAX_DIMENSION ||
        in->token_height < 1 || (unsigned)in->token_height > BSQ_MAX_DIMENSION)
        return bsq_fail(err, code, "%stoken image size %dx%d out of range (1..%u)", what,
                        in->token_width, in->token_height, BSQ_MAX_DIMENSION);
    if (prior_name_length(in->prior_name) < 0)
        return bsq_fail(err, code, "%sprior name is not 1..15 printable ASCII characters",
                        what);
    return BSQ_OK;
}

bsq_status bsq_stream_info_check_models(const bsq_stream_info *info,
                                        const uint8_t *tokenizer_fp, const char *prior_name,
                                        const uint8_t *prior_fp, bsq_error *err)
{
    int same = 1;
    if (tokenizer_fp && memcmp(tokenizer_fp, info->tokenizer_fingerprint, BSQ_TOKENIZER_FP_SIZE))
        same = 0;
    if (prior_fp && memcmp(prior_fp, info->prior_fingerprint, BSQ_PRIOR_FP_SIZE))
        same = 0;
    if (prior_name && strncmp(prior_name, info->prior_name, BSQ_PRIOR_NAME_SIZE))
        same = 0;
    if (same)
        return BSQ_OK;
    char ft[2 * BSQ_TOKENIZER_FP_SIZE + 1], fp[2 * BSQ_PRIOR_FP_SIZE + 1];
    char mt[2 * BSQ_TOKENIZER_FP_SIZE + 1] = "(any)", mp[2 * BSQ_PRIOR_FP_SIZE + 1] = "(any)";
    bsq_hex(info->tokenizer_fingerprint, BSQ_TOKENIZER_FP_SIZE, ft);
    bsq_hex(info->prior_fingerprint, BSQ_PRIOR_FP_SIZE, fp);
    if (tokenizer_fp)
        bsq_hex(tokenizer_fp, BSQ_TOKENIZER_FP_SIZE, mt);
    if (prior_fp)
        bsq_hex(prior_fp, BSQ_PRIOR_FP_SIZE, mp);
    char name[BSQ_PRIOR_NAME_SIZE];
    memcpy(name, info->prior_name, sizeof name);
    name[sizeof name - 1] = 0;
    return bsq_fail(err, BSQ_ERR_MODEL,
                    "the file was made with other models: file has tokenizer %s, prior "
                    "\"%s\" %s; given tokenizer %s, prior \"%.15s\" %s",
                    ft, name, fp, mt, prior_name ? prior_name : "(any)", mp);
}

bsq_status bsq_stream_info_check_config(const bsq_stream_info *info, const bsq_config *c,
                                        bsq_error *err)
{
    if (c->L != info->L)
        return bsq_fail(err, BSQ_ERR_MODEL, "the file has %d-bit tokens, the model %d-bit",
                        info->L, c->L);
    if (c->patch_size <= 0 || c->image_height / c->patch_size != info->grid_h ||
        c->image_width / c->patch_size != info->grid_w)
        return bsq_fail(err, BSQ_ERR_MODEL,
                        "the file has %dx%d tokens per tile, the model %dx%d", info->grid_w,
                        info->grid_h, c->patch_size > 0 ? c->image_width / c->patch_size : 0,
                        c->patch_size > 0 ? c->image_height / c->patch_size : 0);
    return BSQ_OK;
}

/* A rational with a zero member is unknown: 0/0. */
static void normalise_ratio(uint32_t *num, uint32_t *den)
{
    if (*num == 0 || *den == 0)
        *num = *den = 0;
}

static void header_encode(const bsq_stream_info *in, uint8_t h[BSQ_FILE_HEADER_SIZE])
{
    memset(h, 0, BSQ_FILE_HEADER_SIZE); /* reserved fields are zero */
    memcpy(h, file_magic, sizeof file_magic);
    put16(h + H_MAJOR, BSQ_CONTAINER_VERSION_MAJOR);
    put16(h + H_MINOR, BSQ_CONTAINER_VERSION_MINOR);
    put32(h + H_SIZE, BSQ_FILE_HEADER_SIZE);
    put32(h + H_WIDTH, in->width);
    put32(h + H_HEIGHT, in->height);
    put32(h + H_TB_NUM, in->time_base_num);
    put32(h + H_TB_DEN, in->time_base_den);
    put32(h + H_FR_NUM, in->frame_rate_num);
    put32(h + H_FR_DEN, in->frame_rate_den);
    put32(h + H_SAR_NUM, in->sar_num);
    put32(h + H_SAR_DEN, in->sar_den);
    h[H_PRIMARIES] = in->color_primaries;
    h[H_TRANSFER] = in->color_transfer;
    h[H_MATRIX] = in->color_matrix;
    h[H_RANGE] = in->color_range;
    put16(h + H_ROTATION, in->rotation);
    put64(h + H_FRAME_COUNT, in->frame_count);
    h[H_L] = (uint8_t)in->L;
    put16(h + H_NUM_FRAMES, (uint16_t)in->num_frames);
    put16(h + H_GRID_H, (uint16_t)in->grid_h);
    put16(h + H_GRID_W, (uint16_t)in->grid_w);
    put16(h + H_TILES_Y, (uint16_t)in->tiles_y);
    put16(h + H_TILES_X, (uint16_t)in->tiles_x);
    put32(h + H_TOKEN_W, (uint32_t)in->token_width);
    put32(h + H_TOKEN_H, (uint32_t)in->token_height);
    memcpy(h + H_PRIOR_NAME, in->prior_name, (size_t)prior_name_length(in->prior_name));
    memcpy(h + H_TOK_FP, in->tokenizer_fingerprint, BSQ_TOKENIZER_FP_SIZE);
    memcpy(h + H_PRIOR_FP, in->prior_fingerprint, BSQ_PRIOR_FP_SIZE);
    put32(h + H_CRC, crc_of(h, H_CRC));
}

/* Decodes the version-1.0 fields of a header whose CRC has been checked
 * (h holds at least BSQ_FILE_HEADER_SIZE bytes; later fields are ignored). */
static void header_decode(const uint8_t *h, bsq_stream_info *o)
{
    memset(o, 0, sizeof *o);
    o->version_major = get16(h + H_MAJOR);
    o->version_minor = get16(h + H_MINOR);
    o->width = get32(h + H_WIDTH);
    o->height = get32(h + H_HEIGHT);
    o->time_base_num = get32(h + H_TB_NUM);
    o->time_base_den = get32(h + H_TB_DEN);
    o->frame_rate_num = get32(h + H_FR_NUM);
    o->frame_rate_den = get32(h + H_FR_DEN);
    normalise_ratio(&o->frame_rate_num, &o->frame_rate_den);
    o->sar_num = get32(h + H_SAR_NUM);
    o->sar_den = get32(h + H_SAR_DEN);
    normalise_ratio(&o->sar_num, &o->sar_den);
    o->color_primaries = h[H_PRIMARIES];
    o->color_transfer = h[H_TRANSFER];
    o->color_matrix = h[H_MATRIX];
    o->color_range = h[H_RANGE];
    o->rotation = get16(h + H_ROTATION);
    o->frame_count = get64(h + H_FRAME_COUNT);
    o->L = h[H_L];
    o->num_frames = get16(h + H_NUM_FRAMES);
    o->grid_h = get16(h + H_GRID_H);
    o->grid_w = get16(h + H_GRID_W);
    o->tiles_y = get16(h + H_TILES_Y);
    o->tiles_x = get16(h + H_TILES_X);
    /* token sizes beyond int range are clamped to fail validation */
    uint32_t tw = get32(h + H_TOKEN_W), th = get32(h + H_TOKEN_H);
    o->token_width = tw > BSQ_MAX_DIMENSION ? (int)BSQ_MAX_DIMENSION + 1 : (int)tw;
    o->token_height = th > BSQ_MAX_DIMENSION ? (int)BSQ_MAX_DIMENSION + 1 : (int)th;
    memcpy(o->prior_name, h + H_PRIOR_NAME, BSQ_PRIOR_NAME_SIZE);
    memcpy(o->tokenizer_fingerprint, h + H_TOK_FP, BSQ_TOKENIZER_FP_SIZE);
    memcpy(o->prior_fingerprint, h + H_PRIOR_FP, BSQ_PRIOR_FP_SIZE);
}

/* The 20-byte chunk header. */
static void chunk_header_encode(uint8_t h[BSQ_CHUNK_HEADER_SIZE], uint32_t type, uint32_t len)
{
    memcpy(h, chunk_sync, 4);
    put32(h + 4, type);
    put32(h + 8, len);
    put32(h + 12, 0); /* flags: reserved */
    put32(h + 16, crc_of(h, 16));
}

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */

struct bsq_writer {
    FILE *f;           /* or */
    int fd;
    int seekable;      /* the header can be patched in place */
    int64_t base;      /* output position of the header's first byte */
    int64_t written;   /* bytes of the stream written so far */
    bsq_stream_info info;
    uint64_t next_frame;
    int have_pts;
    int64_t last_pts;
    bsq_index_entry *index;
    size_t index_len, index_cap;
    bsq_status failed;  /* sticky: once a write fails, every call reports it */
    char failed_msg[sizeof(((bsq_error *)0)->message)];
};

static bsq_status writer_fail(bsq_writer *w, bsq_error *err, bsq_status code, const char *what,
                              int errnum)
{
    w->failed = code;
    snprintf(w->failed_msg, sizeof w->failed_msg, "writing the .bsq stream at offset %lld: %s: %s",
             (long long)w->written, what, strerror(errnum ? errnum : EIO));
    return bsq_fail(err, code, "%s", w->failed_msg);
}

static bsq_status writer_sticky(const bsq_writer *w, bsq_error *err)
{
    return bsq_fail(err, w->failed, "%s", w->failed_msg);
}

static bsq_status out_write(bsq_writer *w, const void *p, size_t n, bsq_error *err)
{
    if (n == 0)
        return BSQ_OK;
    if (w->f) {
        errno = 0;
        if (fwrite(p, 1, n, w->f) != n)
            return writer_fail(w, err, BSQ_ERR_IO, "write failed", errno);
    } else {
        const uint8_t *q = p;
        size_t left = n;
        while (left > 0) {
            ssize_t k = write(w->fd, q, left);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                return writer_fail(w, err, BSQ_ERR_IO, "write failed", k < 0 ? errno : ENOSPC);
            q += k;
            left -= (size_t)k;
        }
    }
    w->written += (int64_t)n;
    return BSQ_OK;
}

/* Flushed after every chunk, so a full disk is reported by the call that
 * wrote the chunk and a reader on a pipe gets whole GOPs promptly. */
static bsq_status out_flush(bsq_writer *w, bsq_error *err)
{
    if (w->f) {
        errno = 0;
        if (fflush(w->f) != 0 || ferror(w->f))
            return writer_fail(w, err, BSQ_ERR_IO, "flush failed", errno);
    }
    return BSQ_OK;
}

/* Writes one chunk whose body is the concatenation of parts. */
static bsq_status write_chunk_parts(bsq_writer *w, uint32_t type, const void *const *parts,
                                    const size_t *sizes, int nparts, bsq_error *err)
{
    if (w->failed)
        return writer_sticky(w, err);
    uint64_t len = 0;
    for (int i = 0; i < nparts; i++)
        len += sizes[i];
    if (len > BSQ_MAX_CHUNK_BODY)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "chunk of %llu bytes (at most %u)",
                        (unsigned long long)len, BSQ_MAX_CHUNK_BODY);
    uint8_t h[BSQ_CHUNK_HEADER_SIZE];
    chunk_header_encode(h, type, (uint32_t)len);
    bsq_status st = out_write(w, h, sizeof h, err);
    uint32_t crc = 0;
    for (int i = 0; i < nparts && st == BSQ_OK; i++) {
        crc = crc_update(crc, parts[i], sizes[i]);
        st = out_write(w, parts[i], sizes[i], err);
    }
    uint8_t c[4];
    put32(c, crc);
    if (st == BSQ_OK)
        st = out_write(w, c, 4, err);
    if (st == BSQ_OK)
        st = out_flush(w, err);
    return st;
}

/* Whether an output can be rewritten in place: a regular file (or a memory
 * stream), not opened for appending. */
static int fd_patchable(int fd)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !(S_ISREG(sb.st_mode) || S_ISBLK(sb.st_mode)))
        return 0;
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && !(fl & O_APPEND);
}

static bsq_status writer_open(FILE *f, int fd, const bsq_stream_info *info, bsq_writer **out,
                              bsq_error *err)
{
    *out = NULL;
    bsq_status st = bsq_stream_info_validate(info, BSQ_ERR_INVALID_ARGUMENT, err);
    if (st != BSQ_OK)
        return st;
    bsq_writer *w = calloc(1, sizeof *w);
    if (!w)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory for the .bsq writer");
    w->f = f;
    w->fd = fd;
    w->info = *info;
    w->info.version_major = BSQ_CONTAINER_VERSION_MAJOR;
    w->info.version_minor = BSQ_CONTAINER_VERSION_MINOR;
    normalise_ratio(&w->info.frame_rate_num, &w->info.frame_rate_den);
    normalise_ratio(&w->info.sar_num, &w->info.sar_den);
    if (f) {
        int n = fileno(f);
        off_t pos = ftello(f);
        w->seekable = pos >= 0 && (n < 0 || fd_patchable(n));
        w->base = pos >= 0 ? (int64_t)pos : 0;
    } else {
        off_t pos = lseek(fd, 0, SEEK_CUR);
        w->seekable = pos >= 0 && fd_patchable(fd);
        w->base = pos >= 0 ? (int64_t)pos : 0;
    }
    uint8_t h[BSQ_FILE_HEADER_SIZE];
    header_encode(&w->info, h);
    st = out_write(w, h, sizeof h, err);
    if (st == BSQ_OK)
        st = out_flush(w, err);
    if (st != BSQ_OK) {
        bsq_writer_abort(w);
        return st;
    }
    *out = w;
    return BSQ_OK;
}

bsq_status bsq_writer_open_file(FILE *f, const bsq_stream_info *info, bsq_writer **out,
                                bsq_error *err)
{
    if (!f || !info || !out)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_writer_open_file: NULL argument");
    return writer_open(f, -1, info, out, err);
}

bsq_status bsq_writer_open_fd(int fd, const bsq_stream_info *info, bsq_writer **out,
                              bsq_error *err)
{
    if (fd < 0 || !info || !out)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_writer_open_fd: bad argument");
    return writer_open(NULL, fd, info, out, err);
}

int64_t bsq_writer_offset(const bsq_writer *w) { return w->written; }
uint64_t bsq_writer_frames(const bsq_writer *w) { return w->next_frame; }

bsq_status bsq_writer_write_gop(bsq_writer *w, const bsq_gop *g, bsq_error *err)
{
    if (w->failed)
        return writer_sticky(w, err);
    if (g->frame_count < 1 || g->frame_count > (uint32_t)w->info.num_frames)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "GOP of %u frames (1..%d allowed)",
                        (unsigned)g->frame_count, w->info.num_frames);
    if (g->first_frame != w->next_frame)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "GOP starts at frame %llu, expected %llu",
                        (unsigned long long)g->first_frame, (unsigned long long)w->next_frame);
    if (w->next_frame + g->frame_count >= MAX_FRAMES)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "too many frames");
    if (!w->seekable && w->info.frame_count != 0 &&
        w->next_frame + g->frame_count > w->info.frame_count)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "more than the %llu frames the header declares, on an output that "
                        "cannot be rewritten",
                        (unsigned long long)w->info.frame_count);
    if (!g->pts || (g->payload_size > 0 && !g->payload))
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "GOP without pts or payload");
    for (uint32_t i = 0; i < g->frame_count; i++) {
        int64_t prev = i > 0 ? g->pts[i - 1] : w->last_pts;
        if ((i > 0 || w->have_pts) && g->pts[i] <= prev)
            return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                            "pts of frame %llu (%lld) not after the previous (%lld)",
                            (unsigned long long)(g->first_frame + i), (long long)g->pts[i],
                            (long long)prev);
    }
    size_t fixed = GOP_FIXED_SIZE + 8 * (size_t)g->frame_count;
    if (g->payload_size > BSQ_MAX_CHUNK_BODY - fixed)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "GOP payload of %zu bytes too large",
                        g->payload_size);
    if (w->index_len == w->index_cap) {
        size_t cap = w->index_cap ? 2 * w->index_cap : 64;
        bsq_index_entry *p = realloc(w->index, cap * sizeof *p);
        if (!p)
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory for the seek index");
        w->index = p;
        w->index_cap = cap;
    }
    uint8_t *head = malloc(fixed);
    if (!head)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    put32(head, (uint32_t)fixed); /* the payload follows the pts */
    put32(head + 4, g->frame_count);
    put64(head + 8, g->first_frame);
    put32(head + 16, g->flags);
    put32(head + 20, 0);
    for (uint32_t i = 0; i < g->frame_count; i++)
        put64(head + GOP_FIXED_SIZE + 8 * (size_t)i, (uint64_t)g->pts[i]);
    const void *parts[2] = {head, g->payload};
    size_t sizes[2] = {fixed, g->payload_size};
    int64_t offset = w->written;
    bsq_status st = write_chunk_parts(w, BSQ_CHUNK_GOP, parts, sizes, 2, err);
    free(head);
    if (st != BSQ_OK)
        return st;
    w->index[w->index_len++] = (bsq_index_entry){
        .offset = offset, .first_frame = g->first_frame, .frame_count = g->frame_count,
        .first_pts = g->pts[0], .last_pts = g->pts[g->frame_count - 1]};
    w->next_frame += g->frame_count;
    w->have_pts = 1;
    w->last_pts = g->pts[g->frame_count - 1];
    return BSQ_OK;
}

bsq_status bsq_writer_write_chunk(bsq_writer *w, uint32_t type, const void *body, size_t size,
                                  bsq_error *err)
{
    if (type == BSQ_CHUNK_GOP || type == BSQ_CHUNK_INDEX || type == BSQ_CHUNK_FOOTER) {
        char t[5];
        fourcc_text(type, t);
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "chunk type \"%s\" is written by the writer itself", t);
    }
    if (size > 0 && !body)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "chunk without a body");
    const void *parts[1] = {body};
    size_t sizes[1] = {size};
    return write_chunk_parts(w, type, parts, sizes, 1, err);
}

/* Rewrites the header with the final frame count. */
static bsq_status patch_header(bsq_writer *w, bsq_error *err)
{
    uint8_t h[BSQ_FILE_HEADER_SIZE];
    w->info.frame_count = w->next_frame;
    header_encode(&w->info, h);
    if (w->f) {
        errno = 0;
        if (fflush(w->f) != 0 || fseeko(w->f, (off_t)w->base, SEEK_SET) != 0 ||
            fwrite(h, 1, sizeof h, w->f) != sizeof h || fflush(w->f) != 0 ||
            fseeko(w->f, (off_t)(w->base + w->written), SEEK_SET) != 0)
            return writer_fail(w, err, BSQ_ERR_IO, "rewriting the header", errno);
        return BSQ_OK;
    }
    size_t done = 0;
    while (done < sizeof h) {
        ssize_t k = pwrite(w->fd, h + done, sizeof h - done, (off_t)(w->base + (int64_t)done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return writer_fail(w, err, BSQ_ERR_IO, "rewriting the header", k < 0 ? errno : EIO);
        done += (size_t)k;
    }
    return BSQ_OK;
}

bsq_status bsq_writer_close(bsq_writer *w, bsq_error *err)
{
    if (!w)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_writer_close: NULL writer");
    if (w->failed) {
        bsq_status st = writer_sticky(w, err);
        bsq_writer_abort(w);
        return st;
    }
    bsq_status st = BSQ_OK;
    /* The index and the footer. An index too large for one chunk (over 6.7
     * million GOPs) is left out with its footer: readers then scan. */
    uint64_t body_len = INDEX_HEAD_SIZE + (uint64_t)INDEX_ENTRY_SIZE * w->index_len;
    int64_t index_offset = w->written;
    if (body_len <= BSQ_MAX_CHUNK_BODY) {
        uint8_t *body = calloc(1, (size_t)body_len); /* reserved fields zero */
        if (!body)
            st = bsq_fail(err, BSQ_ERR_NOMEM, "out of memory for the seek index");
        if (st == BSQ_OK) {
            put32(body, (uint32_t)w->index_len);
            put32(body + 4, INDEX_ENTRY_SIZE);
            for (size_t i = 0; i < w->index_len; i++) {
                uint8_t *e = body + INDEX_HEAD_SIZE + INDEX_ENTRY_SIZE * i;
                const bsq_index_entry *x = &w->index[i];
                put64(e, (uint64_t)x->offset);
                put64(e + 8, x->first_frame);
                put64(e + 16, (uint64_t)x->first_pts);
                put64(e + 24, (uint64_t)x->last_pts);
                put32(e + 32, x->frame_count);
            }
            const void *parts[1] = {body};
            size_t sizes[1] = {(size_t)body_len};
            st = write_chunk_parts(w, BSQ_CHUNK_INDEX, parts, sizes, 1, err);
        }
        free(body);
        if (st == BSQ_OK) {
            uint8_t foot[FOOTER_BODY_SIZE];
            put64(foot, (uint64_t)index_offset);
            put64(foot + 8, w->next_frame);
            const void *fparts[1] = {foot};
            size_t fsizes[1] = {sizeof foot};
            st = write_chunk_parts(w, BSQ_CHUNK_FOOTER, fparts, fsizes, 1, err);
        }
    }
    /* the header's frame count */
    if (st == BSQ_OK && w->info.frame_count != w->next_frame) {
        if (w->seekable)
            st = patch_header(w, err);
        else if (w->info.frame_count != 0)
            st = bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                          "the header declares %llu frames but %llu were written, and the "
                          "output cannot be rewritten",
                          (unsigned long long)w->info.frame_count,
                          (unsigned long long)w->next_frame);
    }
    bsq_writer_abort(w);
    return st;
}

void bsq_writer_abort(bsq_writer *w)
{
    if (!w)
        return;
    free(w->index);
    free(w);
}

/* ------------------------------------------------------------------------ */
/* Reader input: memory, FILE* or fd, seekable or not, behind one window     */

enum src_kind { SRC_MEMORY, SRC_FILE, SRC_FD };

/* get(pos, n) makes stream bytes [pos, pos + n) available (fewer at the end).
 * Seekable inputs read at any position; streams only move forward and keep
 * the bytes from the last requested position on, so that a damaged chunk can
 * be rescanned for the next sync. Memory grows only as bytes arrive. */
typedef struct bsq_src {
    enum src_kind kind;
    const uint8_t *mem;
    FILE *f;
    int fd;
    int seekable;
    int64_t base;   /* input position of stream byte 0 (seekable FILE or fd) */
    int64_t size;   /* stream length when seekable, else -1 */
    int eof;        /* streams: the input has no more bytes */
    uint8_t *buf;
    size_t cap;
    int64_t wstart; /* stream offset of buf[0] */
    size_t wlen;    /* bytes valid in buf; for streams wstart + wlen is the input position */
} bsq_src;

static bsq_status src_reserve(bsq_src *s, size_t need, bsq_error *err)
{
    if (need <= s->cap)
        return BSQ_OK;
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : 2 * cap;
    uint8_t *p = realloc(s->buf, cap);
    if (!p)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory reading the .bsq stream (%zu bytes)",
                        cap);
    s->buf = p;
    s->cap = cap;
    return BSQ_OK;
}

/* Reads up to n bytes: at stream offset `at` (seekable) or next (streams). */
static bsq_status backend_read(bsq_src *s, int64_t at, uint8_t *dst, size_t n, size_t *got,
                               bsq_error *err)
{
    size_t done = 0;
    if (s->kind == SRC_FILE) {
        if (s->seekable && fseeko(s->f, (off_t)(s->base + at), SEEK_SET) != 0)
            return bsq_fail(err, BSQ_ERR_IO, "seeking to offset %lld: %s", (long long)at,
                            strerror(errno));
        errno = 0;
        done = fread(dst, 1, n, s->f);
        if (done < n) {
            if (ferror(s->f))
                return bsq_fail(err, BSQ_ERR_IO, "reading at offset %lld: %s",
                                (long long)(at + (int64_t)done), strerror(errno ? errno : EIO));
            if (!s->seekable)
                s->eof = 1;
        }
    } else {
        while (done < n) {
            ssize_t k = s->seekable
                            ? pread(s->fd, dst + done, n - done, (off_t)(s->base + at + (int64_t)done))
                            : read(s->fd, dst + done, n - done);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0)
                return bsq_fail(err, BSQ_ERR_IO, "reading at offset %lld: %s",
                                (long long)(at + (int64_t)done), strerror(errno));
            if (k == 0) {
                if (!s->seekable)
                    s->eof = 1;
                break;
            }
            done += (size_t)k;
        }
    }
    *got = done;
    return BSQ_OK;
}

static bsq_status src_get(bsq_src *s, int64_t pos, size_t n, const uint8_t **p, size_t *got,
                          bsq_error *err)
{
    *p = NULL;
    *got = 0;
    if (pos < 0)
        return BSQ_OK;
    if (s->seekable) {
        if (pos >= s->size)
            return BSQ_OK;
        if ((uint64_t)n > (uint64_t)(s->size - pos))
            n = (size_t)(s->size - pos); /* never allocate past the end of the input */
    }
    if (s->kind == SRC_MEMORY) {
        *p = s->mem + pos;
        *got = n;
        return BSQ_OK;
    }
    bsq_status st;
    if (s->seekable) {
        if (pos >= s->wstart && (uint64_t)(pos - s->wstart) + n <= s->wlen) {
            *p = s->buf + (pos - s->wstart);
            *got = n;
            return BSQ_OK;
        }
        size_t keep = 0; /* bytes already in the window from pos on */
        if (pos >= s->wstart && pos <= s->wstart + (int64_t)s->wlen) {
            keep = s->wlen - (size_t)(pos - s->wstart);
            if (keep > 0 && pos > s->wstart)
                memmove(s->buf, s->buf + (pos - s->wstart), keep);
        }
        s->wstart = pos;
        s->wlen = keep;
        if ((st = src_reserve(s, n, err)) != BSQ_OK)
            return st;
        size_t g;
        if ((st = backend_read(s, pos + (int64_t)keep, s->buf + keep, n - keep, &g, err)) != BSQ_OK)
            return st;
        s->wlen = keep + g;
        *p = s->buf;
        *got = s->wlen;
        return BSQ_OK;
    }
    /* a stream: drop what lies before pos, reading past it when needed */
    if (pos < s->wstart)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "cannot go back to offset %lld in a non-seekable input", (long long)pos);
    if (pos <= s->wstart + (int64_t)s->wlen) {
        size_t drop = (size_t)(pos - s->wstart);
        if (drop > 0 && s->wlen > drop)
            memmove(s->buf, s->buf + drop, s->wlen - drop);
        s->wlen -= drop;
        s->wstart = pos;
    } else {
        /* callers move forward through bytes they have asked for */
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "internal error: offset %lld skipped in a non-seekable input",
                        (long long)pos);
    }
    /* grow with the data that actually arrives: a length field alone never
     * makes the window larger than twice what was read, plus 64 KiB */
    while (s->wlen < n && !s->eof) {
        size_t step = n - s->wlen, lim = s->wlen > SCAN_WINDOW ? s->wlen : SCAN_WINDOW;
        if (step > lim)
            step = lim;
        if ((st = src_reserve(s, s->wlen + step, err)) != BSQ_OK)
            return st;
        size_t g;
        if ((st = backend_read(s, s->wstart + (int64_t)s->wlen, s->buf + s->wlen, step, &g, err)) !=
            BSQ_OK)
            return st;
        s->wlen += g;
    }
    *p = s->buf;
    *got = s->wlen < n ? s->wlen : n;
    return BSQ_OK;
}

/* ------------------------------------------------------------------------ */
/* Reader                                                                    */

/* A position in the chunk sequence and what the next GOP must continue. */
typedef struct cursor {
    int64_t pos;          /* offset of the next chunk */
    uint64_t next_frame;  /* the next GOP's first frame (strict), or lower bound */
    int have_pts;
    int64_t last_pts;
    int done;             /* reached the footer or the end of the input */
    int have_expect;      /* after a seek: the index entry the chunk must match */
    bsq_index_entry expect;
} cursor;

struct bsq_reader {
    bsq_src src;
    bsq_reader_options opt;
    bsq_stream_info info;
    int64_t header_size;
    cursor cur;
    int64_t *pts;         /* num_frames entries: the current GOP's timestamps */
    bsq_gop gop;
    int pending;          /* streams: gop holds the GOP the next call returns */
    uint64_t pending_from;/* the frame the stream stood at before that GOP */
    bsq_status sticky;    /* an error next_gop repeats until a seek */
    char sticky_msg[sizeof(((bsq_error *)0)->message)];
    int64_t reported_upto;/* chunk damage before this offset was already reported */
    uint64_t damage_count;
    /* the index */
    int index_loaded, index_from_footer;
    bsq_index_entry *index;
    size_t index_len, index_cap;
    bsq_status scan_status; /* strict mode: the damage that ended a scan */
    char scan_msg[sizeof(((bsq_error *)0)->message)];
};

/* Reports damage through the callback; chunk damage is reported once even
 * when a scan and a later read both pass over it. */
static void report(bsq_reader *r, int64_t offset, int chunk_damage, const char *msg)
{
    if (chunk_damage) {
        if (offset < r->reported_upto)
            return;
        r->reported_upto = offset + 1;
    }
    r->damage_count++;
    if (r->opt.on_damage)
        r->opt.on_damage(r->opt.opaque, offset, msg);
}

typedef enum chunk_result {
    CH_OK,       /* header and body intact */
    CH_END,      /* no byte at this position: a clean end of the input */
    CH_BAD,      /* no valid chunk header here (or truncated): the length is unknown */
    CH_BAD_BODY  /* the header is intact (type and length known), the body is not */
} chunk_result;

typedef struct chunk {
    uint32_t type, length;
    const uint8_t *body; /* valid until the next src_get */
} chunk;

/* Whether p (20 bytes at offset pos) is an intact chunk header that fits. */
static int chunk_header_ok(const bsq_reader *r, const uint8_t *p, int64_t pos)
{
    if (memcmp(p, chunk_sync, 4) != 0 || !crc_matches(p, 16, get32(p + 16)))
        return 0;
    uint32_t len = get32(p + 8);
    if (len > BSQ_MAX_CHUNK_BODY)
        return 0;
    if (r->src.seekable && (uint64_t)pos + BSQ_CHUNK_OVERHEAD + len > (uint64_t)r->src.size)
        return 0;
    return 1;
}

/* Reads the chunk at pos. Input errors are returned; damage is described in
 * *derr (with the offset) and classified in *res. */
static bsq_status read_chunk(bsq_reader *r, int64_t pos, chunk *c, chunk_result *res,
                             bsq_error *derr, bsq_error *err)
{
    const uint8_t *p;
    size_t got;
    char t[5];
    memset(c, 0, sizeof *c);
    bsq_status st = src_get(&r->src, pos, BSQ_CHUNK_HEADER_SIZE, &p, &got, err);
    if (st != BSQ_OK)
        return st;
    if (got == 0) {
        *res = CH_END;
        return BSQ_OK;
    }
    *res = CH_BAD;
    if (got < BSQ_CHUNK_HEADER_SIZE) {
        bsq_fail(derr, BSQ_ERR_FORMAT, "truncated chunk header at offset %lld (%zu of %d bytes)",
                 (long long)pos, got, BSQ_CHUNK_HEADER_SIZE);
        return BSQ_OK;
    }
    if (memcmp(p, chunk_sync, 4) != 0) {
        bsq_fail(derr, BSQ_ERR_FORMAT, "no chunk at offset %lld (bad sync bytes)", (long long)pos);
        return BSQ_OK;
    }
    if (!crc_matches(p, 16, get32(p + 16))) {
        bsq_fail(derr, BSQ_ERR_FORMAT, "chunk header CRC mismatch at offset %lld", (long long)pos);
        return BSQ_OK;
    }
    c->type = get32(p + 4);
    c->length = get32(p + 8);
    fourcc_text(c->type, t);
    if (c->length > BSQ_MAX_CHUNK_BODY) {
        bsq_fail(derr, BSQ_ERR_FORMAT, "\"%s\" chunk at offset %lld claims %u bytes (at most %u)",
                 t, (long long)pos, (unsigned)c->length, BSQ_MAX_CHUNK_BODY);
        return BSQ_OK;
    }
    size_t total = BSQ_CHUNK_OVERHEAD + (size_t)c->length;
    if ((st = src_get(&r->src, pos, total, &p, &got, err)) != BSQ_OK)
        return st;
    if (got < total) {
        bsq_fail(derr, BSQ_ERR_FORMAT, "truncated \"%s\" chunk at offset %lld (%zu of %zu bytes)",
                 t, (long long)pos, got, total);
        return BSQ_OK;
    }
    c->body = p + BSQ_CHUNK_HEADER_SIZE;
    if (!crc_matches(c->body, c->length, get32(c->body + c->length))) {
        *res = CH_BAD_BODY;
        bsq_fail(derr, BSQ_ERR_FORMAT, "CRC mismatch in \"%s\" chunk at offset %lld", t,
                 (long long)pos);
        return BSQ_OK;
    }
    *res = CH_OK;
    return BSQ_OK;
}

/* Validates a GOP body and fills r->gop; on success advances c's frame and
 * pts state. Failure: BSQ_ERR_FORMAT in *derr. */
static bsq_status parse_gop(bsq_reader *r, cursor *c, const chunk *ch, bsq_error *derr)
{
    const uint8_t *b = ch->body;
    long long off = (long long)c->pos;
    if (ch->length < GOP_FIXED_SIZE)
        return bsq_fail(derr, BSQ_ERR_FORMAT, "GOP chunk at offset %lld too short (%u bytes)", off,
                        (unsigned)ch->length);
    uint32_t payload_off = get32(b), n = get32(b + 4), flags = get32(b + 16);
    uint64_t first = get64(b + 8);
    if (n < 1 || n > (uint32_t)r->info.num_frames)
        return bsq_fail(derr, BSQ_ERR_FORMAT,
                        "GOP chunk at offset %lld has %u frames (1..%d allowed)", off,
                        (unsigned)n, r->info.num_frames);
    if (payload_off < GOP_FIXED_SIZE + 8 * n || payload_off > ch->length)
        return bsq_fail(derr, BSQ_ERR_FORMAT, "GOP chunk at offset %lld: bad payload offset %u",
                        off, (unsigned)payload_off);
    if (first >= MAX_FRAMES)
        return bsq_fail(derr, BSQ_ERR_FORMAT, "GOP chunk at offset %lld: frame number %llu too large",
                        off, (unsigned long long)first);
    if (r->opt.skip_damaged ? first < c->next_frame : first != c->next_frame)
        return bsq_fail(derr, BSQ_ERR_FORMAT,
                        "GOP chunk at offset %lld starts at frame %llu, expected %s%llu", off,
                        (unsigned long long)first, r->opt.skip_damaged ? "at least " : "",
                        (unsigned long long)c->next_frame);
    if (r->info.frame_count && first + n > r->info.frame_count)
        return bsq_fail(derr, BSQ_ERR_FORMAT,
                        "GOP chunk at offset %lld ends at frame %llu, past the %llu frames the "
                        "header declares",
                        off, (unsigned long long)(first + n), (unsigned long long)r->info.frame_count);
    int check_index = c->have_expect && c->expect.offset == c->pos;
    c->have_expect = 0;
    if (check_index && (first != c->expect.first_frame || n != c->expect.frame_count ||
                        (int64_t)get64(b + GOP_FIXED_SIZE) != c->expect.first_pts ||
                        (int64_t)get64(b + GOP_FIXED_SIZE + 8 * ((size_t)n - 1)) !=
                            c->expect.last_pts))
        return bsq_fail(derr, BSQ_ERR_FORMAT,
                        "GOP chunk at offset %lld does not match its seek index entry", off);
    for (uint32_t i = 0; i < n; i++) {
        int64_t v = (int64_t)get64(b + GOP_FIXED_SIZE + 8 * (size_t)i);
        int64_t prev = i > 0 ? r->pts[i - 1] : c->last_pts;
        if ((i > 0 || c->have_pts) && v <= prev)
            return bsq_fail(derr, BSQ_ERR_FORMAT,
                            "GOP chunk at offset %lld: pts of frame %llu (%lld) not after the "
                            "previous (%lld)",
                            off, (unsigned long long)(first + i), (long long)v, (long long)prev);
        r->pts[i] = v;
    }
    r->gop = (bsq_gop){.first_frame = first, .frame_count = n, .flags = flags, .pts = r->pts,
                       .payload = b + payload_off, .payload_size = ch->length - payload_off,
                       .offset = c->pos};
    c->next_frame = first + n;
    c->have_pts = 1;
    c->last_pts = r->pts[n - 1];
    return BSQ_OK;
}

/* Moves c to the first intact chunk header at or after `from` (or to the
 * end of the input). Candidates start with the sync bytes and pass the
 * header CRC; the body is checked when the chunk is read. */
static bsq_status resync(bsq_reader *r, cursor *c, int64_t from, bsq_error *err)
{
    int64_t pos = from;
    for (;;) {
        const uint8_t *p;
        size_t got;
        bsq_status st = src_get(&r->src, pos, SCAN_WINDOW, &p, &got, err);
        if (st != BSQ_OK)
            return st;
        if (got < BSQ_CHUNK_HEADER_SIZE) {
            c->pos = pos + (int64_t)got; /* too little left for a chunk: the end */
            return BSQ_OK;
        }
        size_t last = got - BSQ_CHUNK_HEADER_SIZE; /* last candidate fully in the window */
        size_t i = 0;
        while (i <= last) {
            const uint8_t *q = memchr(p + i, chunk_sync[0], last + 1 - i);
            if (!q)
                break;
            i = (size_t)(q - p);
            if (chunk_header_ok(r, q, pos + (int64_t)i)) {
                c->pos = pos + (int64_t)i;
                return BSQ_OK;
            }
            i++;
        }
        pos += (int64_t)last + 1; /* progress of at least one byte */
    }
}

/* Damage found at the end of a walk: an error in strict mode, a report in
 * skip mode. */
static bsq_status end_damage(bsq_reader *r, int64_t offset, const bsq_error *derr, bsq_error *err)
{
    if (!r->opt.skip_damaged)
        return bsq_fail(err, BSQ_ERR_FORMAT, "%s", derr->message);
    report(r, offset, 1, derr->message);
    return BSQ_OK;
}

/* The stream ended at `offset` (a clean end of input, or the footer there):
 * the frames read must be the count the footer, else the header, declares. */
static bsq_status check_end(bsq_reader *r, cursor *c, int64_t offset, uint64_t footer_count,
                            int have_footer, bsq_error *err)
{
    uint64_t declared = r->info.frame_count;
    const char *by = "header";
    bsq_error derr;
    bsq_status st;
    if (have_footer) {
        if (declared != 0 && footer_count != declared) {
            bsq_fail(&derr, BSQ_ERR_FORMAT, "the footer at offset %lld says %llu frames, the "
                     "header %llu", (long long)offset, (unsigned long long)footer_count,
                     (unsigned long long)declared);
            if ((st = end_damage(r, offset, &derr, err)) != BSQ_OK)
                return st;
        }
        declared = footer_count;
        by = "footer";
    }
    if (declared == 0 || c->next_frame == declared)
        return BSQ_OK;
    bsq_fail(&derr, BSQ_ERR_FORMAT,
             "the stream ends at offset %lld after %llu frames, but the %s declares %llu",
             (long long)offset, (unsigned long long)c->next_frame, by,
             (unsigned long long)declared);
    return end_damage(r, offset, &derr, err);
}

/* Advances c to the next GOP (*have = 1, in r->gop) or to the end. In strict
 * mode damage is an error; in skip mode it is reported and passed over. */
static bsq_status walk(bsq_reader *r, cursor *c, int *have, bsq_error *err)
{
    *have = 0;
    while (!c->done) {
        chunk ch;
        chunk_result res;
        bsq_error derr;
        bsq_status st = read_chunk(r, c->pos, &ch, &res, &derr, err);
        if (st != BSQ_OK)
            return st;
        if (res == CH_END) {
            c->done = 1;
            return check_end(r, c, c->pos, 0, 0, err);
        }
        int64_t end = c->pos + BSQ_CHUNK_OVERHEAD + (int64_t)ch.length;
        if (res == CH_BAD_BODY && ch.type != BSQ_CHUNK_GOP) {
            /* no frames lost: say so and go on by the (intact) length */
            report(r, c->pos, 1, derr.message);
            c->pos = end;
            continue;
        }
        if (res == CH_OK && ch.type == BSQ_CHUNK_GOP) {
            if (parse_gop(r, c, &ch, &derr) == BSQ_OK) {
                c->pos = end;
                *have = 1;
                return BSQ_OK;
            }
            res = CH_BAD;
        }
        if (res != CH_OK) {
            if (!r->opt.skip_damaged)
                return bsq_fail(err, BSQ_ERR_FORMAT, "%s", derr.message);
            report(r, c->pos, 1, derr.message);
            if ((st = resync(r, c, c->pos + 1, err)) != BSQ_OK)
                return st;
            continue;
        }
        if (ch.type == BSQ_CHUNK_FOOTER && ch.length == FOOTER_BODY_SIZE) {
            /* the last chunk: nothing may follow it */
            uint64_t count = get64(ch.body + 8);
            const uint8_t *p;
            size_t got;
            c->done = 1;
            if ((st = src_get(&r->src, end, 1, &p, &got, err)) != BSQ_OK)
                return st;
            if (got > 0) {
                bsq_fail(&derr, BSQ_ERR_FORMAT, "unexpected data after the footer, at offset %lld",
                         (long long)end);
                if ((st = end_damage(r, end, &derr, err)) != BSQ_OK)
                    return st;
            }
            return check_end(r, c, c->pos, count, 1, err);
        }
        c->pos = end; /* the index, and chunk types this version does not know */
    }
    return BSQ_OK;
}

static bsq_status reader_open(bsq_src *src, const bsq_reader_options *opt, bsq_reader **out,
                              bsq_error *err)
{
    *out = NULL;
    bsq_reader *r = calloc(1, sizeof *r);
    if (!r)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory for the .bsq reader");
    r->src = *src;
    if (opt)
        r->opt = *opt;
    const uint8_t *p;
    size_t got;
    bsq_status st = src_get(&r->src, 0, 16, &p, &got, err);
    if (st != BSQ_OK)
        goto fail;
    st = BSQ_ERR_FORMAT;
    if (got == 0) {
        bsq_fail(err, st, "empty input: not a .bsq file (no header at offset 0)");
        goto fail;
    }
    if (got < sizeof file_magic || memcmp(p, file_magic, sizeof file_magic) != 0) {
        bsq_fail(err, st, got < sizeof file_magic
                              ? "truncated .bsq header at offset 0 (%zu bytes)"
                              : "not a .bsq file (bad magic at offset 0, %zu bytes read)",
                 got);
        goto fail;
    }
    if (got < 16) {
        bsq_fail(err, st, "truncated .bsq header at offset 0 (%zu bytes)", got);
        goto fail;
    }
    uint32_t hsize = get32(p + H_SIZE);
    unsigned major = get16(p + H_MAJOR), minor = get16(p + H_MINOR);
    if (hsize < BSQ_FILE_HEADER_SIZE || hsize > BSQ_FILE_HEADER_MAX) {
        if (major != BSQ_CONTAINER_VERSION_MAJOR)
            st = bsq_fail(err, BSQ_ERR_UNSUPPORTED,
                          ".bsq version %u.%u is not supported (this reader reads %d.x)", major,
                          minor, BSQ_CONTAINER_VERSION_MAJOR);
        else
            bsq_fail(err, st, "header at offset 0: size %u out of range (%d..%d)",
                     (unsigned)hsize, BSQ_FILE_HEADER_SIZE, BSQ_FILE_HEADER_MAX);
        goto fail;
    }
    if ((st = src_get(&r->src, 0, hsize, &p, &got, err)) != BSQ_OK)
        goto fail;
    st = BSQ_ERR_FORMAT;
    if (got < hsize) {
        bsq_fail(err, st, "truncated .bsq header at offset 0 (%zu of %u bytes)", got,
                 (unsigned)hsize);
        goto fail;
    }
    if (!crc_matches(p, hsize - 4, get32(p + hsize - 4))) {
        bsq_fail(err, st, "header CRC mismatch at offset 0 (a damaged file)");
        goto fail;
    }
    if (major != BSQ_CONTAINER_VERSION_MAJOR) {
        st = bsq_fail(err, BSQ_ERR_UNSUPPORTED,
                      ".bsq version %u.%u is not supported (this reader reads %d.x)", major,
                      minor, BSQ_CONTAINER_VERSION_MAJOR);
        goto fail;
    }
    header_decode(p, &r->info);
    if ((st = bsq_stream_info_validate(&r->info, BSQ_ERR_FORMAT, err)) != BSQ_OK)
        goto fail;
    r->header_size = hsize;
    r->pts = malloc((size_t)r->info.num_frames * sizeof *r->pts);
    if (!r->pts) {
        st = bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    r->cur = (cursor){.pos = hsize};
    *out = r;
    return BSQ_OK;
fail:
    free(r->src.buf);
    free(r);
    return st;
}

/* Classifies a FILE or fd: seekable with a known size, or a stream. */
static void src_probe(bsq_src *s)
{
    int n = s->kind == SRC_FILE ? fileno(s->f) : s->fd;
    if (n >= 0) {
        struct stat sb;
        if (fstat(n, &sb) != 0 || !(S_ISREG(sb.st_mode) || S_ISBLK(sb.st_mode)))
            return; /* pipes, sockets, terminals: read as a stream */
    }
    if (s->kind == SRC_FILE) {
        off_t cur = ftello(s->f);
        if (cur < 0 || fseeko(s->f, 0, SEEK_END) != 0)
            return;
        off_t end = ftello(s->f);
        if (end < 0 || fseeko(s->f, cur, SEEK_SET) != 0)
            return;
        s->base = cur;
        s->size = end > cur ? end - cur : 0;
    } else {
        off_t cur = lseek(s->fd, 0, SEEK_CUR);
        if (cur < 0)
            return;
        off_t end = lseek(s->fd, 0, SEEK_END);
        if (end < 0 || lseek(s->fd, cur, SEEK_SET) < 0)
            return;
        s->base = cur;
        s->size = end > cur ? end - cur : 0;
    }
    s->seekable = 1;
}

bsq_status bsq_reader_open_file(FILE *f, const bsq_reader_options *opt, bsq_reader **out,
                                bsq_error *err)
{
    if (!f || !out)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_reader_open_file: NULL argument");
    bsq_src s = {.kind = SRC_FILE, .f = f, .fd = -1, .size = -1};
    src_probe(&s);
    return reader_open(&s, opt, out, err);
}

bsq_status bsq_reader_open_fd(int fd, const bsq_reader_options *opt, bsq_reader **out,
                              bsq_error *err)
{
    if (fd < 0 || !out)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_reader_open_fd: bad argument");
    bsq_src s = {.kind = SRC_FD, .fd = fd, .size = -1};
    src_probe(&s);
    return reader_open(&s, opt, out, err);
}

bsq_status bsq_reader_open_memory(const void *data, size_t size, const bsq_reader_options *opt,
                                  bsq_reader **out, bsq_error *err)
{
    if ((!data && size > 0) || !out || size > (size_t)INT64_MAX)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_reader_open_memory: bad argument");
    static const uint8_t empty[1] = {0};
    bsq_src s = {.kind = SRC_MEMORY, .mem = data ? data : empty, .fd = -1, .seekable = 1,
                 .size = (int64_t)size};
    return reader_open(&s, opt, out, err);
}

void bsq_reader_close(bsq_reader *r)
{
    if (!r)
        return;
    free(r->src.buf);
    free(r->pts);
    free(r->index);
    free(r);
}

const bsq_stream_info *bsq_reader_info(const bsq_reader *r) { return &r->info; }
int bsq_reader_seekable(const bsq_reader *r) { return r->src.seekable; }
uint64_t bsq_reader_damage_count(const bsq_reader *r) { return r->damage_count; }

bsq_status bsq_reader_next_gop(bsq_reader *r, const bsq_gop **gop, bsq_error *err)
{
    *gop = NULL;
    if (r->sticky != BSQ_OK)
        return bsq_fail(err, r->sticky, "%s", r->sticky_msg);
    if (r->pending) {
        r->pending = 0;
        *gop = &r->gop;
        return BSQ_OK;
    }
    int have;
    bsq_error e;
    bsq_status st = walk(r, &r->cur, &have, &e);
    if (st != BSQ_OK) {
        r->sticky = st;
        memcpy(r->sticky_msg, e.message, sizeof r->sticky_msg);
        return bsq_fail(err, st, "%s", e.message);
    }
    if (have)
        *gop = &r->gop;
    return BSQ_OK;
}

/* ---- the index ---- */

static bsq_status index_push(bsq_reader *r, const bsq_index_entry *e, bsq_error *err)
{
    if (r->index_len == r->index_cap) {
        size_t cap = r->index_cap ? 2 * r->index_cap : 64;
        bsq_index_entry *p = realloc(r->index, cap * sizeof *p);
        if (!p)
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory for the seek index");
        r->index = p;
        r->index_cap = cap;
    }
    r->index[r->index_len++] = *e;
    return BSQ_OK;
}

/* An entry's pts can belong to frame_count strictly increasing values
 * (computed without signed overflow). */
static int entry_pts_ok(const bsq_index_entry *x)
{
    if (x->last_pts < x->first_pts)
        return 0;
    return (uint64_t)x->last_pts - (uint64_t)x->first_pts >= (uint64_t)x->frame_count - 1;
}

/* Reads the index named by the footer. BSQ_ERR_FORMAT: absent (*damaged = 0)
 * or unusable (*damaged = 1, message in derr). Entries are checked for
 * order and consistency; each chunk is checked again when it is read. */
static bsq_status footer_index(bsq_reader *r, int *damaged, bsq_error *derr, bsq_error *err)
{
    *damaged = 0;
    int64_t size = r->src.size, foot = size - BSQ_FOOTER_SIZE;
    if (foot < r->header_size)
        return bsq_fail(derr, BSQ_ERR_FORMAT, "no footer");
    chunk ch;
    chunk_result res;
    const uint8_t *p;
    size_t got;
    bsq_status st = src_get(&r->src, foot, 8, &p, &got, err);
    if (st != BSQ_OK)
        return st;
    if (got < 8 || memcmp(p, chunk_sync, 4) != 0 || get32(p + 4) != BSQ_CHUNK_FOOTER)
        return bsq_fail(derr, BSQ_ERR_FORMAT, "no footer"); /* streamed or interrupted */
    *damaged = 1;
    if ((st = read_chunk(r, foot, &ch, &res, derr, err)) != BSQ_OK)
        return st;
    if (res != CH_OK)
        return BSQ_ERR_FORMAT;
    if (ch.length != FOOTER_BODY_SIZE)
        return bsq_fail(derr, BSQ_ERR_FORMAT, "footer at offset %lld has %u bytes, not %d",
                        (long long)foot, (unsigned)ch.length, FOOTER_BODY_SIZE);
    uint64_t ioff = get64(ch.body), frames = get64(ch.body + 8);
    if (ioff < (uint64_t)r->header_size || ioff > (uint64_t)(foot - BSQ_CHUNK_OVERHEAD))
        return bsq_fail(derr, BSQ_ERR_FORMAT, "footer at offset %lld points outside the file",
                        (long long)foot);
    if (r->info.frame_count && frames != r->info.frame_count)
        return bsq_fail(derr, BSQ_ERR_FORMAT,
                        "footer at offset %lld says %llu frames, the header %llu",
                        (long long)foot, (unsigned long long)frames,
                        (unsigned long long)r->info.frame_count);
    int64_t at = (int64_t)ioff;
    if ((st = read_chunk(r, at, &ch, &res, derr, err)) != BSQ_OK)
        return st;
    if (res != CH_OK)
        return BSQ_ERR_FORMAT;
    if (ch.type != BSQ_CHUNK_INDEX || at + BSQ_CHUNK_OVERHEAD + (int64_t)ch.length > foot ||
        ch.length < INDEX_HEAD_SIZE)
        return bsq_fail(derr, BSQ_ERR_FORMAT, "no index chunk at offset %lld", (long long)at);
    uint32_t count = get32(ch.body), esize = get32(ch.body + 4);
    if (esize < INDEX_ENTRY_SIZE || esize > INDEX_ENTRY_MAX ||
        (uint64_t)count * esize > ch.length - INDEX_HEAD_SIZE)
        return bsq_fail(derr, BSQ_ERR_FORMAT, "index at offset %lld: bad entry count or size",
                        (long long)at);
    r->index_len = 0;
    uint64_t next = 0;
    int64_t min_off = r->header_size, last_pts = 0;
    for (uint32_t i = 0; i < count; i++) {
        /* the body stays in the window: nothing else is read in this loop */
        const uint8_t *e = ch.body + INDEX_HEAD_SIZE + (size_t)esize * i;
        bsq_index_entry x = {.offset = (int64_t)get64(e), .first_frame = get64(e + 8),
                             .first_pts = (int64_t)get64(e + 16), .last_pts = (int64_t)get64(e + 24),
                             .frame_count = get32(e + 32)};
        if (x.offset < min_off || x.offset > at - BSQ_CHUNK_OVERHEAD - GOP_FIXED_SIZE ||
            x.first_frame != next || x.frame_count < 1 ||
            x.frame_count > (uint32_t)r->info.num_frames ||
            !entry_pts_ok(&x) ||
            (i > 0 && x.first_pts <= last_pts))
            return bsq_fail(derr, BSQ_ERR_FORMAT, "index at offset %lld: entry %u is inconsistent",
                            (long long)at, (unsigned)i);
        if ((st = index_push(r, &x, err)) != BSQ_OK)
            return st;
        next += x.frame_count;
        min_off = x.offset + BSQ_CHUNK_OVERHEAD + GOP_FIXED_SIZE + 8 * (int64_t)x.frame_count;
        last_pts = x.last_pts;
    }
    if (next != frames)
        return bsq_fail(derr, BSQ_ERR_FORMAT, "index at offset %lld covers %llu frames, the footer "
                        "says %llu", (long long)at, (unsigned long long)next,
                        (unsigned long long)frames);
    return BSQ_OK;
}

/* Builds the index by walking every chunk (each body's CRC checked). */
static bsq_status scan_index(bsq_reader *r, bsq_error *err)
{
    cursor c = {.pos = r->header_size};
    r->index_len = 0;
    r->scan_status = BSQ_OK;
    for (;;) {
        int have;
        bsq_error e;
        bsq_status st = walk(r, &c, &have, &e);
        if (st == BSQ_ERR_FORMAT) {
            /* strict mode: keep the index up to the damage, remember it */
            r->scan_status = st;
            memcpy(r->scan_msg, e.message, sizeof r->scan_msg);
            return BSQ_OK;
        }
        if (st != BSQ_OK)
            return bsq_fail(err, st, "%s", e.message);
        if (!have)
            return BSQ_OK;
        bsq_index_entry x = {.offset = r->gop.offset, .first_frame = r->gop.first_frame,
                             .frame_count = r->gop.frame_count, .first_pts = r->gop.pts[0],
                             .last_pts = r->gop.pts[r->gop.frame_count - 1]};
        if ((st = index_push(r, &x, err)) != BSQ_OK)
            return st;
    }
}

bsq_status bsq_reader_load_index(bsq_reader *r, bsq_error *err)
{
    if (r->index_loaded)
        return BSQ_OK;
    if (!r->src.seekable)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "the seek index needs a seekable input");
    int damaged;
    bsq_error derr;
    bsq_status st = footer_index(r, &damaged, &derr, err);
    if (st == BSQ_OK) {
        r->index_loaded = r->index_from_footer = 1;
        return BSQ_OK;
    }
    if (st != BSQ_ERR_FORMAT)
        return st;
    if (damaged) {
        char msg[sizeof derr.message + 64];
        snprintf(msg, sizeof msg, "%s; scanning the chunks instead", derr.message);
        report(r, r->src.size - BSQ_FOOTER_SIZE, 0, msg);
    }
    r->index_len = 0;
    if ((st = scan_index(r, err)) != BSQ_OK)
        return st;
    r->index_loaded = 1;
    r->index_from_footer = 0;
    return BSQ_OK;
}

const bsq_index_entry *bsq_reader_index(const bsq_reader *r, size_t *count)
{
    *count = r->index_loaded ? r->index_len : 0;
    return r->index_loaded ? r->index : NULL;
}

int bsq_reader_index_from_footer(const bsq_reader *r) { return r->index_from_footer; }

static uint64_t index_end(const bsq_reader *r)
{
    if (r->index_len == 0)
        return 0;
    const bsq_index_entry *e = &r->index[r->index_len - 1];
    return e->first_frame + e->frame_count;
}

bsq_status bsq_reader_frame_count(bsq_reader *r, uint64_t *count, bsq_error *err)
{
    *count = r->info.frame_count;
    if (!r->src.seekable)
        return BSQ_OK;
    bsq_status st = bsq_reader_load_index(r, err);
    if (st != BSQ_OK)
        return st;
    *count = index_end(r);
    if (r->scan_status != BSQ_OK)
        return bsq_fail(err, r->scan_status, "%s", r->scan_msg);
    return BSQ_OK;
}

bsq_status bsq_reader_seek_frame(bsq_reader *r, uint64_t frame, bsq_error *err)
{
    if (!r->src.seekable) {
        /* read forward to the GOP holding the frame */
        if (r->pending) {
            /* in skip mode a frame lost just before the pending GOP maps to it */
            uint64_t from = r->opt.skip_damaged ? r->pending_from : r->gop.first_frame;
            if (frame >= from && frame < r->gop.first_frame + r->gop.frame_count)
                return BSQ_OK;
        }
        if (frame < (r->pending ? r->pending_from : r->cur.next_frame))
            return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                            "cannot seek back to frame %llu in a non-seekable input",
                            (unsigned long long)frame);
        r->pending = 0;
        for (;;) {
            const bsq_gop *g;
            uint64_t from = r->cur.next_frame;
            bsq_status st = bsq_reader_next_gop(r, &g, err);
            if (st != BSQ_OK)
                return st;
            if (!g)
                return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                                "frame %llu is past the end of the stream (%llu frames)",
                                (unsigned long long)frame, (unsigned long long)r->cur.next_frame);
            if (frame < g->first_frame + g->frame_count) {
                r->pending = 1; /* next_gop returns it */
                r->pending_from = from;
                return BSQ_OK;
            }
        }
    }
    bsq_status st = bsq_reader_load_index(r, err);
    if (st != BSQ_OK)
        return st;
    /* the first entry that ends after the frame */
    size_t lo = 0, hi = r->index_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->index[mid].first_frame + r->index[mid].frame_count <= frame)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == r->index_len) {
        if (r->scan_status != BSQ_OK)
            return bsq_fail(err, r->scan_status, "%s", r->scan_msg);
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "frame %llu is past the end of the stream (%llu frames)",
                        (unsigned long long)frame, (unsigned long long)index_end(r));
    }
    const bsq_index_entry *e = &r->index[lo];
    r->cur = (cursor){.pos = e->offset, .next_frame = e->first_frame, .have_expect = 1,
                      .expect = *e};
    r->pending = 0;
    r->sticky = BSQ_OK;
    return BSQ_OK;
}
