/* Token array files for dataset tokenization (bsqcodec tokenize/detokenize):
 * one 3-D array [rows][tokens][values] of little-endian integers per file,
 * as NumPy .npy (format 1.0) or safetensors, plus a small string builder
 * for the JSON index and manifest files. */
#ifndef BSQCODEC_TOKFILE_H
#define BSQCODEC_TOKFILE_H

#include <stddef.h>
#include <stdint.h>

#include "bsq.h"

typedef enum { TOKF_NPY = 0, TOKF_SAFETENSORS = 1 } tokf_container;

/* ------------------------------------------------------------------------ */
/* Growing strings                                                           */

typedef struct tokf_buf {
    char *p;
    size_t len, cap;
    int oom; /* an allocation failed: the content is incomplete */
} tokf_buf;

void tokf_buf_free(tokf_buf *b);
void tokf_buf_put(tokf_buf *b, const void *s, size_t n);
void tokf_buf_puts(tokf_buf *b, const char *s);
void tokf_buf_printf(tokf_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends `s` as a JSON string with its quotes. Bytes that are not valid
 * UTF-8 become \udcXX (Python's "surrogateescape": json.loads() then
 * os.fsencode() give the original bytes back). */
void tokf_buf_json_string(tokf_buf *b, const char *s);

/* mkdir -p: whether `path` is a folder afterwards. */
int tokf_mkdirs(const char *path);

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */

/* The bytes that precede the data of a [rows][tokens][values] array of
 * unsigned little-endian integers of `itemsize` bytes (1, 2 or 4). For
 * safetensors, the tensor is named "tokens" and `meta` holds `nmeta`
 * key/value string pairs for __metadata__. The result only depends on its
 * arguments. malloc'd; NULL when out of memory. */
char *tokf_header(tokf_container c, int itemsize, int64_t rows, int64_t tokens, int64_t values,
                  const char *const *meta, size_t nmeta, size_t *len);

/* ------------------------------------------------------------------------ */
/* Reading                                                                   */

typedef struct tokf_array {
    tokf_container container;
    char kind;       /* 'u' unsigned, 'i' signed */
    int itemsize;    /* 1, 2, 4 or 8 */
    int big_endian;
    int64_t shape[3];
    uint64_t data_offset, data_bytes;
    /* safetensors __metadata__ (NULL for .npy): key/value pairs */
    char **meta_keys, **meta_values;
    size_t nmeta;
} tokf_array;

/* Reads and checks a file's header: an .npy (any version) or safetensors
 * file holding one 3-D integer array (safetensors: the tensor "tokens",
 * or the only tensor), whose data lies within the file. */
bsq_status tokf_open(const char *path, tokf_array *a, bsq_error *err);
void tokf_close(tokf_array *a);
/* A safetensors metadata value, or NULL. */
const char *tokf_meta(const tokf_array *a, const char *key);
/* Rows [r0, r1) as 64-bit values; negative values are an error. */
bsq_status tokf_read_rows(const char *path, const tokf_array *a, int64_t r0, int64_t r1,
                          uint64_t *out, bsq_error *err);
/* "uint16", "int64", ... */
const char *tokf_dtype_name(char kind, int itemsize);

#endif
