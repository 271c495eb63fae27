/* The library's side of tests/frei0r.sh: what the frei0r plugin should give
 * for the same raw RGB24 frames, computed with libbsq's public API alone,
 * and a reader of the plugin's tokens file as man/bsq-frei0r.7 describes it.
 *
 *   frei0r_ref roundtrip MODEL W H IN.rgb OUT.rgb
 *       streams every frame through bsq_stream_encode and bsq_stream_decode
 *       and writes the reconstruction as raw RGB24
 *   frei0r_ref tokens MODEL W H IN.rgb FILE.tok
 *       checks that FILE.tok holds exactly the tokens of IN.rgb's frames
 *       (header fields, model fingerprint, block positions, every index)
 *   frei0r_ref decode MODEL FILE.tok OUT.rgb
 *       decodes a tokens file back to raw RGB24
 *
 * Exit status 0 on success, 1 on any difference or error (with a message).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bsq.h"

static int die(const char *fmt, const char *a)
{
    fprintf(stderr, "frei0r_ref: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    return 1;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p) { return get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

typedef struct engine {
    bsq_model *model;
    bsq_context *ctx;
    bsq_stream *stream;
} engine;

static int engine_open(engine *e, const char *model, bsq_stream_mode mode, int w, int h)
{
    bsq_error err;
    memset(e, 0, sizeof *e);
    bsq_context_options o = {.threads = 0, .device = "cpu"};
    if (bsq_model_open(model, NULL, &e->model, &err) != BSQ_OK ||
        bsq_context_create(e->model, &o, &e->ctx, &err) != BSQ_OK ||
        bsq_stream_create(e->ctx, mode, h, w, &e->stream, &err) != BSQ_OK)
        return die("%s", err.message);
    return 0;
}

static void engine_close(engine *e)
{
    bsq_stream_destroy(e->stream);
    bsq_context_destroy(e->ctx);
    bsq_model_close(e->model);
}

static int parse_size(const char *ws, const char *hs, int *w, int *h)
{
    char *end1, *end2;
    long a = strtol(ws, &end1, 10), b = strtol(hs, &end2, 10);
    if (*end1 || *end2 || a < 1 || b < 1 || a > 65536 || b > 65536)
        return die("bad frame size %s", ws);
    *w = (int)a;
    *h = (int)b;
    return 0;
}

static int roundtrip(const char *model, int w, int h, const char *in_path, const char *out_path)
{
    engine enc, dec;
    if (engine_open(&enc, model, BSQ_STREAM_ENCODE, w, h) ||
        engine_open(&dec, model, BSQ_STREAM_DECODE, w, h))
        return 1;
    FILE *in = fopen(in_path, "rb"), *out = fopen(out_path, "wb");
    if (!in || !out)
        return die("cannot open %s", !in ? in_path : out_path);
    size_t n = (size_t)w * h * 3;
    uint8_t *rgb = malloc(n);
    float *planar = malloc(n * sizeof(float));
    int frames = 0, rc = 0;
    bsq_error err;
    while (rgb && planar && fread(rgb, 1, n, in) == n) {
        bsq_tokens *tok;
        bsq_rgb8_to_planar(rgb, w, h, (size_t)w * 3, planar);
        if (bsq_stream_encode(enc.stream, planar, &tok, &err) != BSQ_OK) {
            rc = die("%s", err.message);
            break;
        }
        bsq_status st = bsq_stream_decode(dec.stream, tok, planar, &err);
        bsq_tokens_free(tok);
        if (st != BSQ_OK) {
            rc = die("%s", err.message);
            break;
        }
        bsq_planar_to_rgb8(planar, w, h, rgb, (size_t)w * 3);
        if (fwrite(rgb, 1, n, out) != n) {
            rc = die("writing %s", out_path);
            break;
        }
        frames++;
    }
    if (!rgb || !planar)
        rc = die("%s", "out of memory");
    if (fclose(out) != 0)
        rc = die("writing %s", out_path);
    fclose(in);
    free(rgb);
    free(planar);
    engine_close(&enc);
    engine_close(&dec);
    if (!rc)
        printf("%d frames\n", frames);
    return rc;
}

/* The header of a tokens file, read field by field. */
typedef struct tok_header {
    uint32_t version, header_size, width, height, L, tiles_y, tiles_x, grid_h, grid_w, num_frames;
    uint8_t fingerprint[32];
    uint64_t count;
} tok_header;

static int read_header(FILE *f, const char *path, tok_header *th)
{
    uint8_t h[96];
    if (fread(h, 1, sizeof h, f) != sizeof h)
        return die("%s: shorter than a header", path);
    if (memcmp(h, "BSQTOKS\0", 8) != 0)
        return die("%s: not a tokens file (magic)", path);
    th->version = get_u32(h + 8);
    th->header_size = get_u32(h + 12);
    th->width = get_u32(h + 16);
    th->height = get_u32(h + 20);
    th->L = get_u32(h + 24);
    th->tiles_y = get_u32(h + 28);
    th->tiles_x = get_u32(h + 32);
    th->grid_h = get_u32(h + 36);
    th->grid_w = get_u32(h + 40);
    th->num_frames = get_u32(h + 44);
    memcpy(th->fingerprint, h + 48, 32);
    th->count = get_u64(h + 80);
    if (th->version != 1 || th->header_size < 96 || get_u64(h + 88) != 0)
        return die("%s: unexpected version, header size or reserved field", path);
    if (th->count != (uint64_t)th->tiles_y * th->tiles_x * th->grid_h * th->grid_w)
        return die("%s: tokens per frame do not match the tiling", path);
    if (fseek(f, (long)th->header_size, SEEK_SET) != 0)
        return die("%s: cannot skip the header", path);
    return 0;
}

/* Reads one record; 1 at the end of the file, -1 on a short record. */
static int read_record(FILE *f, const tok_header *th, uint8_t *buf, uint32_t *position)
{
    size_t size = 16 + 8 * (size_t)th->count;
    size_t got = fread(buf, 1, size, f);
    if (got == 0)
        return 1;
    if (got != size)
        return -1;
    *position = get_u32(buf + 8);
    return 0;
}

static int check_tokens(const char *model, int w, int h, const char *in_path, const char *tok_path)
{
    engine enc;
    if (engine_open(&enc, model, BSQ_STREAM_ENCODE, w, h))
        return 1;
    FILE *in = fopen(in_path, "rb"), *tf = fopen(tok_path, "rb");
    if (!in || !tf)
        return die("cannot open %s", !in ? in_path : tok_path);
    tok_header th;
    if (read_header(tf, tok_path, &th))
        return 1;
    const bsq_config *c = bsq_model_config(enc.model);
    uint8_t fp[32];
    bsq_error err;
    if (bsq_model_fingerprint(enc.model, fp, &err) != BSQ_OK)
        return die("%s", err.message);
    if (th.width != (uint32_t)w || th.height != (uint32_t)h || th.L != (uint32_t)c->L ||
        th.num_frames != (uint32_t)c->num_frames || memcmp(fp, th.fingerprint, 32) != 0)
        return die("%s: header does not match the frame size or the model", tok_path);
    size_t n = (size_t)w * h * 3;
    uint8_t *rgb = malloc(n), *rec = malloc(16 + 8 * (size_t)th.count);
    float *planar = malloc(n * sizeof(float));
    if (!rgb || !rec || !planar)
        return die("%s", "out of memory");
    int frames = 0, rc = 0;
    while (!rc && fread(rgb, 1, n, in) == n) {
        bsq_tokens *tok;
        bsq_rgb8_to_planar(rgb, w, h, (size_t)w * 3, planar);
        int position = bsq_stream_position(enc.stream);
        if (bsq_stream_encode(enc.stream, planar, &tok, &err) != BSQ_OK)
            return die("%s", err.message);
        const bsq_token_layout *l = bsq_tokens_layout(tok);
        uint32_t pos;
        int r = read_record(tf, &th, rec, &pos);
        if (r)
            rc = die("%s: fewer frames than the input", tok_path);
        else if (l->tiles_y != (int)th.tiles_y || l->tiles_x != (int)th.tiles_x ||
                 l->grid_h != (int)th.grid_h || l->grid_w != (int)th.grid_w ||
                 l->count != th.count)
            rc = die("%s: the tiling differs from the library's", tok_path);
        else if (pos != (uint32_t)position)
            rc = die("%s: a frame's block position differs", tok_path);
        else
            for (size_t i = 0; i < l->count && !rc; i++)
                if (get_u64(rec + 16 + 8 * i) != bsq_tokens_indices(tok)[i]) {
                    fprintf(stderr, "frame %d token %zu: ", frames, i);
                    rc = die("%s: a token differs", tok_path);
                }
        bsq_tokens_free(tok);
        frames++;
    }
    uint32_t pos;
    if (!rc && read_record(tf, &th, rec, &pos) != 1)
        rc = die("%s: more frames than the input", tok_path);
    if (!rc)
        printf("%d frames of %llu tokens match\n", frames, (unsigned long long)th.count);
    free(rgb);
    free(rec);
    free(planar);
    fclose(in);
    fclose(tf);
    engine_close(&enc);
    return rc;
}

static int decode(const char *model, const char *tok_path, const char *out_path)
{
    FILE *tf = fopen(tok_path, "rb");
    if (!tf)
        return die("cannot open %s", tok_path);
    tok_header th;
    if (read_header(tf, tok_path, &th))
        return 1;
    engine dec;
    if (engine_open(&dec, model, BSQ_STREAM_DECODE, (int)th.width, (int)th.height))
        return 1;
    bsq_token_layout lay = {.L = (int)th.L, .batch = 1, .frames = 1, .tiles_y = (int)th.tiles_y,
                            .tiles_x = (int)th.tiles_x, .grid_h = (int)th.grid_h,
                            .grid_w = (int)th.grid_w, .height = (int)th.height,
                            .width = (int)th.width};
    bsq_tokens *tok;
    bsq_error err;
    if (bsq_tokens_create(&lay, &tok, &err) != BSQ_OK)
        return die("%s", err.message);
    size_t n = (size_t)th.width * th.height * 3;
    uint8_t *rgb = malloc(n), *rec = malloc(16 + 8 * (size_t)th.count);
    float *planar = malloc(n * sizeof(float));
    FILE *out = fopen(out_path, "wb");
    if (!rgb || !rec || !planar || !out)
        return die("cannot write %s", out_path);
    int frames = 0, rc = 0, r;
    uint32_t pos;
    while (!rc && (r = read_record(tf, &th, rec, &pos)) == 0) {
        if (pos == 0)
            bsq_stream_restart(dec.stream); /* a block starts here */
        uint64_t *idx = bsq_tokens_indices_mut(tok);
        for (size_t i = 0; i < th.count; i++)
            idx[i] = get_u64(rec + 16 + 8 * i);
        if (bsq_stream_decode(dec.stream, tok, planar, &err) != BSQ_OK)
            rc = die("%s", err.message);
        bsq_planar_to_rgb8(planar, (int)th.width, (int)th.height, rgb, (size_t)th.width * 3);
        if (!rc && fwrite(rgb, 1, n, out) != n)
            rc = die("writing %s", out_path);
        frames++;
    }
    if (!rc && r < 0)
        rc = die("%s: truncated record", tok_path);
    if (fclose(out) != 0)
        rc = die("writing %s", out_path);
    if (!rc)
        printf("%d frames decoded\n", frames);
    fclose(tf);
    free(rgb);
    free(rec);
    free(planar);
    bsq_tokens_free(tok);
    engine_close(&dec);
    return rc;
}

int main(int argc, char **argv)
{
    int w, h;
    if (argc == 7 && strcmp(argv[1], "roundtrip") == 0)
        return parse_size(argv[3], argv[4], &w, &h) ? 1 : roundtrip(argv[2], w, h, argv[5], argv[6]);
    if (argc == 7 && strcmp(argv[1], "tokens") == 0)
        return parse_size(argv[3], argv[4], &w, &h) ? 1 : check_tokens(argv[2], w, h, argv[5], argv[6]);
    if (argc == 5 && strcmp(argv[1], "decode") == 0)
        return decode(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: frei0r_ref roundtrip MODEL W H IN.rgb OUT.rgb\n"
                    "       frei0r_ref tokens MODEL W H IN.rgb FILE.tok\n"
                    "       frei0r_ref decode MODEL FILE.tok OUT.rgb\n");
    return 1;
}
