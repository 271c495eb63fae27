/* bsq_model_open on the fixtures and on broken or unusual model files
 * (built by editing a fixture's tensors and metadata), and bsq_model_save
 * in each storage dtype. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bsq.h"
#include "json.h"
#include "model.h"
#include "safetensors.h"
#include "sha256.h"
#include "testutil.h"

#define IMG "img32_w64_l2_L18g9.weights.safetensors"
#define RECT "img32x48_w64_l2_L36g4.weights.safetensors"
#define VID "vid4x32_w64_l2_L18g9_blockcausal.weights.safetensors"

/* For loops over every weight: ck_assert records a checkpoint per call. */
#define REQUIRE(cond, ...)                                                                   \
    do {                                                                                     \
        if (!(cond))                                                                         \
            ck_abort_msg(__VA_ARGS__);                                                       \
    } while (0)

static char *fixture(const char *name)
{
    char *dir = tu_path(tu_data_dir(), "bsqvit-parity");
    char *p = tu_path(dir, name);
    free(dir);
    return p;
}

static void read_set(const char *path, bsq_tensorset *ts)
{
    bsq_error err;
    bsq_tensorset_init(ts);
    ck_assert_msg(bsq_safetensors_read(path, ts, &err) == BSQ_OK, "%s", err.message);
}

static void read_fixture(const char *name, bsq_tensorset *ts)
{
    char *p = fixture(name);
    read_set(p, ts);
    free(p);
}

/* Copies src's tensors (borrowing their bytes: src must outlive dst) except
 * `skip`, and its metadata when `meta` is set. */
static void copy_set(const bsq_tensorset *src, bsq_tensorset *dst, const char *skip, int meta)
{
    bsq_error err;
    bsq_tensorset_init(dst);
    for (size_t i = 0; i < src->count; i++) {
        const bsq_tensor *t = &src->items[i];
        if (skip && strcmp(t->name, skip) == 0)
            continue;
        ck_assert_int_eq(bsq_tensorset_add(dst, t->name, t->dtype, t->ndim, t->shape, t->data,
                                           t->nbytes, 0, &err), BSQ_OK);
    }
    for (size_t i = 0; meta && i < src->meta_count; i++)
        ck_assert_int_eq(bsq_tensorset_set_meta(dst, src->meta_keys[i], src->meta_values[i], &err),
                         BSQ_OK);
}

static char *write_set(const char *dir, const char *name, const bsq_tensorset *ts)
{
    char *p = tu_path(dir, name);
    bsq_error err;
    ck_assert_msg(bsq_safetensors_write(p, ts, &err) == BSQ_OK, "%s", err.message);
    return p;
}

/* s with the first `from` replaced by `to` (malloc'd); `from` must occur. */
static char *replace(const char *s, const char *from, const char *to)
{
    const char *at = strstr(s, from);
    ck_assert_msg(at != NULL, "\"%s\" not in %s", from, s);
    size_t n = strlen(s) - strlen(from) + strlen(to);
    char *r = malloc(n + 1);
    ck_assert_ptr_nonnull(r);
    size_t pre = (size_t)(at - s);
    memcpy(r, s, pre);
    strcpy(r + pre, to);
    strcat(r, at + strlen(from));
    return r;
}

/* A copy of the fixture with its "config" metadata edited. */
static char *write_with_config(const char *dir, const char *fixture_name, const char *from,
                               const char *to, bsq_tensorset *src)
{
    bsq_tensorset out;
    read_fixture(fixture_name, src);
    copy_set(src, &out, NULL, 1);
    char *cfg = replace(bsq_tensorset_meta(src, "config"), from, to);
    bsq_error err;
    ck_assert_int_eq(bsq_tensorset_set_meta(&out, "config", cfg, &err), BSQ_OK);
    free(cfg);
    char *p = write_set(dir, "edited.safetensors", &out);
    bsq_tensorset_free(&out);
    return p;
}

/* Opening must fail with `want` (or `alt`, when not BSQ_OK), leave *out
 * alone and give a message that contains each of the NULL-ended strings. */
static void expect_open_fails(const char *path, const bsq_config *hints, bsq_status want,
                              bsq_status alt, ...)
{
    bsq_model *m = NULL;
    bsq_error err;
    memset(&err, 0, sizeof err);
    bsq_status st = bsq_model_open(path, hints, &m, &err);
    ck_assert_msg(st != BSQ_OK, "%s opened", path);
    ck_assert_ptr_null(m);
    ck_assert_msg(st == want || (alt != BSQ_OK && st == alt), "status %d (%s): %s", (int)st,
                  bsq_status_string(st), err.message);
    ck_assert_int_eq(err.code, st);
    ck_assert_str_ne(err.message, "");
    if (getenv("BSQ_TEST_VERBOSE"))
        fprintf(stderr, "[%s] %s\n", bsq_status_string(st), err.message);
    va_list ap;
    va_start(ap, alt);
    for (const char *s; (s = va_arg(ap, const char *));)
        ck_assert_msg(strstr(err.message, s) != NULL, "message lacks \"%s\": %s", s, err.message);
    va_end(ap);
    /* and without an error record */
    ck_assert_int_eq(bsq_model_open(path, hints, &m, NULL), st);
    ck_assert_ptr_null(m);
}

static bsq_model *open_ok(const char *path, const bsq_config *hints)
{
    bsq_model *m = NULL;
    bsq_error err;
    ck_assert_msg(bsq_model_open(path, hints, &m, &err) == BSQ_OK, "%s: %s", path, err.message);
    ck_assert_ptr_nonnull(m);
    return m;
}

static int json_int(const json_value *cfg, const char *key)
{
    const json_value *v = json_get(cfg, key);
    ck_assert_msg(v && v->type == JSON_NUMBER, "config lacks %s", key);
    return (int)v->number;
}

/* The model's configuration is the one in the file's metadata. */
static void assert_config_as_metadata(const bsq_config *c, const char *json)
{
    json_value *cfg = NULL;
    bsq_error err;
    ck_assert_int_eq(json_parse(json, strlen(json), &cfg, &err), BSQ_OK);
    ck_assert_int_eq(c->image_height, json_int(cfg, "image_height"));
    ck_assert_int_eq(c->image_width, json_int(cfg, "image_width"));
    ck_assert_int_eq(c->patch_size, json_int(cfg, "patch_size"));
    ck_assert_int_eq(c->width, json_int(cfg, "width"));
    ck_assert_int_eq(c->layers, json_int(cfg, "layers"));
    ck_assert_int_eq(c->heads, json_int(cfg, "heads"));
    ck_assert_int_eq(c->decoder_ffn_dim, json_int(cfg, "decoder_ffn_dim"));
    ck_assert_int_eq(c->L, json_int(cfg, "L"));
    ck_assert_int_eq(c->group_size, json_int(cfg, "group_size"));
    ck_assert_int_eq(c->num_frames, json_int(cfg, "num_frames"));
    const json_value *ratio = json_get(cfg, "mlp_ratio");
    ck_assert_ptr_nonnull(ratio);
    ck_assert_int_eq(c->mlp_dim, (int)lround(ratio->number * c->width));
    const json_value *mask = json_get(cfg, "mask");
    ck_assert_ptr_nonnull(mask);
    ck_assert_int_eq(c->block_causal, strcmp(mask->string, "block-causal") == 0);
    const json_value *eps = json_get(cfg, "layer_norm_eps");
    ck_assert_ptr_nonnull(eps);
    ck_assert(c->layer_norm_eps == (float)eps->number);
    json_free(cfg);
}

/* Every parameter of m holds exactly the bytes of the F32 tensor in ts. */
static void assert_weights_as_set(const bsq_model *m, const bsq_tensorset *ts)
{
    size_t used = 0;
    for (size_t i = 0; i < m->nparams; i++) {
        const bsq_param *p = &m->params[i];
        const bsq_tensor *t = bsq_tensorset_find(ts, p->name);
        ck_assert_msg(t != NULL, "%s not in the file", p->name);
        ck_assert_int_eq(t->dtype, BSQ_DT_F32);
        ck_assert_uint_eq(t->nbytes, p->count * 4);
        ck_assert_msg(memcmp(m->data + p->offset, t->data, t->nbytes) == 0, "%s differs", p->name);
        ck_assert_uint_le(p->offset + p->count, m->total);
        used++;
    }
    ck_assert_uint_eq(used, ts->count); /* the fixtures hold nothing else */
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* ------------------------------------------------------------------------ */
/* The fixtures                                                              */

START_TEST(test_open_fixtures)
{
    char *dir = tu_path(tu_data_dir(), "bsqvit-parity");
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!ends_with(e->d_name, ".weights.safetensors"))
            continue;
        char *path = tu_path(dir, e->d_name);
        bsq_model *m = open_ok(path, NULL);
        bsq_tensorset ts;
        read_set(path, &ts);
        const char *json = bsq_tensorset_meta(&ts, "config");
        ck_assert_ptr_nonnull(json);
        assert_config_as_metadata(bsq_model_config(m), json);
        assert_weights_as_set(m, &ts);
        /* hints do not override what the file says */
        bsq_config hints = {.heads = 1, .num_frames = 7, .layers = 9, .block_causal = 1};
        bsq_model *m2 = open_ok(path, &hints);
        assert_config_as_metadata(bsq_model_config(m2), json);
        ck_assert_int_eq(memcmp(m->data, m2->data, m->total * sizeof(float)), 0);
        bsq_model_close(m2);
        bsq_tensorset_free(&ts);
        bsq_model_close(m);
        free(path);
        found++;
    }
    closedir(d);
    ck_assert_int_ge(found, 3);
    free(dir);
}
END_TEST

START_TEST(test_fixture_configs)
{
    /* the values themselves, for the three known cases */
    char *p = fixture(IMG);
    bsq_model *m = open_ok(p, NULL);
    const bsq_config *c = bsq_model_config(m);
    ck_assert_int_eq(c->image_height, 32);
    ck_assert_int_eq(c->image_width, 32);
    ck_assert_int_eq(c->patch_size, 8);
    ck_assert_int_eq(c->width, 64);
    ck_assert_int_eq(c->layers, 2);
    ck_assert_int_eq(c->heads, 4);
    ck_assert_int_eq(c->mlp_dim, 256);
    ck_assert_int_eq(c->decoder_ffn_dim, 256);
    ck_assert_int_eq(c->L, 18);
    ck_assert_int_eq(c->group_size, 9);
    ck_assert_int_eq(c->num_frames, 1);
    ck_assert_int_eq(c->block_causal, 0);
    ck_assert(fabsf(c->layer_norm_eps - 1e-5f) < 1e-12f);
    ck_assert_ptr_null(m->w.enc.tpos);
    ck_assert_ptr_eq(m->w.embed_w, m->data);
    bsq_model_close(m);
    free(p);

    p = fixture(RECT);
    m = open_ok(p, NULL);
    c = bsq_model_config(m);
    ck_assert_int_eq(c->image_height, 32);
    ck_assert_int_eq(c->image_width, 48);
    ck_assert_int_eq(c->heads, 2);
    ck_assert_int_eq(c->decoder_ffn_dim, 128);
    ck_assert_int_eq(c->L, 36);
    ck_assert_int_eq(c->group_size, 4);
    ck_assert_int_eq(c->num_frames, 1);
    ck_assert_int_eq(c->block_causal, 0);
    bsq_model_close(m);
    free(p);

    p = fixture(VID);
    m = open_ok(p, NULL);
    c = bsq_model_config(m);
    ck_assert_int_eq(c->heads, 4);
    ck_assert_int_eq(c->L, 18);
    ck_assert_int_eq(c->group_size, 9);
    ck_assert_int_eq(c->num_frames, 4);
    ck_assert_int_eq(c->block_causal, 1);
    ck_assert_ptr_nonnull(m->w.enc.tpos);
    ck_assert_ptr_nonnull(m->w.dec.tpos);
    bsq_model_close(m);
    free(p);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Unreadable files                                                          */

START_TEST(test_open_bad_arguments)
{
    bsq_model *m = NULL;
    bsq_error err;
    ck_assert_int_eq(bsq_model_open(NULL, NULL, &m, &err), BSQ_ERR_INVALID_ARGUMENT);
    char *p = fixture(IMG);
    ck_assert_int_eq(bsq_model_open(p, NULL, NULL, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_str_ne(err.message, "");
    free(p);
    bsq_model_close(NULL);
}
END_TEST

START_TEST(test_open_nonexistent)
{
    char *dir = tu_tmpdir();
    char *p = tu_path(dir, "does-not-exist.safetensors");
    expect_open_fails(p, NULL, BSQ_ERR_IO, BSQ_OK, "does-not-exist.safetensors", NULL);
    free(p);
    /* a directory is not a model */
    expect_open_fails(dir, NULL, BSQ_ERR_IO, BSQ_ERR_FORMAT, NULL);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_open_empty_and_garbage)
{
    char *dir = tu_tmpdir();
    char *p = tu_path(dir, "empty.safetensors");
    ck_assert_int_eq(tu_write_file(p, "", 0), 0);
    expect_open_fails(p, NULL, BSQ_ERR_FORMAT, BSQ_OK, "empty.safetensors", NULL);
    /* shorter than a header length */
    ck_assert_int_eq(tu_write_file(p, "abc", 3), 0);
    expect_open_fails(p, NULL, BSQ_ERR_FORMAT, BSQ_OK, NULL);
    /* text */
    const char *text = "this is not a model file, just some text that goes on for a while\n";
    ck_assert_int_eq(tu_write_file(p, text, strlen(text)), 0);
    expect_open_fails(p, NULL, BSQ_ERR_FORMAT, BSQ_OK, NULL);
    /* looks like a zip (a checkpoint) but is not one */
    unsigned char zipish[300] = {'P', 'K', 3, 4};
    for (size_t i = 4; i < sizeof zipish; i++)
        zipish[i] = (unsigned char)(i * 37);
    ck_assert_int_eq(tu_write_file(p, zipish, sizeof zipish), 0);
    expect_open_fails(p, NULL, BSQ_ERR_FORMAT, BSQ_ERR_UNSUPPORTED, NULL);
    ck_assert_int_eq(tu_write_file(p, zipish, 4), 0);
    expect_open_fails(p, NULL, BSQ_ERR_FORMAT, BSQ_ERR_UNSUPPORTED, NULL);
    /* a valid safetensors file with no tensors at all */
    bsq_tensorset none;
    bsq_tensorset_init(&none);
    free(p);
    p = write_set(dir, "none.safetensors", &none);
    expect_open_fails(p, NULL, BSQ_ERR_MODEL, BSQ_OK, NULL);
    free(p);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_open_truncated)
{
    char *src = fixture(IMG);
    size_t len;
    unsigned char *raw = tu_read_file(src, &len);
    ck_assert_ptr_nonnull(raw);
    size_t hend = 8;
    for (int i = 7; i >= 0; i--)
        hend += (size_t)raw[i] << (8 * i);
    char *dir = tu_tmpdir();
    char *p = tu_path(dir, "truncated.safetensors");
    const size_t lens[] = {1, 7, 8, 9, 100, hend - 1, hend, hend + 1, hend + 1000, len / 2,
                           len - 4, len - 1};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        ck_assert_int_eq(tu_write_file(p, raw, lens[i]), 0);
        expect_open_fails(p, NULL, BSQ_ERR_FORMAT, BSQ_OK, "truncated.safetensors", NULL);
    }
    /* the whole file still opens */
    ck_assert_int_eq(tu_write_file(p, raw, len), 0);
    bsq_model_close(open_ok(p, NULL));
    free(p);
    free(raw);
    free(src);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_open_wrong_header_length)
{
    char *src = fixture(IMG);
    size_t len;
    unsigned char *raw = tu_read_file(src, &len);
    ck_assert_ptr_nonnull(raw);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | raw[i];
    /* the header is padded with spaces after its closing brace */
    uint64_t brace = hlen;
    while (brace > 0 && raw[8 + brace - 1] != '}')
        brace--;
    ck_assert_uint_gt(brace, 0);
    char *dir = tu_tmpdir();
    char *p = tu_path(dir, "hlen.safetensors");
    const uint64_t wrong[] = {len, len - 7, UINT64_MAX, 1ull << 40, 0, brace - 1, hlen + 1,
                              hlen + 4096, hlen / 2};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        for (int b = 0; b < 8; b++)
            raw[b] = (unsigned char)(wrong[i] >> (8 * b));
        ck_assert_int_eq(tu_write_file(p, raw, len), 0);
        expect_open_fails(p, NULL, BSQ_ERR_FORMAT, BSQ_OK, NULL);
    }
    free(p);
    free(raw);
    free(src);
    tu_rmdir(dir);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Wrong tensors                                                             */

START_TEST(test_integer_tensor)
{
    const char *name = "decoder.ln_post.bias";
    bsq_tensorset src, out;
    read_fixture(IMG, &src);
    copy_set(&src, &out, name, 1);
    int64_t shape[1] = {64};
    int64_t *q = calloc(64, sizeof *q);
    bsq_error err;
    ck_assert_int_eq(bsq_tensorset_add(&out, name, BSQ_DT_I64, 1, shape, q, 64 * 8, 1, &err),
                     BSQ_OK);
    char *dir = tu_tmpdir();
    char *p = write_set(dir, "i64.safetensors", &out);
    expect_open_fails(p, NULL, BSQ_ERR_UNSUPPORTED, BSQ_ERR_MODEL, name, NULL);
    free(p);
    bsq_tensorset_free(&out);

    /* the same with U8 */
    copy_set(&src, &out, name, 1);
    ck_assert_int_eq(bsq_tensorset_add(&out, name, BSQ_DT_U8, 1, shape, calloc(64, 1), 64, 1,
                                       &err), BSQ_OK);
    p = write_set(dir, "u8.safetensors", &out);
    expect_open_fails(p, NULL, BSQ_ERR_UNSUPPORTED, BSQ_ERR_MODEL, name, NULL);
    free(p);
    bsq_tensorset_free(&out);
    bsq_tensorset_free(&src);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_other_float_dtypes_load)
{
    /* one tensor stored as F64, another as F16, in an otherwise F32 file */
    bsq_tensorset src, out, mid;
    read_fixture(IMG, &src);
    copy_set(&src, &mid, "quant_embed.bias", 1);
    copy_set(&mid, &out, "decoder.ln_pre.weight", 1);
    bsq_tensorset_free(&mid);
    bsq_error err;
    int64_t n18[1] = {18}, n64[1] = {64};
    float *qb = tu_f32(&src, "quant_embed.bias", NULL);
    double *d = malloc(18 * sizeof *d);
    for (int i = 0; i < 18; i++)
        d[i] = qb[i];
    ck_assert_int_eq(bsq_tensorset_add(&out, "quant_embed.bias", BSQ_DT_F64, 1, n18, d, 18 * 8, 1,
                                       &err), BSQ_OK);
    float *lw = tu_f32(&src, "decoder.ln_pre.weight", NULL);
    unsigned char *h = malloc(64 * 2);
    for (int i = 0; i < 64; i++) {
        uint16_t x = bsq_f32_to_f16(lw[i]);
        h[2 * i] = (unsigned char)x;
        h[2 * i + 1] = (unsigned char)(x >> 8);
    }
    ck_assert_int_eq(bsq_tensorset_add(&out, "decoder.ln_pre.weight", BSQ_DT_F16, 1, n64, h, 128,
                                       1, &err), BSQ_OK);
    char *dir = tu_tmpdir();
    char *p = write_set(dir, "mixed.safetensors", &out);
    bsq_model *m = open_ok(p, NULL);
    ck_assert_int_eq(memcmp(m->w.quant_b, qb, 18 * 4), 0);
    for (int i = 0; i < 64; i++)
        ck_assert(m->w.dec.ln_pre_w[i] == bsq_f16_to_f32(bsq_f32_to_f16(lw[i])));
    bsq_model_close(m);
    free(p);
    free(qb);
    free(lw);
    bsq_tensorset_free(&out);
    bsq_tensorset_free(&src);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_missing_tensor)
{
    char *dir = tu_tmpdir();
    const struct {
        const char *fixture, *name;
    } cases[] = {
        {IMG, "encoder.transformer.resblocks.1.mlp.c_proj.bias"},
        {IMG, "encoder.conv1.weight"},
        {IMG, "decoder.conv_out.bias"},
        {IMG, "post_quant_embed.weight"},
        {VID, "decoder.temporal_positional_embedding"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bsq_tensorset src, out;
        read_fixture(cases[i].fixture, &src);
        copy_set(&src, &out, cases[i].name, 1);
        ck_assert_uint_eq(out.count + 1, src.count);
        char *p = write_set(dir, "missing.safetensors", &out);
        char want[160];
        snprintf(want, sizeof want, "missing tensor %s", cases[i].name);
        expect_open_fails(p, NULL, BSQ_ERR_MODEL, BSQ_OK, want, NULL);
        free(p);
        bsq_tensorset_free(&out);
        bsq_tensorset_free(&src);
    }
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_extra_tensor)
{
    char *dir = tu_tmpdir();
    bsq_tensorset src, out;
    read_fixture(IMG, &src);
    const bsq_tensor *ln = bsq_tensorset_find(&src, "encoder.ln_pre.weight");
    ck_assert_ptr_nonnull(ln);
    bsq_error err;
    const char *extras[] = {"encoder.extra.weight", "encoder.transformer.resblocks.2.ln_1.weight",
                            "encoder.temporal_positional_embedding", "module.encoder.ln_pre.weight"};
    for (size_t i = 0; i < sizeof extras / sizeof extras[0]; i++) {
        copy_set(&src, &out, NULL, 1);
        ck_assert_int_eq(bsq_tensorset_add(&out, extras[i], BSQ_DT_F32, ln->ndim, ln->shape,
                                           ln->data, ln->nbytes, 0, &err), BSQ_OK);
        char *p = write_set(dir, "extra.safetensors", &out);
        expect_open_fails(p, NULL, BSQ_ERR_MODEL, BSQ_OK, extras[i], NULL);
        free(p);
        bsq_tensorset_free(&out);
    }
    /* the quantizer's integer buffers are tolerated */
    copy_set(&src, &out, NULL, 1);
    int64_t n18[1] = {18}, n2[1] = {2};
    int64_t *basis = calloc(18, 8), *gbasis = calloc(2, 8);
    ck_assert_int_eq(bsq_tensorset_add(&out, "quantize.basis", BSQ_DT_I64, 1, n18, basis, 18 * 8,
                                       1, &err), BSQ_OK);
    ck_assert_int_eq(bsq_tensorset_add(&out, "quantize.group_basis", BSQ_DT_I64, 1, n2, gbasis,
                                       2 * 8, 1, &err), BSQ_OK);
    char *p = write_set(dir, "quantize.safetensors", &out);
    bsq_model *m = open_ok(p, NULL);
    assert_weights_as_set(m, &src);
    bsq_model_close(m);
    free(p);
    bsq_tensorset_free(&out);
    bsq_tensorset_free(&src);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_misshaped_tensor)
{
    char *dir = tu_tmpdir();
    const struct {
        const char *name;
        int ndim;
        int64_t shape[2];
        const char *got, *want;
    } cases[] = {
        {"quant_embed.weight", 2, {64, 18}, "[64, 18]", "[18, 64]"},       /* transposed */
        {"encoder.ln_pre.weight", 2, {1, 64}, "[1, 64]", "[64]"},          /* extra axis */
        {"encoder.positional_embedding", 2, {15, 64}, "[15, 64]", "[16, 64]"}, /* fewer rows */
        {"decoder.ffn.0.bias", 1, {255}, "[255]", "[256]"},
        {"encoder.conv1.weight", 1, {64 * 192}, "[12288]", "[64, 192]"},  /* flattened */
    };
    bsq_error err;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bsq_tensorset src, out;
        read_fixture(IMG, &src);
        copy_set(&src, &out, cases[i].name, 1);
        const bsq_tensor *t = bsq_tensorset_find(&src, cases[i].name);
        ck_assert_ptr_nonnull(t);
        size_t nbytes = 4;
        for (int d = 0; d < cases[i].ndim; d++)
            nbytes *= (size_t)cases[i].shape[d];
        ck_assert_uint_le(nbytes, t->nbytes);
        ck_assert_int_eq(bsq_tensorset_add(&out, cases[i].name, BSQ_DT_F32, cases[i].ndim,
                                           cases[i].shape, t->data, nbytes, 0, &err), BSQ_OK);
        char *p = write_set(dir, "shape.safetensors", &out);
        expect_open_fails(p, NULL, BSQ_ERR_MODEL, BSQ_OK, cases[i].name, cases[i].got,
                          cases[i].want, NULL);
        free(p);
        bsq_tensorset_free(&out);
        bsq_tensorset_free(&src);
    }
    tu_rmdir(dir);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Configuration                                                             */

START_TEST(test_heads_not_divisible)
{
    char *dir = tu_tmpdir();
    bsq_tensorset src;
    char *p = write_with_config(dir, IMG, "\"heads\": 4", "\"heads\": 3", &src);
    expect_open_fails(p, NULL, BSQ_ERR_MODEL, BSQ_OK, "heads", "64", "3", NULL);
    /* hints cannot rescue what the file says */
    bsq_config hints = {.heads = 4};
    expect_open_fails(p, &hints, BSQ_ERR_MODEL, BSQ_OK, "heads", NULL);
    free(p);
    bsq_tensorset_free(&src);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_config_without_heads)
{
    char *dir = tu_tmpdir();
    bsq_tensorset src;
    char *p = write_with_config(dir, IMG, "\"heads\": 4, ", "", &src);
    expect_open_fails(p, NULL, BSQ_ERR_MODEL, BSQ_OK, "heads", "--heads", NULL);
    bsq_config zero = {0};
    expect_open_fails(p, &zero, BSQ_ERR_MODEL, BSQ_OK, "heads", NULL);

    bsq_config hints = {.heads = 4};
    bsq_model *m = open_ok(p, &hints);
    assert_config_as_metadata(bsq_model_config(m), bsq_tensorset_meta(&src, "config"));
    assert_weights_as_set(m, &src);
    bsq_model_close(m);
    /* a head count that does not divide the width is refused */
    hints.heads = 5;
    expect_open_fails(p, &hints, BSQ_ERR_MODEL, BSQ_OK, "5", NULL);
    free(p);
    bsq_tensorset_free(&src);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_no_config_metadata)
{
    /* nothing but tensors: shapes give everything except heads (and, for
     * a non-square grid, the image size; for video, the mask) */
    char *dir = tu_tmpdir();
    bsq_tensorset src, out;
    read_fixture(IMG, &src);
    copy_set(&src, &out, NULL, 0);
    char *p = write_set(dir, "bare.safetensors", &out);
    bsq_tensorset_free(&out);
    expect_open_fails(p, NULL, BSQ_ERR_MODEL, BSQ_OK, "heads", NULL);
    bsq_config hints = {.heads = 4};
    bsq_model *m = open_ok(p, &hints);
    const bsq_config *c = bsq_model_config(m);
    ck_assert_int_eq(c->image_height, 32);
    ck_assert_int_eq(c->image_width, 32);
    ck_assert_int_eq(c->patch_size, 8);
    ck_assert_int_eq(c->width, 64);
    ck_assert_int_eq(c->layers, 2);
    ck_assert_int_eq(c->heads, 4);
    ck_assert_int_eq(c->mlp_dim, 256);
    ck_assert_int_eq(c->decoder_ffn_dim, 256);
    ck_assert_int_eq(c->L, 18);
    ck_assert_int_eq(c->group_size, 18); /* one group unless told */
    ck_assert_int_eq(c->num_frames, 1);
    ck_assert_int_eq(c->block_causal, 0);
    ck_assert(c->layer_norm_eps == 1e-5f);
    assert_weights_as_set(m, &src);
    bsq_model_close(m);
    hints.group_size = 9;
    m = open_ok(p, &hints);
    ck_assert_int_eq(bsq_model_config(m)->group_size, 9);
    bsq_model_close(m);
    hints.group_size = 7; /* does not divide 18 */
    expect_open_fails(p, &hints, BSQ_ERR_MODEL, BSQ_OK, "group_size", NULL);
    free(p);
    bsq_tensorset_free(&src);

    /* video: frames from the temporal table, the mask from the hints */
    read_fixture(VID, &src);
    copy_set(&src, &out, NULL, 0);
    p = write_set(dir, "bare-video.safetensors", &out);
    bsq_tensorset_free(&out);
    bsq_config vh = {.heads = 4, .block_causal = 1};
    m = open_ok(p, &vh);
    ck_assert_int_eq(bsq_model_config(m)->num_frames, 4);
    ck_assert_int_eq(bsq_model_config(m)->block_causal, 1);
    assert_weights_as_set(m, &src);
    bsq_model_close(m);
    free(p);
    bsq_tensorset_free(&src);

    /* non-square: 24 patches could be 4x6 or 6x4 or 2x12 ... */
    read_fixture(RECT, &src);
    copy_set(&src, &out, NULL, 0);
    p = write_set(dir, "bare-rect.safetensors", &out);
    bsq_tensorset_free(&out);
    bsq_config rh = {.heads = 2};
    expect_open_fails(p, &rh, BSQ_ERR_MODEL, BSQ_OK, "image", NULL);
    rh.image_height = 32;
    rh.image_width = 48;
    m = open_ok(p, &rh);
    ck_assert_int_eq(bsq_model_config(m)->image_width, 48);
    assert_weights_as_set(m, &src);
    bsq_model_close(m);
    /* the transposed grid has the same number of patches and opens too */
    rh.image_height = 48;
    rh.image_width = 32;
    m = open_ok(p, &rh);
    bsq_model_close(m);
    /* the wrong number of patches does not */
    rh.image_height = 32;
    rh.image_width = 32;
    expect_open_fails(p, &rh, BSQ_ERR_MODEL, BSQ_OK, "encoder.positional_embedding", NULL);
    free(p);
    bsq_tensorset_free(&src);
    tu_rmdir(dir);
}
END_TEST

START_TEST(test_bad_config_values)
{
    char *dir = tu_tmpdir();
    const struct {
        const char *from, *to, *in_message;
    } cases[] = {
        {"\"mask\": \"none\"", "\"mask\": \"sideways\"", "mask"},
        {"\"group_size\": 9", "\"group_size\": 5", "group_size"},
        {"\"L\": 18", "\"L\": 100", NULL},
        {"\"layers\": 2", "\"layers\": 1", "resblocks.1"},
        {"\"layers\": 2", "\"layers\": 3", "missing tensor"},
        {"\"layers\": 2", "\"layers\": -1", "layers"},
        {"\"width\": 64", "\"width\": 32", NULL},
        {"\"patch_size\": 8", "\"patch_size\": 5", NULL},
        {"\"image_height\": 32", "\"image_height\": 64", "encoder.positional_embedding"},
        {"\"num_frames\": 1", "\"num_frames\": 4", "temporal_positional_embedding"},
        {"\"num_frames\": 1", "\"num_frames\": -2", "num_frames"},
        {"\"layer_norm_eps\": 1e-05", "\"layer_norm_eps\": 2", "layer_norm_eps"},
        {"\"layer_norm_eps\": 1e-05", "\"layer_norm_eps\": -1e-05", "layer_norm_eps"},
        {"\"decoder_ffn_dim\": 256", "\"decoder_ffn_dim\": 128", "the configuration needs"},
        {"\"mlp_ratio\": 4.0", "\"mlp_ratio\": 2.0", "mlp.c_"},
        {"\"image_height\": 32,", "\"image_height\": 32", NULL}, /* not JSON any more */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bsq_tensorset src;
        char *p = write_with_config(dir, IMG, cases[i].from, cases[i].to, &src);
        expect_open_fails(p, NULL, BSQ_ERR_MODEL, BSQ_ERR_FORMAT, cases[i].in_message, NULL);
        free(p);
        bsq_tensorset_free(&src);
    }
    /* a configuration that is not an object, or not JSON at all */
    const char *whole[] = {"[1, 2]", "", "{", "4", "{\"heads\": 4"};
    for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++) {
        bsq_tensorset src, out;
        read_fixture(IMG, &src);
        copy_set(&src, &out, NULL, 1);
        bsq_error err;
        ck_assert_int_eq(bsq_tensorset_set_meta(&out, "config", whole[i], &err), BSQ_OK);
        char *p = write_set(dir, "whole.safetensors", &out);
        expect_open_fails(p, NULL, BSQ_ERR_MODEL, BSQ_ERR_FORMAT, NULL);
        free(p);
        bsq_tensorset_free(&out);
        bsq_tensorset_free(&src);
    }
    tu_rmdir(dir);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Saving                                                                    */

static void assert_same_config(const bsq_config *a, const bsq_config *b)
{
    ck_assert_int_eq(a->image_height, b->image_height);
    ck_assert_int_eq(a->image_width, b->image_width);
    ck_assert_int_eq(a->patch_size, b->patch_size);
    ck_assert_int_eq(a->width, b->width);
    ck_assert_int_eq(a->layers, b->layers);
    ck_assert_int_eq(a->heads, b->heads);
    ck_assert_int_eq(a->mlp_dim, b->mlp_dim);
    ck_assert_int_eq(a->decoder_ffn_dim, b->decoder_ffn_dim);
    ck_assert_int_eq(a->L, b->L);
    ck_assert_int_eq(a->group_size, b->group_size);
    ck_assert_int_eq(a->num_frames, b->num_frames);
    ck_assert_int_eq(a->block_causal, b->block_causal);
    ck_assert(a->layer_norm_eps == b->layer_norm_eps);
}

/* Saves `name` as dtype, checks the file's dtypes, and reopens it. */
static bsq_model *save_and_reopen(const char *dir, const bsq_model *m, bsq_dtype dtype,
                                  bsq_dt want_dt, size_t *file_size)
{
    char *p = tu_path(dir, "saved.safetensors");
    bsq_error err;
    ck_assert_msg(bsq_model_save(m, p, dtype, &err) == BSQ_OK, "%s", err.message);
    bsq_tensorset ts;
    read_set(p, &ts);
    ck_assert_uint_eq(ts.count, m->nparams);
    for (size_t i = 0; i < ts.count; i++)
        ck_assert_msg(ts.items[i].dtype == want_dt, "%s stored as %s", ts.items[i].name,
                      bsq_dt_name(ts.items[i].dtype));
    ck_assert_str_eq(bsq_tensorset_meta(&ts, "format"), "official-bsq-vit-state-dict");
    ck_assert_ptr_nonnull(bsq_tensorset_meta(&ts, "config"));
    *file_size = ts.map_len;
    bsq_tensorset_free(&ts);
    bsq_model *back = open_ok(p, NULL);
    assert_same_config(bsq_model_config(m), bsq_model_config(back));
    ck_assert_uint_eq(back->total, m->total);
    ck_assert_uint_eq(back->nparams, m->nparams);
    free(p);
    return back;
}

START_TEST(test_save_f32_exact)
{
    const char *names[] = {IMG, RECT, VID};
    char *dir = tu_tmpdir();
    for (int k = 0; k < 3; k++) {
        char *src = fixture(names[k]);
        bsq_model *m = open_ok(src, NULL);
        size_t size;
        bsq_model *back = save_and_reopen(dir, m, BSQ_F32, BSQ_DT_F32, &size);
        ck_assert_int_eq(memcmp(back->data, m->data, m->total * sizeof(float)), 0);
        /* and saving the reopened model gives the same file */
        char *p1 = tu_path(dir, "saved.safetensors"), *p2 = tu_path(dir, "again.safetensors");
        bsq_error err;
        ck_assert_int_eq(bsq_model_save(back, p2, BSQ_F32, &err), BSQ_OK);
        size_t n1, n2;
        void *b1 = tu_read_file(p1, &n1), *b2 = tu_read_file(p2, &n2);
        ck_assert_ptr_nonnull(b1);
        ck_assert_ptr_nonnull(b2);
        ck_assert_uint_eq(n1, n2);
        ck_assert_int_eq(memcmp(b1, b2, n1), 0);
        free(b1);
        free(b2);
        free(p1);
        free(p2);
        bsq_model_close(back);
        bsq_model_close(m);
        free(src);
    }
    tu_rmdir(dir);
}
END_TEST

static void check_half_save(bsq_dtype dtype)
{
    const char *names[] = {IMG, VID};
    char *dir = tu_tmpdir();
    for (int k = 0; k < 2; k++) {
        char *src = fixture(names[k]);
        bsq_model *m = open_ok(src, NULL);
        size_t f32_size, size;
        bsq_model *exact = save_and_reopen(dir, m, BSQ_F32, BSQ_DT_F32, &f32_size);
        bsq_model_close(exact);
        bsq_model *back = save_and_reopen(dir, m, dtype,
                                          dtype == BSQ_F16 ? BSQ_DT_F16 : BSQ_DT_BF16, &size);
        ck_assert_uint_lt(size, f32_size * 55 / 100);
        size_t changed = 0;
        for (size_t i = 0; i < m->nparams; i++) {
            const bsq_param *p = &m->params[i];
            const float *a = m->data + p->offset, *b = back->data + p->offset;
            for (size_t j = 0; j < p->count; j++) {
                float want, tol;
                if (dtype == BSQ_F16) {
                    want = bsq_f16_to_f32(bsq_f32_to_f16(a[j]));
                    tol = fmaxf(fabsf(a[j]) * 0x1p-11f, 0x1p-25f);
                } else {
                    want = bsq_bf16_to_f32(bsq_f32_to_bf16(a[j]));
                    tol = fmaxf(fabsf(a[j]) * 0x1p-8f, 0x1p-134f);
                }
                REQUIRE(b[j] == want, "%s[%zu]: %.9g saved as %.9g, want %.9g", p->name, j,
                        (double)a[j], (double)b[j], (double)want);
                REQUIRE(fabsf(b[j] - a[j]) <= tol, "%s[%zu]: %.9g saved as %.9g", p->name, j,
                        (double)a[j], (double)b[j]);
                changed += b[j] != a[j];
            }
        }
        ck_assert_uint_gt(changed, m->total / 2); /* the weights really went through the dtype */
        bsq_model_close(back);
        bsq_model_close(m);
        free(src);
    }
    tu_rmdir(dir);
}

START_TEST(test_save_f16) { check_half_save(BSQ_F16); }
END_TEST

START_TEST(test_save_bf16) { check_half_save(BSQ_BF16); }
END_TEST

START_TEST(test_save_config_from_hints)
{
    /* a model whose heads came from hints carries them once saved */
    char *dir = tu_tmpdir();
    bsq_tensorset src, out;
    read_fixture(IMG, &src);
    copy_set(&src, &out, NULL, 0);
    char *p = write_set(dir, "bare.safetensors", &out);
    bsq_tensorset_free(&out);
    bsq_config hints = {.heads = 4, .group_size = 9};
    bsq_model *m = open_ok(p, &hints);
    size_t size;
    bsq_model *back = save_and_reopen(dir, m, BSQ_F32, BSQ_DT_F32, &size);
    ck_assert_int_eq(bsq_model_config(back)->heads, 4);
    ck_assert_int_eq(bsq_model_config(back)->group_size, 9);
    bsq_model_close(back);
    bsq_model_close(m);
    free(p);
    bsq_tensorset_free(&src);
    tu_rmdir(dir);
}
END_TEST

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

START_TEST(test_save_unwritable)
{
    char *src = fixture(IMG);
    bsq_model *m = open_ok(src, NULL);
    char *dir = tu_tmpdir();
    bsq_error err;

    /* a directory that does not exist */
    char *p = tu_path(dir, "missing/sub/model.safetensors");
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(bsq_model_save(m, p, BSQ_F32, &err), BSQ_ERR_IO);
    ck_assert_str_ne(err.message, "");
    ck_assert_int_eq(bsq_model_save(m, p, BSQ_F16, &err), BSQ_ERR_IO);
    ck_assert_int_eq(count_entries(dir), 0);
    free(p);

    /* the target is an existing directory */
    p = tu_path(dir, "adir");
    ck_assert_int_eq(mkdir(p, 0755), 0);
    char *inner = tu_path(p, "x");
    ck_assert_int_eq(tu_write_file(inner, "x", 1), 0);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(bsq_model_save(m, p, BSQ_BF16, &err), BSQ_ERR_IO);
    ck_assert_str_ne(err.message, "");
    ck_assert_int_eq(count_entries(dir), 1);
    ck_assert_int_eq(count_entries(p), 1);
    unlink(inner);
    free(inner);
    rmdir(p);
    free(p);

    /* a read-only directory (root may write anyway) */
    if (geteuid() != 0) {
        char *ro = tu_path(dir, "ro");
        ck_assert_int_eq(mkdir(ro, 0555), 0);
        p = tu_path(ro, "model.safetensors");
        ck_assert_int_eq(bsq_model_save(m, p, BSQ_F32, &err), BSQ_ERR_IO);
        ck_assert_int_eq(count_entries(ro), 0);
        free(p);
        rmdir(ro);
        free(ro);
    }

    /* the disk "fills up" part-way: no partial file, the old one intact */
    p = tu_path(dir, "model.safetensors");
    ck_assert_int_eq(tu_write_file(p, "old", 3), 0);
    struct rlimit saved, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    lim = saved;
    lim.rlim_cur = 64 * 1024;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    memset(&err, 0, sizeof err);
    bsq_status st = bsq_model_save(m, p, BSQ_F32, &err);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, prev);
    ck_assert_msg(st == BSQ_ERR_IO, "status %d: %s", (int)st, err.message);
    ck_assert_str_ne(err.message, "");
    ck_assert_int_eq(count_entries(dir), 1);
    size_t n;
    char *old = tu_read_file(p, &n);
    ck_assert_ptr_nonnull(old);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(memcmp(old, "old", 3), 0);
    free(old);
    free(p);

    /* bad arguments */
    p = tu_path(dir, "model2.safetensors");
    ck_assert_int_eq(bsq_model_save(NULL, p, BSQ_F32, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(bsq_model_save(m, NULL, BSQ_F32, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(bsq_model_save(m, p, (bsq_dtype)7, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_str_ne(err.message, "");
    ck_assert_int_eq(count_entries(dir), 1);
    free(p);

    bsq_model_close(m);
    free(src);
    tu_rmdir(dir);
}
END_TEST

/* SHA-256 itself, on the FIPS 180-4 examples */
START_TEST(test_sha256_vectors)
{
    static const struct {
        const char *in, *hex;
    } v[] = {
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        bsq_sha256 h;
        uint8_t out[32];
        char hex[65];
        bsq_sha256_init(&h);
        /* fed one byte at a time, to cross block boundaries */
        for (const char *c = v[i].in; *c; c++)
            bsq_sha256_update(&h, c, 1);
        bsq_sha256_final(&h, out);
        for (int j = 0; j < 32; j++)
            snprintf(hex + 2 * j, 3, "%02x", out[j]);
        ck_assert_str_eq(hex, v[i].hex);
    }
}
END_TEST

/* The fingerprint follows the weights: stable, kept by an f32 save,
 * changed by bf16 rounding, different between models. */
START_TEST(test_fingerprint)
{
    char *a = fixture("img32_w64_l2_L18g9.weights.safetensors");
    char *b = fixture("img32x48_w64_l2_L36g4.weights.safetensors");
    bsq_model *ma = open_ok(a, NULL), *mb = open_ok(b, NULL);
    uint8_t fa[32], fa2[32], fb[32], f32[32], f16[32];
    bsq_error err;
    ck_assert_int_eq(bsq_model_fingerprint(ma, fa, &err), BSQ_OK);
    ck_assert_int_eq(bsq_model_fingerprint(ma, fa2, &err), BSQ_OK);
    ck_assert(memcmp(fa, fa2, 32) == 0);
    ck_assert_int_eq(bsq_model_fingerprint(mb, fb, &err), BSQ_OK);
    ck_assert(memcmp(fa, fb, 32) != 0);
    char *dir = tu_tmpdir();
    size_t size;
    bsq_model *r32 = save_and_reopen(dir, ma, BSQ_F32, BSQ_DT_F32, &size);
    ck_assert_int_eq(bsq_model_fingerprint(r32, f32, &err), BSQ_OK);
    ck_assert(memcmp(fa, f32, 32) == 0);
    bsq_model *rbf = save_and_reopen(dir, ma, BSQ_BF16, BSQ_DT_BF16, &size);
    ck_assert_int_eq(bsq_model_fingerprint(rbf, f16, &err), BSQ_OK);
    ck_assert(memcmp(fa, f16, 32) != 0);
    ck_assert_int_eq(bsq_model_fingerprint(NULL, fa, &err), BSQ_ERR_INVALID_ARGUMENT);
    bsq_model_close(r32);
    bsq_model_close(rbf);
    bsq_model_close(ma);
    bsq_model_close(mb);
    tu_rmdir(dir);
    free(a);
    free(b);
}
END_TEST

static Suite *model_suite(void)
{
    Suite *s = suite_create("model_errors");
    TCase *ok = tcase_create("fixtures");
    tcase_set_timeout(ok, 60);
    tcase_add_test(ok, test_open_fixtures);
    tcase_add_test(ok, test_fixture_configs);
    suite_add_tcase(s, ok);
    TCase *files = tcase_create("files");
    tcase_set_timeout(files, 60);
    tcase_add_test(files, test_open_bad_arguments);
    tcase_add_test(files, test_open_nonexistent);
    tcase_add_test(files, test_open_empty_and_garbage);
    tcase_add_test(files, test_open_truncated);
    tcase_add_test(files, test_open_wrong_header_length);
    suite_add_tcase(s, files);
    TCase *tensors = tcase_create("tensors");
    tcase_set_timeout(tensors, 60);
    tcase_add_test(tensors, test_integer_tensor);
    tcase_add_test(tensors, test_other_float_dtypes_load);
    tcase_add_test(tensors, test_missing_tensor);
    tcase_add_test(tensors, test_extra_tensor);
    tcase_add_test(tensors, test_misshaped_tensor);
    suite_add_tcase(s, tensors);
    TCase *config = tcase_create("config");
    tcase_set_timeout(config, 60);
    tcase_add_test(config, test_heads_not_divisible);
    tcase_add_test(config, test_config_without_heads);
    tcase_add_test(config, test_no_config_metadata);
    tcase_add_test(config, test_bad_config_values);
    suite_add_tcase(s, config);
    TCase *save = tcase_create("save");
    tcase_set_timeout(save, 60);
    tcase_add_test(save, test_save_f32_exact);
    tcase_add_test(save, test_save_f16);
    tcase_add_test(save, test_save_bf16);
    tcase_add_test(save, test_save_config_from_hints);
    tcase_add_test(save, test_save_unwritable);
    tcase_add_test(save, test_sha256_vectors);
    tcase_add_test(save, test_fingerprint);
    suite_add_tcase(s, save);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(model_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
