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
    float *ws;       /* workspace, ws_len floats */
    size_t ws_len;
    char device[32];
    void *host[3];      /* host scratch reused across calls (no page faults per call) */
    size_t host_len[3];
};

/* A context on a backend already open; takes the backend (destroyed on
 * failure too). For tests that pick a backend themselves. */
bsq_status bsq_context_create_on(const bsq_model *model, bsq_backend *be, bsq_context **out,
                                 bsq_error *err);

/* Host scratch buffer `slot` (0..2) of at least `bytes`, kept by the
 * context; NULL when out of memory. */
void *bsq_context_host(bsq_context *ctx, int slot, size_t bytes);

/* Ensures the workspace holds at least `count` floats. */
bsq_status bsq_context_workspace(bsq_context *ctx, size_t count, float **out, bsq_error *err);

#endif
