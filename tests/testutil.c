#include "testutil.h"

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *tu_data_dir(void)
{
    const char *d = getenv("BSQ_TEST_DATA");
    return d && *d ? d : TEST_DATA_DIR;
}

char *tu_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

char *tu_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *t = tu_path(base && *base ? base : "/tmp", "bsqtest.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(t));
    return t;
}

void tu_rmdir(char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char *p = tu_path(dir, e->d_name);
            unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
    free(dir);
}

float *tu_f32(const bsq_tensorset *ts, const char *name, int64_t *numel)
{
    const bsq_tensor *t = bsq_tensorset_find(ts, name);
    ck_assert_msg(t != NULL, "tensor %s missing from fixture", name);
    int64_t n = bsq_tensor_numel(t);
    float *out = malloc((size_t)n * sizeof(float) + 1);
    ck_assert_ptr_nonnull(out);
    bsq_error err;
    ck_assert_int_eq(bsq_tensor_to_f32(t, out, &err), BSQ_OK);
    if (numel)
        *numel = n;
    return out;
}

double tu_max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = a[i] > b[i] ? (double)a[i] - b[i] : (double)b[i] - a[i];
        if (d > m || d != d)
            m = d != d ? 1e30 : d;
    }
    return m;
}

void tu_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = lo + (hi - lo) * (float)((s >> 40) * (1.0 / 16777216.0));
    }
}

int tu_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok ? 0 : -1;
}

void *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf && len)
        *len = (size_t)n;
    return buf;
}
