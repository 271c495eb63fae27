/* Patches: pixels [seqs][3][frames][H][W] <-> tokens [seqs][frames][gh][gw]
 * [3*p*p], channel-major inside a patch. One thread per element, indexed by
 * the token side so the patch rows it writes (or reads) are contiguous. */
#include "device.h"
#include "kernels.h"

namespace bsqk {

namespace {

const int THREADS = 256;

/* The pixel index of element e of token-major order. */
__device__ __forceinline__ size_t pixel_of(size_t e, int frames, int gh, int gw, int p)
{
    const size_t P3 = 3 * (size_t)p * p;
    size_t tok = e / P3;
    int in = (int)(e % P3);
    int c = in / (p * p), r = in / p % p, x = in % p;
    int gx = (int)(tok % (size_t)gw), gy = (int)(tok / (size_t)gw % (size_t)gh);
    size_t st = tok / ((size_t)gw * gh); /* s * frames + t */
    int t = (int)(st % (size_t)frames);
    size_t s = st / (size_t)frames;
    const size_t H = (size_t)gh * p, W = (size_t)gw * p, plane = (size_t)frames * H * W;
    return s * 3 * plane + (size_t)c * plane + ((size_t)t * H + (size_t)gy * p + r) * W +
           (size_t)gx * p + x;
}

__global__ void k_patchify(const float *pix, float *tok, size_t total, int frames, int gh, int gw,
                           int p)
{
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x)
        tok[e] = pix[pixel_of(e, frames, gh, gw, p)];
}

__global__ void k_unpatchify(const float *tok, float *pix, size_t total, int frames, int gh, int gw,
                             int p, int clamp)
{
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        float v = tok[e];
        if (clamp)
            v = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
        pix[pixel_of(e, frames, gh, gw, p)] = v;
    }
}

} // namespace

void patchify(cudaStream_t s, const float *pix, float *tok, int seqs, int frames, int gh, int gw,
              int p)
{
    size_t total = (size_t)seqs * frames * gh * gw * 3 * p * p;
    if (total)
        BSQ_LAUNCH(k_patchify, grid_for(total, THREADS), THREADS, 0, s, pix, tok, total, frames, gh,
                   gw, p);
}

void unpatchify(cudaStream_t s, const float *tok, float *pix, int seqs, int frames, int gh, int gw,
                int p, int clamp)
{
    size_t total = (size_t)seqs * frames * gh * gw * 3 * p * p;
    if (total)
        BSQ_LAUNCH(k_unpatchify, grid_for(total, THREADS), THREADS, 0, s, tok, pix, total, frames,
                   gh, gw, p, clamp);
}

} // namespace bsqk
