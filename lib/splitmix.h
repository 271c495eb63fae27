/* splitmix64: the small, fixed integer PRNG behind every random choice in
 * training (initial weights, data order, crops), so a seed means the same
 * thing on every machine. */
#ifndef BSQ_SPLITMIX_H
#define BSQ_SPLITMIX_H

#include <stdint.h>

static inline uint64_t bsq_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#endif
