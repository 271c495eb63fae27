/* Tokenize one image with libbsq and decode it back.
 *
 *   tokenize MODEL IN.ppm [OUT.ppm [GROUP_BITS]]
 *
 * Reads a binary PPM (P6, maxval 255), encodes it (any size: tiled), prints
 * one line per token with its group indices (GROUP_BITS bits each, default
 * the model's group size), and writes the decoded image to OUT.ppm.
 * Build: cc tokenize.c $(pkg-config --cflags --libs libbsq) */
#include <stdio.h>
#include <stdlib.h>

#include "bsq.h"

static unsigned char *read_ppm(const char *path, int *w, int *h)
{
    FILE *f = fopen(path, "rb");
    int maxval = 0;
    unsigned char *rgb = NULL;
    if (f && fscanf(f, "P6 %d %d %d", w, h, &maxval) == 3 && maxval == 255 && fgetc(f) != EOF &&
        *w > 0 && *h > 0 && *w < 65536 && *h < 65536 &&
        (rgb = malloc((size_t)*w * *h * 3)) &&
        fread(rgb, 3, (size_t)*w * *h, f) != (size_t)*w * *h) {
        free(rgb);
        rgb = NULL;
    }
    if (f)
        fclose(f);
    return rgb;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: %s MODEL IN.ppm [OUT.ppm [GROUP_BITS]]\n", argv[0]);
        return 2;
    }
    int w, h;
    unsigned char *rgb = read_ppm(argv[2], &w, &h);
    if (!rgb) {
        fprintf(stderr, "%s: not a binary PPM with maxval 255\n", argv[2]);
        return 1;
    }
    bsq_error err;
    bsq_model *model = NULL;
    bsq_context *ctx = NULL;
    bsq_tokens *tok = NULL;
    uint32_t *groups = NULL;
    int rc = 1;
    if (bsq_model_open(argv[1], NULL, &model, &err) != BSQ_OK ||
        bsq_context_create(model, &(bsq_context_options){.threads = 0}, &ctx, &err) != BSQ_OK ||
        bsq_encode_rgb8(ctx, rgb, w, h, (size_t)w * 3, &tok, &err) != BSQ_OK)
        goto fail;

    const bsq_token_layout *l = bsq_tokens_layout(tok);
    int g = argc > 4 ? atoi(argv[4]) : bsq_model_config(model)->group_size;
    int per = g > 0 ? l->L / g : 0;
    if (!(groups = malloc(l->count * (per ? per : 1) * sizeof *groups)) ||
        bsq_tokens_get_groups(tok, g, groups, &err) != BSQ_OK)
        goto fail;
    printf("# %dx%d image: %zu tokens of L=%d bits (%dx%d tiles of %dx%d), %d groups of %d bits\n",
           w, h, l->count, l->L, l->tiles_x, l->tiles_y, l->grid_w, l->grid_h, per, g);
    for (size_t i = 0; i < l->count; i++)
        for (int j = 0; j < per; j++)
            printf("%u%c", groups[i * per + j], j + 1 < per ? ' ' : '\n');

    if (argc > 3) { /* decode back: the tokens' own size, l->width x l->height */
        if (bsq_decode_rgb8(ctx, tok, rgb, (size_t)w * 3, &err) != BSQ_OK)
            goto fail;
        FILE *f = fopen(argv[3], "wb");
        if (!f || fprintf(f, "P6\n%d %d\n255\n", w, h) < 0 ||
            fwrite(rgb, 3, (size_t)w * h, f) != (size_t)w * h || fclose(f) != 0) {
            fprintf(stderr, "%s: cannot write\n", argv[3]);
            goto done;
        }
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "%s\n", err.message);
done:
    free(groups);
    bsq_tokens_free(tok);
    bsq_context_destroy(ctx);
    bsq_model_close(model);
    free(rgb);
    return rc;
}
