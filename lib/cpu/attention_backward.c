/* The gradient of multi-head attention, for training. Each task takes one
 * head of one sequence and walks its queries in blocks: it recomputes the
 * block's probabilities P from Q and K (so the forward pass keeps no N x N
 * matrix), then
 *   dP = dO V^T,  dS = P * (dP - rowsum(dO * O)) * scale,
 *   dQ = dS K,    dK += dS^T Q,    dV += P^T dO.
 * A task owns its head's columns of dQ, dK and dV, so tasks never share an
 * output and the result does not depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

#define QB 64

typedef struct {
    const bsq_attention_args *a;
    const float *dout;
    float *dq, *dk, *dv;
    bsq_cpu *cpu;
} attb_job;

/* C += op(A) op(B) of any size, in pieces within bsq_cpu_gemm's limits. */
static void gemm_any(const bsq_gemm_kernel *kn, int m, int n, int k, const float *a, size_t lda,
                     int at, const float *b, size_t ldb, int bt, float *c, size_t ldc, float *gs)
{
    for (int i0 = 0; i0 < m; i0 += BSQ_GEMM_MAX_M)
        for (int j0 = 0; j0 < n; j0 += BSQ_GEMM_MAX_N) {
            int mb = m - i0 < BSQ_GEMM_MAX_M ? m - i0 : BSQ_GEMM_MAX_M;
            int nb = n - j0 < BSQ_GEMM_MAX_N ? n - j0 : BSQ_GEMM_MAX_N;
            bsq_cpu_gemm_t(kn, mb, nb, k, at ? a + i0 : a + (size_t)i0 * lda, lda, at,
                           bt ? b + (size_t)j0 * ldb : b + j0, ldb, bt, c + (size_t)i0 * ldc + j0,
                           ldc, gs);
        }
}

static size_t key_limit(const bsq_attention_args *a, int row)
{
    if (a->block <= 0)
        return (size_t)a->nk;
    size_t lim = ((size_t)row / (size_t)a->block + 1) * (size_t)a->block;
    return lim < (size_t)a->nk ? lim : (size_t)a->nk;
}

static void attb_task(void *arg, size_t task, int thread)
{
    const attb_job *j = arg;
    const bsq_attention_args *a = j->a;
    const bsq_gemm_kernel *kn = &j->cpu->gemm;
    const int hd = a->head_dim, n = a->nq;
    const int b = (int)(task / (size_t)a->heads), h = (int)(task % (size_t)a->heads);
    const size_t qs = a->q_stride, ks = a->kv_stride, os = a->out_stride;
    const float *q = a->q + (size_t)b * a->q_seq * qs + (size_t)h * hd;
    const float *k = a->k + (size_t)b * a->kv_seq * ks + (size_t)h * hd;
    const float *v = a->v + (size_t)b * a->kv_seq * ks + (size_t)h * hd;
    const float *o = a->out + (size_t)b * a->out_seq * os + (size_t)h * hd;
    const float *dout = j->dout + (size_t)b * a->out_seq * os + (size_t)h * hd;
    float *dq = j->dq + (size_t)b * a->q_seq * qs + (size_t)h * hd;
    float *dk = j->dk + (size_t)b * a->kv_seq * ks + (size_t)h * hd;
    float *dv = j->dv + (size_t)b * a->kv_seq * ks + (size_t)h * hd;
    float *p = j->cpu->bwd_scratch[thread], *ds = p + (size_t)QB * n;
    float *gs = j->cpu->gemm_scratch[thread];

    for (int r = 0; r < n; r++) {
        memset(dk + (size_t)r * ks, 0, (size_t)hd * sizeof(float));
        memset(dv + (size_t)r * ks, 0, (size_t)hd * sizeof(float));
    }
    for (int q0 = 0; q0 < n; q0 += QB) {
        int qn = n - q0 < QB ? n - q0 : QB;
        int kmax = (int)key_limit(a, q0 + qn - 1); /* keys any row of the block sees */
        size_t ld = (size_t)kmax;
        memset(p, 0, (size_t)qn * ld * sizeof(float));
        memset(ds, 0, (size_t)qn * ld * sizeof(float));
        gemm_any(kn, qn, kmax, hd, q + (size_t)q0 * qs, qs, 0, k, ks, 1, p, ld, gs);
        gemm_any(kn, qn, kmax, hd, dout + (size_t)q0 * os, os, 0, v, ks, 1, ds, ld, gs);
        for (int i = 0; i < qn; i++) {
            float *pr = p + (size_t)i * ld, *dr = ds + (size_t)i * ld;
            int lim = (int)key_limit(a, q0 + i);
            for (int c = 0; c < lim; c++)
                pr[c] *= a->scale;
            float m = bsq_cpu_max_span(pr, (size_t)lim, -INFINITY);
            float inv = 1.0f / bsq_cpu_exp_sum_span(pr, (size_t)lim, m);
            const float *orow = o + (size_t)(q0 + i) * os, *drow = dout + (size_t)(q0 + i) * os;
            float di = 0.0f;
            for (int c = 0; c < hd; c++)
                di += orow[c] * drow[c];
            for (int c = 0; c < lim; c++) {
                pr[c] *= inv;
                dr[c] = pr[c] * (dr[c] - di) * a->scale;
            }
            for (int c = lim; c < kmax; c++)
                pr[c] = dr[c] = 0.0f;
            memset(dq + (size_t)(q0 + i) * qs, 0, (size_t)hd * sizeof(float));
        }
        gemm_any(kn, qn, hd, kmax, ds, ld, 0, k, ks, 0, dq + (size_t)q0 * qs, qs, gs);
        gemm_any(kn, kmax, hd, qn, ds, ld, 1, q + (size_t)q0 * qs, qs, 0, dk, ks, gs);
        gemm_any(kn, kmax, hd, qn, p, ld, 1, dout + (size_t)q0 * os, os, 0, dv, ks, gs);
    }
}

void bsq_cpu_attention_backward(bsq_backend *be, const bsq_attention_args *a, const float *dout,
                                float *dq, float *dk, float *dv)
{
    bsq_cpu *cpu = (bsq_cpu *)be;
    size_t need = 2 * (size_t)QB * (size_t)a->nq;
    if (need > cpu->bwd_scratch_len) {
        for (int t = 0; t < cpu->threads; t++) {
            free(cpu->bwd_scratch[t]);
            cpu->bwd_scratch[t] = aligned_alloc(64, (need * sizeof(float) + 63) & ~(size_t)63);
            if (!cpu->bwd_scratch[t]) {
                cpu->failed = 1;
                cpu->bwd_scratch_len = 0;
                return;
            }
        }
        cpu->bwd_scratch_len = need;
    }
    attb_job j = {a, dout, dq, dk, dv, cpu};
    bsq_pool_run(cpu->pool, (size_t)a->batch * a->heads, attb_task, &j);
}
