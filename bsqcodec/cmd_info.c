/* bsqcodec info: what a .bsq file holds, as text or JSON */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "bsq.h"
#include "cli.h"
#include "codec/container.h"
#include "commands.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: bsqcodec info FILE.bsq [--json]\n\n"
            "Prints the stream description, the models the file needs, and per-GOP\n"
            "sizes from the seek index (or, without one, by reading the chunks).\n\n"
            "Options:\n"
            "      --json   machine-readable output\n"
            "  -h, --help   show this help\n");
}

int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j')
            json = 1;
        else if (c == 'h') {
            usage(stdout);
            return EXIT_OK;
        } else {
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        cli_error("info: need one FILE.bsq");
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *path = argv[optind];
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        cli_error("info: cannot open %s", path);
        return EXIT_RUNTIME;
    }
    bsq_error err;
    bsq_reader *r;
    if (bsq_reader_open_file(f, NULL, &r, &err) != BSQ_OK) {
        cli_error("info: %s: %s", path, err.message);
        if (f != stdin)
            fclose(f);
        return EXIT_RUNTIME;
    }
    const bsq_stream_info *s = bsq_reader_info(r);
    /* GOP sizes: from the index on seekable files, else by reading chunks */
    uint64_t frames = 0, gops = 0, payload = 0;
    int64_t end = 0;
    int from_footer = 0, ok = 1;
    if (bsq_reader_seekable(r) && bsq_reader_load_index(r, &err) == BSQ_OK) {
        size_t n;
        const bsq_index_entry *ix = bsq_reader_index(r, &n);
        from_footer = bsq_reader_index_from_footer(r);
        for (size_t i = 0; i < n; i++)
            frames += ix[i].frame_count;
        gops = n;
    } else {
        const bsq_gop *g;
        while ((ok = bsq_reader_next_gop(r, &g, &err) == BSQ_OK) && g) {
            frames += g->frame_count;
            payload += g->payload_size;
            gops++;
        }
    }
    if (f != stdin && fseek(f, 0, SEEK_END) == 0)
        end = ftell(f);
    char tfp[65], pfp[33];
    bsq_hex(s->tokenizer_fingerprint, BSQ_TOKENIZER_FP_SIZE, tfp);
    bsq_hex(s->prior_fingerprint, BSQ_PRIOR_FP_SIZE, pfp);
    double bpp = end > 0 && frames ? (double)end * 8.0 / ((double)frames * s->width * s->height) : 0;
    double raw = (double)s->L * (double)bsq_stream_info_tokens_per_frame(s) / ((double)s->width * s->height);
    if (json) {
        printf("{\"file\": \"");
        for (const char *p = path; *p; p++)
            printf(*p == '"' || *p == '\\' ? "\\%c" : (unsigned char)*p < 0x20 ? "?" : "%c", *p);
        printf("\", \"version\": \"%u.%u\", \"width\": %u, \"height\": %u, "
               "\"time_base\": [%u, %u], \"frame_rate\": [%u, %u], \"sample_aspect\": [%u, %u], "
               "\"color\": {\"primaries\": %u, \"transfer\": %u, \"matrix\": %u, \"range\": %u}, "
               "\"rotation\": %u, \"frame_count_header\": %llu, \"frames\": %llu, \"gops\": %llu, "
               "\"tokens\": {\"L\": %d, \"grid\": [%d, %d], \"tiles\": [%d, %d], \"frames_per_gop\": %d}, "
               "\"tokenizer_fingerprint\": \"%s\", \"prior\": \"%s\", \"prior_fingerprint\": \"%s\", "
               "\"bytes\": %lld, \"bits_per_pixel\": %.6f, \"raw_bits_per_pixel\": %.6f, "
               "\"coded_size\": [%d, %d], \"index\": \"%s\", \"complete\": %s}\n",
               s->version_major, s->version_minor, s->width, s->height, s->time_base_num,
               s->time_base_den, s->frame_rate_num, s->frame_rate_den, s->sar_num, s->sar_den,
               s->color_primaries, s->color_transfer, s->color_matrix, s->color_range, s->rotation,
               (unsigned long long)s->frame_count, (unsigned long long)frames,
               (unsigned long long)gops, s->L, s->grid_h, s->grid_w, s->tiles_y, s->tiles_x,
               s->num_frames, tfp, s->prior_name, pfp, (long long)end, bpp, raw,
               s->token_width, s->token_height, from_footer ? "footer" : "scan", ok ? "true" : "false");
    } else {
        printf("%s: bsq %u.%u, %ux%u", path, s->version_major, s->version_minor, s->width,
               s->height);
        if (s->frame_rate_num && s->frame_rate_den)
            printf(", %.3f fps", (double)s->frame_rate_num / s->frame_rate_den);
        printf(", time base %u/%u\n", s->time_base_num, s->time_base_den);
        printf("  frames        %llu in %llu GOPs (header says %llu; index %s)\n",
               (unsigned long long)frames, (unsigned long long)gops,
               (unsigned long long)s->frame_count, from_footer ? "from footer" : "by scanning");
        printf("  tokens        L=%d, %dx%d per tile, %dx%d tiles, up to %d frames per GOP\n", s->L,
               s->grid_w, s->grid_h, s->tiles_x, s->tiles_y, s->num_frames);
        if ((uint32_t)s->token_width != s->width || (uint32_t)s->token_height != s->height)
            printf("  coded size    %dx%d (resampled to %ux%u when decoded)\n", s->token_width,
                   s->token_height, s->width, s->height);
        printf("  colour        primaries %u, transfer %u, matrix %u, range %u\n",
               s->color_primaries, s->color_transfer, s->color_matrix, s->color_range);
        if (s->sar_num && s->sar_den)
            printf("  aspect        %u:%u\n", s->sar_num, s->sar_den);
        printf("  tokenizer     %s\n  prior         %s %s\n", tfp, s->prior_name, pfp);
        if (end > 0)
            printf("  size          %lld bytes, %.4f bits per pixel (raw tokens %.4f)\n",
                   (long long)end, bpp, raw);
        if (!ok)
            printf("  damaged       %s\n", err.message);
    }
    bsq_reader_close(r);
    if (f != stdin)
        fclose(f);
    return ok ? EXIT_OK : EXIT_RUNTIME;
}
