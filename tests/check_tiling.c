/* Inputs of any size: tile placement, layouts, and tiled encode/decode
 * agreeing with encoding each tile on its own. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bsq.h"
#include "testutil.h"
#include "tiling.h"

START_TEST(test_tile_placement_covers)
{
    const int sizes[] = {1, 7, 31, 32, 33, 63, 64, 65, 100, 403, 721, 1080, 1920};
    const int tiles[] = {16, 32, 48, 256};
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++)
        for (size_t b = 0; b < sizeof tiles / sizeof tiles[0]; b++) {
            int total = sizes[a], size = tiles[b], n = bsq_tile_count(total, size);
            int ov = bsq_tile_overlap(size);
            ck_assert_int_ge(n, total <= size ? 1 : (total + size - 1) / size);
            ck_assert_int_eq(bsq_tile_pos(0, n, total, size), 0);
            if (total >= size)
                ck_assert_int_eq(bsq_tile_pos(n - 1, n, total, size) + size, total);
            for (int i = 1; i < n; i++) { /* monotone, overlapping by at least ov */
                int p0 = bsq_tile_pos(i - 1, n, total, size), p1 = bsq_tile_pos(i, n, total, size);
                ck_assert_int_gt(p1, p0);
                ck_assert_msg(p0 + size - p1 >= ov - 1, "total %d tile %d: overlap %d < %d", total,
                              size, p0 + size - p1, ov);
            }
            if (n > 1) /* and no more tiles than that needs: n - 1 would not reach */
                ck_assert_int_lt((n - 2) * (size - ov) + size, total);
            float *w = malloc((size_t)total * sizeof(float));
            bsq_tile_weight_map(w, 1, total, 1, size);
            for (int x = 0; x < total; x++) /* every pixel is covered with weight */
                ck_assert_msg(w[x] > 0.05f && w[x] < 2.0f, "total %d tile %d x %d weight %g", total,
                              size, x, w[x]);
            free(w);
        }
}
END_TEST

static bsq_model *open_model(const char *name)
{
    char *dir = tu_path(tu_data_dir(), "bsqvit-parity");
    char *path = tu_path(dir, name);
    bsq_model *m;
    bsq_error err;
    ck_assert_msg(bsq_model_open(path, NULL, &m, &err) == BSQ_OK, "%s", err.message);
    free(path);
    free(dir);
    return m;
}

/* A WxH image (not the model's 48x32) -> the layout records the tiling, each
 * tile's tokens equal encoding that tile alone, and decoding gives an image
 * of the input size whose pixels away from overlaps equal the tile's own. */
static void tiled_roundtrip(int W, int H)
{
    bsq_model *m = open_model("img32x48_w64_l2_L36g4.weights.safetensors");
    const bsq_config *c = bsq_model_config(m);
    const int th = c->image_height, tw = c->image_width;
    bsq_context_options o = {.threads = 2, .device = "cpu"};
    bsq_context *ctx;
    bsq_error err;
    ck_assert_int_eq(bsq_context_create(m, &o, &ctx, &err), BSQ_OK);
    size_t plane = (size_t)W * H;
    float *img = malloc(3 * plane * sizeof(float));
    tu_fill_uniform(img, 3 * plane, (uint64_t)W * 1000 + H, -1, 1);
    bsq_tokens *tok;
    ck_assert_msg(bsq_encode(ctx, img, 1, 1, H, W, &tok, &err) == BSQ_OK, "%s", err.message);
    const bsq_token_layout *l = bsq_tokens_layout(tok);
    int ny = bsq_tile_count(H, th), nx = bsq_tile_count(W, tw);
    ck_assert_int_eq(l->tiles_y, ny);
    ck_assert_int_eq(l->tiles_x, nx);
    ck_assert_int_eq(l->width, W);
    ck_assert_int_eq(l->height, H);
    size_t P = (size_t)l->grid_h * l->grid_w;
    ck_assert_int_eq(l->count, (size_t)ny * nx * P);

    float *tile = malloc((size_t)3 * th * tw * sizeof(float));
    for (int iy = 0; iy < ny; iy++)
        for (int ix = 0; ix < nx; ix++) {
            bsq_tile_extract(img, 1, H, W, bsq_tile_pos(iy, ny, H, th), bsq_tile_pos(ix, nx, W, tw),
                             th, tw, tile);
            bsq_tokens *one;
            ck_assert_int_eq(bsq_encode(ctx, tile, 1, 1, th, tw, &one, &err), BSQ_OK);
            ck_assert_msg(memcmp(bsq_tokens_indices(one),
                                 bsq_tokens_indices(tok) + ((size_t)iy * nx + ix) * P,
                                 P * sizeof(uint64_t)) == 0,
                          "%dx%d: tile (%d,%d) tokens differ from encoding it alone", W, H, iy, ix);
            bsq_tokens_free(one);
        }

    float *out = malloc(3 * plane * sizeof(float));
    ck_assert_msg(bsq_decode(ctx, tok, out, &err) == BSQ_OK, "%s", err.message);
    for (size_t i = 0; i < 3 * plane; i++)
        ck_assert(out[i] >= -1.0f && out[i] <= 1.0f);
    /* top-left pixel belongs to tile (0,0) alone: equal to that tile's decode */
    bsq_tile_extract(img, 1, H, W, 0, 0, th, tw, tile);
    bsq_tokens *first;
    ck_assert_int_eq(bsq_encode(ctx, tile, 1, 1, th, tw, &first, &err), BSQ_OK);
    float *dec = malloc((size_t)3 * th * tw * sizeof(float));
    ck_assert_int_eq(bsq_decode(ctx, first, dec, &err), BSQ_OK);
    ck_assert(fabsf(out[0] - dec[0]) < 1e-6f);

    /* rgb8 calls agree with the float path */
    uint8_t *rgb = malloc(plane * 3), *back = malloc(plane * 3);
    for (size_t i = 0; i < plane; i++)
        for (int ch = 0; ch < 3; ch++)
            rgb[i * 3 + ch] = (uint8_t)lrintf((img[ch * plane + i] + 1.0f) * 127.5f);
    bsq_tokens *t8;
    ck_assert_int_eq(bsq_encode_rgb8(ctx, rgb, W, H, (size_t)W * 3, &t8, &err), BSQ_OK);
    ck_assert_int_eq(bsq_tokens_layout(t8)->count, l->count);
    ck_assert_int_eq(bsq_decode_rgb8(ctx, t8, back, (size_t)W * 3, &err), BSQ_OK);
    bsq_tokens_free(t8);

    bsq_tokens_free(first);
    bsq_tokens_free(tok);
    free(rgb);
    free(back);
    free(dec);
    free(out);
    free(tile);
    free(img);
    bsq_context_destroy(ctx);
    bsq_model_close(m);
}

/* The cover size: as many tiles as the picture's own size needs, and one
 * pixel more would need another row or column of them. */
START_TEST(test_tile_cover_size)
{
    bsq_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.image_width = 128;
    cfg.image_height = 32;
    bsq_error err;
    int cw, ch;
    ck_assert_int_eq(bsq_tile_cover_size(&cfg, 640, 360, &cw, &ch, &err), BSQ_OK);
    ck_assert_int_eq(cw, 728); /* 6 tiles of 128 overlapping by 8 */
    ck_assert_int_eq(ch, 362); /* 12 tiles of 32 overlapping by 2 */
    ck_assert_int_eq(bsq_tile_cover_size(&cfg, 100, 7, &cw, &ch, &err), BSQ_OK);
    ck_assert_int_eq(cw, 128); /* one tile: its size */
    ck_assert_int_eq(ch, 32);
    ck_assert_int_eq(bsq_tile_cover_size(&cfg, 65535, 65535, &cw, &ch, &err), BSQ_OK);
    ck_assert_int_eq(cw, 65535); /* the span would pass 65535: the size itself */
    ck_assert_int_le(ch, 65535);
    const int sizes[] = {8, 32, 128, 224};
    for (int k = 0; k < 4; k++) {
        cfg.image_width = cfg.image_height = sizes[k];
        for (int total = 1; total <= 3000; total++) {
            ck_assert_int_eq(bsq_tile_cover_size(&cfg, total, total, &cw, &ch, &err), BSQ_OK);
            ck_assert_int_eq(cw, ch);
            ck_assert_int_ge(cw, total);
            ck_assert_int_ge(cw, sizes[k]);
            ck_assert_int_eq(bsq_tile_count(cw, sizes[k]), bsq_tile_count(total, sizes[k]));
            ck_assert_int_eq(bsq_tile_count(cw + 1, sizes[k]), bsq_tile_count(total, sizes[k]) + 1);
        }
    }
    ck_assert_int_eq(bsq_tile_cover_size(&cfg, 0, 5, &cw, &ch, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(bsq_tile_cover_size(&cfg, 5, 70000, &cw, &ch, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(bsq_tile_cover_size(NULL, 5, 5, &cw, &ch, &err), BSQ_ERR_INVALID_ARGUMENT);
    cfg.image_width = 0;
    ck_assert_int_eq(bsq_tile_cover_size(&cfg, 5, 5, &cw, &ch, &err), BSQ_ERR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(test_tiled_odd_size) { tiled_roundtrip(101, 43); }
END_TEST
START_TEST(test_tiled_smaller_than_model) { tiled_roundtrip(20, 9); }
END_TEST
START_TEST(test_tiled_exact_multiple) { tiled_roundtrip(96, 64); }
END_TEST

START_TEST(test_batch_equals_single)
{
    bsq_model *m = open_model("img32_w64_l2_L18g9.weights.safetensors");
    bsq_context_options o = {.threads = 2, .device = "cpu"};
    bsq_context *ctx;
    bsq_error err;
    ck_assert_int_eq(bsq_context_create(m, &o, &ctx, &err), BSQ_OK);
    const int B = 5, W = 50, H = 37;
    size_t img = (size_t)3 * W * H;
    float *x = malloc(B * img * sizeof(float));
    tu_fill_uniform(x, B * img, 9, -1, 1);
    bsq_tokens *all;
    ck_assert_int_eq(bsq_encode(ctx, x, B, 1, H, W, &all, &err), BSQ_OK);
    size_t per = bsq_tokens_layout(all)->count / B;
    for (int b = 0; b < B; b++) {
        bsq_tokens *one;
        ck_assert_int_eq(bsq_encode(ctx, x + b * img, 1, 1, H, W, &one, &err), BSQ_OK);
        ck_assert(memcmp(bsq_tokens_indices(one), bsq_tokens_indices(all) + b * per,
                         per * sizeof(uint64_t)) == 0);
        bsq_tokens_free(one);
    }
    bsq_tokens_free(all);
    free(x);
    bsq_context_destroy(ctx);
    bsq_model_close(m);
}
END_TEST

/* The backend's tile ops (which a GPU runs on whole frames) against the
 * host paths: cutting is an exact copy; blending chunk by chunk matches
 * accumulate-then-normalise to rounding. Sizes where three tiles overlap a
 * pixel (500 wide, tiles of 256), images smaller than a tile, clips. */
static void tile_ops_match_host(int T, int H, int W, int th, int tw, int B, int chunk)
{
    bsq_backend *be;
    bsq_error err;
    ck_assert_int_eq(bsq_backend_cpu_create(1, &be, &err), BSQ_OK);
    const bsq_tile_grid g = {T, H, W, th, tw, bsq_tile_count(H, th), bsq_tile_count(W, tw)};
    const int per = g.ny * g.nx, seqs = B * per;
    const size_t img_px = (size_t)3 * T * H * W, tile_px = (size_t)3 * T * th * tw;
    float *img = malloc(img_px * B * sizeof(float)), *tiles = malloc(tile_px * seqs * sizeof(float));
    float *ref = malloc(tile_px * seqs * sizeof(float)), *out = malloc(img_px * B * sizeof(float));
    float *acc = calloc(img_px * B, sizeof(float)), *wsum = malloc((size_t)H * W * sizeof(float));
    ck_assert(img && tiles && ref && out && acc && wsum);
    tu_fill_uniform(img, img_px * B, 7 + H, -1, 1);
    for (int s = 0; s < seqs; s++) {
        int b = s / per, iy = s % per / g.nx, ix = s % g.nx;
        bsq_tile_extract(img + b * img_px, T, H, W, bsq_tile_pos(iy, g.ny, H, th),
                         bsq_tile_pos(ix, g.nx, W, tw), th, tw, ref + s * tile_px);
    }
    for (int s0 = 0; s0 < seqs; s0 += chunk) {
        int n = seqs - s0 < chunk ? seqs - s0 : chunk;
        be->ops->tile_extract(be, img, tiles + s0 * tile_px, &g, s0, n);
    }
    ck_assert(memcmp(tiles, ref, tile_px * seqs * sizeof(float)) == 0);
    /* decoded tiles: the cut ones, disturbed so the overlaps disagree */
    for (size_t i = 0; i < tile_px * seqs; i++)
        tiles[i] += 0.01f * (float)(i % 7);
    be->ops->zero(be, out, img_px * B);
    for (int s0 = 0; s0 < seqs; s0 += chunk) {
        int n = seqs - s0 < chunk ? seqs - s0 : chunk;
        be->ops->tile_blend(be, tiles + s0 * tile_px, out, &g, s0, n);
    }
    bsq_tile_weight_map(wsum, H, W, th, tw);
    for (int s = 0; s < seqs; s++)
        bsq_tile_accumulate(acc + (s / per) * img_px, NULL, tiles + s * tile_px, T, H, W,
                            s % per / g.nx, g.ny, s % g.nx, g.nx, th, tw);
    double e = 0;
    for (size_t i = 0; i < img_px * B; i++) {
        double d = fabs(acc[i] / wsum[i % ((size_t)H * W)] - out[i]);
        e = d > e ? d : e;
    }
    ck_assert_msg(e < 1e-5, "%dx%d in %dx%d tiles, chunks of %d: blend differs by %g", W, H, tw,
                  th, chunk, e);
    free(img), free(tiles), free(ref), free(out), free(acc), free(wsum);
    be->ops->destroy(be);
}

START_TEST(test_tile_ops)
{
    tile_ops_match_host(1, 300, 500, 256, 256, 2, 2);
    tile_ops_match_host(2, 50, 70, 32, 32, 3, 5);
    tile_ops_match_host(1, 20, 9, 32, 32, 2, 1);
    tile_ops_match_host(1, 97, 130, 32, 32, 1, 7);
}
END_TEST

START_TEST(test_bad_arguments)
{
    bsq_model *m = open_model("img32_w64_l2_L18g9.weights.safetensors");
    bsq_context *ctx;
    bsq_error err;
    ck_assert_int_eq(bsq_context_create(m, NULL, &ctx, &err), BSQ_OK);
    float px[3 * 32 * 32] = {0};
    bsq_tokens *t = NULL;
    ck_assert_int_eq(bsq_encode(ctx, px, 1, 2, 32, 32, &t, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert(strstr(err.message, "frame") != NULL);
    ck_assert_int_eq(bsq_encode(ctx, px, 0, 1, 32, 32, &t, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(bsq_encode(ctx, px, 1, 1, 0, 32, &t, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(bsq_encode(ctx, NULL, 1, 1, 32, 32, &t, &err), BSQ_ERR_INVALID_ARGUMENT);
    /* tokens of the wrong width, tiling or range are refused */
    bsq_token_layout lay = {.L = 17, .batch = 1, .frames = 1, .tiles_y = 1, .tiles_x = 1,
                            .grid_h = 4, .grid_w = 4, .height = 32, .width = 32};
    ck_assert_int_eq(bsq_tokens_create(&lay, &t, &err), BSQ_OK);
    ck_assert_int_eq(bsq_decode(ctx, t, px, &err), BSQ_ERR_INVALID_ARGUMENT);
    bsq_tokens_free(t);
    lay.L = 18;
    lay.tiles_x = 2;
    ck_assert_int_eq(bsq_tokens_create(&lay, &t, &err), BSQ_OK);
    ck_assert_int_eq(bsq_decode(ctx, t, px, &err), BSQ_ERR_INVALID_ARGUMENT);
    bsq_tokens_free(t);
    lay.tiles_x = 1;
    ck_assert_int_eq(bsq_tokens_create(&lay, &t, &err), BSQ_OK);
    bsq_tokens_indices_mut(t)[3] = (uint64_t)1 << 18;
    ck_assert_int_eq(bsq_decode(ctx, t, px, &err), BSQ_ERR_INVALID_ARGUMENT);
    /* bits and groups round-trip, and bad values are refused */
    uint8_t bits[16 * 18];
    for (size_t i = 0; i < sizeof bits; i++)
        bits[i] = (uint8_t)((i * 7 + 3) % 5 < 2);
    ck_assert_int_eq(bsq_tokens_set_bits(t, bits, &err), BSQ_OK);
    uint32_t g9[32], g1[16 * 18];
    ck_assert_int_eq(bsq_tokens_get_groups(t, 9, g9, &err), BSQ_OK);
    ck_assert_int_eq(bsq_tokens_get_groups(t, 1, g1, &err), BSQ_OK);
    for (size_t i = 0; i < sizeof bits; i++)
        ck_assert_uint_eq(g1[i], bits[i]);
    ck_assert_uint_eq(g9[0], (uint32_t)(bits[0] << 8 | bits[1] << 7 | bits[2] << 6 | bits[3] << 5 |
                                        bits[4] << 4 | bits[5] << 3 | bits[6] << 2 | bits[7] << 1 |
                                        bits[8]));
    ck_assert_int_eq(bsq_tokens_set_groups(t, 9, g9, &err), BSQ_OK);
    uint8_t back[16 * 18];
    bsq_tokens_get_bits(t, back);
    ck_assert(memcmp(bits, back, sizeof bits) == 0);
    ck_assert_int_eq(bsq_tokens_get_groups(t, 5, g9, &err), BSQ_ERR_INVALID_ARGUMENT);
    g9[0] = 512;
    ck_assert_int_eq(bsq_tokens_set_groups(t, 9, g9, &err), BSQ_ERR_INVALID_ARGUMENT);
    bits[0] = 2;
    ck_assert_int_eq(bsq_tokens_set_bits(t, bits, &err), BSQ_ERR_INVALID_ARGUMENT);
    bsq_tokens_free(t);
    bsq_context_destroy(ctx);
    bsq_model_close(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tiling");
    TCase *tc = tcase_create("any-size");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_tile_placement_covers);
    tcase_add_test(tc, test_tile_cover_size);
    tcase_add_test(tc, test_tiled_odd_size);
    tcase_add_test(tc, test_tiled_smaller_than_model);
    tcase_add_test(tc, test_tiled_exact_multiple);
    tcase_add_test(tc, test_batch_equals_single);
    tcase_add_test(tc, test_tile_ops);
    tcase_add_test(tc, test_bad_arguments);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
