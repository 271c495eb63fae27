#include "tokens.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

bsq_status bsq_layout_check(bsq_token_layout *l, bsq_error *err)
{
    if (l->L < 1 || l->L > 64 || l->batch < 1 || l->frames < 1 || l->tiles_y < 1 ||
        l->tiles_x < 1 || l->grid_h < 1 || l->grid_w < 1 || l->height < 1 || l->width < 1)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "token layout has a zero or negative field");
    double n = (double)l->batch * l->frames * l->tiles_y * l->tiles_x * l->grid_h * l->grid_w;
    if (n > (double)(SIZE_MAX / 64))
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "token layout too large");
    l->count = (size_t)n;
    return BSQ_OK;
}

bsq_status bsq_tokens_create(const bsq_token_layout *layout, bsq_tokens **out, bsq_error *err)
{
    if (!layout || !out)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_tokens_create: NULL argument");
    bsq_token_layout l = *layout;
    bsq_status st = bsq_layout_check(&l, err);
    if (st != BSQ_OK)
        return st;
    bsq_tokens *t = calloc(1, sizeof *t);
    if (!t || !(t->idx = calloc(l.count, sizeof *t->idx))) {
        free(t);
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory for %zu tokens", l.count);
    }
    t->layout = l;
    *out = t;
    return BSQ_OK;
}

void bsq_tokens_free(bsq_tokens *t)
{
    if (!t)
        return;
    free(t->idx);
    free(t);
}

const bsq_token_layout *bsq_tokens_layout(const bsq_tokens *t) { return &t->layout; }
const uint64_t *bsq_tokens_indices(const bsq_tokens *t) { return t->idx; }
uint64_t *bsq_tokens_indices_mut(bsq_tokens *t) { return t->idx; }

void bsq_tokens_get_bits(const bsq_tokens *t, uint8_t *bits)
{
    const int L = t->layout.L;
    for (size_t i = 0; i < t->layout.count; i++)
        for (int d = 0; d < L; d++)
            bits[i * L + d] = (uint8_t)((t->idx[i] >> (L - 1 - d)) & 1);
}

bsq_status bsq_tokens_set_bits(bsq_tokens *t, const uint8_t *bits, bsq_error *err)
{
    const int L = t->layout.L;
    for (size_t i = 0; i < t->layout.count; i++) {
        uint64_t v = 0;
        for (int d = 0; d < L; d++) {
            if (bits[i * L + d] > 1)
                return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bit %zu is %u, not 0 or 1",
                                i * L + d, bits[i * L + d]);
            v = v << 1 | bits[i * L + d];
        }
        t->idx[i] = v;
    }
    return BSQ_OK;
}

static bsq_status check_group(const bsq_tokens *t, int g, bsq_error *err)
{
    if (g < 1 || g > 32 || t->layout.L % g)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "group size %d must divide L = %d and be at most 32", g, t->layout.L);
    return BSQ_OK;
}

bsq_status bsq_tokens_get_groups(const bsq_tokens *t, int g, uint32_t *groups, bsq_error *err)
{
    bsq_status st = check_group(t, g, err);
    if (st != BSQ_OK)
        return st;
    const int L = t->layout.L, n = L / g;
    const uint64_t mask = ((uint64_t)1 << g) - 1;
    for (size_t i = 0; i < t->layout.count; i++)
        for (int j = 0; j < n; j++) /* group j holds dimensions j*g .. j*g+g-1 */
            groups[i * n + j] = (uint32_t)((t->idx[i] >> (L - (j + 1) * g)) & mask);
    return BSQ_OK;
}

bsq_status bsq_tokens_set_groups(bsq_tokens *t, int g, const uint32_t *groups, bsq_error *err)
{
    bsq_status st = check_group(t, g, err);
    if (st != BSQ_OK)
        return st;
    const int L = t->layout.L, n = L / g;
    for (size_t i = 0; i < t->layout.count; i++) {
        uint64_t v = 0;
        for (int j = 0; j < n; j++) {
            uint32_t x = groups[i * n + j];
            if (g < 32 && x >> g)
                return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                                "group index %u at %zu does not fit %d bits", x, i * n + j, g);
            v = v << g | x;
        }
        t->idx[i] = v;
    }
    return BSQ_OK;
}
