/* libFuzzer target for the .bsq container reader (lib/codec/container.c).
 *
 * Each input is read in strict and in skip-damaged mode, from memory (the
 * seekable path: footer, index, scan, seeks) and from a FILE without a seek
 * function (the streaming path: windowed reads, resynchronisation, forward
 * seeks). Every GOP returned is touched in full so ASan sees any read out of
 * bounds. An input that reads cleanly in strict mode is written again with the
 * writer and must read back identical: what the reader accepts, the writer
 * can produce. See tests/fuzz/README.md. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "codec/container.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct mem_cookie {
    const uint8_t *data;
    size_t len, pos;
} mem_cookie;

/* Reads in uneven pieces, as a pipe delivers them. */
static ssize_t cookie_read(void *c_, char *buf, size_t n)
{
    mem_cookie *c = c_;
    size_t k = c->len - c->pos < n ? c->len - c->pos : n;
    if (k > 13)
        k = k / 3 + 1;
    memcpy(buf, c->data + c->pos, k);
    c->pos += k;
    return (ssize_t)k;
}

static void on_damage(void *opaque, int64_t offset, const char *message)
{
    (void)offset;
    if (!message || !strstr(message, "offset"))
        abort(); /* every report names where */
    ++*(uint64_t *)opaque;
}

/* Folds a GOP into a checksum, reading every byte it points to. */
static uint64_t touch(const bsq_gop *g)
{
    uint64_t h = g->first_frame * 31 + g->frame_count;
    for (uint32_t i = 0; i < g->frame_count; i++)
        h = h * 1099511628211u ^ (uint64_t)g->pts[i];
    for (size_t i = 0; i < g->payload_size; i++)
        h = h * 31 + g->payload[i];
    return h;
}

/* A copy of the GOPs of a clean read, to write them again. */
typedef struct saved {
    bsq_gop *gops;
    size_t n, cap;
} saved;

static void save(saved *s, const bsq_gop *g)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->gops = realloc(s->gops, s->cap * sizeof *s->gops);
        if (!s->gops)
            abort();
    }
    bsq_gop c = *g;
    int64_t *pts = malloc(g->frame_count * sizeof *pts);
    uint8_t *payload = malloc(g->payload_size + 1);
    if (!pts || !payload)
        abort();
    memcpy(pts, g->pts, g->frame_count * sizeof *pts);
    if (g->payload_size)
        memcpy(payload, g->payload, g->payload_size);
    c.pts = pts;
    c.payload = payload;
    s->gops[s->n++] = c;
}

static void saved_free(saved *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free((void *)s->gops[i].pts);
        free((void *)s->gops[i].payload);
    }
    free(s->gops);
}

/* Reads every GOP; returns the status of the walk. */
static bsq_status walk(bsq_reader *r, saved *keep, uint64_t *h)
{
    bsq_error err;
    for (;;) {
        const bsq_gop *g;
        bsq_status st = bsq_reader_next_gop(r, &g, &err);
        if (st != BSQ_OK) {
            if (!err.message[0])
                abort(); /* an error always says what */
            return st;
        }
        if (!g)
            return BSQ_OK;
        *h += touch(g);
        if (keep)
            save(keep, g);
    }
}

/* Writes the GOPs of a clean read again and checks they read back equal. */
static void rewrite(const bsq_stream_info *info, const saved *s)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return;
    bsq_writer *w;
    bsq_error err;
    bsq_stream_info in = *info;
    in.frame_count = 0; /* patched at close */
    if (bsq_writer_open_file(f, &in, &w, &err) != BSQ_OK)
        abort(); /* the reader accepted this header */
    for (size_t i = 0; i < s->n; i++) {
        bsq_gop g = s->gops[i];
        if (bsq_writer_write_gop(w, &g, &err) != BSQ_OK)
            abort(); /* the reader accepted these GOPs in this order */
    }
    if (bsq_writer_close(w, &err) != BSQ_OK)
        abort();
    fclose(f);
    bsq_reader *r;
    if (bsq_reader_open_memory(buf, len, NULL, &r, &err) != BSQ_OK)
        abort();
    uint64_t frames;
    if (bsq_reader_frame_count(r, &frames, &err) != BSQ_OK || !bsq_reader_index_from_footer(r))
        abort();
    size_t n = 0;
    for (;;) {
        const bsq_gop *g;
        if (bsq_reader_next_gop(r, &g, &err) != BSQ_OK)
            abort();
        if (!g)
            break;
        const bsq_gop *o = &s->gops[n++];
        if (g->first_frame != o->first_frame || g->frame_count != o->frame_count ||
            g->flags != o->flags || g->payload_size != o->payload_size ||
            memcmp(g->pts, o->pts, g->frame_count * sizeof *g->pts) != 0 ||
            (g->payload_size && memcmp(g->payload, o->payload, g->payload_size) != 0))
            abort();
    }
    if (n != s->n || frames != (n ? s->gops[n - 1].first_frame + s->gops[n - 1].frame_count : 0))
        abort();
    bsq_reader_close(r);
    free(buf);
}

static void seekable_pass(const uint8_t *data, size_t size, int skip, uint64_t *h)
{
    uint64_t reports = 0;
    bsq_reader_options opt = {.skip_damaged = skip, .on_damage = on_damage, .opaque = &reports};
    bsq_reader *r;
    bsq_error err;
    if (bsq_reader_open_memory(data, size, &opt, &r, &err) != BSQ_OK)
        return;
    saved keep = {0};
    bsq_status st = walk(r, skip ? NULL : &keep, h);
    if (!skip && st == BSQ_OK)
        rewrite(bsq_reader_info(r), &keep);
    saved_free(&keep);
    /* the index, then seeks around the stream */
    uint64_t frames = 0;
    bsq_reader_frame_count(r, &frames, &err);
    size_t n;
    const bsq_index_entry *e = bsq_reader_index(r, &n);
    for (size_t i = 0; i < n; i++)
        *h += (uint64_t)e[i].offset + e[i].first_frame;
    uint64_t targets[5] = {0, frames / 3, frames / 2, frames ? frames - 1 : 0, frames};
    for (int t = 0; t < 5; t++) {
        if (bsq_reader_seek_frame(r, targets[t], &err) != BSQ_OK)
            continue;
        const bsq_gop *g;
        for (int k = 0; k < 3; k++) {
            if (bsq_reader_next_gop(r, &g, &err) != BSQ_OK || !g)
                break;
            if (k == 0 && !skip && !(g->first_frame <= targets[t] &&
                                     targets[t] < g->first_frame + g->frame_count))
                abort(); /* strict seeks land on the GOP holding the frame */
            *h += touch(g);
        }
    }
    if (bsq_reader_damage_count(r) != reports)
        abort();
    bsq_reader_close(r);
}

static void stream_pass(const uint8_t *data, size_t size, int skip, uint64_t *h)
{
    mem_cookie c = {.data = data, .len = size};
    cookie_io_functions_t io = {.read = cookie_read};
    FILE *f = fopencookie(&c, "r", io);
    if (!f)
        return;
    uint64_t reports = 0;
    bsq_reader_options opt = {.skip_damaged = skip, .on_damage = on_damage, .opaque = &reports};
    bsq_reader *r;
    bsq_error err;
    if (bsq_reader_open_file(f, &opt, &r, &err) == BSQ_OK) {
        if (bsq_reader_seekable(r))
            abort();
        /* a forward seek, then the rest */
        if (bsq_reader_seek_frame(r, size % 7, &err) == BSQ_OK)
            walk(r, NULL, h);
        bsq_reader_close(r);
    }
    fclose(f);
}

/* The FILE path on a seekable stream (fmemopen): windowed reads at offsets. */
static void file_pass(const uint8_t *data, size_t size, int skip, uint64_t *h)
{
    if (size == 0)
        return;
    FILE *f = fmemopen((void *)data, size, "r");
    if (!f)
        return;
    uint64_t reports = 0;
    bsq_reader_options opt = {.skip_damaged = skip, .on_damage = on_damage, .opaque = &reports};
    bsq_reader *r;
    bsq_error err;
    if (bsq_reader_open_file(f, &opt, &r, &err) == BSQ_OK) {
        uint64_t frames;
        bsq_reader_frame_count(r, &frames, &err);
        if (frames > 0 && bsq_reader_seek_frame(r, frames - 1, &err) == BSQ_OK)
            walk(r, NULL, h);
        if (bsq_reader_seek_frame(r, 0, &err) == BSQ_OK)
            walk(r, NULL, h);
        bsq_reader_close(r);
    }
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t h = 0;
    for (int skip = 0; skip < 2; skip++) {
        seekable_pass(data, size, skip, &h);
        stream_pass(data, size, skip, &h);
        file_pass(data, size, skip, &h);
    }
    /* keep the checksum alive so the reads are not optimised away */
    volatile uint64_t sink = h;
    (void)sink;
    return 0;
}
