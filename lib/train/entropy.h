/* The BSQ entropy regulariser (spec §7): H_sample - H_codebook over groups
 * of g dimensions, with the soft assignment q(c | u) = softmax over the 2^g
 * codes c of 2 inv_T <u_g, c / sqrt(L)>. Because the codes are products of
 * independent signs, q factorises into one Bernoulli per dimension,
 * p_d = sigmoid(4 inv_T u_d / sqrt(L)); the codebook term still needs the
 * full 2^g-entry distribution averaged over tokens. */
#ifndef BSQ_TRAIN_ENTROPY_H
#define BSQ_TRAIN_ENTROPY_H

#include <stddef.h>

#include "bsq.h"

typedef struct bsq_entropy_stats {
    double h_sample;   /* mean over tokens of the summed group entropies (nats) */
    double h_codebook; /* sum over groups of the entropy of the mean assignment */
    double bit_balance;/* mean over dimensions of 2 min(P1, 1 - P1), P1 the hard bit rate */
} bsq_entropy_stats;

/* u [rows][L] on the unit sphere. Adds weight * d(H_sample - H_codebook)/du
 * to du (when weight != 0) and fills stats. g <= 16. */
bsq_status bsq_entropy_loss(const float *u, size_t rows, int L, int g, double inv_temp,
                            double weight, float *du, bsq_entropy_stats *stats, bsq_error *err);

#endif
