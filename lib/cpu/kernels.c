/* Elementwise kernels written so the compiler vectorises them: branch-free
 * polynomial exp (2^n * 2^f, with the rounding done by the 1.5*2^23 trick
 * instead of a call), and erf / tanh built on it. target_clones compiles
 * each loop for AVX-512, AVX2 and baseline x86-64 and picks one at load
 * time. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTORISED __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTORISED
#endif

/* exp(x) for x in [-87, 88]; callers clamp. */
static inline float exp_poly(float x)
{
    const float shift = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = x * 1.44269504088896341f + shift;
    float n = t - shift;
    int32_t ni;
    memcpy(&ni, &t, 4);
    ni -= 0x4b400000; /* the integer n, from the low mantissa bits */
    float f = x - n * 0.693145751953125f - n * 1.42860682030941723212e-6f; /* x - n ln2 */
    /* minimax polynomial for e^f, |f| <= ln2/2 */
    float p = 1.9875691500e-4f;
    p = p * f + 1.3981999507e-3f;
    p = p * f + 8.3334519073e-3f;
    p = p * f + 4.1665795894e-2f;
    p = p * f + 1.6666665459e-1f;
    p = p * f + 5.0000001201e-1f;
    p = p * f * f + f + 1.0f;
    uint32_t bits;
    memcpy(&bits, &p, 4);
    bits += (uint32_t)ni << 23; /* scale by 2^n: add n to the exponent field */
    memcpy(&p, &bits, 4);
    return p;
}

static inline float clampf(float x, float lo, float hi) { return x < lo ? lo : x > hi ? hi : x; }

VECTORISED void bsq_cpu_exp_inplace(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = exp_poly(clampf(x[i], -87.0f, 88.0f));
}

/* erf(x) by Abramowitz & Stegun 7.1.26 refined (|error| < 1.2e-7 after the
 * final correction term); odd symmetry handled with copysign. */
static inline float erf_approx(float x)
{
    float a = fabsf(x);
    float t = 1.0f / (1.0f + 0.5f * a);
    /* Numerical Recipes erfc(): erfc(a) = t exp(-a^2 + poly(t)), |rel err| < 1.2e-7 */
    float poly = -1.26551223f +
                 t * (1.00002368f +
                 t * (0.37409196f +
                 t * (0.09678418f +
                 t * (-0.18628806f +
                 t * (0.27886807f +
                 t * (-1.13520398f +
                 t * (1.48851587f +
                 t * (-0.82215223f + t * 0.17087277f))))))));
    /* beyond |x| = 10, erfc is below float's resolution next to 1; cutting
     * it off there also keeps t * e^e out of the subnormal range, where the
     * CPU computes hundreds of times slower */
    float e = clampf(-a * a + poly, -80.0f, 0.0f);
    float erfc = a < 10.0f ? t * exp_poly(e) : 0.0f;
    return copysignf(1.0f - erfc, x);
}

VECTORISED void bsq_cpu_gelu_span(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + erf_approx(v * 0.70710678118654752f));
    }
}

/* dy *= gelu'(x) = Phi(x) + x phi(x) */
VECTORISED void bsq_cpu_gelu_grad_span(const float *x, float *dy, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float cdf = 0.5f * (1.0f + erf_approx(v * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * exp_poly(clampf(-0.5f * v * v, -87.0f, 0.0f));
        dy[i] *= cdf + v * pdf;
    }
}

/* dy *= 1 - y^2, y = tanh(x) */
VECTORISED void bsq_cpu_tanh_grad_span(const float *y, float *dy, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dy[i] *= 1.0f - y[i] * y[i];
}

VECTORISED void bsq_cpu_tanh_span(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float a = fabsf(v);
        /* tanh(a) = 1 - 2 / (e^{2a} + 1); near 0 use the odd series, where
         * that form loses relative precision */
        float e = exp_poly(clampf(2.0f * a, 0.0f, 88.0f));
        float big = 1.0f - 2.0f / (e + 1.0f);
        float a2 = a * a;
        float small = a * (1.0f + a2 * (-0.333333333f + a2 * (0.133333333f + a2 * (-0.053968254f +
                                                         a2 * 0.021869488f))));
        x[i] = copysignf(a < 0.125f ? small : big, v);
    }
}

VECTORISED void bsq_cpu_layernorm_row(const float *x, const float *w, const float *b, float *y,
                                      int d, float eps)
{
    float sum = 0.0f;
    for (int i = 0; i < d; i++)
        sum += x[i];
    float mean = sum / (float)d;
    float var = 0.0f;
    for (int i = 0; i < d; i++) {
        float c = x[i] - mean;
        var += c * c;
    }
    float inv = 1.0f / sqrtf(var / (float)d + eps);
    for (int i = 0; i < d; i++)
        y[i] = (x[i] - mean) * inv * w[i] + b[i];
}

/* max over x[0..n) together with `start`; 16 independent lanes so the loop
 * vectorises without reassociating floats (the result is exact anyway). */
VECTORISED float bsq_cpu_max_span(const float *x, size_t n, float start)
{
    float lane[16];
    for (int l = 0; l < 16; l++)
        lane[l] = start;
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++)
            lane[l] = x[i + l] > lane[l] ? x[i + l] : lane[l];
    float m = start;
    for (int l = 0; l < 16; l++)
        m = lane[l] > m ? lane[l] : m;
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

/* x = exp(x - m) in place; returns the sum (in 16 lanes, a fixed order). */
VECTORISED float bsq_cpu_exp_sum_span(float *x, size_t n, float m)
{
    float lane[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            float e = exp_poly(clampf(x[i + l] - m, -87.0f, 88.0f));
            x[i + l] = e;
            lane[l] += e;
        }
    float s = 0.0f;
    for (; i < n; i++) {
        float e = exp_poly(clampf(x[i] - m, -87.0f, 88.0f));
        x[i] = e;
        s += e;
    }
    for (int l = 0; l < 16; l++)
        s += lane[l];
    return s;
}
