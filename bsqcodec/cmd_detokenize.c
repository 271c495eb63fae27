/* bsqcodec detokenize: a token array (.npy or safetensors, as tokenize
 * writes them or as a model generates them in the same layout) -> PNG
 * images, one per row. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bsq.h"
#include "cli.h"
#include "commands.h"
#include "json.h"
#include "media.h"
#include "tiling.h"
#include "tokfile.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: bsqcodec detokenize SHARD.npy|SHARD.safetensors -o OUTDIR [OPTIONS]\n\n"
            "Decodes token arrays back to images, one PNG per row: OUTDIR/STEM-ROW.png\n"
            "(STEM: the file's name without its extension; ROW: six digits). The array is\n"
            "[rows, tokens per image, values per token]: group indices (any integer type)\n"
            "or packed bits (uint8, MSB first), as bsqcodec tokenize writes them. The\n"
            "model must be the one that made the tokens: its L, and its fingerprint and\n"
            "image size when the file (safetensors metadata) or the shard's index\n"
            "(STEM.jsonl beside an .npy) records them, are checked.\n\n"
            "Options:\n"
            "  -o, --output DIR      output folder (created)\n"
            "  -m, --model FILE      tokenizer model (default: $BSQ_MODEL, else the\n"
            "                        built-in image model)\n"
            "  -r, --rows A:B        rows A to B-1 (either may be left out; default: all)\n"
            "  -s, --size N          image size N x N (default: recorded, else the model's)\n"
            "  -f, --format F        groups or bits (default: recorded, else bits for uint8\n"
            "                        arrays and groups for wider types)\n"
            "  -b, --batch N         rows per engine call (default 8)\n"
            "  -t, --threads N       CPU threads (default: all)\n"
            "  -d, --device DEV      auto, cpu, cuda, cuda:N (default: auto)\n"
            "      --precision P     fp32 or bf16 on a GPU (default: bf16); the CPU\n"
            "                        is always fp32\n"
            "  -q, --quiet           print nothing on success\n"
            "  -h, --help            show this help\n");
}

static int parse_rows(const char *s, long long *a, long long *b)
{
    const char *colon = strchr(s, ':');
    if (!colon)
        return 0;
    char *end;
    *a = 0;
    *b = -1;
    if (colon != s) {
        errno = 0;
        *a = strtoll(s, &end, 10);
        if (end != colon || errno || *a < 0)
            return 0;
    }
    if (colon[1]) {
        errno = 0;
        *b = strtoll(colon + 1, &end, 10);
        if (*end || errno || *b < 0)
            return 0;
    }
    return 1;
}

/* What the file or its index records about the tokens. */
typedef struct {
    char tokens[16];      /* "groups", "bits" or "" */
    char fingerprint[65]; /* hex or "" */
    long L, group_bits, size;
    char source[64];      /* where it came from, for messages */
} recorded;

static long meta_long(const char *s)
{
    char *end;
    long v = s ? strtol(s, &end, 10) : -1;
    return s && *s && !*end ? v : -1;
}

static void from_safetensors(const tokf_array *a, recorded *r)
{
    const char *t = tokf_meta(a, "tokens"), *fp = tokf_meta(a, "fingerprint");
    if (t)
        snprintf(r->tokens, sizeof r->tokens, "%s", t);
    if (fp)
        snprintf(r->fingerprint, sizeof r->fingerprint, "%s", fp);
    r->L = meta_long(tokf_meta(a, "L"));
    r->group_bits = meta_long(tokf_meta(a, "group_bits"));
    r->size = meta_long(tokf_meta(a, "size"));
    snprintf(r->source, sizeof r->source, "the file's metadata");
}

/* The first line of STEM.jsonl beside an .npy shard, when it is ours. */
static void from_index(const char *path, recorded *r)
{
    size_t n = strlen(path);
    if (n < 4 || strcmp(path + n - 4, ".npy"))
        return;
    char *ip = malloc(n + 3);
    if (!ip)
        return;
    memcpy(ip, path, n - 4);
    strcpy(ip + n - 4, ".jsonl");
    FILE *f = fopen(ip, "r");
    free(ip);
    if (!f)
        return;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len = getline(&line, &cap, f);
    fclose(f);
    json_value *v = NULL;
    bsq_error err;
    if (len > 0 && json_parse(line, (size_t)len, &v, &err) == BSQ_OK && v->type == JSON_OBJECT) {
        const json_value *t = json_get(v, "tokens"), *fp = json_get(v, "fingerprint"),
                         *L = json_get(v, "L"), *g = json_get(v, "group_bits"),
                         *s = json_get(v, "size");
        if (t && t->type == JSON_STRING && fp && fp->type == JSON_STRING) {
            snprintf(r->tokens, sizeof r->tokens, "%s", t->string);
            snprintf(r->fingerprint, sizeof r->fingerprint, "%s", fp->string);
            r->L = L && L->type == JSON_NUMBER ? (long)L->number : -1;
            r->group_bits = g && g->type == JSON_NUMBER ? (long)g->number : -1;
            r->size = s && s->type == JSON_NUMBER ? (long)s->number : -1;
            snprintf(r->source, sizeof r->source, "the shard's index");
        }
    }
    json_free(v);
    free(line);
}

int cmd_detokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'}, {"model", required_argument, NULL, 'm'},
        {"rows", required_argument, NULL, 'r'},   {"size", required_argument, NULL, 's'},
        {"format", required_argument, NULL, 'f'}, {"batch", required_argument, NULL, 'b'},
        {"threads", required_argument, NULL, 't'}, {"device", required_argument, NULL, 'd'},
        {"precision", required_argument, NULL, CLI_OPT_PRECISION},
        {"quiet", no_argument, NULL, 'q'},        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *outdir = NULL, *model_path = NULL, *device = NULL;
    bsq_precision precision = BSQ_PRECISION_AUTO;
    long long r0 = 0, r1 = -1, size = 0, batch = 8, threads = 0;
    int quiet = 0, c, want_bits = -1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:m:r:s:f:b:t:d:qh", opts, NULL)) != -1) {
        long long v = 0;
        switch (c) {
        case 'o': outdir = optarg; break;
        case 'm': model_path = optarg; break;
        case 'd': device = optarg; break;
        case CLI_OPT_PRECISION:
            if (!cli_parse_precision(optarg, &precision)) {
                cli_error("detokenize: --precision takes fp32 or bf16");
                return EXIT_USAGE;
            }
            break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'r':
            if (!parse_rows(optarg, &r0, &r1)) {
                cli_error("detokenize: --rows wants A:B, A:, :B or :, not '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'f':
            if (!strcmp(optarg, "groups")) want_bits = 0;
            else if (!strcmp(optarg, "bits")) want_bits = 1;
            else {
                cli_error("detokenize: --format is groups or bits, not '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 's': case 'b': case 't':
            if (!cli_parse_count(optarg, 1 << 20, &v) || (c != 't' && v < 1)) {
                cli_error("detokenize: bad number '%s'", optarg);
                return EXIT_USAGE;
            }
            if (c == 's') size = v;
            else if (c == 'b') batch = v > 1024 ? 1024 : v;
            else threads = v > 1024 ? 1024 : v;
            break;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc - 1 || !outdir) {
        cli_error("detokenize: need one SHARD file and -o OUTDIR");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strchr(outdir, '%')) {
        cli_error("detokenize: the output folder's name may not contain '%%'");
        return EXIT_USAGE;
    }
    const char *input = argv[optind];
    int rc = EXIT_RUNTIME;
    bsq_error err;
    tokf_array A;
    if (tokf_open(input, &A, &err) != BSQ_OK) {
        cli_error("detokenize: %s", err.message);
        return EXIT_RUNTIME;
    }
    recorded rec = {.L = -1, .group_bits = -1, .size = -1};
    if (A.container == TOKF_SAFETENSORS)
        from_safetensors(&A, &rec);
    else
        from_index(input, &rec);

    bsq_model *model = NULL;
    bsq_context *ctx = NULL;
    bsq_tokens *tok = NULL;
    uint64_t *vals = NULL;
    uint32_t *groups = NULL;
    uint8_t *bitv = NULL, *rgb = NULL;
    float *planar = NULL;
    char *stem = NULL, *name = NULL, *tmp = NULL;

    if (!(model = cli_open_model_for(model_path, "detokenize", BSQ_DEFAULT_IMAGE)))
        goto done;
    const bsq_config *cfg = bsq_model_config(model);
    const int L = cfg->L;
    uint8_t fpb[32];
    char fp[65];
    if (bsq_model_fingerprint(model, fpb, &err) != BSQ_OK) {
        cli_error("detokenize: %s", err.message);
        goto done;
    }
    for (int i = 0; i < 32; i++)
        snprintf(fp + 2 * i, 3, "%02x", fpb[i]);
    if (rec.L > 0 && rec.L != L) {
        cli_error("detokenize: %s: the tokens have L = %ld bits (%s), the model %d", input,
                  rec.L, rec.source, L);
        goto done;
    }
    if (rec.fingerprint[0] && strcmp(rec.fingerprint, fp)) {
        cli_error("detokenize: %s: the tokens were made by the model with fingerprint %s (%s); "
                  "this model's is %s",
                  input, rec.fingerprint, rec.source, fp);
        goto done;
    }

    /* what the values are */
    const int64_t rows = A.shape[0], T = A.shape[1], V = A.shape[2];
    int bits = want_bits >= 0 ? want_bits
               : !strcmp(rec.tokens, "bits")   ? 1
               : !strcmp(rec.tokens, "groups") ? 0
                                               : A.itemsize == 1;
    int g = 0;
    if (bits) {
        if (A.itemsize != 1 || A.kind != 'u' || V != (L + 7) / 8) {
            cli_error("detokenize: %s: packed bits are uint8 with %d bytes per token for "
                      "L = %d; the array is %s with %lld values per token",
                      input, (L + 7) / 8, L, tokf_dtype_name(A.kind, A.itemsize), (long long)V);
            goto done;
        }
    } else {
        if (V < 1 || L % V || L / V > 32) {
            cli_error("detokenize: %s: %lld group indices per token do not split the model's "
                      "L = %d bits into groups of at most 32",
                      input, (long long)V, L);
            goto done;
        }
        g = L / (int)V;
        if (rec.group_bits > 0 && rec.group_bits != g) {
            cli_error("detokenize: %s: %s says %ld bits per group; %lld values per token "
                      "with L = %d make %d",
                      input, rec.source, rec.group_bits, (long long)V, L, g);
            goto done;
        }
    }

    /* the image size, and the tokens it takes */
    const int gh = cfg->image_height / cfg->patch_size, gw = cfg->image_width / cfg->patch_size;
    int N;
    if (size)
        N = (int)size;
    else if (rec.size > 0)
        N = (int)rec.size;
    else if (cfg->image_height == cfg->image_width && T == (int64_t)gh * gw)
        N = cfg->image_height;
    else {
        cli_error("detokenize: %s: %lld tokens per image and no recorded image size: "
                  "give --size",
                  input, (long long)T);
        goto done;
    }
    const int ty = bsq_tile_count(N, cfg->image_height), tx = bsq_tile_count(N, cfg->image_width);
    if ((int64_t)ty * tx * gh * gw != T) {
        cli_error("detokenize: %s: the rows hold %lld tokens, but the model makes %d of a "
                  "%dx%d image (%dx%d tiles of %dx%d); wrong model or --size?",
                  input, (long long)T, ty * tx * gh * gw, N, N, tx, ty, gw, gh);
        goto done;
    }

    if (r1 < 0 || r1 > rows)
        r1 = rows;
    if (rows == 0 && r0 == 0) { /* a shard whose inputs were all skipped */
        if (!quiet)
            fprintf(stderr, "detokenize: %s holds no rows\n", input);
        rc = EXIT_OK;
        goto done;
    }
    if (r0 >= r1) {
        cli_error("detokenize: %s: no rows selected (the file has %lld)", input, (long long)rows);
        goto done;
    }
    if (!tokf_mkdirs(outdir)) {
        cli_error("detokenize: cannot create the folder %s: %s", outdir, strerror(errno));
        goto done;
    }
    bsq_context_options copt = {.threads = (int)threads, .device = device,
                                .precision = precision};
    if (bsq_context_create(model, &copt, &ctx, &err) != BSQ_OK) {
        cli_error("detokenize: %s", err.message);
        goto done;
    }
    const char *base = strrchr(input, '/');
    base = base ? base + 1 : input;
    const char *dot = strrchr(base, '.');
    stem = strndup(base, dot && dot != base ? (size_t)(dot - base) : strlen(base));
    const size_t per_row = (size_t)T * (size_t)V, img = (size_t)N * N * 3;
    vals = malloc((size_t)batch * per_row * sizeof *vals);
    groups = malloc((size_t)batch * per_row * sizeof *groups);
    bitv = malloc((size_t)batch * (size_t)T * (size_t)L);
    planar = malloc((size_t)batch * img * sizeof(float));
    rgb = malloc(img);
    name = malloc(strlen(outdir) + strlen(base) + 32);
    if (!stem || !vals || !groups || !bitv || !planar || !rgb || !name) {
        cli_error("detokenize: out of memory");
        goto done;
    }
    long long written = 0;
    for (long long r = r0; r < r1; r += batch) {
        const int nb = (int)(r1 - r < batch ? r1 - r : batch);
        if (tokf_read_rows(input, &A, r, r + nb, vals, &err) != BSQ_OK) {
            cli_error("detokenize: %s", err.message);
            goto done;
        }
        bsq_token_layout lay = {.L = L, .batch = nb, .frames = 1, .tiles_y = ty, .tiles_x = tx,
                                .grid_h = gh, .grid_w = gw, .height = N, .width = N};
        bsq_tokens_free(tok);
        tok = NULL;
        if (bsq_tokens_create(&lay, &tok, &err) != BSQ_OK) {
            cli_error("detokenize: %s", err.message);
            goto done;
        }
        const size_t n = (size_t)nb * per_row;
        bsq_status st;
        if (bits) {
            for (size_t i = 0; i < (size_t)nb * (size_t)T; i++)
                for (int d = 0; d < L; d++)
                    bitv[i * (size_t)L + (size_t)d] =
                        (uint8_t)(vals[i * (size_t)V + (size_t)(d / 8)] >> (7 - d % 8) & 1);
            st = bsq_tokens_set_bits(tok, bitv, &err);
        } else {
            for (size_t i = 0; i < n; i++) {
                if (g < 32 && vals[i] >> g) {
                    cli_error("detokenize: %s: row %lld holds %llu, beyond %d bits per group",
                              input, r + (long long)(i / per_row), (unsigned long long)vals[i],
                              g);
                    goto done;
                }
                groups[i] = (uint32_t)vals[i];
            }
            st = bsq_tokens_set_groups(tok, g, groups, &err);
        }
        if (st != BSQ_OK || bsq_decode(ctx, tok, planar, &err) != BSQ_OK) {
            cli_error("detokenize: %s: %s", input, err.message);
            goto done;
        }
        for (int b = 0; b < nb; b++) {
            sprintf(name, "%s/%s-%06lld.png", outdir, stem, r + b);
            bsq_planar_to_rgb8(planar + (size_t)b * img, N, N, rgb, (size_t)N * 3);
            free(tmp);
            if (!(tmp = cli_temp_name(name))) {
                cli_error("detokenize: out of memory");
                goto done;
            }
            cli_cleanup_on_signal(tmp);
            bsq_media_out_options mo;
            bsq_media_out_options_init(&mo, N, N);
            mo.format = "png";
            bsq_media_out *out = NULL;
            if (bsq_media_out_open(tmp, &mo, &out, &err) != BSQ_OK ||
                bsq_media_out_write(out, rgb, (size_t)N * 3, BSQ_MEDIA_NOPTS, &err) != BSQ_OK) {
                bsq_media_out_abort(out);
                unlink(tmp);
                cli_error("detokenize: %s: %s", name, err.message);
                goto done;
            }
            if (bsq_media_out_close(out, &err) != BSQ_OK || rename(tmp, name) != 0) {
                unlink(tmp);
                cli_error("detokenize: writing %s failed", name);
                goto done;
            }
            cli_cleanup_on_signal(NULL);
            written++;
        }
    }
    if (!quiet)
        fprintf(stderr, "detokenize: %lld image%s (%dx%d) in %s\n", written,
                written == 1 ? "" : "s", N, N, outdir);
    rc = EXIT_OK;
done:
    cli_cleanup_on_signal(NULL);
    free(tmp);
    free(name);
    free(stem);
    free(vals);
    free(groups);
    free(bitv);
    free(planar);
    free(rgb);
    bsq_tokens_free(tok);
    bsq_context_destroy(ctx);
    bsq_model_close(model);
    tokf_close(&A);
    return rc;
}
