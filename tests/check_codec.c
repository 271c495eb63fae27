/* The codec path without the CLI: a clip through the tokenizer's stream,
 * the context prior and range coder, and the .bsq container, back to
 * tokens and pixels. Tokens must come back identical and pixels equal a
 * direct tokenizer round trip. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bsq.h"
#include "codec/container.h"
#include "codec/gop.h"
#include "testutil.h"

START_TEST(test_clip_through_container)
{
    char *dir = tu_path(tu_data_dir(), "bsqvit-parity");
    char *path = tu_path(dir, "vid4x32_w64_l2_L18g9_blockcausal.weights.safetensors");
    bsq_model *m;
    bsq_error err;
    ck_assert_msg(bsq_model_open(path, NULL, &m, &err) == BSQ_OK, "%s", err.message);
    bsq_context_options o = {.threads = 2, .device = "cpu"};
    bsq_context *ctx;
    ck_assert_int_eq(bsq_context_create(m, &o, &ctx, &err), BSQ_OK);
    const int W = 50, H = 37, T = 7, G = 4; /* two GOPs: 4 + 3 frames */
    const size_t plane = (size_t)W * H * 3;
    float *clip = malloc(plane * T * sizeof(float));
    /* a moving gradient, so consecutive frames share structure */
    for (int t = 0; t < T; t++)
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    clip[t * plane + (size_t)c * W * H + (size_t)y * W + x] =
                        (float)((x + 2 * t + c * 7) % W) / W * 2 - 1 + 0.1f * (y % 5) / 5;

    bsq_stream *enc, *dec;
    ck_assert_int_eq(bsq_stream_create(ctx, BSQ_STREAM_ENCODE, H, W, &enc, &err), BSQ_OK);
    ck_assert_int_eq(bsq_stream_create(ctx, BSQ_STREAM_DECODE, H, W, &dec, &err), BSQ_OK);
    uint64_t *tokens = NULL;
    size_t per = 0;
    bsq_token_layout lay;
    for (int t = 0; t < T; t++) {
        if (t % G == 0)
            bsq_stream_restart(enc);
        bsq_tokens *tok;
        ck_assert_int_eq(bsq_stream_encode(enc, clip + t * plane, &tok, &err), BSQ_OK);
        if (!tokens) {
            lay = *bsq_tokens_layout(tok);
            per = lay.count;
            tokens = malloc(per * T * sizeof(uint64_t));
        }
        memcpy(tokens + t * per, bsq_tokens_indices(tok), per * sizeof(uint64_t));
        bsq_tokens_free(tok);
    }

    /* code into a .bsq in memory */
    bsq_frame_geom geom = {lay.L, lay.tiles_y, lay.tiles_x, lay.grid_h, lay.grid_w};
    bsq_prior *prior;
    ck_assert_int_eq(bsq_prior_context_create(&geom, &prior, &err), BSQ_OK);
    bsq_stream_info si;
    memset(&si, 0, sizeof si);
    si.width = (uint32_t)W;
    si.height = (uint32_t)H;
    si.time_base_num = 1;
    si.time_base_den = 25;
    si.frame_rate_num = 25;
    si.frame_rate_den = 1;
    si.L = lay.L;
    si.num_frames = bsq_model_config(m)->num_frames;
    si.grid_h = lay.grid_h;
    si.grid_w = lay.grid_w;
    si.tiles_y = lay.tiles_y;
    si.tiles_x = lay.tiles_x;
    si.token_width = W;
    si.token_height = H;
    snprintf(si.prior_name, sizeof si.prior_name, "%s", prior->ops->name);
    memcpy(si.prior_fingerprint, prior->fingerprint, 16);
    ck_assert_int_eq(bsq_model_fingerprint(m, si.tokenizer_fingerprint, &err), BSQ_OK);
    char *buf = NULL;
    size_t buflen = 0;
    FILE *f = open_memstream(&buf, &buflen);
    bsq_writer *w;
    ck_assert_int_eq(bsq_writer_open_file(f, &si, &w, &err), BSQ_OK);
    int64_t pts[8];
    for (int g0 = 0; g0 < T; g0 += G) {
        int n = T - g0 < G ? T - g0 : G;
        uint8_t *payload;
        size_t size;
        ck_assert_int_eq(bsq_gop_encode(prior, tokens + g0 * per, n, per, &payload, &size, &err),
                         BSQ_OK);
        for (int i = 0; i < n; i++)
            pts[i] = g0 + i;
        bsq_gop g = {.first_frame = (uint64_t)g0, .frame_count = (uint32_t)n, .pts = pts,
                     .payload = payload, .payload_size = size};
        ck_assert_msg(bsq_writer_write_gop(w, &g, &err) == BSQ_OK, "%s", err.message);
        free(payload);
    }
    ck_assert_msg(bsq_writer_close(w, &err) == BSQ_OK, "%s", err.message);
    fclose(f);
    printf("codec: %d frames of %dx%d, %zu tokens of %d bits each: %zu bytes (raw %zu)\n", T, W, H,
           per, lay.L, buflen, per * T * lay.L / 8);

    /* read back: identical tokens, pixels equal the direct round trip */
    bsq_reader *r;
    ck_assert_int_eq(bsq_reader_open_memory(buf, buflen, NULL, &r, &err), BSQ_OK);
    uint8_t fp[32];
    bsq_model_fingerprint(m, fp, &err);
    ck_assert_int_eq(bsq_stream_info_check_models(bsq_reader_info(r), fp, prior->ops->name,
                                                  prior->fingerprint, &err), BSQ_OK);
    uint64_t *back = malloc(per * G * sizeof(uint64_t));
    float *px = malloc(plane * sizeof(float)), *ref = malloc(plane * T * sizeof(float));
    bsq_tokens *one;
    lay.frames = 1;
    ck_assert_int_eq(bsq_tokens_create(&lay, &one, &err), BSQ_OK);
    const bsq_gop *g;
    int frames = 0;
    while (bsq_reader_next_gop(r, &g, &err) == BSQ_OK && g) {
        ck_assert_int_eq(bsq_gop_decode(prior, g->payload, g->payload_size, (int)g->frame_count,
                                        per, back, &err), BSQ_OK);
        ck_assert(memcmp(back, tokens + g->first_frame * per, g->frame_count * per * 8) == 0);
        /* the direct round trip of this GOP as one clip */
        bsq_token_layout cl = lay;
        cl.frames = (int)g->frame_count;
        bsq_tokens *clipt;
        ck_assert_int_eq(bsq_tokens_create(&cl, &clipt, &err), BSQ_OK);
        memcpy(bsq_tokens_indices_mut(clipt), back, g->frame_count * per * 8);
        ck_assert_int_eq(bsq_decode(ctx, clipt, ref, &err), BSQ_OK);
        bsq_stream_restart(dec);
        for (uint32_t i = 0; i < g->frame_count; i++) {
            memcpy(bsq_tokens_indices_mut(one), back + i * per, per * 8);
            ck_assert_int_eq(bsq_stream_decode(dec, one, px, &err), BSQ_OK);
            for (int c = 0; c < 3; c++) /* clip layout [3][T][H][W] */
                ck_assert(memcmp(px + (size_t)c * W * H,
                                 ref + ((size_t)c * g->frame_count + i) * W * H,
                                 (size_t)W * H * sizeof(float)) == 0);
            frames++;
        }
        bsq_tokens_free(clipt);
    }
    ck_assert_int_eq(frames, T);
    bsq_reader_close(r);

    bsq_tokens_free(one);
    prior->ops->destroy(prior);
    bsq_stream_destroy(enc);
    bsq_stream_destroy(dec);
    bsq_context_destroy(ctx);
    bsq_model_close(m);
    free(back);
    free(px);
    free(ref);
    free(buf);
    free(tokens);
    free(clip);
    free(path);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("codec");
    TCase *tc = tcase_create("container");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_clip_through_container);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
