/* The learned part of the "learned" prior: a small network, integer-only at
 * inference, that predicts each bit of a token from what a decoder already
 * has. Trained offline in floating point (lib/train/prior_train.c) on a
 * tokenizer's tokens, then quantised: int16 weights, int32 accumulation,
 * an 8-bit hidden layer, right shifts for rescaling.
 *
 * Inputs, for a token of frame t at (x, y) in its tile: the bits of 13
 * reference tokens, each present or not — the 3x3 block around the
 * co-located token in frame t-1 (P and its 8 neighbours) and the causal
 * neighbours W, N, NW, NE in frame t — as one input per (reference, bit)
 * that is set, and one per present reference.
 *   hidden  h = clamp((b1 + sum of W1's active columns) >> shift1, 0, 255)
 *   bit d   z_d = c_d + V_d . h + sum_{j<d} U_dj s_j + sum_r A_d,r,m_r t_rd
 * where s_j = +-1 is the token's own bit j (already coded), t_rd = +-1 is
 * reference r's bit d (0 when r is absent) and m_r (0..3, saturating) how
 * many of bits 0..d-1 differ between the token and reference r, so a
 * reference that has matched so far can be copied; z_d >> shift2 is the
 * bit's ln-odds with 8 fractional bits, the domain of the context model's
 * mixer. */
#ifndef BSQ_PRIOR_NET_H
#define BSQ_PRIOR_NET_H

#include <stddef.h>
#include <stdint.h>

#include "bsq.h"
#include "tensorset.h"

enum {
    BSQ_NET_REFS = 13,   /* P PW PE PN PS PNW PNE PSW PSE, then W N NW NE */
    BSQ_NET_MAX_H = 256,
    BSQ_NET_MIS = 4,     /* mismatch levels 0, 1, 2, 3+ */
    BSQ_NET_MAX_L = 64
};

typedef struct bsq_prior_net {
    int L, H, nin;      /* nin = 13 L + 13 */
    int shift1, shift2;
    int16_t *w1t;       /* [nin][H]: W1 transposed, a column per input */
    int32_t *w1w;       /* the same widened (summed 16 units at a time with SSE2) */
    int32_t *b1;        /* [H] */
    int16_t *v;         /* [L][H] */
    int16_t *u;         /* [L][L], used below the diagonal */
    int16_t *a;         /* [L][13][4] */
    int32_t *c;         /* [L] */
    uint8_t tokenizer[32]; /* fingerprint of the model whose tokens it learned */
    uint8_t fp[16];     /* of the network itself */
    void *block;        /* owns the arrays */
} bsq_prior_net;

/* Reads a network from safetensors contents (tensors w1 [H][nin] I16, b1
 * [H] I32, v [L][H] I16, u [L][L] I16, a [L][52] I16, c [L] I32; metadata
 * format "bsq-prior-net-1", shift1, shift2, tokenizer). */
bsq_status bsq_prior_net_from_tensors(const bsq_tensorset *ts, bsq_prior_net **out,
                                      bsq_error *err);
bsq_status bsq_prior_net_open(const char *path, bsq_prior_net **out, bsq_error *err);
bsq_status bsq_prior_net_open_memory(const void *bytes, size_t len, bsq_prior_net **out,
                                     bsq_error *err);
void bsq_prior_net_free(bsq_prior_net *net);

/* The learned prior bundled for the default video model, if this build
 * has one for a tokenizer with this fingerprint; BSQ_ERR_UNSUPPORTED when
 * not. */
bsq_status bsq_prior_net_open_default(const uint8_t tokenizer_fp[32], bsq_prior_net **out,
                                      bsq_error *err);

/* The 13 references of token j of a tile (grid_w x grid_h tokens, `cur`
 * the tile's tokens of this frame, decoded up to j; `prev` the same tile of
 * the previous frame, NULL at a GOP's start), in the network's order, and
 * the mask of those present. The one definition the coder and the trainer
 * share. */
uint32_t bsq_prior_net_refs(const uint64_t *cur, const uint64_t *prev, int grid_w, int grid_h,
                            size_t j, uint64_t *refs);

/* The hidden layer for one token: refs[13] (absent ones ignored: bit r of
 * `present` clear) -> h[H]. */
void bsq_prior_net_hidden(const bsq_prior_net *net, const uint64_t *refs, uint32_t present,
                          uint8_t *h);
/* c_d + V_d . h for every d (base[L]). */
void bsq_prior_net_base(const bsq_prior_net *net, const uint8_t *h, int32_t *base);

/* z_d for bit d of a token: `own` holds its bits 0..d-1 at their positions
 * (bit L-1-j for j), mis[r] the mismatch levels so far. */
static inline int32_t bsq_prior_net_z(const bsq_prior_net *net, int d, int32_t base,
                                      uint64_t own, const uint64_t *refs, uint32_t present,
                                      const uint8_t *mis)
{
    const int L = net->L, s = L - 1 - d;
    int32_t z = base;
    const int16_t *u = net->u + (size_t)d * L;
    for (int j = 0; j < d; j++)
        z += (own >> (L - 1 - j) & 1) ? u[j] : -u[j];
    const int16_t *a = net->a + (size_t)d * BSQ_NET_REFS * BSQ_NET_MIS;
    for (int r = 0; r < BSQ_NET_REFS; r++)
        if (present >> r & 1) {
            int32_t w = a[r * BSQ_NET_MIS + mis[r]];
            z += (refs[r] >> s & 1) ? w : -w;
        }
    return z;
}

/* After bit d of a token came out as `bit`: the mismatch levels move. */
static inline void bsq_prior_net_mis_update(const bsq_prior_net *net, int d, uint32_t bit,
                                            const uint64_t *refs, uint8_t *mis)
{
    const int s = net->L - 1 - d;
    for (int r = 0; r < BSQ_NET_REFS; r++) {
        uint32_t m = mis[r] + (uint32_t)(((refs[r] >> s) & 1) != bit);
        mis[r] = (uint8_t)(m > 3 ? 3 : m);
    }
}

#endif
