/* Parity with the official PyTorch model on every case found in
 * $BSQ_PARITY_DIR (default: the project's copy of the fixtures). A case is
 * NAME.weights.safetensors plus one or more NAME[.tT].io.safetensors. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bsq.h"
#include "graph.h"
#include "safetensors.h"
#include "testutil.h"
#include "tokens.h"

#define TOL 1e-4

static const char *parity_dir(void)
{
    static char buf[4096]; /* test-only: built once per process */
    const char *d = getenv("BSQ_PARITY_DIR");
    if (d && *d)
        return d;
    snprintf(buf, sizeof buf, "%s/bsqvit-parity", tu_data_dir());
    return buf;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Compares one io file against the model; returns nothing, asserts. */
static void check_io(bsq_model *model, const char *io_path, int threads, uint64_t **idx_out)
{
    const bsq_config *c = bsq_model_config(model);
    bsq_error err;
    bsq_tensorset io;
    bsq_tensorset_init(&io);
    ck_assert_msg(bsq_safetensors_read(io_path, &io, &err) == BSQ_OK, "%s", err.message);
    const bsq_tensor *in = bsq_tensorset_find(&io, "input");
    ck_assert_ptr_nonnull(in);
    int B = (int)in->shape[0], T = in->ndim == 5 ? (int)in->shape[2] : 1;
    int H = (int)in->shape[in->ndim - 2], W = (int)in->shape[in->ndim - 1];
    ck_assert_int_eq(H, c->image_height);
    ck_assert_int_eq(W, c->image_width);
    int P = (H / c->patch_size) * (W / c->patch_size), L = c->L, D = c->width;
    size_t N = (size_t)B * T * P;

    int64_t n_in;
    float *input = tu_f32(&io, "input", &n_in);
    float *enc_ref = tu_f32(&io, "encoder_out", NULL), *pq_ref = tu_f32(&io, "pre_quant", NULL);
    float *z_ref = tu_f32(&io, "z", NULL), *dec_ref = tu_f32(&io, "decoder_out", NULL);
    float *recon_ref = tu_f32(&io, "recon", NULL);
    float *enc = malloc(N * D * sizeof(float)), *pq = malloc(N * L * sizeof(float));
    float *z = malloc(N * L * sizeof(float)), *dec = malloc((size_t)n_in * sizeof(float));
    float *recon = malloc((size_t)n_in * sizeof(float));
    uint64_t *idx = malloc(N * sizeof(uint64_t));

    bsq_context_options opt = {.threads = threads, .device = "cpu"};
    bsq_context *ctx;
    ck_assert_msg(bsq_context_create(model, &opt, &ctx, &err) == BSQ_OK, "%s", err.message);
    bsq_taps taps = {.encoder_out = enc, .pre_quant = pq};
    ck_assert_msg(bsq_graph_encode(ctx, input, B, T, 0, NULL, idx, z, &taps, &err) == BSQ_OK, "%s",
                  err.message);
    double e_enc = tu_max_abs_diff(enc, enc_ref, N * D), e_pq = tu_max_abs_diff(pq, pq_ref, N * L);
    double e_z = tu_max_abs_diff(z, z_ref, N * L);

    /* bits, indices and group indices exactly */
    const bsq_tensor *bits = bsq_tensorset_find(&io, "bits");
    ck_assert_ptr_nonnull(bits);
    const uint8_t *bref = bits->data;
    size_t flips = 0;
    for (size_t i = 0; i < N; i++)
        for (int d = 0; d < L; d++)
            flips += ((idx[i] >> (L - 1 - d)) & 1) != bref[i * L + d];
    const bsq_tensor *ind = bsq_tensorset_find(&io, "indices");
    if (L <= 62)
        ck_assert_msg(ind != NULL, "%s: indices missing for L=%d", io_path, L);
    size_t bad_idx = 0;
    for (size_t i = 0; ind && i < N; i++) {
        int64_t v;
        memcpy(&v, (const char *)ind->data + 8 * i, 8);
        bad_idx += (uint64_t)v != idx[i];
    }
    const bsq_tensor *gi = bsq_tensorset_find(&io, "group_indices");
    ck_assert_ptr_nonnull(gi);
    int ng = (int)gi->shape[2], g = L / ng;
    bsq_token_layout lay = {.L = L, .batch = B, .frames = T, .tiles_y = 1, .tiles_x = 1,
                            .grid_h = H / c->patch_size, .grid_w = W / c->patch_size,
                            .height = H, .width = W};
    bsq_tokens *tok;
    ck_assert_int_eq(bsq_tokens_create(&lay, &tok, &err), BSQ_OK);
    memcpy(bsq_tokens_indices_mut(tok), idx, N * sizeof(uint64_t));
    uint32_t *groups = malloc(N * ng * sizeof(uint32_t));
    ck_assert_int_eq(bsq_tokens_get_groups(tok, g, groups, &err), BSQ_OK);
    size_t bad_groups = 0;
    for (size_t i = 0; i < N * (size_t)ng; i++) {
        int64_t v;
        memcpy(&v, (const char *)gi->data + 8 * i, 8);
        bad_groups += (uint64_t)v != groups[i];
    }

    /* decoder from our own tokens (identical to the fixture's when no bit flipped) */
    bsq_taps dtaps = {.decoder_out = dec};
    ck_assert_msg(bsq_graph_decode(ctx, idx, B, T, 0, NULL, recon, &dtaps, &err) == BSQ_OK, "%s",
                  err.message);
    double e_dec = tu_max_abs_diff(dec, dec_ref, (size_t)n_in);
    double e_rec = tu_max_abs_diff(recon, recon_ref, (size_t)n_in);

    /* the public API gives the same tokens and pixels */
    bsq_tokens *api_tok;
    ck_assert_msg(bsq_encode(ctx, input, B, T, H, W, &api_tok, &err) == BSQ_OK, "%s", err.message);
    ck_assert_int_eq(bsq_tokens_layout(api_tok)->count, N);
    ck_assert(memcmp(bsq_tokens_indices(api_tok), idx, N * sizeof(uint64_t)) == 0);
    float *api_pix = malloc((size_t)n_in * sizeof(float));
    ck_assert_msg(bsq_decode(ctx, api_tok, api_pix, &err) == BSQ_OK, "%s", err.message);
    ck_assert(memcmp(api_pix, recon, (size_t)n_in * sizeof(float)) == 0);

    printf("%-58s threads=%d max|err| encoder_out %.2e pre_quant %.2e z %.2e decoder_out %.2e "
           "recon %.2e; bit flips %zu, index mismatches %zu, group mismatches %zu\n",
           strrchr(io_path, '/') + 1, threads, e_enc, e_pq, e_z, e_dec, e_rec, flips, bad_idx,
           bad_groups);
    ck_assert_msg(e_enc <= TOL && e_pq <= TOL && e_z <= TOL, "%s: encoder error above %g", io_path,
                  TOL);
    ck_assert_msg(e_dec <= TOL && e_rec <= TOL, "%s: decoder error above %g", io_path, TOL);
    ck_assert_msg(flips == 0 && bad_idx == 0 && bad_groups == 0, "%s: tokens differ", io_path);

    if (idx_out)
        *idx_out = idx;
    else
        free(idx);
    bsq_tokens_free(tok);
    bsq_tokens_free(api_tok);
    bsq_context_destroy(ctx);
    free(api_pix);
    free(groups);
    free(input);
    free(enc_ref);
    free(pq_ref);
    free(z_ref);
    free(dec_ref);
    free(recon_ref);
    free(enc);
    free(pq);
    free(z);
    free(dec);
    free(recon);
    bsq_tensorset_free(&io);
}

START_TEST(test_parity_all_cases)
{
    const char *dir = parity_dir();
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot open parity directory %s", dir);
    struct dirent *e;
    int cases = 0;
    while ((e = readdir(d))) {
        if (!ends_with(e->d_name, ".weights.safetensors"))
            continue;
        size_t stem = strlen(e->d_name) - strlen(".weights.safetensors");
        char *wpath = tu_path(dir, e->d_name);
        bsq_model *model;
        bsq_error err;
        ck_assert_msg(bsq_model_open(wpath, NULL, &model, &err) == BSQ_OK, "%s", err.message);
        DIR *d2 = opendir(dir);
        struct dirent *f;
        while ((f = readdir(d2))) {
            if (strncmp(f->d_name, e->d_name, stem) || !ends_with(f->d_name, ".io.safetensors") ||
                (f->d_name[stem] != '.'))
                continue;
            char *io = tu_path(dir, f->d_name);
            uint64_t *idx1, *idx3;
            check_io(model, io, 1, &idx1);
            check_io(model, io, 3, &idx3); /* thread count must not change tokens */
            free(idx1);
            free(idx3);
            free(io);
            cases++;
        }
        closedir(d2);
        bsq_model_close(model);
        free(wpath);
    }
    closedir(d);
    ck_assert_msg(cases > 0, "no parity cases found in %s", dir);
    printf("parity: %d cases checked in %s\n", cases, dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("parity");
    TCase *tc = tcase_create("fixtures");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_parity_all_cases);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
