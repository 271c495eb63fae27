#include "context.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"
#include "error.h"

bsq_status bsq_context_create(const bsq_model *model, const bsq_context_options *options,
                              bsq_context **out, bsq_error *err)
{
    if (!model || !out)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_context_create: NULL argument");
    bsq_backend *be;
    bsq_status st = bsq_backend_open(options ? options->device : NULL, options ? options->threads : 0,
                                     options ? options->precision : BSQ_PRECISION_AUTO, &be, err);
    if (st != BSQ_OK)
        return st;
    return bsq_context_create_on(model, be, out, err);
}

bsq_status bsq_context_create_on(const bsq_model *model, bsq_backend *be, bsq_context **out,
                                 bsq_error *err)
{
    if (model->cfg.width / model->cfg.heads > BSQ_ATT_MAX_HEAD_DIM) {
        be->ops->destroy(be);
        return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "head dimension %d exceeds %d",
                        model->cfg.width / model->cfg.heads, BSQ_ATT_MAX_HEAD_DIM);
    }
    bsq_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        be->ops->destroy(be);
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    }
    ctx->model = model;
    ctx->be = be;
    const float *base = model->data;
    if (!ctx->be->ops->host_memory) {
        ctx->weights = ctx->be->ops->alloc(ctx->be, model->total);
        if (!ctx->weights) {
            bsq_context_destroy(ctx);
            return bsq_fail(err, BSQ_ERR_NOMEM, "cannot allocate %zu MB of device memory for weights",
                            model->total * 4 >> 20);
        }
        ctx->be->ops->upload(ctx->be, ctx->weights, model->data, model->total);
        base = ctx->weights;
    }
    ctx->be->ops->set_weights(ctx->be, base, model->total);
    bsq_status st = ctx->be->ops->sync(ctx->be, err);
    if (st != BSQ_OK || (st = bsq_model_bind(model, base, &ctx->w, err)) != BSQ_OK) {
        bsq_context_destroy(ctx);
        return st;
    }
    snprintf(ctx->device, sizeof ctx->device, "%s", ctx->be->ops->name);
    *out = ctx;
    return BSQ_OK;
}

void *bsq_context_host_alloc(bsq_context *ctx, size_t bytes)
{
    const bsq_backend_ops *op = ctx->be->ops;
    return op->host_alloc ? op->host_alloc(ctx->be, bytes ? bytes : 1) : malloc(bytes ? bytes : 1);
}

void bsq_context_host_free(bsq_context *ctx, void *p)
{
    if (p && ctx->be && ctx->be->ops->host_free)
        ctx->be->ops->host_free(ctx->be, p);
    else
        free(p);
}

void bsq_context_destroy(bsq_context *ctx)
{
    if (!ctx)
        return;
    if (ctx->be) {
        for (int i = 0; i < 2; i++)
            if (ctx->ws[i])
                ctx->be->ops->free(ctx->be, ctx->ws[i]);
        if (ctx->weights)
            ctx->be->ops->free(ctx->be, ctx->weights);
        if (ctx->images)
            ctx->be->ops->free(ctx->be, ctx->images);
    }
    bsq_model_w_free(&ctx->w);
    for (int i = 0; i < 6; i++)
        bsq_context_host_free(ctx, ctx->host[i]);
    if (ctx->be)
        ctx->be->ops->destroy(ctx->be);
    free(ctx);
}

void *bsq_context_host(bsq_context *ctx, int which, size_t bytes)
{
    if (bytes > ctx->host_len[which]) {
        bsq_context_host_free(ctx, ctx->host[which]);
        ctx->host[which] = bsq_context_host_alloc(ctx, bytes);
        ctx->host_len[which] = ctx->host[which] ? bytes : 0;
    }
    return ctx->host[which];
}

const char *bsq_context_device(const bsq_context *ctx) { return ctx->device; }

bsq_precision bsq_context_precision(const bsq_context *ctx)
{
    return ctx->be->ops->fp32 ? BSQ_PRECISION_FP32 : BSQ_PRECISION_BF16;
}

bsq_status bsq_context_workspace(bsq_context *ctx, int slot, size_t count, float **out,
                                 bsq_error *err)
{
    if (count > ctx->ws_len[slot]) {
        if (ctx->ws[slot])
            ctx->be->ops->free(ctx->be, ctx->ws[slot]);
        ctx->ws[slot] = ctx->be->ops->alloc(ctx->be, count);
        ctx->ws_len[slot] = ctx->ws[slot] ? count : 0;
        if (!ctx->ws[slot])
            return bsq_fail(err, BSQ_ERR_NOMEM, "cannot allocate a %zu MB workspace", count * 4 >> 20);
    }
    *out = ctx->ws[slot];
    return BSQ_OK;
}

float *bsq_context_images(bsq_context *ctx, size_t count)
{
    const bsq_backend_ops *op = ctx->be->ops;
    if (op->host_memory || !op->tile_extract || !op->tile_blend || !op->zero)
        return NULL;
    if (count > ctx->images_len) {
        if (ctx->images)
            op->free(ctx->be, ctx->images);
        ctx->images = op->alloc(ctx->be, count);
        ctx->images_len = ctx->images ? count : 0;
    }
    return ctx->images;
}
