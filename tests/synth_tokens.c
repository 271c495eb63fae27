#include "synth_tokens.h"

#include <stddef.h>

uint64_t synth_rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void synth_token_frames(enum synth_source src, const bsq_frame_geom *g, int frames, int regions,
                        uint64_t seed, uint64_t *t)
{
    const size_t n = (size_t)g->tiles_y * g->tiles_x * g->grid_h * g->grid_w;
    const size_t tile = (size_t)g->grid_h * g->grid_w;
    const uint64_t mask = g->L == 64 ? ~(uint64_t)0 : ((uint64_t)1 << g->L) - 1;
    uint64_t st = seed;
    if (src == SYNTH_REGIONS) {
        enum { MAXC = 64 };
        const int nc = regions < 1 ? 1 : regions > MAXC ? MAXC : regions;
        for (int tl = 0; tl < g->tiles_y * g->tiles_x; tl++) {
            int64_t cy[MAXC], cx[MAXC], vy[MAXC], vx[MAXC];
            uint64_t ct[MAXC];
            for (int k = 0; k < nc; k++) {
                cy[k] = (int64_t)(synth_rnd(&st) % (uint64_t)(g->grid_h * 16));
                cx[k] = (int64_t)(synth_rnd(&st) % (uint64_t)(g->grid_w * 16));
                vy[k] = (int64_t)(synth_rnd(&st) % 13) - 6;
                vx[k] = (int64_t)(synth_rnd(&st) % 13) - 6;
                ct[k] = synth_rnd(&st) & mask;
            }
            for (int f = 0; f < frames; f++)
                for (int y = 0; y < g->grid_h; y++)
                    for (int x = 0; x < g->grid_w; x++) {
                        int best = 0;
                        int64_t bd = -1;
                        for (int k = 0; k < nc; k++) {
                            int64_t dy = y * 16 - (cy[k] + f * vy[k]);
                            int64_t dx = x * 16 - (cx[k] + f * vx[k]);
                            if (bd < 0 || dy * dy + dx * dx < bd) {
                                bd = dy * dy + dx * dx;
                                best = k;
                            }
                        }
                        uint64_t tok = ct[best];
                        for (int d = 0; d < g->L; d++)
                            if (synth_rnd(&st) % 100 < 3)
                                tok ^= (uint64_t)1 << d;
                        t[(size_t)f * n + (size_t)tl * tile + (size_t)y * g->grid_w + x] = tok;
                    }
        }
        return;
    }
    for (int f = 0; f < frames; f++)
        for (size_t i = 0; i < n; i++) {
            uint64_t *o = t + (size_t)f * n + i;
            if (src == SYNTH_UNIFORM || f == 0) {
                *o = synth_rnd(&st) & mask;
            } else {
                uint64_t v = o[-(ptrdiff_t)n];
                for (int d = 0; d < g->L; d++)
                    if (synth_rnd(&st) % 50 == 0)
                        v ^= (uint64_t)1 << d;
                *o = v;
            }
        }
}
