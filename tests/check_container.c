/* The .bsq container (lib/codec/container.c): round trips of every header
 * field and of GOPs (VFR timestamps, empty and large payloads), reading via
 * the index, by scanning and from pipes, unknown chunks, versioning rules,
 * every single-byte corruption and every truncation of a small file (a clear
 * error or a correct partial result, never silence), skipping damaged chunks,
 * and write errors. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "codec/container.h"

/* ------------------------------------------------------------------------ */
/* Reference data                                                            */

#define MAX_GOPS 256

typedef struct ref_gop {
    uint64_t first;
    uint32_t count, flags;
    int64_t pts[16];
    uint8_t *payload;
    size_t size;
    int64_t offset;
} ref_gop;

typedef struct ref_file {
    bsq_stream_info info;
    ref_gop gops[MAX_GOPS];
    size_t n;
    uint64_t frames;
    uint8_t *bytes; /* the written file */
    size_t len;
} ref_file;

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A header with every field set to something recognisable. */
static bsq_stream_info sample_info(int num_frames)
{
    bsq_stream_info in;
    memset(&in, 0, sizeof in);
    in.width = 1918;
    in.height = 1078;
    in.time_base_num = 1;
    in.time_base_den = 90000;
    in.frame_rate_num = 30000;
    in.frame_rate_den = 1001;
    in.sar_num = 64;
    in.sar_den = 45;
    in.color_primaries = 9;  /* BT.2020 */
    in.color_transfer = 16;  /* PQ */
    in.color_matrix = 9;     /* BT.2020 NCL */
    in.color_range = 1;      /* limited */
    in.rotation = 270;
    in.frame_count = 0;
    in.L = 18;
    in.num_frames = num_frames;
    in.grid_h = 16;
    in.grid_w = 16;
    in.tiles_y = 9;
    in.tiles_x = 15;
    in.token_width = 1920;
    in.token_height = 1080;
    strcpy(in.prior_name, "context");
    for (int i = 0; i < BSQ_TOKENIZER_FP_SIZE; i++)
        in.tokenizer_fingerprint[i] = (uint8_t)(0xa0 + i);
    for (int i = 0; i < BSQ_PRIOR_FP_SIZE; i++)
        in.prior_fingerprint[i] = (uint8_t)(0x10 + 7 * i);
    return in;
}

/* n GOPs of 1..num_frames frames, variable frame durations (starting at a
 * negative pts), payload sizes from `sizes` (cycled) filled pseudo-randomly. */
static void make_gops(ref_file *rf, size_t n, const size_t *sizes, size_t nsizes, uint64_t seed)
{
    ck_assert_uint_le(n, MAX_GOPS);
    uint64_t s = seed;
    int64_t pts = -3000;
    rf->n = n;
    rf->frames = 0;
    for (size_t g = 0; g < n; g++) {
        ref_gop *r = &rf->gops[g];
        r->first = rf->frames;
        r->count = 1 + (uint32_t)(rng_next(&s) % (uint64_t)rf->info.num_frames);
        r->flags = 0;
        for (uint32_t i = 0; i < r->count; i++) {
            r->pts[i] = pts;
            pts += 1 + (int64_t)(rng_next(&s) % 5000); /* variable frame rate */
        }
        r->size = sizes[g % nsizes];
        r->payload = malloc(r->size ? r->size : 1);
        for (size_t i = 0; i < r->size; i++)
            r->payload[i] = (uint8_t)rng_next(&s);
        /* payloads sometimes contain the chunk sync bytes */
        if (r->size >= 24 && g % 2 == 0)
            memcpy(r->payload + 3, "BSQC", 4);
        rf->frames += r->count;
    }
}

static void free_ref(ref_file *rf)
{
    for (size_t g = 0; g < rf->n; g++)
        free(rf->gops[g].payload);
    free(rf->bytes);
    rf->bytes = NULL;
}

static bsq_gop as_gop(const ref_gop *r)
{
    return (bsq_gop){.first_frame = r->first, .frame_count = r->count, .flags = r->flags,
                     .pts = r->pts, .payload = r->payload, .payload_size = r->size};
}

/* A chunk of a type readers do not know. */
static bsq_status write_meta(bsq_writer *w, bsq_error *err)
{
    static const char meta[] = "title=unknown chunk types are skipped";
    return bsq_writer_write_chunk(w, BSQ_FOURCC('M', 'E', 'T', 'A'), meta, sizeof meta, err);
}

/* Writes the GOPs through a writer, an unknown chunk after GOP `meta_after`
 * (when >= 0). */
static void write_gops(bsq_writer *w, ref_file *rf, long meta_after)
{
    bsq_error err;
    for (size_t g = 0; g < rf->n; g++) {
        rf->gops[g].offset = bsq_writer_offset(w);
        bsq_gop gop = as_gop(&rf->gops[g]);
        ck_assert_msg(bsq_writer_write_gop(w, &gop, &err) == BSQ_OK, "%s", err.message);
        if ((long)g == meta_after)
            ck_assert_msg(write_meta(w, &err) == BSQ_OK, "%s", err.message);
    }
}

static uint8_t *slurp(FILE *f, size_t *len)
{
    ck_assert_int_eq(fseeko(f, 0, SEEK_END), 0);
    off_t n = ftello(f);
    ck_assert_int_ge(n, 0);
    uint8_t *b = malloc((size_t)n + 1);
    rewind(f);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    *len = (size_t)n;
    return b;
}

/* With BSQ_CONTAINER_SEEDS=DIR, the files the tests write are also saved
 * there (named by their CRC), as seeds for tests/fuzz/fuzz_container. */
static void save_seed(const uint8_t *b, size_t len)
{
    const char *dir = getenv("BSQ_CONTAINER_SEEDS");
    if (!dir || len > (1u << 20))
        return;
    char path[4096];
    snprintf(path, sizeof path, "%s/%08lx.bsq", dir, (unsigned long)crc32(0, b, (uInt)len));
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    ck_assert_uint_eq(fwrite(b, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

/* Writes rf to a temporary file (seekable: the frame count is patched). */
static void write_file(ref_file *rf, long meta_after)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    bsq_writer *w;
    bsq_error err;
    ck_assert_msg(bsq_writer_open_file(f, &rf->info, &w, &err) == BSQ_OK, "%s", err.message);
    write_gops(w, rf, meta_after);
    ck_assert_uint_eq(bsq_writer_frames(w), rf->frames);
    ck_assert_msg(bsq_writer_close(w, &err) == BSQ_OK, "%s", err.message);
    rf->bytes = slurp(f, &rf->len);
    fclose(f);
    save_seed(rf->bytes, rf->len);
}

/* The small file the corruption and truncation tests damage: 4 GOPs of up
 * to 3 frames, payloads of 0..40 bytes, an unknown chunk after the second. */
static void small_file(ref_file *rf)
{
    memset(rf, 0, sizeof *rf);
    rf->info = sample_info(3);
    static const size_t sizes[] = {17, 0, 40, 9};
    make_gops(rf, 4, sizes, 4, 7);
    write_file(rf, 1);
}

/* ------------------------------------------------------------------------ */
/* Sources: memory, a seekable FILE, a non-seekable FILE (no seek function),
 * a file descriptor                                                         */

enum source { SRC_MEM, SRC_FMEM, SRC_STREAM, SRC_SOURCES };

typedef struct cookie {
    const uint8_t *data;
    size_t len, pos;
    size_t write_limit; /* writer cookies: bytes accepted before ENOSPC */
} cookie;

static ssize_t cookie_read(void *c_, char *buf, size_t n)
{
    cookie *c = c_;
    /* short reads, as pipes give them */
    size_t k = c->len - c->pos < n ? c->len - c->pos : n;
    if (k > 7)
        k = k / 2 + 1;
    memcpy(buf, c->data + c->pos, k);
    c->pos += k;
    return (ssize_t)k;
}

static ssize_t cookie_write(void *c_, const char *buf, size_t n)
{
    (void)buf;
    cookie *c = c_;
    if (c->pos + n > c->write_limit) {
        errno = ENOSPC;
        return -1;
    }
    c->pos += n;
    return (ssize_t)n;
}

static FILE *stream_file(cookie *c, const uint8_t *data, size_t len)
{
    *c = (cookie){.data = data, .len = len};
    cookie_io_functions_t io = {.read = cookie_read};
    FILE *f = fopencookie(c, "r", io);
    ck_assert_ptr_nonnull(f);
    return f;
}

typedef struct damage_log {
    uint64_t calls;
    int64_t offsets[64];
    size_t n;
} damage_log;

static void on_damage(void *opaque, int64_t offset, const char *message)
{
    damage_log *d = opaque;
    ck_assert_ptr_nonnull(message);
    ck_assert_msg(strstr(message, "offset") != NULL, "damage message without offset: %s", message);
    d->calls++;
    if (d->n < 64)
        d->offsets[d->n++] = offset;
}

typedef struct outcome {
    bsq_status open_st, st;
    char msg[512];
    size_t ngops;
    uint64_t firsts[MAX_GOPS];
    size_t refs[MAX_GOPS]; /* index of the reference GOP each one equals */
    damage_log damage;
    bsq_stream_info info;
} outcome;

/* Index of the reference GOP starting at `first`, or -1. */
static long find_ref(const ref_file *rf, uint64_t first)
{
    for (size_t g = 0; g < rf->n; g++)
        if (rf->gops[g].first == first)
            return (long)g;
    return -1;
}

/* Asserts that a GOP read back equals the reference GOP with its first frame
 * and returns that GOP's index. */
static size_t check_gop(const ref_file *rf, const bsq_gop *g)
{
    long k = find_ref(rf, g->first_frame);
    ck_assert_msg(k >= 0, "a GOP starting at frame %llu that was never written",
                  (unsigned long long)g->first_frame);
    const ref_gop *r = &rf->gops[k];
    ck_assert_uint_eq(g->frame_count, r->count);
    ck_assert_uint_eq(g->flags, r->flags);
    ck_assert_int_eq(g->offset, r->offset);
    for (uint32_t i = 0; i < r->count; i++)
        ck_assert_int_eq(g->pts[i], r->pts[i]);
    ck_assert_uint_eq(g->payload_size, r->size);
    ck_assert(r->size == 0 || memcmp(g->payload, r->payload, r->size) == 0);
    return (size_t)k;
}

static bsq_status open_source(enum source src, const uint8_t *b, size_t len,
                              const bsq_reader_options *o, FILE **f, cookie *ck,
                              bsq_reader **r, bsq_error *err)
{
    *f = NULL;
    if (src == SRC_MEM || (src == SRC_FMEM && len == 0))
        return bsq_reader_open_memory(b, len, o, r, err);
    if (src == SRC_FMEM) {
        *f = fmemopen((void *)b, len, "r");
        ck_assert_ptr_nonnull(*f);
    } else {
        *f = stream_file(ck, b, len);
    }
    return bsq_reader_open_file(*f, o, r, err);
}

/* Reads every GOP of bytes[0..len) in order. */
static void read_all(const ref_file *rf, const uint8_t *b, size_t len, enum source src, int skip,
                     outcome *o)
{
    memset(o, 0, sizeof *o);
    bsq_reader_options opt = {.skip_damaged = skip, .on_damage = on_damage, .opaque = &o->damage};
    FILE *f;
    cookie ck;
    bsq_reader *r;
    bsq_error err;
    memset(&err, 0, sizeof err);
    o->open_st = open_source(src, b, len, &opt, &f, &ck, &r, &err);
    if (o->open_st != BSQ_OK) {
        snprintf(o->msg, sizeof o->msg, "%s", err.message);
        if (f)
            fclose(f);
        return;
    }
    o->info = *bsq_reader_info(r);
    ck_assert_int_eq(bsq_reader_seekable(r), src != SRC_STREAM);
    for (;;) {
        const bsq_gop *g;
        o->st = bsq_reader_next_gop(r, &g, &err);
        if (o->st != BSQ_OK) {
            snprintf(o->msg, sizeof o->msg, "%s", err.message);
            /* the error repeats */
            ck_assert_int_eq(bsq_reader_next_gop(r, &g, &err), o->st);
            ck_assert_ptr_null(g);
            break;
        }
        if (!g)
            break;
        ck_assert_uint_lt(o->ngops, MAX_GOPS);
        o->firsts[o->ngops] = g->first_frame;
        o->refs[o->ngops++] = check_gop(rf, g);
    }
    ck_assert_uint_eq(bsq_reader_damage_count(r), o->damage.calls);
    bsq_reader_close(r);
    if (f)
        fclose(f);
}

static void expect_complete(const ref_file *rf, const outcome *o)
{
    ck_assert_msg(o->open_st == BSQ_OK && o->st == BSQ_OK, "read failed: %s", o->msg);
    ck_assert_uint_eq(o->ngops, rf->n);
    for (size_t i = 0; i < rf->n; i++)
        ck_assert_uint_eq(o->refs[i], i);
}

static void expect_info(const bsq_stream_info *a, const bsq_stream_info *b, uint64_t frames)
{
    ck_assert_uint_eq(a->version_major, 1);
    ck_assert_uint_eq(a->version_minor, 0);
    ck_assert_uint_eq(a->width, b->width);
    ck_assert_uint_eq(a->height, b->height);
    ck_assert_uint_eq(a->time_base_num, b->time_base_num);
    ck_assert_uint_eq(a->time_base_den, b->time_base_den);
    ck_assert_uint_eq(a->frame_rate_num, b->frame_rate_num);
    ck_assert_uint_eq(a->frame_rate_den, b->frame_rate_den);
    ck_assert_uint_eq(a->sar_num, b->sar_num);
    ck_assert_uint_eq(a->sar_den, b->sar_den);
    ck_assert_uint_eq(a->color_primaries, b->color_primaries);
    ck_assert_uint_eq(a->color_transfer, b->color_transfer);
    ck_assert_uint_eq(a->color_matrix, b->color_matrix);
    ck_assert_uint_eq(a->color_range, b->color_range);
    ck_assert_uint_eq(a->rotation, b->rotation);
    ck_assert_uint_eq(a->frame_count, frames);
    ck_assert_int_eq(a->L, b->L);
    ck_assert_int_eq(a->num_frames, b->num_frames);
    ck_assert_int_eq(a->grid_h, b->grid_h);
    ck_assert_int_eq(a->grid_w, b->grid_w);
    ck_assert_int_eq(a->tiles_y, b->tiles_y);
    ck_assert_int_eq(a->tiles_x, b->tiles_x);
    ck_assert_int_eq(a->token_width, b->token_width);
    ck_assert_int_eq(a->token_height, b->token_height);
    ck_assert_str_eq(a->prior_name, b->prior_name);
    ck_assert_mem_eq(a->tokenizer_fingerprint, b->tokenizer_fingerprint, BSQ_TOKENIZER_FP_SIZE);
    ck_assert_mem_eq(a->prior_fingerprint, b->prior_fingerprint, BSQ_PRIOR_FP_SIZE);
}

/* ------------------------------------------------------------------------ */
/* Round trips                                                               */

START_TEST(test_header_fields)
{
    ref_file rf;
    small_file(&rf);
    for (int src = 0; src < SRC_SOURCES; src++) {
        outcome o;
        read_all(&rf, rf.bytes, rf.len, (enum source)src, 0, &o);
        expect_complete(&rf, &o);
        expect_info(&o.info, &rf.info, rf.frames); /* frame count patched at close */
        ck_assert_uint_eq(o.damage.calls, 0);
    }
    /* layout facts the specification states */
    ck_assert_mem_eq(rf.bytes, "\x89" "BSQ\r\n\x1a\n", 8);
    ck_assert_mem_eq(rf.bytes + BSQ_FILE_HEADER_SIZE, "BSQCGOP ", 8);
    ck_assert_mem_eq(rf.bytes + rf.len - BSQ_FOOTER_SIZE, "BSQCFOOT", 8);
    ck_assert_uint_eq(rf.bytes[64], rf.frames); /* frame count, little-endian */
    free_ref(&rf);

    /* unknown rationals are stored as 0/0 */
    memset(&rf, 0, sizeof rf);
    rf.info = sample_info(1);
    rf.info.frame_rate_num = 25;
    rf.info.frame_rate_den = 0;
    rf.info.sar_num = 0;
    rf.info.sar_den = 1;
    static const size_t sz[] = {5};
    make_gops(&rf, 3, sz, 1, 1);
    write_file(&rf, -1);
    outcome o;
    read_all(&rf, rf.bytes, rf.len, SRC_MEM, 0, &o);
    expect_complete(&rf, &o);
    ck_assert_uint_eq(o.info.frame_rate_num, 0);
    ck_assert_uint_eq(o.info.frame_rate_den, 0);
    ck_assert_uint_eq(o.info.sar_num, 0);
    ck_assert_uint_eq(o.info.sar_den, 0);
    free_ref(&rf);
}
END_TEST

START_TEST(test_many_gops_vfr)
{
    ref_file rf;
    memset(&rf, 0, sizeof rf);
    rf.info = sample_info(16);
    static const size_t sizes[] = {0, 1, 100, 4096, 7, 0, 65537, 3};
    make_gops(&rf, 200, sizes, 8, 99);
    write_file(&rf, 150);
    for (int src = 0; src < SRC_SOURCES; src++) {
        outcome o;
        read_all(&rf, rf.bytes, rf.len, (enum source)src, src == SRC_STREAM, &o);
        expect_complete(&rf, &o);
        ck_assert_uint_eq(o.info.frame_count, rf.frames);
        ck_assert_uint_eq(o.damage.calls, 0);
    }
    free_ref(&rf);
}
END_TEST

START_TEST(test_large_payload)
{
    ref_file rf;
    memset(&rf, 0, sizeof rf);
    rf.info = sample_info(4);
    static const size_t sizes[] = {3u << 20, 0, 1u << 20};
    make_gops(&rf, 3, sizes, 3, 5);
    write_file(&rf, -1);
    for (int src = 0; src < SRC_SOURCES; src++) {
        outcome o;
        read_all(&rf, rf.bytes, rf.len, (enum source)src, 0, &o);
        expect_complete(&rf, &o);
    }
    /* a payload too large for a chunk is refused by the writer */
    FILE *f = tmpfile();
    bsq_writer *w;
    bsq_error err;
    ck_assert_int_eq(bsq_writer_open_file(f, &rf.info, &w, &err), BSQ_OK);
    int64_t pts = 0;
    bsq_gop big = {.first_frame = 0, .frame_count = 1, .pts = &pts,
                   .payload = rf.gops[0].payload, .payload_size = BSQ_MAX_CHUNK_BODY};
    ck_assert_int_eq(bsq_writer_write_gop(w, &big, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(bsq_writer_close(w, &err), BSQ_OK);
    fclose(f);
    free_ref(&rf);
}
END_TEST

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The worked example of doc/bsq-format.md and bsq(5), byte for byte where
 * the specification gives numbers. */
START_TEST(test_spec_example)
{
    ck_assert_uint_eq(crc32(0, (const Bytef *)"123456789", 9), 0xCBF43926u);
    ref_file rf;
    memset(&rf, 0, sizeof rf);
    rf.info = sample_info(4);
    rf.info.frame_rate_num = 25;
    rf.info.frame_rate_den = 1;
    rf.n = 2;
    rf.gops[0] = (ref_gop){.first = 0, .count = 4, .pts = {0, 3600, 7200, 10800},
                           .payload = calloc(1000, 1), .size = 1000};
    rf.gops[1] = (ref_gop){.first = 4, .count = 1, .pts = {14400},
                           .payload = calloc(300, 1), .size = 300};
    rf.frames = 5;
    write_file(&rf, -1);
    const uint8_t *b = rf.bytes;
    ck_assert_uint_eq(rf.len, 1780);
    ck_assert_uint_eq(le(b + 12, 4), 192);
    ck_assert_uint_eq(le(b + 64, 8), 5);
    ck_assert_uint_eq(le(b + 188, 4), crc32(0, b, 188));
    ck_assert_int_eq(rf.gops[0].offset, 192);
    ck_assert_int_eq(rf.gops[1].offset, 1272);
    /* GOP chunk: header, then the body fields */
    const uint8_t *g = b + 192;
    ck_assert_mem_eq(g, "BSQCGOP ", 8);
    ck_assert_uint_eq(le(g + 8, 4), 1056);
    ck_assert_uint_eq(le(g + 12, 4), 0);
    ck_assert_uint_eq(le(g + 16, 4), crc32(0, g, 16));
    ck_assert_uint_eq(le(g + 20, 4), 24 + 32);
    ck_assert_uint_eq(le(g + 24, 4), 4);
    ck_assert_uint_eq(le(g + 28, 8), 0);
    ck_assert_uint_eq(le(g + 20 + 24 + 24, 8), 10800);
    ck_assert_uint_eq(le(g + 20 + 1056, 4), crc32(0, g + 20, 1056));
    /* index and footer */
    const uint8_t *x = b + 1628;
    ck_assert_mem_eq(x, "BSQCINDX", 8);
    ck_assert_uint_eq(le(x + 8, 4), 88);
    ck_assert_uint_eq(le(x + 20, 4), 2);
    ck_assert_uint_eq(le(x + 24, 4), 40);
    const uint64_t e1[] = {1272, 4, 14400, 14400, 1};
    for (int i = 0; i < 4; i++)
        ck_assert_uint_eq(le(x + 28 + 40 + 8 * i, 8), e1[i]);
    ck_assert_uint_eq(le(x + 28 + 40 + 32, 4), e1[4]);
    const uint8_t *f = b + 1740;
    ck_assert_mem_eq(f, "BSQCFOOT", 8);
    ck_assert_uint_eq(le(f + 8, 4), 16);
    ck_assert_uint_eq(le(f + 20, 8), 1628);
    ck_assert_uint_eq(le(f + 28, 8), 5);
    ck_assert_uint_eq(le(f + 36, 4), crc32(0, f + 20, 16));
    free_ref(&rf);
}
END_TEST

/* The .bsq stream need not start at offset 0 of its file. */
START_TEST(test_stream_at_offset)
{
    ref_file rf;
    memset(&rf, 0, sizeof rf);
    rf.info = sample_info(2);
    static const size_t sizes[] = {10, 20};
    make_gops(&rf, 6, sizes, 2, 3);
    FILE *f = tmpfile();
    ck_assert_uint_eq(fwrite("junk before the stream", 1, 22, f), 22);
    bsq_writer *w;
    bsq_error err;
    ck_assert_int_eq(bsq_writer_open_file(f, &rf.info, &w, &err), BSQ_OK);
    write_gops(w, &rf, -1);
    ck_assert_int_eq(bsq_writer_close(w, &err), BSQ_OK);
    ck_assert_int_eq(fseeko(f, 22, SEEK_SET), 0);
    bsq_reader *r;
    ck_assert_msg(bsq_reader_open_file(f, NULL, &r, &err) == BSQ_OK, "%s", err.message);
    ck_assert_uint_eq(bsq_reader_info(r)->frame_count, rf.frames);
    ck_assert_int_eq(bsq_reader_load_index(r, &err), BSQ_OK);
    ck_assert_int_eq(bsq_reader_index_from_footer(r), 1);
    ck_assert_int_eq(bsq_reader_seek_frame(r, rf.gops[4].first, &err), BSQ_OK);
    const bsq_gop *g;
    ck_assert_int_eq(bsq_reader_next_gop(r, &g, &err), BSQ_OK);
    ck_assert_uint_eq(check_gop(&rf, g), 4);
    bsq_reader_close(r);
    fclose(f);
    free_ref(&rf);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Index, scan, seeking                                                      */

/* Seeks to every frame and checks the GOP returned next holds it. */
static void seek_everywhere(const ref_file *rf, bsq_reader *r)
{
    bsq_error err;
    for (uint64_t fr = 0; fr < rf->frames; fr++) {
        ck_assert_msg(bsq_reader_seek_frame(r, fr, &err) == BSQ_OK, "seek %llu: %s",
                      (unsigned long long)fr, err.message);
        const bsq_gop *g;
        ck_assert_int_eq(bsq_reader_next_gop(r, &g, &err), BSQ_OK);
        ck_assert_ptr_nonnull(g);
        check_gop(rf, g);
        ck_assert(g->first_frame <= fr && fr < g->first_frame + g->frame_count);
    }
    ck_assert_int_eq(bsq_reader_seek_frame(r, rf->frames, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "past the end"));
}

static void check_index(const ref_file *rf, bsq_reader *r, int from_footer)
{
    bsq_error err;
    uint64_t frames;
    ck_assert_msg(bsq_reader_frame_count(r, &frames, &err) == BSQ_OK, "%s", err.message);
    ck_assert_uint_eq(frames, rf->frames);
    ck_assert_int_eq(bsq_reader_index_from_footer(r), from_footer);
    size_t n;
    const bsq_index_entry *e = bsq_reader_index(r, &n);
    ck_assert_uint_eq(n, rf->n);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(e[i].offset, rf->gops[i].offset);
        ck_assert_uint_eq(e[i].first_frame, rf->gops[i].first);
        ck_assert_uint_eq(e[i].frame_count, rf->gops[i].count);
        ck_assert_int_eq(e[i].first_pts, rf->gops[i].pts[0]);
        ck_assert_int_eq(e[i].last_pts, rf->gops[i].pts[rf->gops[i].count - 1]);
    }
    seek_everywhere(rf, r);
}

START_TEST(test_index_and_scan)
{
    ref_file rf;
    memset(&rf, 0, sizeof rf);
    rf.info = sample_info(5);
    static const size_t sizes[] = {33, 0, 1000, 2};
    make_gops(&rf, 40, sizes, 4, 11);
    write_file(&rf, 20);
    bsq_error err;
    damage_log d = {0};
    bsq_reader_options opt = {.on_damage = on_damage, .opaque = &d};
    /* via the footer */
    bsq_reader *r;
    ck_assert_int_eq(bsq_reader_open_memory(rf.bytes, rf.len, &opt, &r, &err), BSQ_OK);
    check_index(&rf, r, 1);
    bsq_reader_close(r);
    /* via a FILE and an fd */
    FILE *f = tmpfile();
    ck_assert_uint_eq(fwrite(rf.bytes, 1, rf.len, f), rf.len);
    rewind(f);
    ck_assert_int_eq(bsq_reader_open_file(f, &opt, &r, &err), BSQ_OK);
    check_index(&rf, r, 1);
    bsq_reader_close(r);
    ck_assert_int_eq(lseek(fileno(f), 0, SEEK_SET), 0);
    ck_assert_int_eq(bsq_reader_open_fd(fileno(f), &opt, &r, &err), BSQ_OK);
    check_index(&rf, r, 1);
    bsq_reader_close(r);
    fclose(f);
    ck_assert_uint_eq(d.calls, 0);
    /* without the footer (interrupted after the index) and without both: a
     * scan, silently, since a stream that just stops is valid */
    int64_t index_at = (int64_t)rf.len - BSQ_FOOTER_SIZE;
    for (int cut = 0; cut < 2; cut++) {
        size_t len = cut == 0 ? rf.len - BSQ_FOOTER_SIZE : 0;
        if (cut == 1) {
            /* the index chunk starts after the last GOP */
            const ref_gop *last = &rf.gops[rf.n - 1];
            len = (size_t)last->offset + BSQ_CHUNK_OVERHEAD + 24 + 8 * last->count + last->size;
            ck_assert_int_lt((int64_t)len, index_at);
        }
        ck_assert_int_eq(bsq_reader_open_memory(rf.bytes, len, &opt, &r, &err), BSQ_OK);
        check_index(&rf, r, 0);
        bsq_reader_close(r);
        outcome o;
        read_all(&rf, rf.bytes, len, SRC_STREAM, 0, &o);
        expect_complete(&rf, &o);
    }
    ck_assert_uint_eq(d.calls, 0);
    /* a damaged index: reported, then a scan */
    uint8_t *copy = malloc(rf.len);
    memcpy(copy, rf.bytes, rf.len);
    copy[rf.len - BSQ_FOOTER_SIZE - 30] ^= 0x40; /* inside the index entries */
    ck_assert_int_eq(bsq_reader_open_memory(copy, rf.len, &opt, &r, &err), BSQ_OK);
    check_index(&rf, r, 0);
    ck_assert_uint_ge(d.calls, 1);
    bsq_reader_close(r);
    free(copy);
    free_ref(&rf);
}
END_TEST

/* Non-seekable input: forward seeks read ahead; backward ones fail. */
START_TEST(test_stream_seek)
{
    ref_file rf;
    memset(&rf, 0, sizeof rf);
    rf.info = sample_info(4);
    static const size_t sizes[] = {12};
    make_gops(&rf, 10, sizes, 1, 8);
    write_file(&rf, -1);
    cookie ck;
    FILE *f = stream_file(&ck, rf.bytes, rf.len);
    bsq_reader *r;
    bsq_error err;
    ck_assert_int_eq(bsq_reader_open_file(f, NULL, &r, &err), BSQ_OK);
    ck_assert_int_eq(bsq_reader_seekable(r), 0);
    ck_assert_int_eq(bsq_reader_load_index(r, &err), BSQ_ERR_UNSUPPORTED);
    uint64_t target = rf.gops[5].first + rf.gops[5].count - 1;
    ck_assert_int_eq(bsq_reader_seek_frame(r, target, &err), BSQ_OK);
    ck_assert_int_eq(bsq_reader_seek_frame(r, target, &err), BSQ_OK); /* idempotent */
    const bsq_gop *g;
    ck_assert_int_eq(bsq_reader_next_gop(r, &g, &err), BSQ_OK);
    ck_assert_uint_eq(check_gop(&rf, g), 5);
    ck_assert_int_eq(bsq_reader_seek_frame(r, 0, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(bsq_reader_seek_frame(r, rf.frames + 5, &err), BSQ_ERR_INVALID_ARGUMENT);
    bsq_reader_close(r);
    fclose(f);
    free_ref(&rf);
}
END_TEST

/* Real pipes, both ways: a writer into a pipe (not seekable: no header
 * patch) and a reader from a pipe fd, in two processes. */
START_TEST(test_pipe)
{
    ref_file rf;
    memset(&rf, 0, sizeof rf);
    rf.info = sample_info(8);
    static const size_t sizes[] = {300000, 0, 5, 70000};
    make_gops(&rf, 12, sizes, 4, 21);
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    /* the offsets the writer will use, from a seekable dry run */
    write_file(&rf, 3);
    free(rf.bytes);
    rf.bytes = NULL;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        bsq_writer *w;
        bsq_error err;
        int ok = bsq_writer_open_fd(fds[1], &rf.info, &w, &err) == BSQ_OK;
        for (size_t g = 0; ok && g < rf.n; g++) {
            bsq_gop gop = as_gop(&rf.gops[g]);
            ok = bsq_writer_write_gop(w, &gop, &err) == BSQ_OK;
            if (ok && g == 3)
                ok = write_meta(w, &err) == BSQ_OK;
        }
        ok = ok && bsq_writer_close(w, &err) == BSQ_OK;
        close(fds[1]);
        _exit(ok ? 0 : 1);
    }
    close(fds[1]);
    bsq_reader *r;
    bsq_error err;
    ck_assert_msg(bsq_reader_open_fd(fds[0], NULL, &r, &err) == BSQ_OK, "%s", err.message);
    ck_assert_int_eq(bsq_reader_seekable(r), 0);
    ck_assert_uint_eq(bsq_reader_info(r)->frame_count, 0); /* not patched in a pipe */
    size_t n = 0;
    const bsq_gop *g;
    while (bsq_reader_next_gop(r, &g, &err) == BSQ_OK && g)
        ck_assert_uint_eq(check_gop(&rf, g), n++);
    ck_assert_msg(err.code == BSQ_OK || n == rf.n, "%s", err.message);
    ck_assert_uint_eq(n, rf.n);
    bsq_reader_close(r);
    close(fds[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    free_ref(&rf);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Versions, reserved fields, unknown chunks                                 */

static void fix_header_crc(uint8_t *b, uint32_t hsize)
{
    uint32_t c = (uint32_t)crc32(0, b, hsize - 4);
    for (int i = 0; i < 4; i++)
        b[hsize - 4 + i] = (uint8_t)(c >> (8 * i));
}

START_TEST(test_versions_and_reserved)
{
    ref_file rf;
    small_file(&rf);
    bsq_error err;
    bsq_reader *r;
    uint8_t *b = malloc(rf.len + 64);
    /* a newer major version is refused as unsupported */
    memcpy(b, rf.bytes, rf.len);
    b[8] = 2;
    fix_header_crc(b, BSQ_FILE_HEADER_SIZE);
    ck_assert_int_eq(bsq_reader_open_memory(b, rf.len, NULL, &r, &err), BSQ_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.message, "2.0"));
    /* a newer minor version with reserved fields set and flags set: read */
    memcpy(b, rf.bytes, rf.len);
    b[10] = 7;
    b[16] = 0xff;               /* header flags */
    b[60] = 0x55;               /* reserved */
    b[170] = 0xaa;              /* reserved */
    fix_header_crc(b, BSQ_FILE_HEADER_SIZE);
    outcome o;
    read_all(&rf, b, rf.len, SRC_MEM, 0, &o);
    expect_complete(&rf, &o);
    ck_assert_uint_eq(o.info.version_minor, 7);
    /* a longer header (fields a later minor version appends): the chunks
     * move, so only sequential reading is checked, through the stream path */
    static const size_t extra = 64;
    memcpy(b, rf.bytes, BSQ_FILE_HEADER_SIZE - 4);
    memset(b + BSQ_FILE_HEADER_SIZE - 4, 0x33, extra);
    b[12] = (uint8_t)(BSQ_FILE_HEADER_SIZE + extra);
    b[13] = (uint8_t)((BSQ_FILE_HEADER_SIZE + extra) >> 8);
    fix_header_crc(b, BSQ_FILE_HEADER_SIZE + extra);
    memcpy(b + BSQ_FILE_HEADER_SIZE + extra, rf.bytes + BSQ_FILE_HEADER_SIZE,
           rf.len - BSQ_FILE_HEADER_SIZE);
    ck_assert_int_eq(bsq_reader_open_memory(b, rf.len + extra, NULL, &r, &err), BSQ_OK);
    const bsq_gop *g;
    ck_assert_int_eq(bsq_reader_next_gop(r, &g, &err), BSQ_OK);
    ck_assert_ptr_nonnull(g);
    ck_assert_uint_eq(g->first_frame, 0);
    ck_assert_int_eq(g->offset, rf.gops[0].offset + (int64_t)extra);
    bsq_reader_close(r);
    /* not a .bsq file */
    ck_assert_int_eq(bsq_reader_open_memory("hello, world, not a bsq file", 28, NULL, &r, &err),
                     BSQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.message, "magic"));
    free(b);
    free_ref(&rf);
}
END_TEST

START_TEST(test_unknown_chunks)
{
    ref_file rf;
    memset(&rf, 0, sizeof rf);
    rf.info = sample_info(2);
    static const size_t sizes[] = {8, 0};
    make_gops(&rf, 6, sizes, 2, 4);
    FILE *f = tmpfile();
    bsq_writer *w;
    bsq_error err;
    ck_assert_int_eq(bsq_writer_open_file(f, &rf.info, &w, &err), BSQ_OK);
    ck_assert_int_eq(bsq_writer_write_chunk(w, BSQ_FOURCC('M', 'E', 'T', 'A'), NULL, 0, &err),
                     BSQ_OK);
    write_gops(w, &rf, 2);
    uint8_t blob[5000];
    memset(blob, 0x5a, sizeof blob);
    ck_assert_int_eq(bsq_writer_write_chunk(w, BSQ_FOURCC('z', 'z', 'z', 'z'), blob, sizeof blob,
                                            &err),
                     BSQ_OK);
    /* the container's own types cannot be written as "other" chunks */
    ck_assert_int_eq(bsq_writer_write_chunk(w, BSQ_CHUNK_GOP, blob, 10, &err),
                     BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(bsq_writer_write_chunk(w, BSQ_CHUNK_FOOTER, blob, 16, &err),
                     BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(bsq_writer_close(w, &err), BSQ_OK);
    rf.bytes = slurp(f, &rf.len);
    fclose(f);
    for (int src = 0; src < SRC_SOURCES; src++) {
        outcome o;
        read_all(&rf, rf.bytes, rf.len, (enum source)src, 0, &o);
        expect_complete(&rf, &o);
        ck_assert_uint_eq(o.damage.calls, 0);
    }
    bsq_reader *r;
    ck_assert_int_eq(bsq_reader_open_memory(rf.bytes, rf.len, NULL, &r, &err), BSQ_OK);
    check_index(&rf, r, 1);
    bsq_reader_close(r);
    /* scan without the footer too */
    ck_assert_int_eq(bsq_reader_open_memory(rf.bytes, rf.len - BSQ_FOOTER_SIZE, NULL, &r, &err),
                     BSQ_OK);
    check_index(&rf, r, 0);
    bsq_reader_close(r);
    free_ref(&rf);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Damage                                                                    */

/* What any damaged input must give: in strict mode, the GOPs in order up to
 * an error with a message that names an offset (or all of them, with the
 * damage reported through the callback when it was in a chunk that holds no
 * frames); in skip mode, intact GOPs in order, with every loss reported. */
static void expect_sane(const ref_file *rf, const outcome *o, int skip, const char *what)
{
    if (o->open_st != BSQ_OK) {
        ck_assert_msg(o->msg[0] != 0, "%s: open failed without a message", what);
        ck_assert_msg(o->open_st == BSQ_ERR_FORMAT || o->open_st == BSQ_ERR_UNSUPPORTED,
                      "%s: open gave status %d", what, (int)o->open_st);
        return;
    }
    for (size_t i = 0; i < o->ngops; i++) {
        if (!skip)
            ck_assert_msg(o->refs[i] == i, "%s: GOP %zu out of order", what, i);
        else if (i > 0)
            ck_assert_msg(o->refs[i] > o->refs[i - 1], "%s: GOPs out of order", what);
    }
    if (o->st != BSQ_OK) {
        ck_assert_msg(!skip, "%s: skip mode failed: %s", what, o->msg);
        ck_assert_msg(o->st == BSQ_ERR_FORMAT, "%s: status %d", what, (int)o->st);
        ck_assert_msg(strstr(o->msg, "offset") != NULL, "%s: message without offset: %s", what,
                      o->msg);
    } else if (o->ngops < rf->n) {
        ck_assert_msg(skip, "%s: strict read lost GOPs silently (%zu of %zu)", what, o->ngops,
                      rf->n);
        ck_assert_msg(o->damage.calls > 0, "%s: GOPs lost without a report", what);
    }
}

/* Seeks to a few frames of a damaged input through the index: the GOP then
 * returned, if any, is a correct one that holds the frame (strict) or
 * follows it (skip); otherwise a clear error. */
static void seek_damaged(const ref_file *rf, const uint8_t *b, size_t len, int skip,
                         const char *what)
{
    damage_log d = {0};
    bsq_reader_options opt = {.skip_damaged = skip, .on_damage = on_damage, .opaque = &d};
    bsq_reader *r;
    bsq_error err;
    if (bsq_reader_open_memory(b, len, &opt, &r, &err) != BSQ_OK)
        return;
    uint64_t frames;
    bsq_status st = bsq_reader_frame_count(r, &frames, &err);
    ck_assert_msg(st == BSQ_OK || strstr(err.message, "offset"), "%s: %s", what, err.message);
    ck_assert_uint_le(frames, rf->frames);
    uint64_t targets[3] = {0, rf->frames / 2, rf->frames - 1};
    for (int t = 0; t < 3; t++) {
        st = bsq_reader_seek_frame(r, targets[t], &err);
        if (st != BSQ_OK) {
            ck_assert_msg(err.message[0] != 0, "%s: seek error without message", what);
            continue;
        }
        const bsq_gop *g;
        st = bsq_reader_next_gop(r, &g, &err);
        if (st != BSQ_OK) {
            ck_assert_msg(!skip && strstr(err.message, "offset"), "%s: %s", what, err.message);
            continue;
        }
        if (!g)
            continue; /* skip mode: nothing intact after the frame */
        check_gop(rf, g);
        if (!skip)
            ck_assert(g->first_frame <= targets[t]);
        ck_assert(targets[t] < g->first_frame + g->frame_count);
    }
    bsq_reader_close(r);
}

START_TEST(test_every_byte_corrupted)
{
    ref_file rf;
    small_file(&rf);
    uint8_t *b = malloc(rf.len);
    static const uint8_t masks[] = {0x01, 0xff};
    char what[64];
    for (size_t at = 0; at < rf.len; at++) {
        for (int m = 0; m < 2; m++) {
            memcpy(b, rf.bytes, rf.len);
            b[at] ^= masks[m];
            snprintf(what, sizeof what, "byte %zu ^ 0x%02x", at, masks[m]);
            for (int src = 0; src < SRC_SOURCES; src++) {
                for (int skip = 0; skip < 2; skip++) {
                    outcome o;
                    read_all(&rf, b, rf.len, (enum source)src, skip, &o);
                    expect_sane(&rf, &o, skip, what);
                    if (at < BSQ_FILE_HEADER_SIZE) {
                        /* the header has its own CRC: always refused */
                        ck_assert_msg(o.open_st != BSQ_OK, "%s: damaged header accepted", what);
                        continue;
                    }
                    /* never silent: an error or a report */
                    ck_assert_msg(o.st != BSQ_OK || o.damage.calls > 0,
                                  "%s: damage went unnoticed", what);
                    /* one bad byte costs at most one GOP */
                    if (skip)
                        ck_assert_msg(o.ngops + 1 >= rf.n, "%s: %zu of %zu GOPs recovered", what,
                                      o.ngops, rf.n);
                }
            }
            seek_damaged(&rf, b, rf.len, 0, what);
            seek_damaged(&rf, b, rf.len, 1, what);
        }
    }
    free(b);
    free_ref(&rf);
}
END_TEST

START_TEST(test_every_truncation)
{
    ref_file rf;
    small_file(&rf);
    char what[64];
    for (size_t len = 0; len <= rf.len; len++) {
        /* an exact-size copy, so ASan sees any read past the end */
        uint8_t *b = malloc(len ? len : 1);
        memcpy(b, rf.bytes, len);
        snprintf(what, sizeof what, "truncated to %zu bytes", len);
        for (int src = 0; src < SRC_SOURCES; src++) {
            for (int skip = 0; skip < 2; skip++) {
                outcome o;
                read_all(&rf, b, len, (enum source)src, skip, &o);
                expect_sane(&rf, &o, skip, what);
                if (o.open_st != BSQ_OK)
                    continue;
                /* a truncated file holds a prefix of the GOPs */
                for (size_t i = 0; i < o.ngops; i++)
                    ck_assert_uint_eq(o.refs[i], i);
                if (len < rf.len)
                    ck_assert_msg(o.st != BSQ_OK || o.damage.calls > 0 || o.ngops == rf.n,
                                  "%s: silent", what);
            }
        }
        seek_damaged(&rf, b, len, 0, what);
        seek_damaged(&rf, b, len, 1, what);
        free(b);
    }
    free_ref(&rf);
}
END_TEST

/* A damaged GOP in the middle: strict mode stops there naming the offset;
 * skip mode reports the offset and returns every other GOP. */
START_TEST(test_skip_damaged)
{
    ref_file rf;
    memset(&rf, 0, sizeof rf);
    rf.info = sample_info(3);
    static const size_t sizes[] = {200, 50, 0, 1000};
    make_gops(&rf, 20, sizes, 4, 13);
    write_file(&rf, 5);
    uint8_t *b = malloc(rf.len);
    memcpy(b, rf.bytes, rf.len);
    /* payload of GOP 4, the chunk header of GOP 9, the sync of GOP 15 */
    b[rf.gops[4].offset + BSQ_CHUNK_HEADER_SIZE + 24 + 8 * rf.gops[4].count + 100] ^= 0x20;
    b[rf.gops[9].offset + 9] ^= 0x01;
    b[rf.gops[15].offset] = 'X';
    static const size_t lost[] = {4, 9, 15};
    for (int src = 0; src < SRC_SOURCES; src++) {
        outcome o;
        read_all(&rf, b, rf.len, (enum source)src, 0, &o);
        ck_assert_int_eq(o.st, BSQ_ERR_FORMAT);
        ck_assert_uint_eq(o.ngops, 4);
        char off[32];
        snprintf(off, sizeof off, "offset %lld", (long long)rf.gops[4].offset);
        ck_assert_msg(strstr(o.msg, off) != NULL, "'%s' does not name %s", o.msg, off);

        read_all(&rf, b, rf.len, (enum source)src, 1, &o);
        ck_assert_msg(o.st == BSQ_OK, "%s", o.msg);
        ck_assert_uint_eq(o.ngops, rf.n - 3);
        for (size_t i = 0, k = 0; i < rf.n; i++) {
            if (i == lost[0] || i == lost[1] || i == lost[2])
                continue;
            ck_assert_uint_eq(o.refs[k++], i);
        }
        /* each bad chunk reported at its offset; the frame-count shortfall
         * is not reported since the last GOP is intact */
        ck_assert_uint_eq(o.damage.n, 3);
        for (int k = 0; k < 3; k++)
            ck_assert_int_eq(o.damage.offsets[k], rf.gops[lost[k]].offset);
    }
    /* seeking into a lost GOP in skip mode lands on the next intact one */
    damage_log d = {0};
    bsq_reader_options opt = {.skip_damaged = 1, .on_damage = on_damage, .opaque = &d};
    bsq_reader *r;
    bsq_error err;
    ck_assert_int_eq(bsq_reader_open_memory(b, rf.len, &opt, &r, &err), BSQ_OK);
    ck_assert_int_eq(bsq_reader_seek_frame(r, rf.gops[9].first, &err), BSQ_OK);
    const bsq_gop *g;
    ck_assert_int_eq(bsq_reader_next_gop(r, &g, &err), BSQ_OK);
    ck_assert_uint_eq(check_gop(&rf, g), 10); /* the index finds 9, damaged: the next one */
    ck_assert_uint_eq(d.n, 1);
    ck_assert_int_eq(d.offsets[0], rf.gops[9].offset);
    bsq_reader_close(r);
    /* without the index: scanned, GOP 9 is missing and 10 is returned */
    ck_assert_int_eq(bsq_reader_open_memory(b, rf.len - BSQ_FOOTER_SIZE, &opt, &r, &err), BSQ_OK);
    ck_assert_int_eq(bsq_reader_seek_frame(r, rf.gops[9].first, &err), BSQ_OK);
    ck_assert_int_eq(bsq_reader_next_gop(r, &g, &err), BSQ_OK);
    ck_assert_uint_eq(check_gop(&rf, g), 10);
    bsq_reader_close(r);
    /* strict, no index: frames before the damage are found, later ones give
     * the damage error */
    ck_assert_int_eq(bsq_reader_open_memory(b, rf.len - BSQ_FOOTER_SIZE, NULL, &r, &err), BSQ_OK);
    ck_assert_int_eq(bsq_reader_seek_frame(r, rf.gops[2].first, &err), BSQ_OK);
    ck_assert_int_eq(bsq_reader_seek_frame(r, rf.gops[12].first, &err), BSQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.message, "offset"));
    bsq_reader_close(r);
    free(b);
    free_ref(&rf);
}
END_TEST

/* Recomputes both CRCs of the chunk at b + off (after editing it). */
static void reseal_chunk(uint8_t *b, int64_t off)
{
    uint8_t *c = b + off;
    uint32_t len = (uint32_t)le(c + 8, 4);
    uint32_t h = (uint32_t)crc32(0, c, 16), d = (uint32_t)crc32(0, c + 20, len);
    for (int i = 0; i < 4; i++) {
        c[16 + i] = (uint8_t)(h >> (8 * i));
        c[20 + len + i] = (uint8_t)(d >> (8 * i));
    }
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Reads a forged file strictly and skipping, from memory and as a stream:
 * strict stops after `good` GOPs with a message holding `want`; skip mode
 * reports it and returns the other GOPs. */
static void expect_forged(const ref_file *rf, const uint8_t *b, size_t len, size_t good,
                          const char *want)
{
    for (int src = 0; src < SRC_SOURCES; src += SRC_STREAM) {
        outcome o;
        read_all(rf, b, len, (enum source)src, 0, &o);
        ck_assert_msg(o.open_st == BSQ_OK && o.st == BSQ_ERR_FORMAT, "want '%s', got %d: %s",
                      want, (int)o.st, o.msg);
        ck_assert_msg(strstr(o.msg, want) && strstr(o.msg, "offset"), "'%s' lacks '%s'", o.msg,
                      want);
        ck_assert_uint_eq(o.ngops, good);
        read_all(rf, b, len, (enum source)src, 1, &o);
        expect_sane(rf, &o, 1, want);
        ck_assert_uint_ge(o.damage.calls, 1);
        ck_assert_uint_ge(o.ngops, good);
    }
}

/* Chunks with intact CRCs whose contents break the rules: each rule of the
 * specification is checked. */
START_TEST(test_forged_gops)
{
    ref_file rf;
    small_file(&rf);
    uint8_t *b = malloc(rf.len + 64);
    int64_t g2 = rf.gops[2].offset, g2b = g2 + BSQ_CHUNK_HEADER_SIZE;
    struct {
        int64_t at;
        uint64_t value;
        int bytes;
        const char *want;
    } cases[] = {
        {g2b + 4, 0, 4, "frames (1..3 allowed)"},
        {g2b + 4, 4, 4, "frames (1..3 allowed)"},
        {g2b + 0, 23, 4, "bad payload offset"},
        {g2b + 0, 0xffff, 4, "bad payload offset"},
        {g2b + 8, 0, 8, "starts at frame 0"},
        {g2b + 8, UINT64_C(1) << 50, 8, "too large"},
        {g2b + 24, (uint64_t)rf.gops[1].pts[rf.gops[1].count - 1], 8, "not after the previous"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(b, rf.bytes, rf.len);
        put_le(b + cases[k].at, cases[k].value, cases[k].bytes);
        reseal_chunk(b, g2);
        expect_forged(&rf, b, rf.len, 2, cases[k].want);
    }
    /* pts not increasing inside a GOP */
    ck_assert_uint_ge(rf.gops[2].count, 2);
    memcpy(b, rf.bytes, rf.len);
    put_le(b + g2b + 32, (uint64_t)rf.gops[2].pts[0], 8);
    reseal_chunk(b, g2);
    expect_forged(&rf, b, rf.len, 2, "not after the previous");
    /* a chunk length over the limit, with its header CRC fixed */
    memcpy(b, rf.bytes, rf.len);
    put_le(b + g2 + 8, BSQ_MAX_CHUNK_BODY + 1u, 4);
    uint32_t h = (uint32_t)crc32(0, b + g2, 16);
    put_le(b + g2 + 16, h, 4);
    expect_forged(&rf, b, rf.len, 2, "claims");
    /* a GOP body too short for its fields: a GOP chunk of 10 bytes first */
    memcpy(b, rf.bytes, BSQ_FILE_HEADER_SIZE);
    uint8_t *c = b + BSQ_FILE_HEADER_SIZE;
    memcpy(c, "BSQCGOP ", 8);
    put_le(c + 8, 10, 4);
    put_le(c + 12, 0, 4);
    memset(c + 20, 0, 10);
    reseal_chunk(b, BSQ_FILE_HEADER_SIZE);
    memcpy(c + 34, rf.bytes + BSQ_FILE_HEADER_SIZE, rf.len - BSQ_FILE_HEADER_SIZE);
    outcome o;
    read_all(&rf, b, rf.len + 34, SRC_MEM, 0, &o);
    ck_assert_int_eq(o.st, BSQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(o.msg, "too short"));
    /* a header that declares fewer frames than the GOPs hold */
    memcpy(b, rf.bytes, rf.len);
    put_le(b + 64, rf.frames - 1, 8);
    fix_header_crc(b, BSQ_FILE_HEADER_SIZE);
    read_all(&rf, b, rf.len, SRC_MEM, 0, &o);
    ck_assert_int_eq(o.st, BSQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(o.msg, "past the"));
    ck_assert_uint_eq(o.ngops, rf.n - 1);
    /* header fields out of range, CRC intact */
    memcpy(b, rf.bytes, rf.len);
    b[72] = 0; /* L */
    fix_header_crc(b, BSQ_FILE_HEADER_SIZE);
    read_all(&rf, b, rf.len, SRC_MEM, 0, &o);
    ck_assert_int_eq(o.open_st, BSQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(o.msg, "L = 0"));
    memcpy(b, rf.bytes, rf.len);
    memset(b + 96, 'x', 16); /* prior name without NUL */
    fix_header_crc(b, BSQ_FILE_HEADER_SIZE);
    read_all(&rf, b, rf.len, SRC_MEM, 0, &o);
    ck_assert_int_eq(o.open_st, BSQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(o.msg, "prior name"));
    free(b);
    free_ref(&rf);
}
END_TEST

/* A forged footer or index: reported, then the reader scans; an index entry
 * that does not match its chunk is caught when the chunk is read. */
START_TEST(test_forged_index)
{
    ref_file rf;
    small_file(&rf);
    uint8_t *b = malloc(rf.len);
    int64_t foot = (int64_t)rf.len - BSQ_FOOTER_SIZE;
    int64_t idx = (int64_t)le(rf.bytes + foot + 20, 8);
    struct {
        int64_t at, chunk;
        uint64_t value;
        int bytes;
    } cases[] = {
        {foot + 20, foot, 0, 8},                        /* index offset inside the header */
        {foot + 20, foot, (uint64_t)foot, 8},           /* index offset past the end */
        {foot + 20, foot, (uint64_t)rf.gops[1].offset, 8}, /* not an INDX chunk there */
        {foot + 28, foot, rf.frames + 1, 8},            /* frame count */
        {idx + 24, idx, 39, 4},                         /* entry size */
        {idx + 20, idx, 1000, 4},                       /* entry count */
        {idx + 28 + 40 + 8, idx, 7, 8},                 /* entry 1: first frame */
        {idx + 28 + 40 + 32, idx, 0, 4},                /* entry 1: frame count */
        {idx + 28 + 40, idx, 3, 8},                     /* entry 1: offset */
        {idx + 28 + 40 + 16, idx, (uint64_t)INT64_MIN, 8}, /* entry 1: pts before entry 0 */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(b, rf.bytes, rf.len);
        put_le(b + cases[k].at, cases[k].value, cases[k].bytes);
        reseal_chunk(b, cases[k].chunk);
        damage_log d = {0};
        bsq_reader_options opt = {.on_damage = on_damage, .opaque = &d};
        bsq_reader *r;
        bsq_error err;
        ck_assert_int_eq(bsq_reader_open_memory(b, rf.len, &opt, &r, &err), BSQ_OK);
        ck_assert_int_eq(bsq_reader_load_index(r, &err), BSQ_OK);
        ck_assert_msg(bsq_reader_index_from_footer(r) == 0, "case %zu: forged index used", k);
        ck_assert_uint_eq(d.calls, 1);
        ck_assert_int_eq(d.offsets[0], foot);
        size_t n;
        bsq_reader_index(r, &n);
        ck_assert_uint_eq(n, rf.n);
        bsq_reader_close(r);
    }
    /* the footer's frame count against the header, read sequentially */
    memcpy(b, rf.bytes, rf.len);
    put_le(b + foot + 28, rf.frames + 1, 8);
    reseal_chunk(b, foot);
    outcome o;
    read_all(&rf, b, rf.len, SRC_STREAM, 0, &o);
    ck_assert_int_eq(o.st, BSQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(o.msg, "footer"));
    ck_assert_uint_eq(o.ngops, rf.n);
    /* an entry consistent in itself that does not match its chunk */
    memcpy(b, rf.bytes, rf.len);
    put_le(b + idx + 28 + 16, (uint64_t)(rf.gops[0].pts[0] - 1), 8);
    reseal_chunk(b, idx);
    bsq_reader *r;
    bsq_error err;
    ck_assert_int_eq(bsq_reader_open_memory(b, rf.len, NULL, &r, &err), BSQ_OK);
    ck_assert_int_eq(bsq_reader_load_index(r, &err), BSQ_OK);
    ck_assert_int_eq(bsq_reader_index_from_footer(r), 1);
    ck_assert_int_eq(bsq_reader_seek_frame(r, 0, &err), BSQ_OK);
    const bsq_gop *g;
    ck_assert_int_eq(bsq_reader_next_gop(r, &g, &err), BSQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.message, "index entry"));
    /* a seek clears the error */
    ck_assert_int_eq(bsq_reader_seek_frame(r, rf.gops[1].first, &err), BSQ_OK);
    ck_assert_int_eq(bsq_reader_next_gop(r, &g, &err), BSQ_OK);
    ck_assert_uint_eq(check_gop(&rf, g), 1);
    bsq_reader_close(r);
    free(b);
    free_ref(&rf);
}
END_TEST

/* A stream whose header promised more frames than it holds is truncated. */
START_TEST(test_missing_frames)
{
    ref_file rf;
    small_file(&rf);
    const ref_gop *last = &rf.gops[rf.n - 1];
    size_t len = (size_t)last->offset; /* the last GOP and what follows, gone */
    outcome o;
    read_all(&rf, rf.bytes, len, SRC_STREAM, 0, &o);
    ck_assert_int_eq(o.st, BSQ_ERR_FORMAT);
    ck_assert_uint_eq(o.ngops, rf.n - 1);
    ck_assert_ptr_nonnull(strstr(o.msg, "declares"));
    read_all(&rf, rf.bytes, len, SRC_STREAM, 1, &o);
    ck_assert_int_eq(o.st, BSQ_OK);
    ck_assert_uint_eq(o.ngops, rf.n - 1);
    ck_assert_uint_eq(o.damage.calls, 1);
    /* data after the footer */
    uint8_t *b = malloc(rf.len + 3);
    memcpy(b, rf.bytes, rf.len);
    memcpy(b + rf.len, "abc", 3);
    read_all(&rf, b, rf.len + 3, SRC_MEM, 0, &o);
    ck_assert_int_eq(o.st, BSQ_ERR_FORMAT);
    ck_assert_uint_eq(o.ngops, rf.n);
    ck_assert_ptr_nonnull(strstr(o.msg, "after the footer"));
    free(b);
    free_ref(&rf);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */

START_TEST(test_write_errors)
{
    bsq_stream_info in = sample_info(2);
    bsq_writer *w;
    bsq_error err;
    /* a full disk: the header write fails already */
    FILE *f = fopen("/dev/full", "w");
    if (f) {
        ck_assert_int_eq(bsq_writer_open_file(f, &in, &w, &err), BSQ_ERR_IO);
        ck_assert_ptr_nonnull(strstr(err.message, "offset"));
        fclose(f);
    }
    int fd = open("/dev/full", O_WRONLY);
    if (fd >= 0) {
        ck_assert_int_eq(bsq_writer_open_fd(fd, &in, &w, &err), BSQ_ERR_IO);
        ck_assert_ptr_nonnull(strstr(err.message, strerror(ENOSPC)));
        close(fd);
    }
    /* a disk that fills up later: the failing call reports it, and every
     * later one, including close */
    for (size_t limit = 100; limit < 2000; limit += 97) {
        cookie ck = {.write_limit = limit};
        cookie_io_functions_t io = {.write = cookie_write};
        f = fopencookie(&ck, "w", io);
        ck_assert_ptr_nonnull(f);
        setvbuf(f, NULL, _IOFBF, 64);
        bsq_status st = bsq_writer_open_file(f, &in, &w, &err);
        if (st != BSQ_OK) {
            ck_assert_int_eq(st, BSQ_ERR_IO);
            ck_assert_ptr_nonnull(strstr(err.message, strerror(ENOSPC)));
            fclose(f);
            continue;
        }
        uint8_t payload[100] = {0};
        int64_t pts[2];
        for (int g = 0; g < 10 && st == BSQ_OK; g++) {
            pts[0] = 2 * g;
            pts[1] = 2 * g + 1;
            bsq_gop gop = {.first_frame = 2 * (uint64_t)g, .frame_count = 2, .pts = pts,
                           .payload = payload, .payload_size = sizeof payload};
            st = bsq_writer_write_gop(w, &gop, &err);
        }
        if (st != BSQ_OK) {
            ck_assert_int_eq(st, BSQ_ERR_IO);
            ck_assert_ptr_nonnull(strstr(err.message, strerror(ENOSPC)));
            /* sticky: later calls report it too */
            bsq_gop gop = {.first_frame = bsq_writer_frames(w), .frame_count = 1, .pts = pts};
            pts[0] = 1000;
            ck_assert_int_eq(bsq_writer_write_gop(w, &gop, &err), BSQ_ERR_IO);
            ck_assert_int_eq(write_meta(w, &err), BSQ_ERR_IO);
            ck_assert_ptr_nonnull(strstr(err.message, strerror(ENOSPC)));
        }
        /* the whole stream is larger than the limit: close fails too */
        ck_assert_int_eq(bsq_writer_close(w, &err), BSQ_ERR_IO);
        ck_assert_ptr_nonnull(strstr(err.message, strerror(ENOSPC)));
        fclose(f);
    }
    /* a pipe with no reader: EPIPE, not a crash (SIGPIPE ignored here) */
    signal(SIGPIPE, SIG_IGN);
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    close(fds[0]);
    ck_assert_int_eq(bsq_writer_open_fd(fds[1], &in, &w, &err), BSQ_ERR_IO);
    close(fds[1]);
}
END_TEST

START_TEST(test_writer_arguments)
{
    bsq_stream_info in = sample_info(4);
    bsq_writer *w;
    bsq_error err;
    const bsq_gop *gp;
    FILE *f = tmpfile();
    /* header fields out of range */
    bsq_stream_info bad = in;
    bad.L = 65;
    ck_assert_int_eq(bsq_writer_open_file(f, &bad, &w, &err), BSQ_ERR_INVALID_ARGUMENT);
    bad = in;
    bad.time_base_den = 0;
    ck_assert_int_eq(bsq_writer_open_file(f, &bad, &w, &err), BSQ_ERR_INVALID_ARGUMENT);
    bad = in;
    strcpy(bad.prior_name, "has space");
    ck_assert_int_eq(bsq_writer_open_file(f, &bad, &w, &err), BSQ_ERR_INVALID_ARGUMENT);
    bad = in;
    bad.rotation = 360;
    ck_assert_int_eq(bsq_writer_open_file(f, &bad, &w, &err), BSQ_ERR_INVALID_ARGUMENT);
    bad = in;
    bad.tiles_x = 4096;
    bad.tiles_y = 4096;
    ck_assert_int_eq(bsq_writer_open_file(f, &bad, &w, &err), BSQ_ERR_INVALID_ARGUMENT);
    /* GOPs */
    ck_assert_int_eq(bsq_writer_open_file(f, &in, &w, &err), BSQ_OK);
    int64_t pts[5] = {10, 20, 30, 40, 50};
    uint8_t p = 1;
    bsq_gop g = {.first_frame = 0, .frame_count = 0, .pts = pts, .payload = &p, .payload_size = 1};
    ck_assert_int_eq(bsq_writer_write_gop(w, &g, &err), BSQ_ERR_INVALID_ARGUMENT);
    g.frame_count = 5; /* more than num_frames */
    ck_assert_int_eq(bsq_writer_write_gop(w, &g, &err), BSQ_ERR_INVALID_ARGUMENT);
    g.frame_count = 2;
    g.first_frame = 1; /* not the next frame */
    ck_assert_int_eq(bsq_writer_write_gop(w, &g, &err), BSQ_ERR_INVALID_ARGUMENT);
    g.first_frame = 0;
    pts[1] = 10; /* not increasing */
    ck_assert_int_eq(bsq_writer_write_gop(w, &g, &err), BSQ_ERR_INVALID_ARGUMENT);
    pts[1] = 20;
    ck_assert_int_eq(bsq_writer_write_gop(w, &g, &err), BSQ_OK);
    g.first_frame = 2;
    g.pts = pts + 1; /* 20 again: before the previous GOP's last */
    ck_assert_int_eq(bsq_writer_write_gop(w, &g, &err), BSQ_ERR_INVALID_ARGUMENT);
    g.pts = pts + 2;
    ck_assert_int_eq(bsq_writer_write_gop(w, &g, &err), BSQ_OK);
    ck_assert_int_eq(bsq_writer_close(w, &err), BSQ_OK);
    fclose(f);

    /* a declared frame count that a non-seekable output cannot honour */
    in.frame_count = 3;
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    ck_assert_int_eq(bsq_writer_open_fd(fds[1], &in, &w, &err), BSQ_OK);
    g.first_frame = 0;
    g.pts = pts;
    g.frame_count = 4;
    ck_assert_int_eq(bsq_writer_write_gop(w, &g, &err), BSQ_ERR_INVALID_ARGUMENT);
    g.frame_count = 2;
    ck_assert_int_eq(bsq_writer_write_gop(w, &g, &err), BSQ_OK);
    ck_assert_int_eq(bsq_writer_close(w, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "declares 3"));
    close(fds[0]);
    close(fds[1]);
    /* a seekable one gets the count patched */
    f = tmpfile();
    ck_assert_int_eq(bsq_writer_open_file(f, &in, &w, &err), BSQ_OK);
    ck_assert_int_eq(bsq_writer_write_gop(w, &g, &err), BSQ_OK);
    ck_assert_int_eq(bsq_writer_close(w, &err), BSQ_OK);
    rewind(f);
    bsq_reader *r;
    ck_assert_int_eq(bsq_reader_open_file(f, NULL, &r, &err), BSQ_OK);
    ck_assert_uint_eq(bsq_reader_info(r)->frame_count, 2);
    bsq_reader_close(r);
    fclose(f);
    /* the same through a file descriptor (pwrite), after a few junk bytes */
    f = tmpfile();
    int fd = fileno(f);
    ck_assert_int_eq(write(fd, "xyz", 3), 3);
    ck_assert_int_eq(bsq_writer_open_fd(fd, &in, &w, &err), BSQ_OK);
    ck_assert_int_eq(bsq_writer_write_gop(w, &g, &err), BSQ_OK);
    ck_assert_int_eq(bsq_writer_close(w, &err), BSQ_OK);
    ck_assert_int_eq(lseek(fd, 3, SEEK_SET), 3);
    ck_assert_int_eq(bsq_reader_open_fd(fd, NULL, &r, &err), BSQ_OK);
    ck_assert_uint_eq(bsq_reader_info(r)->frame_count, 2);
    ck_assert_int_eq(bsq_reader_next_gop(r, &gp, &err), BSQ_OK);
    ck_assert_ptr_nonnull(gp);
    ck_assert_int_eq(gp->offset, BSQ_FILE_HEADER_SIZE);
    ck_assert_int_eq(bsq_reader_next_gop(r, &gp, &err), BSQ_OK);
    ck_assert_ptr_null(gp);
    bsq_reader_close(r);
    fclose(f);
}
END_TEST

START_TEST(test_model_checks)
{
    bsq_stream_info in = sample_info(4);
    bsq_error err;
    ck_assert_int_eq(bsq_stream_info_check_models(&in, in.tokenizer_fingerprint, "context",
                                                  in.prior_fingerprint, &err),
                     BSQ_OK);
    uint8_t other[32];
    memcpy(other, in.tokenizer_fingerprint, 32);
    other[31] ^= 0xff;
    ck_assert_int_eq(bsq_stream_info_check_models(&in, other, "context", in.prior_fingerprint,
                                                  &err),
                     BSQ_ERR_MODEL);
    char hex[65];
    bsq_hex(in.tokenizer_fingerprint, 32, hex);
    ck_assert_msg(strstr(err.message, hex) != NULL, "%s", err.message);
    bsq_hex(other, 32, hex);
    ck_assert_msg(strstr(err.message, hex) != NULL, "%s", err.message);
    ck_assert_int_eq(bsq_stream_info_check_models(&in, NULL, "learned", NULL, &err),
                     BSQ_ERR_MODEL);
    ck_assert_ptr_nonnull(strstr(err.message, "learned"));
    ck_assert_ptr_nonnull(strstr(err.message, "context"));

    bsq_config c = {.image_height = 128, .image_width = 128, .patch_size = 8, .L = 18,
                    .num_frames = 4};
    ck_assert_int_eq(bsq_stream_info_check_config(&in, &c, &err), BSQ_OK);
    c.L = 36;
    ck_assert_int_eq(bsq_stream_info_check_config(&in, &c, &err), BSQ_ERR_MODEL);
    c.L = 18;
    c.patch_size = 16;
    ck_assert_int_eq(bsq_stream_info_check_config(&in, &c, &err), BSQ_ERR_MODEL);
}
END_TEST

static Suite *container_suite(void)
{
    Suite *s = suite_create("container");
    TCase *rt = tcase_create("roundtrip");
    tcase_set_timeout(rt, 120);
    tcase_add_test(rt, test_header_fields);
    tcase_add_test(rt, test_spec_example);
    tcase_add_test(rt, test_many_gops_vfr);
    tcase_add_test(rt, test_large_payload);
    tcase_add_test(rt, test_stream_at_offset);
    tcase_add_test(rt, test_index_and_scan);
    tcase_add_test(rt, test_stream_seek);
    tcase_add_test(rt, test_pipe);
    tcase_add_test(rt, test_versions_and_reserved);
    tcase_add_test(rt, test_unknown_chunks);
    suite_add_tcase(s, rt);
    TCase *dm = tcase_create("damage");
    tcase_set_timeout(dm, 300);
    tcase_add_test(dm, test_every_byte_corrupted);
    tcase_add_test(dm, test_every_truncation);
    tcase_add_test(dm, test_skip_damaged);
    tcase_add_test(dm, test_missing_frames);
    tcase_add_test(dm, test_forged_gops);
    tcase_add_test(dm, test_forged_index);
    suite_add_tcase(s, dm);
    TCase *wr = tcase_create("writer");
    tcase_add_test(wr, test_write_errors);
    tcase_add_test(wr, test_writer_arguments);
    tcase_add_test(wr, test_model_checks);
    suite_add_tcase(s, wr);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(container_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
