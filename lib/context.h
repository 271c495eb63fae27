/* A context: one backend instance, the model's weights as that backend sees
 * them, and a growable workspace. */
#ifndef BSQ_CONTEXT_H
#define BSQ_CONTEXT_H

#include "backend.h"
#include "model.h"

struct bsq_context {
    const bsq_model *model;
    bsq_backend *be;
    float *weights;  /* backend copy of the parameter block (NULL: host) */
    bsq_model_w w;   /* the weights the graph reads */
    float *ws[2];    /* workspaces of the two pipeline slots, ws_len floats */
    size_t ws_len[2];
    char device[32];
    void *host[6];      /* host scratch reused across calls (no page faults per call) */
    size_t host_len[6];
    size_t chunk_rows;  /* tokens per graph call; 0: the backend's choice (tests set it) */
    float *images;      /* whole images on the backend (device-side tiling), images_len floats */
    size_t images_len;
};

/* The host scratch buffers: three kinds, one set per pipeline slot. */
enum { BSQ_HOST_PIX = 0, BSQ_HOST_IDX = 1, BSQ_HOST_AUX = 2 };
#define BSQ_HOST(kind, slot) ((kind) + 3 * (slot))

/* A context on a backend already open; takes the backend (destroyed on
 * failure too). For tests that pick a backend themselves. */
bsq_status bsq_context_create_on(const bsq_model *model, bsq_backend *be, bsq_context **out,
                                 bsq_error *err);

/* Host scratch buffer `which` (BSQ_HOST(kind, slot)) of at least `bytes`,
 * kept by the context (pinned where the backend offers it); NULL when out
 * of memory. */
void *bsq_context_host(bsq_context *ctx, int which, size_t bytes);

/* Host memory the backend copies from and to fastest (pinned on a GPU),
 * owned by the caller; NULL when out of memory. */
void *bsq_context_host_alloc(bsq_context *ctx, size_t bytes);
void bsq_context_host_free(bsq_context *ctx, void *p);

/* Backend memory for whole images of `count` floats, when the backend cuts
 * and blends tiles itself (not host memory); NULL otherwise or when it
 * cannot be had (callers then tile on the host). */
float *bsq_context_images(bsq_context *ctx, size_t count);

/* Ensures the workspace of pipeline slot `slot` (0 or 1) holds at least
 * `count` floats. */
bsq_status bsq_context_workspace(bsq_context *ctx, int slot, size_t count, float **out,
                                 bsq_error *err);

#endif
