/* A subset of the Python pickle virtual machine (protocols 0-5, as written
 * by torch.save), building a tree of values without running any code.
 * Calls of unknown classes and functions become opaque PICKLE_OBJECT nodes
 * that keep their arguments and BUILD state, so configurations pickled as
 * objects (OmegaConf, argparse) can still be walked. torch's storages
 * (persistent ids) and _rebuild_tensor_v2 calls become STORAGE and TENSOR
 * nodes; collections.OrderedDict becomes a plain dict.
 *
 * All nodes belong to the pickle_doc and are freed with it. The memo can
 * make the result a graph (shared nodes, even cycles): walk it with a depth
 * bound. Hostile input is bounded by stack, mark, memo and node limits and
 * gives BSQ_ERR_FORMAT. */
#ifndef BSQ_PICKLE_H
#define BSQ_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "bsq.h"

typedef enum pickle_type {
    PICKLE_NONE,
    PICKLE_BOOL,    /* i: 0 or 1 */
    PICKLE_INT,     /* i */
    PICKLE_BIGINT,  /* an int beyond int64: str/len hold it little-endian two's complement */
    PICKLE_FLOAT,   /* f */
    PICKLE_STR,     /* str/len: UTF-8 (NUL-terminated; may contain NULs) */
    PICKLE_BYTES,   /* str/len (NUL-terminated for convenience) */
    PICKLE_TUPLE,   /* items/count */
    PICKLE_LIST,    /* items/count */
    PICKLE_DICT,    /* keys/items/count, in insertion order; a repeated key: the last wins */
    PICKLE_SET,     /* items/count (set or frozenset) */
    PICKLE_GLOBAL,  /* str: module, name: attribute (a class or function reference) */
    PICKLE_OBJECT,  /* cls called with args (tuple or NULL) and kwargs; state from BUILD;
                       list/dict: what APPEND(S)/SETITEM(S) added to it (or NULL) */
    PICKLE_PERSID,  /* a persistent id other than a torch storage: args */
    PICKLE_STORAGE, /* torch storage: name: class ("FloatStorage"), str: key,
                       location: device, i: numel */
    PICKLE_TENSOR   /* torch tensor view: storage, offset, ndim, size[], stride[];
                       dtype: torch dtype name ("float32") when given (v3), else NULL */
} pickle_type;

typedef struct pickle_value pickle_value;
struct pickle_value {
    pickle_type type;
    int64_t i;
    double f;
    char *str;
    size_t len;
    char *name;
    char *location;
    pickle_value **items;
    pickle_value **keys;
    size_t count, cap;
    pickle_value *cls, *args, *kwargs, *state, *list, *dict;
    pickle_value *storage;
    int64_t offset;
    int ndim;
    int64_t *size, *stride;
    char *dtype;
};

#define PICKLE_CHUNK 256

typedef struct pickle_doc {
    pickle_value *root;
    pickle_value **chunks;  /* nodes, allocated PICKLE_CHUNK at a time */
    size_t chunk_count, chunk_cap;
    size_t node_count;
    int protocol;           /* from PROTO, 0 if absent */
} pickle_doc;

/* Runs the pickle in bytes[0..len) up to STOP. On failure the message
 * names the opcode and offset, and *doc is left empty. */
bsq_status pickle_load(const void *bytes, size_t len, pickle_doc *doc, bsq_error *err);
void pickle_doc_free(pickle_doc *doc);

/* Value of a dict (or an object's SETITEMS dict) under a str key, or NULL. */
const pickle_value *pickle_dict_get(const pickle_value *dict, const char *key);
/* Non-zero when v is a str equal to s. */
int pickle_is_str(const pickle_value *v, const char *s);
/* Non-zero when v is a GLOBAL module.name (module "builtins" also matches
 * "__builtin__"). */
int pickle_is_global(const pickle_value *v, const char *module, const char *name);
/* The class of an OBJECT when it is a GLOBAL, else NULL. */
const pickle_value *pickle_object_class(const pickle_value *v);
/* A short static name for a type ("dict", "tensor", ...). */
const char *pickle_type_name(pickle_type t);

#endif
