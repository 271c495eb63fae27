/* The binary range coder (lib/codec/rangecoder.c) and the context-adaptive
 * prior (lib/codec/context_model.c): round trips of many lengths and
 * probability patterns, fixed byte vectors that pin the output on every
 * platform and optimisation level, damaged streams (never read out of
 * bounds, always reported), and compression sanity figures. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/prior.h"
#include "codec/rangecoder.h"
#include "synth_tokens.h"

/* Expected outputs of the fixed-vector tests, identical at every -O level
 * with gcc and clang. A deliberate change to the coder or the prior changes
 * them: then bump CM_VERSION in context_model.c (which changes
 * PRIOR_FINGERPRINT) so old files are never decoded with the new model. */
#define RC_VECTOR_64 0xc4, 0xcf, 0x4c, 0xf0, 0x55, 0x12, 0xc3, 0x68, 0x58, 0x5a, 0xce
#define RC_VECTOR_BIG_LEN 30450
#define RC_VECTOR_BIG_CRC 0xfda6fe49u
#define PRIOR_FINGERPRINT                                                                      \
    0xd4, 0x6d, 0x50, 0xd5, 0x81, 0x40, 0x2c, 0xc6, 0x8f, 0xaf, 0xac, 0x5e, 0xf2, 0xec, 0x18, 0x93
#define PRIOR_VECTOR_LEN 2588
#define PRIOR_VECTOR_CRC 0x14c01611u
#define PRIOR_VECTOR_HEAD                                                                      \
    0xcb, 0x54, 0x6e, 0x04, 0x57, 0xfd, 0xd3, 0xba, 0xcf, 0x22, 0xda, 0x08, 0xee, 0x12, 0xdd, 0x33

/* ------------------------------------------------------------ helpers */

/* CRC-32 (IEEE 802.3, reflected), bitwise: slow and obviously right. */
static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

/* A sequence of binary decisions with their probabilities. */
typedef struct seq {
    size_t n;
    uint8_t *bit;
    uint16_t *p1;
} seq;

enum pattern {
    PAT_RANDOM_P,   /* p uniform in [1, 65535], bits drawn from p */
    PAT_EXTREME_P,  /* p in {1, 2, 65534, 65535}, bits drawn from p */
    PAT_CONTRARY,   /* extreme p, bits mostly the unlikely value (worst case) */
    PAT_CONST_HALF, /* p = 32768, random bits */
    PAT_CONST_1,    /* p = 1, bits drawn from p (all 0 in practice) */
    PAT_CONST_MAX,  /* p = 65535, bits drawn from p */
    PAT_CONST_7,    /* p = 7, random bits (mostly costly) */
    PAT_SKEWED,     /* p near 0.99 or 0.01, bits drawn from p */
    N_PAT
};

static seq make_seq(enum pattern pat, size_t n, uint64_t seed)
{
    seq s = {n, malloc(n + 1), malloc(2 * (n + 1))};
    ck_assert_ptr_nonnull(s.bit);
    ck_assert_ptr_nonnull(s.p1);
    uint64_t st = seed;
    for (size_t i = 0; i < n; i++) {
        uint64_t r = synth_rnd(&st);
        uint32_t u = (uint32_t)(r >> 40) & 0xFFFFu; /* uniform 16 bits */
        uint32_t p;
        switch (pat) {
        case PAT_RANDOM_P: p = 1 + (uint32_t)(r % 65535u); break;
        case PAT_EXTREME_P:
        case PAT_CONTRARY: {
            static const uint32_t ext[4] = {1, 2, 65534, 65535};
            p = ext[r & 3];
            break;
        }
        case PAT_CONST_HALF: p = 32768; break;
        case PAT_CONST_1: p = 1; break;
        case PAT_CONST_MAX: p = 65535; break;
        case PAT_CONST_7: p = 7; break;
        default: p = (r & 1) ? 64880 : 656; break;
        }
        int bit = u < p;
        if (pat == PAT_CONTRARY)
            bit = (r >> 3) % 8 ? (p < 32768) : !(p < 32768);
        if (pat == PAT_CONST_7)
            bit = (int)((r >> 5) & 1);
        s.bit[i] = (uint8_t)bit;
        s.p1[i] = (uint16_t)p;
    }
    return s;
}

static void free_seq(seq *s)
{
    free(s->bit);
    free(s->p1);
}

static uint8_t *encode_seq(const seq *s, size_t *len)
{
    bsq_rc_encoder enc;
    bsq_rc_enc_init(&enc);
    for (size_t i = 0; i < s->n; i++)
        bsq_rc_encode(&enc, s->bit[i], s->p1[i]);
    const uint64_t predicted = bsq_rc_enc_size(&enc);
    uint8_t *out = NULL;
    bsq_error err;
    ck_assert_int_eq(bsq_rc_enc_finish(&enc, &out, len, &err), BSQ_OK);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(predicted, *len);
    return out;
}

/* Decodes s->n decisions from bytes (a private copy of exactly len bytes,
 * so ASan sees any read past the end); returns how many differ and the
 * decoder's final verdict. */
static size_t decode_seq(const seq *s, const uint8_t *bytes, size_t len, bsq_status *verdict,
                         int *overrun)
{
    uint8_t *copy = len ? malloc(len) : NULL;
    if (len) {
        ck_assert_ptr_nonnull(copy);
        memcpy(copy, bytes, len);
    }
    bsq_rc_decoder dec;
    bsq_rc_dec_init(&dec, copy, len);
    size_t wrong = 0;
    for (size_t i = 0; i < s->n; i++)
        wrong += (size_t)(bsq_rc_decode(&dec, s->p1[i]) != s->bit[i]);
    bsq_error err;
    *verdict = bsq_rc_dec_finish(&dec, &err);
    *overrun = bsq_rc_dec_overrun(&dec);
    free(copy);
    return wrong;
}

static void round_trip(enum pattern pat, size_t n, uint64_t seed)
{
    seq s = make_seq(pat, n, seed);
    size_t len;
    uint8_t *out = encode_seq(&s, &len);
    ck_assert_uint_ge(len, 4);
    bsq_status verdict;
    int overrun;
    size_t wrong = decode_seq(&s, out, len, &verdict, &overrun);
    ck_assert_msg(wrong == 0, "pattern %d, n %zu: %zu decisions decoded wrongly", pat, n, wrong);
    ck_assert_msg(verdict == BSQ_OK && !overrun, "pattern %d, n %zu: clean stream not accepted",
                  pat, n);
    free(out);
    free_seq(&s);
}

/* ------------------------------------------------------------ coder */

START_TEST(rc_round_trip_short)
{
    for (int pat = 0; pat < N_PAT; pat++)
        for (size_t n = 0; n <= 100; n++)
            round_trip((enum pattern)pat, n, 1000 * (uint64_t)pat + n);
}
END_TEST

START_TEST(rc_round_trip_long)
{
    static const size_t lens[] = {255, 256, 257, 1000, 4099, 65536, 300007};
    for (int pat = 0; pat < N_PAT; pat++)
        for (size_t k = 0; k < sizeof lens / sizeof *lens; k++)
            round_trip((enum pattern)pat, lens[k], 77 + (uint64_t)pat * 31 + k);
}
END_TEST

/* Long runs that push the interval around 0xFF... boundaries: many
 * pending 0xFF bytes, then a carry through all of them. */
START_TEST(rc_carry_runs)
{
    for (uint64_t seed = 1; seed <= 40; seed++) {
        uint64_t st = seed;
        size_t n = 20000;
        seq s = {n, malloc(n), malloc(2 * n)};
        for (size_t i = 0; i < n; i++) {
            uint64_t r = synth_rnd(&st);
            /* stretches of near-certain "0 at p1 = 65535" (low climbs by
             * almost the whole range) broken by surprises */
            int phase = (int)((i / (50 + seed)) % 3);
            s.p1[i] = (uint16_t)(phase == 0 ? 65535 : phase == 1 ? 1 + (r % 65535) : 32768);
            s.bit[i] = (uint8_t)(phase == 0 ? (r % 97 == 0) : (r >> 20) & 1);
        }
        size_t len;
        uint8_t *out = encode_seq(&s, &len);
        bsq_status verdict;
        int overrun;
        ck_assert_uint_eq(decode_seq(&s, out, len, &verdict, &overrun), 0);
        ck_assert_int_eq(verdict, BSQ_OK);
        free(out);
        free_seq(&s);
    }
}
END_TEST

START_TEST(rc_bypass_and_bits)
{
    uint64_t st = 42;
    bsq_rc_encoder enc;
    bsq_rc_enc_init(&enc);
    enum { N = 3000 };
    uint64_t vals[N];
    int widths[N];
    for (int i = 0; i < N; i++) {
        widths[i] = (int)(synth_rnd(&st) % 65); /* 0..64 */
        uint64_t v = synth_rnd(&st);
        vals[i] = widths[i] == 64 ? v : v & (((uint64_t)1 << widths[i]) - 1);
        bsq_rc_encode_bits(&enc, vals[i], widths[i]);
        bsq_rc_encode_bypass(&enc, i & 1);
        bsq_rc_encode(&enc, (int)(vals[i] & 1), (uint32_t)(1 + i * 21 % 65535));
    }
    uint8_t *out;
    size_t len;
    ck_assert_int_eq(bsq_rc_enc_finish(&enc, &out, &len, NULL), BSQ_OK);
    bsq_rc_decoder dec;
    bsq_rc_dec_init(&dec, out, len);
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(bsq_rc_decode_bits(&dec, widths[i]), vals[i]);
        ck_assert_int_eq(bsq_rc_decode_bypass(&dec), i & 1);
        ck_assert_int_eq(bsq_rc_decode(&dec, (uint32_t)(1 + i * 21 % 65535)), (int)(vals[i] & 1));
    }
    ck_assert_int_eq(bsq_rc_dec_finish(&dec, NULL), BSQ_OK);
    free(out);
}
END_TEST

/* Cost: coded size is within a few bytes of the sum of -log2 p. */
START_TEST(rc_efficiency)
{
    for (int pat = 0; pat < N_PAT; pat++) {
        seq s = make_seq((enum pattern)pat, 200000, 5 + (uint64_t)pat);
        double ideal = 0; /* sum of -log2 P(coded bit) */
        for (size_t i = 0; i < s.n; i++)
            ideal -= log2((s.bit[i] ? s.p1[i] : 65536.0 - s.p1[i]) / 65536.0);
        size_t len;
        uint8_t *out = encode_seq(&s, &len);
        double actual = 8.0 * (double)len;
        /* 16-bit probabilities over a >= 2^24 range: < 0.2% extra, and
         * at most ~0.001 bit per near-certain decision; plus 4 flush bytes */
        ck_assert_msg(actual <= ideal * 1.002 + 0.001 * (double)s.n + 32,
                      "pattern %d: %.0f bits coded, %.0f ideal", pat, actual, ideal);
        free(out);
        free_seq(&s);
    }
}
END_TEST

/* Fixed vectors: any change of output on any platform fails here. */
static seq vector_seq(size_t n)
{
    seq s = {n, malloc(n), malloc(2 * n)};
    uint64_t st = 0x5EEDu;
    for (size_t i = 0; i < n; i++) {
        uint64_t r = synth_rnd(&st);
        uint32_t p = (i % 5 == 4) ? ((r & 1) ? 1 : 65535) : 1 + (uint32_t)(r % 65535);
        uint32_t u = (uint32_t)(r >> 40) & 0xFFFFu;
        s.p1[i] = (uint16_t)p;
        s.bit[i] = (uint8_t)((i % 11 == 10) ? !(u < p) : (u < p));
    }
    return s;
}

START_TEST(rc_fixed_vectors)
{
    /* empty stream: the 4 bytes of low = 0 */
    {
        bsq_rc_encoder enc;
        bsq_rc_enc_init(&enc);
        uint8_t *out;
        size_t len;
        ck_assert_int_eq(bsq_rc_enc_finish(&enc, &out, &len, NULL), BSQ_OK);
        ck_assert_uint_eq(len, 4);
        static const uint8_t want[4] = {0, 0, 0, 0};
        ck_assert_mem_eq(out, want, 4);
        free(out);
    }
    /* 64 decisions: exact bytes */
    {
        seq s = vector_seq(64);
        size_t len;
        uint8_t *out = encode_seq(&s, &len);
        static const uint8_t want[] = {RC_VECTOR_64};
        ck_assert_msg(len == sizeof want, "64-decision vector: %zu bytes, want %zu", len,
                      sizeof want);
        ck_assert_mem_eq(out, want, sizeof want);
        free(out);
        free_seq(&s);
    }
    /* 250000 decisions with bypass bits mixed in: length and CRC-32 */
    {
        seq s = vector_seq(250000);
        bsq_rc_encoder enc;
        bsq_rc_enc_init(&enc);
        for (size_t i = 0; i < s.n; i++) {
            bsq_rc_encode(&enc, s.bit[i], s.p1[i]);
            if (i % 1000 == 999)
                bsq_rc_encode_bits(&enc, i * 0x9E3779B97F4A7C15ull, (int)(i / 1000 % 65));
        }
        uint8_t *out;
        size_t len;
        ck_assert_int_eq(bsq_rc_enc_finish(&enc, &out, &len, NULL), BSQ_OK);
        uint32_t crc = crc32_of(out, len);
        ck_assert_msg(len == RC_VECTOR_BIG_LEN && crc == RC_VECTOR_BIG_CRC,
                      "big vector: %zu bytes, CRC 0x%08x; want %u bytes, CRC 0x%08x", len,
                      (unsigned)crc, (unsigned)RC_VECTOR_BIG_LEN, (unsigned)RC_VECTOR_BIG_CRC);
        free(out);
        free_seq(&s);
    }
}
END_TEST

/* Every truncation and every single-byte corruption of a stream: decoding
 * the same number of decisions stays in bounds (ASan), terminates, and
 * bsq_rc_dec_finish refuses the stream. */
START_TEST(rc_damaged_streams)
{
    for (int pat = 0; pat < N_PAT; pat += 2) {
        seq s = make_seq((enum pattern)pat, 600, 900 + (uint64_t)pat);
        size_t len;
        uint8_t *out = encode_seq(&s, &len);
        bsq_status verdict;
        int overrun;
        for (size_t cut = 0; cut < len; cut++) {
            decode_seq(&s, out, cut, &verdict, &overrun);
            ck_assert_msg(verdict != BSQ_OK, "pattern %d: stream cut to %zu of %zu accepted", pat,
                          cut, len);
        }
        /* nothing at all: the first 4 reads are already past the end */
        decode_seq(&s, out, 0, &verdict, &overrun);
        ck_assert(overrun);
        uint8_t *bad = malloc(len + 1);
        for (size_t i = 0; i < len; i++) {
            memcpy(bad, out, len);
            bad[i] ^= (uint8_t)(1u << (i % 8));
            decode_seq(&s, bad, len, &verdict, &overrun);
            ck_assert_msg(verdict != BSQ_OK, "pattern %d: byte %zu flipped, stream accepted", pat,
                          i);
        }
        /* a trailing extra byte is reported too */
        memcpy(bad, out, len);
        bad[len] = 0;
        ck_assert_uint_eq(decode_seq(&s, bad, len + 1, &verdict, &overrun), 0);
        ck_assert_int_eq(verdict, BSQ_ERR_FORMAT);
        ck_assert(!overrun);
        free(bad);
        free(out);
        free_seq(&s);
    }
}
END_TEST

/* Random garbage of any length, decoded far past its end with arbitrary
 * probabilities: terminates without faults, and reports the overrun. */
START_TEST(rc_garbage_input)
{
    uint64_t st = 99;
    for (size_t len = 0; len < 64; len++) {
        uint8_t *g = len ? malloc(len) : NULL;
        for (size_t i = 0; i < len; i++)
            g[i] = (uint8_t)synth_rnd(&st);
        bsq_rc_decoder dec;
        bsq_rc_dec_init(&dec, g, len);
        for (int i = 0; i < 5000; i++) {
            uint32_t p = 1 + (uint32_t)(synth_rnd(&st) % 65535);
            if (i % 3 == 0)
                (void)bsq_rc_decode_bypass(&dec);
            else
                (void)bsq_rc_decode(&dec, i % 2 ? p : (i % 4 ? 1 : 65535));
            ck_assert_uint_ge(dec.range, BSQ_RC_TOP);
        }
        ck_assert(bsq_rc_dec_overrun(&dec));
        ck_assert_int_eq(bsq_rc_dec_finish(&dec, NULL), BSQ_ERR_FORMAT);
        free(g);
    }
}
END_TEST

/* ------------------------------------------------------------ prior */

/* Token sources (tests/synth_tokens.c). */
enum source { SRC_UNIFORM = SYNTH_UNIFORM, SRC_FLIP = SYNTH_FLIP, SRC_REGIONS = SYNTH_REGIONS };

static size_t geom_count(const bsq_frame_geom *g)
{
    return (size_t)g->tiles_y * g->tiles_x * g->grid_h * g->grid_w;
}

static uint64_t *make_frames(enum source src, const bsq_frame_geom *g, int frames, uint64_t seed)
{
    uint64_t *t = malloc(geom_count(g) * (size_t)frames * sizeof *t);
    ck_assert_ptr_nonnull(t);
    synth_token_frames((enum synth_source)src, g, frames, 12, seed, t);
    return t;
}

static bsq_prior *new_prior(const bsq_frame_geom *g)
{
    bsq_prior *p = NULL;
    bsq_error err;
    bsq_status st = bsq_prior_context_create(g, &p, &err);
    ck_assert_msg(st == BSQ_OK, "create: %s", err.message);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* Encodes frames (a reset before frame `reset_at`, if > 0), returns the
 * stream; sizes[f] gets the coded size in bits after frame f. */
static uint8_t *encode_frames(const bsq_frame_geom *g, const uint64_t *tok, int frames, int reset_at,
                              size_t *len, double *sizes)
{
    bsq_prior *p = new_prior(g);
    size_t n = geom_count(g);
    bsq_rc_encoder enc;
    bsq_rc_enc_init(&enc);
    bsq_error err;
    for (int f = 0; f < frames; f++) {
        if (f == reset_at && f > 0)
            p->ops->reset(p);
        bsq_status st = p->ops->encode_frame(p, tok + (size_t)f * n, &enc, &err);
        ck_assert_msg(st == BSQ_OK, "encode_frame: %s", err.message);
        if (sizes)
            sizes[f] = 8.0 * (double)bsq_rc_enc_size(&enc);
    }
    uint8_t *out;
    ck_assert_int_eq(bsq_rc_enc_finish(&enc, &out, len, &err), BSQ_OK);
    p->ops->destroy(p);
    return out;
}

static void prior_round_trip(const bsq_frame_geom *g, enum source src, int frames, int reset_at,
                             uint64_t seed)
{
    size_t n = geom_count(g), len;
    uint64_t *tok = make_frames(src, g, frames, seed);
    uint8_t *bytes = encode_frames(g, tok, frames, reset_at, &len, NULL);
    uint8_t *copy = malloc(len);
    memcpy(copy, bytes, len);
    bsq_prior *p = new_prior(g);
    bsq_rc_decoder dec;
    bsq_rc_dec_init(&dec, copy, len);
    uint64_t *got = malloc(n * sizeof *got);
    bsq_error err;
    for (int f = 0; f < frames; f++) {
        if (f == reset_at && f > 0)
            p->ops->reset(p);
        memset(got, 0xA5, n * sizeof *got); /* decoding must overwrite everything */
        bsq_status st = p->ops->decode_frame(p, got, &dec, &err);
        ck_assert_msg(st == BSQ_OK, "decode_frame: %s", err.message);
        ck_assert_msg(memcmp(got, tok + (size_t)f * n, n * sizeof *got) == 0,
                      "L=%d tiles %dx%d grid %dx%d source %d: frame %d decoded wrongly", g->L,
                      g->tiles_y, g->tiles_x, g->grid_h, g->grid_w, src, f);
    }
    ck_assert_int_eq(bsq_rc_dec_finish(&dec, &err), BSQ_OK);
    p->ops->destroy(p);
    free(got);
    free(copy);
    free(bytes);
    free(tok);
}

START_TEST(prior_round_trips)
{
    static const int Ls[] = {1, 18, 36, 64};
    static const int tiles[][2] = {{1, 1}, {2, 3}};
    static const int grids[][2] = {{1, 1}, {4, 4}, {3, 7}};
    /* small frames: every source, 5 frames with a GOP reset before the 4th */
    for (size_t li = 0; li < 4; li++)
        for (size_t ti = 0; ti < 2; ti++)
            for (size_t gi = 0; gi < 3; gi++) {
                bsq_frame_geom g = {Ls[li], tiles[ti][0], tiles[ti][1], grids[gi][0],
                                    grids[gi][1]};
                for (int src = 0; src < 3; src++)
                    prior_round_trip(&g, (enum source)src, 5, 3,
                                     li * 100 + ti * 10 + gi + (uint64_t)src * 1000);
            }
    /* 45x80: two frames, every L on one tile, and 2x3 tiles at L = 18 */
    for (size_t li = 0; li < 4; li++) {
        bsq_frame_geom g = {Ls[li], 1, 1, 45, 80};
        prior_round_trip(&g, SRC_REGIONS, 2, 0, 5000 + li);
    }
    bsq_frame_geom g = {18, 2, 3, 45, 80};
    prior_round_trip(&g, SRC_FLIP, 2, 0, 6000);
}
END_TEST

/* Reset forgets everything: the same frames after a reset code to the
 * same bytes as from a fresh prior. */
START_TEST(prior_reset_is_fresh)
{
    bsq_frame_geom g = {18, 1, 2, 6, 9};
    size_t n = geom_count(&g);
    uint64_t *tok = make_frames(SRC_REGIONS, &g, 3, 5);
    bsq_prior *p = new_prior(&g);
    uint8_t *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    for (int pass = 0; pass < 2; pass++) {
        bsq_rc_encoder enc;
        bsq_rc_enc_init(&enc);
        for (int f = 0; f < 3; f++)
            ck_assert_int_eq(p->ops->encode_frame(p, tok + (size_t)f * n, &enc, NULL), BSQ_OK);
        ck_assert_int_eq(bsq_rc_enc_finish(&enc, pass ? &b : &a, pass ? &lb : &la, NULL),
                         BSQ_OK);
        p->ops->reset(p);
    }
    ck_assert_uint_eq(la, lb);
    ck_assert_mem_eq(a, b, la);
    p->ops->destroy(p);
    free(a);
    free(b);
    free(tok);
}
END_TEST

START_TEST(prior_bad_arguments)
{
    bsq_prior *p = (bsq_prior *)&p; /* must be reset to NULL on failure */
    bsq_error err;
    static const bsq_frame_geom bad[] = {
        {0, 1, 1, 4, 4}, {65, 1, 1, 4, 4}, {18, 0, 1, 4, 4}, {18, 1, -1, 4, 4},
        {18, 1, 1, 0, 4}, {18, 1, 1, 4, 0}, {18, 65536, 65536, 65536, 65536},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&err, 0, sizeof err);
        ck_assert_int_eq(bsq_prior_context_create(&bad[i], &p, &err), BSQ_ERR_INVALID_ARGUMENT);
        ck_assert_ptr_null(p);
        ck_assert_int_eq(err.code, BSQ_ERR_INVALID_ARGUMENT);
        ck_assert(err.message[0] != 0);
    }
    ck_assert_int_eq(bsq_prior_context_create(NULL, &p, NULL), BSQ_ERR_INVALID_ARGUMENT);
    bsq_frame_geom g = {18, 1, 1, 2, 2};
    ck_assert_int_eq(bsq_prior_context_create(&g, NULL, NULL), BSQ_ERR_INVALID_ARGUMENT);

    /* tokens with bits above L are refused */
    p = new_prior(&g);
    uint64_t tok[4] = {1, 2, (uint64_t)1 << 18, 3};
    bsq_rc_encoder enc;
    bsq_rc_enc_init(&enc);
    ck_assert_int_eq(p->ops->encode_frame(p, tok, &enc, &err), BSQ_ERR_INVALID_ARGUMENT);
    bsq_rc_enc_free(&enc);
    p->ops->destroy(p);
}
END_TEST

START_TEST(prior_identity)
{
    bsq_frame_geom g = {18, 1, 1, 4, 4}, g2 = {64, 2, 3, 5, 5};
    bsq_prior *p = new_prior(&g), *q = new_prior(&g2);
    ck_assert_str_eq(p->ops->name, "context");
    ck_assert_int_eq(p->geom.L, 18);
    /* derived from name and version only: the same for every geometry */
    static const uint8_t want[16] = {PRIOR_FINGERPRINT};
    ck_assert_mem_eq(p->fingerprint, want, 16);
    ck_assert_mem_eq(q->fingerprint, want, 16);
    p->ops->destroy(p);
    q->ops->destroy(q);
}
END_TEST

/* Known tokens -> known bytes: pins the model's arithmetic everywhere. */
START_TEST(prior_fixed_vector)
{
    bsq_frame_geom g = {36, 2, 3, 5, 7};
    size_t n = geom_count(&g), len;
    uint64_t *tok = malloc(5 * n * sizeof *tok);
    uint64_t *r = make_frames(SRC_REGIONS, &g, 3, 2024);
    uint64_t *f = make_frames(SRC_FLIP, &g, 2, 7);
    memcpy(tok, r, 3 * n * sizeof *tok);
    memcpy(tok + 3 * n, f, 2 * n * sizeof *tok);
    uint8_t *bytes = encode_frames(&g, tok, 5, 3, &len, NULL);
    static const uint8_t head[16] = {PRIOR_VECTOR_HEAD};
    uint32_t crc = crc32_of(bytes, len);
    ck_assert_msg(len == PRIOR_VECTOR_LEN && crc == PRIOR_VECTOR_CRC,
                  "prior vector: %zu bytes, CRC 0x%08x; want %u bytes, CRC 0x%08x", len,
                  (unsigned)crc, (unsigned)PRIOR_VECTOR_LEN, (unsigned)PRIOR_VECTOR_CRC);
    ck_assert_mem_eq(bytes, head, 16);
    free(bytes);
    free(r);
    free(f);
    free(tok);
}
END_TEST

/* Truncated or corrupted frame streams decode in bounds and are reported. */
START_TEST(prior_damaged_stream)
{
    bsq_frame_geom g = {18, 1, 1, 6, 8};
    size_t n = geom_count(&g), len;
    uint64_t *tok = make_frames(SRC_REGIONS, &g, 2, 11);
    uint8_t *bytes = encode_frames(&g, tok, 2, 0, &len, NULL);
    uint64_t *got = malloc(2 * n * sizeof *got);
    for (size_t cut = 0; cut <= len; cut += (cut < 16 || cut + 16 > len) ? 1 : 7) {
        for (int corrupt = 0; corrupt < 2; corrupt++) {
            if (corrupt && cut == len)
                continue;
            size_t use = corrupt ? len : cut;
            uint8_t *copy = malloc(use + 1);
            memcpy(copy, bytes, use);
            if (corrupt)
                copy[cut] ^= 0x10;
            bsq_prior *p = new_prior(&g);
            bsq_rc_decoder dec;
            bsq_rc_dec_init(&dec, copy, use);
            bsq_status s0 = p->ops->decode_frame(p, got, &dec, NULL);
            bsq_status s1 = p->ops->decode_frame(p, got + n, &dec, NULL);
            bsq_status fin = bsq_rc_dec_finish(&dec, NULL);
            if (!corrupt && cut == len) {
                ck_assert(s0 == BSQ_OK && s1 == BSQ_OK && fin == BSQ_OK);
                ck_assert_mem_eq(got, tok, 2 * n * sizeof *got);
            } else {
                ck_assert_msg(s0 != BSQ_OK || s1 != BSQ_OK || fin != BSQ_OK,
                              "damaged stream (cut %zu, corrupt %d) accepted", cut, corrupt);
            }
            p->ops->destroy(p);
            free(copy);
        }
    }
    free(got);
    free(bytes);
    free(tok);
}
END_TEST

/* Compression sanity: temporal redundancy is found, noise costs ~L. */
START_TEST(prior_compression)
{
    /* 2% of bits flipped per frame: ideal H(0.02) = 0.141 L per token */
    {
        bsq_frame_geom g = {18, 1, 1, 45, 80};
        enum { F = 6 };
        size_t n = geom_count(&g), len;
        double sizes[F];
        uint64_t *tok = make_frames(SRC_FLIP, &g, F, 3);
        uint8_t *b = encode_frames(&g, tok, F, 0, &len, sizes);
        double later = (sizes[F - 1] - sizes[0]) / ((F - 1) * (double)n);
        fprintf(stderr, "prior: 2%% flips, L=18 45x80: first frame %.3f, later %.3f bits/token\n",
                sizes[0] / (double)n, later);
        ck_assert_msg(later < 0.4 * g.L, "temporal: %.3f bits/token", later);
        ck_assert_msg(later < 0.18 * g.L, "temporal: %.3f bits/token", later);
        free(b);
        free(tok);
    }
    /* uniform bits: within 1% of L */
    {
        static const bsq_frame_geom gs[] = {{18, 1, 1, 45, 80}, {64, 2, 3, 8, 8}};
        for (int k = 0; k < 2; k++) {
            const bsq_frame_geom *g = &gs[k];
            size_t n = geom_count(g), len;
            uint64_t *tok = make_frames(SRC_UNIFORM, g, 4, 4);
            uint8_t *b = encode_frames(g, tok, 4, 0, &len, NULL);
            double bpt = 8.0 * (double)len / (4.0 * (double)n);
            fprintf(stderr, "prior: uniform, L=%d: %.3f bits/token (%.2f%% of L)\n", g->L, bpt,
                    100.0 * bpt / g->L);
            ck_assert_msg(bpt < 1.01 * g->L, "uniform L=%d: %.3f bits/token", g->L, bpt);
            free(b);
            free(tok);
        }
    }
    /* moving regions with 3% noise: well below L */
    {
        bsq_frame_geom g = {18, 1, 1, 45, 80};
        size_t n = geom_count(&g), len;
        uint64_t *tok = make_frames(SRC_REGIONS, &g, 4, 8);
        uint8_t *b = encode_frames(&g, tok, 4, 0, &len, NULL);
        double bpt = 8.0 * (double)len / (4.0 * (double)n);
        fprintf(stderr, "prior: moving regions, L=18 45x80: %.3f bits/token\n", bpt);
        ck_assert_msg(bpt < 0.4 * g.L, "regions: %.3f bits/token", bpt);
        free(b);
        free(tok);
    }
}
END_TEST

static Suite *rc_suite(void)
{
    Suite *s = suite_create("rangecoder");
    TCase *tc = tcase_create("coder");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, rc_round_trip_short);
    tcase_add_test(tc, rc_round_trip_long);
    tcase_add_test(tc, rc_carry_runs);
    tcase_add_test(tc, rc_bypass_and_bits);
    tcase_add_test(tc, rc_efficiency);
    tcase_add_test(tc, rc_fixed_vectors);
    tcase_add_test(tc, rc_damaged_streams);
    tcase_add_test(tc, rc_garbage_input);
    suite_add_tcase(s, tc);
    TCase *tp = tcase_create("context_prior");
    tcase_set_timeout(tp, 120);
    tcase_add_test(tp, prior_round_trips);
    tcase_add_test(tp, prior_reset_is_fresh);
    tcase_add_test(tp, prior_bad_arguments);
    tcase_add_test(tp, prior_identity);
    tcase_add_test(tp, prior_fixed_vector);
    tcase_add_test(tp, prior_damaged_stream);
    tcase_add_test(tp, prior_compression);
    suite_add_tcase(s, tp);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(rc_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
