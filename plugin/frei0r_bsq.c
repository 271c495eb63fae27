/* bsq.so: libbsq as a frei0r filter, for FFmpeg's `frei0r` video filter
 * (and any other frei0r host). See man/bsq-frei0r.7.
 *
 * Parameters, in the order FFmpeg's filter_params gives them (separated by
 * '|'):
 *   0 model   string  a model file; empty: the default video model
 *   1 mode    string  "roundtrip" (the default: frames come out as the codec
 *                     reconstructs them) or "tokens" (frames pass through,
 *                     their tokens go to the tokens file)
 *   2 tokens  string  a file to write every frame's tokens to (required in
 *                     tokens mode, optional in roundtrip mode)
 *   3 device  string  "auto" (the default), "cpu", "cuda", "cuda:N"
 *   4 threads double  CPU threads, a whole number; 0 (default): all CPUs
 *
 * The engine is set up at the first frame, when the host has set every
 * parameter, and again at the next frame after a parameter changes. frei0r
 * has no way to report an error from there, so a failure (no such model, a
 * bad parameter, an unwritable tokens file) prints one line on standard
 * error and ends the process with status 1 rather than let the host go on
 * with frames that are not what was asked for.
 *
 * Video models stream frame by frame with their key/value cache (a new
 * block starts every num_frames frames); image models take each frame on
 * its own. Any frame size: the library tiles frames that are not the
 * model's size. Pixels are RGBA8888; alpha passes through unchanged.
 *
 * The tokens file (little-endian throughout; man/bsq-frei0r.7):
 *   header, 96 bytes:
 *     0  char[8]  "BSQTOKS\0"
 *     8  u32      version (1)
 *     12 u32      header size in bytes (96; skip to there to read records)
 *     16 u32      width        20 u32 height        (pixels)
 *     24 u32      L (bits per token)
 *     28 u32      tiles_y      32 u32 tiles_x
 *     36 u32      grid_h       40 u32 grid_w        (tokens per tile)
 *     44 u32      num_frames (the model's block length; 1: image model)
 *     48 u8[32]   the model's fingerprint (bsq_model_fingerprint)
 *     80 u64      tokens per frame (tiles_y * tiles_x * grid_h * grid_w)
 *     88 u64      0 (reserved)
 *   then per frame a record:
 *     f64 the time the host gave (FFmpeg: milliseconds; NaN when unknown),
 *     u32 the frame's index in its block (0..num_frames-1), u32 0, then
 *     the tokens as u64 MSB-first indices, ordered tile row, tile column,
 *     grid row, grid column.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <frei0r.h>

#include "bsq.h"

#define TOKENS_MAGIC "BSQTOKS"
#define TOKENS_VERSION 1
#define TOKENS_HEADER 96
#define RECORD_HEADER 16

enum { P_MODEL, P_MODE, P_TOKENS, P_DEVICE, P_THREADS, P_COUNT };
#define N_STRINGS P_THREADS /* parameters 0..3 are strings */
/* What a parameter change sets up again at the next frame: everything
 * (model, mode, tokens file: the file starts afresh) or only the context and
 * its streams (device, threads: the tokens file goes on). */
enum { CHANGED_ALL = 1, CHANGED_ENGINE = 2 };

static const f0r_param_info_t param_info[P_COUNT] = {
    {"model", F0R_PARAM_STRING, "model file (.safetensors or an official checkpoint); "
                                "empty: the default video model"},
    {"mode", F0R_PARAM_STRING, "roundtrip (frames as the codec reconstructs them) or tokens "
                               "(frames unchanged, tokens written to the tokens file)"},
    {"tokens", F0R_PARAM_STRING, "file to write the tokens to (needed in tokens mode)"},
    {"device", F0R_PARAM_STRING, "auto, cpu, cuda or cuda:N"},
    {"threads", F0R_PARAM_DOUBLE, "CPU threads, a whole number; 0: all CPUs"},
};

typedef struct bsq_f0r {
    int width, height;
    char *str[N_STRINGS]; /* never NULL */
    double threads;
    int changed; /* CHANGED_* bits: parameters changed since the setup */
    int ready;   /* the engine is set up */
    /* the engine */
    int tokens_only;
    bsq_model *model;
    bsq_context *ctx;
    bsq_stream *enc, *dec;
    FILE *tok;
    int header_done;
    uint8_t fingerprint[32];
    uint8_t *rgb;  /* one frame, RGB24 */
    uint8_t *record;
    size_t record_size;
} bsq_f0r;

/* frei0r cannot report errors: say why and stop the host (see the top). */
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2), noreturn))
#endif
static void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bsq: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    exit(EXIT_FAILURE);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void teardown_engine(bsq_f0r *s)
{
    bsq_stream_destroy(s->enc);
    bsq_stream_destroy(s->dec);
    bsq_context_destroy(s->ctx);
    s->enc = s->dec = NULL;
    s->ctx = NULL;
}

static void teardown(bsq_f0r *s)
{
    if (s->tok && fclose(s->tok) != 0)
        fprintf(stderr, "bsq: writing the tokens file %s: %s\n", s->str[P_TOKENS],
                strerror(errno));
    s->tok = NULL;
    teardown_engine(s);
    bsq_model_close(s->model);
    free(s->rgb);
    free(s->record);
    s->model = NULL;
    s->rgb = s->record = NULL;
    s->header_done = 0;
    s->ready = 0;
}

/* A context and the streams for the model; exits with a message on failure. */
static void setup_engine(bsq_f0r *s)
{
    bsq_error err;
    const char *device = s->str[P_DEVICE];
    if (!(s->threads >= 0 && s->threads <= 4096) || s->threads != floor(s->threads))
        fatal("threads must be a whole number from 0 (all CPUs) to 4096, not %g", s->threads);
    bsq_context_options o = {.threads = (int)s->threads, .device = *device ? device : NULL};
    if (bsq_context_create(s->model, &o, &s->ctx, &err) != BSQ_OK)
        fatal("%s", err.message);
    if (bsq_stream_create(s->ctx, BSQ_STREAM_ENCODE, s->height, s->width, &s->enc, &err) != BSQ_OK ||
        (!s->tokens_only &&
         bsq_stream_create(s->ctx, BSQ_STREAM_DECODE, s->height, s->width, &s->dec, &err) != BSQ_OK))
        fatal("%s", err.message);
}

/* Opens the model, the engine and the tokens file from the current
 * parameters; exits with a message on failure. */
static void setup(bsq_f0r *s)
{
    bsq_error err;
    const char *mode = s->str[P_MODE], *path = s->str[P_TOKENS];
    if (!*mode || strcmp(mode, "roundtrip") == 0)
        s->tokens_only = 0;
    else if (strcmp(mode, "tokens") == 0)
        s->tokens_only = 1;
    else
        fatal("unknown mode \"%s\" (expected roundtrip or tokens)", mode);
    if (s->tokens_only && !*path)
        fatal("mode tokens needs a file to write them to: filter_params=MODEL|tokens|FILE");

    if (!*s->str[P_MODEL]) {
        if (bsq_model_open_default(BSQ_DEFAULT_VIDEO, &s->model, &err) != BSQ_OK)
            fatal("no model given and no default model: %s", err.message);
    } else if (bsq_model_open(s->str[P_MODEL], NULL, &s->model, &err) != BSQ_OK) {
        fatal("%s", err.message);
    }
    setup_engine(s);
    size_t px = (size_t)s->width * s->height;
    s->rgb = malloc(px * 3);
    if (!s->rgb)
        fatal("out of memory for a %dx%d frame", s->width, s->height);
    if (*path) {
        if (bsq_model_fingerprint(s->model, s->fingerprint, &err) != BSQ_OK)
            fatal("%s", err.message);
        if (!(s->tok = fopen(path, "wb")))
            fatal("cannot create the tokens file %s: %s", path, strerror(errno));
    }
    s->ready = 1;
    s->changed = 0;
}

static void write_or_die(bsq_f0r *s, const void *p, size_t n)
{
    if (fwrite(p, 1, n, s->tok) != n || fflush(s->tok) != 0)
        fatal("writing the tokens file %s: %s", s->str[P_TOKENS], strerror(errno));
}

static void write_tokens(bsq_f0r *s, double time, int position, const bsq_tokens *tok)
{
    const bsq_token_layout *l = bsq_tokens_layout(tok);
    if (!s->header_done) {
        const bsq_config *c = bsq_model_config(s->model);
        uint8_t h[TOKENS_HEADER] = {0};
        memcpy(h, TOKENS_MAGIC, 8); /* with its NUL */
        put_u32(h + 8, TOKENS_VERSION);
        put_u32(h + 12, TOKENS_HEADER);
        put_u32(h + 16, (uint32_t)l->width);
        put_u32(h + 20, (uint32_t)l->height);
        put_u32(h + 24, (uint32_t)l->L);
        put_u32(h + 28, (uint32_t)l->tiles_y);
        put_u32(h + 32, (uint32_t)l->tiles_x);
        put_u32(h + 36, (uint32_t)l->grid_h);
        put_u32(h + 40, (uint32_t)l->grid_w);
        put_u32(h + 44, (uint32_t)c->num_frames);
        memcpy(h + 48, s->fingerprint, 32);
        put_u64(h + 80, (uint64_t)l->count);
        write_or_die(s, h, sizeof h);
        s->record_size = RECORD_HEADER + l->count * 8;
        if (!(s->record = malloc(s->record_size)))
            fatal("out of memory");
        s->header_done = 1;
    }
    /* FFmpeg 5.1 passes AV_NOPTS_VALUE scaled to milliseconds, not the
     * frame's time: a time over 30 years before the start is no time (NaN) */
    if (!(time > -1e12))
        time = NAN;
    uint64_t tbits;
    memcpy(&tbits, &time, sizeof tbits);
    put_u64(s->record, tbits);
    put_u32(s->record + 8, (uint32_t)position);
    put_u32(s->record + 12, 0);
    const uint64_t *idx = bsq_tokens_indices(tok);
    for (size_t i = 0; i < l->count; i++)
        put_u64(s->record + RECORD_HEADER + 8 * i, idx[i]);
    write_or_die(s, s->record, s->record_size);
}

/* ------------------------------------------------------------------------ */
/* frei0r entry points                                                       */

int f0r_init(void) { return 1; }

void f0r_deinit(void) {}

void f0r_get_plugin_info(f0r_plugin_info_t *info)
{
    info->name = "bsq";
    info->author = "bsqcodec";
    info->plugin_type = F0R_PLUGIN_TYPE_FILTER;
    info->color_model = F0R_COLOR_MODEL_RGBA8888;
    info->frei0r_version = FREI0R_MAJOR_VERSION;
    info->major_version = BSQ_VERSION_MAJOR;
    info->minor_version = BSQ_VERSION_MINOR;
    info->num_params = P_COUNT;
    info->explanation = "BSQ-ViT tokenizer: frames as the codec reconstructs them, or their tokens "
                        "written to a file";
}

void f0r_get_param_info(f0r_param_info_t *info, int index)
{
    if (index >= 0 && index < P_COUNT)
        *info = param_info[index];
}

f0r_instance_t f0r_construct(unsigned int width, unsigned int height)
{
    if (width < 1 || height < 1 || width > 1 << 16 || height > 1 << 16) {
        fprintf(stderr, "bsq: cannot take %ux%u frames (1 to 65536 pixels each way)\n", width,
                height);
        return NULL;
    }
    bsq_f0r *s = calloc(1, sizeof *s);
    if (!s) {
        fprintf(stderr, "bsq: out of memory\n");
        return NULL;
    }
    s->width = (int)width;
    s->height = (int)height;
    for (int i = 0; i < N_STRINGS; i++)
        if (!(s->str[i] = calloc(1, 1))) {
            for (int j = 0; j < i; j++)
                free(s->str[j]);
            free(s);
            fprintf(stderr, "bsq: out of memory\n");
            return NULL;
        }
    return s;
}

void f0r_destruct(f0r_instance_t instance)
{
    bsq_f0r *s = instance;
    if (!s)
        return;
    teardown(s);
    for (int i = 0; i < N_STRINGS; i++)
        free(s->str[i]);
    free(s);
}

void f0r_set_param_value(f0r_instance_t instance, f0r_param_t param, int index)
{
    bsq_f0r *s = instance;
    if (!s || !param || index < 0 || index >= P_COUNT)
        return;
    if (index == P_THREADS) {
        double v = *(const f0r_param_double *)param;
        if (v != s->threads) {
            s->threads = v;
            s->changed |= CHANGED_ENGINE;
        }
        return;
    }
    const char *v = *(const f0r_param_string *)param;
    if (!v)
        v = "";
    if (strcmp(v, s->str[index]) == 0)
        return;
    char *copy = strdup(v);
    if (!copy) {
        fprintf(stderr, "bsq: out of memory setting %s\n", param_info[index].name);
        return;
    }
    free(s->str[index]);
    s->str[index] = copy;
    s->changed |= index == P_DEVICE ? CHANGED_ENGINE : CHANGED_ALL;
}

void f0r_get_param_value(f0r_instance_t instance, f0r_param_t param, int index)
{
    bsq_f0r *s = instance;
    if (!s || !param || index < 0 || index >= P_COUNT)
        return;
    if (index == P_THREADS)
        *(f0r_param_double *)param = s->threads;
    else
        *(f0r_param_string *)param = s->str[index];
}

void f0r_update(f0r_instance_t instance, double time, const uint32_t *inframe,
                uint32_t *outframe)
{
    bsq_f0r *s = instance;
    if (!s || !inframe || !outframe)
        return;
    if (!s->ready || (s->changed & CHANGED_ALL)) {
        teardown(s);
        setup(s);
    } else if (s->changed) {
        teardown_engine(s);
        setup_engine(s);
        s->changed = 0;
    }
    const uint8_t *in = (const uint8_t *)inframe;
    uint8_t *out = (uint8_t *)outframe;
    const size_t px = (size_t)s->width * s->height;
    for (size_t i = 0; i < px; i++)
        memcpy(s->rgb + 3 * i, in + 4 * i, 3);

    bsq_error err;
    bsq_tokens *tok;
    int position = bsq_stream_position(s->enc);
    if (bsq_stream_encode_rgb8(s->enc, s->rgb, (size_t)s->width * 3, &tok, &err) != BSQ_OK)
        fatal("%s", err.message);
    if (s->tok)
        write_tokens(s, time, position, tok);
    if (s->tokens_only) {
        bsq_tokens_free(tok);
        if (out != in)
            memcpy(out, in, px * 4);
        return;
    }
    bsq_status st = bsq_stream_decode_rgb8(s->dec, tok, s->rgb, (size_t)s->width * 3, &err);
    bsq_tokens_free(tok);
    if (st != BSQ_OK)
        fatal("%s", err.message);
    for (size_t i = 0; i < px; i++) {
        out[4 * i + 3] = in[4 * i + 3]; /* alpha first: out may be in */
        memcpy(out + 4 * i, s->rgb + 3 * i, 3);
    }
}
