#include "tensorset.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "error.h"

void bsq_tensorset_init(bsq_tensorset *ts) { memset(ts, 0, sizeof *ts); }

void bsq_tensorset_free(bsq_tensorset *ts)
{
    if (!ts)
        return;
    for (size_t i = 0; i < ts->count; i++)
        free(ts->items[i].name);
    free(ts->items);
    for (size_t i = 0; i < ts->meta_count; i++) {
        free(ts->meta_keys[i]);
        free(ts->meta_values[i]);
    }
    free(ts->meta_keys);
    free(ts->meta_values);
    for (size_t i = 0; i < ts->owned_count; i++)
        free(ts->owned[i]);
    free(ts->owned);
    if (ts->map)
        munmap(ts->map, ts->map_len);
    memset(ts, 0, sizeof *ts);
}

bsq_status bsq_tensorset_own(bsq_tensorset *ts, void *block, bsq_error *err)
{
    if (ts->owned_count == ts->owned_cap) {
        size_t cap = ts->owned_cap ? ts->owned_cap * 2 : 16;
        void **p = realloc(ts->owned, cap * sizeof *p);
        if (!p) {
            free(block);
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
        }
        ts->owned = p;
        ts->owned_cap = cap;
    }
    ts->owned[ts->owned_count++] = block;
    return BSQ_OK;
}

bsq_status bsq_tensorset_add(bsq_tensorset *ts, const char *name, bsq_dt dtype,
                             int ndim, const int64_t *shape, const void *data,
                             size_t nbytes, int take, bsq_error *err)
{
    if (ndim < 0 || ndim > BSQ_MAX_DIMS) {
        if (take)
            free((void *)data);
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "tensor %s has %d dimensions (at most %d)",
                        name, ndim, BSQ_MAX_DIMS);
    }
    if (bsq_tensorset_find(ts, name)) {
        if (take)
            free((void *)data);
        return bsq_fail(err, BSQ_ERR_FORMAT, "tensor %s appears twice", name);
    }
    if (take && bsq_tensorset_own(ts, (void *)data, err) != BSQ_OK)
        return BSQ_ERR_NOMEM;
    if (ts->count == ts->cap) {
        size_t cap = ts->cap ? ts->cap * 2 : 64;
        bsq_tensor *p = realloc(ts->items, cap * sizeof *p);
        if (!p)
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
        ts->items = p;
        ts->cap = cap;
    }
    bsq_tensor *t = &ts->items[ts->count];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = nbytes;
    ts->count++;
    return BSQ_OK;
}

bsq_status bsq_tensorset_set_meta(bsq_tensorset *ts, const char *key,
                                  const char *value, bsq_error *err)
{
    for (size_t i = 0; i < ts->meta_count; i++) {
        if (strcmp(ts->meta_keys[i], key) == 0) {
            char *v = strdup(value);
            if (!v)
                return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
            free(ts->meta_values[i]);
            ts->meta_values[i] = v;
            return BSQ_OK;
        }
    }
    char **k = realloc(ts->meta_keys, (ts->meta_count + 1) * sizeof *k);
    if (!k)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    ts->meta_keys = k;
    char **v = realloc(ts->meta_values, (ts->meta_count + 1) * sizeof *v);
    if (!v)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    ts->meta_values = v;
    k[ts->meta_count] = strdup(key);
    v[ts->meta_count] = strdup(value);
    if (!k[ts->meta_count] || !v[ts->meta_count]) {
        free(k[ts->meta_count]);
        free(v[ts->meta_count]);
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    }
    ts->meta_count++;
    return BSQ_OK;
}

const char *bsq_tensorset_meta(const bsq_tensorset *ts, const char *key)
{
    for (size_t i = 0; i < ts->meta_count; i++)
        if (strcmp(ts->meta_keys[i], key) == 0)
            return ts->meta_values[i];
    return NULL;
}

const bsq_tensor *bsq_tensorset_find(const bsq_tensorset *ts, const char *name)
{
    for (size_t i = 0; i < ts->count; i++)
        if (strcmp(ts->items[i].name, name) == 0)
            return &ts->items[i];
    return NULL;
}

static const struct {
    const char *name;
    size_t size;
} dt_info[] = {
    [BSQ_DT_F32] = {"F32", 4}, [BSQ_DT_F16] = {"F16", 2}, [BSQ_DT_BF16] = {"BF16", 2},
    [BSQ_DT_F64] = {"F64", 8}, [BSQ_DT_I64] = {"I64", 8}, [BSQ_DT_I32] = {"I32", 4},
    [BSQ_DT_I16] = {"I16", 2}, [BSQ_DT_I8] = {"I8", 1},   [BSQ_DT_U8] = {"U8", 1},
    [BSQ_DT_BOOL] = {"BOOL", 1},
};

size_t bsq_dt_size(bsq_dt dt) { return dt_info[dt].size; }
const char *bsq_dt_name(bsq_dt dt) { return dt_info[dt].name; }

int bsq_dt_from_name(const char *name, bsq_dt *out)
{
    for (size_t i = 0; i < sizeof dt_info / sizeof dt_info[0]; i++) {
        if (strcmp(dt_info[i].name, name) == 0) {
            *out = (bsq_dt)i;
            return 1;
        }
    }
    return 0;
}

int64_t bsq_tensor_numel(const bsq_tensor *t)
{
    /* readers bound the product of the dimensions; a zero dimension makes
     * the product zero however large the others are */
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] <= 0)
            return 0;
        n *= (uint64_t)t->shape[i];
    }
    return n > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)n;
}

float bsq_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do {
                man <<= 1;
                e++;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t bsq_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000u) { /* below 2^-14: subnormal half, or zero */
        float a;
        memcpy(&a, &ax, 4);
        /* 2^-24 is the subnormal step; nearbyint rounds half to even */
        return (uint16_t)(sign | (uint32_t)nearbyintf(a * 16777216.0f));
    }
    uint32_t r = ax + 0x0fff + ((ax >> 13) & 1); /* round to nearest even */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

float bsq_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t bsq_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* nan stays nan */
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

bsq_status bsq_tensor_to_f32(const bsq_tensor *t, float *out, bsq_error *err)
{
    int64_t n = bsq_tensor_numel(t);
    const unsigned char *p = t->data;
    if ((size_t)n * bsq_dt_size(t->dtype) != t->nbytes)
        return bsq_fail(err, BSQ_ERR_FORMAT, "tensor %s: %zu bytes for %lld elements of %s",
                        t->name, t->nbytes, (long long)n, bsq_dt_name(t->dtype));
    switch (t->dtype) {
    case BSQ_DT_F32:
        memcpy(out, p, (size_t)n * 4);
        return BSQ_OK;
    case BSQ_DT_F16:
    case BSQ_DT_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            out[i] = t->dtype == BSQ_DT_F16 ? bsq_f16_to_f32(h) : bsq_bf16_to_f32(h);
        }
        return BSQ_OK;
    case BSQ_DT_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        }
        return BSQ_OK;
    default:
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "tensor %s has dtype %s; a float type is needed",
                        t->name, bsq_dt_name(t->dtype));
    }
}
