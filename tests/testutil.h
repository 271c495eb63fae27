/* Helpers shared by the test programs. */
#ifndef BSQ_TESTUTIL_H
#define BSQ_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "tensorset.h"

/* Directory with the test data (TEST_DATA_DIR, or $BSQ_TEST_DATA). */
const char *tu_data_dir(void);
/* Joins into a static-free malloc'd path: dir + "/" + name. */
char *tu_path(const char *dir, const char *name);
/* A fresh temporary directory (removed by tu_rmdir). */
char *tu_tmpdir(void);
void tu_rmdir(char *dir);
/* Reads a tensor from a set as f32 (malloc'd) or aborts the test. */
float *tu_f32(const bsq_tensorset *ts, const char *name, int64_t *numel);
/* Max |a - b| over n values. */
double tu_max_abs_diff(const float *a, const float *b, size_t n);
/* Deterministic pseudo-random floats in [lo, hi). */
void tu_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi);
/* Writes len bytes to a file; returns 0 on success. */
int tu_write_file(const char *path, const void *data, size_t len);
/* Reads a whole file (malloc'd); NULL on failure. */
void *tu_read_file(const char *path, size_t *len);

#endif
