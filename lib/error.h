/* Error reporting helpers shared by the library's internals. */
#ifndef BSQ_ERROR_H
#define BSQ_ERROR_H

#include "bsq.h"

/* Fills *err (when not NULL) with `code` and a printf-style message, and
 * returns `code`, so a failure path is one line: return bsq_fail(err, ...). */
bsq_status bsq_fail(bsq_error *err, bsq_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the message already in *err with context ("loading X: ...")
 * and returns `code` (the status being passed up). */
bsq_status bsq_fail_prefix(bsq_error *err, bsq_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
