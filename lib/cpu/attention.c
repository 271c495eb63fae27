/* Multi-head attention without the N x N score matrix: each task takes a
 * block of BSQ_ATT_QB queries of one head of one sequence and walks the keys
 * in blocks of BSQ_ATT_KB, keeping a running max and sum per query (online
 * softmax) and rescaling its output accumulator as the max grows. Scores and
 * the P V product of a tile go through the single-threaded packed product. Block-causal
 * masking limits each query row to the keys of frames up to its own. */
#include <math.h>
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
    size_t qblocks;
} att_job;

static void att_task(void *arg, size_t task, int thread)
{
    const att_job *j = arg;
    const bsq_attention_args *a = j->a;
    const int hd = a->head_dim;
    size_t per_seq = j->qblocks * (size_t)a->heads;
    int b = (int)(task / per_seq);
    int h = (int)((task % per_seq) / j->qblocks);
    int q0 = (int)(task % j->qblocks) * BSQ_ATT_QB;
    int qn = a->nq - q0 < BSQ_ATT_QB ? a->nq - q0 : BSQ_ATT_QB;

    float *s = j->cpu->scratch[thread];           /* [QB][KB] scores / probabilities */
    float *acc = s + BSQ_ATT_QB * BSQ_ATT_KB;      /* [QB][hd] output accumulator */
    float *mx = acc + BSQ_ATT_QB * BSQ_ATT_MAX_HEAD_DIM; /* [QB] running max */
    float *sum = mx + BSQ_ATT_QB;                  /* [QB] running sum */

    const float *q = a->q + ((size_t)b * a->q_seq + (size_t)q0) * a->q_stride + (size_t)h * hd;
    const float *k = a->k + (size_t)b * a->kv_seq * a->kv_stride + (size_t)h * hd;
    const float *v = a->v + (size_t)b * a->kv_seq * a->kv_stride + (size_t)h * hd;
    float *out = a->out + ((size_t)b * a->out_seq + (size_t)q0) * a->out_stride + (size_t)h * hd;

    /* the query block, pre-scaled so the scores come out scaled */
    float *qs = sum + BSQ_ATT_QB;
    for (int i = 0; i < qn; i++)
        for (int c = 0; c < hd; c++)
            qs[(size_t)i * hd + c] = q[(size_t)i * a->q_stride + c] * a->scale;
    memset(acc, 0, sizeof(float) * (size_t)qn * hd);
    for (int i = 0; i < qn; i++) {
        mx[i] = -INFINITY;
        sum[i] = 0.0f;
    }
    size_t kend = key_limit(a, q0 + qn - 1); /* the last row sees the most keys */
    for (size_t k0 = 0; k0 < kend; k0 += BSQ_ATT_KB) {
        int kn = (int)(kend - k0 < BSQ_ATT_KB ? kend - k0 : BSQ_ATT_KB);
        for (int i = 0; i < qn; i++)
            memset(s + (size_t)i * BSQ_ATT_KB, 0, (size_t)kn * sizeof(float));
        bsq_cpu_gemm(&j->cpu->gemm, qn, kn, hd, qs, (size_t)hd, k + k0 * a->kv_stride, a->kv_stride,
                     1, s, BSQ_ATT_KB, j->cpu->gemm_scratch[thread]);
        for (int i = 0; i < qn; i++) {
            float *row = s + (size_t)i * BSQ_ATT_KB;
            size_t lim = key_limit(a, q0 + i);
            int valid = lim <= k0 ? 0 : (int)(lim - k0 < (size_t)kn ? lim - k0 : (size_t)kn);
            float m = mx[i];
            for (int c = 0; c < valid; c++)
                m = row[c] > m ? row[c] : m;
            for (int c = 0; c < valid; c++)
                row[c] -= m;
            bsq_cpu_exp_inplace(row, (size_t)valid);
            for (int c = valid; c < kn; c++)
                row[c] = 0.0f;
            float rs = 0.0f;
            for (int c = 0; c < valid; c++)
                rs += row[c];
            if (valid && m != mx[i]) {
                /* the running max grew: rescale what was accumulated */
                float corr = mx[i] == -INFINITY ? 0.0f : expf(mx[i] - m);
                sum[i] *= corr;
                float *o = acc + (size_t)i * hd;
                for (int c = 0; c < hd; c++)
                    o[c] *= corr;
                mx[i] = m;
            }
            sum[i] += rs;
        }
        bsq_cpu_gemm(&j->cpu->gemm, qn, hd, kn, s, BSQ_ATT_KB, v + k0 * a->kv_stride, a->kv_stride,
                     0, acc, (size_t)hd, j->cpu->gemm_scratch[thread]);
    }
    for (int i = 0; i < qn; i++) {
        float inv = sum[i] > 0.0f ? 1.0f / sum[i] : 0.0f;
        const float *o = acc + (size_t)i * hd;
        float *dst = out + (size_t)i * a->out_stride;
        for (int c = 0; c < hd; c++)
            dst[c] = o[c] * inv;
    }
}

void bsq_cpu_attention(bsq_backend *be, const bsq_attention_args *a)
{
    bsq_cpu *cpu = (bsq_cpu *)be;
    att_job j = {a, cpu, ((size_t)a->nq + BSQ_ATT_QB - 1) / BSQ_ATT_QB};
    bsq_pool_run(cpu->pool, (size_t)a->batch * (size_t)a->heads * j.qblocks, att_task, &j);
}
