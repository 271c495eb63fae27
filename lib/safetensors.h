/* safetensors files: an 8-byte little-endian header length, a JSON header
 * naming each tensor's dtype, shape and byte range, then the data. Read by
 * memory-mapping; written atomically (temporary name, then rename). */
#ifndef BSQ_SAFETENSORS_H
#define BSQ_SAFETENSORS_H

#include "tensorset.h"

/* Adds every tensor of the file to `ts` (which must be empty), borrowing
 * the mapping, and its string metadata. Every range and shape is checked. */
bsq_status bsq_safetensors_read(const char *path, bsq_tensorset *ts, bsq_error *err);
/* Same, from bytes in memory that the caller keeps alive. */
bsq_status bsq_safetensors_parse(const void *bytes, size_t len, bsq_tensorset *ts,
                                 bsq_error *err);
bsq_status bsq_safetensors_write(const char *path, const bsq_tensorset *ts, bsq_error *err);

#endif
