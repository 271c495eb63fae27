#include "json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define JSON_MAX_DEPTH 64

typedef struct {
    const char *s;
    size_t len, pos;
    bsq_error *err;
} parser;

static bsq_status perr(parser *p, const char *what)
{
    return bsq_fail(p->err, BSQ_ERR_FORMAT, "JSON: %s at offset %zu", what, p->pos);
}

static void skip_ws(parser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bsq_status parse_hex4(parser *p, unsigned *out)
{
    if (p->len - p->pos < 4)
        return perr(p, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p->s[p->pos++]);
        if (h < 0)
            return perr(p, "bad \\u escape");
        v = v << 4 | (unsigned)h;
    }
    *out = v;
    return BSQ_OK;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xc0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f)); return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static bsq_status parse_string(parser *p, char **out)
{
    p->pos++; /* opening quote */
    size_t start = p->pos;
    /* escapes only shrink text, so the raw span bounds the decoded size */
    size_t end = start;
    while (end < p->len && p->s[end] != '"') {
        if (p->s[end] == '\\')
            end++;
        end++;
    }
    if (end >= p->len)
        return perr(p, "unterminated string");
    char *o = malloc(end - start + 1);
    if (!o)
        return bsq_fail(p->err, BSQ_ERR_NOMEM, "out of memory");
    size_t n = 0;
    while (p->s[p->pos] != '"') {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) {
            free(o);
            return perr(p, "control character in string");
        }
        if (c != '\\') {
            o[n++] = (char)c;
            p->pos++;
            continue;
        }
        p->pos++;
        char e = p->s[p->pos++];
        switch (e) {
        case '"': o[n++] = '"'; break;
        case '\\': o[n++] = '\\'; break;
        case '/': o[n++] = '/'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'n': o[n++] = '\n'; break;
        case 'r': o[n++] = '\r'; break;
        case 't': o[n++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (parse_hex4(p, &cp) != BSQ_OK) {
                free(o);
                return BSQ_ERR_FORMAT;
            }
            if (cp >= 0xd800 && cp < 0xdc00) {
                if (p->len - p->pos < 6 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                    free(o);
                    return perr(p, "lone surrogate");
                }
                p->pos += 2;
                if (parse_hex4(p, &lo) != BSQ_OK || lo < 0xdc00 || lo > 0xdfff) {
                    free(o);
                    return perr(p, "bad surrogate pair");
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                free(o);
                return perr(p, "lone surrogate");
            }
            if (cp == 0) {
                free(o);
                return perr(p, "NUL in string");
            }
            n += put_utf8(o + n, cp);
            break;
        }
        default:
            free(o);
            return perr(p, "bad escape");
        }
    }
    p->pos++;
    o[n] = 0;
    *out = o;
    return BSQ_OK;
}

static bsq_status parse_number(parser *p, double *out)
{
    size_t start = p->pos;
    if (p->s[p->pos] == '-')
        p->pos++;
    if (p->pos >= p->len)
        return perr(p, "bad number");
    if (p->s[p->pos] == '0') {
        p->pos++;
    } else if (p->s[p->pos] >= '1' && p->s[p->pos] <= '9') {
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
            p->pos++;
    } else {
        return perr(p, "bad number");
    }
    if (p->pos < p->len && p->s[p->pos] == '.') {
        p->pos++;
        size_t d = p->pos;
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
            p->pos++;
        if (d == p->pos)
            return perr(p, "bad fraction");
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
            p->pos++;
        size_t d = p->pos;
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
            p->pos++;
        if (d == p->pos)
            return perr(p, "bad exponent");
    }
    char buf[64];
    size_t n = p->pos - start;
    if (n >= sizeof buf)
        return perr(p, "number too long");
    memcpy(buf, p->s + start, n);
    buf[n] = 0;
    *out = strtod(buf, NULL);
    return BSQ_OK;
}

static bsq_status parse_value(parser *p, json_value *v, int depth);

static bsq_status grow(parser *p, json_value *v, size_t *cap, int object)
{
    if (v->count < *cap)
        return BSQ_OK;
    size_t nc = *cap ? *cap * 2 : 8;
    json_value *items = realloc(v->items, nc * sizeof *items);
    if (!items)
        return bsq_fail(p->err, BSQ_ERR_NOMEM, "out of memory");
    v->items = items;
    if (object) {
        char **keys = realloc(v->keys, nc * sizeof *keys);
        if (!keys)
            return bsq_fail(p->err, BSQ_ERR_NOMEM, "out of memory");
        v->keys = keys;
    }
    *cap = nc;
    return BSQ_OK;
}

static bsq_status parse_container(parser *p, json_value *v, int depth, int object)
{
    char close = object ? '}' : ']';
    size_t cap = 0;
    v->type = object ? JSON_OBJECT : JSON_ARRAY;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return BSQ_OK;
    }
    for (;;) {
        bsq_status st = grow(p, v, &cap, object);
        if (st != BSQ_OK)
            return st;
        char *key = NULL;
        skip_ws(p);
        if (object) {
            if (p->pos >= p->len || p->s[p->pos] != '"')
                return perr(p, "expected member name");
            if ((st = parse_string(p, &key)) != BSQ_OK)
                return st;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') {
                free(key);
                return perr(p, "expected ':'");
            }
            p->pos++;
        }
        json_value *item = &v->items[v->count];
        memset(item, 0, sizeof *item);
        if (object)
            v->keys[v->count] = key;
        v->count++; /* counted before parsing so a failure frees it */
        if ((st = parse_value(p, item, depth + 1)) != BSQ_OK)
            return st;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            return BSQ_OK;
        }
        return perr(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int match(parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos >= n && memcmp(p->s + p->pos, word, n) == 0) {
        p->pos += n;
        return 1;
    }
    return 0;
}

static bsq_status parse_value(parser *p, json_value *v, int depth)
{
    skip_ws(p);
    if (p->pos >= p->len)
        return perr(p, "unexpected end");
    char c = p->s[p->pos];
    if ((c == '{' || c == '[') && depth >= JSON_MAX_DEPTH) /* at most 64 nested containers */
        return perr(p, "nesting too deep");
    if (c == '{')
        return parse_container(p, v, depth, 1);
    if (c == '[')
        return parse_container(p, v, depth, 0);
    if (c == '"') {
        v->type = JSON_STRING;
        return parse_string(p, &v->string);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        v->type = JSON_NUMBER;
        return parse_number(p, &v->number);
    }
    if (match(p, "true")) { v->type = JSON_BOOL; v->boolean = 1; return BSQ_OK; }
    if (match(p, "false")) { v->type = JSON_BOOL; v->boolean = 0; return BSQ_OK; }
    if (match(p, "null")) { v->type = JSON_NULL; return BSQ_OK; }
    return perr(p, "unexpected character");
}

static void free_inner(json_value *v)
{
    for (size_t i = 0; i < v->count; i++) {
        free_inner(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->string);
}

bsq_status json_parse(const char *text, size_t len, json_value **out, bsq_error *err)
{
    parser p = {text, len, 0, err};
    json_value *v = calloc(1, sizeof *v);
    if (!v)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    bsq_status st = parse_value(&p, v, 0);
    if (st == BSQ_OK) {
        skip_ws(&p);
        if (p.pos != len)
            st = perr(&p, "trailing characters");
    }
    if (st != BSQ_OK) {
        json_free(v);
        return st;
    }
    *out = v;
    return BSQ_OK;
}

void json_free(json_value *v)
{
    if (!v)
        return;
    free_inner(v);
    free(v);
}

const json_value *json_get(const json_value *obj, const char *key)
{
    if (!obj || obj->type != JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < obj->count; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return &obj->items[i];
    return NULL;
}
