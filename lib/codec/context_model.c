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
 * every machine computes the same probabilities. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include "codec/prior.h"
#include "codec/prior_net.h"
#include "codec/rangecoder.h"
#include "error.h"

#define CM_NAME "context"
#define CM_VERSION 2 /* bump on any change to the coded bytes */
#define LEARNED_NAME "learned"
#define LEARNED_VERSION 1

#if defined(__GNUC__)
#define CM_INLINE static inline __attribute__((always_inline))
#else
#define CM_INLINE static inline
#endif

enum {
    MAX_L = 64,
    N_IN = 3,         /* table inputs to the mixer */
    N_W = N_IN + 2,   /* plus the learned network's input ("learned" prior), and a bias */
    W_NET = N_IN,     /* index of the network's weight */
    W_BIAS = N_IN + 1,
    COUNT_LIMIT = 255, /* slowest table rate: 2/(2*255+3) */
    /* table sizes per dimension */
    SZ_SIMILAR = 3 * 4 * 3 * 4,
    SZ_MOTION = 3 * 4 * 25,
    SZ_MATCH = 4 * 4,
    OFF_SIMILAR = 0,
    OFF_MOTION = OFF_SIMILAR + SZ_SIMILAR,
    OFF_MATCH = OFF_MOTION + SZ_MOTION,
    SZ_DIM = OFF_MATCH + SZ_MATCH,
    MIX_SETS = 3 * 4, /* weight sets, chosen by co-located bit and mismatches */
    MIX_SHIFT = 16,   /* weights: 1.0 = 65536 */
    MIX_LR_SHIFT = 16, /* weight step = stretch * error (16-bit) >> this */
    W_MAX = 1 << 20,  /* weights are clamped to +-16.0 (see code_frame) */
    CLAMP_EVERY = 64, /* tokens between weight clamps */
    STRETCH_MAX = 2047
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
    uint32_t *tab;  /* all tables: L * SZ_DIM entries, p22 << 10 | count */
    int32_t w[MIX_SETS * N_W];   /* mixer weights, 1.0 = 65536 */
    int32_t dt[COUNT_LIMIT + 1]; /* 131072 / (2n + 3): update rate by count */
    int16_t stretch[4096];       /* 12-bit probability -> ln-odds * 256 */
    uint16_t squash[2 * STRETCH_MAX + 1]; /* ln-odds -> P(1), 16 bits, >= 1 */
} cm_prior;

/* Right shifts of negative values must floor (arithmetic shift). C11 leaves
 * that to the implementation; every compiler we know documents it, and this
 * refuses to build where it does not, so coded bytes cannot silently differ. */
_Static_assert((-5 >> 1) == -3 && ((int64_t)-5 >> 1) == -3,
               "the context prior needs arithmetic right shifts of signed values");
CM_INLINE int64_t asr(int64_t x, int s) { return x >> s; }

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
    for (int n = 0; n <= COUNT_LIMIT; n++)
        m->dt[n] = 131072 / (2 * n + 3);
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
}

static void cm_reset(bsq_prior *p)
{
    cm_prior *m = (cm_prior *)p;
    int L = p->geom.L;
    m->has_prev = 0;
    for (size_t i = 0; i < (size_t)L * SZ_DIM; i++)
        m->tab[i] = (uint32_t)1 << 31; /* p = 1/2, count 0 */
    for (int i = 0; i < MIX_SETS; i++) {
        /* start as the average of the tables, or mostly the network */
        for (int k = 0; k < N_IN; k++)
            m->w[i * N_W + k] = m->net ? (1 << MIX_SHIFT) / 5 : (1 << MIX_SHIFT) / N_IN;
        m->w[i * N_W + W_NET] = m->net ? (1 << MIX_SHIFT) * 4 / 5 : 0;
        m->w[i * N_W + W_BIAS] = 0;
    }
}

/* Table update towards the coded bit: p += (target - p) * 2 / (2n + 3),
 * then n += 1 up to COUNT_LIMIT. */
CM_INLINE void tab_update(uint32_t *t, uint32_t bit, const int32_t *dt)
{
    uint32_t v = *t, n = v & 1023u;
    int32_t p = (int32_t)(v >> 10);
    int32_t target = (int32_t)((0u - bit) & ((1u << 22) - 1));
    p += (int32_t)asr((int64_t)(target - p) * dt[n], 16);
    if (n < COUNT_LIMIT)
        n++;
    *t = (uint32_t)p << 10 | n;
}

/* Bit s of a token word, as 0 or 1. */
CM_INLINE uint32_t bit_at(uint64_t tok, int s) { return (uint32_t)(tok >> s) & 1u; }

/* Counter of mismatches (0..3), saturating at 3: 3 + 1 = 4 falls back to 3. */
CM_INLINE uint32_t count3(uint32_t n, uint32_t mismatch)
{
    n += mismatch;
    return n - (n >> 2);
}

/* Reference tokens, as bit positions in a column (one bit per reference). */
enum { R_P, R_W, R_N, R_NW, R_NE, R_PW, R_PE, R_PN, R_PS, N_REF };

/* Match state of a set of references: none, all say 0, all say 1, split. */
CM_INLINE uint32_t match_state(uint32_t set, uint32_t col)
{
    uint32_t ones = col & set;
    return set == 0 ? 0 : ones == 0 ? 1 : ones == set ? 2 : 3;
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
    uint32_t *const tab = m->tab;
    int32_t *const wts = m->w;
    const int32_t *const dt = m->dt;
    const int16_t *const stretch = m->stretch;
    const uint16_t *const squash_tab = m->squash + STRETCH_MAX;

    for (size_t t = 0; t < ntiles; t++) {
        const uint64_t *cur = in + t * tile;
        const uint64_t *pv = m->prev + t * tile;
        int x = 0, y = 0; /* position of token i in its tile */
        for (size_t i = 0; i < tile; i++) {
            uint64_t R[N_REF];
            uint32_t has[N_REF];
            has[R_P] = hp;
            has[R_W] = x > 0;
            has[R_N] = y > 0;
            has[R_NW] = has[R_W] & has[R_N];
            has[R_NE] = has[R_N] & (x + 1 < gw);
            has[R_PW] = hp & has[R_W];
            has[R_PE] = hp & (x + 1 < gw);
            has[R_PN] = hp & has[R_N];
            has[R_PS] = hp & (y + 1 < gh);
            R[R_P] = has[R_P] ? pv[i] : 0;
            R[R_W] = has[R_W] ? cur[i - 1] : 0;
            R[R_N] = has[R_N] ? cur[i - gw] : 0;
            R[R_NW] = has[R_NW] ? cur[i - gw - 1] : 0;
            R[R_NE] = has[R_NE] ? cur[i - gw + 1] : 0;
            R[R_PW] = has[R_PW] ? pv[i - 1] : 0;
            R[R_PE] = has[R_PE] ? pv[i + 1] : 0;
            R[R_PN] = has[R_PN] ? pv[i - gw] : 0;
            R[R_PS] = has[R_PS] ? pv[i + gw] : 0;
            uint32_t avail = 0;
            for (int r = 0; r < N_REF; r++)
                avail |= has[r] << r;
            /* the network's view: 3x3 around P, then W N NW NE */
            int32_t zb[MAX_L];
            uint64_t nr[BSQ_NET_REFS];
            uint32_t np_ = 0;
            uint8_t nmis[BSQ_NET_REFS] = {0};
            if (learned) {
                np_ = bsq_prior_net_refs(cur, hp ? pv : NULL, gw, gh, i, nr);
                uint8_t hid[BSQ_NET_MAX_H];
                bsq_prior_net_hidden(net, nr, np_, hid);
                bsq_prior_net_base(net, hid, zb);
            }
            const uint64_t tok = decoding ? 0 : cur[i];
            const uint32_t np = 2 * (1 - has[R_P]), nw = 2 * (1 - has[R_W]),
                           nn = 2 * (1 - has[R_N]);
            const uint32_t off_motion = has[R_PW] + has[R_PE] + has[R_PN] + has[R_PS];
            uint64_t acc = 0;        /* bits coded so far, at their positions */
            uint32_t mp = 0, mw = 0, mn = 0; /* mismatches so far with P, W, N */
            uint32_t exact = avail, off1 = 0; /* references 0 / 1 bit off so far */

            const uint64_t rP = R[R_P], rW = R[R_W], rN = R[R_N], rNW = R[R_NW],
                           rNE = R[R_NE], rPW = R[R_PW], rPE = R[R_PE], rPN = R[R_PN],
                           rPS = R[R_PS];
            uint32_t *base = tab;
            for (int d = 0; d < L; d++, base += SZ_DIM) {
                const int s = L - 1 - d;
                const uint32_t bP = bit_at(rP, s), bW = bit_at(rW, s), bN = bit_at(rN, s),
                               bNW = bit_at(rNW, s), bNE = bit_at(rNE, s);
                const uint32_t bPW = bit_at(rPW, s), bPE = bit_at(rPE, s),
                               bPN = bit_at(rPN, s), bPS = bit_at(rPS, s);
                const uint32_t col = bP | bW << R_W | bN << R_N | bNW << R_NW | bNE << R_NE |
                                     bPW << R_PW | bPE << R_PE | bPN << R_PN | bPS << R_PS;
                const uint32_t p3 = bP + np, w3 = bW + nw, n3 = bN + nn;
                uint32_t *const c0 = base + OFF_MOTION + (p3 * 4 + mp) * 25 +
                                     5 * (bPW + bPE + bPN + bPS) + off_motion;
                uint32_t *const c1 = base + OFF_SIMILAR + w3 * 48 + mw * 12 + n3 * 4 + mn;
                uint32_t *const c2 = base + OFF_MATCH + match_state(exact, col) * 4 +
                                     match_state(off1, col);
                int32_t *const w = wts + (p3 * 4 + mp) * N_W;
                const int32_t s0 = stretch[*c0 >> 20], s1 = stretch[*c1 >> 20],
                              s2 = stretch[*c2 >> 20];
                int32_t s3 = 0;
                if (learned) { /* the network's ln-odds, with this token's bits so far */
                    int32_t z = bsq_prior_net_z(net, d, zb[d], acc, nr, np_, nmis);
                    int32_t q = (int32_t)asr(z, net->shift2);
                    s3 = q > STRETCH_MAX ? STRETCH_MAX : q < -STRETCH_MAX ? -STRETCH_MAX : q;
                }
                int64_t dot = ((int64_t)s0 * w[0] + (int64_t)s1 * w[1]) +
                              ((int64_t)s2 * w[2] + (int64_t)256 * w[W_BIAS]);
                if (learned)
                    dot += (int64_t)s3 * w[W_NET];
                int64_t xs = asr(dot, MIX_SHIFT);
                xs = xs > STRETCH_MAX ? STRETCH_MAX : xs < -STRETCH_MAX ? -STRETCH_MAX : xs;
                const uint32_t p1 = squash_tab[xs]; /* 22..65514 */

                uint32_t bit;
                if (decoding) {
                    bit = (uint32_t)bsq_rc_decode(dec, p1);
                } else {
                    bit = bit_at(tok, s);
                    bsq_rc_encode(enc, (int)bit, p1);
                }

                const int32_t err = (int32_t)(bit << 16) - (int32_t)p1; /* 16-bit units */
                /* |st * err| < 2^27; rounded so a saturated mix stops moving */
                const int32_t rnd = 1 << (MIX_LR_SHIFT - 1);
                w[0] += (int32_t)asr(s0 * err + rnd, MIX_LR_SHIFT);
                w[1] += (int32_t)asr(s1 * err + rnd, MIX_LR_SHIFT);
                w[2] += (int32_t)asr(s2 * err + rnd, MIX_LR_SHIFT);
                w[W_BIAS] += (int32_t)asr(256 * err + rnd, MIX_LR_SHIFT);
                if (learned)
                    w[W_NET] += (int32_t)asr(s3 * err + rnd, MIX_LR_SHIFT);
                tab_update(c0, bit, dt);
                tab_update(c1, bit, dt);
                tab_update(c2, bit, dt);

                acc |= (uint64_t)bit << s;
                if (learned)
                    bsq_prior_net_mis_update(net, d, bit, nr, nmis);
                const uint32_t miss = (col ^ (0u - bit)) & avail; /* references that differ */
                mp = count3(mp, miss & 1);
                mw = count3(mw, (miss >> R_W) & 1);
                mn = count3(mn, (miss >> R_N) & 1);
                off1 = (off1 & ~miss) | (exact & miss);
                exact &= ~miss;
            }
            if (decoding)
                out[t * tile + i] = acc; /* now a reference for what follows */
            /* A step moves a weight by at most 2048; clamping every 64 tokens
             * (and at each tile's end) bounds |w| below 2^20 + 2^25, so the
             * int32 weights and the int64 sum never overflow. */
            if (i % CLAMP_EVERY == CLAMP_EVERY - 1 || i + 1 == tile) {
                for (int k = 0; k < MIX_SETS * N_W; k++)
                    wts[k] = wts[k] > W_MAX ? W_MAX : wts[k] < -W_MAX ? -W_MAX : wts[k];
            }
            if (++x == gw) {
                x = 0;
                y++;
            }
        }
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
    free(m->tab);
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
    m->tab = malloc((size_t)g.L * SZ_DIM * sizeof *m->tab);
    if (!m->prev || !m->tab) {
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
