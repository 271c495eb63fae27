/* safetensors reading and writing (lib/safetensors.c), the tensor set, and
 * the half / bfloat16 conversions (lib/tensorset.c). */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "safetensors.h"
#include "testutil.h"

/* An assertion for hot loops: ck_assert records a checkpoint on every
 * call (a write to the runner), which is too slow for 65536-value sweeps. */
#define REQUIRE(cond, ...)                                                                   \
    do {                                                                                     \
        if (!(cond))                                                                         \
            ck_abort_msg(__VA_ARGS__);                                                       \
    } while (0)

#define FIXTURE "bsqvit-parity/img32_w64_l2_L18g9.weights.safetensors"
#define FIXTURE_IO "bsqvit-parity/img32_w64_l2_L18g9.io.safetensors"

static char *fixture_path(const char *name) { return tu_path(tu_data_dir(), name); }

/* Entries of a directory other than . and ..; with `tmp_only`, only those
 * whose name has ".tmp" in it. */
static int count_entries(const char *dir, int tmp_only)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (!tmp_only || strstr(e->d_name, ".tmp"))
            n++;
    }
    closedir(d);
    return n;
}

static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ------------------------------------------------------------------------ */
/* Reading the fixture                                                       */

START_TEST(test_read_fixture)
{
    char *path = fixture_path(FIXTURE);
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    bsq_error err;
    ck_assert_msg(bsq_safetensors_read(path, &ts, &err) == BSQ_OK, "%s", err.message);
    ck_assert_uint_eq(ts.count, 67);
    ck_assert_ptr_nonnull(ts.map);
    ck_assert_str_eq(bsq_tensorset_meta(&ts, "format"), "official-bsq-vit-state-dict");
    const char *cfg = bsq_tensorset_meta(&ts, "config");
    ck_assert_ptr_nonnull(cfg);
    ck_assert_ptr_nonnull(strstr(cfg, "\"heads\": 4"));
    ck_assert_ptr_null(bsq_tensorset_meta(&ts, "nothing"));

    /* an independent reading of the header agrees on every tensor */
    const unsigned char *map = ts.map;
    uint64_t hlen = le64(map);
    ck_assert_uint_le(8 + hlen, ts.map_len);
    json_value *root = NULL;
    ck_assert_int_eq(json_parse((const char *)map + 8, (size_t)hlen, &root, &err), BSQ_OK);
    ck_assert_uint_eq(root->count, ts.count + 1);
    size_t total = 0;
    for (size_t i = 0; i < root->count; i++) {
        if (!strcmp(root->keys[i], "__metadata__"))
            continue;
        const bsq_tensor *t = bsq_tensorset_find(&ts, root->keys[i]);
        ck_assert_msg(t != NULL, "%s missing", root->keys[i]);
        const json_value *shape = json_get(&root->items[i], "shape");
        const json_value *off = json_get(&root->items[i], "data_offsets");
        ck_assert_str_eq(json_get(&root->items[i], "dtype")->string, "F32");
        ck_assert_int_eq(t->dtype, BSQ_DT_F32);
        ck_assert_int_eq(t->ndim, (int)shape->count);
        for (int d = 0; d < t->ndim; d++)
            ck_assert_int_eq(t->shape[d], (int64_t)shape->items[d].number);
        ck_assert_ptr_eq(t->data, map + 8 + hlen + (size_t)off->items[0].number);
        ck_assert_uint_eq(t->nbytes, (size_t)(off->items[1].number - off->items[0].number));
        ck_assert_uint_eq(t->nbytes, (size_t)bsq_tensor_numel(t) * 4);
        total += t->nbytes;
    }
    ck_assert_uint_eq(total, ts.map_len - 8 - hlen);
    json_free(root);

    const bsq_tensor *t = bsq_tensorset_find(&ts, "encoder.conv1.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->ndim, 2);
    ck_assert_int_eq(t->shape[0], 64);
    ck_assert_int_eq(t->shape[1], 192);
    t = bsq_tensorset_find(&ts, "quant_embed.bias");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->ndim, 1);
    ck_assert_int_eq(t->shape[0], 18);
    float *f = tu_f32(&ts, "quant_embed.bias", NULL);
    ck_assert_int_eq(memcmp(f, t->data, 18 * 4), 0);
    free(f);
    bsq_tensorset_free(&ts);
    ck_assert_ptr_null(ts.map);
    free(path);
}
END_TEST

START_TEST(test_read_fixture_dtypes)
{
    char *path = fixture_path(FIXTURE_IO);
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    bsq_error err;
    ck_assert_msg(bsq_safetensors_read(path, &ts, &err) == BSQ_OK, "%s", err.message);
    const bsq_tensor *bits = bsq_tensorset_find(&ts, "bits");
    ck_assert_ptr_nonnull(bits);
    ck_assert_int_eq(bits->dtype, BSQ_DT_U8);
    ck_assert_int_eq(bits->ndim, 3);
    ck_assert_int_eq(bits->shape[2], 18);
    ck_assert_uint_eq(bits->nbytes, (size_t)bsq_tensor_numel(bits));
    const bsq_tensor *idx = bsq_tensorset_find(&ts, "indices");
    ck_assert_ptr_nonnull(idx);
    ck_assert_int_eq(idx->dtype, BSQ_DT_I64);
    ck_assert_uint_eq(idx->nbytes, (size_t)bsq_tensor_numel(idx) * 8);
    ck_assert_ptr_nonnull(bsq_tensorset_meta(&ts, "min_abs_z"));
    /* integer tensors are not converted to f32 */
    float one[1];
    ck_assert_int_eq(bsq_tensor_to_f32(bits, one, &err), BSQ_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.message, "bits"));
    bsq_tensorset_free(&ts);
    free(path);
}
END_TEST

START_TEST(test_read_missing_and_special)
{
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    bsq_error err;
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(bsq_safetensors_read("/nonexistent/dir/x.safetensors", &ts, &err),
                     BSQ_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err.message, "/nonexistent/dir/x.safetensors"));
    bsq_tensorset_free(&ts);

    char *dir = tu_tmpdir();
    bsq_tensorset_init(&ts);
    ck_assert_int_ne(bsq_safetensors_read(dir, &ts, &err), BSQ_OK); /* a directory */
    ck_assert_str_ne(err.message, "");
    bsq_tensorset_free(&ts);
    char *empty = tu_path(dir, "empty.safetensors");
    ck_assert_int_eq(tu_write_file(empty, "", 0), 0);
    bsq_tensorset_init(&ts);
    ck_assert_int_eq(bsq_safetensors_read(empty, &ts, &err), BSQ_ERR_FORMAT);
    ck_assert_str_ne(err.message, "");
    bsq_tensorset_free(&ts);
    free(empty);
    tu_rmdir(dir);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Writing and reading back                                                  */

static const float f32_vals[6] = {1.0f, -2.0f, 3.5f, 1e-30f, -0.0f, 65504.0f};
static const float scalar_val[1] = {42.0f};
static const uint8_t u8_vals[7] = {0, 1, 2, 127, 128, 254, 255};
static const uint8_t one_byte[1] = {0x5a};

/* A set with metadata and tensors of several dtypes; half/bf16/i64 bytes
 * are built into `bufs` (the caller frees the set, bufs live in it). */
static void build_set(bsq_tensorset *ts)
{
    bsq_error err;
    bsq_tensorset_init(ts);
    ck_assert_int_eq(bsq_tensorset_set_meta(ts, "config", "{\"heads\": 4, \"q\": \"a\\\"b\"}", &err),
                     BSQ_OK);
    ck_assert_int_eq(bsq_tensorset_set_meta(ts, "note", "tab\there\nnewline \x01 ctl \\ back", &err),
                     BSQ_OK);
    ck_assert_int_eq(bsq_tensorset_set_meta(ts, "unicode", "caf\xc3\xa9 \xf0\x9f\x98\x80", &err),
                     BSQ_OK);
    ck_assert_int_eq(bsq_tensorset_set_meta(ts, "empty", "", &err), BSQ_OK);
    /* replacing a value keeps one entry */
    ck_assert_int_eq(bsq_tensorset_set_meta(ts, "format", "x", &err), BSQ_OK);
    ck_assert_int_eq(bsq_tensorset_set_meta(ts, "format", "test-format", &err), BSQ_OK);
    ck_assert_uint_eq(ts->meta_count, 5);

    int64_t s23[2] = {2, 3};
    ck_assert_int_eq(bsq_tensorset_add(ts, "f32", BSQ_DT_F32, 2, s23, f32_vals, sizeof f32_vals, 0,
                                       &err), BSQ_OK);

    uint8_t *h = malloc(8);
    const float hv[4] = {1.0f, -0.5f, 0.333f, 1e-6f};
    for (int i = 0; i < 4; i++) {
        uint16_t x = bsq_f32_to_f16(hv[i]);
        h[2 * i] = (uint8_t)x;
        h[2 * i + 1] = (uint8_t)(x >> 8);
    }
    int64_t s4[1] = {4};
    ck_assert_int_eq(bsq_tensorset_add(ts, "f16", BSQ_DT_F16, 1, s4, h, 8, 1, &err), BSQ_OK);

    uint8_t *b = malloc(12);
    for (int i = 0; i < 6; i++) {
        uint16_t x = bsq_f32_to_bf16((float)i * 1.37f - 3.0f);
        b[2 * i] = (uint8_t)x;
        b[2 * i + 1] = (uint8_t)(x >> 8);
    }
    int64_t s312[3] = {3, 1, 2};
    ck_assert_int_eq(bsq_tensorset_add(ts, "bf16", BSQ_DT_BF16, 3, s312, b, 12, 1, &err), BSQ_OK);

    /* an empty tensor between two others */
    int64_t s03[2] = {0, 3};
    ck_assert_int_eq(bsq_tensorset_add(ts, "empty", BSQ_DT_F32, 2, s03, f32_vals, 0, 0, &err),
                     BSQ_OK);

    uint8_t *q = malloc(40);
    const int64_t qv[5] = {INT64_MIN, -1, 0, 1, INT64_MAX};
    for (int i = 0; i < 5; i++)
        put_le64(q + 8 * i, (uint64_t)qv[i]);
    int64_t s5[1] = {5};
    ck_assert_int_eq(bsq_tensorset_add(ts, "i64", BSQ_DT_I64, 1, s5, q, 40, 1, &err), BSQ_OK);

    ck_assert_int_eq(bsq_tensorset_add(ts, "scalar", BSQ_DT_F32, 0, NULL, scalar_val, 4, 0, &err),
                     BSQ_OK);
    int64_t s1[1] = {1};
    ck_assert_int_eq(bsq_tensorset_add(ts, "we\"ird\\ n\xc3\xa9me\t", BSQ_DT_U8, 1, s1, one_byte,
                                       1, 0, &err), BSQ_OK);
    /* last, and odd-sized, so every truncation cuts real data */
    int64_t s7[1] = {7};
    ck_assert_int_eq(bsq_tensorset_add(ts, "u8", BSQ_DT_U8, 1, s7, u8_vals, 7, 0, &err), BSQ_OK);
    ck_assert_uint_eq(ts->count, 8);
}

static void assert_same_sets(const bsq_tensorset *a, const bsq_tensorset *b)
{
    ck_assert_uint_eq(a->count, b->count);
    for (size_t i = 0; i < a->count; i++) {
        const bsq_tensor *x = &a->items[i], *y = &b->items[i];
        ck_assert_str_eq(x->name, y->name); /* same order too */
        ck_assert_int_eq(x->dtype, y->dtype);
        ck_assert_int_eq(x->ndim, y->ndim);
        for (int d = 0; d < x->ndim; d++)
            ck_assert_int_eq(x->shape[d], y->shape[d]);
        ck_assert_uint_eq(x->nbytes, y->nbytes);
        ck_assert_msg(x->nbytes == 0 || memcmp(x->data, y->data, x->nbytes) == 0,
                      "bytes of %s differ", x->name);
    }
    ck_assert_uint_eq(a->meta_count, b->meta_count);
    for (size_t i = 0; i < a->meta_count; i++) {
        const char *v = bsq_tensorset_meta(b, a->meta_keys[i]);
        ck_assert_msg(v != NULL, "metadata %s lost", a->meta_keys[i]);
        ck_assert_str_eq(v, a->meta_values[i]);
    }
}

START_TEST(test_write_read_roundtrip)
{
    bsq_tensorset ts, back;
    build_set(&ts);
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "set.safetensors");
    bsq_error err;
    ck_assert_msg(bsq_safetensors_write(path, &ts, &err) == BSQ_OK, "%s", err.message);
    ck_assert_int_eq(count_entries(dir, 0), 1); /* no temporary left */

    bsq_tensorset_init(&back);
    ck_assert_msg(bsq_safetensors_read(path, &back, &err) == BSQ_OK, "%s", err.message);
    assert_same_sets(&ts, &back);
    const bsq_tensor *sc = bsq_tensorset_find(&back, "scalar");
    ck_assert_int_eq(sc->ndim, 0);
    ck_assert_int_eq(bsq_tensor_numel(sc), 1);
    const bsq_tensor *h = bsq_tensorset_find(&back, "f16");
    float hf[4];
    ck_assert_int_eq(bsq_tensor_to_f32(h, hf, &err), BSQ_OK);
    ck_assert(hf[0] == 1.0f && hf[1] == -0.5f);
    ck_assert(fabsf(hf[2] - 0.333f) < 1e-3f);
    bsq_tensorset_free(&back);

    /* the layout: 8-byte length, header padded so the data is 8-aligned */
    size_t len;
    unsigned char *raw = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(raw);
    uint64_t hlen = le64(raw);
    ck_assert_uint_eq((8 + hlen) % 8, 0);
    size_t total = 0;
    for (size_t i = 0; i < ts.count; i++)
        total += ts.items[i].nbytes;
    ck_assert_uint_eq(len, 8 + hlen + total);
    ck_assert_int_eq(raw[8], '{');
    json_value *root = NULL;
    ck_assert_int_eq(json_parse((const char *)raw + 8, (size_t)hlen, &root, &err), BSQ_OK);
    ck_assert_int_eq(root->type, JSON_OBJECT);
    const json_value *meta = json_get(root, "__metadata__");
    ck_assert_ptr_nonnull(meta);
    ck_assert_str_eq(json_get(meta, "note")->string, "tab\there\nnewline \x01 ctl \\ back");
    json_free(root);
    /* the same bytes parse from memory as well */
    bsq_tensorset_init(&back);
    ck_assert_int_eq(bsq_safetensors_parse(raw, len, &back, &err), BSQ_OK);
    assert_same_sets(&ts, &back);
    bsq_tensorset_free(&back);
    free(raw);

    /* overwriting an existing file replaces it */
    bsq_tensorset small;
    bsq_tensorset_init(&small);
    int64_t s1[1] = {1};
    ck_assert_int_eq(bsq_tensorset_add(&small, "only", BSQ_DT_U8, 1, s1, one_byte, 1, 0, &err),
                     BSQ_OK);
    ck_assert_int_eq(bsq_safetensors_write(path, &small, &err), BSQ_OK);
    bsq_tensorset_init(&back);
    ck_assert_int_eq(bsq_safetensors_read(path, &back, &err), BSQ_OK);
    assert_same_sets(&small, &back);
    ck_assert_uint_eq(back.meta_count, 0);
    bsq_tensorset_free(&back);
    bsq_tensorset_free(&small);
    ck_assert_int_eq(count_entries(dir, 0), 1);

    bsq_tensorset_free(&ts);
    free(path);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_write_empty_set)
{
    bsq_tensorset ts, back;
    bsq_tensorset_init(&ts);
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "empty.safetensors");
    bsq_error err;
    ck_assert_int_eq(bsq_safetensors_write(path, &ts, &err), BSQ_OK);
    size_t len;
    unsigned char *raw = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(raw);
    ck_assert_uint_eq(len % 8, 0);
    ck_assert_uint_eq(le64(raw) + 8, len);
    free(raw);
    bsq_tensorset_init(&back);
    ck_assert_int_eq(bsq_safetensors_read(path, &back, &err), BSQ_OK);
    ck_assert_uint_eq(back.count, 0);
    ck_assert_uint_eq(back.meta_count, 0);
    bsq_tensorset_free(&back);
    free(path);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_alignment_all_header_sizes)
{
    /* names of every length mod 8 give every header length mod 8 */
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "a.safetensors");
    bsq_error err;
    for (int n = 1; n <= 17; n++) {
        char name[32];
        memset(name, 'x', (size_t)n);
        name[n] = 0;
        bsq_tensorset ts, back;
        bsq_tensorset_init(&ts);
        int64_t s[1] = {3};
        ck_assert_int_eq(bsq_tensorset_add(&ts, name, BSQ_DT_U8, 1, s, u8_vals, 3, 0, &err),
                         BSQ_OK);
        ck_assert_int_eq(bsq_safetensors_write(path, &ts, &err), BSQ_OK);
        size_t len;
        unsigned char *raw = tu_read_file(path, &len);
        ck_assert_ptr_nonnull(raw);
        ck_assert_uint_eq((8 + le64(raw)) % 8, 0);
        ck_assert_uint_eq(8 + le64(raw) + 3, len);
        free(raw);
        bsq_tensorset_init(&back);
        ck_assert_int_eq(bsq_safetensors_read(path, &back, &err), BSQ_OK);
        assert_same_sets(&ts, &back);
        ck_assert_uint_eq((uintptr_t)back.items[0].data % 8, 0); /* mapping is page aligned */
        bsq_tensorset_free(&back);
        bsq_tensorset_free(&ts);
    }
    free(path);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_tensorset_basics)
{
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    bsq_error err;
    int64_t s[1] = {1};
    ck_assert_int_eq(bsq_tensorset_add(&ts, "a", BSQ_DT_U8, 1, s, one_byte, 1, 0, &err), BSQ_OK);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(bsq_tensorset_add(&ts, "a", BSQ_DT_U8, 1, s, one_byte, 1, 0, &err),
                     BSQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.message, "a"));
    /* a refused owned block is freed, not leaked */
    ck_assert_int_ne(bsq_tensorset_add(&ts, "a", BSQ_DT_U8, 1, s, malloc(1), 1, 1, &err), BSQ_OK);
    int64_t big[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    ck_assert_int_ne(bsq_tensorset_add(&ts, "b", BSQ_DT_U8, 9, big, malloc(1), 1, 1, &err),
                     BSQ_OK);
    ck_assert_int_ne(bsq_tensorset_add(&ts, "c", BSQ_DT_U8, -1, big, one_byte, 1, 0, &err),
                     BSQ_OK);
    ck_assert_uint_eq(ts.count, 1);
    /* many tensors make the set grow */
    for (int i = 0; i < 300; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        ck_assert_int_eq(bsq_tensorset_add(&ts, name, BSQ_DT_U8, 1, s, malloc(1), 1, 1, &err),
                         BSQ_OK);
    }
    ck_assert_ptr_nonnull(bsq_tensorset_find(&ts, "t299"));
    ck_assert_ptr_null(bsq_tensorset_find(&ts, "t300"));
    /* dtype names */
    const char *names[] = {"F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"};
    const size_t sizes[] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};
    for (int i = 0; i < 10; i++) {
        bsq_dt dt;
        ck_assert_int_eq(bsq_dt_from_name(names[i], &dt), 1);
        ck_assert_int_eq(dt, i);
        ck_assert_str_eq(bsq_dt_name(dt), names[i]);
        ck_assert_uint_eq(bsq_dt_size(dt), sizes[i]);
    }
    bsq_dt dt;
    ck_assert_int_eq(bsq_dt_from_name("f32", &dt), 0);
    ck_assert_int_eq(bsq_dt_from_name("", &dt), 0);
    ck_assert_int_eq(bsq_dt_from_name("F8_E4M3", &dt), 0);
    bsq_tensorset_free(&ts);
    bsq_tensorset_free(&ts); /* freeing twice is harmless (the set is reset) */
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Half and bfloat16                                                         */

static int f16_is_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff); }

/* The value of a half, computed independently of the library. */
static double f16_value(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? INFINITY : ldexp(1024 + m, e - 25);
    return h & 0x8000 ? -v : v;
}

START_TEST(test_f16_all_values)
{
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float f = bsq_f16_to_f32(h);
        if (f16_is_nan(h)) {
            REQUIRE(isnan(f), "half %04x should be NaN", h);
            REQUIRE(!!signbit(f) == !!(h & 0x8000), "sign of NaN %04x lost", h);
            uint16_t back = bsq_f32_to_f16(f);
            REQUIRE(f16_is_nan(back), "NaN %04x came back as %04x", h, back);
            REQUIRE((back & 0x8000) == (h & 0x8000), "sign of NaN %04x lost", h);
            continue;
        }
        REQUIRE((double)f == f16_value(h), "half %04x -> %.9g, want %.9g", h, (double)f,
                f16_value(h));
        REQUIRE(!!signbit(f) == !!(h & 0x8000), "sign of %04x lost", h);
        uint16_t back = bsq_f32_to_f16(f);
        REQUIRE(back == h, "half %04x -> %.9g -> %04x", h, (double)f, back);
    }
}
END_TEST

START_TEST(test_f16_rounding_all_midpoints)
{
    /* between every two neighbouring finite halves (either sign): the
     * midpoint goes to the even one, anything nearer to the nearer one */
    for (uint32_t sign = 0; sign <= 0x8000; sign += 0x8000) {
        for (uint32_t h = 0; h < 0x7c00; h++) {
            float lo = bsq_f16_to_f32((uint16_t)(sign | h));
            float hi = bsq_f16_to_f32((uint16_t)(sign | (h + 1))); /* h+1 = 0x7c00 is inf */
            float mid = h + 1 == 0x7c00 ? (sign ? -65520.0f : 65520.0f) : (lo + hi) / 2;
            uint16_t even = (uint16_t)(sign | ((h & 1) ? h + 1 : h));
            REQUIRE(bsq_f32_to_f16(mid) == even, "midpoint %.9g of %04x -> %04x, want %04x",
                    (double)mid, sign | h, bsq_f32_to_f16(mid), even);
            float below = nextafterf(mid, lo), above = nextafterf(mid, sign ? -INFINITY : INFINITY);
            REQUIRE(bsq_f32_to_f16(below) == (uint16_t)(sign | h), "%.9g -> %04x", (double)below,
                    bsq_f32_to_f16(below));
            REQUIRE(bsq_f32_to_f16(above) == (uint16_t)(sign | (h + 1)), "%.9g -> %04x",
                    (double)above, bsq_f32_to_f16(above));
        }
    }
}
END_TEST

START_TEST(test_f16_known_values)
{
    ck_assert_uint_eq(bsq_f32_to_f16(0.0f), 0x0000);
    ck_assert_uint_eq(bsq_f32_to_f16(-0.0f), 0x8000);
    ck_assert_uint_eq(bsq_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(bsq_f32_to_f16(-2.0f), 0xc000);
    ck_assert_uint_eq(bsq_f32_to_f16(0.5f), 0x3800);
    ck_assert_uint_eq(bsq_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(bsq_f32_to_f16(0.333333343f), 0x3555);
    /* ties to even */
    ck_assert_uint_eq(bsq_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    ck_assert_uint_eq(bsq_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    ck_assert_uint_eq(bsq_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    ck_assert_uint_eq(bsq_f32_to_f16(2049.0f), 0x6800);  /* 2048 */
    ck_assert_uint_eq(bsq_f32_to_f16(2051.0f), 0x6802);  /* 2052 */
    ck_assert_uint_eq(bsq_f32_to_f16(-2051.0f), 0xe802);
    /* overflow */
    ck_assert_uint_eq(bsq_f32_to_f16(65519.0f), 0x7bff);
    ck_assert_uint_eq(bsq_f32_to_f16(65520.0f), 0x7c00);
    ck_assert_uint_eq(bsq_f32_to_f16(-65520.0f), 0xfc00);
    ck_assert_uint_eq(bsq_f32_to_f16(1e6f), 0x7c00);
    ck_assert_uint_eq(bsq_f32_to_f16(-1e6f), 0xfc00);
    ck_assert_uint_eq(bsq_f32_to_f16(3.4028235e38f), 0x7c00);
    ck_assert_uint_eq(bsq_f32_to_f16(INFINITY), 0x7c00);
    ck_assert_uint_eq(bsq_f32_to_f16(-INFINITY), 0xfc00);
    ck_assert(f16_is_nan(bsq_f32_to_f16(NAN)));
    ck_assert(f16_is_nan(bsq_f32_to_f16(bits_f32(0x7f800001u)))); /* payload only in low bits */
    ck_assert(f16_is_nan(bsq_f32_to_f16(bits_f32(0xffc00000u))));
    ck_assert(bsq_f16_to_f32(0x7c00) == INFINITY);
    ck_assert(bsq_f16_to_f32(0xfc00) == -INFINITY);
    /* subnormals */
    ck_assert_uint_eq(bsq_f32_to_f16(0x1p-24f), 0x0001);
    ck_assert_uint_eq(bsq_f32_to_f16(-0x1p-24f), 0x8001);
    ck_assert_uint_eq(bsq_f32_to_f16(0x1p-25f), 0x0000);         /* tie to even: zero */
    ck_assert_uint_eq(bsq_f32_to_f16(-0x1p-25f), 0x8000);
    ck_assert_uint_eq(bsq_f32_to_f16(0x1.000002p-25f), 0x0001);  /* just above the tie */
    ck_assert_uint_eq(bsq_f32_to_f16(3 * 0x1p-25f), 0x0002);     /* tie to even: 2 */
    ck_assert_uint_eq(bsq_f32_to_f16(5 * 0x1p-25f), 0x0002);
    ck_assert_uint_eq(bsq_f32_to_f16(0x3ffp-24f), 0x03ff);       /* largest subnormal */
    ck_assert_uint_eq(bsq_f32_to_f16(0x1p-14f - 0x1p-25f), 0x0400); /* tie rounds up to normal */
    ck_assert_uint_eq(bsq_f32_to_f16(0x1p-14f), 0x0400);
    ck_assert_uint_eq(bsq_f32_to_f16(1e-10f), 0x0000);
    ck_assert_uint_eq(bsq_f32_to_f16(-1e-10f), 0x8000);
    ck_assert_uint_eq(bsq_f32_to_f16(bits_f32(1)), 0x0000); /* f32 subnormal */
    ck_assert(bsq_f16_to_f32(0x0001) == 0x1p-24f);
    ck_assert(bsq_f16_to_f32(0x03ff) == 0x3ffp-24f);
    ck_assert(bsq_f16_to_f32(0x8200) == -0x1p-15f);
}
END_TEST

static int bf16_is_nan(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x7f); }

START_TEST(test_bf16_all_values)
{
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float f = bsq_bf16_to_f32(h);
        REQUIRE(f32_bits(f) == (uint32_t)h << 16, "bf16 %04x widened wrongly", h);
        uint16_t back = bsq_f32_to_bf16(f);
        if (bf16_is_nan(h)) {
            REQUIRE(isnan(f), "bf16 %04x should be NaN", h);
            REQUIRE(bf16_is_nan(back), "NaN %04x came back as %04x", h, back);
            REQUIRE((back & 0x8000) == (h & 0x8000), "sign of NaN %04x lost", h);
        } else {
            REQUIRE(back == h, "bf16 %04x -> %04x", h, back);
        }
    }
}
END_TEST

START_TEST(test_bf16_rounding_all_midpoints)
{
    for (uint32_t sign = 0; sign <= 0x8000; sign += 0x8000) {
        for (uint32_t h = 0; h < 0x7f80; h++) { /* finite, h + 1 may be inf */
            uint32_t mid = (sign | h) << 16 | 0x8000;
            uint16_t even = (uint16_t)(sign | ((h & 1) ? h + 1 : h));
            REQUIRE(bsq_f32_to_bf16(bits_f32(mid)) == even, "midpoint %08x -> %04x, want %04x",
                    mid, bsq_f32_to_bf16(bits_f32(mid)), even);
            REQUIRE(bsq_f32_to_bf16(bits_f32(mid - 1)) == (sign | h), "below %08x", mid);
            REQUIRE(bsq_f32_to_bf16(bits_f32(mid + 1)) == (sign | (h + 1)), "above %08x", mid);
        }
    }
}
END_TEST

START_TEST(test_bf16_known_values)
{
    ck_assert_uint_eq(bsq_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(bsq_f32_to_bf16(-2.0f), 0xc000);
    ck_assert_uint_eq(bsq_f32_to_bf16(0.0f), 0x0000);
    ck_assert_uint_eq(bsq_f32_to_bf16(-0.0f), 0x8000);
    ck_assert_uint_eq(bsq_f32_to_bf16(3.14159265f), 0x4049);
    /* ties to even */
    ck_assert_uint_eq(bsq_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
    ck_assert_uint_eq(bsq_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
    ck_assert_uint_eq(bsq_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
    ck_assert_uint_eq(bsq_f32_to_bf16(257.0f), 0x4380); /* 256 */
    ck_assert_uint_eq(bsq_f32_to_bf16(259.0f), 0x4382); /* 260 */
    /* overflow: the largest floats round to infinity */
    ck_assert_uint_eq(bsq_f32_to_bf16(3.4028235e38f), 0x7f80);
    ck_assert_uint_eq(bsq_f32_to_bf16(-3.4028235e38f), 0xff80);
    ck_assert_uint_eq(bsq_f32_to_bf16(bits_f32(0x7f7f7fffu)), 0x7f7f);
    ck_assert_uint_eq(bsq_f32_to_bf16(INFINITY), 0x7f80);
    ck_assert_uint_eq(bsq_f32_to_bf16(-INFINITY), 0xff80);
    /* NaN stays NaN, also where rounding the bits would give infinity */
    ck_assert(bf16_is_nan(bsq_f32_to_bf16(NAN)));
    ck_assert(bf16_is_nan(bsq_f32_to_bf16(bits_f32(0x7f800001u))));
    ck_assert(bf16_is_nan(bsq_f32_to_bf16(bits_f32(0x7f80ffffu))));
    ck_assert(bf16_is_nan(bsq_f32_to_bf16(bits_f32(0x7fffffffu))));
    ck_assert_uint_eq(bsq_f32_to_bf16(bits_f32(0xff800001u)) & 0x8000, 0x8000);
    /* subnormals */
    ck_assert_uint_eq(bsq_f32_to_bf16(bits_f32(0x00010000u)), 0x0001);
    ck_assert_uint_eq(bsq_f32_to_bf16(bits_f32(0x00008000u)), 0x0000); /* tie to even */
    ck_assert_uint_eq(bsq_f32_to_bf16(bits_f32(0x00018000u)), 0x0002);
    ck_assert_uint_eq(bsq_f32_to_bf16(bits_f32(0x00008001u)), 0x0001);
    ck_assert_uint_eq(bsq_f32_to_bf16(bits_f32(0x007fffffu)), 0x0080); /* up to the least normal */
    ck_assert_uint_eq(bsq_f32_to_bf16(bits_f32(0x80000001u)), 0x8000);
    ck_assert(bsq_bf16_to_f32(0x0001) == 0x1p-133f);
}
END_TEST

START_TEST(test_tensor_to_f32)
{
    bsq_error err;
    const uint8_t h[4] = {0x00, 0x3c, 0x00, 0xc0};  /* 1, -2 as F16 */
    const uint8_t b[4] = {0x80, 0x3f, 0x49, 0x40};  /* 1, 3.140625 as BF16 */
    double d[2] = {0.25, -3.0e-3};
    bsq_tensor t = {.name = (char *)"t", .dtype = BSQ_DT_F16, .ndim = 1, .shape = {2},
                    .data = h, .nbytes = 4};
    float out[2];
    ck_assert_int_eq(bsq_tensor_to_f32(&t, out, &err), BSQ_OK);
    ck_assert(out[0] == 1.0f && out[1] == -2.0f);
    t.dtype = BSQ_DT_BF16;
    t.data = b;
    ck_assert_int_eq(bsq_tensor_to_f32(&t, out, &err), BSQ_OK);
    ck_assert(out[0] == 1.0f && out[1] == 3.140625f);
    t.dtype = BSQ_DT_F64;
    t.data = d;
    t.nbytes = 16;
    ck_assert_int_eq(bsq_tensor_to_f32(&t, out, &err), BSQ_OK);
    ck_assert(out[0] == 0.25f && out[1] == -3.0e-3f);
    /* the byte count must match */
    t.nbytes = 8;
    ck_assert_int_eq(bsq_tensor_to_f32(&t, out, &err), BSQ_ERR_FORMAT);
    t.dtype = BSQ_DT_I32;
    ck_assert_int_eq(bsq_tensor_to_f32(&t, out, &err), BSQ_ERR_UNSUPPORTED);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Corrupt files                                                             */

/* A file image: length prefix, header, data. Exactly sized. */
static unsigned char *image(const char *header, const void *data, size_t data_len, size_t *len)
{
    size_t hl = strlen(header);
    *len = 8 + hl + data_len;
    unsigned char *p = malloc(*len);
    ck_assert_ptr_nonnull(p);
    put_le64(p, hl);
    memcpy(p + 8, header, hl);
    if (data_len)
        memcpy(p + 8 + hl, data, data_len);
    return p;
}

static unsigned char zeros[4096];

/* Parses bytes[0..len) from an exact-size copy; returns the status and
 * checks the message is not empty on failure. */
static bsq_status parse_bytes(const unsigned char *bytes, size_t len, bsq_error *err)
{
    unsigned char *copy = malloc(len ? len : 1);
    REQUIRE(copy != NULL, "out of memory");
    if (len)
        memcpy(copy, bytes, len);
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    memset(err, 0, sizeof *err);
    bsq_status st = bsq_safetensors_parse(copy, len, &ts, err);
    if (st != BSQ_OK) {
        REQUIRE(err->message[0] != 0, "empty message for status %d", (int)st);
        REQUIRE(err->code == st, "code %d for status %d", (int)err->code, (int)st);
    } else {
        /* whatever was accepted is consistent and inside the buffer */
        for (size_t i = 0; i < ts.count; i++) {
            const bsq_tensor *t = &ts.items[i];
            double numel = 1;
            for (int d = 0; d < t->ndim; d++)
                numel *= (double)t->shape[d];
            REQUIRE(numel * (double)bsq_dt_size(t->dtype) == (double)t->nbytes,
                    "%s: %zu bytes for its shape", t->name, t->nbytes);
            REQUIRE((const unsigned char *)t->data >= copy &&
                        (const unsigned char *)t->data + t->nbytes <= copy + len,
                    "%s lies outside the buffer", t->name);
        }
    }
    bsq_tensorset_free(&ts);
    free(copy);
    return st;
}

/* The same bytes as a file, through bsq_safetensors_read. */
static bsq_status read_bytes(const char *dir, const unsigned char *bytes, size_t len,
                             bsq_error *err)
{
    char *path = tu_path(dir, "corrupt.safetensors");
    ck_assert_int_eq(tu_write_file(path, bytes, len), 0);
    bsq_tensorset ts;
    bsq_tensorset_init(&ts);
    memset(err, 0, sizeof *err);
    bsq_status st = bsq_safetensors_read(path, &ts, err);
    if (st != BSQ_OK) {
        ck_assert_msg(err->message[0] != 0, "empty message for status %d", (int)st);
        ck_assert_int_eq(err->code, st);
    }
    bsq_tensorset_free(&ts);
    unlink(path);
    free(path);
    return st;
}

/* A corrupt header with `data_len` zero bytes of data must be refused with
 * `want` (or any error when want is BSQ_OK), from memory and from a file. */
static void expect_corrupt(const char *dir, const char *header, size_t data_len, bsq_status want)
{
    size_t len;
    unsigned char *p = image(header, zeros, data_len, &len);
    bsq_error err;
    bsq_status st = parse_bytes(p, len, &err);
    ck_assert_msg(st != BSQ_OK, "accepted: %s", header);
    if (want != BSQ_OK)
        ck_assert_msg(st == want, "%s: status %d (%s), want %d", header, (int)st, err.message,
                      (int)want);
    st = read_bytes(dir, p, len, &err);
    ck_assert_msg(st != BSQ_OK, "accepted from a file: %s", header);
    if (want != BSQ_OK)
        ck_assert_int_eq(st, want);
    ck_assert_ptr_nonnull(strstr(err.message, "corrupt.safetensors")); /* names the file */
    free(p);
}

#define T(body) "{\"a\":{" body "}}"

START_TEST(test_corrupt_headers)
{
    char *dir = tu_tmpdir();
    bsq_error err;
    /* the base case is valid */
    size_t len;
    unsigned char *p = image(T("\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]"), zeros,
                             16, &len);
    ck_assert_int_eq(parse_bytes(p, len, &err), BSQ_OK);
    ck_assert_int_eq(read_bytes(dir, p, len, &err), BSQ_OK);
    free(p);

    /* header not JSON, or JSON but not an object */
    expect_corrupt(dir, "", 0, BSQ_ERR_FORMAT); /* header length 0 */
    expect_corrupt(dir, "not json", 16, BSQ_ERR_FORMAT);
    expect_corrupt(dir, "{\"a\": nope}", 16, BSQ_ERR_FORMAT);
    expect_corrupt(dir, "{\"a\":{\"dtype\":\"F32\",", 16, BSQ_ERR_FORMAT);
    expect_corrupt(dir, "{\"a\":1}}", 16, BSQ_ERR_FORMAT);
    expect_corrupt(dir, "[1, 2]", 16, BSQ_ERR_FORMAT);
    expect_corrupt(dir, "\"str\"", 16, BSQ_ERR_FORMAT);
    expect_corrupt(dir, "42", 16, BSQ_ERR_FORMAT);
    expect_corrupt(dir, "null", 16, BSQ_ERR_FORMAT);
    expect_corrupt(dir, "{\"a\": 5}", 16, BSQ_ERR_FORMAT);
    expect_corrupt(dir, "{\"a\": []}", 16, BSQ_ERR_FORMAT);
    expect_corrupt(dir, "{\"__metadata__\": []}", 0, BSQ_ERR_FORMAT);
    expect_corrupt(dir, "{\"__metadata__\": {\"k\": 5}}", 0, BSQ_ERR_FORMAT);
    expect_corrupt(dir, "{\"__metadata__\": {\"k\": {\"x\": \"y\"}}}", 0, BSQ_ERR_FORMAT);
    {
        /* deep nesting is refused, not a stack overflow */
        size_t n = 100000;
        char *deep = malloc(n + 1);
        ck_assert_ptr_nonnull(deep);
        memset(deep, '[', n);
        deep[n] = 0;
        expect_corrupt(dir, deep, 0, BSQ_ERR_FORMAT);
        free(deep);
    }

    /* missing or mistyped fields */
    expect_corrupt(dir, T("\"shape\":[4],\"data_offsets\":[0,16]"), 16, BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"data_offsets\":[0,16]"), 16, BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[4]"), 16, BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":4,\"shape\":[4],\"data_offsets\":[0,16]"), 16, BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,8,16]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":{\"a\":0,\"b\":16}"),
                   16, BSQ_ERR_FORMAT);

    /* unknown dtypes */
    expect_corrupt(dir, T("\"dtype\":\"F8_E4M3\",\"shape\":[16],\"data_offsets\":[0,16]"), 16,
                   BSQ_ERR_UNSUPPORTED);
    expect_corrupt(dir, T("\"dtype\":\"f32\",\"shape\":[4],\"data_offsets\":[0,16]"), 16,
                   BSQ_ERR_UNSUPPORTED);
    expect_corrupt(dir, T("\"dtype\":\"\",\"shape\":[4],\"data_offsets\":[0,16]"), 16,
                   BSQ_ERR_UNSUPPORTED);
    expect_corrupt(dir, T("\"dtype\":\"Q4_0\",\"shape\":[4],\"data_offsets\":[0,16]"), 16,
                   BSQ_ERR_UNSUPPORTED);

    /* bad shapes */
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,16]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[1.5,2],\"data_offsets\":[0,12]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,10]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[\"4\"],\"data_offsets\":[0,16]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[null],\"data_offsets\":[0,16]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[[4]],\"data_offsets\":[0,16]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"U8\",\"shape\":[1e300],\"data_offsets\":[0,16]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"U8\",\"shape\":[1e13],\"data_offsets\":[0,16]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,16],\"data_offsets\":[0,16]"),
                   16, BSQ_ERR_UNSUPPORTED);
    expect_corrupt(dir,
                   T("\"dtype\":\"U8\",\"shape\":[1000000,1000000,1000000,1000000],"
                     "\"data_offsets\":[0,16]"),
                   16, BSQ_ERR_FORMAT);

    /* data offsets outside the data, or not matching dtype x shape */
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]"), 12,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[-4,12]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0.5,4.5]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[\"0\",\"16\"]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[null,16]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,1e300]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[-1e300,16]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[1e19,1e19]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,16]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"I64\",\"shape\":[4],\"data_offsets\":[0,16]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,0]"), 16,
                   BSQ_ERR_FORMAT);
    expect_corrupt(dir, T("\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,8]"), 16,
                   BSQ_ERR_FORMAT);

    /* duplicate names */
    expect_corrupt(dir,
                   "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                   "\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[8,16]}}",
                   16, BSQ_ERR_FORMAT);
    expect_corrupt(dir,
                   "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                   "\"\\u0061\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                   16, BSQ_ERR_FORMAT);
    /* a good tensor followed by a bad one */
    expect_corrupt(dir,
                   "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"U8\",\"shape\":[9],\"data_offsets\":[8,16]}}",
                   16, BSQ_ERR_FORMAT);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_bad_header_length)
{
    char *dir = tu_tmpdir();
    bsq_error err;
    size_t len;
    unsigned char *p = image(T("\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]"), zeros,
                             16, &len);
    const uint64_t lens[] = {len - 8 + 1, len, len + 1000, 1ull << 32, (100ull << 20) + 1,
                             1ull << 63, UINT64_MAX, UINT64_MAX - 7};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        put_le64(p, lens[i]);
        ck_assert_int_eq(parse_bytes(p, len, &err), BSQ_ERR_FORMAT);
        ck_assert_ptr_nonnull(strstr(err.message, "header length"));
        ck_assert_int_eq(read_bytes(dir, p, len, &err), BSQ_ERR_FORMAT);
    }
    /* shorter than the header says by one byte: the header's end is cut */
    put_le64(p, len - 8 - 16 - 1);
    ck_assert_int_eq(parse_bytes(p, len, &err), BSQ_ERR_FORMAT);
    /* a header length that takes in the data: the data is not JSON */
    put_le64(p, len - 8);
    ck_assert_int_eq(parse_bytes(p, len, &err), BSQ_ERR_FORMAT);
    /* files shorter than the length field */
    for (size_t n = 0; n < 8; n++) {
        ck_assert_int_eq(parse_bytes(p, n, &err), BSQ_ERR_FORMAT);
        ck_assert_int_eq(read_bytes(dir, p, n, &err), BSQ_ERR_FORMAT);
    }
    free(p);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_truncated_written_file)
{
    /* every truncation of a file we wrote, from memory */
    bsq_tensorset ts;
    build_set(&ts);
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "set.safetensors");
    bsq_error err;
    ck_assert_int_eq(bsq_safetensors_write(path, &ts, &err), BSQ_OK);
    size_t len;
    unsigned char *raw = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(raw);
    ck_assert_int_eq(parse_bytes(raw, len, &err), BSQ_OK);
    for (size_t n = 0; n < len; n++)
        REQUIRE(parse_bytes(raw, n, &err) != BSQ_OK, "truncated to %zu accepted", n);
    free(raw);
    bsq_tensorset_free(&ts);
    free(path);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_truncated_fixture)
{
    char *path = fixture_path(FIXTURE);
    size_t len;
    unsigned char *raw = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(raw);
    size_t hend = 8 + (size_t)le64(raw);
    ck_assert_uint_gt(len, hend);
    char *dir = tu_tmpdir();
    bsq_error err;
    /* every length for the first 200 bytes, as files and from memory */
    for (size_t n = 0; n < 200; n++) {
        ck_assert_msg(read_bytes(dir, raw, n, &err) != BSQ_OK, "truncated to %zu accepted", n);
        ck_assert_int_eq(parse_bytes(raw, n, &err), BSQ_ERR_FORMAT);
    }
    /* then a sample: around the end of the header, and spread to the end */
    size_t sample[80];
    size_t ns = 0;
    sample[ns++] = hend - 1;
    sample[ns++] = hend;
    sample[ns++] = hend + 1;
    sample[ns++] = hend + 4;
    sample[ns++] = len - 4;
    sample[ns++] = len - 1;
    for (size_t k = 1; k < 64; k++)
        sample[ns++] = 200 + (len - 200) * k / 64 + k * 7 % 5;
    for (size_t i = 0; i < ns; i++) {
        ck_assert_msg(read_bytes(dir, raw, sample[i], &err) != BSQ_OK, "truncated to %zu accepted",
                      sample[i]);
        ck_assert_int_eq(parse_bytes(raw, sample[i], &err), BSQ_ERR_FORMAT);
    }
    ck_assert_int_eq(read_bytes(dir, raw, len, &err), BSQ_OK);
    free(raw);
    free(path);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_mutated_headers)
{
    /* every header byte replaced by characters that matter to JSON: no
     * crash, no read outside the buffer, and any accepted result is
     * consistent (checked in parse_bytes) */
    bsq_tensorset ts;
    build_set(&ts);
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "set.safetensors");
    bsq_error err;
    ck_assert_int_eq(bsq_safetensors_write(path, &ts, &err), BSQ_OK);
    size_t len;
    unsigned char *raw = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(raw);
    size_t hend = 8 + (size_t)le64(raw);
    const unsigned char subst[] = {0x00, '"', '\\', '{', '}', '[', ']', ',', ':', '-', '0', '9',
                                   'e', '.', ' ', 0x01, 0xff};
    int refused = 0, total = 0;
    for (size_t i = 0; i < hend; i++) {
        unsigned char orig = raw[i];
        for (size_t k = 0; k < sizeof subst; k++) {
            if (subst[k] == orig)
                continue;
            raw[i] = subst[k];
            refused += parse_bytes(raw, len, &err) != BSQ_OK;
            total++;
        }
        raw[i] = orig;
    }
    ck_assert_int_gt(refused, total / 2);
    free(raw);
    bsq_tensorset_free(&ts);
    free(path);
    tu_rmdir(dir);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Write failures                                                            */

START_TEST(test_write_unwritable)
{
    bsq_tensorset ts;
    build_set(&ts);
    char *dir = tu_tmpdir();
    bsq_error err;

    /* a directory that does not exist */
    char *missing = tu_path(dir, "no/such/dir/x.safetensors");
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(bsq_safetensors_write(missing, &ts, &err), BSQ_ERR_IO);
    ck_assert_str_ne(err.message, "");
    ck_assert_int_eq(err.code, BSQ_ERR_IO);
    ck_assert_int_eq(count_entries(dir, 0), 0);
    free(missing);

    /* the target is a directory: the temporary is written, the rename
     * fails, and the temporary is removed */
    char *sub = tu_path(dir, "sub");
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    char *inner = tu_path(sub, "keep");
    ck_assert_int_eq(tu_write_file(inner, "x", 1), 0);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(bsq_safetensors_write(sub, &ts, &err), BSQ_ERR_IO);
    ck_assert_str_ne(err.message, "");
    ck_assert_int_eq(count_entries(dir, 0), 1); /* only sub */
    ck_assert_int_eq(count_entries(sub, 0), 1);
    unlink(inner);
    free(inner);
    rmdir(sub);
    free(sub);

    /* a read-only directory (meaningless as root, who may write anyway) */
    if (geteuid() != 0) {
        char *ro = tu_path(dir, "ro");
        ck_assert_int_eq(mkdir(ro, 0555), 0);
        char *target = tu_path(ro, "x.safetensors");
        ck_assert_int_eq(bsq_safetensors_write(target, &ts, &err), BSQ_ERR_IO);
        ck_assert_int_eq(count_entries(ro, 0), 0);
        free(target);
        rmdir(ro);
        free(ro);
    }
    bsq_tensorset_free(&ts);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_write_fails_midway)
{
    /* a file size limit makes the data writes fail part-way: the error is
     * BSQ_ERR_IO, nothing is left behind and an existing file survives */
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "big.safetensors");
    bsq_error err;
    bsq_tensorset small, big;
    bsq_tensorset_init(&small);
    int64_t s1[1] = {7};
    ck_assert_int_eq(bsq_tensorset_add(&small, "u8", BSQ_DT_U8, 1, s1, u8_vals, 7, 0, &err),
                     BSQ_OK);
    ck_assert_int_eq(bsq_safetensors_write(path, &small, &err), BSQ_OK);
    size_t old_len;
    void *old = tu_read_file(path, &old_len);
    ck_assert_ptr_nonnull(old);

    bsq_tensorset_init(&big);
    size_t n = 256 * 1024;
    uint8_t *data = calloc(n, 1);
    int64_t sn[1] = {(int64_t)n};
    ck_assert_int_eq(bsq_tensorset_add(&big, "big", BSQ_DT_U8, 1, sn, data, n, 1, &err), BSQ_OK);

    struct rlimit saved, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    lim = saved;
    lim.rlim_cur = 16 * 1024;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    memset(&err, 0, sizeof err);
    bsq_status st = bsq_safetensors_write(path, &big, &err);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, prev);
    ck_assert_msg(st == BSQ_ERR_IO, "status %d: %s", (int)st, err.message);
    ck_assert_str_ne(err.message, "");
    ck_assert_int_eq(count_entries(dir, 1), 0);
    ck_assert_int_eq(count_entries(dir, 0), 1);
    size_t now_len;
    void *now = tu_read_file(path, &now_len);
    ck_assert_ptr_nonnull(now);
    ck_assert_uint_eq(now_len, old_len);
    ck_assert_int_eq(memcmp(now, old, old_len), 0);
    free(now);
    free(old);
    bsq_tensorset_free(&big);
    bsq_tensorset_free(&small);
    free(path);
    tu_rmdir(dir);
}
END_TEST

static Suite *safetensors_suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *rd = tcase_create("read");
    tcase_set_timeout(rd, 60);
    tcase_add_test(rd, test_read_fixture);
    tcase_add_test(rd, test_read_fixture_dtypes);
    tcase_add_test(rd, test_read_missing_and_special);
    suite_add_tcase(s, rd);
    TCase *wr = tcase_create("write");
    tcase_set_timeout(wr, 60);
    tcase_add_test(wr, test_write_read_roundtrip);
    tcase_add_test(wr, test_write_empty_set);
    tcase_add_test(wr, test_alignment_all_header_sizes);
    tcase_add_test(wr, test_tensorset_basics);
    tcase_add_test(wr, test_write_unwritable);
    tcase_add_test(wr, test_write_fails_midway);
    suite_add_tcase(s, wr);
    TCase *cv = tcase_create("convert");
    tcase_set_timeout(cv, 60);
    tcase_add_test(cv, test_f16_all_values);
    tcase_add_test(cv, test_f16_rounding_all_midpoints);
    tcase_add_test(cv, test_f16_known_values);
    tcase_add_test(cv, test_bf16_all_values);
    tcase_add_test(cv, test_bf16_rounding_all_midpoints);
    tcase_add_test(cv, test_bf16_known_values);
    tcase_add_test(cv, test_tensor_to_f32);
    suite_add_tcase(s, cv);
    TCase *bad = tcase_create("corrupt");
    tcase_set_timeout(bad, 60);
    tcase_add_test(bad, test_corrupt_headers);
    tcase_add_test(bad, test_bad_header_length);
    tcase_add_test(bad, test_truncated_written_file);
    tcase_add_test(bad, test_truncated_fixture);
    tcase_add_test(bad, test_mutated_headers);
    suite_add_tcase(s, bad);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(safetensors_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
