/* The context-adaptive baseline prior: integer-only, nothing learned offline.
 *
 * Visit order: tokens in layout order (tile row, tile column, grid row, grid
 * column), each token's bits from dimension 0 (MSB) to L-1. When bit d of a
 * token is coded the decoder already has every bit of the previous frame,
 * bits 0..d-1 of this token, and the tokens before it in the same tile.
 *
 * Nine reference tokens per token: the co-located one of the previous frame
 * (P), its four neighbours there (PW, PE, PN, PS), and the causal neighbours
 * in this frame (W, N, NW, NE); a reference outside the tile, or in the
 * previous frame of a GOP's first frame, is absent. Three adaptive tables,
 * each with its own small context (all also indexed by d), predict the bit:
 *   motion     P's bit d, mismatches so far between this token and P, how
 *              many of PW/PE/PN/PS have bit d set (and how many exist)
 *   similarity W and N bits d, mismatches so far with W and with N
 *   match      among references that agree with this token on all bits so
 *              far, and among those off by one bit: none / all say 0 / all
 *              say 1 / split
 * (v1 also had separate temporal and W/N/NW/NE spatial tables; v2 folds
 * temporal into motion and drops spatial for speed, at about the same size.)
 * "Mismatches so far" (bits 0..d-1, capped at 3) tells an unchanged or
 * copied token from a new one after a bit or two, which per-bit contexts
 * cannot; "match" is decoder-side block matching over the references.
 * Absent references are a third state ("none") where they index a table.
 *
 * Tables hold 22-bit probabilities with a hit count: the update rate starts
 * at 2/3 and falls as 2/(2n+3) to a floor of about 1/256 (fast learning,
 * then stable estimates). A logistic mixer (PAQ-style, fixed point) adds
 * the stretched predictions (ln(p/(1-p)) with 8 fractional bits) with
 * weights chosen by P's bit and the mismatches with P, squashes the sum to
 * a 16-bit probability for the coder and moves the weights along the
 * coding error. Everything is integer arithmetic on exact-width types, so
 * every machine computes the same probabilities.
 *
 * v3 is v2 made fast enough that coding is never the bottleneck (over 50 M
 * bits/s per core, bench/bench_coder): the only change to the arithmetic is
 * that a bit's weight step is taken after the next bit of the token has
 * been predicted (it costs nothing measurable in size), which takes the
 * mixer's learning off the path from one decoded bit to the next. Besides:
 * a bit learns while the next one is coded; each table entry's stretch is
 * kept in a compact array (no lookup between a bit and the next
 * prediction); the nine references are transposed to per-bit columns once
 * per token (SSE2 where there is one; the portable code, forced with
 * -DCM_NO_SIMD, gives the same columns); the mismatch counters and match
 * sets are packed words updated without branches; and the range coder's
 * state lives in registers. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__) && !defined(CM_NO_SIMD)
#include <emmintrin.h>
#define CM_SSE2 1
#endif

#include "codec/prior.h"
#include "codec/prior_net.h"
#include "codec/rangecoder.h"
#include "error.h"

#define CM_NAME "context"
#define CM_VERSION 3 /* bump on any change to the coded bytes */
#define LEARNED_NAME "learned"
#define LEARNED_VERSION 2

#if defined(__GNUC__)
#define CM_INLINE static inline __attribute__((always_inline))
#else
#define CM_INLINE static inline
#endif

/* Reference tokens, as bit positions in a column (one bit per reference).
 * P, W and N sit on even bits 0, 2, 4 so their mismatches line up with the
 * packed 2-bit counters (see code_frame); PW..PS are the top four bits. */
enum { R_P, R_NW, R_W, R_NE, R_N, R_PW, R_PE, R_PN, R_PS, N_REF };

enum {
    MAX_L = 64,
    N_IN = 3,         /* table inputs to the mixer */
    N_W = N_IN + 2,   /* plus the learned network's input ("learned" prior), and a bias */
    W_NET = N_IN,     /* index of the network's weight */
    W_BIAS = N_IN + 1,
    COUNT_LIMIT = 255, /* slowest table rate: 2/(2*255+3) */
    /* table sizes per dimension */
    /* P (0, 1, none), how many of PW..PS are present (0..4) and how many
     * of those have the bit set, mismatches with P (4); the last two
     * packed as present * (present + 1) / 2 + set; no P, nothing present */
    SZ_MOTION = (2 * 15 + 1) * 4,
    SZ_SIMILAR = 3 * 3 * 16,    /* W, N, mismatches with W and with N */
    SZ_MATCH = 4 * 4,
    OFF_MOTION = 0,
    OFF_SIMILAR = OFF_MOTION + SZ_MOTION,
    OFF_MATCH = OFF_SIMILAR + SZ_SIMILAR,
    SZ_DIM = OFF_MATCH + SZ_MATCH,
    MIX_SETS = 3 * 4, /* weight sets, chosen by co-located bit and mismatches */
    MIX_SHIFT = 16,   /* weights: 1.0 = 65536 */
    MIX_LR_SHIFT = 16, /* weight step = stretch * error (16-bit) >> this */
    W_MAX = 1 << 20,  /* weights are clamped to +-16.0 (see code_frame) */
    CLAMP_EVERY = 64, /* tokens between weight clamps */
    STRETCH_MAX = 2047,
    CNT_INC = 1 << R_P | 1 << R_W | 1 << R_N, /* low bits of the packed counters */
    MATCH_ONES = 0x1FF | 0x1FF << 10          /* both 9-bit fields of a match word */
};

/* 65536 / (1 + exp(-x)) at x = -8, -7.5, ..., 8 (rounded; generated
 * offline, integers here so nothing depends on a libm). */
static const int32_t squash_points[33] = {
    22,    36,    60,    98,    162,   267,   439,   720,   1179,  1921,  3108,
    4971,  7812,  11955, 17625, 24743, 32768, 40793, 47911, 53581, 57724, 60565,
    62428, 63615, 64357, 64816, 65097, 65269, 65374, 65438, 65476, 65500, 65514};

typedef struct cm_prior {
    bsq_prior base;
    const bsq_prior_net *net; /* the "learned" prior's network, NULL for "context" */
    bsq_prior_net *own_net;   /* freed with the prior */
    size_t count;   /* tokens per frame */
    int has_prev;   /* a previous frame exists in this GOP */
    uint64_t *prev; /* the previous frame's tokens */
    int32_t w[MIX_SETS * N_W];   /* mixer weights, 1.0 = 65536 */
    int64_t dt[COUNT_LIMIT + 1]; /* 131072 / (2n + 3): update rate by count */
    uint8_t next_n[COUNT_LIMIT + 1]; /* n + 1, up to COUNT_LIMIT */
    int16_t stretch[4096];       /* 12-bit probability -> ln-odds * 256 */
    uint16_t squash[2 * STRETCH_MAX + 1]; /* ln-odds -> P(1), 16 bits, >= 1 */
    /* column (one bit per reference) -> the parts of the motion and
     * similarity contexts and of the weight set that it decides */
    uint8_t col_motion[1 << N_REF], col_similar[1 << N_REF], col_wset[1 << N_REF];
    uint64_t spread[N_REF][16]; /* nibble -> its bits in four 16-bit lanes, at the reference's position */
    /* All tables, L * SZ_DIM entries: the stretch of each entry's
     * probability (what a prediction reads, kept compact so it stays in
     * the L1 cache), the probability of a 1 (22 bits) and how many times
     * it has been updated (saturating at COUNT_LIMIT). Fixed-size arrays
     * here, so that one register addresses everything in the bit loop. */
    int16_t st[MAX_L * SZ_DIM + 1];
    int32_t p[MAX_L * SZ_DIM + 1];
    uint8_t n[MAX_L * SZ_DIM + 1]; /* the last entry: scratch, never read for a prediction */
} cm_prior;

/* Right shifts of negative values must floor (arithmetic shift). C11 leaves
 * that to the implementation; every compiler we know documents it, and this
 * refuses to build where it does not, so coded bytes cannot silently differ. */
_Static_assert((-5 >> 1) == -3 && ((int64_t)-5 >> 1) == -3,
               "the context prior needs arithmetic right shifts of signed values");
CM_INLINE int64_t asr(int64_t x, int s) { return x >> s; }
CM_INLINE int32_t asr32(int32_t x, int s) { return x >> s; }

/* ln-odds (8 fractional bits, |x| <= 2047) -> P(1) in 1/65536 units. */
static int32_t squash(int32_t x)
{
    if (x > STRETCH_MAX)
        x = STRETCH_MAX;
    if (x < -STRETCH_MAX)
        x = -STRETCH_MAX;
    int32_t u = x + 2048; /* 1..4095: 16 points per unit, 128 steps each */
    int32_t i = u >> 7, f = u & 127;
    return (squash_points[i] * (128 - f) + squash_points[i + 1] * f + 64) >> 7;
}

static void init_tables(cm_prior *m)
{
    for (int n = 0; n <= COUNT_LIMIT; n++) {
        m->dt[n] = 131072 / (2 * n + 3);
        m->next_n[n] = (uint8_t)(n < COUNT_LIMIT ? n + 1 : n);
    }
    /* stretch = inverse of squash over 12-bit probabilities */
    int pi = 0;
    for (int x = -STRETCH_MAX; x <= STRETCH_MAX; x++) {
        int v = squash(x) >> 4;
        for (int j = pi; j <= v; j++)
            m->stretch[j] = (int16_t)x;
        pi = v + 1;
    }
    for (int j = pi; j < 4096; j++)
        m->stretch[j] = STRETCH_MAX;
    for (int x = -STRETCH_MAX; x <= STRETCH_MAX; x++)
        m->squash[x + STRETCH_MAX] = (uint16_t)squash(x); /* 22..65514 */
    for (uint32_t c = 0; c < 1u << N_REF; c++) {
        const uint32_t bP = c >> R_P & 1, bW = c >> R_W & 1, bN = c >> R_N & 1;
        const uint32_t around = (c >> R_PW & 1) + (c >> R_PE & 1) + (c >> R_PN & 1) + (c >> R_PS & 1);
        m->col_motion[c] = (uint8_t)((bP * 15 + around) * 4);
        m->col_similar[c] = (uint8_t)((bW * 3 + bN) * 16);
        m->col_wset[c] = (uint8_t)(bP * 4 * N_W);
    }
    for (int r = 0; r < N_REF; r++)
        for (uint64_t nib = 0; nib < 16; nib++) /* bit k to bit r of lane k */
            m->spread[r][nib] = ((nib & 1) | (nib >> 1 & 1) << 16 | (nib >> 2 & 1) << 32 |
                                 (nib >> 3 & 1) << 48) << r;
}

static void cm_reset(bsq_prior *p)
{
    cm_prior *m = (cm_prior *)p;
    int L = p->geom.L;
    m->has_prev = 0;
    for (size_t i = 0; i < (size_t)L * SZ_DIM; i++) { /* p = 1/2, count 0 */
        m->p[i] = 1 << 21;
        m->n[i] = 0;
        m->st[i] = m->stretch[(1 << 21) >> 10];
    }
    for (int i = 0; i < MIX_SETS; i++) {
        /* start as the average of the tables, or mostly the network */
        for (int k = 0; k < N_IN; k++)
            m->w[i * N_W + k] = m->net ? (1 << MIX_SHIFT) / 5 : (1 << MIX_SHIFT) / N_IN;
        m->w[i * N_W + W_NET] = m->net ? (1 << MIX_SHIFT) * 4 / 5 : 0;
        m->w[i * N_W + W_BIAS] = 0;
    }
}

/* Table update towards the coded bit: p += (target - p) * 2 / (2n + 3),
 * then n += 1 up to COUNT_LIMIT; the entry's stretch follows. */
CM_INLINE void tab_update(cm_prior *m, size_t i, int32_t target)
{
    const uint32_t n = m->n[i];
    const int32_t p = m->p[i]; /* 0 .. 2^22 - 1, and so is target */
    const int32_t q = p + (int32_t)asr((int64_t)(target - p) * m->dt[n], 16);
    m->p[i] = q;
    m->n[i] = m->next_n[n];
    m->st[i] = m->stretch[(uint32_t)q >> 10];
}

/* Moves a weight set along the coding error err (16-bit units) of a
 * prediction from inputs s0..s3. |s * err| < 2^27; rounded so that a
 * saturated mix stops moving, and err = 0 moves nothing. */
CM_INLINE void mix_update(int32_t *w, int32_t s0, int32_t s1, int32_t s2, int32_t s3,
                          int32_t err, const int learned)
{
    const int32_t rnd = 1 << (MIX_LR_SHIFT - 1);
    w[0] += asr32(s0 * err + rnd, MIX_LR_SHIFT);
    w[1] += asr32(s1 * err + rnd, MIX_LR_SHIFT);
    w[2] += asr32(s2 * err + rnd, MIX_LR_SHIFT);
    w[W_BIAS] += asr32(256 * err + rnd, MIX_LR_SHIFT);
    if (learned)
        w[W_NET] += asr32(s3 * err + rnd, MIX_LR_SHIFT);
}

/* One bit of a token in the bit loop: the references' bits, and what the
 * bit used, to learn from it while the next bit is coded. */
typedef struct cm_bit {
    int32_t err;         /* (bit << 16) - P(1), 16-bit units */
    uint16_t col;        /* the references' bits (bit r: reference r), the encoder's at bit 9 */
    uint16_t e0, e1, e2; /* its table entries */
    uint8_t w, spare;    /* its weight set */
} cm_bit;

/* Transposes the references (and the encoder's token, 0 when decoding) to
 * per-bit columns: rec[d].col for d = 0..L-1 (bit d = the d-th from the
 * top); the last group of columns may spill into rec[L..L+7] (SSE2) or
 * rec[-3..-1] (portable). Both give the same columns. */
CM_INLINE void transpose(const cm_prior *m, const uint64_t *R, uint64_t tok, int L, cm_bit *rec)
{
#ifdef CM_SSE2
    /* rows 0-8 the references, row 9 the token, top bit first; byte b of
     * all rows gathered into one vector, whose byte MSBs movemask takes */
    (void)m;
    const int a = 64 - L;
    const __m128i z = _mm_setzero_si128();
    const __m128i x0 = _mm_set_epi64x((long long)(R[1] << a), (long long)(R[0] << a));
    const __m128i x1 = _mm_set_epi64x((long long)(R[3] << a), (long long)(R[2] << a));
    const __m128i x2 = _mm_set_epi64x((long long)(R[5] << a), (long long)(R[4] << a));
    const __m128i x3 = _mm_set_epi64x((long long)(R[7] << a), (long long)(R[6] << a));
    const __m128i x4 = _mm_set_epi64x((long long)(tok << a), (long long)(R[8] << a));
    /* rows (0 2), (1 3), (4 6), (5 7), (8 -), (9 -) byte-interleaved */
    const __m128i p0 = _mm_unpacklo_epi8(x0, x1), p1 = _mm_unpackhi_epi8(x0, x1);
    const __m128i p2 = _mm_unpacklo_epi8(x2, x3), p3 = _mm_unpackhi_epi8(x2, x3);
    const __m128i p4 = _mm_unpacklo_epi8(x4, z), p5 = _mm_unpackhi_epi8(x4, z);
    /* rows 0-3, 4-7, 8-11: bytes 0-3 (q0 q2 q4) and 4-7 (q1 q3 q5) */
    const __m128i q0 = _mm_unpacklo_epi8(p0, p1), q1 = _mm_unpackhi_epi8(p0, p1);
    const __m128i q2 = _mm_unpacklo_epi8(p2, p3), q3 = _mm_unpackhi_epi8(p2, p3);
    const __m128i q4 = _mm_unpacklo_epi8(p4, p5), q5 = _mm_unpackhi_epi8(p4, p5);
    /* rows 0-7 of two bytes (s) and rows 8-11 of them (t) */
    const __m128i s[4] = {_mm_unpacklo_epi32(q0, q2), _mm_unpackhi_epi32(q0, q2),
                          _mm_unpacklo_epi32(q1, q3), _mm_unpackhi_epi32(q1, q3)};
    const __m128i t[4] = {_mm_unpacklo_epi32(q4, z), _mm_unpackhi_epi32(q4, z),
                          _mm_unpacklo_epi32(q5, z), _mm_unpackhi_epi32(q5, z)};
    for (int d = 0; d < L; d += 8) {
        const int b = 7 - d / 8; /* byte b holds bits d..d+7 */
        __m128i v = b & 1 ? _mm_unpackhi_epi64(s[b >> 1], t[b >> 1])
                          : _mm_unpacklo_epi64(s[b >> 1], t[b >> 1]);
        for (int k = 0; k < 8; k++, v = _mm_add_epi8(v, v))
            rec[d + k].col = (uint16_t)_mm_movemask_epi8(v);
    }
#else
    const int nnib = (L + 3) / 4;
    for (int j = 0; j < nnib; j++) {
        const int sh = 4 * j;
        uint64_t v = m->spread[0][R[0] >> sh & 15] | m->spread[1][R[1] >> sh & 15] |
                     m->spread[2][R[2] >> sh & 15] | m->spread[3][R[3] >> sh & 15] |
                     m->spread[4][R[4] >> sh & 15] | m->spread[5][R[5] >> sh & 15] |
                     m->spread[6][R[6] >> sh & 15] | m->spread[7][R[7] >> sh & 15] |
                     m->spread[8][R[8] >> sh & 15] | m->spread[0][tok >> sh & 15] << 9;
        cm_bit *const r = rec + (L - 1 - sh);
        for (int k = 0; k < 4; k++, v >>= 16)
            r[-k].col = (uint16_t)v;
    }
#endif
}

/* Learning from a coded bit (after the next bit's prediction: the weights
 * then move one bit late, and the tables, whose entries for bit d no other
 * bit of the token reads, are not on the path from bit to bit). */
CM_INLINE void learn(cm_prior *m, const cm_bit *b, int32_t s3, const int learned)
{
    const int32_t err = b->err;
    const uint32_t bit = err > 0, e0 = b->e0, e1 = b->e1, e2 = b->e2;
    mix_update(m->w + b->w, m->st[e0], m->st[e1], m->st[e2], s3, err, learned);
    const int32_t target = (int32_t)((0u - bit) & ((1u << 22) - 1));
    tab_update(m, e0, target);
    tab_update(m, e1, target);
    tab_update(m, e2, target);
}

/* Match state of the references exact so far and of those 1 bit off
 * (fields 0-8 and 10-18 of `match`) against a column (both fields): for
 * each set none, all say 0, all say 1, or split, as 0..3, the exact set's
 * in bits 0-1. A field is non-zero iff adding 0x1FF carries into the bit
 * above it. */
CM_INLINE uint32_t match_state(uint32_t match, uint32_t colx)
{
    const uint32_t t1 = match & colx, t0 = match ^ t1; /* saying 1, saying 0 */
    const uint32_t u = ((t1 + MATCH_ONES) >> 9 & 0x401u) * 2 + ((t0 + MATCH_ONES) >> 9 & 0x401u);
    return (u & 3u) | u >> 8; /* u has bits 0, 1, 10, 11 */
}

/* Codes (decoding: fills) one frame. The encoder and decoder run this same
 * code, so their contexts and probabilities agree by construction. An
 * absent reference reads as 0; where a table distinguishes "none", a
 * per-token offset adds 2 to its base-3 digit. */
CM_INLINE void code_frame(cm_prior *m, const uint64_t *in, uint64_t *out,
                          bsq_rc_encoder *enc, bsq_rc_decoder *dec, const int decoding,
                          const int learned)
{
    const bsq_prior_net *const net = m->net;
    const bsq_frame_geom *g = &m->base.geom;
    const int L = g->L, gh = g->grid_h, gw = g->grid_w;
    const size_t tile = (size_t)gh * gw, ntiles = (size_t)g->tiles_y * g->tiles_x;
    const uint32_t hp = (uint32_t)m->has_prev;
    /* The coder's registers in locals (stores to the tables could alias
     * them: int32_t and uint32_t may); stored back to renormalise. */
    uint64_t low = decoding ? 0 : enc->low;
    uint32_t range = decoding ? dec->range : enc->range, code = decoding ? dec->code : 0;

    for (size_t t = 0; t < ntiles; t++) {
        const uint64_t *cur = in + t * tile;
        const uint64_t *pv = m->prev + t * tile;
        int x = 0, y = 0; /* position of token i in its tile */
        for (size_t i = 0; i < tile; i++) {
            const uint32_t hw = x > 0, hn = y > 0, he = x + 1 < gw, hs = y + 1 < gh;
            uint64_t R[N_REF];
            R[R_P] = hp ? pv[i] : 0;
            R[R_W] = hw ? cur[i - 1] : 0;
            R[R_N] = hn ? cur[i - gw] : 0;
            R[R_NW] = hw & hn ? cur[i - gw - 1] : 0;
            R[R_NE] = hn & he ? cur[i - gw + 1] : 0;
            R[R_PW] = hp & hw ? pv[i - 1] : 0;
            R[R_PE] = hp & he ? pv[i + 1] : 0;
            R[R_PN] = hp & hn ? pv[i - gw] : 0;
            R[R_PS] = hp & hs ? pv[i + gw] : 0;
            const uint32_t avail = hp << R_P | hw << R_W | hn << R_N | (hw & hn) << R_NW |
                                   (hn & he) << R_NE | (hp & hw) << R_PW | (hp & he) << R_PE |
                                   (hp & hn) << R_PN | (hp & hs) << R_PS;
            cm_bit recs[MAX_L + 12], *const rec = recs + 3;
            transpose(m, R, decoding ? 0 : cur[i], L, rec);
            rec[L].col = 0; /* after the last bit */
            /* Bit d learns while bit d + 1 is coded (below); the first
             * bit's predecessor learns nothing: no error, scratch entries. */
            rec[-1].e0 = rec[-1].e1 = rec[-1].e2 = MAX_L * SZ_DIM;
            rec[-1].w = 0;
            rec[-1].err = 0;
            /* the network's view: 3x3 around P, then W N NW NE */
            int32_t zb[MAX_L], s3s[MAX_L + 1], *const s3_at = s3s + 1; /* s3_at[-1] = 0 */
            s3s[0] = 0;
            uint64_t nr[BSQ_NET_REFS];
            uint32_t np_ = 0;
            uint8_t nmis[BSQ_NET_REFS] = {0};
            if (learned) {
                np_ = bsq_prior_net_refs(cur, hp ? pv : NULL, gw, gh, i, nr);
                uint8_t hid[BSQ_NET_MAX_H];
                bsq_prior_net_hidden(net, nr, np_, hid);
                bsq_prior_net_base(net, hid, zb);
            }
            /* per-token parts of the contexts: the "none" digits, how many
             * of PW..PS exist; each table's entries for bit d follow at
             * d * SZ_DIM */
            const uint32_t np = 2 * (1 - hp), nw = 2 * (1 - hw), nn = 2 * (1 - hn);
            const uint32_t offm = (hp & hw) + (hp & he) + (hp & hn) + (hp & hs);
            const uint32_t om = OFF_MOTION + (np * 15 + offm * (offm + 1) / 2) * 4;
            const uint32_t os = OFF_SIMILAR + (nw * 3 + nn) * 16;
            const uint32_t ow = np * 4 * N_W;
            const uint32_t inc_ok = avail & CNT_INC;
            uint32_t cnt = 0;  /* mismatches so far with P, W, N: 2-bit counters at 0, 2, 4 */
            uint32_t match = avail; /* references exact so far | those 1 bit off << 10 */
            uint32_t mstate = match_state(match, (rec[0].col & 0x1FFu) * 0x401u); /* of the next bit */
            uint64_t acc = 0; /* the token */

            for (int d = 0; d < L; d++) {
                cm_bit *const b = rec + d;
#if defined(__GNUC__)
                /* Makes the compiler read rec[d - 1] from memory in learn()
                 * rather than carry it over from the last iteration in many
                 * registers and stack copies (GCC's predictive commoning),
                 * which is slower here. No effect on what is computed. */
                __asm__ __volatile__("" ::: "memory");
#endif
                /* the column, in both fields of a match word */
                const uint32_t rc = b->col, col = rc & 0x1FFu, colx = col * 0x401u, mp = cnt & 3u;
                const uint32_t o = (uint32_t)d * SZ_DIM;
                const uint32_t i0 = o + om + m->col_motion[col] + mp;
                const uint32_t i1 = o + os + m->col_similar[col] + (cnt >> 2);
                const uint32_t i2 = o + OFF_MATCH + mstate;
                const uint32_t iw = ow + m->col_wset[col] + mp * N_W;
                b->e0 = (uint16_t)i0;
                b->e1 = (uint16_t)i1;
                b->e2 = (uint16_t)i2;
                b->w = (uint8_t)iw;
                const int64_t s0 = m->st[i0], s1 = m->st[i1], s2 = m->st[i2];
                const int32_t *const w = m->w + iw;
                int32_t s3 = 0;
                if (learned) { /* the network's ln-odds, with this token's bits so far */
                    const uint64_t own = d ? acc << (L - d) : 0; /* bits 0..d-1 in place */
                    int32_t z = bsq_prior_net_z(net, d, zb[d], own, nr, np_, nmis);
                    int32_t q = (int32_t)asr(z, net->shift2);
                    s3 = q > STRETCH_MAX ? STRETCH_MAX : q < -STRETCH_MAX ? -STRETCH_MAX : q;
                    s3_at[d] = s3;
                }
                int64_t dot = (s0 * w[0] + s1 * w[1]) + (s2 * w[2] + 256 * (int64_t)w[W_BIAS]);
                if (learned)
                    dot += (int64_t)s3 * w[W_NET];
                int64_t xs = asr(dot, MIX_SHIFT);
                xs = xs > STRETCH_MAX ? STRETCH_MAX : xs < -STRETCH_MAX ? -STRETCH_MAX : xs;
                const uint32_t p1 = m->squash[xs + STRETCH_MAX]; /* 22..65514 */

                /* The match sets after this bit for either value of it: the
                 * references that differ from the bit drop out of the exact
                 * set into the 1-off one, or out of that. And the mismatch
                 * counters' increments (2-bit counters saturating at 3: a
                 * full one takes none). */
                const uint32_t t1 = match & colx, t0 = match ^ t1; /* saying 1, saying 0 */
                const uint32_t match0 = t0 | (t1 & 0x1FFu) << 10, match1 = t1 | (t0 & 0x1FFu) << 10;
                const uint32_t inc = inc_ok & ~(cnt & cnt >> 1);
                const uint32_t next = (b[1].col & 0x1FFu) * 0x401u;

                uint32_t bit;
                if (decoding) {
                    bit = (uint32_t)bsq_rc_decode_step(&code, &range, p1);
                    if (range < BSQ_RC_TOP) {
                        dec->code = code;
                        dec->range = range;
                        bsq_rc_dec_normalize_(dec);
                        code = dec->code;
                        range = dec->range;
                    }
                } else {
                    bit = rc >> 9;
                    bsq_rc_encode_step(&low, &range, (int)bit, p1);
                    if (range < BSQ_RC_TOP) {
                        enc->low = low;
                        enc->range = range;
                        bsq_rc_enc_normalize_(enc);
                        low = enc->low;
                        range = enc->range;
                    }
                }
                b->err = (int32_t)(bit << 16) - (int32_t)p1;
                if (learned)
                    bsq_prior_net_mis_update(net, d, bit, nr, nmis);

                /* selections by mask (a branch would wait for the bit) */
                const uint32_t one = 0u - bit;
                match = match0 ^ ((match0 ^ match1) & one);
                mstate = match_state(match, next);
                cnt += (colx ^ one) & inc;
                acc = acc << 1 | bit;
                learn(m, b - 1, learned ? s3_at[d - 1] : 0, learned);
            }
            learn(m, rec + L - 1, learned ? s3_at[L - 1] : 0, learned);
            if (decoding)
                out[t * tile + i] = acc; /* now a reference for what follows */
            /* A step moves a weight by at most 2048; clamping every 64 tokens
             * (and at each tile's end) bounds |w| below 2^20 + 2^25, so the
             * int32 weights and the int64 sum never overflow. */
            if (i % CLAMP_EVERY == CLAMP_EVERY - 1 || i + 1 == tile) {
                for (int k = 0; k < MIX_SETS * N_W; k++)
                    m->w[k] = m->w[k] > W_MAX ? W_MAX : m->w[k] < -W_MAX ? -W_MAX : m->w[k];
            }
            if (++x == gw) {
                x = 0;
                y++;
            }
        }
    }
    if (decoding) {
        dec->code = code;
        dec->range = range;
    } else {
        enc->low = low;
        enc->range = range;
    }
}

static bsq_status cm_encode_frame(bsq_prior *p, const uint64_t *tokens, bsq_rc_encoder *rc,
                                  bsq_error *err)
{
    cm_prior *m = (cm_prior *)p;
    const int L = p->geom.L;
    if (!tokens || !rc)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "context prior: NULL tokens or coder");
    if (L < 64) {
        for (size_t i = 0; i < m->count; i++)
            if (tokens[i] >> L)
                return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                                "context prior: token %zu (0x%llx) has bits above L = %d", i,
                                (unsigned long long)tokens[i], L);
    }
    if (m->net)
        code_frame(m, tokens, NULL, rc, NULL, 0, 1);
    else
        code_frame(m, tokens, NULL, rc, NULL, 0, 0);
    if (rc->failed)
        return bsq_fail(err, BSQ_ERR_NOMEM, "context prior: out of memory for coded data");
    memcpy(m->prev, tokens, m->count * sizeof *tokens);
    m->has_prev = 1;
    return BSQ_OK;
}

static bsq_status cm_decode_frame(bsq_prior *p, uint64_t *tokens, bsq_rc_decoder *rc,
                                  bsq_error *err)
{
    cm_prior *m = (cm_prior *)p;
    if (!tokens || !rc)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "context prior: NULL tokens or coder");
    if (m->net)
        code_frame(m, tokens, tokens, NULL, rc, 1, 1);
    else
        code_frame(m, tokens, tokens, NULL, rc, 1, 0);
    memcpy(m->prev, tokens, m->count * sizeof *tokens);
    m->has_prev = 1;
    if (bsq_rc_dec_overrun(rc))
        return bsq_fail(err, BSQ_ERR_FORMAT,
                        "context prior: coded frame is truncated or corrupt (read past its end)");
    return BSQ_OK;
}

static void cm_destroy(bsq_prior *p)
{
    cm_prior *m = (cm_prior *)p;
    if (!m)
        return;
    free(m->prev);
    bsq_prior_net_free(m->own_net);
    free(m);
}

static const bsq_prior_ops cm_ops = {
    .name = CM_NAME,
    .reset = cm_reset,
    .encode_frame = cm_encode_frame,
    .decode_frame = cm_decode_frame,
    .destroy = cm_destroy,
};

static const bsq_prior_ops learned_ops = {
    .name = LEARNED_NAME,
    .reset = cm_reset,
    .encode_frame = cm_encode_frame,
    .decode_frame = cm_decode_frame,
    .destroy = cm_destroy,
};

/* 16 bytes from "bsq-prior:<name>:v<version>" (and, for the learned prior,
 * the network's own fingerprint): two 64-bit FNV-1a hashes (different
 * offset bases), each finished by a splitmix64 mix, stored little-endian.
 * Fixed per model version and network, the same on every machine. */
static void fingerprint(const char *name, uint32_t version, const uint8_t *extra, size_t nextra,
                        uint8_t out[16])
{
    static const uint64_t basis[2] = {0xcbf29ce484222325ull, 0x84222325cbf29ce4ull};
    for (int h = 0; h < 2; h++) {
        uint64_t v = basis[h];
        for (const char *c = "bsq-prior:"; *c; c++)
            v = (v ^ (uint8_t)*c) * 0x100000001b3ull;
        for (const char *c = name; *c; c++)
            v = (v ^ (uint8_t)*c) * 0x100000001b3ull;
        v = (v ^ (uint8_t)':') * 0x100000001b3ull;
        v = (v ^ (uint8_t)'v') * 0x100000001b3ull;
        for (int b = 0; b < 4; b++) /* version, 32 bits little-endian */
            v = (v ^ (uint8_t)(version >> (8 * b))) * 0x100000001b3ull;
        for (size_t b = 0; b < nextra; b++)
            v = (v ^ extra[b]) * 0x100000001b3ull;
        v += 0x9e3779b97f4a7c15ull;
        v = (v ^ (v >> 30)) * 0xbf58476d1ce4e5b9ull;
        v = (v ^ (v >> 27)) * 0x94d049bb133111ebull;
        v ^= v >> 31;
        for (int b = 0; b < 8; b++)
            out[h * 8 + b] = (uint8_t)(v >> (8 * b));
    }
}

static bsq_status create(const bsq_frame_geom *geom, bsq_prior_net *net, bsq_prior **out,
                         bsq_error *err)
{
    if (out)
        *out = NULL;
    if (!geom || !out) {
        bsq_prior_net_free(net);
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "context prior: NULL argument");
    }
    if (net && net->L != geom->L) {
        bsq_status st = bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                                 "learned prior: the network codes %d bits, the tokens have %d",
                                 net->L, geom->L);
        bsq_prior_net_free(net);
        return st;
    }
    const bsq_frame_geom g = *geom;
    if (g.L < 1 || g.L > MAX_L)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "context prior: L = %d not in 1..64",
                        g.L);
    if (g.tiles_y < 1 || g.tiles_x < 1 || g.grid_h < 1 || g.grid_w < 1)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "context prior: bad frame geometry %dx%d tiles of %dx%d tokens",
                        g.tiles_y, g.tiles_x, g.grid_h, g.grid_w);
    /* every factor is below 2^31, so two pairwise products fit in 64 bits;
     * the total must also leave room for byte sizes */
    uint64_t tiles = (uint64_t)g.tiles_y * (uint64_t)g.tiles_x;
    uint64_t grid = (uint64_t)g.grid_h * (uint64_t)g.grid_w;
    if (tiles > ((uint64_t)1 << 28) / grid)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                        "context prior: frame of %llu x %llu tokens is too large",
                        (unsigned long long)tiles, (unsigned long long)grid);
    cm_prior *m = calloc(1, sizeof *m);
    if (!m) {
        bsq_prior_net_free(net);
        return bsq_fail(err, BSQ_ERR_NOMEM, "context prior: out of memory");
    }
    m->base.ops = net ? &learned_ops : &cm_ops;
    m->base.geom = g;
    m->net = m->own_net = net;
    if (net)
        fingerprint(LEARNED_NAME, LEARNED_VERSION, net->fp, sizeof net->fp, m->base.fingerprint);
    else
        fingerprint(CM_NAME, CM_VERSION, NULL, 0, m->base.fingerprint);
    m->count = (size_t)(tiles * grid);
    m->prev = calloc(m->count, sizeof *m->prev);
    if (!m->prev) {
        cm_destroy(&m->base);
        return bsq_fail(err, BSQ_ERR_NOMEM, "context prior: out of memory");
    }
    init_tables(m);
    cm_reset(&m->base);
    *out = &m->base;
    return BSQ_OK;
}

bsq_status bsq_prior_context_create(const bsq_frame_geom *geom, bsq_prior **out, bsq_error *err)
{
    return create(geom, NULL, out, err);
}

bsq_status bsq_prior_learned_create(const bsq_frame_geom *geom, bsq_prior_net *net,
                                    bsq_prior **out, bsq_error *err)
{
    if (!net)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "learned prior: no network");
    return create(geom, net, out, err);
}
