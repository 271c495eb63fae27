#include "model_config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "json.h"

static int get_int(const json_value *root, const char *key, int *out)
{
    const json_value *v = json_get(root, key);
    if (!v || v->type != JSON_NUMBER || v->number != floor(v->number) || fabs(v->number) > 1e9)
        return 0;
    *out = (int)v->number;
    return 1;
}

bsq_status bsq_config_parse_json(const char *json, bsq_config *cfg, bsq_error *err)
{
    json_value *root = NULL;
    bsq_status st = json_parse(json, strlen(json), &root, err);
    if (st != BSQ_OK)
        return bsq_fail_prefix(err, st, "model configuration");
    if (root->type != JSON_OBJECT) {
        json_free(root);
        return bsq_fail(err, BSQ_ERR_MODEL, "model configuration is not a JSON object");
    }
    get_int(root, "image_height", &cfg->image_height);
    get_int(root, "image_width", &cfg->image_width);
    get_int(root, "patch_size", &cfg->patch_size);
    get_int(root, "width", &cfg->width);
    get_int(root, "layers", &cfg->layers);
    get_int(root, "heads", &cfg->heads);
    get_int(root, "decoder_ffn_dim", &cfg->decoder_ffn_dim);
    get_int(root, "L", &cfg->L);
    get_int(root, "group_size", &cfg->group_size);
    get_int(root, "num_frames", &cfg->num_frames);
    int size;
    if (get_int(root, "image_size", &size) && !cfg->image_height && !cfg->image_width)
        cfg->image_height = cfg->image_width = size;
    const json_value *v = json_get(root, "mlp_ratio");
    if (v && v->type == JSON_NUMBER && cfg->width > 0 && cfg->width <= 65536 && !cfg->mlp_dim) {
        if (!(v->number > 0 && v->number <= 1024))
            st = bsq_fail(err, BSQ_ERR_MODEL, "model configuration: mlp_ratio %g out of range",
                          v->number);
        else
            cfg->mlp_dim = (int)lround(v->number * cfg->width);
    }
    get_int(root, "mlp_dim", &cfg->mlp_dim);
    if ((v = json_get(root, "layer_norm_eps")) && v->type == JSON_NUMBER) {
        if (!(v->number > 0 && v->number < 1))
            st = bsq_fail(err, BSQ_ERR_MODEL, "model configuration: layer_norm_eps %g out of range",
                          v->number);
        else
            cfg->layer_norm_eps = (float)v->number;
    }
    if (st == BSQ_OK && (v = json_get(root, "mask")) && v->type == JSON_STRING) {
        if (strcmp(v->string, "block-causal") == 0 || strcmp(v->string, "causal") == 0)
            cfg->block_causal = 1;
        else if (strcmp(v->string, "none") == 0 || strcmp(v->string, "full") == 0)
            cfg->block_causal = 0;
        else
            st = bsq_fail(err, BSQ_ERR_MODEL, "model configuration: unknown mask \"%s\"", v->string);
    }
    json_free(root);
    return st;
}

char *bsq_config_to_json(const bsq_config *c)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    if (!f)
        return NULL;
    fprintf(f,
            "{\"image_height\": %d, \"image_width\": %d, \"patch_size\": %d, \"width\": %d, "
            "\"layers\": %d, \"heads\": %d, \"mlp_ratio\": %.9g, \"decoder_ffn_dim\": %d, "
            "\"L\": %d, \"group_size\": %d, \"num_frames\": %d, \"mask\": \"%s\", "
            "\"layer_norm_eps\": %.9g}",
            c->image_height, c->image_width, c->patch_size, c->width, c->layers, c->heads,
            (double)c->mlp_dim / c->width, c->decoder_ffn_dim, c->L, c->group_size, c->num_frames,
            c->block_causal ? "block-causal" : "none", (double)c->layer_norm_eps);
    if (fclose(f) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

static int dim(const bsq_tensorset *ts, const char *name, int axis, int ndim)
{
    const bsq_tensor *t = bsq_tensorset_find(ts, name);
    if (!t || t->ndim != ndim || t->shape[axis] > 1 << 30)
        return 0;
    return (int)t->shape[axis];
}

bsq_status bsq_config_complete(bsq_config *c, const bsq_tensorset *ts, bsq_error *err)
{
    if (!c->width)
        c->width = dim(ts, "encoder.conv1.weight", 0, 2);
    if (!c->patch_size) {
        int in = dim(ts, "encoder.conv1.weight", 1, 2);
        int p = (int)lround(sqrt(in / 3.0));
        if (p > 0 && 3 * p * p == in)
            c->patch_size = p;
    }
    if (!c->layers) {
        char name[96];
        int n = 0;
        for (;;) {
            snprintf(name, sizeof name, "encoder.transformer.resblocks.%d.ln_1.weight", n);
            if (!bsq_tensorset_find(ts, name))
                break;
            n++;
        }
        c->layers = n;
    }
    if (!c->mlp_dim)
        c->mlp_dim = dim(ts, "encoder.transformer.resblocks.0.mlp.c_fc.weight", 0, 2);
    if (!c->decoder_ffn_dim)
        c->decoder_ffn_dim = dim(ts, "decoder.ffn.0.weight", 0, 2);
    if (!c->L)
        c->L = dim(ts, "quant_embed.weight", 0, 2);
    if (!c->num_frames) {
        int t = dim(ts, "encoder.temporal_positional_embedding", 0, 2);
        c->num_frames = t ? t : 1;
    }
    if ((!c->image_height || !c->image_width) && c->patch_size) {
        /* a square grid is the only split the position table's length
         * implies; other aspect ratios must be given */
        int n = dim(ts, "encoder.positional_embedding", 0, 2);
        int g = (int)lround(sqrt((double)n));
        if (g * g == n && n > 0 && !c->image_height && !c->image_width)
            c->image_height = c->image_width = g * c->patch_size;
    }
    if (!c->group_size)
        c->group_size = c->L;
    if (c->layer_norm_eps == 0)
        c->layer_norm_eps = 1e-5f;
    if (!c->heads)
        return bsq_fail(err, BSQ_ERR_MODEL,
                        "the number of attention heads is not recorded in the model and cannot be "
                        "derived from its shapes; give it (bsqcodec import --heads N)");
    if (!c->image_height || !c->image_width)
        return bsq_fail(err, BSQ_ERR_MODEL,
                        "the image size is not recorded and the position table is not square; "
                        "give image_height and image_width");
    return BSQ_OK;
}

bsq_status bsq_config_validate(const bsq_config *c, bsq_error *err)
{
    if (c->patch_size < 1 || c->patch_size > 64)
        return bsq_fail(err, BSQ_ERR_MODEL, "patch_size %d out of range 1..64", c->patch_size);
    if (c->image_height < 1 || c->image_width < 1 || c->image_height % c->patch_size ||
        c->image_width % c->patch_size || c->image_height > 8192 || c->image_width > 8192)
        return bsq_fail(err, BSQ_ERR_MODEL, "image size %dx%d is not a multiple of patch %d",
                        c->image_width, c->image_height, c->patch_size);
    if (c->width < 1 || c->width > 65536 || c->heads < 1 || c->width % c->heads)
        return bsq_fail(err, BSQ_ERR_MODEL, "width %d is not divisible into %d heads", c->width,
                        c->heads);
    if (c->layers < 0 || c->layers > 1024)
        return bsq_fail(err, BSQ_ERR_MODEL, "layers %d out of range", c->layers);
    if (c->mlp_dim < 1 || c->mlp_dim > 1 << 20 || c->decoder_ffn_dim < 1 ||
        c->decoder_ffn_dim > 1 << 20)
        return bsq_fail(err, BSQ_ERR_MODEL, "MLP sizes %d / %d out of range", c->mlp_dim,
                        c->decoder_ffn_dim);
    if (c->L < 1 || c->L > 64)
        return bsq_fail(err, BSQ_ERR_MODEL, "L = %d bits per token (1..64 supported)", c->L);
    if (c->group_size < 1 || c->L % c->group_size)
        return bsq_fail(err, BSQ_ERR_MODEL, "group_size %d does not divide L = %d", c->group_size,
                        c->L);
    if (c->num_frames < 1 || c->num_frames > 4096)
        return bsq_fail(err, BSQ_ERR_MODEL, "num_frames %d out of range", c->num_frames);
    if (!(c->layer_norm_eps > 0 && c->layer_norm_eps < 1))
        return bsq_fail(err, BSQ_ERR_MODEL, "layer_norm_eps %g out of range",
                        (double)c->layer_norm_eps);
    return BSQ_OK;
}
