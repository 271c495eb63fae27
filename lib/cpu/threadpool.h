/* A fixed pool of worker threads running parallel-for loops. The calling
 * thread takes part, so a pool of n threads starts n - 1 workers. Tasks are
 * handed out by an atomic counter; results must not depend on which thread
 * runs which task (every op splits work into fixed-size tasks). */
#ifndef BSQ_THREADPOOL_H
#define BSQ_THREADPOOL_H

#include <stddef.h>

typedef struct bsq_pool bsq_pool;

/* fn(arg, task, thread): task in [0, ntasks), thread in [0, threads). */
typedef void (*bsq_task_fn)(void *arg, size_t task, int thread);

bsq_pool *bsq_pool_create(int threads);
void bsq_pool_destroy(bsq_pool *pool);
int bsq_pool_threads(const bsq_pool *pool);
void bsq_pool_run(bsq_pool *pool, size_t ntasks, bsq_task_fn fn, void *arg);

#endif
