/* libbsq: BSQ-ViT image and video tokenizer (binary spherical quantization).
 *
 * One public header. Every handle is opaque; every call that can fail returns
 * a bsq_status and, when `err` is not NULL, fills it with a printable message.
 * The library keeps no global mutable state: all state lives in handles.
 *
 * Pixels: planar float, layout [batch][3][frames][height][width], RGB in
 * [-1, 1] (x = rgb8 / 127.5 - 1), or interleaved RGB24 through the _rgb8 calls.
 * Tokens: L bits each, held as MSB-first integer indices (dimension 0 is the
 * most significant bit), ordered batch, frame, tile row, tile column, grid
 * row, grid column.
 */
#ifndef BSQ_H
#define BSQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BSQ_VERSION_MAJOR 0
#define BSQ_VERSION_MINOR 1
#define BSQ_VERSION_PATCH 0

typedef enum bsq_status {
    BSQ_OK = 0,
    BSQ_ERR_INVALID_ARGUMENT = 1, /* a caller passed something out of range */
    BSQ_ERR_IO = 2,               /* open/read/write/mmap failed */
    BSQ_ERR_FORMAT = 3,           /* a file is malformed, truncated or corrupt */
    BSQ_ERR_MODEL = 4,            /* missing, extra or mis-shaped tensor; bad config */
    BSQ_ERR_NOMEM = 5,
    BSQ_ERR_UNSUPPORTED = 6,      /* valid but not handled (dtype, feature) */
    BSQ_ERR_DEVICE = 7            /* the requested device is unavailable */
} bsq_status;

typedef struct bsq_error {
    bsq_status code;
    char message[512];
} bsq_error;

/* A static English name for a status ("invalid argument", ...). */
const char *bsq_status_string(bsq_status status);
/* The library version as "MAJOR.MINOR.PATCH". */
const char *bsq_version(void);

/* ------------------------------------------------------------------------ */
/* Model                                                                     */

typedef struct bsq_config {
    int image_height, image_width; /* the model's grid, in pixels */
    int patch_size;
    int width;                     /* D */
    int layers;                    /* per stack (encoder and decoder each) */
    int heads;
    int mlp_dim;                   /* width * mlp_ratio */
    int decoder_ffn_dim;           /* F */
    int L;                         /* bits per token, 1..64 */
    int group_size;                /* g, divides L */
    int num_frames;                /* 1 for image models */
    int block_causal;              /* 1: block-causal over frames, 0: full */
    float layer_norm_eps;
} bsq_config;

typedef struct bsq_model bsq_model;

typedef enum bsq_dtype { BSQ_F32 = 0, BSQ_F16 = 1, BSQ_BF16 = 2 } bsq_dtype;

/* Opens a model: a safetensors file (configuration in
 * __metadata__["config"]) or a checkpoint in the official PyTorch layout
 * (torch.save zip), told apart by content. `hints` (may be NULL) supplies
 * hyperparameters a checkpoint's shapes cannot reveal (heads, mask, frames)
 * when the file does not carry them; fields left 0 are unset, and in hints
 * block_causal is 1 for block-causal, -1 for full attention. */
bsq_status bsq_model_open(const char *path, const bsq_config *hints,
                          bsq_model **out, bsq_error *err);
/* Opens a safetensors model held in memory (the caller keeps `bytes`
 * alive during the call only: the weights are copied). */
bsq_status bsq_model_open_memory(const void *bytes, size_t len, const bsq_config *hints,
                                 bsq_model **out, bsq_error *err);

/* The models bsqcodec ships, trained by the project (models/ in the source
 * tree; embedded in the library, so they need no file at run time). */
typedef enum bsq_default_model {
    BSQ_DEFAULT_IMAGE = 0, /* image model: photos, single frames */
    BSQ_DEFAULT_VIDEO = 1  /* block-causal video model: clips, streaming */
} bsq_default_model;
bsq_status bsq_model_open_default(bsq_default_model which, bsq_model **out, bsq_error *err);
/* The file name a default model is installed under in $(pkgdatadir)/models
 * ("bsqvit-image.safetensors"), or NULL for an unknown value. */
const char *bsq_default_model_name(bsq_default_model which);
void bsq_model_close(bsq_model *model);
const bsq_config *bsq_model_config(const bsq_model *model);
/* A SHA-256 over the configuration and every parameter as f32: two models
 * with the same fingerprint produce the same tokens and pixels. Computed on
 * first use (a pass over the weights), then remembered; thread-safe. */
bsq_status bsq_model_fingerprint(const bsq_model *model, uint8_t out[32], bsq_error *err);

/* Writes the model as safetensors in the official key layout, with its
 * configuration in the metadata; tensors stored as `dtype`. Written to a
 * temporary name and renamed, so a failed save leaves nothing behind. */
bsq_status bsq_model_save(const bsq_model *model, const char *path,
                          bsq_dtype dtype, bsq_error *err);

/* ------------------------------------------------------------------------ */
/* Context: a backend, its threads and scratch memory. Use one per thread.   */

typedef struct bsq_context bsq_context;

/* Arithmetic on a CUDA device. The CPU always computes in fp32. */
typedef enum bsq_precision {
    BSQ_PRECISION_AUTO = 0, /* bf16 on a CUDA device, fp32 on the CPU */
    BSQ_PRECISION_FP32 = 1, /* fp32 everywhere (CUDA: TF32 off; for checking) */
    BSQ_PRECISION_BF16 = 2  /* bf16 products and attention, fp32 accumulation (CUDA only) */
} bsq_precision;

typedef struct bsq_context_options {
    int threads;             /* 0: all online CPUs */
    const char *device;      /* "auto", "cpu", "cuda", "cuda:N"; NULL = "auto" */
    bsq_precision precision; /* 0 = BSQ_PRECISION_AUTO */
} bsq_context_options;

bsq_status bsq_context_create(const bsq_model *model,
                              const bsq_context_options *options,
                              bsq_context **out, bsq_error *err);
void bsq_context_destroy(bsq_context *ctx);
/* "cpu" or "cuda:N". */
const char *bsq_context_device(const bsq_context *ctx);
/* The precision the context computes in: BSQ_PRECISION_FP32 or _BF16. */
bsq_precision bsq_context_precision(const bsq_context *ctx);

/* ------------------------------------------------------------------------ */
/* Tokens                                                                    */

typedef struct bsq_token_layout {
    int L;
    int batch;
    int frames;
    int tiles_y, tiles_x;  /* 1 x 1 when the input has the model's size */
    int grid_h, grid_w;    /* tokens per tile: model size / patch size */
    int height, width;     /* pixel size the tokens decode to */
    size_t count;          /* batch*frames*tiles_y*tiles_x*grid_h*grid_w */
} bsq_token_layout;

typedef struct bsq_tokens bsq_tokens;

/* An empty token array of a given layout (count is computed), for decoding
 * tokens that come from elsewhere. */
bsq_status bsq_tokens_create(const bsq_token_layout *layout, bsq_tokens **out,
                             bsq_error *err);
void bsq_tokens_free(bsq_tokens *tokens);
const bsq_token_layout *bsq_tokens_layout(const bsq_tokens *tokens);
/* The MSB-first integer index of every token (layout.count entries). */
const uint64_t *bsq_tokens_indices(const bsq_tokens *tokens);
uint64_t *bsq_tokens_indices_mut(bsq_tokens *tokens);
/* Bits as 0/1 bytes, count * L of them. */
void bsq_tokens_get_bits(const bsq_tokens *tokens, uint8_t *bits);
bsq_status bsq_tokens_set_bits(bsq_tokens *tokens, const uint8_t *bits,
                               bsq_error *err);
/* Group indices: each token split into L/g groups of g consecutive
 * dimensions, each an MSB-first integer in [0, 2^g); count * (L/g) values.
 * g must divide L and be at most 32. */
bsq_status bsq_tokens_get_groups(const bsq_tokens *tokens, int g,
                                 uint32_t *groups, bsq_error *err);
bsq_status bsq_tokens_set_groups(bsq_tokens *tokens, int g,
                                 const uint32_t *groups, bsq_error *err);

/* ------------------------------------------------------------------------ */
/* Encode and decode whole images and clips                                  */

/* pixels [batch][3][frames][height][width] in [-1,1]. Any height and width:
 * inputs that are not the model's size are split into tiles of the model's
 * size (edge padding) and the layout records the tiling. 1 <= frames <=
 * num_frames. */
bsq_status bsq_encode(bsq_context *ctx, const float *pixels, int batch,
                      int frames, int height, int width, bsq_tokens **out,
                      bsq_error *err);
/* The continuous, L2-normalised latents z before binarisation, in token
 * order, count * L floats; optional (NULL: not returned). */
bsq_status bsq_encode_latents(bsq_context *ctx, const float *pixels,
                              int batch, int frames, int height, int width,
                              bsq_tokens **out, float *z, bsq_error *err);
/* pixels receives [batch][3][frames][height][width], clamped to [-1,1]. */
bsq_status bsq_decode(bsq_context *ctx, const bsq_tokens *tokens,
                      float *pixels, bsq_error *err);

/* Interleaved RGB24 images (one frame), `stride` bytes per row. */
bsq_status bsq_encode_rgb8(bsq_context *ctx, const uint8_t *rgb, int width,
                           int height, size_t stride, bsq_tokens **out,
                           bsq_error *err);
bsq_status bsq_decode_rgb8(bsq_context *ctx, const bsq_tokens *tokens,
                           uint8_t *rgb, size_t stride, bsq_error *err);

/* The size that the tiles of a width x height picture cover: along each
 * axis the model's tile size when the picture fits in one tile, else the
 * span of the tiles bsq_encode would place there (at most 65535; the
 * picture's own size where the span would pass that). A picture resampled
 * to this size is coded with as many tokens as at its own size, each token
 * covering fewer of its pixels, so it reconstructs better at the same rate
 * (bsqcodec encode does this unless told not to). */
bsq_status bsq_tile_cover_size(const bsq_config *config, int width, int height,
                               int *cover_width, int *cover_height, bsq_error *err);

/* Interleaved RGB24 <-> planar float [3][height][width] in [-1, 1] (x =
 * rgb8 / 127.5 - 1; back with rounding and clamping). */
void bsq_rgb8_to_planar(const uint8_t *rgb, int width, int height, size_t stride, float *planar);
void bsq_planar_to_rgb8(const float *planar, int width, int height, uint8_t *rgb, size_t stride);

/* ------------------------------------------------------------------------ */
/* Streaming video: one frame at a time, with a key/value cache. Exact for
 * block-causal models (equal to encoding the whole clip). After num_frames
 * frames a new block starts by itself.                                      */

typedef struct bsq_stream bsq_stream;
typedef enum bsq_stream_mode { BSQ_STREAM_ENCODE = 0, BSQ_STREAM_DECODE = 1 } bsq_stream_mode;

bsq_status bsq_stream_create(bsq_context *ctx, bsq_stream_mode mode,
                             int height, int width, bsq_stream **out,
                             bsq_error *err);
void bsq_stream_destroy(bsq_stream *stream);
/* Starts a new block-causal block at the next frame. */
void bsq_stream_restart(bsq_stream *stream);
/* Index of the next frame inside the current block (0..num_frames-1). */
int bsq_stream_position(const bsq_stream *stream);
/* frame [3][height][width] in [-1,1] -> the frame's tokens (frames = 1). */
bsq_status bsq_stream_encode(bsq_stream *stream, const float *frame,
                             bsq_tokens **out, bsq_error *err);
/* One frame's tokens -> frame [3][height][width]. */
bsq_status bsq_stream_decode(bsq_stream *stream, const bsq_tokens *tokens,
                             float *frame, bsq_error *err);
/* The same for interleaved RGB24 frames (rows `stride` bytes apart, at
 * least 3 * width): the results of bsq_rgb8_to_planar and
 * bsq_planar_to_rgb8 around the calls above, converted on the GPU when the
 * context has one (frames cross the bus as bytes). */
bsq_status bsq_stream_encode_rgb8(bsq_stream *stream, const uint8_t *rgb,
                                  size_t stride, bsq_tokens **out,
                                  bsq_error *err);
bsq_status bsq_stream_decode_rgb8(bsq_stream *stream, const bsq_tokens *tokens,
                                  uint8_t *rgb, size_t stride, bsq_error *err);

#ifdef __cplusplus
}
#endif
#endif
