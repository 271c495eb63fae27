/* Matrix products y = x W^T + b through OpenBLAS, split into fixed-size
 * tiles run by our pool. The tile grid does not depend on the thread count,
 * so every output element is computed by the same kernel call sequence
 * whatever the number of threads: results are bit-identical across thread
 * counts. */
#include <cblas.h>
#include <string.h>

#include "cpu.h"

#define ROW_TILE 256
#define COL_TILE 128

typedef struct {
    const float *x, *w, *bias;
    float *y;
    size_t rows;
    int k, n;
    size_t col_tiles;
} linear_job;

static void linear_task(void *arg, size_t task, int thread)
{
    (void)thread;
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
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)mb, (int)nb, j->k, 1.0f,
                j->x + r0 * (size_t)j->k, j->k, j->w + c0 * (size_t)j->k, j->k, 1.0f, y, j->n);
}

void bsq_cpu_linear(bsq_backend *be, const float *x, const float *w, const float *bias, float *y,
                    size_t rows, int k, int n)
{
    bsq_cpu *cpu = (bsq_cpu *)be;
    linear_job j = {x, w, bias, y, rows, k, n, ((size_t)n + COL_TILE - 1) / COL_TILE};
    size_t row_tiles = (rows + ROW_TILE - 1) / ROW_TILE;
    bsq_pool_run(cpu->pool, row_tiles * j.col_tiles, linear_task, &j);
}
