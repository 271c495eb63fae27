/* bench/seams: do tile borders show? Encodes and decodes an image larger
 * than the model's grid (so it is tiled) and reports PSNR within 4 pixels of
 * internal tile borders against PSNR everywhere else. Equal figures mean the
 * stitching leaves no seam. Only meaningful with a trained model.
 *
 *   bench/seams MODEL IMAGE.ppm [THREADS]      (binary PPM, P6, 8-bit) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bsq.h"
#include "tiling.h"

#define BAND 4

static unsigned char *read_ppm(const char *path, int *w, int *h)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    int maxv = 0;
    unsigned char *px = NULL;
    if (fscanf(f, "P6 %d %d %d", w, h, &maxv) == 3 && maxv == 255 && *w > 0 && *h > 0 &&
        *w < 1 << 15 && *h < 1 << 15 && fgetc(f) != EOF) {
        size_t n = (size_t)*w * *h * 3;
        px = malloc(n);
        if (px && fread(px, 1, n, f) != n) {
            free(px);
            px = NULL;
        }
    }
    fclose(f);
    return px;
}

/* 1 where a pixel coordinate lies within BAND of an internal tile edge */
static void mark_borders(unsigned char *near, int total, int size)
{
    int n = bsq_tile_count(total, size);
    memset(near, 0, (size_t)total);
    for (int i = 0; i < n; i++) {
        int p = bsq_tile_pos(i, n, total, size);
        int edges[2] = {p, p + size};
        for (int e = 0; e < 2; e++) {
            if (edges[e] <= 0 || edges[e] >= total)
                continue; /* the image's own edge is no seam */
            for (int x = edges[e] - BAND; x < edges[e] + BAND; x++)
                if (x >= 0 && x < total)
                    near[x] = 1;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL IMAGE.ppm [THREADS]\n", argv[0]);
        return 2;
    }
    int w, h;
    unsigned char *rgb = read_ppm(argv[2], &w, &h);
    if (!rgb) {
        fprintf(stderr, "seams: %s: not a binary 8-bit PPM\n", argv[2]);
        return 1;
    }
    bsq_error err;
    bsq_model *model;
    bsq_context *ctx;
    bsq_context_options opt = {.threads = argc > 3 ? atoi(argv[3]) : 0, .device = "cpu"};
    if (bsq_model_open(argv[1], NULL, &model, &err) != BSQ_OK ||
        bsq_context_create(model, &opt, &ctx, &err) != BSQ_OK) {
        fprintf(stderr, "seams: %s\n", err.message);
        return 1;
    }
    const bsq_config *c = bsq_model_config(model);
    bsq_tokens *tok;
    unsigned char *out = malloc((size_t)w * h * 3);
    if (!out || bsq_encode_rgb8(ctx, rgb, w, h, (size_t)w * 3, &tok, &err) != BSQ_OK ||
        bsq_decode_rgb8(ctx, tok, out, (size_t)w * 3, &err) != BSQ_OK) {
        fprintf(stderr, "seams: %s\n", out ? err.message : "out of memory");
        return 1;
    }
    unsigned char *ny = malloc((size_t)h), *nx = malloc((size_t)w);
    mark_borders(ny, h, c->image_height);
    mark_borders(nx, w, c->image_width);
    double se[2] = {0, 0};
    size_t cnt[2] = {0, 0};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int band = ny[y] || nx[x];
            for (int ch = 0; ch < 3; ch++) {
                double d = (double)rgb[((size_t)y * w + x) * 3 + ch] - out[((size_t)y * w + x) * 3 + ch];
                se[band] += d * d;
                cnt[band]++;
            }
        }
    const bsq_token_layout *l = bsq_tokens_layout(tok);
    printf("| image | model grid | tiles | PSNR within %d px of tile borders | PSNR elsewhere |\n", BAND);
    printf("|---|---|---|---|---|\n");
    printf("| %s %dx%d | %dx%d | %dx%d |", argv[2], w, h, c->image_width, c->image_height,
           l->tiles_x, l->tiles_y);
    for (int b = 1; b >= 0; b--) {
        if (!cnt[b])
            printf(" n/a |");
        else
            printf(" %.2f dB |", 10 * log10(255.0 * 255.0 / (se[b] / cnt[b] + 1e-12)));
    }
    printf("\n");
    bsq_tokens_free(tok);
    bsq_context_destroy(ctx);
    bsq_model_close(model);
    free(rgb);
    free(out);
    free(nx);
    free(ny);
    return 0;
}
