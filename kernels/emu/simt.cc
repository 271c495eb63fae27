/* The SIMT emulator's scheduler, runtime and cuBLAS subset (see simt.h). */
#include "simt.h"

#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <ucontext.h>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define SIMT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIMT_ASAN 1
#endif
#endif
#ifdef SIMT_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

namespace simt {

namespace {

const size_t STACK = 64 * 1024; /* per CUDA thread; kernels keep small frames */

struct Fiber {
    ucontext_t uc;
    std::unique_ptr<char[]> stack; /* not zeroed: a launch allocates thousands */
    dim3 tid;
    bool done;
#ifdef SIMT_ASAN
    void *fake_stack;
#endif
};

struct Barrier {
    int arrived = 0, gen = 0;
};

/* What one launch's running block needs; one per OS thread. */
struct Block {
    dim3 grid, dim, bid;
    std::vector<Fiber> fibers;
    int cur = -1, live = 0, exited = 0;
    std::vector<int> warp_exited;
    bool progress = false;
    ucontext_t sched;
    Barrier block_bar;
    std::vector<Barrier> warp_bar;
    std::vector<uint64_t> slots;
    std::vector<char> smem_raw; /* with room to align smem to 128 bytes, as on a device */
    char *smem = nullptr;
    size_t smem_len = 0;
    const std::function<void()> *body = nullptr;
#ifdef SIMT_ASAN
    void *sched_fake = nullptr;
    const void *sched_bottom = nullptr;
    size_t sched_size = 0;
#endif
};

thread_local Block *blk;

Fiber &self()
{
    if (!blk || blk->cur < 0)
        fail("a device function ran outside a kernel launch");
    return blk->fibers[(size_t)blk->cur];
}

/* Fiber -> scheduler. */
void yield()
{
    Block *b = blk;
    Fiber &f = self();
#ifdef SIMT_ASAN
    __sanitizer_start_switch_fiber(&f.fake_stack, b->sched_bottom, b->sched_size);
#endif
    swapcontext(&f.uc, &b->sched);
#ifdef SIMT_ASAN
    __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
}

void entry()
{
    Block *b = blk;
#ifdef SIMT_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &b->sched_bottom, &b->sched_size);
#endif
    (*b->body)();
    Fiber &f = self();
    f.done = true;
#ifdef SIMT_ASAN
    __sanitizer_start_switch_fiber(nullptr, b->sched_bottom, b->sched_size);
#endif
    setcontext(&b->sched);
}

void wait_at(Barrier &bar, int members, int exited, const char *what)
{
    Block *b = blk;
    if (exited)
        fail(what);
    int gen = bar.gen;
    if (++bar.arrived == members) {
        bar.arrived = 0;
        bar.gen++;
        b->progress = true;
        return;
    }
    while (bar.gen == gen)
        yield();
}

int warp_members(const Block *b, int warp)
{
    int n = (int)(b->dim.x * b->dim.y * b->dim.z);
    int rest = n - warp * 32;
    return rest < 32 ? rest : 32;
}

int linear_tid(const Block *b, const dim3 &t)
{
    return (int)(t.x + b->dim.x * (t.y + b->dim.y * t.z));
}

/* Separate and not inlined: getcontext returns twice, which would make the
 * compiler worry about every local of the caller. */
__attribute__((noinline)) void prepare(Fiber &f)
{
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack.get();
    f.uc.uc_stack.ss_size = STACK;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, entry, 0);
}

} // namespace

void fail(const char *what)
{
    fprintf(stderr, "simt emulator: %s\n", what);
    abort();
}

const dim3 &thread_idx() { return self().tid; }
const dim3 &block_idx() { return blk->bid; }
const dim3 &block_dim() { return blk->dim; }
const dim3 &grid_dim() { return blk->grid; }
void *dynamic_smem() { return blk->smem_len ? blk->smem : nullptr; }

void sync_block()
{
    Block *b = blk;
    wait_at(b->block_bar, (int)b->fibers.size(), b->exited,
            "__syncthreads() after some threads of the block exited");
}

void sync_warp()
{
    Block *b = blk;
    int w = linear_tid(b, self().tid) / 32;
    wait_at(b->warp_bar[(size_t)w], warp_members(b, w), b->warp_exited[(size_t)w],
            "__syncwarp() after some lanes exited");
}

uint64_t exchange(uint64_t value, int src_lane)
{
    Block *b = blk;
    int t = linear_tid(b, self().tid), w = t / 32;
    if (src_lane < 0 || src_lane >= warp_members(b, w))
        fail("shuffle from a lane outside the warp");
    b->slots[(size_t)t] = value;
    sync_warp();
    uint64_t r = b->slots[(size_t)(w * 32 + src_lane)];
    sync_warp();
    return r;
}

unsigned ballot(int pred)
{
    Block *b = blk;
    int t = linear_tid(b, self().tid), w = t / 32;
    b->slots[(size_t)t] = pred != 0;
    sync_warp();
    unsigned m = 0;
    for (int i = 0; i < warp_members(b, w); i++)
        m |= (unsigned)(b->slots[(size_t)(w * 32 + i)] != 0) << i;
    sync_warp();
    return m;
}

void launch(dim3 grid, dim3 dim, size_t dynamic_smem_bytes, const std::function<void()> &body)
{
    int n = (int)(dim.x * dim.y * dim.z);
    if (n < 1 || n > 1024 || grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 ||
        grid.z > 65535)
        fail("bad launch configuration");
    if (blk)
        fail("a kernel launched from inside a kernel");
    Block b;
    b.grid = grid;
    b.dim = dim;
    b.body = &body;
    b.fibers.resize((size_t)n);
    for (auto &f : b.fibers)
        f.stack.reset(new char[STACK]);
    b.warp_bar.resize((size_t)(n + 31) / 32);
    b.warp_exited.resize(b.warp_bar.size());
    b.slots.resize((size_t)n);
    b.smem_raw.resize(dynamic_smem_bytes + 128);
    b.smem = b.smem_raw.data() + (128 - (uintptr_t)b.smem_raw.data() % 128) % 128;
    b.smem_len = dynamic_smem_bytes;
    blk = &b;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                b.bid = dim3(bx, by, bz);
                /* shared memory starts as garbage on a device: poison it */
                memset(b.smem, 0xa5, b.smem_len);
                for (int i = 0; i < n; i++) {
                    Fiber &f = b.fibers[(size_t)i];
                    f.tid = dim3((unsigned)i % dim.x, (unsigned)i / dim.x % dim.y,
                                 (unsigned)i / (dim.x * dim.y));
                    f.done = false;
                    prepare(f);
                }
                b.live = n;
                b.exited = 0;
                for (auto &e : b.warp_exited)
                    e = 0;
                while (b.live > 0) {
                    b.progress = false;
                    for (int i = 0; i < n; i++) {
                        Fiber &f = b.fibers[(size_t)i];
                        if (f.done)
                            continue;
                        b.cur = i;
#ifdef SIMT_ASAN
                        __sanitizer_start_switch_fiber(&b.sched_fake, f.stack.get(), STACK);
#endif
                        swapcontext(&b.sched, &f.uc);
#ifdef SIMT_ASAN
                        __sanitizer_finish_switch_fiber(b.sched_fake, nullptr, nullptr);
#endif
                        b.cur = -1;
                        if (f.done) {
                            b.live--;
                            b.exited++;
                            b.warp_exited[(size_t)i / 32]++;
                            b.progress = true;
                        }
                    }
                    if (!b.progress && b.live > 0)
                        fail("deadlock: threads wait at different barriers");
                }
            }
    blk = nullptr;
}

} // namespace simt

/* ---- runtime ---- */

/* One queued piece of work, or a wait for an event (fn empty). */
struct simt_item {
    std::function<void()> fn;
    simt_event *wait = nullptr;
    uint64_t wait_gen = 0;
};

struct simt_stream {
    std::deque<simt_item> q;
    bool draining = false;
    simt_graph *capture = nullptr; /* while capturing: where work goes */
};

struct simt_event {
    simt_stream *stream = nullptr; /* of the last record */
    uint64_t recorded = 0, done = 0;
};

struct simt_graph {
    std::vector<simt_item> items;
};

namespace {

/* The emulated device: its streams, allocations and pinned host buffers. */
struct Device {
    std::vector<simt_stream *> streams;
    std::map<uintptr_t, size_t> device_mem, pinned;
    int captures = 0;
};
Device &device()
{
    static Device d;
    return d;
}

bool inside(const std::map<uintptr_t, size_t> &m, const void *p, size_t bytes)
{
    uintptr_t a = (uintptr_t)p;
    auto it = m.upper_bound(a);
    if (it == m.begin())
        return false;
    --it;
    return a >= it->first && a + bytes <= it->first + it->second;
}

void no_capture(const char *what)
{
    if (device().captures) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s during a stream capture (not permitted on a device)", what);
        simt::fail(msg);
    }
}

void run_one(simt_stream *s);

/* Runs s's queue until `done` holds or the queue is empty. */
template <class Pred> void drain(simt_stream *s, Pred done)
{
    if (s->draining)
        simt::fail("streams wait for each other: deadlock");
    s->draining = true;
    while (!done() && !s->q.empty())
        run_one(s);
    s->draining = false;
}

void wait_event(simt_event *e, uint64_t gen)
{
    if (e->done >= gen)
        return;
    drain(e->stream, [&] { return e->done >= gen; });
    if (e->done < gen)
        simt::fail("an event waited for was never reached");
}

void run_one(simt_stream *s)
{
    simt_item it = std::move(s->q.front());
    s->q.pop_front();
    if (it.wait)
        wait_event(it.wait, it.wait_gen);
    if (it.fn)
        it.fn();
}

void drain_all()
{
    for (simt_stream *s : device().streams)
        drain(s, [] { return false; });
}

void push(simt_stream *s, simt_item it)
{
    if (s->capture) {
        if (it.wait)
            simt::fail("an event wait inside a stream capture");
        s->capture->items.push_back(std::move(it));
    } else {
        s->q.push_back(std::move(it));
    }
}

} // namespace

void simt::enqueue(cudaStream_t s, std::function<void()> work)
{
    if (!s) { /* the legacy default stream: after everything, at once */
        no_capture("work on the default stream");
        drain_all();
        work();
        return;
    }
    simt_item it;
    it.fn = std::move(work);
    push(s, std::move(it));
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    }
    return "unknown error";
}
cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d)
{
    if (d != 0)
        return cudaErrorInvalidDevice;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "SIMT emulator");
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 1;
    p->totalGlobalMem = (size_t)1 << 32;
    p->sharedMemPerBlockOptin = 227 * 1024;
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t bytes)
{
    no_capture("cudaMalloc");
    *p = malloc(bytes ? bytes : 1);
    if (!*p)
        return cudaErrorMemoryAllocation;
    device().device_mem[(uintptr_t)*p] = bytes ? bytes : 1;
    return cudaSuccess;
}
/* Frees wait for all queued work, as cudaFree synchronizes the device. */
cudaError_t cudaFree(void *p)
{
    no_capture("cudaFree");
    if (!p)
        return cudaSuccess;
    drain_all();
    if (!device().device_mem.erase((uintptr_t)p))
        simt::fail("cudaFree of a pointer cudaMalloc did not return");
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t bytes)
{
    no_capture("cudaMallocHost");
    *p = malloc(bytes ? bytes : 1);
    if (!*p)
        return cudaErrorMemoryAllocation;
    device().pinned[(uintptr_t)*p] = bytes ? bytes : 1;
    return cudaSuccess;
}
cudaError_t cudaFreeHost(void *p)
{
    no_capture("cudaFreeHost");
    if (!p)
        return cudaSuccess;
    drain_all();
    if (!device().pinned.erase((uintptr_t)p))
        simt::fail("cudaFreeHost of a pointer cudaMallocHost did not return");
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind k, cudaStream_t s)
{
    const Device &d = device();
    bool dst_dev = inside(d.device_mem, dst, bytes), src_dev = inside(d.device_mem, src, bytes);
    if (bytes && ((k == cudaMemcpyHostToDevice && (!dst_dev || src_dev)) ||
                  (k == cudaMemcpyDeviceToHost && (dst_dev || !src_dev)) ||
                  (k == cudaMemcpyDeviceToDevice && (!dst_dev || !src_dev))))
        return cudaErrorInvalidValue;
    if (s && s->capture && bytes &&
        ((k == cudaMemcpyHostToDevice && !inside(d.pinned, src, bytes)) ||
         (k == cudaMemcpyDeviceToHost && !inside(d.pinned, dst, bytes))))
        simt::fail("a copy from or to pageable host memory inside a stream capture");
    /* As on a device: from pageable memory the source is staged at the
     * call; to pageable memory the call returns when the copy is done.
     * Only pinned memory is truly asynchronous. */
    if (bytes && k == cudaMemcpyHostToDevice && !inside(d.pinned, src, bytes)) {
        auto staged = std::make_shared<std::vector<char>>((const char *)src, (const char *)src + bytes);
        simt::enqueue(s, [=] { memcpy(dst, staged->data(), bytes); });
        return cudaSuccess;
    }
    simt::enqueue(s, [=] {
        if (bytes)
            memmove(dst, src, bytes);
    });
    if (s && bytes && k == cudaMemcpyDeviceToHost && !inside(d.pinned, dst, bytes))
        drain(s, [] { return false; });
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *dst, int v, size_t bytes, cudaStream_t s)
{
    simt::enqueue(s, [=] { memset(dst, v, bytes); });
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned)
{
    *s = new simt_stream();
    device().streams.push_back(*s);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    if (s->capture)
        simt::fail("a stream destroyed while capturing");
    drain(s, [] { return false; });
    auto &v = device().streams;
    for (size_t i = 0; i < v.size(); i++)
        if (v[i] == s) {
            v.erase(v.begin() + (long)i);
            break;
        }
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    if (s && s->capture)
        return cudaErrorStreamCaptureUnsupported;
    if (!s)
        drain_all();
    else
        drain(s, [] { return false; });
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned)
{
    *e = new simt_event();
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    if (e && e->stream)
        wait_event(e, e->recorded); /* queued records still point at it */
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    if (!s)
        simt::fail("cudaEventRecord on the default stream");
    if (s->capture)
        simt::fail("an event recorded inside a stream capture");
    e->stream = s;
    uint64_t gen = ++e->recorded;
    simt::enqueue(s, [e, gen] {
        if (e->done < gen)
            e->done = gen;
    });
    return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned)
{
    if (!e->stream) /* never recorded: nothing to wait for */
        return cudaSuccess;
    simt_item it;
    it.wait = e;
    it.wait_gen = e->recorded;
    push(s, std::move(it));
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    if (e->stream)
        wait_event(e, e->recorded);
    return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode)
{
    if (s->capture)
        return cudaErrorInvalidValue;
    s->capture = new simt_graph();
    device().captures++;
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    if (!s->capture)
        return cudaErrorInvalidValue;
    *g = s->capture;
    s->capture = nullptr;
    device().captures--;
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long)
{
    *exec = new simt_graph(*g);
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s)
{
    for (const simt_item &it : exec->items)
        push(s, it);
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    delete exec;
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
    delete g;
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    *free_bytes = *total_bytes = (size_t)1 << 32;
    return cudaSuccess;
}

/* ---- cuBLAS ---- */
struct simt_cublas {
    cudaStream_t stream = nullptr;
};

cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    *h = new simt_cublas();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void *ws, size_t bytes)
{
    if (bytes && !inside(device().device_mem, ws, bytes))
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasGetStatusString(cublasStatus_t s)
{
    return s == CUBLAS_STATUS_SUCCESS ? "success" : "error";
}

static float elem(const void *p, cudaDataType t, size_t i)
{
    return t == CUDA_R_32F ? ((const float *)p)[i] : __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}

/* Column-major, as cuBLAS: C[m][n] (ldc) = alpha op(A) op(B) + beta C, with
 * op(A) m x k and op(B) k x n. */
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType at,
                            int lda, const void *B, cudaDataType bt, int ldb, const void *beta,
                            void *C, cudaDataType ct, int ldc, cublasComputeType_t, cublasGemmAlgo_t)
{
    if (!h || m < 0 || n < 0 || k < 0 || ct != CUDA_R_32F)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (lda < (ta == CUBLAS_OP_N ? (m > 1 ? m : 1) : (k > 1 ? k : 1)) ||
        ldb < (tb == CUBLAS_OP_N ? (k > 1 ? k : 1) : (n > 1 ? n : 1)) || ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    /* alpha and beta are read now (host pointer mode), the rest when it runs */
    const float al = *(const float *)alpha, be = *(const float *)beta;
    simt::enqueue(h->stream, [=] {
        float *c = (float *)C;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double s = 0;
                for (int p = 0; p < k; p++) {
                    float a = elem(A, at, ta == CUBLAS_OP_N ? (size_t)p * lda + i : (size_t)i * lda + p);
                    float b = elem(B, bt, tb == CUBLAS_OP_N ? (size_t)j * ldb + p : (size_t)p * ldb + j);
                    s += (double)a * b;
                }
                float *o = c + (size_t)j * ldc + i;
                *o = (float)(al * s + (be != 0.0f ? be * *o : 0.0));
            }
    });
    return CUBLAS_STATUS_SUCCESS;
}
