/* The CUDA backend: the operations table of lib/backend.h on an NVIDIA GPU.
 * Matrix products go to cuBLAS; everything else to our kernels (the other .cu files here).
 *
 * Two precisions:
 *  - bf16 (default): GEMM inputs in bf16 with fp32 accumulation (weights
 *    converted once, when the model's parameter block is declared;
 *    activations as each product needs them), attention on tensor cores;
 *    the residual stream, LayerNorm, softmax and outputs stay fp32;
 *  - fp32: the checking mode, fp32 products with TF32 off and fp32
 *    attention, within 1e-4 of the CPU engine.
 *
 * Compute is queued on one stream. Inside a pipeline slot (begin/end),
 * uploads go on a second stream and downloads on a third, tied to the
 * compute by events, so one chunk's copies overlap another's compute. Fixed
 * shapes are recorded once as CUDA graphs and replayed (replay/record_end).
 * Errors are remembered where they happen and reported by sync() or
 * finish(), since the ops themselves return nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <new>

#include "kernels.h"

extern "C" {
#include "error.h"
}

#ifdef BSQ_CUDA_EMULATE
#define CREATE_FN bsq_backend_cuda_emu_create
#define COUNTS_FN bsq_backend_cuda_emu_graph_counts
#define NAME_PREFIX "cuda-emu"
#else
#define CREATE_FN bsq_backend_cuda_create
#define COUNTS_FN bsq_backend_cuda_graph_counts
#define NAME_PREFIX "cuda"
#endif

namespace {

/* What recorded work may point into; each moves (its generation counts up)
 * when it is reallocated. */
enum { BUF_X, BUF_M, BUF_S, BUF_IDX, BUF_WEIGHTS, BUFS };

/* A recorded graph: `seen` once run plainly (scratch sized), then captured;
 * stale when a buffer it used (mask) has moved since (gens). */
struct graph_entry {
    uint64_t key;
    uint64_t gens[BUFS];
    unsigned mask;
    int seen;
    cudaGraphExec_t exec;
};
const int GRAPHS = 16;
const size_t BLAS_WORKSPACE = (size_t)32 << 20;

struct cuda_be {
    bsq_backend base; /* first: the library sees a bsq_backend */
    bsq_backend_ops ops;
    char name[32];
    int device, fp32, tc_max_smem;
    cudaStream_t stream;           /* compute */
    cudaStream_t up, down;         /* copies inside pipeline slots */
    cudaEvent_t uploaded, computed, slot_done[2];
    int slot;                      /* the open pipeline slot, -1 outside */
    int slot_waited;               /* its uploads already wait for its previous use */
    cublasHandle_t blas;
    void *blas_ws;                 /* cuBLAS's workspace: no allocation inside a capture */
    graph_entry graphs[GRAPHS];
    int graph_next;
    int capturing;                 /* a capture of capture_key is open on `stream` */
    uint64_t capture_key;
    uint64_t gens[BUFS];           /* see BUF_*: graphs using a buffer that moved go stale */
    unsigned touched;              /* buffers used since the last replay() */
    unsigned long recorded, replayed;
    const float *w_lo, *w_hi; /* the declared parameter block */
    bsq_bf16 *w_bf16;         /* its bf16 copy (bf16 mode) */
    bsq_bf16 *x_bf16;         /* activations of the current product */
    size_t x_len;
    bsq_bf16 *m_bf16;         /* a weight-like operand outside the block */
    size_t m_len;
    /* bf16 copy of an op's output, written by the op itself (LayerNorm,
     * bias + GELU) for the product that comes next: valid for the very next
     * op only (use() forgets it) */
    bsq_bf16 *s_bf16;
    size_t s_len;
    const float *shadow_of;
    size_t shadow_len;
    uint64_t *idx;            /* token indices on the device */
    size_t idx_len;
    /* the first failure since the last sync */
    int failed;
    char error[200];
};

cuda_be *of(bsq_backend *be) { return (cuda_be *)be; }

void record(cuda_be *c, const char *what, const char *detail)
{
    if (c->failed)
        return;
    c->failed = 1;
    snprintf(c->error, sizeof c->error, "%s: %s", what, detail);
}

void check_cuda(cuda_be *c, cudaError_t e, const char *what)
{
    if (e != cudaSuccess)
        record(c, what, cudaGetErrorString(e));
}

void check_launch(cuda_be *c, const char *what) { check_cuda(c, cudaGetLastError(), what); }

void check_blas(cuda_be *c, cublasStatus_t s, const char *what)
{
    if (s != CUBLAS_STATUS_SUCCESS)
        record(c, what, cublasGetStatusString(s));
}

/* Grows a device scratch buffer; NULL (and a recorded error) on failure. */
template <class T>
T *scratch(cuda_be *c, int id, T **buf, size_t *len, size_t need, const char *what)
{
    c->touched |= 1u << id;
    if (need <= *len)
        return *buf;
    if (c->capturing) { /* cannot happen for a key seen before; never free inside a capture */
        record(c, what, "scratch memory grew during a CUDA graph capture");
        return NULL;
    }
    c->gens[id]++;
    if (*buf)
        cudaFree(*buf);
    *buf = NULL;
    *len = 0;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, need * sizeof(T));
    if (e != cudaSuccess) {
        cudaGetLastError(); /* clear it: the failure is reported through sync */
        record(c, what, "out of device memory");
        return NULL;
    }
    *buf = (T *)p;
    *len = need;
    return *buf;
}

/* Every op starts here: the device, and no shadow (see s_bf16) unless the
 * op takes it before. */
void use(cuda_be *c)
{
    cudaSetDevice(c->device);
    c->shadow_of = NULL;
}

/* Where an op writes y [count], the bf16 copy it may write along for the
 * next op (NULL in fp32 mode, or without memory: then the next product
 * converts y itself). */
bsq_bf16 *shadow_for(cuda_be *c, const float *y, size_t count, const char *what)
{
    if (c->fp32)
        return NULL;
    bsq_bf16 *yb = scratch(c, BUF_S, &c->s_bf16, &c->s_len, count, what);
    c->shadow_of = yb ? y : NULL;
    c->shadow_len = count;
    return yb;
}

/* ---- memory ---- */

float *op_alloc(bsq_backend *be, size_t count)
{
    cuda_be *c = of(be);
    use(c);
    void *p = NULL;
    if (cudaMalloc(&p, (count ? count : 1) * sizeof(float)) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return (float *)p;
}

void op_free(bsq_backend *be, float *p)
{
    use(of(be));
    cudaFree(p);
}

/* pinned: copies from and to it run at full speed and do not block */
void *op_host_alloc(bsq_backend *be, size_t bytes)
{
    use(of(be));
    void *p = NULL;
    if (cudaMallocHost(&p, bytes) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

/* Waits for every stream; the first failure is kept for the report. */
void sync_all(cuda_be *c)
{
    check_cuda(c, cudaStreamSynchronize(c->stream), "synchronize");
    check_cuda(c, cudaStreamSynchronize(c->up), "synchronize (uploads)");
    check_cuda(c, cudaStreamSynchronize(c->down), "synchronize (downloads)");
}

void op_host_free(bsq_backend *be, void *p)
{
    cuda_be *c = of(be);
    use(c);
    sync_all(c); /* no copy may still be using it */
    cudaFreeHost(p);
}

void op_upload(bsq_backend *be, float *dst, const float *src, size_t count)
{
    cuda_be *c = of(be);
    use(c);
    size_t bytes = count * sizeof(float);
    if (c->slot < 0) {
        check_cuda(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "upload");
        return;
    }
    /* into the slot's buffers once its previous chunk is done with them;
     * the compute waits for the copy */
    if (!c->slot_waited)
        check_cuda(c, cudaStreamWaitEvent(c->up, c->slot_done[c->slot], 0), "upload (wait)");
    c->slot_waited = 1;
    check_cuda(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->up), "upload");
    check_cuda(c, cudaEventRecord(c->uploaded, c->up), "upload (event)");
    check_cuda(c, cudaStreamWaitEvent(c->stream, c->uploaded, 0), "upload (wait)");
}

void op_download(bsq_backend *be, float *dst, const float *src, size_t count)
{
    cuda_be *c = of(be);
    use(c);
    size_t bytes = count * sizeof(float);
    if (c->slot < 0) {
        check_cuda(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream), "download");
        return;
    }
    /* after the compute queued so far, beside what is queued next */
    check_cuda(c, cudaEventRecord(c->computed, c->stream), "download (event)");
    check_cuda(c, cudaStreamWaitEvent(c->down, c->computed, 0), "download (wait)");
    check_cuda(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->down), "download");
}

/* ---- pipeline slots ---- */

void op_begin(bsq_backend *be, int slot)
{
    cuda_be *c = of(be);
    c->slot = slot & 1;
    c->slot_waited = 0;
}

void op_end(bsq_backend *be, int slot)
{
    cuda_be *c = of(be);
    use(c);
    /* the slot is free once its compute and its downloads are done */
    check_cuda(c, cudaEventRecord(c->computed, c->stream), "end of chunk");
    check_cuda(c, cudaStreamWaitEvent(c->down, c->computed, 0), "end of chunk");
    check_cuda(c, cudaEventRecord(c->slot_done[slot & 1], c->down), "end of chunk");
    c->slot = -1;
}

bsq_status report(cuda_be *c, bsq_error *err)
{
    if (!c->failed)
        return BSQ_OK;
    c->failed = 0;
    return bsq_fail(err, BSQ_ERR_DEVICE, "%s: %s", c->name, c->error);
}

bsq_status op_finish(bsq_backend *be, int slot, bsq_error *err)
{
    cuda_be *c = of(be);
    use(c);
    check_cuda(c, cudaEventSynchronize(c->slot_done[slot & 1]), "synchronize");
    return report(c, err);
}

/* ---- CUDA graphs ---- */

void drop_graph(graph_entry *g)
{
    if (g->exec)
        cudaGraphExecDestroy(g->exec);
    memset(g, 0, sizeof *g);
}

graph_entry *find_graph(cuda_be *c, uint64_t key)
{
    for (graph_entry &g : c->graphs)
        if (g.seen && g.key == key)
            return &g;
    return NULL;
}

/* Whether a buffer the entry's work uses has moved since it ran. */
bool stale(const cuda_be *c, const graph_entry *g)
{
    for (int i = 0; i < BUFS; i++)
        if (g->mask >> i & 1 && g->gens[i] != c->gens[i])
            return true;
    return false;
}

int op_replay(bsq_backend *be, uint64_t key)
{
    cuda_be *c = of(be);
    use(c);
    if (c->failed || c->capturing)
        return 0;
    graph_entry *g = find_graph(c, key);
    c->touched = 1u << BUF_WEIGHTS; /* what the ops up to record_end use */
    if (g && stale(c, g))
        drop_graph(g); /* its buffers moved: record again */
    else if (g && g->exec) {
        check_cuda(c, cudaGraphLaunch(g->exec, c->stream), "graph launch");
        c->replayed++;
        return 1;
    } else if (g) { /* second time: the ops are queued under capture */
        cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
        if (e == cudaSuccess) {
            c->capturing = 1;
            c->capture_key = key;
        } else {
            cudaGetLastError(); /* run plainly instead */
        }
        return 0;
    }
    /* first time: run plainly, sizing the scratch buffers */
    g = &c->graphs[c->graph_next];
    c->graph_next = (c->graph_next + 1) % GRAPHS;
    drop_graph(g);
    g->key = key;
    g->seen = 1;
    g->mask = ~0u; /* until the plain run says what it used */
    memcpy(g->gens, c->gens, sizeof g->gens);
    return 0;
}

void op_record_end(bsq_backend *be, uint64_t key)
{
    cuda_be *c = of(be);
    use(c);
    graph_entry *g = find_graph(c, key);
    if (!c->capturing || c->capture_key != key) {
        if (g) { /* as the plain run left the buffers it used */
            g->mask = c->touched;
            memcpy(g->gens, c->gens, sizeof g->gens);
        }
        return;
    }
    c->capturing = 0;
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    cudaGraphExec_t exec = NULL;
    if (e == cudaSuccess && !c->failed)
        e = cudaGraphInstantiate(&exec, graph, 0);
    if (graph)
        cudaGraphDestroy(graph);
    if (e != cudaSuccess || c->failed || !g || stale(c, g)) {
        /* nothing of the captured work ran: that is a failure of this call */
        check_cuda(c, e, "graph capture");
        record(c, "graph capture", "the recorded work could not be replayed");
        if (exec)
            cudaGraphExecDestroy(exec);
        if (g)
            drop_graph(g);
        return;
    }
    g->mask |= c->touched;
    g->exec = exec;
    c->recorded++;
    check_cuda(c, cudaGraphLaunch(exec, c->stream), "graph launch");
}

void op_set_weights(bsq_backend *be, const float *block, size_t count)
{
    cuda_be *c = of(be);
    use(c);
    c->w_lo = block;
    c->w_hi = block + count;
    c->gens[BUF_WEIGHTS]++;
    if (c->w_bf16)
        cudaFree(c->w_bf16);
    c->w_bf16 = NULL;
    if (c->fp32 || !count)
        return;
    void *p = NULL;
    if (cudaMalloc(&p, count * sizeof(bsq_bf16)) != cudaSuccess) {
        cudaGetLastError();
        record(c, "bf16 weights", "out of device memory");
        return;
    }
    c->w_bf16 = (bsq_bf16 *)p;
    bsqk::to_bf16(c->stream, block, c->w_bf16, count);
    check_launch(c, "bf16 weights");
}

/* One size for every graph call of these dimensions (encode and decode),
 * so scratch memory does not move between them and stale their graphs. */
void op_reserve(bsq_backend *be, size_t rows, int width)
{
    cuda_be *c = of(be);
    use(c);
    if (c->capturing)
        return;
    if (!c->fp32) {
        scratch(c, BUF_X, &c->x_bf16, &c->x_len, rows * (size_t)width, "scratch");
        scratch(c, BUF_S, &c->s_bf16, &c->s_len, rows * (size_t)width, "scratch");
    }
    scratch(c, BUF_IDX, &c->idx, &c->idx_len, rows, "scratch");
}

bsq_status op_sync(bsq_backend *be, bsq_error *err)
{
    cuda_be *c = of(be);
    use(c);
    sync_all(c);
    return report(c, err);
}

/* ---- products ---- */

/* y[rows][n] = x[rows][k] w[n][k]^T + beta y: in cuBLAS's column-major
 * terms y^T (n x rows) = w (stored as the k x n matrix w^T, transposed) x^T.
 * Returns 0 when the product could not be queued (the error is recorded). */
int gemm(cuda_be *c, const float *x, const bsq_bf16 *x_ready, const float *w, float *y,
         size_t rows, int k, int n, float beta)
{
    if (rows > 0x7fffffff) {
        record(c, "linear", "more than 2^31 rows in one product");
        return 0;
    }
    const float one = 1.0f;
    cublasStatus_t s;
    if (c->fp32) {
        s = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, n, (int)rows, k, &one, w, CUDA_R_32F, k,
                         x, CUDA_R_32F, k, &beta, y, CUDA_R_32F, n, CUBLAS_COMPUTE_32F_PEDANTIC,
                         CUBLAS_GEMM_DEFAULT);
    } else {
        const bsq_bf16 *wb;
        if (c->w_bf16 && w >= c->w_lo && w + (size_t)n * k <= c->w_hi) {
            wb = c->w_bf16 + (w - c->w_lo);
        } else {
            bsq_bf16 *t = scratch(c, BUF_M, &c->m_bf16, &c->m_len, (size_t)n * k, "linear");
            if (!t)
                return 0;
            bsqk::to_bf16(c->stream, w, t, (size_t)n * k);
            wb = t;
        }
        const bsq_bf16 *xb = x_ready;
        if (!xb) {
            bsq_bf16 *t = scratch(c, BUF_X, &c->x_bf16, &c->x_len, rows * (size_t)k, "linear");
            if (!t)
                return 0;
            bsqk::to_bf16(c->stream, x, t, rows * (size_t)k);
            check_launch(c, "linear (bf16 conversion)");
            xb = t;
        }
        s = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, n, (int)rows, k, &one, wb, CUDA_R_16BF,
                         k, xb, CUDA_R_16BF, k, &beta, y, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT);
    }
    check_blas(c, s, "linear (cuBLAS)");
    return s == CUBLAS_STATUS_SUCCESS;
}

/* A product and what follows it in the graph, in as few passes as the
 * backend can: y = x w^T + bias (beta 0) or y += x w^T + bias (beta 1, the
 * residual add done by cuBLAS), with GELU applied with the bias when asked. */
void linear_then(bsq_backend *be, const float *x, const float *w, const float *bias, float *y,
                 size_t rows, int k, int n, float beta, int gelu)
{
    cuda_be *c = of(be);
    /* the input's bf16 copy, when the op before wrote one */
    const bsq_bf16 *ready =
        c->shadow_of == x && c->shadow_len == rows * (size_t)k ? c->s_bf16 : NULL;
    use(c);
    if (!rows || !n || !gemm(c, x, ready, w, y, rows, k, n, beta))
        return;
    if (gelu)
        bsqk::bias_gelu(c->stream, y, bias, rows, n, shadow_for(c, y, rows * (size_t)n, "linear"));
    else if (bias)
        bsqk::add_bias(c->stream, y, bias, rows, n);
    check_launch(c, "linear (bias, GELU)");
}

void op_linear(bsq_backend *be, const float *x, const float *w, const float *bias, float *y,
               size_t rows, int k, int n)
{
    linear_then(be, x, w, bias, y, rows, k, n, 0.0f, 0);
}

void op_linear_gelu(bsq_backend *be, const float *x, const float *w, const float *bias, float *y,
                    size_t rows, int k, int n)
{
    linear_then(be, x, w, bias, y, rows, k, n, 0.0f, 1);
}

void op_linear_residual(bsq_backend *be, const float *x, const float *w, const float *bias,
                        float *y, size_t rows, int k, int n)
{
    linear_then(be, x, w, bias, y, rows, k, n, 1.0f, 0);
}

/* ---- the other ops: one kernel each ---- */

void op_layernorm(bsq_backend *be, const float *x, const float *w, const float *b, float *y,
                  size_t rows, int d, float eps)
{
    cuda_be *c = of(be);
    use(c);
    bsqk::layernorm(c->stream, x, w, b, y, rows, d, eps, shadow_for(c, y, rows * (size_t)d, "layernorm"));
    check_launch(c, "layernorm");
}

void op_gelu(bsq_backend *be, float *x, size_t count)
{
    cuda_be *c = of(be);
    use(c);
    bsqk::gelu(c->stream, x, count);
    check_launch(c, "gelu");
}

void op_tanh(bsq_backend *be, float *x, size_t count)
{
    cuda_be *c = of(be);
    use(c);
    bsqk::tanh_(c->stream, x, count, shadow_for(c, x, count, "tanh"));
    check_launch(c, "tanh");
}

void op_add(bsq_backend *be, float *y, const float *x, size_t count)
{
    cuda_be *c = of(be);
    use(c);
    bsqk::add(c->stream, y, x, count);
    check_launch(c, "add");
}

void op_add_pos(bsq_backend *be, float *x, const float *pos, const float *tpos, int seqs,
                int frames, int tokens, int d, int t0)
{
    cuda_be *c = of(be);
    use(c);
    bsqk::add_pos(c->stream, x, pos, tpos, seqs, frames, tokens, d, t0);
    check_launch(c, "add_pos");
}

void op_attention(bsq_backend *be, const bsq_attention_args *a)
{
    cuda_be *c = of(be);
    use(c);
    if (a->heads > 65535) {
        record(c, "attention", "more than 65535 heads");
        return;
    }
    size_t smem = bsqk::attention_bf16_smem(a->head_dim);
    if (!c->fp32 && smem && smem <= (size_t)c->tc_max_smem)
        bsqk::attention_bf16(c->stream, a);
    else
        bsqk::attention_f32(c->stream, a);
    check_launch(c, "attention");
}

void op_patchify(bsq_backend *be, const float *pix, float *tok, int seqs, int frames, int gh,
                 int gw, int p)
{
    cuda_be *c = of(be);
    use(c);
    bsqk::patchify(c->stream, pix, tok, seqs, frames, gh, gw, p);
    check_launch(c, "patchify");
}

void op_unpatchify(bsq_backend *be, const float *tok, float *pix, int seqs, int frames, int gh,
                   int gw, int p, int clamp)
{
    cuda_be *c = of(be);
    use(c);
    bsqk::unpatchify(c->stream, tok, pix, seqs, frames, gh, gw, p, clamp);
    check_launch(c, "unpatchify");
}

void op_copy2d(bsq_backend *be, float *dst, size_t dst_stride, const float *src, size_t src_stride,
               size_t rows, size_t cols)
{
    cuda_be *c = of(be);
    use(c);
    bsqk::copy2d(c->stream, dst, dst_stride, src, src_stride, rows, cols);
    check_launch(c, "copy2d");
}

void op_zero(bsq_backend *be, float *x, size_t count)
{
    cuda_be *c = of(be);
    use(c);
    check_cuda(c, cudaMemsetAsync(x, 0, count * sizeof(float), c->stream), "zero");
}

void op_tile_extract(bsq_backend *be, const float *img, float *tiles, const bsq_tile_grid *g,
                     int s0, int n)
{
    cuda_be *c = of(be);
    use(c);
    bsqk::tile_extract(c->stream, img, tiles, g, s0, n);
    check_launch(c, "tile_extract");
}

void op_tile_blend(bsq_backend *be, const float *tiles, float *img, const bsq_tile_grid *g, int s0,
                   int n)
{
    cuda_be *c = of(be);
    use(c);
    bsqk::tile_blend(c->stream, tiles, img, g, s0, n);
    check_launch(c, "tile_blend");
}

void op_rgb8_to_planar(bsq_backend *be, const void *rgb, float *planar, int W, int H)
{
    cuda_be *c = of(be);
    use(c);
    bsqk::rgb8_to_planar(c->stream, (const uint8_t *)rgb, planar, (size_t)W * H);
    check_launch(c, "rgb8_to_planar");
}

void op_planar_to_rgb8(bsq_backend *be, const float *planar, void *rgb, int W, int H)
{
    cuda_be *c = of(be);
    use(c);
    bsqk::planar_to_rgb8(c->stream, planar, (uint8_t *)rgb, (size_t)W * H);
    check_launch(c, "planar_to_rgb8");
}

void op_quantize(bsq_backend *be, float *v, float *z, uint64_t *idx, size_t rows, int L)
{
    cuda_be *c = of(be);
    use(c);
    uint64_t *d = scratch(c, BUF_IDX, &c->idx, &c->idx_len, rows, "quantize");
    if (!d)
        return;
    bsqk::quantize(c->stream, v, z, d, rows, L);
    check_launch(c, "quantize");
    /* on the compute stream: the indices come with the chunk (finish/sync) */
    check_cuda(c, cudaMemcpyAsync(idx, d, rows * sizeof(uint64_t), cudaMemcpyDeviceToHost, c->stream),
               "quantize (indices)");
}

void op_dequantize(bsq_backend *be, const uint64_t *idx, float *codes, size_t rows, int L)
{
    cuda_be *c = of(be);
    use(c);
    uint64_t *d = scratch(c, BUF_IDX, &c->idx, &c->idx_len, rows, "dequantize");
    if (!d)
        return;
    check_cuda(c, cudaMemcpyAsync(d, idx, rows * sizeof(uint64_t), cudaMemcpyHostToDevice, c->stream),
               "dequantize (indices)");
    bsqk::dequantize(c->stream, d, codes, rows, L);
    check_launch(c, "dequantize");
}

void op_destroy(bsq_backend *be)
{
    cuda_be *c = of(be);
    if (!c)
        return;
    use(c);
    if (c->capturing) {
        cudaGraph_t g = NULL;
        if (cudaStreamEndCapture(c->stream, &g) == cudaSuccess && g)
            cudaGraphDestroy(g);
    }
    for (cudaStream_t s : {c->stream, c->up, c->down})
        if (s)
            cudaStreamSynchronize(s);
    for (graph_entry &g : c->graphs)
        drop_graph(&g);
    for (cudaEvent_t e : {c->uploaded, c->computed, c->slot_done[0], c->slot_done[1]})
        if (e)
            cudaEventDestroy(e);
    cudaFree(c->w_bf16);
    cudaFree(c->x_bf16);
    cudaFree(c->m_bf16);
    cudaFree(c->s_bf16);
    cudaFree(c->idx);
    if (c->blas)
        cublasDestroy(c->blas);
    cudaFree(c->blas_ws);
    for (cudaStream_t s : {c->stream, c->up, c->down})
        if (s)
            cudaStreamDestroy(s);
    delete c;
}

} // namespace

extern "C" bsq_status CREATE_FN(int device, int fp32, bsq_backend **out, bsq_error *err)
{
    *out = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return bsq_fail(err, BSQ_ERR_DEVICE, "no usable CUDA device: %s", cudaGetErrorString(e));
    }
    if (count < 1)
        return bsq_fail(err, BSQ_ERR_DEVICE, "no CUDA device found");
    if (device < 0 || device >= count)
        return bsq_fail(err, BSQ_ERR_DEVICE, "no CUDA device %d: this machine has %d (cuda:0..%d)",
                        device, count, count - 1);
    cudaDeviceProp prop;
    if ((e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess)
        return bsq_fail(err, BSQ_ERR_DEVICE, "CUDA device %d: %s", device, cudaGetErrorString(e));
    if (prop.major < 8)
        return bsq_fail(err, BSQ_ERR_DEVICE,
                        "CUDA device %d (%s) has compute capability %d.%d; libbsq needs 8.0 or newer",
                        device, prop.name, prop.major, prop.minor);
    if ((e = cudaSetDevice(device)) != cudaSuccess)
        return bsq_fail(err, BSQ_ERR_DEVICE, "CUDA device %d: %s", device, cudaGetErrorString(e));

    cuda_be *c = new (std::nothrow) cuda_be();
    if (!c)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    c->device = device;
    c->fp32 = fp32;
    snprintf(c->name, sizeof c->name, "%s:%d", NAME_PREFIX, device);
    bsq_backend_ops &o = c->ops;
    o.name = c->name;
    o.host_memory = 0;
    o.fp32 = fp32;
    o.preferred_rows = 65536;
    o.destroy = op_destroy;
    o.alloc = op_alloc;
    o.free = op_free;
    o.host_alloc = op_host_alloc;
    o.host_free = op_host_free;
    o.upload = op_upload;
    o.download = op_download;
    o.set_weights = op_set_weights;
    o.sync = op_sync;
    o.reserve = op_reserve;
    o.begin = op_begin;
    o.end = op_end;
    o.finish = op_finish;
    /* BSQ_CUDA_GRAPHS=0: launch every kernel each time (for comparisons) */
    const char *graphs = getenv("BSQ_CUDA_GRAPHS");
    if (!graphs || strcmp(graphs, "0") != 0) {
        o.replay = op_replay;
        o.record_end = op_record_end;
    }
    o.linear = op_linear;
    o.linear_gelu = op_linear_gelu;
    o.linear_residual = op_linear_residual;
    o.layernorm = op_layernorm;
    o.gelu = op_gelu;
    o.tanh = op_tanh;
    o.add = op_add;
    o.add_pos = op_add_pos;
    o.attention = op_attention;
    o.patchify = op_patchify;
    o.unpatchify = op_unpatchify;
    o.copy2d = op_copy2d;
    o.zero = op_zero;
    o.tile_extract = op_tile_extract;
    o.tile_blend = op_tile_blend;
    o.rgb8_to_planar = op_rgb8_to_planar;
    o.planar_to_rgb8 = op_planar_to_rgb8;
    o.quantize = op_quantize;
    o.dequantize = op_dequantize;
    c->base.ops = &c->ops;
    c->slot = -1;

    const char *fail_what = NULL;
    cublasStatus_t bs = CUBLAS_STATUS_SUCCESS;
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&c->up, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&c->down, cudaStreamNonBlocking)) != cudaSuccess)
        fail_what = "streams";
    else if ((e = cudaEventCreateWithFlags(&c->uploaded, cudaEventDisableTiming)) != cudaSuccess ||
             (e = cudaEventCreateWithFlags(&c->computed, cudaEventDisableTiming)) != cudaSuccess ||
             (e = cudaEventCreateWithFlags(&c->slot_done[0], cudaEventDisableTiming)) != cudaSuccess ||
             (e = cudaEventCreateWithFlags(&c->slot_done[1], cudaEventDisableTiming)) != cudaSuccess)
        fail_what = "events";
    else if ((e = cudaMalloc(&c->blas_ws, BLAS_WORKSPACE)) != cudaSuccess)
        fail_what = "cuBLAS workspace";
    else if ((bs = cublasCreate(&c->blas)) != CUBLAS_STATUS_SUCCESS ||
             (bs = cublasSetStream(c->blas, c->stream)) != CUBLAS_STATUS_SUCCESS ||
             (bs = cublasSetWorkspace(c->blas, c->blas_ws, BLAS_WORKSPACE)) != CUBLAS_STATUS_SUCCESS ||
             (bs = cublasSetMathMode(c->blas, fp32 ? CUBLAS_PEDANTIC_MATH : CUBLAS_DEFAULT_MATH)) !=
                 CUBLAS_STATUS_SUCCESS)
        fail_what = "cuBLAS";
    else if ((e = bsqk::attention_bf16_prepare((int)prop.sharedMemPerBlockOptin)) != cudaSuccess)
        fail_what = "attention kernels";
    if (fail_what) {
        const char *detail = bs != CUBLAS_STATUS_SUCCESS ? cublasGetStatusString(bs)
                                                         : cudaGetErrorString(e);
        cudaGetLastError();
        op_destroy(&c->base);
        return bsq_fail(err, BSQ_ERR_DEVICE, "CUDA device %d (%s): %s: %s", device, prop.name,
                        fail_what, detail);
    }
    c->tc_max_smem = (int)prop.sharedMemPerBlockOptin;
    *out = &c->base;
    return BSQ_OK;
}

extern "C" void COUNTS_FN(const bsq_backend *be, unsigned long *recorded, unsigned long *replayed)
{
    const cuda_be *c = (const cuda_be *)be;
    *recorded = c->recorded;
    *replayed = c->replayed;
}
