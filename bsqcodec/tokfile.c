/* Token array files: .npy and safetensors headers, written and read. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "tokfile.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "json.h"

/* ------------------------------------------------------------------------ */
/* Growing strings                                                           */

void tokf_buf_free(tokf_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

static int buf_reserve(tokf_buf *b, size_t extra)
{
    if (b->oom)
        return 0;
    if (b->len + extra + 1 <= b->cap)
        return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return 0;
    }
    b->p = p;
    b->cap = cap;
    return 1;
}

void tokf_buf_put(tokf_buf *b, const void *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void tokf_buf_puts(tokf_buf *b, const char *s)
{
    tokf_buf_put(b, s, strlen(s));
}

void tokf_buf_printf(tokf_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not one
 * (bad lead or continuation byte, overlong form, surrogate, > U+10FFFF). */
static int utf8_seq(const unsigned char *s)
{
    unsigned c = s[0];
    int n;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp < 0xe000))
        return 0;
    return n;
}

void tokf_buf_json_string(tokf_buf *b, const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    tokf_buf_put(b, "\"", 1);
    while (*s) {
        unsigned c = *s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            tokf_buf_put(b, e, 2);
            s++;
        } else if (c < 0x20) {
            tokf_buf_printf(b, "\\u%04x", c);
            s++;
        } else {
            int n = utf8_seq(s);
            if (n == 0) {
                tokf_buf_printf(b, "\\udc%02x", c);
                s++;
            } else {
                tokf_buf_put(b, s, (size_t)n);
                s += n;
            }
        }
    }
    tokf_buf_put(b, "\"", 1);
}

int tokf_mkdirs(const char *path)
{
    char *p = *path ? strdup(path) : NULL;
    if (!p)
        return 0;
    for (char *c = p + 1;; c++) {
        if (*c == '/' || !*c) {
            char save = *c;
            *c = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                free(p);
                return 0;
            }
            *c = save;
            if (!save)
                break;
        }
    }
    free(p);
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */

char *tokf_header(tokf_container c, int itemsize, int64_t rows, int64_t tokens, int64_t values,
                  const char *const *meta, size_t nmeta, size_t *len)
{
    tokf_buf b = {0};
    if (c == TOKF_NPY) {
        /* magic, version 1.0, a little-endian u16 length, then a Python
         * dict literal padded with spaces and ended by a newline so that
         * the data starts on a multiple of 64 bytes */
        tokf_buf d = {0};
        tokf_buf_printf(&d, "{'descr': '%cu%d', 'fortran_order': False, 'shape': (%lld, %lld, %lld), }",
                        itemsize == 1 ? '|' : '<', itemsize, (long long)rows, (long long)tokens,
                        (long long)values);
        while (!d.oom && (10 + d.len + 1) % 64)
            tokf_buf_put(&d, " ", 1);
        tokf_buf_put(&d, "\n", 1);
        if (d.oom || d.len > 65535) {
            tokf_buf_free(&d);
            return NULL;
        }
        unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                 (unsigned char)(d.len & 0xff), (unsigned char)(d.len >> 8)};
        tokf_buf_put(&b, pre, sizeof pre);
        tokf_buf_put(&b, d.p, d.len);
        tokf_buf_free(&d);
    } else {
        /* a little-endian u64 length, then the JSON header padded with
         * spaces to a multiple of 8 bytes */
        tokf_buf j = {0};
        tokf_buf_put(&j, "{", 1);
        if (nmeta) {
            tokf_buf_put(&j, "\"__metadata__\":{", 16);
            for (size_t i = 0; i < nmeta; i++) {
                if (i)
                    tokf_buf_put(&j, ",", 1);
                tokf_buf_json_string(&j, meta[2 * i]);
                tokf_buf_put(&j, ":", 1);
                tokf_buf_json_string(&j, meta[2 * i + 1]);
            }
            tokf_buf_put(&j, "},", 2);
        }
        unsigned long long nbytes =
            (unsigned long long)rows * (unsigned long long)tokens * (unsigned long long)values *
            (unsigned long long)itemsize;
        tokf_buf_printf(&j, "\"tokens\":{\"dtype\":\"U%d\",\"shape\":[%lld,%lld,%lld],"
                            "\"data_offsets\":[0,%llu]}}",
                        itemsize * 8, (long long)rows, (long long)tokens, (long long)values,
                        nbytes);
        while (!j.oom && j.len % 8)
            tokf_buf_put(&j, " ", 1);
        if (j.oom) {
            tokf_buf_free(&j);
            return NULL;
        }
        unsigned char pre[8];
        for (int i = 0; i < 8; i++)
            pre[i] = (unsigned char)((unsigned long long)j.len >> (8 * i));
        tokf_buf_put(&b, pre, sizeof pre);
        tokf_buf_put(&b, j.p, j.len);
        tokf_buf_free(&j);
    }
    if (b.oom) {
        tokf_buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                   */

const char *tokf_dtype_name(char kind, int itemsize)
{
    static const char *const u[] = {"uint8", "uint16", "uint32", "uint64"};
    static const char *const s[] = {"int8", "int16", "int32", "int64"};
    int i = itemsize == 1 ? 0 : itemsize == 2 ? 1 : itemsize == 4 ? 2 : 3;
    return kind == 'i' ? s[i] : u[i];
}

static bsq_status set_shape(tokf_array *a, const int64_t *dims, int n, const char *path,
                            bsq_error *err)
{
    if (n != 3)
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "%s: the array has %d dimensions; token arrays are 3-D "
                        "[rows, tokens per image, values per token]",
                        path, n);
    uint64_t total = (uint64_t)a->itemsize;
    for (int i = 0; i < 3; i++) {
        if (dims[i] < 0 || dims[i] > ((int64_t)1 << 40))
            return bsq_fail(err, BSQ_ERR_FORMAT, "%s: bad array dimension %lld", path,
                            (long long)dims[i]);
        a->shape[i] = dims[i];
        if (dims[i] && total > (UINT64_C(1) << 62) / (uint64_t)dims[i])
            return bsq_fail(err, BSQ_ERR_FORMAT, "%s: the array is too large", path);
        total *= (uint64_t)dims[i];
    }
    a->data_bytes = total;
    return BSQ_OK;
}

/* A tiny reader for the Python literal an .npy header holds. */
typedef struct {
    const char *s;
    size_t pos, len;
} lit;

static void lit_ws(lit *p)
{
    while (p->pos < p->len && strchr(" \t\r\n", p->s[p->pos]))
        p->pos++;
}

static int lit_char(lit *p, char c)
{
    lit_ws(p);
    if (p->pos < p->len && p->s[p->pos] == c) {
        p->pos++;
        return 1;
    }
    return 0;
}

/* A quoted string into out (truncated to cap). */
static int lit_string(lit *p, char *out, size_t cap)
{
    lit_ws(p);
    if (p->pos >= p->len || (p->s[p->pos] != '\'' && p->s[p->pos] != '"'))
        return 0;
    char q = p->s[p->pos++];
    size_t n = 0;
    while (p->pos < p->len && p->s[p->pos] != q) {
        if (n + 1 < cap)
            out[n++] = p->s[p->pos];
        p->pos++;
    }
    if (p->pos >= p->len)
        return 0;
    p->pos++;
    out[n] = 0;
    return 1;
}

static int lit_int(lit *p, int64_t *v)
{
    lit_ws(p);
    size_t start = p->pos;
    int64_t x = 0;
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
        if (x > ((int64_t)1 << 50))
            return 0;
        x = x * 10 + (p->s[p->pos++] - '0');
    }
    if (p->pos < p->len && p->s[p->pos] == 'L') /* Python 2 longs */
        p->pos++;
    *v = x;
    return p->pos > start;
}

static bsq_status parse_npy_header(const char *text, size_t len, tokf_array *a, const char *path,
                                   bsq_error *err)
{
    lit p = {text, 0, len};
    char descr[32] = "", key[32];
    int fortran = -1, ndim = -1;
    int64_t dims[8];
    if (!lit_char(&p, '{'))
        goto bad;
    while (!lit_char(&p, '}')) {
        if (!lit_string(&p, key, sizeof key) || !lit_char(&p, ':'))
            goto bad;
        lit_ws(&p);
        if (!strcmp(key, "descr")) {
            if (!lit_string(&p, descr, sizeof descr))
                goto bad;
        } else if (!strcmp(key, "fortran_order")) {
            if (p.len - p.pos >= 4 && !strncmp(p.s + p.pos, "True", 4)) {
                fortran = 1;
                p.pos += 4;
            } else if (p.len - p.pos >= 5 && !strncmp(p.s + p.pos, "False", 5)) {
                fortran = 0;
                p.pos += 5;
            } else {
                goto bad;
            }
        } else if (!strcmp(key, "shape")) {
            if (!lit_char(&p, '('))
                goto bad;
            ndim = 0;
            while (!lit_char(&p, ')')) {
                if (ndim == 8 || !lit_int(&p, &dims[ndim++]))
                    goto bad;
                if (!lit_char(&p, ',')) {
                    if (!lit_char(&p, ')'))
                        goto bad;
                    break;
                }
            }
        } else {
            goto bad; /* the format has exactly these three keys */
        }
        if (!lit_char(&p, ',')) {
            if (!lit_char(&p, '}'))
                goto bad;
            break;
        }
    }
    if (!*descr || fortran < 0 || ndim < 0)
        goto bad;
    if (fortran)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED,
                        "%s: the array is in Fortran order; save it in C order "
                        "(numpy.ascontiguousarray)",
                        path);
    const char *d = descr;
    a->big_endian = 0;
    if (*d == '<' || *d == '|' || *d == '=')
        d++;
    else if (*d == '>')
        a->big_endian = 1, d++;
    if ((d[0] != 'u' && d[0] != 'i') || d[1] == 0 || !strchr("1248", d[1]) || d[2])
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED,
                        "%s: element type '%s' is not an integer type; token arrays hold "
                        "unsigned or signed integers",
                        path, descr);
    a->kind = d[0];
    a->itemsize = d[1] - '0';
    return set_shape(a, dims, ndim, path, err);
bad:
    return bsq_fail(err, BSQ_ERR_FORMAT, "%s: malformed .npy header", path);
}

static int dtype_from_safetensors(const char *s, tokf_array *a)
{
    static const struct {
        const char *name;
        char kind;
        int size;
    } t[] = {{"U8", 'u', 1},  {"U16", 'u', 2}, {"U32", 'u', 4}, {"U64", 'u', 8},
             {"I8", 'i', 1},  {"I16", 'i', 2}, {"I32", 'i', 4}, {"I64", 'i', 8}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(s, t[i].name)) {
            a->kind = t[i].kind;
            a->itemsize = t[i].size;
            return 1;
        }
    return 0;
}

static bsq_status parse_safetensors_header(const char *text, size_t json_len, uint64_t hlen,
                                           uint64_t file_size, tokf_array *a, const char *path,
                                           bsq_error *err)
{
    json_value *root = NULL;
    bsq_status st = json_parse(text, json_len, &root, err);
    if (st != BSQ_OK)
        return bsq_fail_prefix(err, st, "%s: safetensors header", path);
    const json_value *tensor = NULL;
    const char *tname = NULL;
    int tensors = 0;
    if (root->type != JSON_OBJECT) {
        st = bsq_fail(err, BSQ_ERR_FORMAT, "%s: the safetensors header is not an object", path);
        goto done;
    }
    for (size_t i = 0; i < root->count; i++) {
        if (!strcmp(root->keys[i], "__metadata__")) {
            const json_value *m = &root->items[i];
            if (m->type != JSON_OBJECT)
                continue;
            a->meta_keys = calloc(m->count + 1, sizeof *a->meta_keys);
            a->meta_values = calloc(m->count + 1, sizeof *a->meta_values);
            if (!a->meta_keys || !a->meta_values) {
                st = bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
                goto done;
            }
            for (size_t k = 0; k < m->count; k++)
                if (m->items[k].type == JSON_STRING) {
                    a->meta_keys[a->nmeta] = strdup(m->keys[k]);
                    a->meta_values[a->nmeta] = strdup(m->items[k].string);
                    if (!a->meta_keys[a->nmeta] || !a->meta_values[a->nmeta]) {
                        a->nmeta++;
                        st = bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
                        goto done;
                    }
                    a->nmeta++;
                }
            continue;
        }
        tensors++;
        if (!tensor || !strcmp(root->keys[i], "tokens")) {
            tensor = &root->items[i];
            tname = root->keys[i];
        }
    }
    if (!tensor || (tensors > 1 && strcmp(tname, "tokens"))) {
        st = bsq_fail(err, BSQ_ERR_FORMAT, "%s: %s", path,
                      tensors ? "several tensors and none named \"tokens\""
                              : "the file holds no tensor");
        goto done;
    }
    const json_value *dt = json_get(tensor, "dtype"), *sh = json_get(tensor, "shape"),
                     *off = json_get(tensor, "data_offsets");
    if (!dt || dt->type != JSON_STRING || !sh || sh->type != JSON_ARRAY || !off ||
        off->type != JSON_ARRAY || off->count != 2 || off->items[0].type != JSON_NUMBER ||
        off->items[1].type != JSON_NUMBER || sh->count > 8) {
        st = bsq_fail(err, BSQ_ERR_FORMAT, "%s: tensor \"%s\": missing or malformed fields", path,
                      tname);
        goto done;
    }
    if (!dtype_from_safetensors(dt->string, a)) {
        st = bsq_fail(err, BSQ_ERR_UNSUPPORTED,
                      "%s: tensor \"%s\" has dtype %s; token arrays hold integers (U8, U16, U32, "
                      "U64, I8, I16, I32, I64)",
                      path, tname, dt->string);
        goto done;
    }
    int64_t dims[8];
    for (size_t i = 0; i < sh->count; i++) {
        double v = sh->items[i].type == JSON_NUMBER ? sh->items[i].number : -1;
        dims[i] = v >= 0 && v <= 1e15 && v == (double)(int64_t)v ? (int64_t)v : -1;
    }
    if ((st = set_shape(a, dims, (int)sh->count, path, err)) != BSQ_OK)
        goto done;
    double b0 = off->items[0].number, b1 = off->items[1].number;
    if (b0 < 0 || b1 < b0 || b1 > 1e18 || (uint64_t)(b1 - b0) != a->data_bytes ||
        8 + hlen + (uint64_t)b1 > file_size) {
        st = bsq_fail(err, BSQ_ERR_FORMAT,
                      "%s: tensor \"%s\": its data range does not match its shape or lies "
                      "beyond the end of the file (truncated?)",
                      path, tname);
        goto done;
    }
    a->data_offset = 8 + hlen + (uint64_t)b0;
done:
    json_free(root);
    return st;
}

bsq_status tokf_open(const char *path, tokf_array *a, bsq_error *err)
{
    memset(a, 0, sizeof *a);
    FILE *f = fopen(path, "rb");
    if (!f)
        return bsq_fail(err, BSQ_ERR_IO, "%s: %s", path, strerror(errno));
    bsq_status st = BSQ_OK;
    char *hdr = NULL;
    struct stat sb;
    unsigned char pre[12];
    size_t got = fread(pre, 1, sizeof pre, f);
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = bsq_fail(err, BSQ_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (got >= 10 && !memcmp(pre, "\x93NUMPY", 6)) {
        a->container = TOKF_NPY;
        int major = pre[6];
        uint64_t hlen, start;
        if (major == 1) {
            hlen = pre[8] | (uint64_t)pre[9] << 8;
            start = 10;
        } else if ((major == 2 || major == 3) && got >= 12) {
            hlen = pre[8] | (uint64_t)pre[9] << 8 | (uint64_t)pre[10] << 16 |
                   (uint64_t)pre[11] << 24;
            start = 12;
        } else {
            st = bsq_fail(err, BSQ_ERR_UNSUPPORTED, "%s: .npy format version %d.%d", path, major,
                          pre[7]);
            goto done;
        }
        if (hlen > (1u << 24) || start + hlen > size || !(hdr = malloc(hlen + 1)) ||
            fseeko(f, (off_t)start, SEEK_SET) != 0 || fread(hdr, 1, hlen, f) != hlen) {
            st = bsq_fail(err, BSQ_ERR_FORMAT, "%s: truncated .npy header", path);
            goto done;
        }
        hdr[hlen] = 0;
        if ((st = parse_npy_header(hdr, hlen, a, path, err)) != BSQ_OK)
            goto done;
        a->data_offset = start + hlen;
        if (a->data_offset + a->data_bytes != size) {
            st = bsq_fail(err, BSQ_ERR_FORMAT,
                          "%s: %llu bytes of data where the header announces %llu (%s)", path,
                          (unsigned long long)(size - a->data_offset),
                          (unsigned long long)a->data_bytes,
                          a->data_offset + a->data_bytes > size ? "truncated" : "trailing bytes");
            goto done;
        }
    } else if (got >= 9) {
        a->container = TOKF_SAFETENSORS;
        uint64_t hlen = 0;
        for (int i = 0; i < 8; i++)
            hlen |= (uint64_t)pre[i] << (8 * i);
        if (pre[8] != '{' || hlen < 2 || hlen > (1u << 26) || 8 + hlen > size) {
            st = bsq_fail(err, BSQ_ERR_FORMAT,
                          "%s: neither a NumPy .npy nor a safetensors file (or truncated)", path);
            goto done;
        }
        if (!(hdr = malloc(hlen + 1)) || fseeko(f, 8, SEEK_SET) != 0 ||
            fread(hdr, 1, hlen, f) != hlen) {
            st = bsq_fail(err, BSQ_ERR_FORMAT, "%s: truncated safetensors header", path);
            goto done;
        }
        hdr[hlen] = 0;
        /* trailing spaces are padding */
        size_t tl = hlen;
        while (tl > 0 && hdr[tl - 1] == ' ')
            tl--;
        st = parse_safetensors_header(hdr, tl, hlen, size, a, path, err);
    } else {
        st = bsq_fail(err, BSQ_ERR_FORMAT, "%s: neither a NumPy .npy nor a safetensors file",
                      path);
    }
done:
    free(hdr);
    fclose(f);
    if (st != BSQ_OK)
        tokf_close(a);
    return st;
}

void tokf_close(tokf_array *a)
{
    for (size_t i = 0; i < a->nmeta; i++) {
        free(a->meta_keys[i]);
        free(a->meta_values[i]);
    }
    free(a->meta_keys);
    free(a->meta_values);
    a->meta_keys = a->meta_values = NULL;
    a->nmeta = 0;
}

const char *tokf_meta(const tokf_array *a, const char *key)
{
    for (size_t i = 0; i < a->nmeta; i++)
        if (a->meta_keys[i] && !strcmp(a->meta_keys[i], key))
            return a->meta_values[i];
    return NULL;
}

bsq_status tokf_read_rows(const char *path, const tokf_array *a, int64_t r0, int64_t r1,
                          uint64_t *out, bsq_error *err)
{
    if (r0 < 0 || r1 < r0 || r1 > a->shape[0])
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "%s: rows %lld:%lld out of range", path,
                        (long long)r0, (long long)r1);
    const uint64_t per_row = (uint64_t)a->shape[1] * (uint64_t)a->shape[2];
    const uint64_t n = per_row * (uint64_t)(r1 - r0);
    FILE *f = fopen(path, "rb");
    if (!f)
        return bsq_fail(err, BSQ_ERR_IO, "%s: %s", path, strerror(errno));
    bsq_status st = BSQ_OK;
    unsigned char buf[8192];
    const size_t per_buf = sizeof buf / (size_t)a->itemsize;
    if (fseeko(f, (off_t)(a->data_offset + (uint64_t)r0 * per_row * (uint64_t)a->itemsize),
               SEEK_SET) != 0) {
        st = bsq_fail(err, BSQ_ERR_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    for (uint64_t done = 0; done < n;) {
        size_t want = n - done < per_buf ? (size_t)(n - done) : per_buf;
        if (fread(buf, (size_t)a->itemsize, want, f) != want) {
            st = bsq_fail(err, BSQ_ERR_IO, "%s: read failed (truncated?)", path);
            goto done;
        }
        for (size_t i = 0; i < want; i++) {
            const unsigned char *e = buf + i * (size_t)a->itemsize;
            uint64_t v = 0;
            for (int k = 0; k < a->itemsize; k++) {
                int byte = a->big_endian ? k : a->itemsize - 1 - k;
                v = v << 8 | e[byte];
            }
            if (a->kind == 'i' && a->itemsize < 8 && (v >> (8 * a->itemsize - 1)) & 1)
                v = UINT64_MAX; /* negative */
            if (a->kind == 'i' && (v >> 63)) {
                st = bsq_fail(err, BSQ_ERR_FORMAT, "%s: negative value at row %lld", path,
                              (long long)(r0 + (int64_t)((done + i) / per_row)));
                goto done;
            }
            out[done + i] = v;
        }
        done += want;
    }
done:
    fclose(f);
    return st;
}
