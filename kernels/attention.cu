/* Attention for the CUDA backend, streaming over keys with an online
 * softmax, so no nq x nk score matrix ever exists (flash-attention style):
 *
 *  - attention_f32: plain fp32 arithmetic, one warp per query row; the
 *    checking mode (within 1e-4 of the CPU engine);
 *  - attention_bf16: tensor cores (WMMA, bf16 inputs, fp32 accumulation);
 *    a block of 4 warps takes 64 query rows of one head, keys stream through
 *    shared memory 64 at a time, each warp owns 16 query rows.
 *
 * Masking (lib/backend.h): query row i sits at position q_offset + i; with
 * block-causal masking it sees keys [0, (pos / block + 1) * block), else
 * all nk. Batches beyond the grid's y/z limits are cut into launches. */
#include "device.h"
#include "kernels.h"

namespace bsqk {

namespace {

#define NEG_INF (-INFINITY)
#define LOG2E 1.4426950408889634f
const int F32_WARPS = 4;
const int F32_MAX_HD = 256;

__device__ __forceinline__ int visible(const bsq_attention_args &a, int i)
{
    if (a.block <= 0)
        return a.nk;
    int pos = a.q_offset + i;
    int lim = (pos / a.block + 1) * a.block;
    return lim < a.nk ? lim : a.nk;
}

/* grid (ceil(nq / 4), heads, batch), 4 warps */
__global__ void k_attention_f32(bsq_attention_args a)
{
    __shared__ float qs[F32_WARPS][F32_MAX_HD];
    const int lane = (int)(threadIdx.x % 32), w = (int)(threadIdx.x / 32);
    const int i = (int)blockIdx.x * F32_WARPS + w, h = (int)blockIdx.y, b = (int)blockIdx.z;
    if (i >= a.nq)
        return; /* whole warps: only warp barriers below */
    const int hd = a.head_dim;
    const float *q = a.q + ((size_t)b * a.q_seq + i) * a.q_stride + (size_t)h * hd;
    const float *k = a.k + (size_t)b * a.kv_seq * a.kv_stride + (size_t)h * hd;
    const float *v = a.v + (size_t)b * a.kv_seq * a.kv_stride + (size_t)h * hd;
    for (int d = lane; d < hd; d += 32)
        qs[w][d] = q[d] * a.scale;
    __syncwarp();
    const int lim = visible(a, i);
    float acc[F32_MAX_HD / 32];
    for (int j = 0; j < F32_MAX_HD / 32; j++)
        acc[j] = 0.0f;
    float m = NEG_INF, l = 0.0f;
    for (int k0 = 0; k0 < lim; k0 += 32) {
        const int key = k0 + lane;
        float s = NEG_INF;
        if (key < lim) {
            const float *kr = k + (size_t)key * a.kv_stride;
            s = 0.0f;
            for (int d = 0; d < hd; d++)
                s += qs[w][d] * kr[d];
        }
        const float m_new = fmaxf(m, warp_max(s)); /* finite: key k0 < lim */
        const float p = key < lim ? expf(s - m_new) : 0.0f;
        const float alpha = expf(m - m_new);
        l = l * alpha + warp_sum(p);
        for (int j = 0; j < F32_MAX_HD / 32; j++)
            acc[j] *= alpha;
        const int n = lim - k0 < 32 ? lim - k0 : 32;
        for (int jj = 0; jj < n; jj++) {
            const float pj = __shfl_sync(0xffffffffu, p, jj);
            const float *vr = v + (size_t)(k0 + jj) * a.kv_stride;
            for (int j = 0; j < F32_MAX_HD / 32; j++) {
                int d = lane + 32 * j;
                if (d < hd)
                    acc[j] += pj * vr[d];
            }
        }
        m = m_new;
    }
    float *o = a.out + ((size_t)b * a.out_seq + i) * a.out_stride + (size_t)h * hd;
    const float inv = 1.0f / l;
    for (int j = 0; j < F32_MAX_HD / 32; j++) {
        int d = lane + 32 * j;
        if (d < hd)
            o[d] = acc[j] * inv;
    }
}

/* ---- tensor cores ---- */
namespace wmma = nvcuda::wmma;

const int BQ = 64, BK = 64, TC_WARPS = 4;

/* Shared memory of the kernel for a padded head size HDP, in bytes; every
 * region starts on a multiple of 128 bytes (WMMA wants 32). */
struct tc_layout {
    int ldq, lds, ldp, ldo;          /* leading dimensions, in elements */
    size_t q, k, v, s, p, o, total;  /* byte offsets */
};

__host__ __device__ inline tc_layout tc_layout_for(int hdp)
{
    tc_layout t;
    t.ldq = hdp + 8;  /* bf16: a multiple of 8, and rows off the 128-byte banks */
    t.lds = BK + 4;   /* fp32: a multiple of 4 */
    t.ldp = BK + 8;
    t.ldo = hdp + 4;
    size_t qkv = (size_t)BQ * t.ldq * 2;
    t.q = 0;
    t.k = t.q + qkv;
    t.v = t.k + qkv;
    t.s = t.v + qkv;
    t.p = t.s + (size_t)TC_WARPS * 16 * t.lds * 4;
    t.o = t.p + (size_t)TC_WARPS * 16 * t.ldp * 2;
    t.total = t.o + (size_t)TC_WARPS * 16 * t.ldo * 4;
    return t;
}

/* grid (ceil(nq / 64), heads, batch), 4 warps. Q carries scale * log2(e),
 * so the softmax is exp2 of the scores. */
template <int HDP> __global__ void __launch_bounds__(128) k_attention_tc(bsq_attention_args a)
{
    BSQ_DYNAMIC_SMEM(smem);
    const tc_layout t = tc_layout_for(HDP);
    bsq_bf16 *Qs = (bsq_bf16 *)(smem + t.q), *Ks = (bsq_bf16 *)(smem + t.k);
    bsq_bf16 *Vs = (bsq_bf16 *)(smem + t.v);
    const int tid = (int)threadIdx.x, lane = tid % 32, w = tid / 32;
    float *Sw = (float *)(smem + t.s) + (size_t)w * 16 * t.lds;
    bsq_bf16 *Pw = (bsq_bf16 *)(smem + t.p) + (size_t)w * 16 * t.ldp;
    float *Ow = (float *)(smem + t.o) + (size_t)w * 16 * t.ldo;

    const int h = (int)blockIdx.y, b = (int)blockIdx.z, q0 = (int)blockIdx.x * BQ;
    const int hd = a.head_dim;
    const float *qg = a.q + ((size_t)b * a.q_seq) * a.q_stride + (size_t)h * hd;
    const float *kg = a.k + (size_t)b * a.kv_seq * a.kv_stride + (size_t)h * hd;
    const float *vg = a.v + (size_t)b * a.kv_seq * a.kv_stride + (size_t)h * hd;
    const float qscale = a.scale * LOG2E;

    for (int e = tid; e < BQ * HDP; e += TC_WARPS * 32) {
        int r = e / HDP, d = e % HDP, i = q0 + r;
        float x = i < a.nq && d < hd ? qg[(size_t)i * a.q_stride + d] * qscale : 0.0f;
        Qs[r * t.ldq + d] = __float2bfloat16(x);
    }
    for (int e = lane; e < 16 * HDP; e += 32)
        Ow[(e / HDP) * t.ldo + e % HDP] = 0.0f;

    /* the keys the tile's last row sees bound the loop; rows mask the rest */
    const int last = (q0 + BQ < a.nq ? q0 + BQ : a.nq) - 1;
    const int tile_lim = visible(a, last);
    /* softmax state: two lanes per row, each with half the columns */
    const int rr = lane / 2, half = lane % 2, qi = q0 + w * 16 + rr;
    const int row_lim = qi < a.nq ? visible(a, qi) : 0;
    float m = NEG_INF, l = 0.0f;

    for (int k0 = 0; k0 < tile_lim; k0 += BK) {
        __syncthreads(); /* everyone is done with the previous K and V */
        for (int e = tid; e < BK * HDP; e += TC_WARPS * 32) {
            int r = e / HDP, d = e % HDP, key = k0 + r;
            bool in = key < tile_lim && d < hd; /* zeros elsewhere: 0 * garbage could be NaN */
            Ks[r * t.ldq + d] = __float2bfloat16(in ? kg[(size_t)key * a.kv_stride + d] : 0.0f);
            Vs[r * t.ldq + d] = __float2bfloat16(in ? vg[(size_t)key * a.kv_stride + d] : 0.0f);
        }
        __syncthreads();

        /* S = Q K^T for this warp's 16 rows */
        for (int n = 0; n < BK / 16; n++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int kk = 0; kk < HDP / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bsq_bf16, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bsq_bf16, wmma::col_major> fb;
                wmma::load_matrix_sync(fa, Qs + (w * 16) * t.ldq + kk * 16, t.ldq);
                wmma::load_matrix_sync(fb, Ks + (n * 16) * t.ldq + kk * 16, t.ldq);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(Sw + n * 16, acc, t.lds, wmma::mem_row_major);
        }
        __syncwarp();

        /* online softmax over this tile's columns */
        const int c0 = half * (BK / 2);
        float mx = NEG_INF;
        for (int c = c0; c < c0 + BK / 2; c++)
            if (k0 + c < row_lim)
                mx = fmaxf(mx, Sw[rr * t.lds + c]);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float m_new = fmaxf(m, mx);
        const bool none = m_new == NEG_INF; /* nothing visible yet (padding rows) */
        const float alpha = none ? 1.0f : exp2f(m - m_new);
        float sum = 0.0f;
        for (int c = c0; c < c0 + BK / 2; c++) {
            float p = !none && k0 + c < row_lim ? exp2f(Sw[rr * t.lds + c] - m_new) : 0.0f;
            sum += p;
            Pw[rr * t.ldp + c] = __float2bfloat16(p);
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = l * alpha + sum;
        m = m_new;
        for (int d = half * (HDP / 2); d < (half + 1) * (HDP / 2); d++)
            Ow[rr * t.ldo + d] *= alpha;
        __syncwarp();

        /* O += P V */
        for (int n = 0; n < HDP / 16; n++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::load_matrix_sync(acc, Ow + n * 16, t.ldo, wmma::mem_row_major);
            for (int kk = 0; kk < BK / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bsq_bf16, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bsq_bf16, wmma::row_major> fb;
                wmma::load_matrix_sync(fa, Pw + kk * 16, t.ldp);
                wmma::load_matrix_sync(fb, Vs + (kk * 16) * t.ldq + n * 16, t.ldq);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(Ow + n * 16, acc, t.ldo, wmma::mem_row_major);
        }
        __syncwarp();
    }

    if (qi < a.nq) {
        float *o = a.out + ((size_t)b * a.out_seq + qi) * a.out_stride + (size_t)h * hd;
        const float inv = 1.0f / l;
        for (int d = half; d < hd; d += 2)
            o[d] = Ow[rr * t.ldo + d] * inv;
    }
}

int padded_head(int hd)
{
    return hd <= 32 ? 32 : hd <= 64 ? 64 : hd <= 128 ? 128 : hd <= 256 ? 256 : 0;
}

/* Calls fn(args_for_part, batch_part) for batches of at most 65535. */
template <class F> void by_batch(const bsq_attention_args *a, F fn)
{
    for (int b0 = 0; b0 < a->batch; b0 += 65535) {
        bsq_attention_args part = *a;
        part.batch = a->batch - b0 < 65535 ? a->batch - b0 : 65535;
        part.q += (size_t)b0 * a->q_seq * a->q_stride;
        part.k += (size_t)b0 * a->kv_seq * a->kv_stride;
        part.v += (size_t)b0 * a->kv_seq * a->kv_stride;
        part.out += (size_t)b0 * a->out_seq * a->out_stride;
        fn(part);
    }
}

} // namespace

void attention_f32(cudaStream_t s, const bsq_attention_args *a)
{
    if (a->nq < 1)
        return;
    by_batch(a, [&](const bsq_attention_args &p) {
        BSQ_LAUNCH(k_attention_f32, dim3((unsigned)((p.nq + F32_WARPS - 1) / F32_WARPS),
                                         (unsigned)p.heads, (unsigned)p.batch),
                   F32_WARPS * 32, 0, s, p);
    });
}

size_t attention_bf16_smem(int head_dim)
{
    int hdp = padded_head(head_dim);
    return hdp ? tc_layout_for(hdp).total : 0;
}

template <int HDP> cudaError_t allow_smem(int max_smem)
{
    size_t need = tc_layout_for(HDP).total;
    if (need > (size_t)max_smem)
        return cudaSuccess; /* this head size falls back to the fp32 kernel */
    return cudaFuncSetAttribute(k_attention_tc<HDP>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)need);
}

cudaError_t attention_bf16_prepare(int max_smem)
{
    cudaError_t e;
    if ((e = allow_smem<32>(max_smem)) != cudaSuccess ||
        (e = allow_smem<64>(max_smem)) != cudaSuccess ||
        (e = allow_smem<128>(max_smem)) != cudaSuccess)
        return e;
    return allow_smem<256>(max_smem);
}

void attention_bf16(cudaStream_t s, const bsq_attention_args *a)
{
    if (a->nq < 1)
        return;
    const int hdp = padded_head(a->head_dim);
    const size_t smem = tc_layout_for(hdp).total;
    by_batch(a, [&](const bsq_attention_args &p) {
        dim3 grid((unsigned)((p.nq + BQ - 1) / BQ), (unsigned)p.heads, (unsigned)p.batch);
        switch (hdp) {
        case 32: BSQ_LAUNCH(k_attention_tc<32>, grid, TC_WARPS * 32, smem, s, p); break;
        case 64: BSQ_LAUNCH(k_attention_tc<64>, grid, TC_WARPS * 32, smem, s, p); break;
        case 128: BSQ_LAUNCH(k_attention_tc<128>, grid, TC_WARPS * 32, smem, s, p); break;
        default: BSQ_LAUNCH(k_attention_tc<256>, grid, TC_WARPS * 32, smem, s, p); break;
        }
    });
}

} // namespace bsqk
