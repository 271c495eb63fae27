/* The learned prior: integer network files (good and bad), round trips
 * through the range coder, a fixed test vector that pins its arithmetic on
 * every build (it runs at -O3 and under the sanitizers at -O1 in CI), and
 * that a network trained on a token source codes that source in fewer bits
 * than the context model alone. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/prior.h"
#include "codec/prior_net.h"
#include "safetensors.h"
#include "synth_tokens.h"
#include "testutil.h"
#include "train/prior_train.h"

/* Known bytes for the fixed vector below (see learned_fixed_vector). */
#define VECTOR_LEN 828
#define VECTOR_HASH 0x47c3293108aadae4ull

static size_t count(const bsq_frame_geom *g)
{
    return (size_t)g->tiles_y * g->tiles_x * g->grid_h * g->grid_w;
}

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* A network of random integer weights (no floating point anywhere, so the
 * same on every build), as safetensors contents in `ts`. */
static void random_net(bsq_tensorset *ts, int L, int H, uint64_t seed, int scale)
{
    const int nin = BSQ_NET_REFS * L + BSQ_NET_REFS;
    int16_t *w1 = malloc((size_t)H * nin * 2), *v = malloc((size_t)L * H * 2);
    int16_t *u = malloc((size_t)L * L * 2);
    int16_t *a = malloc((size_t)L * BSQ_NET_REFS * BSQ_NET_MIS * 2);
    int32_t *b1 = malloc((size_t)H * 4), *c = malloc((size_t)L * 4);
    uint64_t s = seed;
#define R(m) ((int)(synth_rnd(&s) % (2 * (m) + 1)) - (m))
    for (int i = 0; i < H * nin; i++)
        w1[i] = (int16_t)R(300);
    for (int i = 0; i < H; i++)
        b1[i] = R(2000) + 1000;
    for (int i = 0; i < L * H; i++)
        v[i] = (int16_t)R(scale);
    for (int i = 0; i < L * L; i++)
        u[i] = (int16_t)R(3000);
    for (int i = 0; i < L * BSQ_NET_REFS * BSQ_NET_MIS; i++)
        a[i] = (int16_t)R(3000);
    for (int i = 0; i < L; i++)
        c[i] = R(5000);
#undef R
    bsq_tensorset_init(ts);
    bsq_error err;
    int64_t sh[6][2] = {{H, nin}, {H, 0}, {L, H}, {L, L}, {L, BSQ_NET_REFS * BSQ_NET_MIS}, {L, 0}};
    const char *names[6] = {"w1", "b1", "v", "u", "a", "c"};
    void *data[6] = {w1, b1, v, u, a, c};
    const bsq_dt dts[6] = {BSQ_DT_I16, BSQ_DT_I32, BSQ_DT_I16, BSQ_DT_I16, BSQ_DT_I16, BSQ_DT_I32};
    for (int i = 0; i < 6; i++)
        ck_assert(bsq_tensorset_add(ts, names[i], dts[i], sh[i][1] ? 2 : 1, sh[i], data[i],
                                    (size_t)sh[i][0] * (size_t)(sh[i][1] ? sh[i][1] : 1) *
                                        bsq_dt_size(dts[i]),
                                    1, &err) == BSQ_OK);
    ck_assert(bsq_tensorset_set_meta(ts, "format", "bsq-prior-net-1", &err) == BSQ_OK);
    ck_assert(bsq_tensorset_set_meta(ts, "shift1", "4", &err) == BSQ_OK);
    ck_assert(bsq_tensorset_set_meta(ts, "shift2", "6", &err) == BSQ_OK);
    ck_assert(bsq_tensorset_set_meta(ts, "tokenizer",
                                     "00112233445566778899aabbccddeeff"
                                     "00112233445566778899aabbccddeeff",
                                     &err) == BSQ_OK);
}

static bsq_prior *learned(const bsq_frame_geom *g, uint64_t seed)
{
    bsq_tensorset ts;
    random_net(&ts, g->L, 24, seed, 200);
    bsq_prior_net *net;
    bsq_error err;
    ck_assert_msg(bsq_prior_net_from_tensors(&ts, &net, &err) == BSQ_OK, "%s", err.message);
    bsq_tensorset_free(&ts);
    bsq_prior *p;
    ck_assert_msg(bsq_prior_learned_create(g, net, &p, &err) == BSQ_OK, "%s", err.message);
    return p;
}

/* frames through a prior (reset before frame reset_at); *len bytes. */
static uint8_t *encode(bsq_prior *p, const uint64_t *tok, size_t n, int frames, int reset_at,
                       size_t *len)
{
    bsq_rc_encoder enc;
    bsq_rc_enc_init(&enc);
    bsq_error err;
    for (int f = 0; f < frames; f++) {
        if (f == reset_at)
            p->ops->reset(p);
        ck_assert_msg(p->ops->encode_frame(p, tok + (size_t)f * n, &enc, &err) == BSQ_OK, "%s",
                      err.message);
    }
    uint8_t *out;
    ck_assert(bsq_rc_enc_finish(&enc, &out, len, &err) == BSQ_OK);
    return out;
}

static void decode_check(bsq_prior *p, const uint8_t *bytes, size_t len, const uint64_t *tok,
                         size_t n, int frames, int reset_at)
{
    bsq_rc_decoder dec;
    bsq_rc_dec_init(&dec, bytes, len);
    uint64_t *got = malloc(n * sizeof *got);
    bsq_error err;
    for (int f = 0; f < frames; f++) {
        if (f == reset_at)
            p->ops->reset(p);
        memset(got, 0x5a, n * sizeof *got);
        ck_assert_msg(p->ops->decode_frame(p, got, &dec, &err) == BSQ_OK, "%s", err.message);
        ck_assert_msg(!memcmp(got, tok + (size_t)f * n, n * sizeof *got), "frame %d differs", f);
    }
    ck_assert(bsq_rc_dec_finish(&dec, &err) == BSQ_OK);
    free(got);
}

START_TEST(learned_round_trips)
{
    static const bsq_frame_geom geoms[] = {
        {18, 1, 1, 16, 16}, {1, 1, 1, 3, 5}, {64, 2, 1, 4, 6}, {36, 2, 3, 5, 7}, {18, 1, 1, 1, 1}};
    for (size_t i = 0; i < sizeof geoms / sizeof *geoms; i++) {
        const bsq_frame_geom *g = &geoms[i];
        size_t n = count(g), len;
        for (int src = 0; src < 3; src++) {
            uint64_t *tok = malloc(5 * n * sizeof *tok);
            synth_token_frames((enum synth_source)src, g, 5, 4, 100 * i + src, tok);
            bsq_prior *e = learned(g, i), *d = learned(g, i);
            uint8_t *bytes = encode(e, tok, n, 5, 3, &len);
            decode_check(d, bytes, len, tok, n, 5, 3);
            e->ops->destroy(e);
            d->ops->destroy(d);
            free(bytes);
            free(tok);
        }
    }
}
END_TEST

/* Known weights and tokens -> known bytes. */
START_TEST(learned_fixed_vector)
{
    bsq_frame_geom g = {18, 2, 2, 6, 7};
    size_t n = count(&g), len;
    uint64_t *tok = malloc(4 * n * sizeof *tok);
    synth_token_frames(SYNTH_REGIONS, &g, 4, 5, 77, tok);
    bsq_prior *p = learned(&g, 2025);
    ck_assert_str_eq(p->ops->name, "learned");
    uint8_t *bytes = encode(p, tok, n, 4, 2, &len);
    uint64_t h = fnv(bytes, len);
    ck_assert_msg(len == VECTOR_LEN && h == VECTOR_HASH,
                  "learned prior vector: %zu bytes, hash 0x%016llxull; want %d, 0x%016llxull",
                  len, (unsigned long long)h, VECTOR_LEN, (unsigned long long)VECTOR_HASH);
    p->ops->destroy(p);
    free(bytes);
    free(tok);
}
END_TEST

START_TEST(learned_identity)
{
    bsq_frame_geom g = {18, 1, 1, 4, 4};
    bsq_prior *a = learned(&g, 1), *b = learned(&g, 1), *c = learned(&g, 2), *ctx;
    bsq_error err;
    ck_assert(bsq_prior_context_create(&g, &ctx, &err) == BSQ_OK);
    ck_assert_mem_eq(a->fingerprint, b->fingerprint, 16);
    ck_assert(memcmp(a->fingerprint, c->fingerprint, 16) != 0);   /* the weights count */
    ck_assert(memcmp(a->fingerprint, ctx->fingerprint, 16) != 0);
    a->ops->destroy(a), b->ops->destroy(b), c->ops->destroy(c), ctx->ops->destroy(ctx);
}
END_TEST

START_TEST(learned_bad_networks)
{
    bsq_error err;
    bsq_prior_net *net = NULL;
    bsq_tensorset ts;
    /* a network whose sums could overflow int32 is refused */
    random_net(&ts, 18, 256, 5, 32767);
    ((int32_t *)ts.items[5].data)[3] = 2000000000; /* c[3] */
    ck_assert_int_eq(bsq_prior_net_from_tensors(&ts, &net, &err), BSQ_ERR_MODEL);
    ck_assert(strstr(err.message, "overflow"));
    bsq_tensorset_free(&ts);
    /* wrong format, missing metadata, missing tensors */
    random_net(&ts, 18, 8, 5, 100);
    ck_assert(bsq_tensorset_set_meta(&ts, "format", "something-else", &err) == BSQ_OK);
    ck_assert_int_eq(bsq_prior_net_from_tensors(&ts, &net, &err), BSQ_ERR_FORMAT);
    bsq_tensorset_free(&ts);
    random_net(&ts, 18, 8, 5, 100);
    ck_assert(bsq_tensorset_set_meta(&ts, "shift2", "99", &err) == BSQ_OK);
    ck_assert_int_eq(bsq_prior_net_from_tensors(&ts, &net, &err), BSQ_ERR_MODEL);
    bsq_tensorset_free(&ts);
    random_net(&ts, 18, 8, 5, 100);
    free(ts.items[2].name);
    ts.items[2].name = strdup("vv");
    ck_assert_int_eq(bsq_prior_net_from_tensors(&ts, &net, &err), BSQ_ERR_MODEL);
    bsq_tensorset_free(&ts);
    /* a network for other L than the tokens */
    random_net(&ts, 18, 8, 5, 100);
    ck_assert(bsq_prior_net_from_tensors(&ts, &net, &err) == BSQ_OK);
    bsq_tensorset_free(&ts);
    bsq_frame_geom g = {36, 1, 1, 4, 4};
    bsq_prior *p = (bsq_prior *)&p;
    ck_assert_int_eq(bsq_prior_learned_create(&g, net, &p, &err), BSQ_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(p);
    /* not a file */
    ck_assert(bsq_prior_net_open("/nonexistent/prior.safetensors", &net, &err) != BSQ_OK);
}
END_TEST

/* A network trained on a token source beats the context model alone on new
 * frames of that source, and decodes. */
START_TEST(learned_trained_compresses)
{
    bsq_frame_geom g = {18, 1, 2, 12, 12};
    size_t n = count(&g), len_l, len_c;
    const int frames = 24;
    /* one sequence: the network learns from its first 24 frames, then codes
     * the next 8, which it has not seen */
    uint64_t *train = malloc((frames + 8) * n * sizeof *train), *test = train + frames * n;
    synth_token_frames(SYNTH_REGIONS, &g, frames + 8, 6, 1, train);
    bsq_prior_clip clip = {g, train, frames, 8};
    uint8_t fp[32] = {1, 2, 3};
    bsq_prior_train_options o;
    bsq_prior_train_options_default(&o);
    o.hidden = 32;
    o.epochs = 30;
    o.lr = 5e-3;
    char *dir = tu_tmpdir(), *path = tu_path(dir, "prior.safetensors");
    bsq_prior_train_report rep;
    bsq_error err;
    ck_assert_msg(bsq_prior_train(&clip, 1, 18, fp, &o, path, &rep, &err) == BSQ_OK, "%s",
                  err.message);
    printf("trained: %.3f bits/token float, %.3f integer\n", rep.float_bits, rep.int_bits);
    ck_assert(rep.int_bits < rep.float_bits * 1.05 + 0.05); /* quantisation costs little */
    bsq_prior_net *net, *net2;
    ck_assert(bsq_prior_net_open(path, &net, &err) == BSQ_OK);
    ck_assert(bsq_prior_net_open(path, &net2, &err) == BSQ_OK);
    ck_assert(net->tokenizer[0] == 1 && net->tokenizer[2] == 3);
    bsq_prior *pl, *pd, *pc;
    ck_assert(bsq_prior_learned_create(&g, net, &pl, &err) == BSQ_OK);
    ck_assert(bsq_prior_learned_create(&g, net2, &pd, &err) == BSQ_OK);
    ck_assert(bsq_prior_context_create(&g, &pc, &err) == BSQ_OK);
    uint8_t *bl = encode(pl, test, n, 8, 0, &len_l), *bc = encode(pc, test, n, 8, 0, &len_c);
    printf("8 frames of %zu tokens: learned %zu bytes, context %zu bytes\n", n, len_l, len_c);
    ck_assert_msg(len_l < len_c, "the learned prior is no better than the context model");
    decode_check(pd, bl, len_l, test, n, 8, 0);
    pl->ops->destroy(pl), pd->ops->destroy(pd), pc->ops->destroy(pc);
    free(bl), free(bc), free(train);
    free(path);
    tu_rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("learned_prior");
    TCase *tc = tcase_create("learned");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, learned_round_trips);
    tcase_add_test(tc, learned_fixed_vector);
    tcase_add_test(tc, learned_identity);
    tcase_add_test(tc, learned_bad_networks);
    tcase_add_test(tc, learned_trained_compresses);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
