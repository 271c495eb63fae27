/* The BSQ-ViT forward pass, written once against the backend operations
 * table (spec §1-§4). Inputs are sequences at the model's grid size; tiling
 * and token ordering are the callers' business (encode.c, stream.c). */
#ifndef BSQ_GRAPH_H
#define BSQ_GRAPH_H

#include "context.h"

/* Key/value cache of one stack for streaming: per layer, K and V of
 * `seqs` sequences with room for cap_frames frames, in backend memory. */
typedef struct bsq_kv {
    int layers, seqs, cap_frames;
    float *block; /* one allocation: layers * 2 * seqs * cap_frames * P * D */
} bsq_kv;

bsq_status bsq_kv_init(bsq_context *ctx, bsq_kv *kv, int seqs, bsq_error *err);
void bsq_kv_free(bsq_context *ctx, bsq_kv *kv);

/* Optional host copies of intermediate tensors (for parity tests), each in
 * engine order [seq][frame][token][...]. */
typedef struct bsq_taps {
    float *encoder_out, *pre_quant, *decoder_out; /* decoder_out: pixels before the clamp */
} bsq_taps;

/* pix: host [seqs][3][frames][H][W] at the model's size. Frames t0 ..
 * t0+frames-1 of a block (t0 > 0 needs a cache holding frames 0..t0-1).
 * Writes idx [seqs*frames*P] and, when not NULL, z [.. * L]. */
bsq_status bsq_graph_encode(bsq_context *ctx, const float *pix, int seqs, int frames, int t0,
                            bsq_kv *kv, uint64_t *idx, float *z, const bsq_taps *taps,
                            bsq_error *err);
/* The inverse: idx -> host pixels [seqs][3][frames][H][W], clamped. */
bsq_status bsq_graph_decode(bsq_context *ctx, const uint64_t *idx, int seqs, int frames, int t0,
                            bsq_kv *kv, float *pix, const bsq_taps *taps, bsq_error *err);

/* Tiles cut from (encode) or blended into (decode) whole images held by the
 * backend, instead of tiles crossing to the host: sequences s0 .. s0+seqs-1
 * of `grid`. An encode first uploads upload_count floats from upload_src to
 * img + upload_off (the images this call is first to need; 0: none). */
typedef struct bsq_tile_ref {
    float *img;
    bsq_tile_grid grid;
    int s0;
    const float *upload_src;
    size_t upload_off, upload_count;
} bsq_tile_ref;

/* One frame at t0 (streaming), as bsq_graph_encode / bsq_graph_decode, with
 * pix and idx from bsq_context_host_alloc: the backend may record the
 * work and replay it (the decode's pix may be any host memory). With a
 * tile reference, the pixels stay on the backend (pix unused). */
bsq_status bsq_graph_encode_pinned(bsq_context *ctx, const float *pix, const bsq_tile_ref *src,
                                   int seqs, int t0, bsq_kv *kv, uint64_t *idx, bsq_error *err);
bsq_status bsq_graph_decode_pinned(bsq_context *ctx, const uint64_t *idx, int seqs, int t0,
                                   bsq_kv *kv, float *pix, const bsq_tile_ref *dst, bsq_error *err);

/* A pipeline of chunks (whole clips from frame 0, no cache): queue a chunk
 * in slot 0 or 1, then bsq_graph_finish(slot) before its host buffers are
 * reused or read. pix, idx and z must be the context's host buffers
 * (bsq_context_host), which the backend may copy from and to while the
 * other slot computes, and whose work it may record and replay. With a
 * tile reference the pixels stay on the backend (pix unused). On a backend
 * that does not queue, the chunk runs when queued. */
bsq_status bsq_graph_encode_queue(bsq_context *ctx, int slot, const float *pix,
                                  const bsq_tile_ref *src, int seqs, int frames, uint64_t *idx,
                                  float *z, bsq_error *err);
bsq_status bsq_graph_decode_queue(bsq_context *ctx, int slot, const uint64_t *idx, int seqs,
                                  int frames, float *pix, const bsq_tile_ref *dst, bsq_error *err);
/* Waits for the chunk of `slot`; reports the first failure since the last report. */
bsq_status bsq_graph_finish(bsq_context *ctx, int slot, bsq_error *err);
/* Slots worth using: 2 where the backend queues work, else 1. */
int bsq_graph_slots(const bsq_context *ctx);

/* Sequences per graph call that keep the workspace moderate. */
int bsq_graph_chunk(const bsq_context *ctx, int frames);

#endif
