#include "train/entropy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* The product distribution of one token's group: prob[c] for the 2^g codes,
 * code bits MSB-first (dimension 0 the most significant). p1[d] is the
 * probability of bit d being 1. */
static void code_probs(const double *p1, int g, double *prob)
{
    prob[0] = 1.0;
    size_t n = 1;
    for (int d = 0; d < g; d++) {
        for (size_t i = n; i-- > 0;) {
            prob[2 * i + 1] = prob[i] * p1[d];
            prob[2 * i] = prob[i] * (1.0 - p1[d]);
        }
        n *= 2;
    }
}

static double xlogx(double x) { return x > 0 ? x * log(x) : 0.0; }

bsq_status bsq_entropy_loss(const float *u, size_t rows, int L, int g, double inv_temp,
                            double weight, float *du, bsq_entropy_stats *st, bsq_error *err)
{
    if (g < 1 || g > 16 || L % g)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "entropy: group size %d for L = %d", g, L);
    const int groups = L / g;
    const size_t ncode = (size_t)1 << g;
    const double a = 4.0 * inv_temp / sqrt((double)L); /* logit = a u_d */
    double *mean = calloc((size_t)groups * ncode, sizeof(double));
    double *prob = malloc(ncode * sizeof(double));
    double *gc = malloc(ncode * sizeof(double));
    double *ones = calloc((size_t)L, sizeof(double));
    if (!mean || !prob || !gc || !ones) {
        free(mean), free(prob), free(gc), free(ones);
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    }
    double p1[16];
    const double inv_r = 1.0 / (double)rows;
    double hs = 0.0;
    /* pass 1: sample entropy (and its gradient), the mean assignment */
    for (size_t r = 0; r < rows; r++) {
        const float *ur = u + r * L;
        for (int gi = 0; gi < groups; gi++) {
            for (int d = 0; d < g; d++) {
                int dim = gi * g + d;
                double z = a * ur[dim];
                double p = 1.0 / (1.0 + exp(-z));
                p1[d] = p;
                hs -= xlogx(p) + xlogx(1.0 - p);
                ones[dim] += ur[dim] > 0.0f;
                /* dH_b/du = -z p (1 - p) a */
                if (weight != 0.0)
                    du[r * L + dim] += (float)(weight * inv_r * (-z * p * (1.0 - p) * a));
            }
            code_probs(p1, g, prob);
            double *m = mean + (size_t)gi * ncode;
            for (size_t c = 0; c < ncode; c++)
                m[c] += prob[c];
        }
    }
    double hc = 0.0;
    for (size_t i = 0; i < (size_t)groups * ncode; i++) {
        mean[i] *= inv_r;
        hc -= xlogx(mean[i]);
    }
    /* pass 2: -dH_codebook/du. dH/dmean_c = -(log mean_c + 1); a token's
     * share: dmean_c/dp_d = sign_d(c) prob_c / p_d(bit of c) / rows (the
     * probabilities stay within sigmoid(+-a), far from 0, so dividing is
     * safe). */
    if (weight != 0.0) {
        for (size_t r = 0; r < rows; r++) {
            const float *ur = u + r * L;
            for (int gi = 0; gi < groups; gi++) {
                const double *m = mean + (size_t)gi * ncode;
                for (int d = 0; d < g; d++)
                    p1[d] = 1.0 / (1.0 + exp(-a * ur[gi * g + d]));
                code_probs(p1, g, prob);
                for (size_t c = 0; c < ncode; c++)
                    gc[c] = -(log(m[c] > 1e-300 ? m[c] : 1e-300) + 1.0) * prob[c];
                for (int d = 0; d < g; d++) {
                    size_t bit = (size_t)1 << (g - 1 - d);
                    double plus = 0.0, minus = 0.0;
                    for (size_t c = 0; c < ncode; c++) {
                        if (c & bit)
                            plus += gc[c];
                        else
                            minus += gc[c];
                    }
                    double dhdp = plus / p1[d] - minus / (1.0 - p1[d]);
                    double dpdu = p1[d] * (1.0 - p1[d]) * a;
                    /* the loss has -H_codebook */
                    du[r * L + gi * g + d] -= (float)(weight * inv_r * dhdp * dpdu);
                }
            }
        }
    }
    double bal = 0.0;
    for (int d = 0; d < L; d++) {
        double f = ones[d] * inv_r;
        bal += 2.0 * (f < 1.0 - f ? f : 1.0 - f);
    }
    st->h_sample = hs * inv_r;
    st->h_codebook = hc;
    st->bit_balance = bal / L;
    free(mean), free(prob), free(gc), free(ones);
    return BSQ_OK;
}
