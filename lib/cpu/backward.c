/* Backward passes of the CPU backend's ops, for training: general matrix
 * products (the gradients of linear layers are products with a transposed
 * operand), LayerNorm, GELU, tanh, and the positional embeddings.
 *
 * Like the forward ops, work is cut into fixed tasks whose boundaries do not
 * depend on the thread count, and every reduction over rows (weight and
 * bias gradients) sums fixed chunks in a fixed order: gradients are
 * bit-identical whatever the number of threads, so training is
 * deterministic for a given seed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

#define MM_ROWS 240 /* output tile: within bsq_cpu_gemm's 256 x 256 limit */
#define MM_COLS 128
#define RED_ROWS 256 /* rows per partial sum of a reduction */

/* ---------------------------------------------------------------- matmul */
typedef struct {
    int at, bt, accumulate;
    size_t m, n, k, lda, ldb, ldc, col_tiles;
    const float *a, *b;
    float *c;
    bsq_cpu *cpu;
} mm_job;

static void mm_task(void *arg, size_t task, int thread)
{
    const mm_job *j = arg;
    size_t i0 = (task / j->col_tiles) * MM_ROWS, j0 = (task % j->col_tiles) * MM_COLS;
    size_t mb = j->m - i0 < MM_ROWS ? j->m - i0 : MM_ROWS;
    size_t nb = j->n - j0 < MM_COLS ? j->n - j0 : MM_COLS;
    float *c = j->c + i0 * j->ldc + j0;
    if (!j->accumulate)
        for (size_t r = 0; r < mb; r++)
            memset(c + r * j->ldc, 0, nb * sizeof(float));
    if (j->k == 0)
        return;
    const float *a = j->at ? j->a + i0 : j->a + i0 * j->lda;
    const float *b = j->bt ? j->b + j0 * j->ldb : j->b + j0;
    bsq_cpu_gemm_t(&j->cpu->gemm, (int)mb, (int)nb, (int)j->k, a, j->lda, j->at, b, j->ldb, j->bt,
                   c, j->ldc, j->cpu->gemm_scratch[thread]);
}

void bsq_cpu_matmul(bsq_backend *be, int a_trans, int b_trans, size_t m, size_t n, size_t k,
                    const float *a, size_t lda, const float *b, size_t ldb, float *c, size_t ldc,
                    int accumulate)
{
    bsq_cpu *cpu = (bsq_cpu *)be;
    mm_job j = {a_trans, b_trans, accumulate, m, n, k, lda, ldb, ldc,
                (n + MM_COLS - 1) / MM_COLS, a, b, c, cpu};
    bsq_pool_run(cpu->pool, ((m + MM_ROWS - 1) / MM_ROWS) * j.col_tiles, mm_task, &j);
}

/* ------------------------------------------------------ reductions by rows */
/* Per-chunk partial sums land in cpu->reduce, then are added in chunk order. */
static float *reduce_buffer(bsq_cpu *cpu, size_t count)
{
    if (count > cpu->reduce_len) {
        free(cpu->reduce);
        cpu->reduce = aligned_alloc(64, (count * sizeof(float) + 63) & ~(size_t)63);
        cpu->reduce_len = cpu->reduce ? count : 0;
        if (!cpu->reduce)
            cpu->failed = 1;
    }
    return cpu->reduce;
}

static void reduce_into(const float *part, size_t chunks, size_t width, float *out)
{
    for (size_t c = 0; c < chunks; c++)
        for (size_t i = 0; i < width; i++)
            out[i] += part[c * width + i];
}

typedef struct {
    const float *x;
    float *part;
    size_t rows;
    int n;
} colsum_job;

static void colsum_task(void *arg, size_t task, int thread)
{
    (void)thread;
    const colsum_job *j = arg;
    float *p = j->part + task * (size_t)j->n;
    memset(p, 0, (size_t)j->n * sizeof(float));
    size_t r1 = (task + 1) * RED_ROWS < j->rows ? (task + 1) * RED_ROWS : j->rows;
    for (size_t r = task * RED_ROWS; r < r1; r++) {
        const float *row = j->x + r * (size_t)j->n;
        for (int i = 0; i < j->n; i++)
            p[i] += row[i];
    }
}

void bsq_cpu_colsum(bsq_backend *be, const float *x, float *out, size_t rows, int n)
{
    bsq_cpu *cpu = (bsq_cpu *)be;
    size_t chunks = (rows + RED_ROWS - 1) / RED_ROWS;
    float *part = reduce_buffer(cpu, chunks * (size_t)n);
    if (!part)
        return;
    colsum_job j = {x, part, rows, n};
    bsq_pool_run(cpu->pool, chunks, colsum_task, &j);
    reduce_into(part, chunks, (size_t)n, out);
}

/* -------------------------------------------------------------- LayerNorm */
typedef struct {
    const float *x, *w, *dy;
    float *dx, *part;
    size_t rows;
    int d;
    float eps;
} lnb_job;

/* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w;
 * dw += dy * xhat, db += dy (partials per chunk). dx may alias dy. */
static void lnb_task(void *arg, size_t task, int thread)
{
    (void)thread;
    const lnb_job *j = arg;
    const int d = j->d;
    float *pw = j->part + task * 2 * (size_t)d, *pb = pw + d;
    memset(pw, 0, 2 * (size_t)d * sizeof(float));
    size_t r1 = (task + 1) * RED_ROWS < j->rows ? (task + 1) * RED_ROWS : j->rows;
    for (size_t r = task * RED_ROWS; r < r1; r++) {
        const float *x = j->x + r * d, *dy = j->dy + r * d;
        float *dx = j->dx + r * d;
        float sum = 0.0f;
        for (int i = 0; i < d; i++)
            sum += x[i];
        float mean = sum / (float)d, var = 0.0f;
        for (int i = 0; i < d; i++)
            var += (x[i] - mean) * (x[i] - mean);
        float rstd = 1.0f / sqrtf(var / (float)d + j->eps);
        float sg = 0.0f, sgx = 0.0f;
        for (int i = 0; i < d; i++) {
            float xh = (x[i] - mean) * rstd, g = dy[i] * j->w[i];
            pw[i] += dy[i] * xh;
            pb[i] += dy[i];
            sg += g;
            sgx += g * xh;
        }
        sg /= (float)d;
        sgx /= (float)d;
        for (int i = 0; i < d; i++) {
            float xh = (x[i] - mean) * rstd;
            dx[i] = rstd * (dy[i] * j->w[i] - sg - xh * sgx);
        }
    }
}

void bsq_cpu_layernorm_backward(bsq_backend *be, const float *x, const float *w,
                                   const float *dy, float *dx, float *dw, float *db, size_t rows,
                                   int d, float eps)
{
    bsq_cpu *cpu = (bsq_cpu *)be;
    size_t chunks = (rows + RED_ROWS - 1) / RED_ROWS;
    float *part = reduce_buffer(cpu, chunks * 2 * (size_t)d);
    if (!part)
        return;
    lnb_job j = {x, w, dy, dx, part, rows, d, eps};
    bsq_pool_run(cpu->pool, chunks, lnb_task, &j);
    for (size_t c = 0; c < chunks; c++)
        for (int i = 0; i < d; i++) {
            dw[i] += part[c * 2 * d + i];
            db[i] += part[c * 2 * d + d + i];
        }
}

/* -------------------------------------------------------- elementwise */
#define EW_CHUNK 16384

typedef struct {
    const float *x;
    float *dy;
    size_t n;
    int tanh;
} ewb_job;

static void ewb_task(void *arg, size_t task, int thread)
{
    (void)thread;
    const ewb_job *j = arg;
    size_t i0 = task * EW_CHUNK, n = j->n - i0 < EW_CHUNK ? j->n - i0 : EW_CHUNK;
    if (j->tanh)
        bsq_cpu_tanh_grad_span(j->x + i0, j->dy + i0, n);
    else
        bsq_cpu_gelu_grad_span(j->x + i0, j->dy + i0, n);
}

void bsq_cpu_gelu_backward(bsq_backend *be, const float *x, float *dy, size_t n)
{
    ewb_job j = {x, dy, n, 0};
    bsq_pool_run(((bsq_cpu *)be)->pool, (n + EW_CHUNK - 1) / EW_CHUNK, ewb_task, &j);
}

void bsq_cpu_tanh_backward(bsq_backend *be, const float *y, float *dy, size_t n)
{
    ewb_job j = {y, dy, n, 1};
    bsq_pool_run(((bsq_cpu *)be)->pool, (n + EW_CHUNK - 1) / EW_CHUNK, ewb_task, &j);
}

/* dpos[j] += sum over sequences and frames of dx at grid position j;
 * dtpos[t0 + t] += sum over sequences and positions of frame t. Small: one
 * thread, a fixed order. */
void bsq_cpu_add_pos_backward(bsq_backend *be, const float *dx, float *dpos, float *dtpos,
                                 int seqs, int frames, int tokens, int d, int t0)
{
    (void)be;
    for (int s = 0; s < seqs; s++)
        for (int t = 0; t < frames; t++)
            for (int j = 0; j < tokens; j++) {
                const float *row = dx + (((size_t)s * frames + t) * tokens + j) * d;
                float *p = dpos + (size_t)j * d;
                for (int c = 0; c < d; c++)
                    p[c] += row[c];
                if (dtpos) {
                    float *tp = dtpos + (size_t)(t0 + t) * d;
                    for (int c = 0; c < d; c++)
                        tp[c] += row[c];
                }
            }
}
