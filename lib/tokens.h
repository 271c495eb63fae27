/* Token arrays: MSB-first indices plus the layout that says where each
 * token belongs. */
#ifndef BSQ_TOKENS_H
#define BSQ_TOKENS_H

#include "bsq.h"

struct bsq_tokens {
    bsq_token_layout layout;
    uint64_t *idx;
};

/* Validates a layout and computes its count. */
bsq_status bsq_layout_check(bsq_token_layout *layout, bsq_error *err);

#endif
