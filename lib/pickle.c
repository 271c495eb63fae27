#include "pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* Bounds on what a pickle may make us hold: far above anything torch.save
 * writes for a model, far below what would exhaust memory. */
#define MAX_STACK ((size_t)1 << 20)
#define MAX_MARKS ((size_t)1 << 12)   /* nesting of MARK ... TUPLE/DICT/... */
#define MAX_MEMO ((size_t)1 << 22)    /* highest memo index + 1 */
#define MAX_NODES ((size_t)1 << 21)
#define MAX_DIMS 64                   /* of a tensor view */
#define MIN_BUDGET ((size_t)1 << 20)  /* see pickle_load */

typedef struct vm {
    const unsigned char *p;
    size_t len, pos;
    size_t op_pos;        /* offset of the opcode being run, for messages */
    unsigned char op;
    pickle_doc *doc;
    pickle_value **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t nmarks, marks_cap;
    pickle_value **memo;
    size_t memo_cap, memo_count;
    size_t budget_bytes, budget_bytes_total;  /* string bytes left to allocate */
    size_t budget_items, budget_items_total;  /* container slots left to fill */
    bsq_error *err;
} vm;

static const char *op_name(unsigned char op)
{
    switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return NULL;
    }
}

__attribute__((format(printf, 3, 4)))
static bsq_status vm_fail(vm *m, bsq_status code, const char *fmt, ...)
{
    char msg[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *name = op_name(m->op);
    if (name)
        return bsq_fail(m->err, code, "pickle: %s (opcode %s at offset %zu)", msg, name, m->op_pos);
    return bsq_fail(m->err, code, "pickle: %s (opcode 0x%02x at offset %zu)", msg, m->op, m->op_pos);
}

#define NOMEM(m) bsq_fail((m)->err, BSQ_ERR_NOMEM, "pickle: out of memory")

const char *pickle_type_name(pickle_type t)
{
    switch (t) {
    case PICKLE_NONE: return "None";
    case PICKLE_BOOL: return "bool";
    case PICKLE_INT: return "int";
    case PICKLE_BIGINT: return "big int";
    case PICKLE_FLOAT: return "float";
    case PICKLE_STR: return "str";
    case PICKLE_BYTES: return "bytes";
    case PICKLE_TUPLE: return "tuple";
    case PICKLE_LIST: return "list";
    case PICKLE_DICT: return "dict";
    case PICKLE_SET: return "set";
    case PICKLE_GLOBAL: return "global";
    case PICKLE_OBJECT: return "object";
    case PICKLE_PERSID: return "persistent id";
    case PICKLE_STORAGE: return "storage";
    case PICKLE_TENSOR: return "tensor";
    }
    return "?";
}

/* ------------------------------------------------------------------ nodes */

static void free_parts(pickle_value *v)
{
    free(v->str);
    free(v->name);
    free(v->location);
    free(v->items);
    free(v->keys);
    free(v->size);
    free(v->stride);
    free(v->dtype);
}

void pickle_doc_free(pickle_doc *doc)
{
    if (!doc)
        return;
    for (size_t i = 0; i < doc->node_count; i++)
        free_parts(&doc->chunks[i / PICKLE_CHUNK][i % PICKLE_CHUNK]);
    for (size_t c = 0; c < doc->chunk_count; c++)
        free(doc->chunks[c]);
    free(doc->chunks);
    memset(doc, 0, sizeof *doc);
}

/* Nodes come from chunks: one allocation per PICKLE_CHUNK values keeps
 * large pickles cheap to build and to free. */
static pickle_value *new_node(vm *m, pickle_type type)
{
    pickle_doc *d = m->doc;
    if (d->node_count >= MAX_NODES) {
        vm_fail(m, BSQ_ERR_FORMAT, "more than %zu values", MAX_NODES);
        return NULL;
    }
    if (d->node_count == d->chunk_count * PICKLE_CHUNK) {
        if (d->chunk_count == d->chunk_cap) {
            size_t cap = d->chunk_cap ? d->chunk_cap * 2 : 16;
            pickle_value **p = realloc(d->chunks, cap * sizeof *p);
            if (!p) {
                NOMEM(m);
                return NULL;
            }
            d->chunks = p;
            d->chunk_cap = cap;
        }
        pickle_value *c = malloc(PICKLE_CHUNK * sizeof *c);
        if (!c) {
            NOMEM(m);
            return NULL;
        }
        d->chunks[d->chunk_count++] = c;
    }
    pickle_value *v = &d->chunks[d->node_count / PICKLE_CHUNK][d->node_count % PICKLE_CHUNK];
    memset(v, 0, sizeof *v);
    v->type = type;
    d->node_count++;
    return v;
}

/* Copies n bytes into a NUL-terminated string, charged to the budget:
 * memo references let a small pickle copy one large string many times. */
static char *dup_bytes(vm *m, const void *src, size_t n)
{
    if (n > m->budget_bytes) {
        vm_fail(m, BSQ_ERR_FORMAT, "strings exceed %zu bytes", m->budget_bytes_total);
        return NULL;
    }
    m->budget_bytes -= n;
    char *s = malloc(n + 1);
    if (!s) {
        NOMEM(m);
        return NULL;
    }
    if (n)
        memcpy(s, src, n);
    s[n] = '\0';
    return s;
}

static pickle_value *new_string(vm *m, pickle_type type, const void *src, size_t n)
{
    pickle_value *v = new_node(m, type);
    if (!v)
        return NULL;
    v->str = dup_bytes(m, src, n);
    if (!v->str)
        return NULL;
    v->len = n;
    return v;
}

static pickle_value *new_int(vm *m, int64_t i)
{
    pickle_value *v = new_node(m, PICKLE_INT);
    if (v)
        v->i = i;
    return v;
}

/* Appends to items (and keys, for dicts) with amortised growth. */
static bsq_status add_item(vm *m, pickle_value *c, pickle_value *key, pickle_value *item)
{
    /* Container constructors copy their argument: bounded like strings. */
    if (m->budget_items == 0)
        return vm_fail(m, BSQ_ERR_FORMAT, "containers exceed %zu items", m->budget_items_total);
    m->budget_items--;
    if (c->count == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4;
        pickle_value **p = realloc(c->items, cap * sizeof *p);
        if (!p)
            return NOMEM(m);
        c->items = p;
        if (c->type == PICKLE_DICT) {
            pickle_value **k = realloc(c->keys, cap * sizeof *k);
            if (!k)
                return NOMEM(m);
            c->keys = k;
        }
        c->cap = cap;
    }
    if (c->type == PICKLE_DICT)
        c->keys[c->count] = key;
    c->items[c->count++] = item;
    return BSQ_OK;
}

/* ------------------------------------------------------------------ stack */

/* The status of a step that produced no value: the error already set. */
static bsq_status failed(const vm *m)
{
    return m->err->code != BSQ_OK ? m->err->code : BSQ_ERR_NOMEM;
}

static size_t fence(const vm *m) { return m->nmarks ? m->marks[m->nmarks - 1] : 0; }

static bsq_status push(vm *m, pickle_value *v)
{
    if (!v)
        return failed(m);
    if (m->sp == m->stack_cap) {
        if (m->sp >= MAX_STACK)
            return vm_fail(m, BSQ_ERR_FORMAT, "stack deeper than %zu", MAX_STACK);
        size_t cap = m->stack_cap ? m->stack_cap * 2 : 64;
        pickle_value **p = realloc(m->stack, cap * sizeof *p);
        if (!p)
            return NOMEM(m);
        m->stack = p;
        m->stack_cap = cap;
    }
    m->stack[m->sp++] = v;
    return BSQ_OK;
}

static bsq_status pop(vm *m, pickle_value **out)
{
    if (m->sp <= fence(m))
        return vm_fail(m, BSQ_ERR_FORMAT, "stack underflow");
    *out = m->stack[--m->sp];
    return BSQ_OK;
}

static bsq_status top(vm *m, pickle_value **out)
{
    if (m->sp <= fence(m))
        return vm_fail(m, BSQ_ERR_FORMAT, "stack underflow");
    *out = m->stack[m->sp - 1];
    return BSQ_OK;
}

/* Removes the innermost mark; the items pushed since are stack[*base..sp),
 * still in place until the caller lowers sp to *base. */
static bsq_status pop_mark(vm *m, size_t *base)
{
    if (m->nmarks == 0)
        return vm_fail(m, BSQ_ERR_FORMAT, "no MARK on the stack");
    *base = m->marks[--m->nmarks];
    return BSQ_OK;
}

/* The value just below a popped mark (the target of APPENDS etc.). */
static bsq_status below_mark(vm *m, size_t base, pickle_value **out)
{
    if (base <= fence(m))
        return vm_fail(m, BSQ_ERR_FORMAT, "stack underflow");
    *out = m->stack[base - 1];
    return BSQ_OK;
}

/* ------------------------------------------------------------------ input */

static bsq_status need(vm *m, size_t n)
{
    if (m->len - m->pos < n)
        return vm_fail(m, BSQ_ERR_FORMAT, "truncated: %zu bytes needed, %zu left", n,
                       m->len - m->pos);
    return BSQ_OK;
}

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* A newline-terminated argument (protocol 0 text forms). */
static bsq_status read_line(vm *m, const char **s, size_t *n)
{
    const unsigned char *start = m->p + m->pos;
    const unsigned char *nl = memchr(start, '\n', m->len - m->pos);
    if (!nl)
        return vm_fail(m, BSQ_ERR_FORMAT, "truncated: no end of line");
    *s = (const char *)start;
    *n = (size_t)(nl - start);
    m->pos += *n + 1;
    return BSQ_OK;
}

static int parse_decimal(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    if (i == n)
        return 0;
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (limit - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *out = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
    return 1;
}

/* Appends code point c as UTF-8 (surrogates included, as Python's
 * surrogatepass does). */
static size_t put_utf8(unsigned char *o, uint32_t c)
{
    if (c < 0x80) {
        o[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (unsigned char)(0xc0 | c >> 6);
        o[1] = (unsigned char)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xe0 | c >> 12);
        o[1] = (unsigned char)(0x80 | (c >> 6 & 0x3f));
        o[2] = (unsigned char)(0x80 | (c & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xf0 | c >> 18);
    o[1] = (unsigned char)(0x80 | (c >> 12 & 0x3f));
    o[2] = (unsigned char)(0x80 | (c >> 6 & 0x3f));
    o[3] = (unsigned char)(0x80 | (c & 0x3f));
    return 4;
}

/* Well-formed UTF-8 (surrogate code points allowed, as pickle writes them
 * with surrogatepass). */
static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t k;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i - 1 < k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff)
            return 0;
        i += k + 1;
    }
    return 1;
}

/* Bytes read as Latin-1 (Python 2 str) into a UTF-8 str node. */
static pickle_value *latin1_str(vm *m, const unsigned char *s, size_t n)
{
    unsigned char *buf = malloc(2 * n + 1);
    if (!buf) {
        NOMEM(m);
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        o += put_utf8(buf + o, s[i]);
    pickle_value *v = new_string(m, PICKLE_STR, buf, o);
    free(buf);
    return v;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int read_hex(const char *s, size_t n, uint32_t *out)
{
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        int h = hexval((unsigned char)s[i]);
        if (h < 0)
            return 0;
        v = v << 4 | (uint32_t)h;
    }
    *out = v;
    return 1;
}

/* STRING: a quoted Python 2 repr, escapes as codecs.escape_decode. */
static bsq_status op_string(vm *m)
{
    const char *s = NULL;
    size_t n = 0;
    bsq_status st = read_line(m, &s, &n);
    if (st != BSQ_OK)
        return st;
    if (n < 2 || (s[0] != '\'' && s[0] != '"') || s[n - 1] != s[0])
        return vm_fail(m, BSQ_ERR_FORMAT, "STRING argument is not quoted");
    s++;
    n -= 2;
    unsigned char *buf = malloc(n + 1);
    if (!buf)
        return NOMEM(m);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            buf[o++] = (unsigned char)s[i];
            continue;
        }
        if (++i == n) {
            free(buf);
            return vm_fail(m, BSQ_ERR_FORMAT, "STRING ends in a backslash");
        }
        uint32_t x;
        switch (s[i]) {
        case '\\': buf[o++] = '\\'; break;
        case '\'': buf[o++] = '\''; break;
        case '"': buf[o++] = '"'; break;
        case 'n': buf[o++] = '\n'; break;
        case 'r': buf[o++] = '\r'; break;
        case 't': buf[o++] = '\t'; break;
        case 'a': buf[o++] = '\a'; break;
        case 'b': buf[o++] = '\b'; break;
        case 'f': buf[o++] = '\f'; break;
        case 'v': buf[o++] = '\v'; break;
        case '\n': break;
        case 'x':
            if (n - i - 1 < 2 || !read_hex(s + i + 1, 2, &x)) {
                free(buf);
                return vm_fail(m, BSQ_ERR_FORMAT, "bad \\x escape in STRING");
            }
            buf[o++] = (unsigned char)x;
            i += 2;
            break;
        default:
            if (s[i] >= '0' && s[i] <= '7') {
                unsigned v = 0;
                for (int k = 0; k < 3 && i < n && s[i] >= '0' && s[i] <= '7'; k++, i++)
                    v = v * 8 + (unsigned)(s[i] - '0');
                i--;
                buf[o++] = (unsigned char)v;
            } else { /* unknown escapes are kept verbatim */
                buf[o++] = '\\';
                buf[o++] = (unsigned char)s[i];
            }
        }
    }
    pickle_value *v = latin1_str(m, buf, o);
    free(buf);
    return push(m, v);
}

/* UNICODE: raw-unicode-escape text. */
static bsq_status op_unicode(vm *m)
{
    const char *s = NULL;
    size_t n = 0;
    bsq_status st = read_line(m, &s, &n);
    if (st != BSQ_OK)
        return st;
    unsigned char *buf = malloc(4 * n + 1);
    if (!buf)
        return NOMEM(m);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = (unsigned char)s[i];
        if (c == '\\' && i + 1 < n && (s[i + 1] == 'u' || s[i + 1] == 'U')) {
            size_t k = s[i + 1] == 'u' ? 4 : 8;
            if (n - i - 2 < k || !read_hex(s + i + 2, k, &c) || c > 0x10ffff) {
                free(buf);
                return vm_fail(m, BSQ_ERR_FORMAT, "bad \\u escape in UNICODE");
            }
            i += 1 + k;
        }
        o += put_utf8(buf + o, c);
    }
    pickle_value *v = new_string(m, PICKLE_STR, buf, o);
    free(buf);
    return push(m, v);
}

/* A length-prefixed str/bytes; `text` for UTF-8 strings, `latin1` for
 * Python 2 BINSTRING. */
static bsq_status op_counted(vm *m, int width, int is_signed, pickle_type type, int latin1)
{
    bsq_status st = need(m, (size_t)width);
    if (st != BSQ_OK)
        return st;
    uint64_t n = le(m->p + m->pos, width);
    if (is_signed && (n & 0x80000000u))
        return vm_fail(m, BSQ_ERR_FORMAT, "negative length");
    m->pos += (size_t)width;
    if (n > m->len - m->pos)
        return vm_fail(m, BSQ_ERR_FORMAT, "truncated: %llu bytes needed, %zu left",
                       (unsigned long long)n, m->len - m->pos);
    const unsigned char *s = m->p + m->pos;
    m->pos += (size_t)n;
    if (latin1)
        return push(m, latin1_str(m, s, (size_t)n));
    if (type == PICKLE_STR && !valid_utf8(s, (size_t)n))
        return vm_fail(m, BSQ_ERR_FORMAT, "string is not valid UTF-8");
    return push(m, new_string(m, type, s, (size_t)n));
}

/* LONG1/LONG4: little-endian two's complement of n bytes. */
static bsq_status op_long(vm *m, int width)
{
    bsq_status st = need(m, (size_t)width);
    if (st != BSQ_OK)
        return st;
    uint64_t n = le(m->p + m->pos, width);
    if (width == 4 && (n & 0x80000000u))
        return vm_fail(m, BSQ_ERR_FORMAT, "negative length");
    m->pos += (size_t)width;
    if (n > m->len - m->pos)
        return vm_fail(m, BSQ_ERR_FORMAT, "truncated: %llu bytes needed, %zu left",
                       (unsigned long long)n, m->len - m->pos);
    const unsigned char *b = m->p + m->pos;
    m->pos += (size_t)n;
    if (n == 0)
        return push(m, new_int(m, 0));
    int neg = b[n - 1] & 0x80;
    /* Fits in int64 when every byte above the eighth is sign extension
     * and bit 63 agrees with the sign. */
    int fits = 1;
    for (uint64_t i = 8; i < n; i++)
        if (b[i] != (neg ? 0xff : 0x00))
            fits = 0;
    if (fits && n > 8 && ((b[7] & 0x80) != 0) != (neg != 0))
        fits = 0;
    if (!fits)
        return push(m, new_string(m, PICKLE_BIGINT, b, (size_t)n));
    uint64_t v = neg ? UINT64_MAX : 0;
    int k = n < 8 ? (int)n : 8;
    for (int i = 0; i < k; i++) {
        v &= ~((uint64_t)0xff << (8 * i));
        v |= (uint64_t)b[i] << (8 * i);
    }
    int64_t sv;
    memcpy(&sv, &v, sizeof sv);
    return push(m, new_int(m, sv));
}

/* A decimal integer beyond int64 (protocol 0 INT/LONG) as a BIGINT:
 * little-endian two's complement, like LONG1 carries it. */
static bsq_status text_bigint(vm *m, const char *s, size_t n)
{
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    if (i == n || n - i > 4096) /* long enough for any real value; bounds the quadratic loop */
        return vm_fail(m, BSQ_ERR_FORMAT, "bad integer");
    size_t cap = (n - i) / 2 + 2, used = 1;
    unsigned char *b = calloc(cap, 1);
    if (!b)
        return NOMEM(m);
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            free(b);
            return vm_fail(m, BSQ_ERR_FORMAT, "bad integer");
        }
        unsigned carry = (unsigned)(s[i] - '0');
        for (size_t k = 0; k < used; k++) {
            unsigned v = b[k] * 10u + carry;
            b[k] = (unsigned char)v;
            carry = v >> 8;
        }
        if (carry)
            b[used++] = (unsigned char)carry;
    }
    used++; /* room for the sign: cap leaves at least one spare byte */
    if (neg) {
        unsigned carry = 1;
        for (size_t k = 0; k < used; k++) {
            unsigned v = (unsigned char)~b[k] + carry;
            b[k] = (unsigned char)v;
            carry = v >> 8;
        }
    }
    pickle_value *v = new_string(m, PICKLE_BIGINT, b, used);
    free(b);
    return push(m, v);
}

/* ------------------------------------------------------------------ memo */

static bsq_status memo_put(vm *m, uint64_t idx)
{
    pickle_value *v = NULL;
    bsq_status st = top(m, &v);
    if (st != BSQ_OK)
        return st;
    if (idx >= MAX_MEMO)
        return vm_fail(m, BSQ_ERR_FORMAT, "memo index %llu beyond the limit of %zu",
                       (unsigned long long)idx, MAX_MEMO);
    if (idx >= m->memo_cap) {
        size_t cap = m->memo_cap ? m->memo_cap : 64;
        while (cap <= idx)
            cap *= 2;
        pickle_value **p = realloc(m->memo, cap * sizeof *p);
        if (!p)
            return NOMEM(m);
        memset(p + m->memo_cap, 0, (cap - m->memo_cap) * sizeof *p);
        m->memo = p;
        m->memo_cap = cap;
    }
    if (!m->memo[idx])
        m->memo_count++;
    m->memo[idx] = v;
    return BSQ_OK;
}

static bsq_status memo_get(vm *m, uint64_t idx)
{
    if (idx >= m->memo_cap || !m->memo[idx])
        return vm_fail(m, BSQ_ERR_FORMAT, "memo entry %llu is not set", (unsigned long long)idx);
    return push(m, m->memo[idx]);
}

/* ------------------------------------------------------------------ calls */

int pickle_is_str(const pickle_value *v, const char *s)
{
    return v && v->type == PICKLE_STR && v->len == strlen(s) && memcmp(v->str, s, v->len) == 0;
}

int pickle_is_global(const pickle_value *v, const char *module, const char *name)
{
    if (!v || v->type != PICKLE_GLOBAL || strcmp(v->name, name) != 0)
        return 0;
    if (strcmp(v->str, module) == 0)
        return 1;
    return strcmp(module, "builtins") == 0 && strcmp(v->str, "__builtin__") == 0;
}

const pickle_value *pickle_object_class(const pickle_value *v)
{
    if (v && v->type == PICKLE_OBJECT && v->cls && v->cls->type == PICKLE_GLOBAL)
        return v->cls;
    return NULL;
}

const pickle_value *pickle_dict_get(const pickle_value *d, const char *key)
{
    if (d && d->type == PICKLE_OBJECT)
        d = d->dict;
    if (!d || d->type != PICKLE_DICT)
        return NULL;
    for (size_t i = d->count; i-- > 0;)
        if (pickle_is_str(d->keys[i], key))
            return d->items[i];
    return NULL;
}

static int is_seq(const pickle_value *v)
{
    return v && (v->type == PICKLE_TUPLE || v->type == PICKLE_LIST);
}

static pickle_value *new_object(vm *m, pickle_value *cls, pickle_value *args, pickle_value *kwargs)
{
    pickle_value *o = new_node(m, PICKLE_OBJECT);
    if (o) {
        o->cls = cls;
        o->args = args;
        o->kwargs = kwargs;
    }
    return o;
}

/* dict(pairs) / OrderedDict(pairs) / set(items): what a constructor of a
 * known container makes from its optional first argument. */
static pickle_value *make_container(vm *m, pickle_type type, const pickle_value *args)
{
    const pickle_value *init = args && args->count > 0 ? args->items[0] : NULL;
    if (args && args->count > 1) {
        vm_fail(m, BSQ_ERR_FORMAT, "%s constructor called with %zu arguments",
                pickle_type_name(type), args->count);
        return NULL;
    }
    if (init && !(is_seq(init) || init->type == PICKLE_SET ||
                  (type == PICKLE_DICT && init->type == PICKLE_DICT))) {
        vm_fail(m, BSQ_ERR_FORMAT, "%s constructor called with a %s", pickle_type_name(type),
                pickle_type_name(init->type));
        return NULL;
    }
    pickle_value *c = new_node(m, type);
    if (!c || !init)
        return c;
    for (size_t i = 0; i < init->count; i++) {
        bsq_status st;
        if (type == PICKLE_DICT && init->type == PICKLE_DICT) {
            st = add_item(m, c, init->keys[i], init->items[i]);
        } else if (type == PICKLE_DICT) {
            const pickle_value *pair = init->items[i];
            if (!is_seq(pair) || pair->count != 2) {
                vm_fail(m, BSQ_ERR_FORMAT, "dict constructor item is not a pair");
                return NULL;
            }
            st = add_item(m, c, pair->items[0], pair->items[1]);
        } else {
            st = add_item(m, c, NULL, init->items[i]);
        }
        if (st != BSQ_OK)
            return NULL;
    }
    return c;
}

static int as_int(const pickle_value *v, int64_t *out)
{
    if (!v || (v->type != PICKLE_INT && v->type != PICKLE_BOOL))
        return 0;
    *out = v->i;
    return 1;
}

/* torch._utils._rebuild_tensor{,_v2,_v3}(storage, storage_offset, size,
 * stride, ...): a view of a storage. */
static pickle_value *rebuild_tensor(vm *m, const pickle_value *args, int v3)
{
    if (!args || args->count < 4 || (v3 && args->count < 7)) {
        vm_fail(m, BSQ_ERR_FORMAT, "_rebuild_tensor called with too few arguments");
        return NULL;
    }
    const pickle_value *storage = args->items[0], *size = args->items[2],
                       *stride = args->items[3];
    int64_t offset;
    if (!storage || storage->type != PICKLE_STORAGE) {
        vm_fail(m, BSQ_ERR_FORMAT, "_rebuild_tensor: first argument is a %s, not a storage",
                storage ? pickle_type_name(storage->type) : "nothing");
        return NULL;
    }
    if (!as_int(args->items[1], &offset) || offset < 0 || !is_seq(size) || !is_seq(stride) ||
        size->count != stride->count) {
        vm_fail(m, BSQ_ERR_FORMAT, "_rebuild_tensor: bad offset, size or stride");
        return NULL;
    }
    if (size->count > MAX_DIMS) {
        vm_fail(m, BSQ_ERR_FORMAT, "_rebuild_tensor: %zu dimensions", size->count);
        return NULL;
    }
    pickle_value *t = new_node(m, PICKLE_TENSOR);
    if (!t)
        return NULL;
    t->storage = (pickle_value *)storage;
    t->offset = offset;
    t->ndim = (int)size->count;
    t->size = calloc(size->count + 1, sizeof *t->size);
    t->stride = calloc(size->count + 1, sizeof *t->stride);
    if (!t->size || !t->stride) {
        NOMEM(m);
        return NULL;
    }
    for (size_t i = 0; i < size->count; i++) {
        if (!as_int(size->items[i], &t->size[i]) || !as_int(stride->items[i], &t->stride[i]) ||
            t->size[i] < 0 || t->stride[i] < 0) {
            vm_fail(m, BSQ_ERR_FORMAT, "_rebuild_tensor: bad size or stride in dimension %zu", i);
            return NULL;
        }
    }
    if (v3) {
        const pickle_value *dt = args->items[6];
        if (!dt || dt->type != PICKLE_GLOBAL || strcmp(dt->str, "torch") != 0) {
            vm_fail(m, BSQ_ERR_FORMAT, "_rebuild_tensor_v3: bad dtype");
            return NULL;
        }
        t->dtype = dup_bytes(m, dt->name, strlen(dt->name));
        if (!t->dtype)
            return NULL;
    }
    return t;
}

/* Latin-1 text back to bytes: how protocol 2 pickles a bytes object,
 * _codecs.encode(str, "latin1"). NULL (not an error) when it is not that. */
static pickle_value *codecs_encode(vm *m, const pickle_value *args)
{
    if (!args || args->count != 2 || args->items[0]->type != PICKLE_STR ||
        !(pickle_is_str(args->items[1], "latin1") || pickle_is_str(args->items[1], "latin-1")))
        return NULL;
    const unsigned char *s = (const unsigned char *)args->items[0]->str;
    size_t n = args->items[0]->len, o = 0;
    unsigned char *buf = malloc(n + 1);
    if (!buf) {
        NOMEM(m);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80) {
            buf[o++] = s[i];
        } else if ((s[i] == 0xc2 || s[i] == 0xc3) && i + 1 < n) {
            buf[o++] = (unsigned char)((s[i] & 0x03) << 6 | (s[i + 1] & 0x3f));
            i++;
        } else {
            free(buf);
            return NULL;
        }
    }
    pickle_value *v = new_string(m, PICKLE_BYTES, buf, o);
    free(buf);
    return v;
}

/* REDUCE: callable(*args). Known constructors are evaluated; anything
 * else becomes an opaque object. `depth` bounds _rebuild_from_type_v2
 * nesting. */
static pickle_value *call(vm *m, pickle_value *fn, pickle_value *args, int depth)
{
    if (fn->type == PICKLE_GLOBAL) {
        if (pickle_is_global(fn, "collections", "OrderedDict") ||
            pickle_is_global(fn, "builtins", "dict"))
            return make_container(m, PICKLE_DICT, args);
        if (pickle_is_global(fn, "builtins", "set") || pickle_is_global(fn, "builtins", "frozenset"))
            return make_container(m, PICKLE_SET, args);
        if (pickle_is_global(fn, "builtins", "list"))
            return make_container(m, PICKLE_LIST, args);
        if (pickle_is_global(fn, "torch._utils", "_rebuild_tensor_v2") ||
            pickle_is_global(fn, "torch._utils", "_rebuild_tensor"))
            return rebuild_tensor(m, args, 0);
        if (pickle_is_global(fn, "torch._utils", "_rebuild_tensor_v3"))
            return rebuild_tensor(m, args, 1);
        if ((pickle_is_global(fn, "torch._utils", "_rebuild_parameter") ||
             pickle_is_global(fn, "torch._utils", "_rebuild_parameter_with_state")) &&
            args->count >= 1 && args->items[0]->type == PICKLE_TENSOR)
            return args->items[0]; /* a Parameter is its data */
        if (pickle_is_global(fn, "torch._tensor", "_rebuild_from_type_v2") && depth == 0 &&
            args->count >= 3 && is_seq(args->items[2])) {
            pickle_value *r = call(m, args->items[0], args->items[2], depth + 1);
            if (!r || r->type == PICKLE_TENSOR)
                return r;
        }
        if (pickle_is_global(fn, "_codecs", "encode")) {
            pickle_value *b = codecs_encode(m, args);
            if (b || m->err->code != BSQ_OK)
                return b;
        }
    }
    return new_object(m, fn, args, NULL);
}

/* NEWOBJ / NEWOBJ_EX: cls.__new__(cls, *args, **kwargs). */
static pickle_value *construct(vm *m, pickle_value *cls, pickle_value *args, pickle_value *kwargs)
{
    if (pickle_is_global(cls, "collections", "OrderedDict") || pickle_is_global(cls, "builtins", "dict"))
        return new_node(m, PICKLE_DICT);
    if (pickle_is_global(cls, "builtins", "set") || pickle_is_global(cls, "builtins", "frozenset"))
        return new_node(m, PICKLE_SET);
    if (pickle_is_global(cls, "builtins", "list"))
        return new_node(m, PICKLE_LIST);
    return new_object(m, cls, args, kwargs);
}

/* BINPERSID: torch.save's ('storage', storage_type, key, location, numel). */
static pickle_value *persistent(vm *m, pickle_value *pid)
{
    if (is_seq(pid) && pid->count >= 1 && pickle_is_str(pid->items[0], "storage")) {
        int64_t numel;
        if (pid->count != 5 || pid->items[1]->type != PICKLE_GLOBAL ||
            pid->items[2]->type != PICKLE_STR || pid->items[3]->type != PICKLE_STR ||
            !as_int(pid->items[4], &numel) || numel < 0) {
            vm_fail(m, BSQ_ERR_FORMAT, "malformed torch storage id");
            return NULL;
        }
        pickle_value *s = new_node(m, PICKLE_STORAGE);
        if (!s)
            return NULL;
        const pickle_value *cls = pid->items[1];
        if (!(s->name = dup_bytes(m, cls->name, strlen(cls->name))) ||
            !(s->str = dup_bytes(m, pid->items[2]->str, pid->items[2]->len)) ||
            !(s->location = dup_bytes(m, pid->items[3]->str, pid->items[3]->len)))
            return NULL;
        s->len = pid->items[2]->len;
        s->i = numel;
        return s;
    }
    pickle_value *p = new_node(m, PICKLE_PERSID);
    if (p)
        p->args = pid;
    return p;
}

/* Items pushed since the innermost mark into a new container. */
static bsq_status collect(vm *m, pickle_type type)
{
    size_t base = 0;
    bsq_status st = pop_mark(m, &base);
    if (st != BSQ_OK)
        return st;
    size_t n = m->sp - base;
    if (type == PICKLE_DICT && n % 2)
        return vm_fail(m, BSQ_ERR_FORMAT, "odd number of items for a dict");
    pickle_value *c = new_node(m, type);
    if (!c)
        return failed(m);
    for (size_t i = base; i < m->sp; i += type == PICKLE_DICT ? 2 : 1) {
        st = type == PICKLE_DICT ? add_item(m, c, m->stack[i], m->stack[i + 1])
                                 : add_item(m, c, NULL, m->stack[i]);
        if (st != BSQ_OK)
            return st;
    }
    m->sp = base;
    return push(m, c);
}

/* The list or dict an OBJECT accumulates APPENDS / SETITEMS into. */
static pickle_value *object_part(vm *m, pickle_value *o, pickle_type type)
{
    pickle_value **slot = type == PICKLE_DICT ? &o->dict : &o->list;
    if (!*slot)
        *slot = new_node(m, type);
    return *slot;
}

static bsq_status append_to(vm *m, pickle_value *target, size_t from, size_t to)
{
    if (target->type == PICKLE_OBJECT)
        target = object_part(m, target, PICKLE_LIST);
    else if (target->type != PICKLE_LIST && target->type != PICKLE_SET)
        return vm_fail(m, BSQ_ERR_FORMAT, "cannot append to a %s", pickle_type_name(target->type));
    if (!target)
        return failed(m);
    for (size_t i = from; i < to; i++) {
        bsq_status st = add_item(m, target, NULL, m->stack[i]);
        if (st != BSQ_OK)
            return st;
    }
    return BSQ_OK;
}

static bsq_status setitems_to(vm *m, pickle_value *target, size_t from, size_t to)
{
    if ((to - from) % 2)
        return vm_fail(m, BSQ_ERR_FORMAT, "odd number of items for SETITEMS");
    if (target->type == PICKLE_OBJECT)
        target = object_part(m, target, PICKLE_DICT);
    else if (target->type != PICKLE_DICT)
        return vm_fail(m, BSQ_ERR_FORMAT, "cannot set items of a %s",
                       pickle_type_name(target->type));
    if (!target)
        return failed(m);
    for (size_t i = from; i < to; i += 2) {
        bsq_status st = add_item(m, target, m->stack[i], m->stack[i + 1]);
        if (st != BSQ_OK)
            return st;
    }
    return BSQ_OK;
}

static bsq_status make_global(vm *m, const char *mod, size_t mlen, const char *name, size_t nlen)
{
    if (mlen == 0 || nlen == 0 || memchr(mod, 0, mlen) || memchr(name, 0, nlen))
        return vm_fail(m, BSQ_ERR_FORMAT, "empty or malformed global name");
    pickle_value *g = new_node(m, PICKLE_GLOBAL);
    if (!g)
        return failed(m);
    if (!(g->str = dup_bytes(m, mod, mlen)) || !(g->name = dup_bytes(m, name, nlen)))
        return failed(m);
    g->len = mlen;
    return push(m, g);
}

/* ------------------------------------------------------------------ run */

static bsq_status step(vm *m, int *done)
{
    bsq_status st = BSQ_OK;
    pickle_value *a = NULL, *b = NULL, *c = NULL;
    size_t base = 0;
    const char *s = NULL, *s2 = NULL;
    size_t n = 0, n2 = 0;
    int64_t iv = 0;
    m->op_pos = m->pos;
    m->op = m->p[m->pos++];
    switch (m->op) {
    case 0x80: /* PROTO */
        if ((st = need(m, 1)) != BSQ_OK)
            return st;
        m->doc->protocol = m->p[m->pos++];
        if (m->doc->protocol > 5)
            return vm_fail(m, BSQ_ERR_UNSUPPORTED, "protocol %d", m->doc->protocol);
        return BSQ_OK;
    case 0x95: /* FRAME: a length hint only */
        if ((st = need(m, 8)) != BSQ_OK)
            return st;
        if (le(m->p + m->pos, 8) > m->len - m->pos - 8)
            return vm_fail(m, BSQ_ERR_FORMAT, "frame longer than the data");
        m->pos += 8;
        return BSQ_OK;
    case '.': /* STOP */
        if ((st = pop(m, &a)) != BSQ_OK)
            return st;
        m->doc->root = a;
        *done = 1;
        return BSQ_OK;
    case '(':
        if (m->nmarks == m->marks_cap) {
            if (m->nmarks >= MAX_MARKS)
                return vm_fail(m, BSQ_ERR_FORMAT, "MARKs nested deeper than %zu", MAX_MARKS);
            size_t cap = m->marks_cap ? m->marks_cap * 2 : 16;
            size_t *p = realloc(m->marks, cap * sizeof *p);
            if (!p)
                return NOMEM(m);
            m->marks = p;
            m->marks_cap = cap;
        }
        m->marks[m->nmarks++] = m->sp;
        return BSQ_OK;
    case '0': /* POP: an item, or an empty mark frame */
        if (m->sp > fence(m)) {
            m->sp--;
            return BSQ_OK;
        }
        return pop_mark(m, &base);
    case '1': /* POP_MARK */
        if ((st = pop_mark(m, &base)) != BSQ_OK)
            return st;
        m->sp = base;
        return BSQ_OK;
    case '2': /* DUP */
        if ((st = top(m, &a)) != BSQ_OK)
            return st;
        return push(m, a);
    case 'N':
        return push(m, new_node(m, PICKLE_NONE));
    case 0x88:
    case 0x89:
        if ((a = new_node(m, PICKLE_BOOL)) != NULL)
            a->i = m->op == 0x88;
        return push(m, a);
    case 'I':
    case 'L':
        if ((st = read_line(m, &s, &n)) != BSQ_OK)
            return st;
        if (m->op == 'L' && n > 0 && s[n - 1] == 'L')
            n--;
        if (m->op == 'I' && n == 2 && s[0] == '0' && (s[1] == '0' || s[1] == '1')) {
            if ((a = new_node(m, PICKLE_BOOL)) != NULL)
                a->i = s[1] == '1';
            return push(m, a);
        }
        if (parse_decimal(s, n, &iv))
            return push(m, new_int(m, iv));
        return text_bigint(m, s, n);
    case 'J':
        if ((st = need(m, 4)) != BSQ_OK)
            return st;
        iv = (int32_t)(uint32_t)le(m->p + m->pos, 4);
        m->pos += 4;
        return push(m, new_int(m, iv));
    case 'K':
    case 'M':
        n = m->op == 'K' ? 1 : 2;
        if ((st = need(m, n)) != BSQ_OK)
            return st;
        iv = (int64_t)le(m->p + m->pos, (int)n);
        m->pos += n;
        return push(m, new_int(m, iv));
    case 0x8a:
        return op_long(m, 1);
    case 0x8b:
        return op_long(m, 4);
    case 'F': {
        if ((st = read_line(m, &s, &n)) != BSQ_OK)
            return st;
        char buf[64];
        if (n == 0 || n >= sizeof buf)
            return vm_fail(m, BSQ_ERR_FORMAT, "bad float");
        memcpy(buf, s, n);
        buf[n] = '\0';
        char *end;
        double d = strtod(buf, &end);
        if (*end != '\0')
            return vm_fail(m, BSQ_ERR_FORMAT, "bad float");
        if ((a = new_node(m, PICKLE_FLOAT)) != NULL)
            a->f = d;
        return push(m, a);
    }
    case 'G': {
        if ((st = need(m, 8)) != BSQ_OK)
            return st;
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++) /* big-endian */
            bits = bits << 8 | m->p[m->pos + (size_t)i];
        m->pos += 8;
        double d;
        memcpy(&d, &bits, sizeof d);
        if ((a = new_node(m, PICKLE_FLOAT)) != NULL)
            a->f = d;
        return push(m, a);
    }
    case 'S':
        return op_string(m);
    case 'V':
        return op_unicode(m);
    case 'T':
        return op_counted(m, 4, 1, PICKLE_STR, 1);
    case 'U':
        return op_counted(m, 1, 0, PICKLE_STR, 1);
    case 'X':
        return op_counted(m, 4, 0, PICKLE_STR, 0);
    case 0x8c:
        return op_counted(m, 1, 0, PICKLE_STR, 0);
    case 0x8d:
        return op_counted(m, 8, 0, PICKLE_STR, 0);
    case 'B':
        return op_counted(m, 4, 0, PICKLE_BYTES, 0);
    case 'C':
        return op_counted(m, 1, 0, PICKLE_BYTES, 0);
    case 0x8e:
    case 0x96:
        return op_counted(m, 8, 0, PICKLE_BYTES, 0);
    case '}':
        return push(m, new_node(m, PICKLE_DICT));
    case ']':
        return push(m, new_node(m, PICKLE_LIST));
    case ')':
        return push(m, new_node(m, PICKLE_TUPLE));
    case 0x8f:
        return push(m, new_node(m, PICKLE_SET));
    case 't':
        return collect(m, PICKLE_TUPLE);
    case 'l':
        return collect(m, PICKLE_LIST);
    case 'd':
        return collect(m, PICKLE_DICT);
    case 0x91:
        return collect(m, PICKLE_SET);
    case 0x85:
    case 0x86:
    case 0x87: {
        n = (size_t)(m->op - 0x84);
        if (m->sp - fence(m) < n)
            return vm_fail(m, BSQ_ERR_FORMAT, "stack underflow");
        pickle_value *t = new_node(m, PICKLE_TUPLE);
        if (!t)
            return failed(m);
        for (size_t i = m->sp - n; i < m->sp; i++)
            if ((st = add_item(m, t, NULL, m->stack[i])) != BSQ_OK)
                return st;
        m->sp -= n;
        return push(m, t);
    }
    case 'a': /* APPEND */
        if ((st = pop(m, &a)) != BSQ_OK || (st = top(m, &b)) != BSQ_OK)
            return st;
        if ((st = push(m, a)) != BSQ_OK) /* back in place for append_to */
            return st;
        st = append_to(m, b, m->sp - 1, m->sp);
        m->sp--;
        return st;
    case 'e': /* APPENDS */
    case 0x90: /* ADDITEMS */
        if ((st = pop_mark(m, &base)) != BSQ_OK || (st = below_mark(m, base, &b)) != BSQ_OK)
            return st;
        if (m->op == 0x90 && b->type != PICKLE_SET)
            return vm_fail(m, BSQ_ERR_FORMAT, "ADDITEMS to a %s", pickle_type_name(b->type));
        st = append_to(m, b, base, m->sp);
        m->sp = base;
        return st;
    case 's': /* SETITEM */
        if (m->sp - fence(m) < 3)
            return vm_fail(m, BSQ_ERR_FORMAT, "stack underflow");
        st = setitems_to(m, m->stack[m->sp - 3], m->sp - 2, m->sp);
        m->sp -= 2;
        return st;
    case 'u': /* SETITEMS */
        if ((st = pop_mark(m, &base)) != BSQ_OK || (st = below_mark(m, base, &b)) != BSQ_OK)
            return st;
        st = setitems_to(m, b, base, m->sp);
        m->sp = base;
        return st;
    case 'q':
        if ((st = need(m, 1)) != BSQ_OK)
            return st;
        return memo_put(m, m->p[m->pos++]);
    case 'r':
        if ((st = need(m, 4)) != BSQ_OK)
            return st;
        m->pos += 4;
        return memo_put(m, le(m->p + m->pos - 4, 4));
    case 0x94: /* MEMOIZE */
        return memo_put(m, m->memo_count);
    case 'p':
    case 'g':
        if ((st = read_line(m, &s, &n)) != BSQ_OK)
            return st;
        if (!parse_decimal(s, n, &iv) || iv < 0)
            return vm_fail(m, BSQ_ERR_FORMAT, "bad memo index");
        return m->op == 'p' ? memo_put(m, (uint64_t)iv) : memo_get(m, (uint64_t)iv);
    case 'h':
        if ((st = need(m, 1)) != BSQ_OK)
            return st;
        return memo_get(m, m->p[m->pos++]);
    case 'j':
        if ((st = need(m, 4)) != BSQ_OK)
            return st;
        m->pos += 4;
        return memo_get(m, le(m->p + m->pos - 4, 4));
    case 'c': /* GLOBAL */
        if ((st = read_line(m, &s, &n)) != BSQ_OK || (st = read_line(m, &s2, &n2)) != BSQ_OK)
            return st;
        return make_global(m, s, n, s2, n2);
    case 0x93: /* STACK_GLOBAL */
        if ((st = pop(m, &b)) != BSQ_OK || (st = pop(m, &a)) != BSQ_OK)
            return st;
        if (a->type != PICKLE_STR || b->type != PICKLE_STR)
            return vm_fail(m, BSQ_ERR_FORMAT, "STACK_GLOBAL needs two strings");
        return make_global(m, a->str, a->len, b->str, b->len);
    case 'R': /* REDUCE */
        if ((st = pop(m, &b)) != BSQ_OK || (st = pop(m, &a)) != BSQ_OK)
            return st;
        if (!is_seq(b))
            return vm_fail(m, BSQ_ERR_FORMAT, "REDUCE arguments are a %s",
                           pickle_type_name(b->type));
        c = call(m, a, b, 0);
        return c ? push(m, c) : failed(m);
    case 0x81: /* NEWOBJ */
        if ((st = pop(m, &b)) != BSQ_OK || (st = pop(m, &a)) != BSQ_OK)
            return st;
        if (b->type != PICKLE_TUPLE)
            return vm_fail(m, BSQ_ERR_FORMAT, "NEWOBJ arguments are a %s",
                           pickle_type_name(b->type));
        return push(m, construct(m, a, b, NULL));
    case 0x92: /* NEWOBJ_EX */
        if ((st = pop(m, &c)) != BSQ_OK || (st = pop(m, &b)) != BSQ_OK ||
            (st = pop(m, &a)) != BSQ_OK)
            return st;
        if (b->type != PICKLE_TUPLE || c->type != PICKLE_DICT)
            return vm_fail(m, BSQ_ERR_FORMAT, "NEWOBJ_EX needs a tuple and a dict");
        return push(m, construct(m, a, b, c));
    case 'o': /* OBJ: MARK cls args... */
        if ((st = pop_mark(m, &base)) != BSQ_OK)
            return st;
        if (m->sp == base)
            return vm_fail(m, BSQ_ERR_FORMAT, "OBJ without a class");
        a = m->stack[base];
        if ((b = new_node(m, PICKLE_TUPLE)) == NULL)
            return failed(m);
        for (size_t i = base + 1; i < m->sp; i++)
            if ((st = add_item(m, b, NULL, m->stack[i])) != BSQ_OK)
                return st;
        m->sp = base;
        return push(m, construct(m, a, b, NULL));
    case 'i': /* INST module\nname\n, MARK args... */
        if ((st = read_line(m, &s, &n)) != BSQ_OK || (st = read_line(m, &s2, &n2)) != BSQ_OK)
            return st;
        if ((st = make_global(m, s, n, s2, n2)) != BSQ_OK)
            return st;
        a = m->stack[--m->sp];
        if ((st = collect(m, PICKLE_TUPLE)) != BSQ_OK)
            return st;
        b = m->stack[--m->sp];
        return push(m, construct(m, a, b, NULL));
    case 'b': /* BUILD: state for objects; ignored on anything else */
        if ((st = pop(m, &b)) != BSQ_OK || (st = top(m, &a)) != BSQ_OK)
            return st;
        if (a->type == PICKLE_OBJECT)
            a->state = b;
        return BSQ_OK;
    case 'P':
        if ((st = read_line(m, &s, &n)) != BSQ_OK)
            return st;
        if ((a = latin1_str(m, (const unsigned char *)s, n)) == NULL)
            return failed(m);
        c = persistent(m, a);
        return c ? push(m, c) : failed(m);
    case 'Q':
        if ((st = pop(m, &a)) != BSQ_OK)
            return st;
        c = persistent(m, a);
        return c ? push(m, c) : failed(m);
    case 0x98: /* READONLY_BUFFER: no-op on the top value */
        return top(m, &a);
    case 0x97:
        return vm_fail(m, BSQ_ERR_FORMAT, "out-of-band buffer without buffers");
    case 0x82:
    case 0x83:
    case 0x84:
        return vm_fail(m, BSQ_ERR_UNSUPPORTED, "extension registry codes are not supported");
    default:
        return vm_fail(m, BSQ_ERR_FORMAT, "unknown opcode");
    }
}

bsq_status pickle_load(const void *bytes, size_t len, pickle_doc *doc, bsq_error *err)
{
    memset(doc, 0, sizeof *doc);
    vm m;
    memset(&m, 0, sizeof m);
    m.p = bytes;
    m.len = len;
    m.doc = doc;
    m.err = err;
    /* Each input byte yields at most one item or string byte; copies made
     * through memo references get twice that plus some slack. */
    m.budget_bytes = m.budget_bytes_total = len > SIZE_MAX / 4 ? SIZE_MAX / 2 : 2 * len + MIN_BUDGET;
    m.budget_items = m.budget_items_total = m.budget_bytes_total;
    bsq_error local;
    if (!m.err) /* messages are needed internally to pass statuses on */
        m.err = &local;
    m.err->code = BSQ_OK;
    bsq_status st = BSQ_OK;
    int done = 0;
    while (!done && st == BSQ_OK) {
        if (m.pos >= m.len) {
            m.op = '.';
            m.op_pos = m.pos;
            st = bsq_fail(m.err, BSQ_ERR_FORMAT, "pickle: truncated: no STOP before offset %zu",
                          m.len);
            break;
        }
        st = step(&m, &done);
    }
    free(m.stack);
    free(m.marks);
    free(m.memo);
    if (st != BSQ_OK) {
        pickle_doc_free(doc);
        return st;
    }
    return BSQ_OK;
}
