/* Multi-head attention without the N x N score matrix. Each task takes one
 * head of one sequence: it packs that head's keys and values once for the
 * packed product, then walks its queries in blocks of BSQ_ATT_QB and the keys
 * in blocks of BSQ_ATT_KB, keeping a running max and sum per query (online
 * softmax) and rescaling the output accumulator as the max grows.
 * Block-causal masking limits each query row to the keys of frames up to its
 * own. Without a packed kernel the tile products go to OpenBLAS. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

static size_t key_limit(const bsq_attention_args *a, int row)
{
    if (a->block <= 0)
        return (size_t)a->nk;
    size_t lim = ((size_t)(a->q_offset + row) / (size_t)a->block + 1) * (size_t)a->block;
    return lim < (size_t)a->nk ? lim : (size_t)a->nk;
}

typedef struct {
    const bsq_attention_args *a;
    bsq_cpu *cpu;
    size_t pk_len; /* floats of packed keys per thread (0: no packed kernel) */
} att_job;

/* Online softmax over one key block: turns the scores of row i into
 * probabilities relative to the running max, rescales what was accumulated
 * when the max grows, and adds to the running sums. */
static void softmax_block(float *s, int qn, int kn, size_t k0, const bsq_attention_args *a, int q0,
                          float *mx, float *sum, float *acc, int hd)
{
    for (int i = 0; i < qn; i++) {
        float *row = s + (size_t)i * BSQ_ATT_KB;
        size_t lim = key_limit(a, q0 + i);
        int valid = lim <= k0 ? 0 : (int)(lim - k0 < (size_t)kn ? lim - k0 : (size_t)kn);
        float m = bsq_cpu_max_span(row, (size_t)valid, mx[i]);
        float rs = bsq_cpu_exp_sum_span(row, (size_t)valid, m);
        for (int c = valid; c < kn; c++)
            row[c] = 0.0f;
        if (valid && m != mx[i]) {
            float corr = mx[i] == -INFINITY ? 0.0f : expf(mx[i] - m);
            sum[i] *= corr;
            float *o = acc + (size_t)i * hd;
            for (int c = 0; c < hd; c++)
                o[c] *= corr;
            mx[i] = m;
        }
        sum[i] += rs;
    }
}

static void att_task(void *arg, size_t task, int thread)
{
    const att_job *j = arg;
    const bsq_attention_args *a = j->a;
    const bsq_gemm_kernel *kn_ = &j->cpu->gemm;
    const int hd = a->head_dim;
    const int b = (int)(task / (size_t)a->heads), h = (int)(task % (size_t)a->heads);

    float *s = j->cpu->scratch[thread];                  /* [QB][KB] scores / probabilities */
    float *acc = s + BSQ_ATT_QB * BSQ_ATT_KB;             /* [QB][hd] output accumulator */
    float *mx = acc + BSQ_ATT_QB * BSQ_ATT_MAX_HEAD_DIM;  /* [QB] running max */
    float *sum = mx + BSQ_ATT_QB;                         /* [QB] running sum */
    float *qs = sum + BSQ_ATT_QB;                         /* [QB][hd] scaled queries */
    float *gs = j->cpu->gemm_scratch[thread];

    const float *k = a->k + (size_t)b * a->kv_seq * a->kv_stride + (size_t)h * hd;
    const float *v = a->v + (size_t)b * a->kv_seq * a->kv_stride + (size_t)h * hd;

    /* this head's keys (as B^T of the scores) and values (as B of P V),
     * packed once for every query block */
    const size_t nk_all = key_limit(a, a->nq - 1);
    float *pk = NULL, *pv = NULL;
    if (j->pk_len) {
        pk = j->cpu->kv_pack[thread];
        pv = pk + j->pk_len;
        bsq_cpu_pack_b_full(kn_, k, a->kv_stride, (int)nk_all, hd, 1, pk);
        bsq_cpu_pack_b_full(kn_, v, a->kv_stride, hd, (int)nk_all, 0, pv);
    }

    for (int q0 = 0; q0 < a->nq; q0 += BSQ_ATT_QB) {
        const int qn = a->nq - q0 < BSQ_ATT_QB ? a->nq - q0 : BSQ_ATT_QB;
        const float *q = a->q + ((size_t)b * a->q_seq + (size_t)q0) * a->q_stride + (size_t)h * hd;
        float *out = a->out + ((size_t)b * a->out_seq + (size_t)q0) * a->out_stride + (size_t)h * hd;
        /* pre-scaled so the scores come out scaled */
        for (int i = 0; i < qn; i++)
            for (int c = 0; c < hd; c++)
                qs[(size_t)i * hd + c] = q[(size_t)i * a->q_stride + c] * a->scale;
        memset(acc, 0, sizeof(float) * (size_t)qn * hd);
        for (int i = 0; i < qn; i++) {
            mx[i] = -INFINITY;
            sum[i] = 0.0f;
        }
        const size_t kend = key_limit(a, q0 + qn - 1); /* the last row sees the most keys */
        for (size_t k0 = 0; k0 < kend; k0 += BSQ_ATT_KB) {
            const int kn = (int)(kend - k0 < BSQ_ATT_KB ? kend - k0 : BSQ_ATT_KB);
            for (int i = 0; i < qn; i++)
                memset(s + (size_t)i * BSQ_ATT_KB, 0, (size_t)kn * sizeof(float));
            if (pk) /* keys k0.. start at micro-panel k0 / NR (KB is a multiple of NR) */
                bsq_cpu_gemm_prepacked(kn_, qn, kn, hd, qs, (size_t)hd,
                                       pk + (k0 / (size_t)kn_->nr) * (size_t)hd * kn_->nr, s,
                                       BSQ_ATT_KB, gs);
            else
                bsq_cpu_gemm(kn_, qn, kn, hd, qs, (size_t)hd, k + k0 * a->kv_stride,
                             a->kv_stride, 1, s, BSQ_ATT_KB, gs);
            softmax_block(s, qn, kn, k0, a, q0, mx, sum, acc, hd);
            if (pv) { /* values k0.. are rows k0.. of every micro-panel */
                bsq_cpu_gemm_prepacked_offset(kn_, qn, hd, kn, s, BSQ_ATT_KB, pv, nk_all, k0, acc,
                                              (size_t)hd, gs);
            } else {
                bsq_cpu_gemm(kn_, qn, hd, kn, s, BSQ_ATT_KB, v + k0 * a->kv_stride, a->kv_stride,
                             0, acc, (size_t)hd, gs);
            }
        }
        for (int i = 0; i < qn; i++) {
            float inv = sum[i] > 0.0f ? 1.0f / sum[i] : 0.0f;
            const float *o = acc + (size_t)i * hd;
            float *dst = out + (size_t)i * a->out_stride;
            for (int c = 0; c < hd; c++)
                dst[c] = o[c] * inv;
        }
    }
}

void bsq_cpu_attention(bsq_backend *be, const bsq_attention_args *a)
{
    bsq_cpu *cpu = (bsq_cpu *)be;
    size_t nk_all = key_limit(a, a->nq - 1);
    size_t pk = bsq_cpu_pack_b_size(&cpu->gemm, (int)nk_all, a->head_dim);
    size_t pv = bsq_cpu_pack_b_size(&cpu->gemm, a->head_dim, (int)nk_all);
    att_job j = {a, cpu, pk};
    if (pk && pk + pv > cpu->kv_pack_len) {
        int ok = 1;
        for (int t = 0; t < cpu->threads; t++) {
            free(cpu->kv_pack[t]);
            cpu->kv_pack[t] = aligned_alloc(64, ((pk + pv) * sizeof(float) + 63) & ~(size_t)63);
            ok &= cpu->kv_pack[t] != NULL;
        }
        cpu->kv_pack_len = ok ? pk + pv : 0;
    }
    if (pk + pv > cpu->kv_pack_len)
        j.pk_len = 0; /* out of memory for packing: the slower unpacked path */
    bsq_pool_run(cpu->pool, (size_t)a->batch * (size_t)a->heads, att_task, &j);
}
