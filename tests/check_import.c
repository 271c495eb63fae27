/* Import of official-layout torch.save checkpoints: the zip reader, the
 * pickle VM and the checkpoint importer, on the fixture and on hand-made
 * and corrupted inputs. Self-contained (no test utilities). */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "checkpoint.h"
#include "json.h"
#include "pickle.h"
#include "safetensors.h"
#include "tensorset.h"
#include "zip.h"

#ifndef TEST_DATA_DIR
#error "TEST_DATA_DIR must be defined"
#endif

#define FIXTURE_PT TEST_DATA_DIR "/official-checkpoint/official_layout_tiny.pt"
#define FIXTURE_EXPECTED TEST_DATA_DIR "/official-checkpoint/official_layout_tiny.expected.safetensors"

/* ------------------------------------------------------------ helpers */

typedef struct buf {
    unsigned char *p;
    size_t len, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        ck_assert_ptr_nonnull(b->p);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void put8(buf *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    put(b, &c, 1);
}
static void put16(buf *b, unsigned v)
{
    put8(b, v & 0xff);
    put8(b, v >> 8 & 0xff);
}
static void put32(buf *b, uint32_t v)
{
    put16(b, v & 0xffff);
    put16(b, v >> 16);
}
static void put64(buf *b, uint64_t v)
{
    put32(b, (uint32_t)v);
    put32(b, (uint32_t)(v >> 32));
}
static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(n > 0 ? (size_t)n : 1);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static void write_all(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    if (n)
        ck_assert_uint_eq(fwrite(p, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

/* A per-test scratch directory (tests run in forked children). */
typedef struct scratch {
    char dir[64];
    char path[128];
} scratch;

static void scratch_init(scratch *s)
{
    strcpy(s->dir, "/tmp/check_import_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(s->dir));
    snprintf(s->path, sizeof s->path, "%s/case.pt", s->dir);
}

static void scratch_done(scratch *s)
{
    unlink(s->path);
    rmdir(s->dir);
}

/* Imports bytes through a file; returns the status, leaves ts filled. */
static bsq_status import_bytes(scratch *s, const void *p, size_t n, bsq_tensorset *ts,
                               bsq_error *err)
{
    write_all(s->path, p, n);
    bsq_tensorset_init(ts);
    memset(err, 0, sizeof *err);
    return bsq_checkpoint_read(s->path, ts, err);
}

/* Imports bytes that must be refused: non-OK, a message, an empty set. */
static void expect_refused(scratch *s, const void *p, size_t n, const char *what)
{
    bsq_tensorset ts;
    bsq_error err;
    bsq_status st = import_bytes(s, p, n, &ts, &err);
    ck_assert_msg(st != BSQ_OK, "%s: accepted", what);
    ck_assert_msg(err.code == st, "%s: err.code %d != status %d", what, err.code, st);
    ck_assert_msg(err.message[0] != '\0', "%s: empty message", what);
    ck_assert_uint_eq(ts.count, 0);
    bsq_tensorset_free(&ts);
}

/* ---- a small zip writer: stored or deflated entries, optional zip64 */

typedef struct zent {
    const char *name;
    const void *data;
    size_t len;
    int deflate;
} zent;

static unsigned char *deflate_raw(const void *src, size_t n, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    ck_assert_int_eq(deflateInit2(&z, 9, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&z, (uLong)n);
    unsigned char *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    z.next_in = (Bytef *)(uintptr_t)src;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    ck_assert_int_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

static buf make_zip(const zent *e, size_t n, int zip64)
{
    buf z = {0};
    uint64_t *offs = calloc(n, sizeof *offs), *comp = calloc(n, sizeof *comp);
    uint32_t *crcs = calloc(n, sizeof *crcs);
    ck_assert(offs && comp && crcs);
    for (size_t i = 0; i < n; i++) {
        size_t clen = e[i].len;
        unsigned char *c = NULL;
        const void *data = e[i].data;
        if (e[i].deflate) {
            c = deflate_raw(e[i].data, e[i].len, &clen);
            data = c;
        }
        offs[i] = z.len;
        comp[i] = clen;
        crcs[i] = (uint32_t)crc32(0, e[i].data, (uInt)e[i].len);
        put32(&z, 0x04034b50);
        put16(&z, 20);
        put16(&z, 0);
        put16(&z, e[i].deflate ? 8 : 0);
        put32(&z, 0);
        put32(&z, crcs[i]);
        put32(&z, (uint32_t)clen);
        put32(&z, (uint32_t)e[i].len);
        put16(&z, (unsigned)strlen(e[i].name));
        put16(&z, 0);
        puts_(&z, e[i].name);
        put(&z, data, clen);
        free(c);
    }
    uint64_t cd_off = z.len;
    for (size_t i = 0; i < n; i++) {
        put32(&z, 0x02014b50);
        put16(&z, 0x031e);
        put16(&z, zip64 ? 45 : 20);
        put16(&z, 0);
        put16(&z, e[i].deflate ? 8 : 0);
        put32(&z, 0);
        put32(&z, crcs[i]);
        put32(&z, zip64 ? 0xffffffffu : (uint32_t)comp[i]);
        put32(&z, zip64 ? 0xffffffffu : (uint32_t)e[i].len);
        put16(&z, (unsigned)strlen(e[i].name));
        put16(&z, zip64 ? 28 : 0);
        put16(&z, 0);
        put16(&z, 0);
        put16(&z, 0);
        put32(&z, 0);
        put32(&z, zip64 ? 0xffffffffu : (uint32_t)offs[i]);
        puts_(&z, e[i].name);
        if (zip64) {
            put16(&z, 1);
            put16(&z, 24);
            put64(&z, e[i].len);
            put64(&z, comp[i]);
            put64(&z, offs[i]);
        }
    }
    uint64_t cd_size = z.len - cd_off;
    if (zip64) {
        uint64_t e64 = z.len;
        put32(&z, 0x06064b50);
        put64(&z, 44);
        put16(&z, 45);
        put16(&z, 45);
        put32(&z, 0);
        put32(&z, 0);
        put64(&z, n);
        put64(&z, n);
        put64(&z, cd_size);
        put64(&z, cd_off);
        put32(&z, 0x07064b50);
        put32(&z, 0);
        put64(&z, e64);
        put32(&z, 1);
    }
    put32(&z, 0x06054b50);
    put16(&z, 0);
    put16(&z, 0);
    put16(&z, zip64 ? 0xffff : (unsigned)n);
    put16(&z, zip64 ? 0xffff : (unsigned)n);
    put32(&z, zip64 ? 0xffffffffu : (uint32_t)cd_size);
    put32(&z, zip64 ? 0xffffffffu : (uint32_t)cd_off);
    put16(&z, 0);
    free(offs);
    free(comp);
    free(crcs);
    return z;
}

/* ---- a pickle writer for hand-made checkpoints (protocol 2 opcodes) */

static void pk_str(buf *b, const char *s)
{
    put8(b, 'X');
    put32(b, (uint32_t)strlen(s));
    puts_(b, s);
}
static void pk_int(buf *b, int64_t v)
{
    if (v >= 0 && v < 256) {
        put8(b, 'K');
        put8(b, (unsigned)v);
    } else if (v >= 0 && v < 65536) {
        put8(b, 'M');
        put16(b, (unsigned)v);
    } else {
        put8(b, 'J');
        put32(b, (uint32_t)(int32_t)v);
    }
}
static void pk_global(buf *b, const char *mod, const char *name)
{
    put8(b, 'c');
    puts_(b, mod);
    put8(b, '\n');
    puts_(b, name);
    put8(b, '\n');
}
static void pk_tuple_ints(buf *b, const int64_t *v, int n)
{
    put8(b, '(');
    for (int i = 0; i < n; i++)
        pk_int(b, v[i]);
    put8(b, 't');
}
/* _rebuild_tensor_v2(('storage', torch.<cls>, key, 'cpu', numel), off, size, stride, False, OrderedDict()) */
static void pk_tensor(buf *b, const char *cls, const char *key, int64_t numel, int64_t off,
                      const int64_t *size, const int64_t *stride, int ndim)
{
    pk_global(b, "torch._utils", "_rebuild_tensor_v2");
    put8(b, '(');
    put8(b, '(');
    pk_str(b, "storage");
    pk_global(b, "torch", cls);
    pk_str(b, key);
    pk_str(b, "cpu");
    pk_int(b, numel);
    put8(b, 't');
    put8(b, 'Q');
    pk_int(b, off);
    pk_tuple_ints(b, size, ndim);
    pk_tuple_ints(b, stride, ndim);
    put8(b, 0x89);
    pk_global(b, "collections", "OrderedDict");
    put8(b, ')');
    put8(b, 'R');
    put8(b, 't');
    put8(b, 'R');
}

static pickle_value *load_ok(const void *p, size_t n, pickle_doc *doc)
{
    bsq_error err = {0};
    bsq_status st = pickle_load(p, n, doc, &err);
    ck_assert_msg(st == BSQ_OK, "pickle_load: %s", err.message);
    ck_assert_ptr_nonnull(doc->root);
    return doc->root;
}

static void load_bad(const void *p, size_t n, bsq_status want, const char *what)
{
    pickle_doc doc;
    bsq_error err = {0};
    bsq_status st = pickle_load(p, n, &doc, &err);
    ck_assert_msg(st == want, "%s: status %d, wanted %d (%s)", what, st, want, err.message);
    ck_assert_msg(err.message[0] != '\0', "%s: empty message", what);
    ck_assert_ptr_null(doc.root);
    ck_assert_uint_eq(doc.node_count, 0);
}

#define LOAD_BAD(lit, want) load_bad(lit, sizeof(lit) - 1, want, #lit)

/* ------------------------------------------------------------ the fixture */

/* True when every tensor of `want` is in `got` with the same dtype, shape
 * and bytes, and `got` has nothing else but int64 quantize.* buffers. */
static void compare_sets(const bsq_tensorset *got, const bsq_tensorset *want)
{
    for (size_t i = 0; i < want->count; i++) {
        const bsq_tensor *w = &want->items[i];
        const bsq_tensor *g = bsq_tensorset_find(got, w->name);
        ck_assert_msg(g != NULL, "missing tensor %s", w->name);
        ck_assert_msg(g->dtype == w->dtype, "%s: dtype %s, want %s", w->name, bsq_dt_name(g->dtype),
                      bsq_dt_name(w->dtype));
        ck_assert_int_eq(g->ndim, w->ndim);
        for (int d = 0; d < w->ndim; d++)
            ck_assert_msg(g->shape[d] == w->shape[d], "%s: dim %d is %lld, want %lld", w->name, d,
                          (long long)g->shape[d], (long long)w->shape[d]);
        ck_assert_uint_eq(g->nbytes, w->nbytes);
        ck_assert_msg(memcmp(g->data, w->data, w->nbytes) == 0, "%s: data differ", w->name);
    }
    for (size_t i = 0; i < got->count; i++) {
        const bsq_tensor *g = &got->items[i];
        if (bsq_tensorset_find(want, g->name))
            continue;
        ck_assert_msg(strncmp(g->name, "quantize.", 9) == 0 && g->dtype == BSQ_DT_I64,
                      "unexpected tensor %s", g->name);
    }
}

START_TEST(test_sniff)
{
    ck_assert(bsq_checkpoint_sniff("PK\3\4rest", 8));
    ck_assert(!bsq_checkpoint_sniff("PK\3", 3));
    ck_assert(!bsq_checkpoint_sniff("PK\5\6", 4));
    ck_assert(!bsq_checkpoint_sniff("\x80\x02}q", 4));
    size_t n;
    unsigned char *p = read_all(FIXTURE_PT, &n);
    ck_assert(bsq_checkpoint_sniff(p, n));
    free(p);
    p = read_all(FIXTURE_EXPECTED, &n);
    ck_assert(!bsq_checkpoint_sniff(p, n));
    free(p);
}
END_TEST

START_TEST(test_fixture_tensors)
{
    bsq_tensorset got, want;
    bsq_tensorset_init(&got);
    bsq_tensorset_init(&want);
    bsq_error err = {0};
    ck_assert_msg(bsq_checkpoint_read(FIXTURE_PT, &got, &err) == BSQ_OK, "%s", err.message);
    ck_assert_msg(bsq_safetensors_read(FIXTURE_EXPECTED, &want, &err) == BSQ_OK, "%s", err.message);
    ck_assert_uint_eq(want.count, 67);
    compare_sets(&got, &want);
    /* The EMA weights (state_dict + 0.001 would differ), prefix stripped. */
    ck_assert_ptr_null(bsq_tensorset_find(&got, "module.encoder.conv1.weight"));
    const bsq_tensor *basis = bsq_tensorset_find(&got, "quantize.basis");
    ck_assert_ptr_nonnull(basis);
    ck_assert_int_eq(basis->dtype, BSQ_DT_I64);
    ck_assert_int_eq(basis->ndim, 1);
    ck_assert_int_eq(basis->shape[0], 18);
    const bsq_tensor *gb = bsq_tensorset_find(&got, "quantize.group_basis");
    ck_assert_ptr_nonnull(gb);
    ck_assert_int_eq(gb->shape[0], 9);
    ck_assert_uint_eq(got.count, 69);
    bsq_tensorset_free(&got);
    bsq_tensorset_free(&want);
}
END_TEST

static double cfg_num(const json_value *cfg, const char *key)
{
    const json_value *v = json_get(cfg, key);
    ck_assert_msg(v && v->type == JSON_NUMBER, "config lacks %s", key);
    return v->number;
}

START_TEST(test_fixture_config)
{
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    bsq_error err = {0};
    ck_assert_msg(bsq_checkpoint_read(FIXTURE_PT, &ts, &err) == BSQ_OK, "%s", err.message);
    const char *text = bsq_tensorset_meta(&ts, "config");
    ck_assert_ptr_nonnull(text);
    json_value *cfg = NULL;
    ck_assert_msg(json_parse(text, strlen(text), &cfg, &err) == BSQ_OK, "%s: %s", text, err.message);
    ck_assert_int_eq(cfg->type, JSON_OBJECT);
    /* The OmegaConf config holds model.params.{embed_dim, embed_group_size,
     * vitconfig, dvitconfig}; it says nothing of frames or masks. */
    ck_assert(cfg_num(cfg, "heads") == 4);
    ck_assert(cfg_num(cfg, "image_height") == 32);
    ck_assert(cfg_num(cfg, "image_width") == 32);
    ck_assert(cfg_num(cfg, "patch_size") == 8);
    ck_assert(cfg_num(cfg, "width") == 64);
    ck_assert(cfg_num(cfg, "layers") == 2);
    ck_assert(cfg_num(cfg, "mlp_ratio") == 4.0);
    ck_assert(cfg_num(cfg, "decoder_ffn_dim") == 256);
    ck_assert(cfg_num(cfg, "L") == 18);
    ck_assert(cfg_num(cfg, "group_size") == 9);
    ck_assert_ptr_null(json_get(cfg, "num_frames"));
    ck_assert_ptr_null(json_get(cfg, "mask"));
    ck_assert_ptr_null(json_get(cfg, "layer_norm_eps"));
    ck_assert_uint_eq(cfg->count, 10);
    json_free(cfg);
    bsq_tensorset_free(&ts);
}
END_TEST

START_TEST(test_not_empty_set)
{
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    bsq_error err = {0};
    float x = 1;
    int64_t shape[1] = {1};
    ck_assert_int_eq(bsq_tensorset_add(&ts, "x", BSQ_DT_F32, 1, shape, &x, 4, 0, &err), BSQ_OK);
    ck_assert_int_eq(bsq_checkpoint_read(FIXTURE_PT, &ts, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_uint_eq(ts.count, 1);
    bsq_tensorset_free(&ts);
}
END_TEST

/* ------------------------------------------------------------ zip layout of the fixture */

typedef struct layout {
    size_t cd_off, cd_size, eocd;   /* central directory and end record */
    size_t pkl_data, pkl_len;       /* data.pkl bytes in the file */
    size_t pkl_local;               /* its local header */
    size_t pkl_central;             /* its central header */
} layout;

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static unsigned rd16(const unsigned char *p) { return p[0] | (unsigned)p[1] << 8; }

static layout find_layout(const unsigned char *p, size_t n)
{
    layout l;
    memset(&l, 0, sizeof l);
    l.eocd = n - 22;
    ck_assert_uint_eq(rd32(p + l.eocd), 0x06054b50);
    l.cd_off = rd32(p + l.eocd + 16);
    l.cd_size = rd32(p + l.eocd + 12);
    size_t pos = l.cd_off;
    while (pos < l.cd_off + l.cd_size) {
        ck_assert_uint_eq(rd32(p + pos), 0x02014b50);
        unsigned nl = rd16(p + pos + 28), xl = rd16(p + pos + 30), cl = rd16(p + pos + 32);
        if (nl >= 9 && memcmp(p + pos + 46 + nl - 9, "/data.pkl", 9) == 0) {
            l.pkl_central = pos;
            l.pkl_local = rd32(p + pos + 42);
            l.pkl_len = rd32(p + pos + 24);
            const unsigned char *lh = p + l.pkl_local;
            l.pkl_data = l.pkl_local + 30 + rd16(lh + 26) + rd16(lh + 28);
        }
        pos += 46 + nl + xl + cl;
    }
    ck_assert_uint_ne(l.pkl_len, 0);
    return l;
}

/* Rewrites data.pkl's CRC (local and central) so a mutated pickle gets
 * past the zip layer and reaches the pickle VM. */
static void fix_pkl_crc(unsigned char *p, const layout *l)
{
    uint32_t crc = (uint32_t)crc32(0, p + l->pkl_data, (uInt)l->pkl_len);
    for (int i = 0; i < 4; i++) {
        p[l->pkl_local + 14 + (size_t)i] = (unsigned char)(crc >> (8 * i));
        p[l->pkl_central + 16 + (size_t)i] = (unsigned char)(crc >> (8 * i));
    }
}

/* ------------------------------------------------------------ corrupt inputs */

START_TEST(test_truncated)
{
    size_t n;
    unsigned char *p = read_all(FIXTURE_PT, &n);
    scratch s;
    scratch_init(&s);
    size_t tried = 0;
    for (size_t len = 0; len < n; len++) {
        /* every length at both ends, a spread in between */
        if (len > 64 && len < n - 300 && len % 9973 != 0)
            continue;
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu bytes", len);
        expect_refused(&s, p, len, what);
        tried++;
    }
    ck_assert_uint_gt(tried, 500);
    free(p);
    scratch_done(&s);
}
END_TEST

START_TEST(test_empty_and_missing)
{
    scratch s;
    scratch_init(&s);
    expect_refused(&s, "", 0, "empty file");
    expect_refused(&s, "PK\3\4", 4, "four bytes");
    expect_refused(&s, "\x80\x02}q\x00.", 6, "a bare pickle (legacy format)");
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    bsq_error err = {0};
    ck_assert_int_eq(bsq_checkpoint_read(TEST_DATA_DIR "/official-checkpoint/no-such.pt", &ts, &err),
                     BSQ_ERR_IO);
    ck_assert(err.message[0] != '\0');
    scratch_done(&s);
}
END_TEST

/* Mutating a byte of the central directory (or the end records) either
 * breaks the import with a message or hits a field the reader does not
 * need (dates, attributes, names of entries it never opens); then the
 * import is still exactly right. */
START_TEST(test_central_directory_corruption)
{
    size_t n;
    unsigned char *orig = read_all(FIXTURE_PT, &n);
    layout l = find_layout(orig, n);
    unsigned char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    bsq_tensorset want;
    bsq_tensorset_init(&want);
    bsq_error err = {0};
    ck_assert_int_eq(bsq_safetensors_read(FIXTURE_EXPECTED, &want, &err), BSQ_OK);
    scratch s;
    scratch_init(&s);
    size_t refused = 0, accepted = 0;
    for (size_t pos = l.cd_off; pos < n; pos++) {
        int dense = pos < l.cd_off + 300 || pos >= l.cd_off + l.cd_size;
        if (!dense && pos % 13 != 0)
            continue;
        static const unsigned char flips[] = {0xff, 0x01};
        for (size_t f = 0; f < (dense ? sizeof flips : 1); f++) {
            memcpy(p, orig, n);
            p[pos] ^= flips[f];
            bsq_tensorset ts;
            bsq_status st = import_bytes(&s, p, n, &ts, &err);
            if (st != BSQ_OK) {
                ck_assert_msg(err.message[0] != '\0', "byte %zu: empty message", pos);
                ck_assert_uint_eq(ts.count, 0);
                refused++;
            } else {
                compare_sets(&ts, &want);
                accepted++;
            }
            bsq_tensorset_free(&ts);
        }
    }
    /* Fields the reader needs are refused for sure: every header signature,
     * data.pkl's CRC, sizes and offset. */
    size_t must[] = {l.pkl_central + 16, l.pkl_central + 20, l.pkl_central + 24,
                     l.pkl_central + 42, l.pkl_central + 46, n - 22, n - 22 + 12, n - 22 + 16,
                     n - 22 - 20, n - 22 - 20 - 56};
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++) {
        memcpy(p, orig, n);
        p[must[i]] ^= 0x5a;
        char what[64];
        snprintf(what, sizeof what, "central byte %zu", must[i]);
        expect_refused(&s, p, n, what);
    }
    for (size_t pos = l.cd_off; pos < l.cd_off + l.cd_size;) {
        size_t next = pos + 46 + rd16(orig + pos + 28) + rd16(orig + pos + 30) + rd16(orig + pos + 32);
        memcpy(p, orig, n);
        p[pos + 1] = 'X';
        expect_refused(&s, p, n, "central header signature");
        pos = next;
    }
    ck_assert_uint_gt(refused, accepted / 2);
    fprintf(stderr, "central directory mutations: %zu refused, %zu harmless\n", refused, accepted);
    bsq_tensorset_free(&want);
    free(p);
    free(orig);
    scratch_done(&s);
}
END_TEST

/* Any change to data.pkl is caught by its CRC-32. */
START_TEST(test_pickle_bytes_crc)
{
    size_t n;
    unsigned char *p = read_all(FIXTURE_PT, &n);
    layout l = find_layout(p, n);
    scratch s;
    scratch_init(&s);
    for (size_t i = 0; i < l.pkl_len; i += 97) {
        size_t pos = l.pkl_data + i;
        p[pos] ^= 0x20;
        char what[64];
        snprintf(what, sizeof what, "data.pkl byte %zu", i);
        expect_refused(&s, p, n, what);
        p[pos] ^= 0x20;
    }
    free(p);
    scratch_done(&s);
}
END_TEST

/* With the CRC fixed up, mutated pickles reach the VM: each is refused
 * with a message or imports something; never a crash, leak or UB. */
START_TEST(test_pickle_bytes_vm)
{
    size_t n;
    unsigned char *p = read_all(FIXTURE_PT, &n);
    layout l = find_layout(p, n);
    unsigned char *orig = malloc(n);
    ck_assert_ptr_nonnull(orig);
    memcpy(orig, p, n);
    scratch s;
    scratch_init(&s);
    size_t refused = 0;
    for (size_t i = 0; i < l.pkl_len; i += 37) {
        memcpy(p, orig, n);
        p[l.pkl_data + i] ^= 0xff;
        fix_pkl_crc(p, &l);
        bsq_tensorset ts;
        bsq_error err;
        bsq_status st = import_bytes(&s, p, n, &ts, &err);
        if (st != BSQ_OK) {
            ck_assert_msg(err.message[0] != '\0', "byte %zu: empty message", i);
            ck_assert_uint_eq(ts.count, 0);
            refused++;
        }
        bsq_tensorset_free(&ts);
    }
    ck_assert_uint_gt(refused, 0);
    free(orig);
    free(p);
    scratch_done(&s);
}
END_TEST

/* The pickle VM alone on single-byte mutations and truncations of the
 * fixture's data.pkl: every byte of its head (the first tensors) and tail
 * (optimizer state, OmegaConf config, argparse args), a spread of the
 * repetitive middle. */
START_TEST(test_pickle_vm_exhaustive)
{
    size_t n;
    unsigned char *file = read_all(FIXTURE_PT, &n);
    layout l = find_layout(file, n);
    size_t len = l.pkl_len;
    unsigned char *pk = malloc(len);
    ck_assert_ptr_nonnull(pk);
    memcpy(pk, file + l.pkl_data, len);
    free(file);
    pickle_doc doc;
    load_ok(pk, len, &doc);
    ck_assert_int_eq(doc.root->type, PICKLE_DICT);
    pickle_doc_free(&doc);
    const size_t head = 400, tail = 4300; /* the tail: optimizer, config, args */
    for (size_t cut = 0; cut < len; cut++) {
        if (cut > 300 && cut + 300 < len && cut % 97 != 0)
            continue;
        bsq_error err = {0};
        ck_assert_msg(pickle_load(pk, cut, &doc, &err) != BSQ_OK, "truncated to %zu accepted", cut);
        ck_assert(err.message[0] != '\0');
    }
    static const unsigned char values[] = {0x00, 0xff, '(', 't', 'u', 'R', 'Q', 'h', 'r', 0x80};
    size_t refused = 0, total = 0;
    for (size_t i = 0; i < len; i++) {
        int dense = i < head || i + tail >= len;
        if (!dense && i % 11 != 0)
            continue;
        unsigned char keep = pk[i];
        for (size_t v = 0; v < (i % 29 == 0 ? sizeof values : 1); v++) {
            unsigned char x = v == 0 ? (unsigned char)(keep ^ 0xff) : values[v];
            if (x == keep)
                continue;
            pk[i] = x;
            bsq_error err = {0};
            bsq_status st = pickle_load(pk, len, &doc, &err);
            if (st != BSQ_OK) {
                ck_assert_msg(err.message[0] != '\0', "byte %zu: empty message", i);
                ck_assert_ptr_null(doc.root);
                refused++;
            }
            pickle_doc_free(&doc);
            total++;
        }
        pk[i] = keep;
    }
    fprintf(stderr, "pickle mutations: %zu of %zu refused\n", refused, total);
    ck_assert_uint_gt(refused, total / 4);
    free(pk);
}
END_TEST

START_TEST(test_garbage_archives)
{
    scratch s;
    scratch_init(&s);
    static const char garbage[] = "this is not a pickle at all \x01\x02\x03";
    zent e1[] = {{"archive/data.pkl", garbage, sizeof garbage - 1, 0}};
    buf z = make_zip(e1, 1, 0);
    expect_refused(&s, z.p, z.len, "garbage data.pkl");
    free(z.p);

    zent e2[] = {{"archive/data.pkl", "", 0, 0}};
    z = make_zip(e2, 1, 0);
    expect_refused(&s, z.p, z.len, "empty data.pkl");
    free(z.p);

    zent e3[] = {{"archive/data.pkl", "\x80\x02K\x07.", 5, 0}};
    z = make_zip(e3, 1, 1);
    {
        bsq_tensorset ts;
        bsq_error err;
        ck_assert_int_eq(import_bytes(&s, z.p, z.len, &ts, &err), BSQ_ERR_MODEL);
        ck_assert(strstr(err.message, "not a dict") != NULL);
        bsq_tensorset_free(&ts);
    }
    free(z.p);

    static const char nodict[] = "\x80\x02}q\x00(X\x04\x00\x00\x00iterK\x07u.";
    zent e4[] = {{"archive/data.pkl", nodict, sizeof nodict - 1, 1}};
    z = make_zip(e4, 1, 0);
    {
        bsq_tensorset ts;
        bsq_error err;
        ck_assert_int_eq(import_bytes(&s, z.p, z.len, &ts, &err), BSQ_ERR_MODEL);
        bsq_tensorset_free(&ts);
    }
    free(z.p);

    zent e5[] = {{"archive/other", "x", 1, 0}};
    z = make_zip(e5, 1, 0);
    expect_refused(&s, z.p, z.len, "no data.pkl");
    free(z.p);

    zent e6[] = {{"archive/data.pkl", nodict, sizeof nodict - 1, 0},
                 {"archive/byteorder", "big", 3, 0}};
    z = make_zip(e6, 2, 0);
    expect_refused(&s, z.p, z.len, "big-endian");
    free(z.p);
    scratch_done(&s);
}
END_TEST

/* ------------------------------------------------------------ hand-made checkpoints */

typedef struct made {
    buf pickle;
    float f32[6];
    uint16_t f16[8];
    int64_t i64[1];
} made;

/* {'state_dict': {'module.w': f32 view (2,3) stride (1,2) of 6,
 *                 'module.h': f16 view (5,) offset 2 of 8,
 *                 'module.s': i64 scalar, 'module.n': 7}, 'config': {...}} */
static void make_checkpoint(made *m, int64_t w_numel, const buf *config_pickle)
{
    memset(m, 0, sizeof *m);
    for (int i = 0; i < 6; i++)
        m->f32[i] = (float)i + 0.5f;
    for (int i = 0; i < 8; i++)
        m->f16[i] = (uint16_t)(0x3c00 + i);
    m->i64[0] = -42;
    buf *b = &m->pickle;
    put8(b, 0x80);
    put8(b, 2);
    put8(b, '}');
    put8(b, '(');
    pk_str(b, "state_dict");
    pk_global(b, "collections", "OrderedDict");
    put8(b, ')');
    put8(b, 'R');
    put8(b, '(');
    pk_str(b, "module.w");
    int64_t sw[] = {2, 3}, tw[] = {1, 2};
    pk_tensor(b, "FloatStorage", "0", w_numel, 0, sw, tw, 2);
    pk_str(b, "module.h");
    int64_t sh[] = {5}, th[] = {1};
    pk_tensor(b, "HalfStorage", "1", 8, 2, sh, th, 1);
    pk_str(b, "module.s");
    pk_tensor(b, "LongStorage", "2", 1, 0, NULL, NULL, 0);
    pk_str(b, "module.n");
    pk_int(b, 7);
    put8(b, 'u');
    if (config_pickle) {
        pk_str(b, "config");
        put(b, config_pickle->p, config_pickle->len);
    }
    put8(b, 'u');
    put8(b, '.');
}

static buf made_zip(const made *m, int zip64)
{
    zent e[] = {{"ckpt/data.pkl", m->pickle.p, m->pickle.len, 1},
                {"ckpt/data/0", m->f32, sizeof m->f32, 0},
                {"ckpt/data/1", m->f16, sizeof m->f16, 1},
                {"ckpt/data/2", m->i64, sizeof m->i64, 0},
                {"ckpt/byteorder", "little", 6, 0},
                {"ckpt/version", "3\n", 2, 0}};
    return make_zip(e, 6, zip64);
}

START_TEST(test_handmade_views)
{
    scratch s;
    scratch_init(&s);
    for (int zip64 = 0; zip64 < 2; zip64++) {
        made m;
        make_checkpoint(&m, 6, NULL);
        buf z = made_zip(&m, zip64);
        bsq_tensorset ts;
        bsq_error err;
        ck_assert_msg(import_bytes(&s, z.p, z.len, &ts, &err) == BSQ_OK, "%s", err.message);
        ck_assert_uint_eq(ts.count, 3);
        ck_assert_ptr_null(bsq_tensorset_meta(&ts, "config"));
        const bsq_tensor *w = bsq_tensorset_find(&ts, "w");
        ck_assert_ptr_nonnull(w);
        ck_assert_int_eq(w->dtype, BSQ_DT_F32);
        ck_assert_int_eq(w->ndim, 2);
        ck_assert_int_eq(w->shape[0], 2);
        ck_assert_int_eq(w->shape[1], 3);
        /* element [i][j] is storage[i + 2j] */
        const float want_w[] = {0.5f, 2.5f, 4.5f, 1.5f, 3.5f, 5.5f};
        ck_assert_uint_eq(w->nbytes, sizeof want_w);
        ck_assert(memcmp(w->data, want_w, sizeof want_w) == 0);
        const bsq_tensor *h = bsq_tensorset_find(&ts, "h");
        ck_assert_ptr_nonnull(h);
        ck_assert_int_eq(h->dtype, BSQ_DT_F16);
        ck_assert_int_eq(h->shape[0], 5);
        ck_assert(memcmp(h->data, m.f16 + 2, 10) == 0);
        const bsq_tensor *sc = bsq_tensorset_find(&ts, "s");
        ck_assert_ptr_nonnull(sc);
        ck_assert_int_eq(sc->ndim, 0);
        ck_assert_int_eq(sc->dtype, BSQ_DT_I64);
        ck_assert_uint_eq(sc->nbytes, 8);
        ck_assert(memcmp(sc->data, m.i64, 8) == 0);
        bsq_tensorset_free(&ts);
        free(z.p);
        free(m.pickle.p);
    }
    scratch_done(&s);
}
END_TEST

START_TEST(test_handmade_bad_views)
{
    scratch s;
    scratch_init(&s);
    made m;
    /* The id claims 7 floats: the file holds 6. */
    make_checkpoint(&m, 7, NULL);
    buf z = made_zip(&m, 0);
    expect_refused(&s, z.p, z.len, "storage size mismatch");
    free(z.p);
    free(m.pickle.p);
    /* The id claims 5 floats: the (2,3) stride (1,2) view reaches element 5. */
    make_checkpoint(&m, 5, NULL);
    z = made_zip(&m, 0);
    {
        bsq_tensorset ts;
        bsq_error err;
        ck_assert_int_eq(import_bytes(&s, z.p, z.len, &ts, &err), BSQ_ERR_FORMAT);
        ck_assert_msg(strstr(err.message, "view reaches") != NULL, "%s", err.message);
        bsq_tensorset_free(&ts);
    }
    free(z.p);
    /* A storage entry missing from the archive. */
    zent e[] = {{"ckpt/data.pkl", m.pickle.p, m.pickle.len, 0}, {"ckpt/data/0", m.f32, 24, 0}};
    z = make_zip(e, 2, 0);
    expect_refused(&s, z.p, z.len, "missing storage");
    free(z.p);
    free(m.pickle.p);
    scratch_done(&s);
}
END_TEST

/* A video model's configuration as plain dicts, plus an argparse-like
 * object; and the precedence ema_state_dict > state_dict. */
START_TEST(test_handmade_config)
{
    buf c = {0};
    put8(&c, '}');
    put8(&c, '(');
    pk_str(&c, "model");
    put8(&c, '}');
    put8(&c, '(');
    pk_str(&c, "params");
    put8(&c, '}');
    put8(&c, '(');
    pk_str(&c, "embed_dim");
    pk_int(&c, 36);
    pk_str(&c, "embed_group_size");
    pk_int(&c, 4);
    pk_str(&c, "vitconfig");
    put8(&c, '}');
    put8(&c, '(');
    pk_str(&c, "image_size");
    int64_t hw[] = {32, 48};
    pk_tuple_ints(&c, hw, 2);
    pk_str(&c, "patch_size");
    pk_int(&c, 8);
    pk_str(&c, "num_heads");
    pk_int(&c, 2);
    pk_str(&c, "mlp_ratio");
    put8(&c, 'G');
    static const unsigned char two_and_half[8] = {0x40, 0x04, 0, 0, 0, 0, 0, 0};
    put(&c, two_and_half, 8);
    pk_str(&c, "num_frames");
    pk_int(&c, 4);
    pk_str(&c, "mask_type");
    pk_str(&c, "block-causal");
    put8(&c, 'u');
    put8(&c, 'u'); /* params */
    put8(&c, 'u'); /* model */
    put8(&c, 'u'); /* config */
    made m;
    make_checkpoint(&m, 6, &c);
    free(c.p);
    scratch s;
    scratch_init(&s);
    buf z = made_zip(&m, 0);
    bsq_tensorset ts;
    bsq_error err;
    ck_assert_msg(import_bytes(&s, z.p, z.len, &ts, &err) == BSQ_OK, "%s", err.message);
    const char *text = bsq_tensorset_meta(&ts, "config");
    ck_assert_ptr_nonnull(text);
    ck_assert_str_eq(text, "{\"image_height\": 32, \"image_width\": 48, \"patch_size\": 8, "
                           "\"heads\": 2, \"mlp_ratio\": 2.5, \"L\": 36, \"group_size\": 4, "
                           "\"num_frames\": 4, \"mask\": \"block-causal\"}");
    bsq_tensorset_free(&ts);
    free(z.p);
    free(m.pickle.p);
    scratch_done(&s);
}
END_TEST

/* ------------------------------------------------------------ zip reader */

START_TEST(test_zip_reader)
{
    static char big[100000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)('a' + (i * 7 + i / 13) % 26);
    for (int zip64 = 0; zip64 < 2; zip64++) {
        zent e[] = {{"a/stored", "hello", 5, 0},
                    {"a/deflated", big, sizeof big, 1},
                    {"a/empty", "", 0, 0},
                    {"a/empty_deflated", "", 0, 1}};
        buf z = make_zip(e, 4, zip64);
        zip_reader r;
        bsq_error err = {0};
        ck_assert_msg(zip_reader_open_memory(&r, z.p, z.len, &err) == BSQ_OK, "%s", err.message);
        ck_assert_uint_eq(r.count, 4);
        ck_assert_ptr_null(zip_reader_find(&r, "a/missing"));
        ck_assert_ptr_null(zip_reader_find(&r, "a/store"));
        const zip_entry *st = zip_reader_find(&r, "a/stored");
        ck_assert_ptr_nonnull(st);
        const void *data;
        size_t size;
        void *owned;
        ck_assert_int_eq(zip_reader_extract(&r, st, &data, &size, &owned, &err), BSQ_OK);
        ck_assert_ptr_null(owned);
        ck_assert_uint_eq(size, 5);
        ck_assert(memcmp(data, "hello", 5) == 0);
        const zip_entry *df = zip_reader_find(&r, "a/deflated");
        ck_assert_int_eq(df->method, 8);
        ck_assert_uint_lt(df->comp_size, sizeof big);
        ck_assert_int_eq(zip_reader_extract(&r, df, &data, &size, &owned, &err), BSQ_OK);
        ck_assert_ptr_nonnull(owned);
        ck_assert_uint_eq(size, sizeof big);
        ck_assert(memcmp(data, big, sizeof big) == 0);
        free(owned);
        for (int k = 2; k < 4; k++) {
            ck_assert_int_eq(zip_reader_extract(&r, &r.entries[k], &data, &size, &owned, &err),
                             BSQ_OK);
            ck_assert_ptr_nonnull(data);
            ck_assert_uint_eq(size, 0);
            free(owned);
        }
        zip_reader_close(&r);

        /* Corrupt deflate data, then a wrong CRC. */
        unsigned char *p = z.p;
        size_t dpos = 30 + strlen("a/stored") + 5 + 30 + strlen("a/deflated");
        p[dpos + 100] ^= 0x55;
        ck_assert_int_eq(zip_reader_open_memory(&r, p, z.len, &err), BSQ_OK);
        ck_assert_int_eq(zip_reader_extract(&r, &r.entries[1], &data, &size, &owned, &err),
                         BSQ_ERR_FORMAT);
        ck_assert_ptr_null(owned);
        zip_reader_close(&r);
        p[dpos + 100] ^= 0x55;
        unsigned char *central = memmem(p, z.len, "PK\1\2", 4); /* a/stored's header */
        ck_assert_ptr_nonnull(central);
        central[16] ^= 1;
        ck_assert_int_eq(zip_reader_open_memory(&r, p, z.len, &err), BSQ_OK);
        ck_assert_int_eq(zip_reader_extract(&r, &r.entries[0], &data, &size, &owned, &err),
                         BSQ_ERR_FORMAT);
        ck_assert_msg(strstr(err.message, "CRC") != NULL, "%s", err.message);
        zip_reader_close(&r);
        free(z.p);
    }
    /* Not archives. */
    zip_reader r;
    bsq_error err = {0};
    ck_assert_int_eq(zip_reader_open_memory(&r, "", 0, &err), BSQ_ERR_FORMAT);
    ck_assert_int_eq(zip_reader_open_memory(&r, big, sizeof big, &err), BSQ_ERR_FORMAT);
    ck_assert(err.message[0] != '\0');
    zip_reader_close(&r);
}
END_TEST

/* ------------------------------------------------------------ pickle VM */

START_TEST(test_pickle_dict_of_lists)
{
    /* pickle.dumps({'a': [1, 2, 3], 'b': [], 'c': (-1, 1.5, None, True)}, protocol=2) */
    static const char p[] = "\x80\x02}q\x00(X\x01\x00\x00\x00" "aq\x01]q\x02(K\x01K\x02K\x03"
                            "eX\x01\x00\x00\x00" "bq\x03]q\x04X\x01\x00\x00\x00"
                            "cq\x05(J\xff\xff\xff\xffG\x3f\xf8\x00\x00\x00\x00\x00\x00N\x88tq\x06u.";
    pickle_doc doc;
    const pickle_value *r = load_ok(p, sizeof p - 1, &doc);
    ck_assert_int_eq(doc.protocol, 2);
    ck_assert_int_eq(r->type, PICKLE_DICT);
    ck_assert_uint_eq(r->count, 3);
    const pickle_value *a = pickle_dict_get(r, "a");
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(a->type, PICKLE_LIST);
    ck_assert_uint_eq(a->count, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(a->items[i]->type, PICKLE_INT);
        ck_assert_int_eq(a->items[i]->i, i + 1);
    }
    const pickle_value *b = pickle_dict_get(r, "b");
    ck_assert_int_eq(b->type, PICKLE_LIST);
    ck_assert_uint_eq(b->count, 0);
    const pickle_value *c = pickle_dict_get(r, "c");
    ck_assert_int_eq(c->type, PICKLE_TUPLE);
    ck_assert_uint_eq(c->count, 4);
    ck_assert_int_eq(c->items[0]->i, -1);
    ck_assert(c->items[1]->type == PICKLE_FLOAT && c->items[1]->f == 1.5);
    ck_assert_int_eq(c->items[2]->type, PICKLE_NONE);
    ck_assert(c->items[3]->type == PICKLE_BOOL && c->items[3]->i == 1);
    ck_assert_ptr_null(pickle_dict_get(r, "d"));
    pickle_doc_free(&doc);
}
END_TEST

START_TEST(test_pickle_memo)
{
    /* x = [1]; pickle.dumps([x, x, {'k': x}], protocol=2): BINPUT/BINGET
     * share one node. */
    static const char p[] = "\x80\x02]q\x00(]q\x01K\x01" "ah\x01}q\x02X\x01\x00\x00\x00kq\x03h\x01se.";
    pickle_doc doc;
    const pickle_value *r = load_ok(p, sizeof p - 1, &doc);
    ck_assert_int_eq(r->type, PICKLE_LIST);
    ck_assert_uint_eq(r->count, 3);
    ck_assert_ptr_eq(r->items[0], r->items[1]);
    ck_assert_ptr_eq(pickle_dict_get(r->items[2], "k"), r->items[0]);
    pickle_doc_free(&doc);

    /* LONG_BINPUT / LONG_BINGET at a high index, MEMOIZE, text PUT/GET. */
    static const char q[] = "\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00(\x8c\x02hi\x94K\x05"
                            "r\x40\x42\x0f\x00j\x40\x42\x0f\x00h\x00p7\ng7\nt.";
    r = load_ok(q, sizeof q - 1, &doc);
    ck_assert_int_eq(r->type, PICKLE_TUPLE);
    ck_assert_uint_eq(r->count, 5);
    ck_assert(pickle_is_str(r->items[0], "hi"));
    ck_assert_int_eq(r->items[1]->i, 5);
    ck_assert_ptr_eq(r->items[2], r->items[1]);
    ck_assert_ptr_eq(r->items[3], r->items[0]);
    ck_assert_ptr_eq(r->items[4], r->items[3]);
    pickle_doc_free(&doc);

    /* A list containing itself: a cycle, freed all the same. */
    static const char cyc[] = "\x80\x02]q\x00h\x00" "a.";
    r = load_ok(cyc, sizeof cyc - 1, &doc);
    ck_assert_uint_eq(r->count, 1);
    ck_assert_ptr_eq(r->items[0], r);
    pickle_doc_free(&doc);

    LOAD_BAD("\x80\x02h\x05.", BSQ_ERR_FORMAT);                 /* unset memo entry */
    LOAD_BAD("\x80\x02K\x01r\xff\xff\xff\xff.", BSQ_ERR_FORMAT); /* memo index too large */
    LOAD_BAD("\x80\x02(q\x00.", BSQ_ERR_FORMAT);                /* BINPUT on an empty frame */
}
END_TEST

START_TEST(test_pickle_opaque_objects)
{
    /* An unknown class through NEWOBJ + BUILD (how OmegaConf pickles), an
     * argparse.Namespace through REDUCE + BUILD, and OrderedDict -> dict. */
    buf b = {0};
    put8(&b, 0x80);
    put8(&b, 2);
    put8(&b, '(');
    pk_global(&b, "omegaconf.dictconfig", "DictConfig");
    put8(&b, ')');
    put8(&b, 0x81);
    put8(&b, '}');
    put8(&b, '(');
    pk_str(&b, "_content");
    put8(&b, '}');
    pk_str(&b, "heads");
    pk_int(&b, 12);
    put8(&b, 's');
    put8(&b, 'u');
    put8(&b, 'b');
    pk_global(&b, "argparse", "Namespace");
    put8(&b, ')');
    put8(&b, 'R');
    put8(&b, '}');
    pk_str(&b, "lr");
    put8(&b, 'G');
    static const unsigned char half[8] = {0x3f, 0xe0, 0, 0, 0, 0, 0, 0};
    put(&b, half, 8);
    put8(&b, 's');
    put8(&b, 'b');
    pk_global(&b, "collections", "OrderedDict");
    put8(&b, ')');
    put8(&b, 'R');
    pk_str(&b, "x");
    pk_int(&b, 1);
    put8(&b, 's');
    put8(&b, 't');
    put8(&b, '.');
    pickle_doc doc;
    const pickle_value *r = load_ok(b.p, b.len, &doc);
    free(b.p);
    ck_assert_int_eq(r->type, PICKLE_TUPLE);
    ck_assert_uint_eq(r->count, 3);
    const pickle_value *dc = r->items[0];
    ck_assert_int_eq(dc->type, PICKLE_OBJECT);
    ck_assert(pickle_is_global(pickle_object_class(dc), "omegaconf.dictconfig", "DictConfig"));
    ck_assert_ptr_nonnull(dc->args);
    ck_assert_uint_eq(dc->args->count, 0);
    const pickle_value *content = pickle_dict_get(dc->state, "_content");
    ck_assert_ptr_nonnull(content);
    ck_assert_int_eq(pickle_dict_get(content, "heads")->i, 12);
    const pickle_value *ns = r->items[1];
    ck_assert(pickle_is_global(pickle_object_class(ns), "argparse", "Namespace"));
    ck_assert(pickle_dict_get(ns->state, "lr")->f == 0.5);
    ck_assert_int_eq(r->items[2]->type, PICKLE_DICT);
    ck_assert_int_eq(pickle_dict_get(r->items[2], "x")->i, 1);
    pickle_doc_free(&doc);

    /* SETITEMS / APPENDS on an opaque object (defaultdict, a list subclass). */
    static const char dd[] = "\x80\x02" "ccollections\ndefaultdict\nc__builtin__\nlist\n\x85R"
                             "(X\x01\x00\x00\x00kK\x02u.";
    r = load_ok(dd, sizeof dd - 1, &doc);
    ck_assert_int_eq(r->type, PICKLE_OBJECT);
    ck_assert(pickle_is_global(r->args->items[0], "builtins", "list"));
    ck_assert_int_eq(pickle_dict_get(r, "k")->i, 2);
    pickle_doc_free(&doc);
}
END_TEST

START_TEST(test_pickle_tensor_nodes)
{
    buf b = {0};
    put8(&b, 0x80);
    put8(&b, 2);
    int64_t size[] = {3, 4}, stride[] = {4, 1};
    pk_tensor(&b, "BFloat16Storage", "7", 12, 0, size, stride, 2);
    put8(&b, '.');
    pickle_doc doc;
    const pickle_value *t = load_ok(b.p, b.len, &doc);
    ck_assert_int_eq(t->type, PICKLE_TENSOR);
    ck_assert_int_eq(t->ndim, 2);
    ck_assert_int_eq(t->size[0], 3);
    ck_assert_int_eq(t->stride[0], 4);
    ck_assert_int_eq(t->storage->type, PICKLE_STORAGE);
    ck_assert_str_eq(t->storage->name, "BFloat16Storage");
    ck_assert_str_eq(t->storage->str, "7");
    ck_assert_str_eq(t->storage->location, "cpu");
    ck_assert_int_eq(t->storage->i, 12);
    pickle_doc_free(&doc);
    free(b.p);

    /* _rebuild_tensor_v2 with a non-storage first argument. */
    LOAD_BAD("\x80\x02\x63torch._utils\n_rebuild_tensor_v2\n(K\x01K\x00)))tR.", BSQ_ERR_FORMAT);
    /* A storage id with the wrong arity. */
    LOAD_BAD("\x80\x02(X\x07\x00\x00\x00storagetQ.", BSQ_ERR_FORMAT);
    /* Another persistent id stays opaque. */
    static const char pid[] = "\x80\x02K\x05Q.";
    const pickle_value *r = load_ok(pid, sizeof pid - 1, &doc);
    ck_assert_int_eq(r->type, PICKLE_PERSID);
    ck_assert_int_eq(r->args->i, 5);
    pickle_doc_free(&doc);
}
END_TEST

START_TEST(test_pickle_scalars_and_protocols)
{
    /* LONG1 (big and int64-sized), negative BININT, protocol 0 text forms,
     * bytes, sets, protocol 4 framing and STACK_GLOBAL. */
    static const char p[] = "\x80\x02(\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01"
                            "\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f"
                            "\x8a\x01\xfe\x8a\x00"
                            "I42\nI01\nL-7L\nF0.25\nS'a\\'b'\nVcaf\\u00e9\n"
                            "C\x02\x00\x01\x8f(K\x01K\x02\x90t.";
    pickle_doc doc;
    const pickle_value *r = load_ok(p, sizeof p - 1, &doc);
    ck_assert_uint_eq(r->count, 12);
    ck_assert_int_eq(r->items[0]->type, PICKLE_BIGINT);
    ck_assert_uint_eq(r->items[0]->len, 9);
    ck_assert_int_eq(r->items[1]->i, INT64_MAX);
    ck_assert_int_eq(r->items[2]->i, -2);
    ck_assert_int_eq(r->items[3]->i, 0);
    ck_assert_int_eq(r->items[4]->i, 42);
    ck_assert_int_eq(r->items[5]->type, PICKLE_BOOL);
    ck_assert_int_eq(r->items[6]->i, -7);
    ck_assert(r->items[7]->f == 0.25);
    ck_assert(pickle_is_str(r->items[8], "a'b"));
    ck_assert(pickle_is_str(r->items[9], "caf\xc3\xa9"));
    ck_assert_int_eq(r->items[10]->type, PICKLE_BYTES);
    ck_assert_uint_eq(r->items[10]->len, 2);
    ck_assert_int_eq(r->items[11]->type, PICKLE_SET);
    ck_assert_uint_eq(r->items[11]->count, 2);
    pickle_doc_free(&doc);

    /* Protocol 0 integers beyond int64: -2**64 and 2**64 - 1. */
    static const char big[] = "(L-18446744073709551616L\nI18446744073709551615\nt.";
    r = load_ok(big, sizeof big - 1, &doc);
    ck_assert_uint_eq(r->count, 2);
    for (int k = 0; k < 2; k++) {
        const pickle_value *v = r->items[k];
        ck_assert_int_eq(v->type, PICKLE_BIGINT);
        ck_assert_uint_ge(v->len, 9);
        for (size_t j = 0; j < v->len; j++) {
            unsigned char want = k == 0 ? (j < 8 ? 0x00 : 0xff) : (j < 8 ? 0xff : 0x00);
            ck_assert_uint_eq((unsigned char)v->str[j], want);
        }
    }
    pickle_doc_free(&doc);

    /* pickle.dumps(collections.OrderedDict(a=b'\xff'), protocol=4) */
    static const char p4[] = "\x80\x04\x95+\x00\x00\x00\x00\x00\x00\x00\x8c\x0b"
                             "collections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94\x8c\x01"
                             "a\x94" "C\x01\xff\x94s.";
    r = load_ok(p4, sizeof p4 - 1, &doc);
    ck_assert_int_eq(doc.protocol, 4);
    ck_assert_int_eq(r->type, PICKLE_DICT);
    const pickle_value *a = pickle_dict_get(r, "a");
    ck_assert(a && a->type == PICKLE_BYTES && a->len == 1 && (unsigned char)a->str[0] == 0xff);
    pickle_doc_free(&doc);

    /* Protocol 2 bytes: _codecs.encode('\xff', 'latin1'). */
    static const char p2[] = "\x80\x02\x63_codecs\nencode\nX\x02\x00\x00\x00\xc3\xbf"
                             "X\x06\x00\x00\x00latin1\x86R.";
    r = load_ok(p2, sizeof p2 - 1, &doc);
    ck_assert(r->type == PICKLE_BYTES && r->len == 1 && (unsigned char)r->str[0] == 0xff);
    pickle_doc_free(&doc);
}
END_TEST

START_TEST(test_pickle_malformed)
{
    LOAD_BAD("", BSQ_ERR_FORMAT);                       /* nothing */
    LOAD_BAD("\x80\x02", BSQ_ERR_FORMAT);               /* no STOP */
    LOAD_BAD("\x80\x02.", BSQ_ERR_FORMAT);              /* STOP on an empty stack */
    LOAD_BAD("\x80\x02\xff.", BSQ_ERR_FORMAT);          /* unknown opcode */
    LOAD_BAD("\x80\x02t.", BSQ_ERR_FORMAT);             /* TUPLE without MARK */
    LOAD_BAD("\x80\x02\x85.", BSQ_ERR_FORMAT);          /* TUPLE1 underflow */
    LOAD_BAD("\x80\x02(\x86.", BSQ_ERR_FORMAT);         /* TUPLE2 across a mark */
    LOAD_BAD("\x80\x02K\x01K\x02s.", BSQ_ERR_FORMAT);   /* SETITEM underflow */
    LOAD_BAD("\x80\x02K\x01(K\x02K\x03u.", BSQ_ERR_FORMAT); /* SETITEMS on an int */
    LOAD_BAD("\x80\x02}(K\x02u.", BSQ_ERR_FORMAT);      /* odd SETITEMS */
    LOAD_BAD("\x80\x02K\x01K\x02" "a.", BSQ_ERR_FORMAT);   /* APPEND to an int */
    LOAD_BAD("\x80\x02X\x05\x00\x00\x00" "ab.", BSQ_ERR_FORMAT); /* truncated string */
    LOAD_BAD("\x80\x02X\xff\xff\xff\xff.", BSQ_ERR_FORMAT);   /* huge length */
    LOAD_BAD("\x80\x02X\x02\x00\x00\x00\xc3(.", BSQ_ERR_FORMAT); /* invalid UTF-8 */
    LOAD_BAD("\x80\x02J\x01\x00.", BSQ_ERR_FORMAT);     /* truncated BININT */
    LOAD_BAD("\x80\x02\x8b\xff\xff\xff\xff.", BSQ_ERR_FORMAT); /* negative LONG4 */
    LOAD_BAD("\x80\x02\x63mod.", BSQ_ERR_FORMAT);       /* GLOBAL without newline */
    LOAD_BAD("\x80\x02K\x01K\x02\x93.", BSQ_ERR_FORMAT); /* STACK_GLOBAL of ints */
    LOAD_BAD("\x80\x02K\x01K\x02R.", BSQ_ERR_FORMAT);   /* REDUCE with int args */
    LOAD_BAD("\x80\x02\x31.", BSQ_ERR_FORMAT);          /* POP_MARK without MARK */
    LOAD_BAD("\x80\x02\x30.", BSQ_ERR_FORMAT);          /* POP on empty */
    LOAD_BAD("\x80\x06N.", BSQ_ERR_UNSUPPORTED);        /* protocol 6 */
    LOAD_BAD("\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00N.", BSQ_ERR_FORMAT); /* long frame */
    LOAD_BAD("\x80\x05\x97.", BSQ_ERR_FORMAT);          /* NEXT_BUFFER */
    LOAD_BAD("\x80\x02\x82\x01.", BSQ_ERR_UNSUPPORTED); /* EXT1 */
    LOAD_BAD("I12x\n.", BSQ_ERR_FORMAT);                /* bad INT */
    LOAD_BAD("L99999999999999999999x\n.", BSQ_ERR_FORMAT); /* bad big LONG */
    LOAD_BAD("S'abc\n.", BSQ_ERR_FORMAT);               /* unterminated STRING */

    /* MARK nesting and stack depth are bounded. */
    size_t n = 10000;
    char *deep = malloc(n + 2);
    ck_assert_ptr_nonnull(deep);
    memset(deep, '(', n);
    deep[n] = 'N';
    deep[n + 1] = '.';
    pickle_doc doc;
    bsq_error err = {0};
    ck_assert_int_eq(pickle_load(deep, n + 2, &doc, &err), BSQ_ERR_FORMAT);
    ck_assert(strstr(err.message, "MARK") != NULL);
    free(deep);
    n = (size_t)1 << 21;
    char *wide = malloc(n + 1);
    ck_assert_ptr_nonnull(wide);
    memset(wide, 'N', n);
    wide[n] = '.';
    ck_assert_int_eq(pickle_load(wide, n + 1, &doc, &err), BSQ_ERR_FORMAT);
    ck_assert(strstr(err.message, "stack") != NULL);
    free(wide);
    /* Deep nesting through the memo needs no recursion: 100000 nested lists. */
    buf b = {0};
    put8(&b, 0x80);
    put8(&b, 2);
    put8(&b, ']');
    for (int i = 0; i < 100000; i++) {
        put8(&b, ']');
        put8(&b, '2'); /* DUP: keep the inner list as the next target */
        put8(&b, 'q');
        put8(&b, 0);
        put8(&b, '0');
        put8(&b, 'a'); /* append it to the outer one */
        put8(&b, 'h');
        put8(&b, 0);
    }
    put8(&b, '.');
    ck_assert_int_eq(pickle_load(b.p, b.len, &doc, &err), BSQ_OK);
    pickle_doc_free(&doc);
    free(b.p);

    /* Memo references cannot multiply memory: list(x) of a memoized
     * 1000-item list 2000 times, a 100 KB string as a global name 20 times. */
    memset(&b, 0, sizeof b);
    put8(&b, 0x80);
    put8(&b, 2);
    pk_global(&b, "builtins", "list");
    put8(&b, 'q');
    put8(&b, 1);
    put8(&b, ']');
    put8(&b, 'q');
    put8(&b, 2);
    put8(&b, '(');
    for (int i = 0; i < 1000; i++)
        pk_int(&b, i);
    put8(&b, 'e');
    for (int i = 0; i < 2000; i++) {
        static const char copy[] = {'h', 1, 'h', 2, (char)0x85, 'R', '0'};
        put(&b, copy, sizeof copy);
    }
    put8(&b, '.');
    ck_assert_int_eq(pickle_load(b.p, b.len, &doc, &err), BSQ_ERR_FORMAT);
    ck_assert_msg(strstr(err.message, "items") != NULL, "%s", err.message);
    free(b.p);
    memset(&b, 0, sizeof b);
    put8(&b, 0x80);
    put8(&b, 4);
    put8(&b, 0x8d);
    put64(&b, 100000);
    for (int i = 0; i < 100000; i++)
        put8(&b, 'm');
    put8(&b, 0x94);
    for (int i = 0; i < 20; i++) {
        static const char copy[] = {'h', 0, 'h', 0, (char)0x93, '0'};
        put(&b, copy, sizeof copy);
    }
    put8(&b, '.');
    ck_assert_int_eq(pickle_load(b.p, b.len, &doc, &err), BSQ_ERR_FORMAT);
    ck_assert_msg(strstr(err.message, "bytes") != NULL, "%s", err.message);
    free(b.p);
}
END_TEST

static Suite *import_suite(void)
{
    Suite *s = suite_create("import");
    TCase *pk = tcase_create("pickle");
    tcase_add_test(pk, test_pickle_dict_of_lists);
    tcase_add_test(pk, test_pickle_memo);
    tcase_add_test(pk, test_pickle_opaque_objects);
    tcase_add_test(pk, test_pickle_tensor_nodes);
    tcase_add_test(pk, test_pickle_scalars_and_protocols);
    tcase_add_test(pk, test_pickle_malformed);
    suite_add_tcase(s, pk);
    TCase *zp = tcase_create("zip");
    tcase_add_test(zp, test_zip_reader);
    suite_add_tcase(s, zp);
    TCase *ck = tcase_create("checkpoint");
    tcase_set_timeout(ck, 600);
    tcase_add_test(ck, test_sniff);
    tcase_add_test(ck, test_fixture_tensors);
    tcase_add_test(ck, test_fixture_config);
    tcase_add_test(ck, test_not_empty_set);
    tcase_add_test(ck, test_handmade_views);
    tcase_add_test(ck, test_handmade_bad_views);
    tcase_add_test(ck, test_handmade_config);
    tcase_add_test(ck, test_garbage_archives);
    suite_add_tcase(s, ck);
    TCase *bad = tcase_create("corrupt");
    tcase_set_timeout(bad, 600);
    tcase_add_test(bad, test_empty_and_missing);
    tcase_add_test(bad, test_truncated);
    tcase_add_test(bad, test_central_directory_corruption);
    tcase_add_test(bad, test_pickle_bytes_crc);
    tcase_add_test(bad, test_pickle_bytes_vm);
    tcase_add_test(bad, test_pickle_vm_exhaustive);
    suite_add_tcase(s, bad);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(import_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
