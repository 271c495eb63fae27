/* bsqcodec tokenize: image collections -> shards of token arrays (NumPy .npy
 * or safetensors) with a JSON-lines index per shard and a manifest, for
 * training masked token models.
 *
 * Work is cut into global shards of --shard-size consecutive inputs of the
 * sorted input list; shard j belongs to machine j mod N (--shard K/N). A
 * pool of decoder threads reads and resizes pictures ahead of the engine
 * into a ring of slots; the main thread takes them strictly in input order,
 * encodes them in batches and writes each shard (data, then its index) under
 * a temporary name renamed when complete. A rerun checks every shard's files
 * against what it would write and only redoes the missing or stale ones. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <glob.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bsq.h"
#include "cli.h"
#include "commands.h"
#include "error.h"
#include "imageprep.h"
#include "tiling.h"
#include "tokfile.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: bsqcodec tokenize INPUT... -o OUTDIR [OPTIONS]\n"
            "       bsqcodec tokenize --list FILE -o OUTDIR [OPTIONS]\n\n"
            "Tokenizes a collection of images into shards of token arrays for training:\n"
            "one row per image, in the sorted order of the input paths. An INPUT is an\n"
            "image, a folder (searched recursively; hidden names skipped) or a quoted\n"
            "glob pattern. Unreadable files are reported, skipped and listed in the\n"
            "manifest. A rerun skips the shards that are complete, so an interrupted run\n"
            "continues where it stopped.\n\n"
            "Options:\n"
            "  -o, --output DIR        output folder (created): shard-NNNNNN.npy or\n"
            "                          .safetensors, shard-NNNNNN.jsonl, manifest.json\n"
            "  -l, --list FILE         read input paths from FILE, one per line ('-': stdin)\n"
            "  -m, --model FILE        tokenizer model (default: $BSQ_MODEL, else the\n"
            "                          built-in image model)\n"
            "  -s, --size N            short side resized to N (bicubic, anti-aliased),\n"
            "                          then centre crop N x N (default: the model's size)\n"
            "  -f, --format F          groups: group indices, uint16 (uint32 above 16 bits),\n"
            "                          [rows, tokens, L/g] (default); bits: packed bits,\n"
            "                          MSB first, uint8 [rows, tokens, ceil(L/8)]\n"
            "  -g, --group-bits G      bits per group index, a divisor of L, at most 32\n"
            "                          (default: the model's group size)\n"
            "      --container C       npy (default) or safetensors\n"
            "      --shard-size N      inputs per shard (default 1024)\n"
            "      --shard K/N         process only the shards j with j mod N = K (N machines\n"
            "                          share the work with no coordination)\n"
            "      --ext LIST          in folders, only names with these extensions\n"
            "                          (comma-separated, case-insensitive; default: all)\n"
            "  -j, --decode-threads N  picture decoding and resizing threads (default: CPUs)\n"
            "  -b, --batch N           images per engine call (default 16)\n"
            "  -t, --threads N         engine threads (default: all CPUs)\n"
            "  -d, --device DEV        auto, cpu, cuda, cuda:N (default: auto)\n"
            "      --precision P       fp32 or bf16 on a GPU (default: bf16); the CPU\n"
            "                          is always fp32\n"
            "  -q, --quiet             no progress line and no summary\n"
            "  -h, --help              show this help\n");
}

/* ------------------------------------------------------------------------ */
/* Input collection                                                          */

typedef struct {
    char **v;
    size_t n, cap;
} strvec;

static int strvec_add(strvec *s, const char *p)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1024;
        char **v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return 0;
        s->v = v;
        s->cap = cap;
    }
    if (!(s->v[s->n] = strdup(p)))
        return 0;
    s->n++;
    return 1;
}

static void strvec_free(strvec *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
}

typedef struct {
    strvec *out;
    const char *exts; /* comma-separated, or NULL */
    dev_t skip_dev;   /* the output folder, never searched */
    ino_t skip_ino;
    int oom;
} walker;

static int ext_ok(const char *exts, const char *name)
{
    if (!exts)
        return 1;
    const char *dot = strrchr(name, '.');
    if (!dot)
        return 0;
    size_t el = strlen(dot + 1);
    for (const char *e = exts; *e;) {
        const char *comma = strchr(e, ',');
        size_t n = comma ? (size_t)(comma - e) : strlen(e);
        if (n && *e == '.')
            e++, n--;
        if (n == el && !strncasecmp(e, dot + 1, n))
            return 1;
        e += n;
        if (*e == ',')
            e++;
    }
    return 0;
}

typedef struct dir_chain {
    dev_t dev;
    ino_t ino;
    const struct dir_chain *up;
} dir_chain;

static void walk(walker *w, const char *dir, const dir_chain *up)
{
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return;
    if (sb.st_dev == w->skip_dev && sb.st_ino == w->skip_ino)
        return;
    for (const dir_chain *c = up; c; c = c->up)
        if (c->dev == sb.st_dev && c->ino == sb.st_ino)
            return; /* a symbolic link loop */
    dir_chain me = {sb.st_dev, sb.st_ino, up};
    DIR *d = opendir(dir);
    if (!d) {
        cli_error("tokenize: cannot read folder %s: %s", dir, strerror(errno));
        return;
    }
    size_t dl = strlen(dir);
    int slash = dl > 0 && dir[dl - 1] == '/';
    struct dirent *e;
    while (!w->oom && (e = readdir(d))) {
        if (e->d_name[0] == '.') /* ., .., hidden files, our temporary files */
            continue;
        size_t n = dl + strlen(e->d_name) + 2;
        char *p = malloc(n);
        if (!p) {
            w->oom = 1;
            break;
        }
        snprintf(p, n, "%s%s%s", dir, slash ? "" : "/", e->d_name);
        int is_dir = 0, is_file = 0;
        if (e->d_type == DT_DIR) {
            is_dir = 1;
        } else if (e->d_type == DT_REG) {
            is_file = 1;
        } else if (stat(p, &sb) == 0) { /* links and unknown types */
            is_dir = S_ISDIR(sb.st_mode);
            is_file = S_ISREG(sb.st_mode);
        }
        if (is_dir)
            walk(w, p, &me);
        else if (is_file && ext_ok(w->exts, e->d_name) && !strvec_add(w->out, p))
            w->oom = 1;
        free(p);
    }
    closedir(d);
}

/* A path given by the user: a folder is searched, anything else is an input
 * (a missing file is then reported as unreadable, like any other). */
static void add_arg(walker *w, const char *p)
{
    struct stat sb;
    if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
        walk(w, p, NULL);
    else if (!strvec_add(w->out, p))
        w->oom = 1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int collect(walker *w, char **args, int nargs, const char *list)
{
    for (int i = 0; i < nargs && !w->oom; i++) {
        struct stat sb;
        if (stat(args[i], &sb) != 0 && strpbrk(args[i], "*?[")) {
            glob_t g;
            int r = glob(args[i], 0, NULL, &g);
            if (r == GLOB_NOMATCH)
                cli_error("tokenize: warning: '%s' matches nothing", args[i]);
            else if (r != 0)
                cli_error("tokenize: warning: cannot expand '%s'", args[i]);
            else
                for (size_t k = 0; k < g.gl_pathc; k++)
                    add_arg(w, g.gl_pathv[k]);
            if (r == 0 || r == GLOB_NOMATCH)
                globfree(&g);
            continue;
        }
        add_arg(w, args[i]);
    }
    if (list && !w->oom) {
        FILE *f = strcmp(list, "-") ? fopen(list, "r") : stdin;
        if (!f) {
            cli_error("tokenize: cannot open the list %s: %s", list, strerror(errno));
            return 0;
        }
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while (!w->oom && (n = getline(&line, &cap, f)) >= 0) {
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = 0;
            if (n > 0)
                add_arg(w, line);
        }
        int bad = ferror(f);
        free(line);
        if (f != stdin)
            fclose(f);
        if (bad) {
            cli_error("tokenize: reading the list %s failed", list);
            return 0;
        }
    }
    if (w->oom) {
        cli_error("tokenize: out of memory collecting inputs");
        return 0;
    }
    strvec *s = w->out;
    if (s->n)
        qsort(s->v, s->n, sizeof *s->v, cmp_str);
    size_t k = 0; /* drop duplicates */
    for (size_t i = 0; i < s->n; i++) {
        if (k && !strcmp(s->v[k - 1], s->v[i]))
            free(s->v[i]);
        else
            s->v[k++] = s->v[i];
    }
    s->n = k;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Settings and file names                                                   */

typedef struct {
    const char *outdir;
    int N, L, g, bits; /* bits: packed-bit format, else group indices */
    tokf_container container;
    int itemsize, values; /* per value; values per token */
    int ty, tx, gh, gw, T;
    size_t row_bytes;
    size_t shard_size;
    long long part_k, part_n;
    char fp[65];
    char settings_json[1024]; /* shared by the index headers and the manifest */
} settings;

static char *shard_path(const settings *s, size_t j, int index)
{
    size_t n = strlen(s->outdir) + 64;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/shard-%06zu.%s", s->outdir, j,
                 index ? "jsonl" : s->container == TOKF_NPY ? "npy" : "safetensors");
    return p;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* Writes a + b to `path` under a temporary name, synced, then renamed. */
static int write_atomic(const char *path, const void *a, size_t na, const void *b, size_t nb)
{
    char *tmp = cli_temp_name(path);
    if (!tmp) {
        cli_error("tokenize: out of memory");
        return 0;
    }
    cli_cleanup_on_signal(tmp);
    FILE *f = fopen(tmp, "wb");
    int ok = f != NULL;
    if (ok) {
        ok = (!na || fwrite(a, 1, na, f) == na) && (!nb || fwrite(b, 1, nb, f) == nb);
        ok &= fflush(f) == 0;
        ok &= fsync(fileno(f)) == 0;
        ok &= fclose(f) == 0;
    }
    int e = errno;
    ok = ok && rename(tmp, path) == 0;
    if (!ok) {
        if (errno)
            e = errno;
        cli_error("tokenize: writing %s failed: %s", path, strerror(e));
        unlink(tmp);
    }
    cli_cleanup_on_signal(NULL);
    free(tmp);
    return ok;
}

/* The exact file header a shard of `rows` rows has. */
static char *data_header(const settings *s, size_t j, int64_t rows, size_t *len)
{
    char shard[32], L[16], g[16], N[16], ty[16], tx[16], gh[16], gw[16], T[16];
    snprintf(shard, sizeof shard, "%zu", j);
    snprintf(L, sizeof L, "%d", s->L);
    snprintf(g, sizeof g, "%d", s->bits ? 0 : s->g);
    snprintf(N, sizeof N, "%d", s->N);
    snprintf(ty, sizeof ty, "%d", s->ty);
    snprintf(tx, sizeof tx, "%d", s->tx);
    snprintf(gh, sizeof gh, "%d", s->gh);
    snprintf(gw, sizeof gw, "%d", s->gw);
    snprintf(T, sizeof T, "%d", s->T);
    const char *meta[] = {
        "bsqcodec",         "tokens", /* what the file is */
        "tokens",           s->bits ? "bits" : "groups",
        "fingerprint",      s->fp,
        "L",                L,
        "size",             N,
        "tiles_y",          ty,
        "tiles_x",          tx,
        "grid_h",           gh,
        "grid_w",           gw,
        "tokens_per_image", T,
        "shard",            shard,
        "resize",           BSQ_PREP_DESCRIPTION,
        "group_bits",       g, /* last: group indices only */
    };
    return tokf_header(s->container, s->itemsize, rows, s->T, s->values, meta,
                       sizeof meta / sizeof meta[0] / 2 - (s->bits ? 1 : 0), len);
}

/* The first line of a shard's index, without its "rows" and "skipped". */
static void index_header_prefix(tokf_buf *b, const settings *s, size_t j, size_t first,
                                size_t inputs, const char *data_name)
{
    tokf_buf_printf(b, "{\"shard\": %zu, \"file\": ", j);
    tokf_buf_json_string(b, data_name);
    tokf_buf_printf(b, ", \"first_input\": %zu, \"inputs\": %zu, %s, \"rows\": ", first, inputs,
                    s->settings_json);
}

/* ------------------------------------------------------------------------ */
/* Shards                                                                    */

typedef struct {
    size_t j, first, count; /* global shard number, its inputs */
    int done;               /* found complete on disk */
    int64_t rows, skipped;
} shard;

/* Manifest material gathered shard by shard, in order. */
typedef struct {
    tokf_buf shards;   /* JSON objects, comma-separated */
    tokf_buf skipped;  /* JSON objects, comma-separated */
    int64_t images, skips;
} summary;

static void note_shard(summary *m, const settings *s, const shard *sh)
{
    char *data = shard_path(s, sh->j, 0), *idx = shard_path(s, sh->j, 1);
    tokf_buf_printf(&m->shards, "%s\n    {\"shard\": %zu, \"file\": ", m->shards.len ? "," : "",
                    sh->j);
    tokf_buf_json_string(&m->shards, data ? base_name(data) : "");
    tokf_buf_puts(&m->shards, ", \"index\": ");
    tokf_buf_json_string(&m->shards, idx ? base_name(idx) : "");
    tokf_buf_printf(&m->shards,
                    ", \"first_input\": %zu, \"inputs\": %zu, \"rows\": %lld, \"skipped\": %lld}",
                    sh->first, sh->count, (long long)sh->rows, (long long)sh->skipped);
    m->images += sh->rows;
    m->skips += sh->skipped;
    free(data);
    free(idx);
}

/* A skipped input: `path_json` and `err_json` are JSON strings already. */
static void note_skip(summary *m, const char *path_json, size_t plen, const char *err_json,
                      size_t elen)
{
    tokf_buf_puts(&m->skipped, m->skipped.len ? ",\n    {\"path\": " : "\n    {\"path\": ");
    tokf_buf_put(&m->skipped, path_json, plen);
    tokf_buf_puts(&m->skipped, ", \"error\": ");
    tokf_buf_put(&m->skipped, err_json, elen);
    tokf_buf_put(&m->skipped, "}", 1);
}

static char *read_file(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct stat sb;
    char *buf = NULL;
    if (fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size <= max &&
        (buf = malloc((size_t)sb.st_size + 1)) &&
        fread(buf, 1, (size_t)sb.st_size, f) == (size_t)sb.st_size) {
        buf[sb.st_size] = 0;
        *len = (size_t)sb.st_size;
    } else {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

/* Whether shard `sh` is complete on disk and exactly what this run would
 * write: its index names the same inputs with the same settings, and its
 * data file has the header and size that the index's row count implies.
 * On success its skipped inputs are noted for the manifest. */
static int shard_complete(const settings *s, shard *sh, char **inputs, summary *m)
{
    int ok = 0;
    char *data = shard_path(s, sh->j, 0), *idxp = shard_path(s, sh->j, 1), *text = NULL,
         *hdr = NULL, *got = NULL;
    tokf_buf want = {0}, pj = {0};
    size_t tlen = 0, hlen = 0;
    if (!data || !idxp || !(text = read_file(idxp, (size_t)1 << 30, &tlen)) || !tlen ||
        text[tlen - 1] != '\n')
        goto out;
    index_header_prefix(&want, s, sh->j, sh->first, sh->count, base_name(data));
    if (want.oom || strncmp(text, want.p, want.len))
        goto out;
    long long rows = -1, skipped = -1;
    char *line = text + want.len, *nl = strchr(line, '\n');
    int used = 0;
    if (sscanf(line, "%lld, \"skipped\": %lld}%n", &rows, &skipped, &used) != 2 ||
        line + used != nl || rows < 0 || skipped < 0 || (size_t)(rows + skipped) != sh->count)
        goto out;
    /* every input, in order: {"path": P, "row": R, ...} or "row": null */
    long long next_row = 0, seen_skips = 0;
    size_t mark = m->skipped.len;
    for (size_t i = 0; i < sh->count; i++) {
        line = nl + 1;
        if (line >= text + tlen || !(nl = strchr(line, '\n')))
            goto undo;
        pj.len = 0;
        tokf_buf_puts(&pj, "{\"path\": ");
        tokf_buf_json_string(&pj, inputs[sh->first + i]);
        tokf_buf_puts(&pj, ", \"row\": ");
        if (pj.oom || strncmp(line, pj.p, pj.len))
            goto undo;
        char *rest = line + pj.len;
        static const char null_err[] = "null, \"error\": ";
        if (!strncmp(rest, null_err, sizeof null_err - 1)) {
            char *e = rest + sizeof null_err - 1;
            if (nl - e < 3 || *e != '"' || nl[-1] != '}' || nl[-2] != '"')
                goto undo;
            note_skip(m, pj.p + 9, pj.len - 18, e, (size_t)(nl - 1 - e));
            seen_skips++;
        } else {
            long long r;
            int w, h;
            used = 0;
            if (sscanf(rest, "%lld, \"width\": %d, \"height\": %d}%n", &r, &w, &h, &used) != 3 ||
                rest + used != nl || r != next_row)
                goto undo;
            next_row++;
        }
    }
    if (nl + 1 != text + tlen || next_row != rows || seen_skips != skipped)
        goto undo;
    /* the data file: the same header, and exactly the bytes it announces */
    if (!(hdr = data_header(s, sh->j, rows, &hlen)) || !(got = malloc(hlen)))
        goto undo;
    FILE *f = fopen(data, "rb");
    struct stat sb;
    int good = f && fstat(fileno(f), &sb) == 0 &&
               (uint64_t)sb.st_size == hlen + (uint64_t)rows * s->row_bytes &&
               fread(got, 1, hlen, f) == hlen && !memcmp(got, hdr, hlen);
    if (f)
        fclose(f);
    if (!good)
        goto undo;
    sh->rows = rows;
    sh->skipped = skipped;
    ok = 1;
    goto out;
undo:
    m->skipped.len = mark; /* forget the skips noted from a stale index */
    if (m->skipped.p)
        m->skipped.p[mark] = 0;
out:
    tokf_buf_free(&want);
    tokf_buf_free(&pj);
    free(text);
    free(hdr);
    free(got);
    free(data);
    free(idxp);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* Decoder pool                                                              */

typedef struct {
    size_t seq;  /* the job it holds */
    int ready;   /* done, not yet consumed */
    int ok;
    int width, height;
    bsq_error err;
    uint8_t *rgb; /* N x N RGB24 */
} slot;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t room, ready;
    char **paths;  /* one per job, in order */
    size_t njobs, next, consumed, q;
    slot *slots;
    int N, stop;
} pool;

static void *decoder_main(void *arg)
{
    pool *p = arg;
    bsq_prep *prep = bsq_prep_create();
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->stop && p->next < p->njobs && p->next >= p->consumed + p->q)
            pthread_cond_wait(&p->room, &p->mu);
        if (p->stop || p->next >= p->njobs) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        size_t s = p->next++;
        pthread_mutex_unlock(&p->mu);
        slot *sl = &p->slots[s % p->q]; /* free: job s - q was consumed */
        sl->width = sl->height = 0;
        if (!prep)
            sl->ok = bsq_fail(&sl->err, BSQ_ERR_NOMEM, "out of memory") == BSQ_OK;
        else
            sl->ok = bsq_prep_image(prep, p->paths[s], p->N, sl->rgb, &sl->width, &sl->height,
                                    &sl->err) == BSQ_OK;
        pthread_mutex_lock(&p->mu);
        sl->seq = s;
        sl->ready = 1;
        pthread_cond_broadcast(&p->ready);
        pthread_mutex_unlock(&p->mu);
    }
    bsq_prep_destroy(prep);
    return NULL;
}

static slot *pool_take(pool *p, size_t s)
{
    slot *sl = &p->slots[s % p->q];
    pthread_mutex_lock(&p->mu);
    while (!(sl->ready && sl->seq == s))
        pthread_cond_wait(&p->ready, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return sl;
}

static void pool_release(pool *p, slot *sl)
{
    pthread_mutex_lock(&p->mu);
    sl->ready = 0;
    p->consumed++;
    pthread_cond_broadcast(&p->room);
    pthread_mutex_unlock(&p->mu);
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                  */

typedef struct {
    bsq_context *ctx;
    const settings *s;
    float *planar;     /* batch images, [b][3][N][N] */
    int batch, nb;     /* capacity, images held */
    int64_t first_row; /* shard row of the first image held */
    uint8_t *out;      /* the shard's rows */
    uint32_t *groups;  /* scratch */
    uint8_t *bits;
} encoder;

static void put_le(uint8_t *p, uint32_t v, int size)
{
    for (int i = 0; i < size; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static int flush_batch(encoder *e)
{
    if (!e->nb)
        return 1;
    const settings *s = e->s;
    bsq_tokens *tok = NULL;
    bsq_error err;
    if (bsq_encode(e->ctx, e->planar, e->nb, 1, s->N, s->N, &tok, &err) != BSQ_OK) {
        cli_error("tokenize: encoding: %s", err.message);
        return 0;
    }
    const bsq_token_layout *l = bsq_tokens_layout(tok);
    const size_t count = (size_t)e->nb * (size_t)s->T;
    if (l->count != count || l->L != s->L) {
        cli_error("tokenize: the engine returned %zu tokens for %d images, not %zu", l->count,
                  e->nb, count);
        bsq_tokens_free(tok);
        return 0;
    }
    uint8_t *dst = e->out + (size_t)e->first_row * s->row_bytes;
    if (s->bits) {
        bsq_tokens_get_bits(tok, e->bits);
        memset(dst, 0, count * (size_t)s->values);
        for (size_t i = 0; i < count; i++)
            for (int d = 0; d < s->L; d++)
                if (e->bits[i * (size_t)s->L + (size_t)d])
                    dst[i * (size_t)s->values + (size_t)(d / 8)] |= (uint8_t)(0x80 >> (d % 8));
    } else {
        if (bsq_tokens_get_groups(tok, s->g, e->groups, &err) != BSQ_OK) {
            cli_error("tokenize: %s", err.message);
            bsq_tokens_free(tok);
            return 0;
        }
        for (size_t i = 0; i < count * (size_t)s->values; i++)
            put_le(dst + i * (size_t)s->itemsize, e->groups[i], s->itemsize);
    }
    bsq_tokens_free(tok);
    e->first_row += e->nb;
    e->nb = 0;
    return 1;
}

/* ------------------------------------------------------------------------ */

static int parse_part(const char *s, long long *k, long long *n)
{
    char *end;
    errno = 0;
    long long a = strtoll(s, &end, 10);
    if (end == s || *end != '/' || errno)
        return 0;
    const char *t = end + 1;
    long long b = strtoll(t, &end, 10);
    if (end == t || *end || errno || b < 1 || b > 1000000 || a < 0 || a >= b)
        return 0;
    *k = a;
    *n = b;
    return 1;
}

static void progress(int enabled, double start, int64_t done, int64_t total, double *last, int end)
{
    if (!enabled)
        return;
    double now = cli_now();
    if (!end && now - *last < 0.25)
        return;
    *last = now;
    double rate = now > start ? done / (now - start) : 0;
    fprintf(stderr, "\rimage %lld/%lld  %.1f images/s", (long long)done, (long long)total, rate);
    if (rate > 0 && done < total)
        fprintf(stderr, "  ETA %.0f s", (double)(total - done) / rate);
    fputs("   ", stderr);
    if (end)
        fputc('\n', stderr);
    fflush(stderr);
}

int cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"list", required_argument, NULL, 'l'},
        {"model", required_argument, NULL, 'm'},
        {"size", required_argument, NULL, 's'},
        {"format", required_argument, NULL, 'f'},
        {"group-bits", required_argument, NULL, 'g'},
        {"container", required_argument, NULL, 'C'},
        {"shard-size", required_argument, NULL, 'S'},
        {"shard", required_argument, NULL, 'P'},
        {"ext", required_argument, NULL, 'E'},
        {"decode-threads", required_argument, NULL, 'j'},
        {"batch", required_argument, NULL, 'b'},
        {"threads", required_argument, NULL, 't'},
        {"device", required_argument, NULL, 'd'},
        {"precision", required_argument, NULL, CLI_OPT_PRECISION},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *outdir = NULL, *list = NULL, *model_path = NULL, *device = NULL, *exts = NULL;
    bsq_precision precision = BSQ_PRECISION_AUTO;
    long long size = 0, gbits = 0, shard_size = 1024, dthreads = 0, batch = 16, threads = 0;
    long long part_k = 0, part_n = 1;
    int bits = 0, quiet = 0, c;
    tokf_container container = TOKF_NPY;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:l:m:s:f:g:j:b:t:d:qh", opts, NULL)) != -1) {
        long long v = 0;
        switch (c) {
        case 'o': outdir = optarg; break;
        case 'l': list = optarg; break;
        case 'm': model_path = optarg; break;
        case 'd': device = optarg; break;
        case CLI_OPT_PRECISION:
            if (!cli_parse_precision(optarg, &precision)) {
                cli_error("tokenize: --precision takes fp32 or bf16");
                return EXIT_USAGE;
            }
            break;
        case 'E': exts = optarg; break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'f':
            if (!strcmp(optarg, "groups")) bits = 0;
            else if (!strcmp(optarg, "bits")) bits = 1;
            else {
                cli_error("tokenize: --format is groups or bits, not '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'C':
            if (!strcmp(optarg, "npy")) container = TOKF_NPY;
            else if (!strcmp(optarg, "safetensors")) container = TOKF_SAFETENSORS;
            else {
                cli_error("tokenize: --container is npy or safetensors, not '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'P':
            if (!parse_part(optarg, &part_k, &part_n)) {
                cli_error("tokenize: --shard wants K/N with 0 <= K < N, not '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 's': case 'g': case 'S': case 'j': case 'b': case 't':
            if (!cli_parse_count(optarg, 1 << 20, &v) || (c != 't' && c != 'j' && v < 1)) {
                cli_error("tokenize: bad number '%s'", optarg);
                return EXIT_USAGE;
            }
            if (c == 's') size = v;
            else if (c == 'g') gbits = v;
            else if (c == 'S') shard_size = v;
            else if (c == 'j') dthreads = v;
            else if (c == 'b') batch = v > 4096 ? 4096 : v;
            else threads = v > 1024 ? 1024 : v;
            break;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (!outdir || (optind == argc && !list)) {
        cli_error("tokenize: need inputs (paths, folders, patterns or --list) and -o OUTDIR");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (size > 8192) {
        cli_error("tokenize: --size %lld: at most 8192", size);
        return EXIT_USAGE;
    }

    int rc = EXIT_RUNTIME;
    bsq_error err;
    settings S;
    memset(&S, 0, sizeof S);
    strvec inputs = {0};
    shard *shards = NULL;
    char **jobs = NULL;
    pool P;
    memset(&P, 0, sizeof P);
    pthread_t *tids = NULL;
    int nthreads = 0, pool_init = 0;
    encoder E;
    memset(&E, 0, sizeof E);
    summary M;
    memset(&M, 0, sizeof M);
    tokf_buf idx = {0};

    bsq_model *model = cli_open_model_for(model_path, "tokenize", BSQ_DEFAULT_IMAGE);
    if (!model)
        return EXIT_RUNTIME;
    const bsq_config *cfg = bsq_model_config(model);
    if (cfg->num_frames > 1)
        cli_error("tokenize: warning: a %d-frame video model; each image is one frame",
                  cfg->num_frames);
    S.outdir = outdir;
    S.L = cfg->L;
    S.bits = bits;
    S.container = container;
    if (!size && cfg->image_height != cfg->image_width) {
        cli_error("tokenize: the model's tiles are %dx%d; give the square size with --size",
                  cfg->image_width, cfg->image_height);
        rc = EXIT_USAGE;
        goto done;
    }
    S.N = size ? (int)size : cfg->image_height;
    S.g = gbits ? (int)gbits : cfg->group_size;
    if (bits) {
        S.itemsize = 1;
        S.values = (S.L + 7) / 8;
    } else {
        if (S.g < 1 || S.g > 32 || S.L % S.g) {
            cli_error("tokenize: --group-bits %d must divide L = %d and be at most 32%s", S.g,
                      S.L, gbits ? "" : " (the model's group size does not; give --group-bits)");
            rc = EXIT_USAGE;
            goto done;
        }
        S.itemsize = S.g <= 16 ? 2 : 4;
        S.values = S.L / S.g;
    }
    S.ty = bsq_tile_count(S.N, cfg->image_height);
    S.tx = bsq_tile_count(S.N, cfg->image_width);
    S.gh = cfg->image_height / cfg->patch_size;
    S.gw = cfg->image_width / cfg->patch_size;
    S.T = S.ty * S.tx * S.gh * S.gw;
    S.row_bytes = (size_t)S.T * (size_t)S.values * (size_t)S.itemsize;
    S.shard_size = (size_t)shard_size;
    S.part_k = part_k;
    S.part_n = part_n;
    uint8_t fp[32];
    if (bsq_model_fingerprint(model, fp, &err) != BSQ_OK) {
        cli_error("tokenize: %s", err.message);
        goto done;
    }
    for (int i = 0; i < 32; i++)
        snprintf(S.fp + 2 * i, 3, "%02x", fp[i]);
    {
        tokf_buf b = {0};
        tokf_buf_printf(&b, "\"fingerprint\": \"%s\", \"L\": %d, \"tokens\": \"%s\", ", S.fp, S.L,
                        bits ? "bits" : "groups");
        if (bits)
            tokf_buf_printf(&b, "\"group_bits\": null, \"vocabulary\": null, ");
        else
            tokf_buf_printf(&b, "\"group_bits\": %d, \"vocabulary\": %llu, ", S.g,
                            1ULL << S.g);
        tokf_buf_printf(&b,
                        "\"dtype\": \"%s\", \"container\": \"%s\", \"size\": %d, "
                        "\"grid\": {\"tiles_y\": %d, \"tiles_x\": %d, \"grid_h\": %d, "
                        "\"grid_w\": %d}, \"tokens_per_image\": %d, \"values_per_token\": %d, "
                        "\"resize\": \"%s\"",
                        tokf_dtype_name('u', S.itemsize), container == TOKF_NPY ? "npy" : "safetensors",
                        S.N, S.ty, S.tx, S.gh, S.gw, S.T, S.values, BSQ_PREP_DESCRIPTION);
        if (b.oom || b.len >= sizeof S.settings_json) {
            tokf_buf_free(&b);
            cli_error("tokenize: out of memory");
            goto done;
        }
        memcpy(S.settings_json, b.p, b.len + 1);
        tokf_buf_free(&b);
    }

    /* the output folder first, so that searching skips it */
    struct stat osb;
    if (!tokf_mkdirs(outdir) || stat(outdir, &osb) != 0) {
        cli_error("tokenize: cannot create the folder %s: %s", outdir, strerror(errno));
        goto done;
    }
    walker w = {&inputs, exts, osb.st_dev, osb.st_ino, 0};
    if (!collect(&w, argv + optind, argc - optind, list))
        goto done;
    if (!inputs.n) {
        cli_error("tokenize: no input files");
        goto done;
    }

    /* this machine's shards, and which of them are already done */
    const size_t nshards = (inputs.n + S.shard_size - 1) / S.shard_size;
    size_t mine = 0, todo = 0, todo_inputs = 0;
    shards = calloc(nshards / (size_t)part_n + 1, sizeof *shards);
    if (!shards) {
        cli_error("tokenize: out of memory");
        goto done;
    }
    for (size_t j = (size_t)part_k; j < nshards; j += (size_t)part_n) {
        shard *sh = &shards[mine++];
        sh->j = j;
        sh->first = j * S.shard_size;
        sh->count = inputs.n - sh->first < S.shard_size ? inputs.n - sh->first : S.shard_size;
        /* an index that does not match is not trusted; the shard is redone */
        summary probe;
        memset(&probe, 0, sizeof probe);
        sh->done = shard_complete(&S, sh, inputs.v, &probe);
        tokf_buf_free(&probe.skipped);
        if (!sh->done) {
            todo++;
            todo_inputs += sh->count;
        }
    }
    if (!quiet && mine > todo)
        fprintf(stderr, "tokenize: %zu of %zu shards already complete, skipping them\n",
                mine - todo, mine);

    /* the decoder pool: jobs are the inputs of the shards to do, in order */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    nthreads = dthreads ? (int)(dthreads > 256 ? 256 : dthreads) : (int)(ncpu > 16 ? 16 : ncpu);
    jobs = malloc((todo_inputs + 1) * sizeof *jobs);
    if (!jobs) {
        cli_error("tokenize: out of memory");
        goto done;
    }
    for (size_t i = 0, n = 0; i < mine; i++)
        for (size_t k = 0; !shards[i].done && k < shards[i].count; k++)
            jobs[n++] = inputs.v[shards[i].first + k];
    const size_t img_bytes = (size_t)S.N * (size_t)S.N * 3;
    P.paths = jobs;
    P.njobs = todo_inputs;
    P.N = S.N;
    P.q = (size_t)batch + 2 * (size_t)nthreads;
    P.slots = calloc(P.q, sizeof *P.slots);
    E.batch = (int)batch;
    E.s = &S;
    E.planar = malloc((size_t)batch * img_bytes * sizeof(float));
    E.out = malloc(S.shard_size * S.row_bytes + 1);
    E.groups = malloc((size_t)batch * (size_t)S.T * (size_t)S.values * sizeof(uint32_t));
    E.bits = malloc((size_t)batch * (size_t)S.T * (size_t)S.L);
    int mem_ok = P.slots && E.planar && E.out && E.groups && E.bits;
    for (size_t i = 0; mem_ok && i < P.q; i++)
        mem_ok = (P.slots[i].rgb = malloc(img_bytes)) != NULL;
    if (!mem_ok) {
        cli_error("tokenize: out of memory (lower --batch or --decode-threads)");
        goto done;
    }
    bsq_context_options copt = {.threads = (int)threads, .device = device,
                                .precision = precision};
    if (todo && bsq_context_create(model, &copt, &E.ctx, &err) != BSQ_OK) {
        cli_error("tokenize: %s", err.message);
        goto done;
    }
    if (todo) {
        pthread_mutex_init(&P.mu, NULL);
        pthread_cond_init(&P.room, NULL);
        pthread_cond_init(&P.ready, NULL);
        pool_init = 1;
        if (!(tids = calloc((size_t)nthreads, sizeof *tids))) {
            cli_error("tokenize: out of memory");
            goto done;
        }
        for (int i = 0; i < nthreads; i++)
            if (pthread_create(&tids[i], NULL, decoder_main, &P) != 0) {
                cli_error("tokenize: cannot start decoder threads");
                nthreads = i;
                goto done;
            }
    }

    const double t0 = cli_now();
    double last = 0;
    const int show = !quiet && isatty(STDERR_FILENO);
    size_t seq = 0, written = 0;
    int64_t run_images = 0, run_skips = 0;
    for (size_t i = 0; i < mine; i++) {
        shard *sh = &shards[i];
        if (sh->done) {
            shard_complete(&S, sh, inputs.v, &M); /* notes its skipped inputs */
            note_shard(&M, &S, sh);
            continue;
        }
        char *data = shard_path(&S, sh->j, 0), *idxp = shard_path(&S, sh->j, 1);
        if (!data || !idxp) {
            free(data);
            free(idxp);
            cli_error("tokenize: out of memory");
            goto done;
        }
        idx.len = 0;
        E.first_row = 0;
        E.nb = 0;
        int64_t rows = 0, skipped = 0;
        tokf_buf lines = {0};
        int ok = 1;
        for (size_t k = 0; k < sh->count && ok; k++, seq++) {
            slot *sl = pool_take(&P, seq);
            const char *path = inputs.v[sh->first + k];
            size_t mark = lines.len;
            tokf_buf_puts(&lines, "{\"path\": ");
            tokf_buf_json_string(&lines, path);
            size_t pj_end = lines.len;
            if (sl->ok) {
                tokf_buf_printf(&lines, ", \"row\": %lld, \"width\": %d, \"height\": %d}\n",
                                (long long)rows, sl->width, sl->height);
                bsq_rgb8_to_planar(sl->rgb, S.N, S.N, (size_t)S.N * 3,
                                   E.planar + (size_t)E.nb * img_bytes);
                E.nb++;
                rows++;
            } else {
                if (show)
                    fputc('\n', stderr);
                cli_error("tokenize: skipping %s", sl->err.message);
                tokf_buf_puts(&lines, ", \"row\": null, \"error\": ");
                size_t e0 = lines.len;
                tokf_buf_json_string(&lines, sl->err.message);
                size_t e1 = lines.len;
                tokf_buf_puts(&lines, "}\n");
                if (!lines.oom)
                    note_skip(&M, lines.p + mark + 9, pj_end - mark - 9, lines.p + e0, e1 - e0);
                skipped++;
            }
            pool_release(&P, sl);
            if (E.nb == E.batch)
                ok = flush_batch(&E);
            progress(show, t0, run_images + rows + run_skips + skipped, (int64_t)todo_inputs,
                     &last, 0);
        }
        ok = ok && flush_batch(&E);
        size_t hlen = 0;
        char *hdr = ok ? data_header(&S, sh->j, rows, &hlen) : NULL;
        if (ok) {
            index_header_prefix(&idx, &S, sh->j, sh->first, sh->count, base_name(data));
            tokf_buf_printf(&idx, "%lld, \"skipped\": %lld}\n", (long long)rows,
                            (long long)skipped);
            tokf_buf_put(&idx, lines.p, lines.len);
            if (!hdr || idx.oom || lines.oom || M.skipped.oom) {
                cli_error("tokenize: out of memory");
                ok = 0;
            }
        }
        /* data first, then the index that marks the shard complete */
        ok = ok && write_atomic(data, hdr, hlen, E.out, (size_t)rows * S.row_bytes) &&
             write_atomic(idxp, idx.p, idx.len, NULL, 0);
        free(hdr);
        free(data);
        free(idxp);
        tokf_buf_free(&lines);
        if (!ok)
            goto done;
        sh->rows = rows;
        sh->skipped = skipped;
        note_shard(&M, &S, sh);
        run_images += rows;
        run_skips += skipped;
        written++;
    }
    progress(show && todo_inputs, t0, run_images + run_skips, (int64_t)todo_inputs, &last, 1);
    const double secs = cli_now() - t0;

    /* the manifest */
    {
        tokf_buf mf = {0};
        char name[96];
        if (part_n > 1)
            snprintf(name, sizeof name, "manifest-%lld-of-%lld.json", part_k, part_n);
        else
            snprintf(name, sizeof name, "manifest.json");
        tokf_buf_printf(&mf, "{\n  \"bsqcodec\": \"tokens\",\n  \"version\": 1,\n  %s,\n",
                        S.settings_json);
        tokf_buf_printf(&mf,
                        "  \"shard_size\": %zu,\n  \"shard_assignment\": \"global shard j "
                        "holds inputs [j*shard_size, (j+1)*shard_size) of the sorted input "
                        "list; machine K of N takes the shards with j mod N = K\",\n"
                        "  \"machine\": %lld,\n  \"machines\": %lld,\n  \"inputs\": %zu,\n"
                        "  \"total_shards\": %zu,\n",
                        S.shard_size, part_k, part_n, inputs.n, nshards);
        size_t my_inputs = 0;
        for (size_t i = 0; i < mine; i++)
            my_inputs += shards[i].count;
        tokf_buf_printf(&mf,
                        "  \"shard_inputs\": %zu,\n  \"images\": %lld,\n  \"skipped\": %lld,\n"
                        "  \"tokens\": %lld,\n  \"shards\": [",
                        my_inputs, (long long)M.images, (long long)M.skips,
                        (long long)M.images * S.T);
        if (M.shards.len)
            tokf_buf_put(&mf, M.shards.p, M.shards.len);
        tokf_buf_puts(&mf, mine ? "\n  ],\n  \"skipped_files\": [" : "],\n  \"skipped_files\": [");
        if (M.skipped.len)
            tokf_buf_put(&mf, M.skipped.p, M.skipped.len);
        tokf_buf_puts(&mf, M.skipped.len ? "\n  ]\n}\n" : "]\n}\n");
        size_t n = strlen(outdir) + sizeof name + 2;
        char *mp = malloc(n);
        int ok = !mf.oom && !M.shards.oom && !M.skipped.oom && mp;
        if (mp)
            snprintf(mp, n, "%s/%s", outdir, name);
        if (!ok)
            cli_error("tokenize: out of memory");
        ok = ok && write_atomic(mp, mf.p, mf.len, NULL, 0);
        free(mp);
        tokf_buf_free(&mf);
        if (!ok)
            goto done;
    }
    if (!quiet) {
        fprintf(stderr,
                "tokenize: %zu shard%s (%zu written, %zu already complete): %lld images, "
                "%lld skipped, %lld tokens\n",
                mine, mine == 1 ? "" : "s", written, mine - written, (long long)M.images,
                (long long)M.skips, (long long)M.images * S.T);
        if (written)
            fprintf(stderr,
                    "tokenize: this run: %lld images, %lld skipped in %.2f s, %.1f images/s "
                    "(%d decode threads, %d engine threads, batch %d)\n",
                    (long long)run_images, (long long)run_skips, secs,
                    secs > 0 ? run_images / secs : 0.0, nthreads,
                    threads ? (int)threads : (int)ncpu, E.batch);
    }
    rc = EXIT_OK;
done:
    if (pool_init) {
        pthread_mutex_lock(&P.mu);
        P.stop = 1;
        pthread_cond_broadcast(&P.room);
        pthread_mutex_unlock(&P.mu);
        for (int i = 0; i < nthreads && tids; i++)
            pthread_join(tids[i], NULL);
        pthread_mutex_destroy(&P.mu);
        pthread_cond_destroy(&P.room);
        pthread_cond_destroy(&P.ready);
    }
    free(tids);
    for (size_t i = 0; P.slots && i < P.q; i++)
        free(P.slots[i].rgb);
    free(P.slots);
    free(jobs);
    free(shards);
    bsq_context_destroy(E.ctx);
    free(E.planar);
    free(E.out);
    free(E.groups);
    free(E.bits);
    tokf_buf_free(&idx);
    tokf_buf_free(&M.shards);
    tokf_buf_free(&M.skipped);
    strvec_free(&inputs);
    bsq_model_close(model);
    return rc;
}
