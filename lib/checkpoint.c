#include "checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "pickle.h"
#include "zip.h"

int bsq_checkpoint_sniff(const void *head, size_t len)
{
    return head && len >= 4 && memcmp(head, "PK\3\4", 4) == 0;
}

/* ------------------------------------------------------------ storages */

typedef struct storage_slot {
    const char *key;
    const unsigned char *data;
    size_t size;
    void *owned;
} storage_slot;

typedef struct reader {
    zip_reader zip;
    const char *prefix;     /* archive directory with its "/": "<prefix>data/<key>" */
    size_t prefix_len;
    storage_slot *slots;    /* storages extracted so far (tied weights share one) */
    size_t nslots, slots_cap;
    bsq_error *err;
} reader;

static const struct {
    const char *storage, *dtype;
    bsq_dt dt;
} dtypes[] = {
    {"FloatStorage", "float32", BSQ_DT_F32},    {"HalfStorage", "float16", BSQ_DT_F16},
    {"BFloat16Storage", "bfloat16", BSQ_DT_BF16}, {"DoubleStorage", "float64", BSQ_DT_F64},
    {"LongStorage", "int64", BSQ_DT_I64},       {"IntStorage", "int32", BSQ_DT_I32},
    {"ShortStorage", "int16", BSQ_DT_I16},      {"CharStorage", "int8", BSQ_DT_I8},
    {"ByteStorage", "uint8", BSQ_DT_U8},        {"BoolStorage", "bool", BSQ_DT_BOOL},
};

static int dtype_of(const pickle_value *t, bsq_dt *out)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        if (t->dtype ? strcmp(t->dtype, dtypes[i].dtype) == 0
                     : strcmp(t->storage->name, dtypes[i].storage) == 0) {
            *out = dtypes[i].dt;
            return 1;
        }
    }
    return 0;
}

static bsq_status get_storage(reader *r, const pickle_value *s, const storage_slot **out)
{
    for (size_t i = 0; i < r->nslots; i++)
        if (strcmp(r->slots[i].key, s->str) == 0) {
            *out = &r->slots[i];
            return BSQ_OK;
        }
    if (r->nslots == r->slots_cap) {
        size_t cap = r->slots_cap ? r->slots_cap * 2 : 64;
        storage_slot *p = realloc(r->slots, cap * sizeof *p);
        if (!p)
            return bsq_fail(r->err, BSQ_ERR_NOMEM, "out of memory");
        r->slots = p;
        r->slots_cap = cap;
    }
    size_t n = r->prefix_len + 6 + s->len + 1;
    char *name = malloc(n);
    if (!name)
        return bsq_fail(r->err, BSQ_ERR_NOMEM, "out of memory");
    snprintf(name, n, "%.*sdata/%s", (int)r->prefix_len, r->prefix, s->str);
    const zip_entry *e = zip_reader_find(&r->zip, name);
    if (!e || strlen(s->str) != s->len) {
        bsq_status st = bsq_fail(r->err, BSQ_ERR_FORMAT, "storage %s: no archive entry %s",
                                 s->str, name);
        free(name);
        return st;
    }
    free(name);
    storage_slot *slot = &r->slots[r->nslots];
    const void *data = NULL;
    bsq_status st = zip_reader_extract(&r->zip, e, &data, &slot->size, &slot->owned, r->err);
    if (st != BSQ_OK)
        return st;
    slot->data = data;
    slot->key = s->str;
    r->nslots++;
    *out = slot;
    return BSQ_OK;
}

/* Copies a tensor view (size, stride, offset over its storage) into a new
 * contiguous buffer, checking that every element lies in the storage. */
static bsq_status materialise(reader *r, bsq_tensorset *ts, const char *name, const pickle_value *t)
{
    bsq_error *err = r->err;
    bsq_dt dt;
    if (!dtype_of(t, &dt))
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "tensor %s: unsupported storage type %s", name,
                        t->dtype ? t->dtype : t->storage->name);
    if (t->ndim > BSQ_MAX_DIMS)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "tensor %s has %d dimensions", name, t->ndim);
    const uint64_t limit = (uint64_t)1 << 60;
    uint64_t es = bsq_dt_size(dt);
    /* Typed storages count elements; an untyped one (with a v3 dtype) bytes. */
    int untyped = strcmp(t->storage->name, "UntypedStorage") == 0;
    uint64_t storage_bytes = (uint64_t)t->storage->i;
    if (!untyped) {
        if (storage_bytes > limit / es)
            return bsq_fail(err, BSQ_ERR_FORMAT, "tensor %s: storage too large", name);
        storage_bytes *= es;
    }
    uint64_t storage_elems = storage_bytes / es;
    uint64_t numel = 1, last = (uint64_t)t->offset;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t sz = (uint64_t)t->size[i], sd = (uint64_t)t->stride[i];
        if (sz != 0 && numel > limit / sz)
            return bsq_fail(err, BSQ_ERR_FORMAT, "tensor %s: shape too large", name);
        numel *= sz;
        if (sz > 0 && sd > 0 && (sz - 1 > limit / sd || last > limit - (sz - 1) * sd))
            return bsq_fail(err, BSQ_ERR_FORMAT, "tensor %s: strides reach too far", name);
        if (sz > 0)
            last += (sz - 1) * sd;
    }
    if (numel == 0) { /* nothing to read: the storage is not even needed */
        int64_t shape[BSQ_MAX_DIMS];
        for (int i = 0; i < t->ndim; i++)
            shape[i] = t->size[i];
        void *none = malloc(1);
        if (!none)
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
        return bsq_tensorset_add(ts, name, dt, t->ndim, shape, none, 0, 1, err);
    }
    if (last >= storage_elems)
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "tensor %s: view reaches element %llu of a %llu-element storage", name,
                        (unsigned long long)last, (unsigned long long)storage_elems);
    /* Broadcast (stride 0) views can be far larger than their storage;
     * bound what a small file can make us allocate. */
    if (numel > limit / es || numel * es > 64 * storage_bytes + ((uint64_t)64 << 20) ||
        numel * es > SIZE_MAX)
        return bsq_fail(err, BSQ_ERR_FORMAT, "tensor %s: a %llu-element view of a %llu-byte storage",
                        name, (unsigned long long)numel, (unsigned long long)storage_bytes);
    const storage_slot *slot = NULL;
    bsq_status st = get_storage(r, t->storage, &slot);
    if (st != BSQ_OK)
        return bsq_fail_prefix(err, st, "tensor %s", name);
    if (slot->size != storage_bytes)
        return bsq_fail(err, BSQ_ERR_FORMAT, "tensor %s: storage %s holds %zu bytes, its id says %llu",
                        name, t->storage->str, slot->size, (unsigned long long)storage_bytes);
    size_t nbytes = (size_t)(numel * es), esz = (size_t)es;
    unsigned char *out = malloc(nbytes);
    if (!out)
        return bsq_fail(err, BSQ_ERR_NOMEM, "tensor %s: out of memory", name);
    const unsigned char *base = slot->data + (size_t)t->offset * esz;
    int contiguous = 1;
    uint64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->size[i] != 1 && (uint64_t)t->stride[i] != expect)
            contiguous = 0;
        expect *= (uint64_t)t->size[i];
    }
    if (contiguous) {
        memcpy(out, base, nbytes);
    } else {
        /* Odometer over the index, innermost dimension fastest. */
        int64_t idx[BSQ_MAX_DIMS] = {0};
        size_t src = 0;
        for (size_t k = 0; k < (size_t)numel; k++) {
            memcpy(out + k * esz, base + src * esz, esz);
            for (int d = t->ndim - 1; d >= 0; d--) {
                if (++idx[d] < t->size[d]) {
                    src += (size_t)t->stride[d];
                    break;
                }
                src -= (size_t)(t->stride[d] * (t->size[d] - 1));
                idx[d] = 0;
            }
        }
    }
    int64_t shape[BSQ_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++)
        shape[i] = t->size[i];
    return bsq_tensorset_add(ts, name, dt, t->ndim, shape, out, nbytes, 1, err);
}

/* ------------------------------------------------------------ state dict */

static size_t count_tensors(const pickle_value *d)
{
    size_t n = 0;
    if (d && d->type == PICKLE_DICT)
        for (size_t i = 0; i < d->count; i++)
            n += d->keys[i]->type == PICKLE_STR && d->items[i]->type == PICKLE_TENSOR;
    return n;
}

static const pickle_value *choose_state_dict(const pickle_value *root, const char **which)
{
    static const char *const keys[] = {"ema_state_dict", "state_dict"};
    for (size_t i = 0; i < 2; i++) {
        const pickle_value *d = pickle_dict_get(root, keys[i]);
        if (count_tensors(d) > 0) {
            *which = keys[i];
            return d;
        }
    }
    *which = "top-level dict";
    return count_tensors(root) > 0 ? root : NULL;
}

static bsq_status read_tensors(reader *r, const pickle_value *d, bsq_tensorset *ts)
{
    for (size_t i = 0; i < d->count; i++) {
        const pickle_value *k = d->keys[i], *v = d->items[i];
        if (k->type != PICKLE_STR || v->type != PICKLE_TENSOR)
            continue; /* not a tensor entry (e.g. _metadata) */
        if (strlen(k->str) != k->len)
            return bsq_fail(r->err, BSQ_ERR_FORMAT, "tensor name with a NUL byte");
        const char *name = k->str;
        if (strncmp(name, "module.module.", 14) == 0)
            name += 14;
        else if (strncmp(name, "module.", 7) == 0)
            name += 7;
        if (!*name)
            return bsq_fail(r->err, BSQ_ERR_FORMAT, "empty tensor name after %s", k->str);
        /* A repeated key: the pickle's last value wins, as in Python. */
        if (pickle_dict_get(d, k->str) != v)
            continue;
        bsq_status st = materialise(r, ts, name, v);
        if (st != BSQ_OK)
            return st;
    }
    return BSQ_OK;
}

/* ------------------------------------------------------------ config */

/* Walks through OmegaConf wrappers (DictConfig/ListConfig keep their
 * content in _content, value nodes in _val) and plain objects (argparse
 * Namespace: the attribute dict). */
static const pickle_value *unwrap(const pickle_value *v)
{
    for (int depth = 0; v && v->type == PICKLE_OBJECT && depth < 16; depth++) {
        const pickle_value *st = v->state;
        /* __slots__ objects pickle (dict, slots). */
        if (st && st->type == PICKLE_TUPLE && st->count == 2)
            st = st->items[0]->type == PICKLE_DICT ? st->items[0] : st->items[1];
        if (st && st->type == PICKLE_DICT) {
            const pickle_value *c = pickle_dict_get(st, "_content");
            if (!c)
                c = pickle_dict_get(st, "_val");
            if (!c)
                return st;
            v = c;
        } else if (v->dict) {
            return v->dict;
        } else {
            return v;
        }
    }
    return v;
}

static const pickle_value *cfg_get(const pickle_value *d, const char *key)
{
    d = unwrap(d);
    if (!d || d->type != PICKLE_DICT)
        return NULL;
    return unwrap(pickle_dict_get(d, key));
}

static int cfg_int(const pickle_value *v, int *out)
{
    v = unwrap(v);
    if (v && v->type == PICKLE_INT && v->i > 0 && v->i <= 1 << 30) {
        *out = (int)v->i;
        return 1;
    }
    if (v && v->type == PICKLE_FLOAT && v->f > 0 && v->f <= 1 << 30 && v->f == floor(v->f)) {
        *out = (int)v->f;
        return 1;
    }
    return 0;
}

/* An int, or a pair of ints (image_size: [h, w]). */
static int cfg_pair(const pickle_value *v, int *a, int *b)
{
    v = unwrap(v);
    if (cfg_int(v, a)) {
        *b = *a;
        return 1;
    }
    return v && (v->type == PICKLE_LIST || v->type == PICKLE_TUPLE) && v->count == 2 &&
           cfg_int(v->items[0], a) && cfg_int(v->items[1], b);
}

typedef struct found {
    int image_height, image_width, patch_size, width, layers, heads, decoder_ffn_dim, L,
        group_size, num_frames;
    double mlp_ratio;
    const char *mask;
} found;

static const char *mask_name(const pickle_value *v)
{
    v = unwrap(v);
    if (!v || v->type != PICKLE_STR)
        return NULL;
    if (strcasecmp(v->str, "none") == 0)
        return "none";
    if (strcasecmp(v->str, "block-causal") == 0 || strcasecmp(v->str, "block_causal") == 0)
        return "block-causal";
    if (strcasecmp(v->str, "causal") == 0)
        return "causal";
    return NULL;
}

/* The keys VITBSQModel takes: embed_dim, embed_group_size, vitconfig
 * (image_size, patch_size, width, layers, heads, mlp_ratio, num_frames,
 * mask_type) and dvitconfig (the decoder's, with dim_ffn_output). */
static void scan_model_params(const pickle_value *p, found *f)
{
    const pickle_value *vit = cfg_get(p, "vitconfig"), *dvit = cfg_get(p, "dvitconfig");
    cfg_int(cfg_get(p, "embed_dim"), &f->L);
    cfg_int(cfg_get(p, "embed_group_size"), &f->group_size);
    const pickle_value *nets[2] = {vit, dvit};
    for (int i = 0; i < 2; i++) {
        const pickle_value *n = nets[i];
        if (!n)
            continue;
        /* The encoder's settings first; the decoder's fill gaps. */
        int h = 0, w = 0;
        if (!f->image_height && cfg_pair(cfg_get(n, "image_size"), &h, &w)) {
            f->image_height = h;
            f->image_width = w;
        }
        int ph = 0, pw = 0;
        if (!f->patch_size && cfg_pair(cfg_get(n, "patch_size"), &ph, &pw) && ph == pw)
            f->patch_size = ph;
        if (!f->width)
            cfg_int(cfg_get(n, "width"), &f->width);
        if (!f->layers)
            cfg_int(cfg_get(n, "layers"), &f->layers);
        if (!f->heads && !cfg_int(cfg_get(n, "heads"), &f->heads))
            cfg_int(cfg_get(n, "num_heads"), &f->heads);
        const pickle_value *mr = cfg_get(n, "mlp_ratio");
        if (f->mlp_ratio == 0 && mr && (mr->type == PICKLE_FLOAT || mr->type == PICKLE_INT)) {
            double x = mr->type == PICKLE_FLOAT ? mr->f : (double)mr->i;
            if (isfinite(x) && x > 0)
                f->mlp_ratio = x;
        }
        if (!f->num_frames)
            cfg_int(cfg_get(n, "num_frames"), &f->num_frames);
        if (!f->mask)
            f->mask = mask_name(cfg_get(n, "mask_type"));
        const pickle_value *causal = cfg_get(n, "causal");
        if (!f->mask && causal && causal->type == PICKLE_BOOL)
            f->mask = causal->i ? "block-causal" : "none";
    }
    /* The decoder's output MLP (absent when use_ffn_output is off). */
    const pickle_value *use_ffn = cfg_get(dvit, "use_ffn_output");
    if (dvit && !(use_ffn && use_ffn->type == PICKLE_BOOL && !use_ffn->i))
        cfg_int(cfg_get(dvit, "dim_ffn_output"), &f->decoder_ffn_dim);
}

/* argparse arguments can carry what a launcher passed on the command
 * line; they only fill what the config did not say. */
static void scan_args(const pickle_value *a, found *f)
{
    if (!unwrap(a) || unwrap(a)->type != PICKLE_DICT)
        return;
    if (!f->heads && !cfg_int(cfg_get(a, "heads"), &f->heads))
        cfg_int(cfg_get(a, "num_heads"), &f->heads);
    if (!f->num_frames)
        cfg_int(cfg_get(a, "num_frames"), &f->num_frames);
    if (!f->mask && !(f->mask = mask_name(cfg_get(a, "mask_type"))))
        f->mask = mask_name(cfg_get(a, "mask"));
    const pickle_value *causal = cfg_get(a, "causal");
    if (!f->mask && causal && causal->type == PICKLE_BOOL)
        f->mask = causal->i ? "block-causal" : "none";
}

static void add_json(char *buf, size_t cap, size_t *len, const char *key, const char *value)
{
    if (*len >= cap)
        return;
    int n = snprintf(buf + *len, cap - *len, "%s\"%s\": %s", *len > 1 ? ", " : "", key, value);
    if (n > 0)
        *len += (size_t)n;
}

static void add_json_int(char *buf, size_t cap, size_t *len, const char *key, int v)
{
    if (v > 0) {
        char num[24];
        snprintf(num, sizeof num, "%d", v);
        add_json(buf, cap, len, key, num);
    }
}

static bsq_status extract_config(const pickle_value *root, bsq_tensorset *ts, bsq_error *err)
{
    found f;
    memset(&f, 0, sizeof f);
    const pickle_value *cfg = cfg_get(root, "config");
    if (cfg) {
        const pickle_value *model = cfg_get(cfg, "model");
        const pickle_value *params = model ? cfg_get(model, "params") : cfg_get(cfg, "params");
        scan_model_params(params ? params : cfg, &f);
    }
    scan_args(cfg_get(root, "args"), &f);

    char buf[1024] = "{";
    size_t len = 1;
    add_json_int(buf, sizeof buf, &len, "image_height", f.image_height);
    add_json_int(buf, sizeof buf, &len, "image_width", f.image_width);
    add_json_int(buf, sizeof buf, &len, "patch_size", f.patch_size);
    add_json_int(buf, sizeof buf, &len, "width", f.width);
    add_json_int(buf, sizeof buf, &len, "layers", f.layers);
    add_json_int(buf, sizeof buf, &len, "heads", f.heads);
    if (f.mlp_ratio > 0) {
        char num[40];
        snprintf(num, sizeof num, "%.17g", f.mlp_ratio);
        if (!strpbrk(num, ".eE"))
            strcat(num, ".0");
        add_json(buf, sizeof buf, &len, "mlp_ratio", num);
    }
    add_json_int(buf, sizeof buf, &len, "decoder_ffn_dim", f.decoder_ffn_dim);
    add_json_int(buf, sizeof buf, &len, "L", f.L);
    add_json_int(buf, sizeof buf, &len, "group_size", f.group_size);
    add_json_int(buf, sizeof buf, &len, "num_frames", f.num_frames);
    if (f.mask) {
        char q[32];
        snprintf(q, sizeof q, "\"%s\"", f.mask);
        add_json(buf, sizeof buf, &len, "mask", q);
    }
    if (len == 1)
        return BSQ_OK; /* nothing found: no config metadata */
    if (len + 2 > sizeof buf)
        return bsq_fail(err, BSQ_ERR_FORMAT, "checkpoint configuration too long");
    buf[len++] = '}';
    buf[len] = '\0';
    return bsq_tensorset_set_meta(ts, "config", buf, err);
}

/* ------------------------------------------------------------ entry */

/* The archive's pickle: "<dir>/data.pkl" with a single-level directory
 * (torch names it after the file; newer versions write "archive"). */
static const zip_entry *find_pickle(const zip_reader *z)
{
    for (size_t i = 0; i < z->count; i++) {
        const zip_entry *e = &z->entries[i];
        size_t n = e->name_len;
        if (n >= 9 && strcmp(e->name + n - 9, "/data.pkl") == 0 &&
            memchr(e->name, '/', n - 9) == NULL)
            return e;
        if (strcmp(e->name, "data.pkl") == 0)
            return e;
    }
    return NULL;
}

static bsq_status read_checkpoint(reader *r, bsq_tensorset *ts)
{
    bsq_error *err = r->err;
    const zip_entry *pk = find_pickle(&r->zip);
    if (!pk)
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "zip archive without a data.pkl (not a torch.save checkpoint)");
    r->prefix = pk->name;
    r->prefix_len = pk->name_len - 8; /* keeps the trailing '/' */

    /* Storages are raw bytes in the writer's byte order. */
    char bo_name[4096];
    snprintf(bo_name, sizeof bo_name, "%.*sbyteorder", (int)r->prefix_len, r->prefix);
    const zip_entry *bo = zip_reader_find(&r->zip, bo_name);
    if (bo) {
        const void *data = NULL;
        size_t size = 0;
        void *owned = NULL;
        bsq_status st = zip_reader_extract(&r->zip, bo, &data, &size, &owned, err);
        if (st != BSQ_OK)
            return st;
        int little = size == 6 && memcmp(data, "little", 6) == 0;
        free(owned);
        if (!little)
            return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "checkpoint written on a big-endian machine");
    }

    const void *pdata = NULL;
    size_t psize = 0;
    void *powned = NULL;
    bsq_status st = zip_reader_extract(&r->zip, pk, &pdata, &psize, &powned, err);
    if (st != BSQ_OK)
        return st;
    pickle_doc doc;
    st = pickle_load(pdata, psize, &doc, err);
    free(powned);
    if (st != BSQ_OK)
        return bsq_fail_prefix(err, st, "%s", pk->name);
    const pickle_value *root = doc.root;
    if (root->type != PICKLE_DICT) {
        st = bsq_fail(err, BSQ_ERR_MODEL, "checkpoint holds a %s, not a dict",
                      pickle_type_name(root->type));
    } else {
        const char *which;
        const pickle_value *sd = choose_state_dict(root, &which);
        if (!sd)
            st = bsq_fail(err, BSQ_ERR_MODEL,
                          "checkpoint has no ema_state_dict, state_dict or tensors at the top level");
        else if ((st = read_tensors(r, sd, ts)) != BSQ_OK)
            bsq_fail_prefix(err, st, "%s", which);
        if (st == BSQ_OK)
            st = extract_config(root, ts, err);
    }
    pickle_doc_free(&doc);
    return st;
}

bsq_status bsq_checkpoint_read(const char *path, bsq_tensorset *ts, bsq_error *err)
{
    if (!path || !ts)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "checkpoint: no path or tensor set");
    if (ts->count != 0 || ts->meta_count != 0)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "checkpoint: the tensor set is not empty");
    reader r;
    memset(&r, 0, sizeof r);
    r.err = err;
    bsq_status st = zip_reader_open_file(&r.zip, path, err);
    if (st != BSQ_OK)
        return st; /* the message names the path already */
    st = read_checkpoint(&r, ts);
    for (size_t i = 0; i < r.nslots; i++)
        free(r.slots[i].owned);
    free(r.slots);
    zip_reader_close(&r.zip);
    if (st != BSQ_OK) {
        bsq_tensorset_free(ts);
        bsq_tensorset_init(ts);
        return bsq_fail_prefix(err, st, "%s", path);
    }
    return BSQ_OK;
}
