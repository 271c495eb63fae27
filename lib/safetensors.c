#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "json.h"

/* Headers larger than this are refused rather than parsed (the reference
 * implementation uses the same 100 MB bound). */
#define MAX_HEADER (100u << 20)

static bsq_status add_tensor(bsq_tensorset *ts, const char *name, const json_value *info,
                             const unsigned char *data, size_t data_len, bsq_error *err)
{
    const json_value *dt = json_get(info, "dtype"), *shape = json_get(info, "shape"),
                     *off = json_get(info, "data_offsets");
    if (!dt || dt->type != JSON_STRING || !shape || shape->type != JSON_ARRAY || !off ||
        off->type != JSON_ARRAY || off->count != 2)
        return bsq_fail(err, BSQ_ERR_FORMAT, "tensor %s: header entry lacks dtype, shape or data_offsets",
                        name);
    bsq_dt dtype;
    if (!bsq_dt_from_name(dt->string, &dtype))
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "tensor %s: unsupported dtype %s", name, dt->string);
    if (shape->count > BSQ_MAX_DIMS)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "tensor %s: %zu dimensions", name, shape->count);
    int64_t dims[BSQ_MAX_DIMS];
    double numel = 1, nonzero = 1;
    for (size_t i = 0; i < shape->count; i++) {
        const json_value *d = &shape->items[i];
        if (d->type != JSON_NUMBER || d->number < 0 || d->number > 1e12 ||
            d->number != (double)(int64_t)d->number)
            return bsq_fail(err, BSQ_ERR_FORMAT, "tensor %s: bad shape", name);
        dims[i] = (int64_t)d->number;
        numel *= d->number;
        nonzero *= d->number > 0 ? d->number : 1;
    }
    if (nonzero > 4.0e18)
        return bsq_fail(err, BSQ_ERR_FORMAT, "tensor %s: shape too large", name);
    double b = off->items[0].number, e = off->items[1].number;
    if (off->items[0].type != JSON_NUMBER || off->items[1].type != JSON_NUMBER || b < 0 || e < b ||
        e > (double)data_len || b != (double)(size_t)b || e != (double)(size_t)e)
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "tensor %s: data_offsets [%.0f, %.0f] outside the %zu data bytes", name, b, e,
                        data_len);
    size_t nbytes = (size_t)e - (size_t)b;
    if (numel * (double)bsq_dt_size(dtype) != (double)nbytes)
        return bsq_fail(err, BSQ_ERR_FORMAT, "tensor %s: %zu bytes do not hold its %s shape", name,
                        nbytes, dt->string);
    return bsq_tensorset_add(ts, name, dtype, (int)shape->count, dims, data + (size_t)b, nbytes, 0,
                             err);
}

bsq_status bsq_safetensors_parse(const void *bytes, size_t len, bsq_tensorset *ts, bsq_error *err)
{
    const unsigned char *p = bytes;
    if (len < 8)
        return bsq_fail(err, BSQ_ERR_FORMAT, "safetensors: file of %zu bytes is too short", len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | p[i];
    if (hlen > MAX_HEADER || hlen > len - 8)
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "safetensors: header length %llu does not fit the %zu-byte file",
                        (unsigned long long)hlen, len);
    json_value *root = NULL;
    bsq_status st = json_parse((const char *)p + 8, (size_t)hlen, &root, err);
    if (st != BSQ_OK)
        return bsq_fail_prefix(err, st, "safetensors header");
    if (root->type != JSON_OBJECT) {
        json_free(root);
        return bsq_fail(err, BSQ_ERR_FORMAT, "safetensors: header is not a JSON object");
    }
    const unsigned char *data = p + 8 + hlen;
    size_t data_len = len - 8 - (size_t)hlen;
    for (size_t i = 0; i < root->count && st == BSQ_OK; i++) {
        const char *name = root->keys[i];
        const json_value *v = &root->items[i];
        if (strcmp(name, "__metadata__") == 0) {
            if (v->type != JSON_OBJECT) {
                st = bsq_fail(err, BSQ_ERR_FORMAT, "safetensors: __metadata__ is not an object");
                break;
            }
            for (size_t j = 0; j < v->count && st == BSQ_OK; j++) {
                if (v->items[j].type != JSON_STRING)
                    st = bsq_fail(err, BSQ_ERR_FORMAT, "safetensors: metadata %s is not a string",
                                  v->keys[j]);
                else
                    st = bsq_tensorset_set_meta(ts, v->keys[j], v->items[j].string, err);
            }
            continue;
        }
        if (v->type != JSON_OBJECT)
            st = bsq_fail(err, BSQ_ERR_FORMAT, "safetensors: entry %s is not an object", name);
        else
            st = add_tensor(ts, name, v, data, data_len, err);
    }
    json_free(root);
    return st;
}

bsq_status bsq_safetensors_read(const char *path, bsq_tensorset *ts, bsq_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return bsq_fail(err, BSQ_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return bsq_fail(err, BSQ_ERR_IO, "%s: not a regular file", path);
    }
    size_t len = (size_t)sb.st_size;
    if (len == 0) {
        close(fd);
        return bsq_fail(err, BSQ_ERR_FORMAT, "%s: empty file", path);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return bsq_fail(err, BSQ_ERR_IO, "%s: mmap: %s", path, strerror(errno));
    ts->map = map;
    ts->map_len = len;
    bsq_status st = bsq_safetensors_parse(map, len, ts, err);
    if (st != BSQ_OK)
        bsq_fail_prefix(err, st, "%s", path);
    return st;
}

/* JSON string with the escapes the header may need. */
static void put_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static size_t build_header(FILE *f, const bsq_tensorset *ts)
{
    size_t off = 0;
    fputc('{', f);
    if (ts->meta_count) {
        fputs("\"__metadata__\":{", f);
        for (size_t i = 0; i < ts->meta_count; i++) {
            if (i)
                fputc(',', f);
            put_json_string(f, ts->meta_keys[i]);
            fputc(':', f);
            put_json_string(f, ts->meta_values[i]);
        }
        fputc('}', f);
    }
    for (size_t i = 0; i < ts->count; i++) {
        const bsq_tensor *t = &ts->items[i];
        if (i || ts->meta_count)
            fputc(',', f);
        put_json_string(f, t->name);
        fprintf(f, ":{\"dtype\":\"%s\",\"shape\":[", bsq_dt_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            fprintf(f, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        fprintf(f, "],\"data_offsets\":[%zu,%zu]}", off, off + t->nbytes);
        off += t->nbytes;
    }
    fputc('}', f);
    return off;
}

bsq_status bsq_safetensors_write(const char *path, const bsq_tensorset *ts, bsq_error *err)
{
    /* refuse what the reader would refuse, rather than write it */
    for (size_t i = 0; i < ts->count; i++) {
        const bsq_tensor *t = &ts->items[i];
        if (strcmp(t->name, "__metadata__") == 0 ||
            (size_t)bsq_tensor_numel(t) * bsq_dt_size(t->dtype) != t->nbytes)
            return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                            "cannot write tensor %s: bad name or byte count", t->name);
    }
    char *hdr = NULL;
    size_t hlen = 0;
    FILE *mem = open_memstream(&hdr, &hlen);
    if (!mem)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    build_header(mem, ts);
    /* pad the header with spaces so the data starts 8-byte aligned */
    long pos = ftell(mem);
    while ((pos + 8) % 8)
        fputc(' ', mem), pos++;
    if (fclose(mem) != 0) {
        free(hdr);
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    }

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) {
        free(hdr);
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    }
    snprintf(tmp, plen + 16, "%s.tmp%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    bsq_status st = BSQ_OK;
    if (!f) {
        st = bsq_fail(err, BSQ_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(hdr, 1, hlen, f) == hlen;
    for (size_t i = 0; ok && i < ts->count; i++)
        ok = fwrite(ts->items[i].data, 1, ts->items[i].nbytes, f) == ts->items[i].nbytes;
    int saved = errno;
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        ok = 0, saved = errno;
    if (fclose(f) != 0 && ok)
        ok = 0, saved = errno;
    if (!ok) {
        unlink(tmp);
        st = bsq_fail(err, BSQ_ERR_IO, "writing %s: %s", path, strerror(saved));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        st = bsq_fail(err, BSQ_ERR_IO, "renaming to %s: %s", path, strerror(saved));
    }
out:
    free(tmp);
    free(hdr);
    return st;
}
