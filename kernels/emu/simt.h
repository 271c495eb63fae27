/* A small SIMT emulator, so the CUDA kernels of kernels/ run on a CPU in the
 * tests (tests/check_cuda_emu) on machines without a GPU, sanitizers
 * included. It provides the subset of CUDA the kernels use:
 *
 *  - launches: every CUDA thread of a block is a fiber (ucontext); blocks
 *    run one after another, so `__shared__` (defined as `static`) is the
 *    block's shared memory; __syncthreads / __syncwarp are barriers, and a
 *    barrier that cannot complete (divergent or after some threads exited)
 *    aborts with a message instead of hanging;
 *  - warp shuffles and ballots, as exchanges between the lanes' fibers;
 *  - bf16 with round-to-nearest-even, as on the device;
 *  - WMMA fragments (each lane holds the whole tile: only whole-fragment
 *    operations exist, no per-element access), checking the alignment and
 *    leading-dimension rules the hardware imposes; stores wait for the
 *    warp's other lanes, as the warp stores in lock-step on a device;
 *  - the CUDA runtime calls of kernels/backend_cuda.cu (memory is host
 *    memory) and the cuBLAS GEMMs it makes, with cuBLAS's column-major
 *    semantics, so argument mix-ups are caught;
 *  - streams as queues that run as late as the program allows: work waits
 *    until the host synchronizes with its stream (or an event after it),
 *    or another stream waits for one of its events. So a host buffer
 *    reused before its copy ran, a result read before a sync, or a missing
 *    wait between two streams gives wrong data in the tests, as it can on
 *    a device;
 *  - CUDA graphs by stream capture: captured work is recorded, not run;
 *    allocation, freeing, synchronization, events and copies from pageable
 *    host memory during a capture abort with a message, as they fail on a
 *    device.
 *
 * It does not model timing or memory ordering within a kernel: it checks
 * indexing, shared-memory layouts, masking, arithmetic and the ordering of
 * queued work, not performance. */
#ifndef BSQ_SIMT_H
#define BSQ_SIMT_H

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
typedef dim3 uint3;

namespace simt {
const dim3 &thread_idx();
const dim3 &block_idx();
const dim3 &block_dim();
const dim3 &grid_dim();
void launch(dim3 grid, dim3 block, size_t dynamic_smem, const std::function<void()> &body);
void sync_block();
void sync_warp();
void *dynamic_smem();
uint64_t exchange(uint64_t value, int src_lane); /* warp collective */
unsigned ballot(int pred);                        /* warp collective */
[[noreturn]] void fail(const char *what);
} // namespace simt

#define threadIdx (simt::thread_idx())
#define blockIdx (simt::block_idx())
#define blockDim (simt::block_dim())
#define gridDim (simt::grid_dim())
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __syncthreads() simt::sync_block()
#define __syncwarp(...) simt::sync_warp()

template <class T> static inline T simt_shfl(T v, int src)
{
    static_assert(sizeof(T) <= 8, "shuffle of a wide type");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = simt::exchange(bits, src);
    T out;
    memcpy(&out, &bits, sizeof out);
    return out;
}
template <class T> static inline T __shfl_xor_sync(unsigned, T v, int mask, int width = 32)
{
    int lane = (int)(simt::thread_idx().x % 32);
    return simt_shfl(v, (lane & ~(width - 1)) | ((lane ^ mask) & (width - 1)));
}
template <class T> static inline T __shfl_sync(unsigned, T v, int src, int width = 32)
{
    int lane = (int)(simt::thread_idx().x % 32);
    return simt_shfl(v, (lane & ~(width - 1)) | (src & (width - 1)));
}
static inline unsigned __ballot_sync(unsigned, int pred) { return simt::ballot(pred); }

static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float __fdividef(float a, float b) { return a / b; }
template <class T> static inline T __ldg(const T *p) { return *p; }

/* ---- bf16 ---- */
struct __nv_bfloat16 {
    uint16_t bits;
};
static inline __nv_bfloat16 __float2bfloat16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    __nv_bfloat16 b;
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN stays a quiet NaN */
        b.bits = (uint16_t)((u >> 16) | 0x40);
    else
        b.bits = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
    return b;
}
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
static inline float __bfloat162float(__nv_bfloat16 b)
{
    uint32_t u = (uint32_t)b.bits << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- WMMA ---- */
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K> struct frag_shape;
template <int M, int N, int K> struct frag_shape<matrix_a, M, N, K> { enum { R = M, C = K }; };
template <int M, int N, int K> struct frag_shape<matrix_b, M, N, K> { enum { R = K, C = N }; };
template <int M, int N, int K> struct frag_shape<accumulator, M, N, K> { enum { R = M, C = N }; };

template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    enum { R = frag_shape<Use, M, N, K>::R, C = frag_shape<Use, M, N, K>::C };
    float v[R * C]; /* row-major logical tile */
};

static inline void check_ptr(const void *p, unsigned ldm, unsigned mult)
{
    if ((uintptr_t)p % 32)
        simt::fail("wmma: pointer not 256-bit aligned");
    if (ldm % mult)
        simt::fail("wmma: ldm not a multiple of 16 bytes");
}
static inline float load_elem(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }
static inline float load_elem(const float *p, size_t i) { return p[i]; }

template <class Use, int M, int N, int K, class T, class Layout>
static inline void fill_fragment(fragment<Use, M, N, K, T, Layout> &f, float v)
{
    for (auto &e : f.v)
        e = v;
}
template <class Use, int M, int N, int K, class T, class Layout, class P>
static inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout> &f, const P *p, unsigned ldm)
{
    typedef fragment<Use, M, N, K, T, Layout> F;
    check_ptr(p, ldm, 16 / sizeof(P));
    const bool row = std::is_same<Layout, row_major>::value;
    for (int r = 0; r < F::R; r++)
        for (int c = 0; c < F::C; c++)
            f.v[r * F::C + c] = load_elem(p, row ? (size_t)r * ldm + c : (size_t)c * ldm + r);
}
template <int M, int N, int K>
static inline void load_matrix_sync(fragment<accumulator, M, N, K, float> &f, const float *p,
                                    unsigned ldm, layout_t layout)
{
    check_ptr(p, ldm, 4);
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++)
            f.v[r * N + c] = p[layout == mem_row_major ? (size_t)r * ldm + c : (size_t)c * ldm + r];
}
/* On a device the warp stores together, after all its lanes loaded: every
 * lane here holds the whole tile and stores all of it, so it waits for the
 * others first, or a load-mma-store of the same memory would apply twice. */
template <int M, int N, int K>
static inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f,
                                     unsigned ldm, layout_t layout)
{
    check_ptr(p, ldm, 4);
    simt::sync_warp();
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++)
            p[layout == mem_row_major ? (size_t)r * ldm + c : (size_t)c * ldm + r] = f.v[r * N + c];
}
template <int M, int N, int K, class TA, class LA, class TB, class LB>
static inline void mma_sync(fragment<accumulator, M, N, K, float> &d,
                            const fragment<matrix_a, M, N, K, TA, LA> &a,
                            const fragment<matrix_b, M, N, K, TB, LB> &b,
                            const fragment<accumulator, M, N, K, float> &c)
{
    fragment<accumulator, M, N, K, float> out;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = c.v[i * N + j];
            for (int k = 0; k < K; k++)
                s += a.v[i * K + k] * b.v[k * N + j];
            out.v[i * N + j] = s;
        }
    d = out;
}
} // namespace wmma
} // namespace nvcuda

/* ---- the CUDA runtime subset ---- */
typedef enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorStreamCaptureUnsupported = 900,
} cudaError_t;
typedef enum {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;
typedef struct simt_stream *cudaStream_t;
typedef struct simt_event *cudaEvent_t;
typedef struct simt_graph *cudaGraph_t;
typedef struct simt_graph *cudaGraphExec_t;
typedef enum { cudaStreamCaptureModeGlobal = 0, cudaStreamCaptureModeThreadLocal = 1 } cudaStreamCaptureMode;
struct cudaDeviceProp {
    char name[256];
    int major, minor;
    int multiProcessorCount;
    size_t totalGlobalMem;
    size_t sharedMemPerBlockOptin;
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
#define cudaStreamNonBlocking 0x01
#define cudaEventDisableTiming 0x02

const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t bytes);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind k, cudaStream_t s);
cudaError_t cudaMemsetAsync(void *dst, int v, size_t bytes, cudaStream_t s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGetLastError(void);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
template <class F> static inline cudaError_t cudaFuncSetAttribute(F *, cudaFuncAttribute, int)
{
    return cudaSuccess;
}

namespace simt {
/* Queues work on a stream (run later, see above). */
void enqueue(cudaStream_t s, std::function<void()> work);
/* A kernel launch: the arguments are evaluated now, as a launch copies them. */
template <class K, class... A>
void launch_async(cudaStream_t s, dim3 grid, dim3 block, size_t smem, K kernel, A... args)
{
    enqueue(s, [=] { launch(grid, block, smem, [&] { kernel(args...); }); });
}
} // namespace simt

/* ---- the cuBLAS subset ---- */
typedef struct simt_cublas *cublasHandle_t;
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_NOT_SUPPORTED = 15
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 } cudaDataType;
typedef enum {
    CUBLAS_COMPUTE_32F = 68,
    CUBLAS_COMPUTE_32F_PEDANTIC = 69,
    CUBLAS_COMPUTE_32F_FAST_TF32 = 77
} cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_PEDANTIC_MATH = 2 } cublasMath_t;

cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m);
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes);
const char *cublasGetStatusString(cublasStatus_t s);
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType at,
                            int lda, const void *B, cudaDataType bt, int ldb, const void *beta,
                            void *C, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo);

#define BSQ_LAUNCH(kernel, grid, block, smem, stream, ...)                                         \
    simt::launch_async((stream), dim3(grid), dim3(block), (size_t)(smem), kernel, __VA_ARGS__)
#define BSQ_DYNAMIC_SMEM(name) char *name = (char *)simt::dynamic_smem()

#endif
