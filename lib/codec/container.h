/* The .bsq container: a file header with the stream description and model
 * fingerprints, then length-prefixed chunks with CRCs (one GOP of coded
 * tokens per chunk), then a seek index found from a fixed-size footer.
 * doc/bsq-format.md is the specification; this is its reader and writer.
 *
 * The writer streams: header first, chunks as they come, index and footer at
 * close; it patches the header's frame count when the output is seekable.
 * The reader takes a FILE*, a file descriptor or a memory buffer, seekable or
 * not. It verifies every CRC, bounds every length by what the input holds
 * (a hostile file cannot make it allocate much more than its own size or loop
 * forever), and in "skip damaged" mode resynchronises on the next intact
 * chunk, reporting the byte offset of each bad one. */
#ifndef BSQ_CONTAINER_H
#define BSQ_CONTAINER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bsq.h"

#define BSQ_CONTAINER_VERSION_MAJOR 1
#define BSQ_CONTAINER_VERSION_MINOR 0

/* Fixed sizes of version 1 (bytes). */
#define BSQ_FILE_HEADER_SIZE 192  /* the header this version writes */
#define BSQ_FILE_HEADER_MAX 4096  /* the largest header_size a reader accepts */
#define BSQ_CHUNK_HEADER_SIZE 20  /* sync, type, length, flags, header CRC */
#define BSQ_CHUNK_OVERHEAD 24     /* chunk header + body CRC */
#define BSQ_FOOTER_SIZE 40        /* the whole FOOT chunk at the end */
#define BSQ_MAX_CHUNK_BODY (1u << 28) /* 256 MiB: larger chunks are refused */
#define BSQ_MAX_DIMENSION 65535u  /* width, height, token_width, token_height */
#define BSQ_MAX_TOKENS_PER_FRAME (1u << 26)
#define BSQ_TOKENIZER_FP_SIZE 32
#define BSQ_PRIOR_FP_SIZE 16
#define BSQ_PRIOR_NAME_SIZE 16    /* NUL-padded, at most 15 characters */

/* Chunk types: four ASCII bytes, held in a uint32_t as read little-endian. */
#define BSQ_FOURCC(a, b, c, d)                                                   \
    ((uint32_t)(uint8_t)(a) | (uint32_t)(uint8_t)(b) << 8 |                      \
     (uint32_t)(uint8_t)(c) << 16 | (uint32_t)(uint8_t)(d) << 24)
#define BSQ_CHUNK_GOP BSQ_FOURCC('G', 'O', 'P', ' ')
#define BSQ_CHUNK_INDEX BSQ_FOURCC('I', 'N', 'D', 'X')
#define BSQ_CHUNK_FOOTER BSQ_FOURCC('F', 'O', 'O', 'T')

/* Everything the file header records. Rationals with a zero member are
 * "unknown" (written as 0/0). Colour fields are ISO/IEC 23091-2 code points
 * as FFmpeg numbers them (AVColorPrimaries, AVColorTransferCharacteristic,
 * AVColorSpace), range as AVColorRange (0 unspecified, 1 limited, 2 full). */
typedef struct bsq_stream_info {
    /* filled by the reader; the writer always writes the current version */
    unsigned version_major, version_minor;

    /* the video */
    uint32_t width, height;                 /* presentation size, pixels */
    uint32_t time_base_num, time_base_den;  /* seconds per pts unit; both > 0 */
    uint32_t frame_rate_num, frame_rate_den;/* 0/0: variable or unknown */
    uint32_t sar_num, sar_den;              /* 0/0: unknown */
    uint8_t color_primaries, color_transfer, color_matrix, color_range;
    uint16_t rotation;                      /* degrees clockwise, 0..359 */
    uint64_t frame_count;                   /* 0: unknown */

    /* the token geometry the decoder needs */
    int L;                                  /* bits per token, 1..64 */
    int num_frames;                         /* the most frames one GOP holds, >= 1 */
    int grid_h, grid_w;                     /* tokens per tile */
    int tiles_y, tiles_x;
    int token_width, token_height;          /* pixel size the tokens decode to */

    /* the models */
    char prior_name[BSQ_PRIOR_NAME_SIZE];   /* "context", ...; NUL-terminated */
    uint8_t tokenizer_fingerprint[BSQ_TOKENIZER_FP_SIZE];
    uint8_t prior_fingerprint[BSQ_PRIOR_FP_SIZE];
} bsq_stream_info;

/* One GOP (block-causal segment): frames first_frame .. first_frame +
 * frame_count - 1, their timestamps, and the coded payload (opaque here). */
typedef struct bsq_gop {
    uint64_t first_frame;
    uint32_t frame_count;   /* 1..num_frames */
    uint32_t flags;         /* none defined in version 1.0: write 0 */
    const int64_t *pts;     /* frame_count entries, time-base units, increasing */
    const uint8_t *payload;
    size_t payload_size;
    int64_t offset;         /* reader: byte offset of the chunk in the stream */
} bsq_gop;

/* One seek-index entry: where a GOP's chunk starts and what it holds. */
typedef struct bsq_index_entry {
    int64_t offset;         /* of the chunk, from the first byte of the header */
    uint64_t first_frame;
    uint32_t frame_count;
    int64_t first_pts, last_pts;
} bsq_index_entry;

/* Tokens in one frame (tiles_y * tiles_x * grid_h * grid_w). */
uint64_t bsq_stream_info_tokens_per_frame(const bsq_stream_info *info);

/* Checks that the fields are in range (what the writer writes and the reader
 * accepts); fails with `code` and a message naming the field. */
bsq_status bsq_stream_info_validate(const bsq_stream_info *info, bsq_status code,
                                    bsq_error *err);

/* Refuses (BSQ_ERR_MODEL) a file made with other models, with a message that
 * names both fingerprints in hex (and the prior names). A NULL fingerprint or
 * name is not compared. */
bsq_status bsq_stream_info_check_models(const bsq_stream_info *info,
                                        const uint8_t *tokenizer_fp /* 32 */,
                                        const char *prior_name,
                                        const uint8_t *prior_fp /* 16 */,
                                        bsq_error *err);

/* Refuses (BSQ_ERR_MODEL) token geometry that a tokenizer with this
 * configuration cannot decode (L, grid per tile). GOPs may hold any number
 * of the tokenizer's block-causal segments: it restarts at each GOP. */
bsq_status bsq_stream_info_check_config(const bsq_stream_info *info,
                                        const bsq_config *config, bsq_error *err);

/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void bsq_hex(const uint8_t *bytes, size_t n, char *out);

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */

typedef struct bsq_writer bsq_writer;

/* Starts a .bsq stream at the current position of `f` (or `fd`) and writes
 * the header (version 1.0; info->version_* are ignored). The caller keeps
 * ownership of f/fd. Every write error (a full disk, a closed pipe) is
 * reported by the call that hit it, and by every later call. */
bsq_status bsq_writer_open_file(FILE *f, const bsq_stream_info *info,
                                bsq_writer **out, bsq_error *err);
bsq_status bsq_writer_open_fd(int fd, const bsq_stream_info *info,
                              bsq_writer **out, bsq_error *err);

/* Appends one GOP: first_frame must be the next frame (0, then the previous
 * GOP's end), 1 <= frame_count <= num_frames, pts strictly increasing across
 * the whole stream. gop->offset is ignored. */
bsq_status bsq_writer_write_gop(bsq_writer *w, const bsq_gop *gop, bsq_error *err);

/* Appends a chunk of another type (metadata, ...), which readers that do not
 * know it skip. GOP, INDX and FOOT are refused. */
bsq_status bsq_writer_write_chunk(bsq_writer *w, uint32_t type, const void *body,
                                  size_t size, bsq_error *err);

/* Bytes written so far (the stream offset of the next chunk). */
int64_t bsq_writer_offset(const bsq_writer *w);
/* Frames written so far. */
uint64_t bsq_writer_frames(const bsq_writer *w);

/* Writes the index and footer, patches the header's frame count when the
 * output is seekable, flushes, and frees the writer (also on failure). Does
 * not close f/fd. */
bsq_status bsq_writer_close(bsq_writer *w, bsq_error *err);
/* Frees the writer without finishing the stream (after an error). */
void bsq_writer_abort(bsq_writer *w);

/* ------------------------------------------------------------------------ */
/* Reader                                                                    */

typedef struct bsq_reader bsq_reader;

/* Called for each damaged or unusable part of the input that the reader
 * passes over: a bad chunk skipped in skip_damaged mode, a damaged index
 * (the reader scans instead), a bad chunk of a type that carries no frames.
 * `offset` is the byte offset (from the start of the stream) of the chunk. */
typedef void (*bsq_damage_fn)(void *opaque, int64_t offset, const char *message);

typedef struct bsq_reader_options {
    /* 0: the first damaged GOP chunk is an error (the GOPs before it have been
     * returned). 1: report it through on_damage and continue with the next
     * intact chunk. */
    int skip_damaged;
    bsq_damage_fn on_damage;    /* may be NULL */
    void *opaque;
} bsq_reader_options;

/* Reads and validates the header at the current position of f/fd, or at
 * data[0]. The source must outlive the reader; the reader does not close it.
 * Seekable inputs (regular files, memory) allow the index and seeking; pipes
 * are read chunk by chunk. options may be NULL (strict, no callback). */
bsq_status bsq_reader_open_file(FILE *f, const bsq_reader_options *options,
                                bsq_reader **out, bsq_error *err);
bsq_status bsq_reader_open_fd(int fd, const bsq_reader_options *options,
                              bsq_reader **out, bsq_error *err);
bsq_status bsq_reader_open_memory(const void *data, size_t size,
                                  const bsq_reader_options *options,
                                  bsq_reader **out, bsq_error *err);
void bsq_reader_close(bsq_reader *r);

const bsq_stream_info *bsq_reader_info(const bsq_reader *r);
int bsq_reader_seekable(const bsq_reader *r);

/* The next GOP in file order, or *gop = NULL at the end. The GOP (pts and
 * payload) stays valid until the next call on the reader. Errors: a damaged
 * GOP chunk in strict mode (BSQ_ERR_FORMAT, message with its offset), a
 * stream that ends inside a chunk or before the frame count its header or
 * footer declares, read errors. An error is repeated by later calls until a
 * seek. */
bsq_status bsq_reader_next_gop(bsq_reader *r, const bsq_gop **gop, bsq_error *err);

/* Seekable inputs: loads the index from the footer, or, when the footer or
 * index is missing or damaged, by scanning the chunks (reported through
 * on_damage when damaged). Called by seek_frame and frame_count as needed.
 * In strict mode a scan that meets damage keeps the index up to it; frames
 * after it are then not found (the damage error is returned for them). */
bsq_status bsq_reader_load_index(bsq_reader *r, bsq_error *err);
/* The loaded index (NULL, 0 before load_index). */
const bsq_index_entry *bsq_reader_index(const bsq_reader *r, size_t *count);
/* 1 when the index came from the footer, 0 when it was built by scanning. */
int bsq_reader_index_from_footer(const bsq_reader *r);

/* Positions the reader so that the next bsq_reader_next_gop returns the GOP
 * containing `frame` (in skip_damaged mode, when that GOP was lost, the next
 * intact one). Seekable inputs use the index; non-seekable ones read forward
 * (a frame before the current position is an error). A frame at or past the
 * end is BSQ_ERR_INVALID_ARGUMENT. */
bsq_status bsq_reader_seek_frame(bsq_reader *r, uint64_t frame, bsq_error *err);

/* Number of frames: from the index when loaded (loading it on seekable
 * inputs), else the header's count (0 when unknown). */
bsq_status bsq_reader_frame_count(bsq_reader *r, uint64_t *count, bsq_error *err);

/* Number of damage reports so far (bad chunks skipped, damaged index). */
uint64_t bsq_reader_damage_count(const bsq_reader *r);

#endif
