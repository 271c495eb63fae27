#include "zip.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "error.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOCATOR64 0x07064b50u

#define EOCD_LEN 22u
#define LOCATOR64_LEN 20u
#define EOCD64_LEN 56u
#define CENTRAL_LEN 46u
#define LOCAL_LEN 30u

/* Deflate cannot expand data by more than about 1032:1, so a larger
 * claimed size is corruption, refused before allocating for it. */
#define MAX_DEFLATE_RATIO 1032u

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* True when [off, off+n) lies inside [0, len), without overflow. */
static int in_range(uint64_t off, uint64_t n, uint64_t len) { return off <= len && n <= len - off; }

void zip_reader_close(zip_reader *z)
{
    if (!z)
        return;
    for (size_t i = 0; i < z->count; i++)
        free(z->entries[i].name);
    free(z->entries);
    if (z->map)
        munmap(z->map, z->map_len);
    memset(z, 0, sizeof *z);
}

/* Applies a zip64 extended-information extra field (id 1): the 64-bit
 * values follow in a fixed order, present only for fields saturated in the
 * 32-bit header. */
static bsq_status apply_zip64_extra(zip_entry *e, const unsigned char *x, size_t xlen,
                                    int need_size, int need_comp, int need_off, bsq_error *err)
{
    size_t pos = 0;
    while (pos + 4 <= xlen) {
        uint16_t id = rd16(x + pos), n = rd16(x + pos + 2);
        if (n > xlen - pos - 4)
            return bsq_fail(err, BSQ_ERR_FORMAT, "zip: extra field of entry %s overruns its header",
                            e->name);
        if (id == 1) {
            const unsigned char *f = x + pos + 4;
            size_t need = 8u * (size_t)(need_size + need_comp + need_off), k = 0;
            if (n < need)
                return bsq_fail(err, BSQ_ERR_FORMAT, "zip: zip64 field of entry %s is too short",
                                e->name);
            if (need_size) {
                e->size = rd64(f + k);
                k += 8;
            }
            if (need_comp) {
                e->comp_size = rd64(f + k);
                k += 8;
            }
            if (need_off)
                e->local_offset = rd64(f + k);
            return BSQ_OK;
        }
        pos += 4u + n;
    }
    if (need_size || need_comp || need_off)
        return bsq_fail(err, BSQ_ERR_FORMAT, "zip: entry %s needs a zip64 field and has none",
                        e->name);
    return BSQ_OK;
}

static bsq_status read_central(zip_reader *z, uint64_t cd_off, uint64_t cd_size, uint64_t count,
                               uint64_t cd_limit, bsq_error *err)
{
    /* The directory ends where the end records begin: anything else means
     * a corrupt record or bytes spliced into the archive. */
    if (!in_range(cd_off, cd_size, cd_limit) || cd_off + cd_size != cd_limit)
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "zip: central directory [%llu, +%llu) does not end at the end record (%llu)",
                        (unsigned long long)cd_off, (unsigned long long)cd_size,
                        (unsigned long long)cd_limit);
    if (count > cd_size / CENTRAL_LEN)
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "zip: %llu entries cannot fit a %llu-byte central directory",
                        (unsigned long long)count, (unsigned long long)cd_size);
    z->entries = calloc(count ? (size_t)count : 1, sizeof *z->entries);
    if (!z->entries)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    const unsigned char *p = z->data + cd_off;
    uint64_t pos = 0;
    for (uint64_t i = 0; i < count; i++) {
        if (!in_range(pos, CENTRAL_LEN, cd_size) || rd32(p + pos) != SIG_CENTRAL)
            return bsq_fail(err, BSQ_ERR_FORMAT, "zip: central directory entry %llu is corrupt",
                            (unsigned long long)i);
        const unsigned char *h = p + pos;
        size_t nlen = rd16(h + 28), xlen = rd16(h + 30), clen = rd16(h + 32);
        if (!in_range(pos + CENTRAL_LEN, (uint64_t)nlen + xlen + clen, cd_size))
            return bsq_fail(err, BSQ_ERR_FORMAT,
                            "zip: central directory entry %llu overruns the directory",
                            (unsigned long long)i);
        if (rd16(h + 34) != 0 && rd16(h + 34) != 0xffff)
            return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "zip: multi-disk archives are not supported");
        const unsigned char *name = h + CENTRAL_LEN;
        if (nlen == 0 || memchr(name, 0, nlen))
            return bsq_fail(err, BSQ_ERR_FORMAT, "zip: central directory entry %llu has a bad name",
                            (unsigned long long)i);
        zip_entry *e = &z->entries[z->count];
        e->name = malloc(nlen + 1);
        if (!e->name)
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
        memcpy(e->name, name, nlen);
        e->name[nlen] = '\0';
        e->name_len = nlen;
        z->count++;
        e->flags = rd16(h + 8);
        e->method = rd16(h + 10);
        e->crc32 = rd32(h + 16);
        e->comp_size = rd32(h + 20);
        e->size = rd32(h + 24);
        e->local_offset = rd32(h + 42);
        bsq_status st = apply_zip64_extra(e, name + nlen, xlen, e->size == 0xffffffffu,
                                          e->comp_size == 0xffffffffu,
                                          e->local_offset == 0xffffffffu, err);
        if (st != BSQ_OK)
            return st;
        /* Entry data precedes the directory. */
        if (!in_range(e->local_offset, LOCAL_LEN, cd_off) ||
            !in_range(e->local_offset + LOCAL_LEN, e->comp_size, cd_off))
            return bsq_fail(err, BSQ_ERR_FORMAT,
                            "zip: entry %s (offset %llu, %llu bytes) lies outside the archive data",
                            e->name, (unsigned long long)e->local_offset,
                            (unsigned long long)e->comp_size);
        pos += CENTRAL_LEN + nlen + xlen + clen;
    }
    if (pos != cd_size)
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "zip: central directory holds %llu bytes, its entries %llu",
                        (unsigned long long)cd_size, (unsigned long long)pos);
    return BSQ_OK;
}

static bsq_status open_archive(zip_reader *z, bsq_error *err)
{
    const unsigned char *d = z->data;
    size_t len = z->len;
    if (len < EOCD_LEN)
        return bsq_fail(err, BSQ_ERR_FORMAT, "zip: %zu bytes are too few for an archive", len);
    /* The end record is last, followed only by its comment (at most 64 KiB). */
    size_t eocd = SIZE_MAX;
    size_t lowest = len - EOCD_LEN > 0xffff ? len - EOCD_LEN - 0xffff : 0;
    for (size_t pos = len - EOCD_LEN + 1; pos-- > lowest;) {
        if (rd32(d + pos) == SIG_EOCD && pos + EOCD_LEN + rd16(d + pos + 20) == len) {
            eocd = pos;
            break;
        }
    }
    if (eocd == SIZE_MAX)
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "zip: no end-of-central-directory record (not a zip archive, or truncated)");
    const unsigned char *e = d + eocd;
    if (rd16(e + 4) != 0 || rd16(e + 6) != 0)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "zip: multi-disk archives are not supported");
    uint64_t count = rd16(e + 10), cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    if (rd16(e + 8) != rd16(e + 10))
        return bsq_fail(err, BSQ_ERR_FORMAT, "zip: end record's entry counts disagree");
    uint64_t cd_limit = eocd;
    if (eocd >= LOCATOR64_LEN && rd32(d + eocd - LOCATOR64_LEN) == SIG_LOCATOR64) {
        const unsigned char *loc = d + eocd - LOCATOR64_LEN;
        uint64_t off64 = rd64(loc + 8);
        if (rd32(loc + 4) != 0 || rd32(loc + 16) > 1)
            return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "zip: multi-disk archives are not supported");
        if (!in_range(off64, EOCD64_LEN, eocd - LOCATOR64_LEN) || rd32(d + off64) != SIG_EOCD64)
            return bsq_fail(err, BSQ_ERR_FORMAT, "zip: zip64 locator points to no zip64 end record");
        const unsigned char *e64 = d + off64;
        uint64_t rec = rd64(e64 + 4);
        if (rec < EOCD64_LEN - 12 || !in_range(off64 + 12, rec, eocd - LOCATOR64_LEN))
            return bsq_fail(err, BSQ_ERR_FORMAT, "zip: zip64 end record has a bad size");
        if (rd32(e64 + 16) != 0 || rd32(e64 + 20) != 0)
            return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "zip: multi-disk archives are not supported");
        uint64_t c64 = rd64(e64 + 32), s64 = rd64(e64 + 40), o64 = rd64(e64 + 48);
        /* The 32-bit fields are either saturated or equal to the 64-bit ones. */
        if (rd64(e64 + 24) != c64 || (count != 0xffff && count != c64) ||
            (cd_size != 0xffffffffu && cd_size != s64) || (cd_off != 0xffffffffu && cd_off != o64))
            return bsq_fail(err, BSQ_ERR_FORMAT, "zip: zip64 end record disagrees with the end record");
        count = c64;
        cd_size = s64;
        cd_off = o64;
        cd_limit = off64;
    }
    return read_central(z, cd_off, cd_size, count, cd_limit, err);
}

bsq_status zip_reader_open_memory(zip_reader *z, const void *data, size_t len, bsq_error *err)
{
    memset(z, 0, sizeof *z);
    z->data = data;
    z->len = len;
    bsq_status st = open_archive(z, err);
    if (st != BSQ_OK)
        zip_reader_close(z);
    return st;
}

bsq_status zip_reader_open_file(zip_reader *z, const char *path, bsq_error *err)
{
    memset(z, 0, sizeof *z);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return bsq_fail(err, BSQ_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return bsq_fail(err, BSQ_ERR_IO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return bsq_fail(err, BSQ_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return bsq_fail(err, BSQ_ERR_FORMAT, "%s: empty file", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return bsq_fail(err, BSQ_ERR_IO, "%s: too large to map", path);
    }
    size_t len = (size_t)sb.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return bsq_fail(err, BSQ_ERR_IO, "%s: mmap: %s", path, strerror(e));
    bsq_status st = zip_reader_open_memory(z, map, len, err);
    if (st != BSQ_OK) {
        munmap(map, len);
        return bsq_fail_prefix(err, st, "%s", path);
    }
    z->map = map;
    z->map_len = len;
    return BSQ_OK;
}

const zip_entry *zip_reader_find(const zip_reader *z, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < z->count; i++)
        if (z->entries[i].name_len == n && memcmp(z->entries[i].name, name, n) == 0)
            return &z->entries[i];
    return NULL;
}

/* zlib's lengths are 32-bit: large buffers go through in slices. */
#define ZSLICE ((size_t)1 << 30)

static uint32_t crc_of(const unsigned char *p, size_t n)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    while (n > 0) {
        size_t k = n < ZSLICE ? n : ZSLICE;
        crc = crc32(crc, p, (uInt)k);
        p += k;
        n -= k;
    }
    return (uint32_t)crc;
}

static bsq_status inflate_entry(const zip_entry *e, const unsigned char *src, size_t src_len,
                                unsigned char *dst, size_t dst_len, bsq_error *err)
{
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -MAX_WBITS) != Z_OK)
        return bsq_fail(err, BSQ_ERR_NOMEM, "zip: cannot start inflate");
    size_t in_done = 0, out_done = 0;
    int rc = Z_OK;
    while (rc != Z_STREAM_END) {
        if (s.avail_in == 0 && in_done < src_len) {
            size_t k = src_len - in_done < ZSLICE ? src_len - in_done : ZSLICE;
            s.next_in = (Bytef *)(uintptr_t)(src + in_done);
            s.avail_in = (uInt)k;
            in_done += k;
        }
        if (s.avail_out == 0 && out_done < dst_len) {
            size_t k = dst_len - out_done < ZSLICE ? dst_len - out_done : ZSLICE;
            s.next_out = dst + out_done;
            s.avail_out = (uInt)k;
            out_done += k;
        }
        /* A 1-byte scratch output lets a stream that is longer than
         * declared be noticed instead of stalling. */
        unsigned char spare;
        int scratch = 0;
        if (s.avail_out == 0) {
            s.next_out = &spare;
            s.avail_out = 1;
            scratch = 1;
        }
        rc = inflate(&s, Z_NO_FLUSH);
        if (scratch && s.avail_out == 0) {
            inflateEnd(&s);
            return bsq_fail(err, BSQ_ERR_FORMAT, "zip: entry %s inflates past its declared %llu bytes",
                            e->name, (unsigned long long)e->size);
        }
        if (scratch)
            s.avail_out = 0;
        if (rc == Z_BUF_ERROR && s.avail_in == 0 && in_done == src_len) {
            inflateEnd(&s);
            return bsq_fail(err, BSQ_ERR_FORMAT, "zip: deflate data of entry %s is truncated",
                            e->name);
        }
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
            inflateEnd(&s);
            return bsq_fail(err, BSQ_ERR_FORMAT, "zip: deflate data of entry %s is corrupt (%s)",
                            e->name, s.msg ? s.msg : "zlib error");
        }
    }
    size_t produced = out_done - s.avail_out;
    inflateEnd(&s);
    if (produced != dst_len)
        return bsq_fail(err, BSQ_ERR_FORMAT, "zip: entry %s inflates to %zu bytes, not %llu",
                        e->name, produced, (unsigned long long)e->size);
    return BSQ_OK;
}

bsq_status zip_reader_extract(const zip_reader *z, const zip_entry *e, const void **data,
                              size_t *size, void **owned, bsq_error *err)
{
    *data = NULL;
    *size = 0;
    *owned = NULL;
    const unsigned char *lh = z->data + e->local_offset;
    if (!in_range(e->local_offset, LOCAL_LEN, z->len) || rd32(lh) != SIG_LOCAL)
        return bsq_fail(err, BSQ_ERR_FORMAT, "zip: local header of entry %s is missing", e->name);
    uint64_t nlen = rd16(lh + 26), xlen = rd16(lh + 28);
    uint64_t start = e->local_offset + LOCAL_LEN + nlen + xlen;
    if (nlen != e->name_len || !in_range(e->local_offset + LOCAL_LEN, nlen, z->len) ||
        memcmp(lh + LOCAL_LEN, e->name, e->name_len) != 0)
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "zip: local header of entry %s names another file", e->name);
    if (rd16(lh + 8) != e->method)
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "zip: local and central headers of entry %s disagree on the method", e->name);
    if (!in_range(start, e->comp_size, z->len))
        return bsq_fail(err, BSQ_ERR_FORMAT, "zip: data of entry %s runs past the archive end",
                        e->name);
    if (e->flags & 1)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "zip: entry %s is encrypted", e->name);
    if (e->size > SIZE_MAX / 2)
        return bsq_fail(err, BSQ_ERR_FORMAT, "zip: entry %s claims %llu bytes", e->name,
                        (unsigned long long)e->size);
    const unsigned char *src = z->data + start;
    if (e->method == 0) {
        if (e->comp_size != e->size)
            return bsq_fail(err, BSQ_ERR_FORMAT,
                            "zip: stored entry %s has sizes %llu and %llu", e->name,
                            (unsigned long long)e->comp_size, (unsigned long long)e->size);
        if (crc_of(src, (size_t)e->size) != e->crc32)
            return bsq_fail(err, BSQ_ERR_FORMAT, "zip: CRC-32 mismatch in entry %s", e->name);
        *data = src;
        *size = (size_t)e->size;
        return BSQ_OK;
    }
    if (e->method != 8)
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "zip: entry %s uses compression method %u",
                        e->name, (unsigned)e->method);
    if (e->size > (e->comp_size + 1) * MAX_DEFLATE_RATIO)
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "zip: entry %s claims %llu bytes from %llu compressed", e->name,
                        (unsigned long long)e->size, (unsigned long long)e->comp_size);
    unsigned char *buf = malloc(e->size ? (size_t)e->size : 1);
    if (!buf)
        return bsq_fail(err, BSQ_ERR_NOMEM, "zip: out of memory for entry %s", e->name);
    bsq_status st = inflate_entry(e, src, (size_t)e->comp_size, buf, (size_t)e->size, err);
    if (st == BSQ_OK && crc_of(buf, (size_t)e->size) != e->crc32)
        st = bsq_fail(err, BSQ_ERR_FORMAT, "zip: CRC-32 mismatch in entry %s", e->name);
    if (st != BSQ_OK) {
        free(buf);
        return st;
    }
    *data = buf;
    *size = (size_t)e->size;
    *owned = buf;
    return BSQ_OK;
}
