/* Throughput of the entropy-coding stage on one core: the binary range coder
 * alone (encode and decode, several probability regimes) and the context
 * prior coding token frames through it, also on the token geometry of a
 * 640x360 frame (128x128 tiles of 16x16 tokens, 3x6 tiles) with frames per
 * second. Prints Markdown tables of binary decisions per second (best of
 * several runs) and coded bits per decision.
 *
 *   bench_coder [--quick] [--check] [--learned NET.safetensors]
 *
 * --quick: smaller inputs (a smoke run); --check: exit 1 if the raw coder,
 * or the context prior at 640x360, is below the 50 M decisions/s target
 * (encode or decode) in any case; --learned: also the learned prior with
 * that network (bsqcodec train-prior) at 640x360. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/prior.h"
#include "codec/prior_net.h"
#include "codec/rangecoder.h"
#include "synth_tokens.h"

#define TARGET_MDPS 50.0 /* M decisions/s per core: coder alone, and with the context prior */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench_coder: out of memory\n");
        exit(2);
    }
    return p;
}

/* ------------------------------------------------------------ raw coder */

enum { C_UNIFORM, C_RANDOM_P, C_SKEWED, C_BYPASS, N_CASES };
static const char *const case_name[N_CASES] = {
    "p = 1/2, random bits",
    "p random in [1, 65535], bits from p",
    "p = 0.98 / 0.02, bits from p",
    "bypass (equiprobable) bits",
};

typedef struct result {
    double enc_mdps, dec_mdps, bits_per_decision;
} result;

static result bench_raw(int c, size_t n, int reps)
{
    uint8_t *bit = xmalloc(n);
    uint16_t *p1 = xmalloc(n * sizeof *p1);
    uint64_t st = 1234 + (uint64_t)c;
    for (size_t i = 0; i < n; i++) {
        uint64_t r = synth_rnd(&st);
        uint32_t p = c == C_RANDOM_P ? 1 + (uint32_t)(r % 65535)
                     : c == C_SKEWED ? ((r & 1) ? 64225 : 1311)
                                     : 32768;
        p1[i] = (uint16_t)p;
        bit[i] = (uint8_t)(((r >> 40) & 0xFFFF) < p);
    }
    result res = {0, 0, 0};
    double best_enc = 1e30, best_dec = 1e30;
    for (int rep = 0; rep < reps; rep++) {
        bsq_rc_encoder enc;
        bsq_rc_enc_init(&enc);
        double t0 = now_s();
        if (c == C_BYPASS) {
            for (size_t i = 0; i < n; i++)
                bsq_rc_encode_bypass(&enc, bit[i]);
        } else {
            for (size_t i = 0; i < n; i++)
                bsq_rc_encode(&enc, bit[i], p1[i]);
        }
        uint8_t *out;
        size_t len;
        if (bsq_rc_enc_finish(&enc, &out, &len, NULL) != BSQ_OK) {
            fprintf(stderr, "bench_coder: encoder failed\n");
            exit(2);
        }
        double t1 = now_s();
        bsq_rc_decoder dec;
        bsq_rc_dec_init(&dec, out, len);
        size_t wrong = 0;
        if (c == C_BYPASS) {
            for (size_t i = 0; i < n; i++)
                wrong += (size_t)(bsq_rc_decode_bypass(&dec) != bit[i]);
        } else {
            for (size_t i = 0; i < n; i++)
                wrong += (size_t)(bsq_rc_decode(&dec, p1[i]) != bit[i]);
        }
        double t2 = now_s();
        if (wrong || bsq_rc_dec_finish(&dec, NULL) != BSQ_OK) {
            fprintf(stderr, "bench_coder: round trip failed (%zu wrong)\n", wrong);
            exit(2);
        }
        if (t1 - t0 < best_enc)
            best_enc = t1 - t0;
        if (t2 - t1 < best_dec)
            best_dec = t2 - t1;
        res.bits_per_decision = 8.0 * (double)len / (double)n;
        free(out);
    }
    res.enc_mdps = (double)n / best_enc / 1e6;
    res.dec_mdps = (double)n / best_dec / 1e6;
    free(bit);
    free(p1);
    return res;
}

/* ------------------------------------------------------------ prior */

enum { S_REGIONS, S_FLIP, S_UNIFORM, N_SOURCES };
static const char *const source_name[N_SOURCES] = {
    "moving regions, 3% bit noise",
    "static, 2% bits flipped per frame",
    "i.i.d. uniform bits",
};

/* Token frames (tests/synth_tokens.c): moving regions, a static scene with
 * 2% of bits flipped per frame, or noise. */
static void make_frames(int src, const bsq_frame_geom *g, int frames, uint64_t *t)
{
    static const enum synth_source kind[N_SOURCES] = {SYNTH_REGIONS, SYNTH_FLIP, SYNTH_UNIFORM};
    synth_token_frames(kind[src], g, frames, 24, 99 + (uint64_t)src, t);
}

static bsq_prior *make_prior(const bsq_frame_geom *g, const char *net_path)
{
    bsq_prior *p;
    bsq_error err;
    bsq_prior_net *net = NULL;
    if (net_path && bsq_prior_net_open(net_path, &net, &err) != BSQ_OK) {
        fprintf(stderr, "bench_coder: %s\n", err.message);
        exit(2);
    }
    if ((net ? bsq_prior_learned_create(g, net, &p, &err) : bsq_prior_context_create(g, &p, &err)) !=
        BSQ_OK) {
        fprintf(stderr, "bench_coder: %s\n", err.message);
        exit(2);
    }
    return p;
}

static result bench_prior(int src, const bsq_frame_geom *g, int frames, int reps,
                          const char *net)
{
    const size_t n = (size_t)g->tiles_y * g->tiles_x * g->grid_h * g->grid_w;
    uint64_t *tok = xmalloc(n * (size_t)frames * sizeof *tok);
    uint64_t *got = xmalloc(n * (size_t)frames * sizeof *got);
    make_frames(src, g, frames, tok);
    double best_enc = 1e30, best_dec = 1e30;
    result res = {0, 0, 0};
    bsq_error err;
    for (int rep = 0; rep < reps; rep++) {
        bsq_prior *p = make_prior(g, net);
        bsq_rc_encoder enc;
        bsq_rc_enc_init(&enc);
        double t0 = now_s();
        for (int f = 0; f < frames; f++)
            if (p->ops->encode_frame(p, tok + (size_t)f * n, &enc, &err) != BSQ_OK) {
                fprintf(stderr, "bench_coder: %s\n", err.message);
                exit(2);
            }
        uint8_t *out;
        size_t len;
        if (bsq_rc_enc_finish(&enc, &out, &len, &err) != BSQ_OK)
            exit(2);
        double t1 = now_s();
        p->ops->destroy(p);
        p = make_prior(g, net);
        bsq_rc_decoder dec;
        bsq_rc_dec_init(&dec, out, len);
        double t2 = now_s();
        for (int f = 0; f < frames; f++)
            if (p->ops->decode_frame(p, got + (size_t)f * n, &dec, &err) != BSQ_OK) {
                fprintf(stderr, "bench_coder: %s\n", err.message);
                exit(2);
            }
        double t3 = now_s();
        p->ops->destroy(p);
        if (bsq_rc_dec_finish(&dec, NULL) != BSQ_OK ||
            memcmp(tok, got, n * (size_t)frames * sizeof *tok) != 0) {
            fprintf(stderr, "bench_coder: prior round trip failed\n");
            exit(2);
        }
        if (t1 - t0 < best_enc)
            best_enc = t1 - t0;
        if (t3 - t2 < best_dec)
            best_dec = t3 - t2;
        res.bits_per_decision = 8.0 * (double)len / ((double)n * frames * g->L);
        free(out);
    }
    const double decisions = (double)n * frames * g->L;
    res.enc_mdps = decisions / best_enc / 1e6;
    res.dec_mdps = decisions / best_dec / 1e6;
    free(tok);
    free(got);
    return res;
}

int main(int argc, char **argv)
{
    int quick = 0, check = 0;
    const char *learned = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--learned")) {
            learned = argv[++i];
        } else if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--check")) {
            check = 1;
        } else {
            fprintf(stderr, "usage: %s [--quick] [--check] [--learned NET]\n", argv[0]);
            return 2;
        }
    }
    const size_t n = quick ? (size_t)2 << 20 : (size_t)16 << 20;
    const int reps = quick ? 2 : 5, frames = quick ? 4 : 16;

    printf("Entropy coding, one core (best of %d runs; M = 10^6 binary decisions/s)\n\n", reps);
    printf("| stage | data | decisions | encode M/s | decode M/s | coded bits/decision |\n");
    printf("|---|---|---:|---:|---:|---:|\n");
    double worst = 1e30;
    for (int c = 0; c < N_CASES; c++) {
        result r = bench_raw(c, n, reps);
        printf("| range coder | %s | %zu | %.1f | %.1f | %.4f |\n", case_name[c], n, r.enc_mdps,
               r.dec_mdps, r.bits_per_decision);
        if (r.enc_mdps < worst)
            worst = r.enc_mdps;
        if (r.dec_mdps < worst)
            worst = r.dec_mdps;
    }
    const bsq_frame_geom g = {18, 1, 1, 45, 80};
    for (int s = 0; s < N_SOURCES; s++) {
        result r = bench_prior(s, &g, frames, reps, NULL);
        printf("| context prior + coder | L=18, 45x80 tokens, %d frames, %s | %zu | %.1f | %.1f "
               "| %.4f |\n",
               frames, source_name[s], (size_t)45 * 80 * 18 * frames, r.enc_mdps, r.dec_mdps,
               r.bits_per_decision);
    }
    /* 640x360 with 128x128 tiles: 3 x 6 tiles of 16 x 16 tokens */
    const bsq_frame_geom gl = {18, 3, 6, 16, 16};
    const double per_frame = 3.0 * 6 * 16 * 16 * 18;
    double worst_prior = 1e30;
    printf("\n| prior + coder, 640x360 frames (3x6 tiles of 16x16 tokens) | data | encode "
           "fps | decode fps | encode M/s | decode M/s | coded bits/decision |\n");
    printf("|---|---|---:|---:|---:|---:|---:|\n");
    for (int k = 0; k < (learned ? 2 : 1); k++)
        for (int s = 0; s < N_SOURCES - 1; s++) {
            result r = bench_prior(s, &gl, frames, reps, k ? learned : NULL);
            printf("| %s | %s | %.1f | %.1f | %.1f | %.1f | %.4f |\n", k ? "learned" : "context",
                   source_name[s], r.enc_mdps * 1e6 / per_frame, r.dec_mdps * 1e6 / per_frame,
                   r.enc_mdps, r.dec_mdps, r.bits_per_decision);
            if (!k && r.enc_mdps < worst_prior)
                worst_prior = r.enc_mdps;
            if (!k && r.dec_mdps < worst_prior)
                worst_prior = r.dec_mdps;
        }
    printf("\nRange coder, slowest case: %.1f M decisions/s (target %.0f): %s\n", worst,
           TARGET_MDPS, worst >= TARGET_MDPS ? "met" : "NOT met");
    printf("Context prior + coder at 640x360, slowest case: %.1f M decisions/s (target %.0f): "
           "%s\n",
           worst_prior, TARGET_MDPS, worst_prior >= TARGET_MDPS ? "met" : "NOT met");
    return check && (worst < TARGET_MDPS || worst_prior < TARGET_MDPS) ? 1 : 0;
}
