/* A read-only zip reader for torch.save archives: the central directory
 * (with zip64 records, which torch always writes), entries stored or
 * deflated, CRC-32 checked. Every offset and length read from the file is
 * bounds-checked; a corrupt archive is BSQ_ERR_FORMAT, never a crash. */
#ifndef BSQ_ZIP_H
#define BSQ_ZIP_H

#include <stddef.h>
#include <stdint.h>

#include "bsq.h"

typedef struct zip_entry {
    char *name;             /* NUL-terminated (names with NUL bytes are refused) */
    size_t name_len;
    uint16_t method;        /* 0: stored, 8: deflate */
    uint16_t flags;
    uint32_t crc32;
    uint64_t comp_size;     /* bytes in the archive */
    uint64_t size;          /* bytes once extracted */
    uint64_t local_offset;  /* offset of the local file header */
} zip_entry;

typedef struct zip_reader {
    const unsigned char *data;  /* the whole archive */
    size_t len;
    void *map;                  /* set when opened from a file (unmapped on close) */
    size_t map_len;
    zip_entry *entries;
    size_t count;
} zip_reader;

/* Maps the file and reads its central directory. On failure *z is left
 * closed (zip_reader_close is still safe to call). */
bsq_status zip_reader_open_file(zip_reader *z, const char *path, bsq_error *err);
/* Same over bytes the caller keeps alive while the reader is used. */
bsq_status zip_reader_open_memory(zip_reader *z, const void *data, size_t len,
                                  bsq_error *err);
void zip_reader_close(zip_reader *z);

/* The entry called exactly `name`, or NULL (the first when repeated). */
const zip_entry *zip_reader_find(const zip_reader *z, const char *name);

/* The entry's bytes, after checking its local header and CRC-32. Stored
 * entries are borrowed from the archive (*owned = NULL); deflated ones are
 * inflated into *owned (malloc'd, the caller frees it), and *data points to
 * it. A zero-length entry gives a non-NULL *data. */
bsq_status zip_reader_extract(const zip_reader *z, const zip_entry *e,
                              const void **data, size_t *size, void **owned,
                              bsq_error *err);

#endif
