/* Streaming video with a key/value cache equals encoding whole clips. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bsq.h"
#include "model.h"
#include "testutil.h"

static bsq_model *open_fixture(const char *name)
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

static bsq_context *context(bsq_model *m, int threads)
{
    bsq_context_options o = {.threads = threads, .device = "cpu"};
    bsq_context *ctx;
    bsq_error err;
    ck_assert_msg(bsq_context_create(m, &o, &ctx, &err) == BSQ_OK, "%s", err.message);
    return ctx;
}

/* Pulls frame t of planar clip [3][T][H][W] into [3][H][W]. */
static void take_frame(const float *clip, int T, int H, int W, int t, float *frame)
{
    for (int c = 0; c < 3; c++)
        memcpy(frame + (size_t)c * H * W, clip + (((size_t)c * T + t) * H) * W,
               (size_t)H * W * sizeof(float));
}

/* Streams `frames` frames of a random clip at HxW (model size or not) and
 * compares tokens and pixels with whole-block encoding and decoding. */
static void stream_vs_clip(int H, int W, int frames)
{
    bsq_model *m = open_fixture("vid4x32_w64_l2_L18g9_blockcausal.weights.safetensors");
    const int nf = bsq_model_config(m)->num_frames;
    bsq_context *ctx = context(m, 2);
    bsq_error err;
    size_t plane = (size_t)H * W;
    float *clip = malloc(3 * plane * frames * sizeof(float));
    tu_fill_uniform(clip, 3 * plane * frames, 42 + H + W, -1, 1);

    bsq_stream *enc, *dec;
    ck_assert_int_eq(bsq_stream_create(ctx, BSQ_STREAM_ENCODE, H, W, &enc, &err), BSQ_OK);
    ck_assert_int_eq(bsq_stream_create(ctx, BSQ_STREAM_DECODE, H, W, &dec, &err), BSQ_OK);
    float *frame = malloc(3 * plane * sizeof(float)), *out = malloc(3 * plane * sizeof(float));
    double worst = 0;
    for (int b0 = 0; b0 < frames; b0 += nf) {
        /* the reference: this block encoded and decoded as one clip */
        int bt = frames - b0 < nf ? frames - b0 : nf;
        float *block = malloc(3 * plane * bt * sizeof(float));
        for (int c = 0; c < 3; c++)
            memcpy(block + (size_t)c * bt * plane, clip + ((size_t)c * frames + b0) * plane,
                   bt * plane * sizeof(float));
        bsq_tokens *ref;
        ck_assert_msg(bsq_encode(ctx, block, 1, bt, H, W, &ref, &err) == BSQ_OK, "%s", err.message);
        float *ref_pix = malloc(3 * plane * bt * sizeof(float));
        ck_assert_int_eq(bsq_decode(ctx, ref, ref_pix, &err), BSQ_OK);
        size_t per_frame = bsq_tokens_layout(ref)->count / bt;
        for (int t = 0; t < bt; t++) {
            ck_assert_int_eq(bsq_stream_position(enc), t);
            take_frame(block, bt, H, W, t, frame);
            bsq_tokens *ft;
            ck_assert_msg(bsq_stream_encode(enc, frame, &ft, &err) == BSQ_OK, "%s", err.message);
            ck_assert_int_eq(bsq_tokens_layout(ft)->count, per_frame);
            ck_assert_msg(memcmp(bsq_tokens_indices(ft), bsq_tokens_indices(ref) + t * per_frame,
                                 per_frame * sizeof(uint64_t)) == 0,
                          "frame %d of block at %d: streamed tokens differ", t, b0);
            ck_assert_msg(bsq_stream_decode(dec, ft, out, &err) == BSQ_OK, "%s", err.message);
            take_frame(ref_pix, bt, H, W, t, frame);
            double e = tu_max_abs_diff(out, frame, 3 * plane);
            worst = e > worst ? e : worst;
            bsq_tokens_free(ft);
        }
        bsq_tokens_free(ref);
        free(ref_pix);
        free(block);
    }
    printf("stream %dx%d, %d frames: max |streamed - whole-clip| pixel difference %.2e\n", W, H,
           frames, worst);
    ck_assert_msg(worst < 1e-5, "streamed pixels differ by %g", worst);
    bsq_stream_destroy(enc);
    bsq_stream_destroy(dec);
    free(frame);
    free(out);
    free(clip);
    bsq_context_destroy(ctx);
    bsq_model_close(m);
}

START_TEST(test_stream_model_size) { stream_vs_clip(32, 32, 4); }
END_TEST

/* six frames of a four-frame model: the stream opens a second block */
START_TEST(test_stream_restarts_blocks) { stream_vs_clip(32, 32, 6); }
END_TEST

/* an odd size: each frame is tiled, every tile keeps its own cache */
START_TEST(test_stream_tiled) { stream_vs_clip(41, 70, 5); }
END_TEST

START_TEST(test_stream_restart_call)
{
    bsq_model *m = open_fixture("vid4x32_w64_l2_L18g9_blockcausal.weights.safetensors");
    bsq_context *ctx = context(m, 1);
    bsq_error err;
    float frame[3 * 32 * 32];
    tu_fill_uniform(frame, sizeof frame / sizeof frame[0], 7, -1, 1);
    bsq_stream *s;
    ck_assert_int_eq(bsq_stream_create(ctx, BSQ_STREAM_ENCODE, 32, 32, &s, &err), BSQ_OK);
    bsq_tokens *a, *b, *c;
    ck_assert_int_eq(bsq_stream_encode(s, frame, &a, &err), BSQ_OK);
    ck_assert_int_eq(bsq_stream_encode(s, frame, &b, &err), BSQ_OK);
    ck_assert_int_eq(bsq_stream_position(s), 2);
    bsq_stream_restart(s);
    ck_assert_int_eq(bsq_stream_position(s), 0);
    ck_assert_int_eq(bsq_stream_encode(s, frame, &c, &err), BSQ_OK);
    /* after a restart the frame is a block's first frame again */
    ck_assert(memcmp(bsq_tokens_indices(a), bsq_tokens_indices(c), 16 * sizeof(uint64_t)) == 0);
    /* a second frame conditioned on the first: with random weights, the
     * temporal embedding alone changes some tokens */
    ck_assert(memcmp(bsq_tokens_indices(a), bsq_tokens_indices(b), 16 * sizeof(uint64_t)) != 0);
    /* decoding with an encode stream is refused */
    ck_assert_int_eq(bsq_stream_decode(s, a, frame, &err), BSQ_ERR_INVALID_ARGUMENT);
    bsq_tokens_free(a);
    bsq_tokens_free(b);
    bsq_tokens_free(c);
    bsq_stream_destroy(s);
    bsq_context_destroy(ctx);
    bsq_model_close(m);
}
END_TEST

START_TEST(test_stream_image_model)
{
    /* an image model streams too: every frame on its own */
    bsq_model *m = open_fixture("img32x48_w64_l2_L36g4.weights.safetensors");
    bsq_context *ctx = context(m, 2);
    bsq_error err;
    float frame[3 * 32 * 48];
    bsq_stream *s;
    ck_assert_int_eq(bsq_stream_create(ctx, BSQ_STREAM_ENCODE, 32, 48, &s, &err), BSQ_OK);
    for (int i = 0; i < 3; i++) {
        tu_fill_uniform(frame, sizeof frame / sizeof frame[0], 100 + i, -1, 1);
        bsq_tokens *st, *ref;
        ck_assert_int_eq(bsq_stream_encode(s, frame, &st, &err), BSQ_OK);
        ck_assert_int_eq(bsq_encode(ctx, frame, 1, 1, 32, 48, &ref, &err), BSQ_OK);
        ck_assert(memcmp(bsq_tokens_indices(st), bsq_tokens_indices(ref), 24 * sizeof(uint64_t)) == 0);
        bsq_tokens_free(st);
        bsq_tokens_free(ref);
    }
    bsq_stream_destroy(s);
    bsq_context_destroy(ctx);
    bsq_model_close(m);
}
END_TEST

/* The RGB24 calls give what converting around the float calls gives, rows
 * `stride` apart included; a short stride is refused. */
START_TEST(test_stream_rgb8)
{
    bsq_model *m = open_fixture("vid4x32_w64_l2_L18g9_blockcausal.weights.safetensors");
    bsq_context *ctx = context(m, 1);
    const int H = 41, W = 70, frames = 5;
    const size_t stride = (size_t)W * 3 + 5, plane = (size_t)H * W;
    uint8_t *rgb = malloc(stride * H), *a = malloc(stride * H), *b = malloc(stride * H);
    float *planar = malloc(3 * plane * sizeof(float));
    ck_assert(rgb && a && b && planar);
    bsq_stream *e8, *ef, *d8, *df;
    bsq_error err;
    ck_assert_int_eq(bsq_stream_create(ctx, BSQ_STREAM_ENCODE, H, W, &e8, &err), BSQ_OK);
    ck_assert_int_eq(bsq_stream_create(ctx, BSQ_STREAM_ENCODE, H, W, &ef, &err), BSQ_OK);
    ck_assert_int_eq(bsq_stream_create(ctx, BSQ_STREAM_DECODE, H, W, &d8, &err), BSQ_OK);
    ck_assert_int_eq(bsq_stream_create(ctx, BSQ_STREAM_DECODE, H, W, &df, &err), BSQ_OK);
    uint64_t state = 77;
    for (int f = 0; f < frames; f++) {
        for (size_t i = 0; i < stride * H; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            rgb[i] = (uint8_t)(state >> 56);
        }
        bsq_tokens *t8, *tf;
        ck_assert_msg(bsq_stream_encode_rgb8(e8, rgb, stride, &t8, &err) == BSQ_OK, "%s", err.message);
        bsq_rgb8_to_planar(rgb, W, H, stride, planar);
        ck_assert_msg(bsq_stream_encode(ef, planar, &tf, &err) == BSQ_OK, "%s", err.message);
        const size_t n = bsq_tokens_layout(t8)->count;
        ck_assert(memcmp(bsq_tokens_indices(t8), bsq_tokens_indices(tf), n * 8) == 0);
        memset(a, 0xee, stride * H);
        memset(b, 0xee, stride * H);
        ck_assert_msg(bsq_stream_decode_rgb8(d8, t8, a, stride, &err) == BSQ_OK, "%s", err.message);
        ck_assert_msg(bsq_stream_decode(df, tf, planar, &err) == BSQ_OK, "%s", err.message);
        bsq_planar_to_rgb8(planar, W, H, b, stride);
        ck_assert(memcmp(a, b, stride * H) == 0); /* padding bytes untouched alike */
        bsq_tokens_free(t8);
        bsq_tokens_free(tf);
    }
    bsq_tokens *t;
    ck_assert_int_eq(bsq_stream_encode_rgb8(e8, rgb, (size_t)W * 3 - 1, &t, &err),
                     BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(bsq_stream_decode_rgb8(e8, NULL, a, stride, &err), BSQ_ERR_INVALID_ARGUMENT);
    bsq_stream_destroy(e8);
    bsq_stream_destroy(ef);
    bsq_stream_destroy(d8);
    bsq_stream_destroy(df);
    free(rgb), free(a), free(b), free(planar);
    bsq_context_destroy(ctx);
    bsq_model_close(m);
}
END_TEST

START_TEST(test_stream_refuses_full_attention_video)
{
    bsq_config c = {.image_height = 16, .image_width = 16, .patch_size = 8, .width = 16,
                    .layers = 1, .heads = 2, .mlp_dim = 32, .decoder_ffn_dim = 32, .L = 4,
                    .group_size = 4, .num_frames = 3, .block_causal = 0, .layer_norm_eps = 1e-5f};
    bsq_model *m;
    bsq_error err;
    ck_assert_int_eq(bsq_model_alloc(&c, &m, &err), BSQ_OK);
    bsq_context *ctx = context(m, 1);
    bsq_stream *s;
    ck_assert_int_eq(bsq_stream_create(ctx, BSQ_STREAM_ENCODE, 16, 16, &s, &err), BSQ_ERR_UNSUPPORTED);
    ck_assert(strstr(err.message, "block-causal") != NULL);
    bsq_context_destroy(ctx);
    bsq_model_close(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stream");
    TCase *tc = tcase_create("kv-cache");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_stream_model_size);
    tcase_add_test(tc, test_stream_restarts_blocks);
    tcase_add_test(tc, test_stream_tiled);
    tcase_add_test(tc, test_stream_restart_call);
    tcase_add_test(tc, test_stream_image_model);
    tcase_add_test(tc, test_stream_rgb8);
    tcase_add_test(tc, test_stream_refuses_full_attention_video);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
