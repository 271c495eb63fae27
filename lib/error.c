#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif

const char *bsq_status_string(bsq_status status)
{
    switch (status) {
    case BSQ_OK: return "success";
    case BSQ_ERR_INVALID_ARGUMENT: return "invalid argument";
    case BSQ_ERR_IO: return "input/output error";
    case BSQ_ERR_FORMAT: return "malformed file";
    case BSQ_ERR_MODEL: return "model mismatch";
    case BSQ_ERR_NOMEM: return "out of memory";
    case BSQ_ERR_UNSUPPORTED: return "unsupported";
    case BSQ_ERR_DEVICE: return "device unavailable";
    }
    return "unknown error";
}

const char *bsq_version(void) { return PACKAGE_VERSION; }

bsq_status bsq_fail(bsq_error *err, bsq_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

bsq_status bsq_fail_prefix(bsq_error *err, bsq_status code, const char *fmt, ...)
{
    if (!err)
        return code;
    char prefix[256], old[sizeof err->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof old);
    old[sizeof old - 1] = 0;
    /* prefix, then as much of the old message as fits */
    size_t n = strlen(prefix), m = strlen(old);
    if (n > sizeof old - 3)
        n = sizeof old - 3;
    if (m > sizeof old - 3 - n)
        m = sizeof old - 3 - n;
    memcpy(err->message, prefix, n);
    memcpy(err->message + n, ": ", 2);
    memcpy(err->message + n + 2, old, m);
    err->message[n + 2 + m] = 0;
    err->code = code;
    return code;
}
