/* Matrix products y = x W^T + b.
 *
 * The output is cut into fixed ROW_TILE x COL_TILE tiles run by our pool.
 * The tile grid does not depend on the thread count, so every element is
 * computed by the same sequence of operations whatever the number of
 * threads: results are bit-identical across thread counts.
 *
 * Inside a tile: on x86-64 CPUs with AVX-512 or AVX2+FMA, a packed
 * register-blocked kernel of our own (BLIS-style: K in KC blocks, A packed
 * into MR-row micro-panels, W into NR-column micro-panels, an MR x NR
 * accumulator block held in registers). We do not rely on OpenBLAS for this
 * because its run-time CPU detection falls back to an SSE3 kernel on CPUs
 * newer than the build knows (seen: Sapphire Rapids reported as "Prescott",
 * 4.5x slower). Elsewhere, single-threaded OpenBLAS sgemm per tile. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

#define ROW_TILE 240 /* a multiple of every kernel's MR (8, 6): tiles start on a packed panel */
#define COL_TILE 128
#define KC 256

typedef struct {
    const float *x, *w, *bias;
    float *y;
    size_t rows;
    int k, n;
    size_t col_tiles;
    bsq_cpu *cpu;
    const float *pa; /* x packed into micro-panels, or NULL */
    const float *pw; /* w packed for the model, or NULL */
} linear_job;

/* ---------------------------------------------------------------- kernels */
#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_OWN_GEMM 1

#include <immintrin.h>

/* A micro-kernel over one KC block: c[MR][NR] += sum_k a[k][MR] b[k][NR],
 * with MR x NR/VW vector accumulators kept in registers; partial edge tiles
 * go through a stack buffer. Instantiated per ISA with its vector type. */
/* The accumulator loops must be unrolled completely so the MR x NR/VW
 * accumulators live in registers; -O2 (the default CFLAGS) would not. */
#define UNROLL _Pragma("GCC unroll 16")

#define DEFINE_KERNEL(NAME, TARGET, VEC, VW, MR, NR, LOAD, STOREU, LOADU, BCAST, FMA, ZERO, ADD)  \
    __attribute__((target(TARGET))) static void NAME(int kc, const float *a, const float *b,     \
                                                     float *c, size_t ldc, int m, int n)          \
    {                                                                                             \
        enum { NV = NR / VW };                                                                    \
        VEC acc[MR][NV];                                                                          \
        UNROLL for (int r = 0; r < MR; r++)                                                       \
            UNROLL for (int v = 0; v < NV; v++)                                                   \
                acc[r][v] = ZERO();                                                               \
        for (int k = 0; k < kc; k++) {                                                            \
            VEC bv[NV];                                                                           \
            UNROLL for (int v = 0; v < NV; v++)                                                   \
                bv[v] = LOAD(b + (size_t)k * NR + v * VW);                                        \
            UNROLL for (int r = 0; r < MR; r++) {                                                 \
                VEC av = BCAST(a[(size_t)k * MR + r]);                                            \
                UNROLL for (int v = 0; v < NV; v++)                                               \
                    acc[r][v] = FMA(av, bv[v], acc[r][v]);                                        \
            }                                                                                     \
        }                                                                                         \
        if (m == MR && n == NR) {                                                                 \
            UNROLL for (int r = 0; r < MR; r++)                                                   \
                UNROLL for (int v = 0; v < NV; v++) {                                             \
                    float *p = c + (size_t)r * ldc + v * VW;                                      \
                    STOREU(p, ADD(LOADU(p), acc[r][v]));                                          \
                }                                                                                 \
        } else {                                                                                  \
            float tmp[MR][NR] __attribute__((aligned(64)));                                       \
            for (int r = 0; r < MR; r++)                                                          \
                for (int v = 0; v < NV; v++)                                                      \
                    STOREU(&tmp[r][v * VW], acc[r][v]);                                           \
            for (int r = 0; r < m; r++)                                                           \
                for (int j = 0; j < n; j++)                                                       \
                    c[(size_t)r * ldc + j] += tmp[r][j];                                          \
        }                                                                                         \
    }

DEFINE_KERNEL(kernel_avx512, "avx512f,fma", __m512, 16, 8, 32, _mm512_load_ps, _mm512_storeu_ps,
              _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_setzero_ps, _mm512_add_ps)
DEFINE_KERNEL(kernel_avx2, "avx2,fma", __m256, 8, 6, 16, _mm256_load_ps, _mm256_storeu_ps,
              _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_setzero_ps, _mm256_add_ps)

/* Packs rows [0, m) of x [m][k] into MR-row micro-panels [m/MR][k][MR],
 * zero-filling the last panel's missing rows. Rows are read contiguously. */
static void pack_a_panel(const float *x, size_t ldx, int mb, int k, int mr, float *out)
{
    for (int r = 0; r < mb; r++) {
        const float *src = x + (size_t)r * ldx;
        for (int kk = 0; kk < k; kk++)
            out[(size_t)kk * mr + r] = src[kk];
    }
    for (int r = mb; r < mr; r++)
        for (int kk = 0; kk < k; kk++)
            out[(size_t)kk * mr + r] = 0.0f;
}

/* Packs W rows [0, n) (output columns), k range [k0, k0 + kc), into
 * NR-column micro-panels [n/NR][kc][NR]. */
static void pack_b(const float *w, size_t ldw, int n, int k0, int kc, int nr, float *out)
{
    for (int j0 = 0; j0 < n; j0 += nr) {
        int nb = n - j0 < nr ? n - j0 : nr;
        for (int j = 0; j < nb; j++) {
            const float *src = w + (size_t)(j0 + j) * ldw + k0;
            for (int kk = 0; kk < kc; kk++)
                out[(size_t)kk * nr + j] = src[kk];
        }
        for (int j = nb; j < nr; j++)
            for (int kk = 0; kk < kc; kk++)
                out[(size_t)kk * nr + j] = 0.0f;
        out += (size_t)kc * nr;
    }
}

/* Packs rows [k0, k0 + kc) x columns [0, n) of a row-major B [k][n] into
 * NR-column micro-panels (the plain, untransposed case: P V in attention). */
static void pack_b_kn(const float *b, size_t ldb, int n, int k0, int kc, int nr, float *out)
{
    for (int j0 = 0; j0 < n; j0 += nr) {
        int nb = n - j0 < nr ? n - j0 : nr;
        for (int kk = 0; kk < kc; kk++) {
            const float *src = b + (size_t)(k0 + kk) * ldb + j0;
            float *dst = out + (size_t)kk * nr;
            for (int j = 0; j < nb; j++)
                dst[j] = src[j];
            for (int j = nb; j < nr; j++)
                dst[j] = 0.0f;
        }
        out += (size_t)kc * nr;
    }
}

/* Packs op(A) rows [0, m) x columns [k0, k0 + kc) into MR-row micro-panels
 * [m/MR][kc][MR] when A is stored transposed, as [k][m] (lda between its
 * rows): reads are contiguous along m. */
static void pack_a_block_t(const float *a, size_t lda, int m, int k0, int kc, int mr, float *out)
{
    for (int i0 = 0; i0 < m; i0 += mr) {
        int mb = m - i0 < mr ? m - i0 : mr;
        for (int kk = 0; kk < kc; kk++) {
            const float *src = a + (size_t)(k0 + kk) * lda + i0;
            float *dst = out + (size_t)kk * mr;
            for (int r = 0; r < mb; r++)
                dst[r] = src[r];
            for (int r = mb; r < mr; r++)
                dst[r] = 0.0f;
        }
        out += (size_t)kc * mr;
    }
}

/* Packs rows [0, m) x columns [k0, k0 + kc) of A into MR-row micro-panels
 * [m/MR][kc][MR]. */
static void pack_a_block(const float *a, size_t lda, int m, int k0, int kc, int mr, float *out)
{
    for (int i0 = 0; i0 < m; i0 += mr) {
        int mb = m - i0 < mr ? m - i0 : mr;
        pack_a_panel(a + (size_t)i0 * lda + k0, lda, mb, kc, mr, out);
        out += (size_t)kc * mr;
    }
}

/* The best kernel the CPU runs; BSQ_CPU_GEMM=avx2|blas picks a lesser one
 * (tests exercise every path on one machine; benchmarks compare them). */
static bsq_gemm_kernel pick_kernel(void)
{
    const char *want = getenv("BSQ_CPU_GEMM");
    int avx2_only = want && !strcmp(want, "avx2"), blas = want && !strcmp(want, "blas");
    __builtin_cpu_init();
    if (blas)
        return (bsq_gemm_kernel){NULL, 0, 0};
    if (!avx2_only && __builtin_cpu_supports("avx512f"))
        return (bsq_gemm_kernel){kernel_avx512, 8, 32};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return (bsq_gemm_kernel){kernel_avx2, 6, 16};
    return (bsq_gemm_kernel){NULL, 0, 0};
}

/* y tile [mb][nb] (already holding the bias) += A W^T, with A packed (pa:
 * the tile's first micro-panel, full k) and W either packed once for the
 * model (pw: the tile's first micro-panel, full k) or packed here per KC
 * block into pb. */
static void own_tile(const bsq_gemm_kernel *kn, const float *pa, const float *w, const float *pw,
                     float *y, int mb, int nb, int k, int ldy, float *pb)
{
    for (int k0 = 0; k0 < k; k0 += KC) {
        int kc = k - k0 < KC ? k - k0 : KC;
        size_t bstride = (size_t)kc * kn->nr; /* between micro-panels */
        const float *b0 = pb;
        if (pw) {
            b0 = pw + (size_t)k0 * kn->nr;
            bstride = (size_t)k * kn->nr;
        } else {
            pack_b(w, (size_t)k, nb, k0, kc, kn->nr, pb);
        }
        for (int j0 = 0; j0 < nb; j0 += kn->nr)
            for (int i0 = 0; i0 < mb; i0 += kn->mr)
                kn->fn(kc, pa + (size_t)(i0 / kn->mr) * k * kn->mr + (size_t)k0 * kn->mr,
                       b0 + (size_t)(j0 / kn->nr) * bstride, y + (size_t)i0 * ldy + j0,
                       (size_t)ldy, mb - i0 < kn->mr ? mb - i0 : kn->mr,
                       nb - j0 < kn->nr ? nb - j0 : kn->nr);
    }
}

/* The model's weight matrices packed once into NR-column micro-panels over
 * the full k ([n/NR][k][NR]), so products never re-pack them. Only
 * matrices inside the range registered by the context are cached: that
 * memory is immutable while the context lives. NULL when not cacheable or
 * out of memory (the product then packs per call). */
static const float *packed_weight(bsq_cpu *cpu, const float *w, int k, int n)
{
    if (w < cpu->weights_lo || w + (size_t)k * n > cpu->weights_hi)
        return NULL;
    for (size_t i = 0; i < cpu->npacked_w; i++)
        if (cpu->packed_w[i].w == w && cpu->packed_w[i].k == k && cpu->packed_w[i].n == n)
            return cpu->packed_w[i].data;
    if (cpu->npacked_w == cpu->cap_packed_w) {
        size_t cap = cpu->cap_packed_w ? cpu->cap_packed_w * 2 : 64;
        bsq_packed_w *p = realloc(cpu->packed_w, cap * sizeof *p);
        if (!p)
            return NULL;
        cpu->packed_w = p;
        cpu->cap_packed_w = cap;
    }
    const int nr = cpu->gemm.nr;
    size_t panels = ((size_t)n + nr - 1) / nr;
    float *data = aligned_alloc(64, (panels * nr * (size_t)k * sizeof(float) + 63) & ~(size_t)63);
    if (!data)
        return NULL;
    pack_b(w, (size_t)k, n, 0, k, nr, data);
    cpu->packed_w[cpu->npacked_w++] = (bsq_packed_w){w, k, n, data};
    return data;
}

typedef struct {
    const float *x;
    float *pa;
    size_t rows;
    int k, mr;
} pack_job;

#define PACK_PANELS 8 /* micro-panels per packing task */

static void pack_task(void *arg, size_t task, int thread)
{
    (void)thread;
    const pack_job *j = arg;
    size_t p0 = task * PACK_PANELS, np = (j->rows + j->mr - 1) / j->mr;
    for (size_t p = p0; p < p0 + PACK_PANELS && p < np; p++) {
        size_t r0 = p * j->mr;
        int mb = j->rows - r0 < (size_t)j->mr ? (int)(j->rows - r0) : j->mr;
        pack_a_panel(j->x + r0 * j->k, (size_t)j->k, mb, j->k, j->mr,
                     j->pa + p * (size_t)j->k * j->mr);
    }
}
#endif

void bsq_cpu_gemm(const bsq_gemm_kernel *kn, int m, int n, int k, const float *a, size_t lda,
                  const float *b, size_t ldb, int b_trans, float *c, size_t ldc, float *scratch)
{
    bsq_cpu_gemm_t(kn, m, n, k, a, lda, 0, b, ldb, b_trans, c, ldc, scratch);
}

void bsq_cpu_gemm_t(const bsq_gemm_kernel *kn, int m, int n, int k, const float *a, size_t lda,
                    int a_trans, const float *b, size_t ldb, int b_trans, float *c, size_t ldc,
                    float *scratch)
{
#ifdef HAVE_OWN_GEMM
    if (kn->fn) {
        float *pa = scratch, *pb = scratch + (size_t)(BSQ_GEMM_MAX_M + 16) * KC;
        for (int k0 = 0; k0 < k; k0 += KC) {
            int kc = k - k0 < KC ? k - k0 : KC;
            if (a_trans)
                pack_a_block_t(a, lda, m, k0, kc, kn->mr, pa);
            else
                pack_a_block(a, lda, m, k0, kc, kn->mr, pa);
            if (b_trans)
                pack_b(b, ldb, n, k0, kc, kn->nr, pb);
            else
                pack_b_kn(b, ldb, n, k0, kc, kn->nr, pb);
            for (int j0 = 0; j0 < n; j0 += kn->nr)
                for (int i0 = 0; i0 < m; i0 += kn->mr)
                    kn->fn(kc, pa + (size_t)(i0 / kn->mr) * kc * kn->mr,
                           pb + (size_t)(j0 / kn->nr) * kc * kn->nr, c + (size_t)i0 * ldc + j0, ldc,
                           m - i0 < kn->mr ? m - i0 : kn->mr, n - j0 < kn->nr ? n - j0 : kn->nr);
        }
        return;
    }
#endif
    (void)kn;
    (void)scratch;
    cblas_sgemm(CblasRowMajor, a_trans ? CblasTrans : CblasNoTrans,
                b_trans ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a, (int)lda, b, (int)ldb, 1.0f,
                c, (int)ldc);
}

size_t bsq_cpu_pack_b_size(const bsq_gemm_kernel *kn, int n, int k)
{
    return kn->fn ? ((size_t)n + kn->nr - 1) / kn->nr * kn->nr * (size_t)k : 0;
}

void bsq_cpu_pack_b_full(const bsq_gemm_kernel *kn, const float *b, size_t ldb, int n, int k,
                         int b_trans, float *out)
{
#ifdef HAVE_OWN_GEMM
    if (b_trans)
        pack_b(b, ldb, n, 0, k, kn->nr, out);
    else
        pack_b_kn(b, ldb, n, 0, k, kn->nr, out);
#else
    (void)kn, (void)b, (void)ldb, (void)n, (void)k, (void)b_trans, (void)out;
#endif
}

void bsq_cpu_gemm_prepacked_offset(const bsq_gemm_kernel *kn, int m, int n, int k, const float *a,
                                   size_t lda, const float *pb, size_t depth, size_t koff, float *c,
                                   size_t ldc, float *scratch)
{
#ifdef HAVE_OWN_GEMM
    const size_t bstride = depth * kn->nr; /* between B micro-panels */
    for (int k0 = 0; k0 < k; k0 += KC) {
        int kc = k - k0 < KC ? k - k0 : KC;
        pack_a_block(a, lda, m, k0, kc, kn->mr, scratch);
        for (int j0 = 0; j0 < n; j0 += kn->nr)
            for (int i0 = 0; i0 < m; i0 += kn->mr)
                kn->fn(kc, scratch + (size_t)(i0 / kn->mr) * kc * kn->mr,
                       pb + (size_t)(j0 / kn->nr) * bstride + (koff + (size_t)k0) * kn->nr,
                       c + (size_t)i0 * ldc + j0, ldc, m - i0 < kn->mr ? m - i0 : kn->mr,
                       n - j0 < kn->nr ? n - j0 : kn->nr);
    }
#else
    (void)kn, (void)m, (void)n, (void)k, (void)a, (void)lda, (void)pb, (void)depth, (void)koff,
        (void)c, (void)ldc, (void)scratch;
#endif
}

void bsq_cpu_gemm_prepacked(const bsq_gemm_kernel *kn, int m, int n, int k, const float *a,
                            size_t lda, const float *pb, float *c, size_t ldc, float *scratch)
{
    bsq_cpu_gemm_prepacked_offset(kn, m, n, k, a, lda, pb, (size_t)k, 0, c, ldc, scratch);
}

/* Floats of per-thread scratch the packed kernel needs (one packed W
 * block). */
size_t bsq_cpu_gemm_scratch(void)
{
    size_t tile = (size_t)(COL_TILE + 32) * KC;
    size_t general = (size_t)(BSQ_GEMM_MAX_M + 16) * KC + (size_t)(BSQ_GEMM_MAX_N + 32) * KC;
    return tile > general ? tile : general;
}

static void linear_task(void *arg, size_t task, int thread)
{
    const linear_job *j = arg;
    size_t r0 = (task / j->col_tiles) * ROW_TILE, c0 = (task % j->col_tiles) * COL_TILE;
    size_t mb = j->rows - r0 < ROW_TILE ? j->rows - r0 : ROW_TILE;
    size_t nb = (size_t)j->n - c0 < COL_TILE ? (size_t)j->n - c0 : COL_TILE;
    float *y = j->y + r0 * (size_t)j->n + c0;
    for (size_t r = 0; r < mb; r++) {
        if (j->bias)
            memcpy(y + r * (size_t)j->n, j->bias + c0, nb * sizeof(float));
        else
            memset(y + r * (size_t)j->n, 0, nb * sizeof(float));
    }
#ifdef HAVE_OWN_GEMM
    const bsq_gemm_kernel *kn = &j->cpu->gemm;
    if (j->pa) {
        own_tile(kn, j->pa + r0 * (size_t)j->k, j->w + c0 * (size_t)j->k,
                 j->pw ? j->pw + c0 * (size_t)j->k : NULL, y, (int)mb, (int)nb, j->k, j->n,
                 j->cpu->gemm_scratch[thread]);
        return;
    }
#endif
    (void)thread;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)mb, (int)nb, j->k, 1.0f,
                j->x + r0 * (size_t)j->k, j->k, j->w + c0 * (size_t)j->k, j->k, 1.0f, y, j->n);
}

void bsq_cpu_linear(bsq_backend *be, const float *x, const float *w, const float *bias, float *y,
                    size_t rows, int k, int n)
{
    bsq_cpu *cpu = (bsq_cpu *)be;
    linear_job j = {x, w, bias, y, rows, k, n, ((size_t)n + COL_TILE - 1) / COL_TILE, cpu, NULL,
                    NULL};
    size_t row_tiles = (rows + ROW_TILE - 1) / ROW_TILE;
#ifdef HAVE_OWN_GEMM
    if (cpu->gemm.fn) {
        /* pack x once for all column tiles (ROW_TILE is a multiple of MR,
         * so a row tile starts on a micro-panel) */
        size_t panels = (rows + cpu->gemm.mr - 1) / cpu->gemm.mr;
        size_t need = panels * cpu->gemm.mr * (size_t)k;
        if (need > cpu->packed_len) {
            free(cpu->packed);
            cpu->packed = aligned_alloc(64, (need * sizeof(float) + 63) & ~(size_t)63);
            cpu->packed_len = cpu->packed ? need : 0;
        }
        if (cpu->packed) {
            pack_job pj = {x, cpu->packed, rows, k, cpu->gemm.mr};
            bsq_pool_run(cpu->pool, (panels + PACK_PANELS - 1) / PACK_PANELS, pack_task, &pj);
            j.pa = cpu->packed;
            j.pw = packed_weight(cpu, w, k, n);
        }
    }
#endif
    bsq_pool_run(cpu->pool, row_tiles * j.col_tiles, linear_task, &j);
}

void bsq_cpu_gemm_init(bsq_cpu *cpu)
{
#ifdef HAVE_OWN_GEMM
    cpu->gemm = pick_kernel();
#else
    (void)cpu;
#endif
}

void bsq_cpu_gemm_release(bsq_cpu *cpu)
{
    for (size_t i = 0; i < cpu->npacked_w; i++)
        free(cpu->packed_w[i].data);
    free(cpu->packed_w);
    cpu->packed_w = NULL;
    cpu->npacked_w = cpu->cap_packed_w = 0;
}
