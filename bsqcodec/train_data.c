#include "train_data.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "commands.h"
#include "error.h"
#include "splitmix.h"
#include "media.h"

#define LEVELS 3      /* full, 1/2 and 1/4 scale */
#define MAX_CLIP 600  /* frames kept per video */
#define SLOTS_EXTRA 2 /* batches prepared ahead beyond one per thread */

typedef struct {
    int w, h, n;  /* size and frame count */
    uint8_t *rgb; /* n frames of h rows of w * 3 bytes */
} level;

typedef struct {
    level lv[LEVELS];
    int nlv;
    int clip; /* a video (several frames) */
} source;

struct train_data {
    train_data_options o;
    source *src;
    int nsrc, nclips, nstills, skipped;
    int64_t total_frames;
    int *clips, *stills; /* indices into src */
    /* the batch ring */
    int nslots;
    float **slot;
    int64_t *ready;      /* batch held by each slot, -1 none */
    int64_t next, consumed;
    int started, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *th;
    int nth;
};

/* ---------------------------------------------------------------- files */
static const char *const exts[] = {"png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "ppm",
                                   "pgm", "pnm", "gif", "y4m", "mp4", "mkv", "mov", "avi",
                                   "webm", "m4v", "mpg", "mpeg", "ts", NULL};

static int media_ext(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot)
        return 0;
    for (int i = 0; exts[i]; i++)
        if (!strcasecmp(dot + 1, exts[i]))
            return 1;
    return 0;
}

typedef struct {
    char **v;
    int n, cap;
} strlist;

static int push(strlist *l, const char *s)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    return (l->v[l->n++] = strdup(s)) ? 0 : -1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Media files under a folder, recursively (hidden entries skipped). */
static int walk(const char *dir, strlist *out)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(n);
        if (!p) {
            rc = -1;
            break;
        }
        snprintf(p, n, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rc = walk(p, out);
        else if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && media_ext(e->d_name))
            rc = push(out, p);
        free(p);
    }
    closedir(d);
    return rc;
}

/* ------------------------------------------------------------ decoding */
/* 2x2 box average (odd last row/column dropped). */
static int half(const level *a, level *b)
{
    b->w = a->w / 2;
    b->h = a->h / 2;
    b->n = a->n;
    b->rgb = malloc((size_t)b->n * b->h * b->w * 3);
    if (!b->rgb)
        return -1;
    for (int f = 0; f < a->n; f++) {
        const uint8_t *s = a->rgb + (size_t)f * a->h * a->w * 3;
        uint8_t *d = b->rgb + (size_t)f * b->h * b->w * 3;
        for (int y = 0; y < b->h; y++)
            for (int x = 0; x < b->w; x++)
                for (int c = 0; c < 3; c++) {
                    const uint8_t *p = s + ((size_t)(2 * y) * a->w + 2 * x) * 3 + c;
                    unsigned sum = p[0] + p[3] + p[(size_t)a->w * 3] + p[(size_t)a->w * 3 + 3];
                    d[((size_t)y * b->w + x) * 3 + c] = (uint8_t)((sum + 2) / 4);
                }
    }
    return 0;
}

static bsq_status load(const char *path, const train_data_options *o, source *s, bsq_error *err)
{
    memset(s, 0, sizeof *s);
    bsq_media_in *in;
    bsq_status st = bsq_media_in_open(path, NULL, &in, err);
    if (st != BSQ_OK)
        return st;
    const bsq_media_info *info = bsq_media_in_info(in);
    level full = {info->width, info->height, 0, NULL};
    size_t fsz = (size_t)full.w * full.h * 3;
    int cap = 0;
    for (;;) {
        if (full.n == cap) {
            if (cap == MAX_CLIP)
                break;
            cap = cap ? (cap * 2 < MAX_CLIP ? cap * 2 : MAX_CLIP) : 8;
            uint8_t *r = realloc(full.rgb, (size_t)cap * fsz);
            if (!r) {
                st = bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
                break;
            }
            full.rgb = r;
        }
        int got;
        st = bsq_media_in_read(in, full.rgb + (size_t)full.n * fsz, (size_t)full.w * 3, NULL, &got,
                               err);
        if (st != BSQ_OK || !got)
            break;
        full.n++;
    }
    bsq_media_in_close(in);
    if (st == BSQ_OK && full.n == 0)
        st = bsq_fail(err, BSQ_ERR_FORMAT, "no frames");
    if (st != BSQ_OK) {
        free(full.rgb);
        return st;
    }
    const int max_side = o->max_side > 0 ? o->max_side : 2048;
    while (full.w > max_side || full.h > max_side) {
        level h;
        if (half(&full, &h)) {
            free(full.rgb);
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
        }
        free(full.rgb);
        full = h;
    }
    if (full.w < o->width || full.h < o->height) {
        free(full.rgb);
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "%dx%d is smaller than the %dx%d crops",
                        full.w, full.h, o->width, o->height);
    }
    s->lv[0] = full;
    s->nlv = 1;
    s->clip = full.n > 1;
    while (s->nlv < LEVELS && s->lv[s->nlv - 1].w / 2 >= o->width &&
           s->lv[s->nlv - 1].h / 2 >= o->height) {
        if (half(&s->lv[s->nlv - 1], &s->lv[s->nlv]))
            return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
        s->nlv++;
    }
    return BSQ_OK;
}

/* ------------------------------------------------------------ sampling */
static int below(uint64_t *s, int n) { return n <= 1 ? 0 : (int)(bsq_splitmix64(s) % (uint64_t)n); }

/* One sample: frames x crop from source level lv, frame f0 + t * fstep,
 * window at (x0 + vx t, y0 + vy t), mirrored when flip. */
static void cut(const level *lv, int f0, int fstep, int x0, int y0, int vx, int vy, int flip,
                int T, int H, int W, float *out)
{
    const size_t plane = (size_t)T * H * W;
    for (int t = 0; t < T; t++) {
        const uint8_t *fr = lv->rgb + (size_t)(f0 + t * fstep) * lv->h * lv->w * 3;
        int xs = x0 + vx * t, ys = y0 + vy * t;
        for (int y = 0; y < H; y++) {
            const uint8_t *row = fr + ((size_t)(ys + y) * lv->w + xs) * 3;
            for (int x = 0; x < W; x++) {
                const uint8_t *p = row + (size_t)(flip ? W - 1 - x : x) * 3;
                size_t o = ((size_t)t * H + y) * W + x;
                out[o] = p[0] * (1.0f / 127.5f) - 1.0f;
                out[plane + o] = p[1] * (1.0f / 127.5f) - 1.0f;
                out[2 * plane + o] = p[2] * (1.0f / 127.5f) - 1.0f;
            }
        }
    }
}

static void sample(const train_data *d, uint64_t *rng, float *out)
{
    const int T = d->o.frames, H = d->o.height, W = d->o.width;
    int use_clip;
    if (T > 1)
        use_clip = d->nclips && (!d->nstills || below(rng, 2));
    else
        use_clip = d->nclips && below(rng, d->nsrc) < d->nclips;
    const source *s = &d->src[use_clip ? d->clips[below(rng, d->nclips)]
                                       : d->stills[below(rng, d->nstills)]];
    const level *lv = &s->lv[below(rng, s->nlv)];
    int flip = below(rng, 2);
    if (use_clip) {
        int fstep = T > 1 && lv->n >= 2 * T && below(rng, 3) == 0 ? 2 : 1;
        int span = T > 1 ? (T - 1) * fstep + 1 : 1;
        if (span > lv->n) { /* a clip shorter than T: slow it down by holding frames */
            fstep = 0;
            span = 1;
        }
        int f0 = below(rng, lv->n - span + 1);
        cut(lv, f0, fstep, below(rng, lv->w - W + 1), below(rng, lv->h - H + 1), 0, 0, flip, T,
            H, W, out);
        return;
    }
    /* a still: for video models, a pan at a random constant speed */
    int vx = 0, vy = 0;
    if (T > 1) {
        int vmax = 6;
        vx = below(rng, 2 * vmax + 1) - vmax;
        vy = below(rng, 2 * vmax + 1) - vmax;
        if (lv->w - W < abs(vx) * (T - 1))
            vx = 0;
        if (lv->h - H < abs(vy) * (T - 1))
            vy = 0;
    }
    int xlo = vx < 0 ? -vx * (T - 1) : 0, xhi = lv->w - W - (vx > 0 ? vx * (T - 1) : 0);
    int ylo = vy < 0 ? -vy * (T - 1) : 0, yhi = lv->h - H - (vy > 0 ? vy * (T - 1) : 0);
    cut(lv, 0, 0, xlo + below(rng, xhi - xlo + 1), ylo + below(rng, yhi - ylo + 1), vx, vy, flip,
        T, H, W, out);
}

static void make_batch(const train_data *d, int64_t k, float *out)
{
    const size_t per = (size_t)3 * d->o.frames * d->o.height * d->o.width;
    for (int i = 0; i < d->o.batch; i++) {
        uint64_t rng = d->o.seed * 0x632be59bd9b4e019ull + (uint64_t)k * 1000003u + (uint64_t)i;
        bsq_splitmix64(&rng);
        sample(d, &rng, out + (size_t)i * per);
    }
}

static void *producer(void *arg)
{
    train_data *d = arg;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->stop && d->next >= d->consumed + d->nslots)
            pthread_cond_wait(&d->cv, &d->mu);
        if (d->stop)
            break;
        int64_t k = d->next++;
        int slot = (int)(k % d->nslots);
        d->ready[slot] = -1;
        pthread_mutex_unlock(&d->mu);
        make_batch(d, k, d->slot[slot]);
        pthread_mutex_lock(&d->mu);
        d->ready[slot] = k;
        pthread_cond_broadcast(&d->cv);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

const float *train_data_batch(train_data *d, int64_t step)
{
    pthread_mutex_lock(&d->mu);
    if (!d->started) {
        d->next = d->consumed = step;
        d->started = 1;
        for (int i = 0; i < d->nth; i++)
            if (pthread_create(&d->th[i], NULL, producer, d)) {
                /* no thread: make batches here instead */
                d->nth = i;
                break;
            }
    }
    d->consumed = step;
    pthread_cond_broadcast(&d->cv);
    int slot = (int)(step % d->nslots);
    if (d->nth == 0) {
        pthread_mutex_unlock(&d->mu);
        make_batch(d, step, d->slot[slot]);
        return d->slot[slot];
    }
    while (d->ready[slot] != step)
        pthread_cond_wait(&d->cv, &d->mu);
    pthread_mutex_unlock(&d->mu);
    return d->slot[slot];
}

/* ------------------------------------------------------------ open/close */
void train_data_close(train_data *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    d->stop = 1;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    if (d->started)
        for (int i = 0; i < d->nth; i++)
            pthread_join(d->th[i], NULL);
    for (int i = 0; i < d->nsrc; i++)
        for (int l = 0; l < d->src[i].nlv; l++)
            free(d->src[i].lv[l].rgb);
    for (int i = 0; d->slot && i < d->nslots; i++)
        free(d->slot[i]);
    free(d->slot);
    free(d->ready);
    free(d->th);
    free(d->src);
    free(d->clips);
    free(d->stills);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d);
}

void train_data_describe(const train_data *d, int *images, int *clips, int64_t *frames,
                         int *skipped)
{
    *images = d->nstills;
    *clips = d->nclips;
    *frames = d->total_frames;
    *skipped = d->skipped;
}

bsq_status train_data_open(char *const *paths, int npaths, const train_data_options *o,
                           train_data **out, bsq_error *err)
{
    train_data *d = calloc(1, sizeof *d);
    if (!d)
        return bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    d->o = *o;
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    strlist files = {0};
    bsq_status st = BSQ_OK;
    for (int i = 0; i < npaths && st == BSQ_OK; i++) {
        struct stat sb;
        if (stat(paths[i], &sb) != 0)
            st = bsq_fail(err, BSQ_ERR_IO, "%s: no such file or folder", paths[i]);
        else if (S_ISDIR(sb.st_mode) ? walk(paths[i], &files) : push(&files, paths[i]))
            st = bsq_fail(err, BSQ_ERR_IO, "%s: cannot list it", paths[i]);
    }
    if (st == BSQ_OK) {
        qsort(files.v, (size_t)files.n, sizeof *files.v, cmp_str);
        d->src = calloc((size_t)files.n + 1, sizeof *d->src);
        d->clips = calloc((size_t)files.n + 1, sizeof(int));
        d->stills = calloc((size_t)files.n + 1, sizeof(int));
        if (!d->src || !d->clips || !d->stills)
            st = bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < files.n && st == BSQ_OK; i++) {
        bsq_error e;
        source *s = &d->src[d->nsrc];
        if (load(files.v[i], o, s, &e) != BSQ_OK) {
            if (e.code == BSQ_ERR_NOMEM)
                st = bsq_fail(err, BSQ_ERR_NOMEM, "%s: %s", files.v[i], e.message);
            else /* even with -q: a user must know what did not train */
                fprintf(stderr, "bsqcodec: train: skipping %s: %s\n", files.v[i], e.message);
            for (int l = 0; l < s->nlv; l++)
                free(s->lv[l].rgb);
            d->skipped++;
            continue;
        }
        d->total_frames += s->lv[0].n;
        if (s->clip)
            d->clips[d->nclips++] = d->nsrc;
        else
            d->stills[d->nstills++] = d->nsrc;
        d->nsrc++;
    }
    for (int i = 0; i < files.n; i++)
        free(files.v[i]);
    free(files.v);
    if (st == BSQ_OK && d->nsrc == 0)
        st = bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT,
                      "no usable image or video in the training data (%d skipped)", d->skipped);
    if (st == BSQ_OK) {
        d->nth = o->threads > 0 ? o->threads : 1;
        d->nslots = d->nth + SLOTS_EXTRA;
        const size_t per = (size_t)o->batch * 3 * o->frames * o->height * o->width;
        d->slot = calloc((size_t)d->nslots, sizeof *d->slot);
        d->ready = malloc((size_t)d->nslots * sizeof *d->ready);
        d->th = calloc((size_t)d->nth, sizeof *d->th);
        if (!d->slot || !d->ready || !d->th)
            st = bsq_fail(err, BSQ_ERR_NOMEM, "out of memory");
        for (int i = 0; st == BSQ_OK && i < d->nslots; i++) {
            d->ready[i] = -1;
            if (!(d->slot[i] = malloc(per * sizeof(float))))
                st = bsq_fail(err, BSQ_ERR_NOMEM, "out of memory for the batch buffers");
        }
    }
    if (st != BSQ_OK) {
        train_data_close(d);
        return st;
    }
    *out = d;
    return BSQ_OK;
}
