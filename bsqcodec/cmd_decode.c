/* bsqcodec decode: .bsq -> video or images (by the output's extension) */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bsq.h"
#include "cli.h"
#include "codec/container.h"
#include "codec/gop.h"
#include "commands.h"
#include "media.h"
#include "resize.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: bsqcodec decode INPUT.bsq -o OUTPUT [OPTIONS]\n\n"
            "Decodes a .bsq file ('-': stdin). The output kind follows OUTPUT's extension:\n"
            ".y4m, .mp4/.mkv/.mov (H.264 through libx264), a single .png, or a PNG\n"
            "sequence such as frame%%04d.png; '-' writes y4m to stdout. Frames come out\n"
            "at the size the file was encoded from (a file coded at another size, with\n"
            "encode --scale, is resampled back), or with --coded-size as coded.\n\n"
            "Options:\n"
            "  -o, --output FILE     output\n"
            "  -m, --model FILE      tokenizer model (default: $BSQ_MODEL, else the built-in\n"
            "                        model the file names); must be the one it was made with\n"
            "      --prior-model F   the learned prior's network, for files coded with one\n"
            "                        other than the built-in\n"
            "      --start N         first frame to decode\n"
            "      --frames N        decode at most N frames\n"
            "      --skip-damaged    report damaged chunks and go on with the next intact one\n"
            "      --coded-size      write frames at the coded size, not resampled\n"
            "      --crf Q           x264 quality for .mp4/.mkv/.mov (default 18, 0 lossless)\n"
            "  -t, --threads N       CPU threads (default: all)\n"
            "  -d, --device DEV      auto, cpu, cuda, cuda:N (default: auto)\n"
            "      --precision P     fp32 or bf16 on a GPU (default: bf16); the CPU\n"
            "                        is always fp32\n"
            "  -q, --quiet           no progress line\n"
            "  -h, --help            show this help\n");
}

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a ? a : 1;
}

static void report_damage(void *opaque, int64_t offset, const char *message)
{
    (void)opaque;
    cli_error("decode: damaged data at byte %lld skipped: %s", (long long)offset, message);
}

int cmd_decode(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'}, {"model", required_argument, NULL, 'm'},
        {"start", required_argument, NULL, 'S'},  {"frames", required_argument, NULL, 'F'},
        {"skip-damaged", no_argument, NULL, 'k'}, {"crf", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'}, {"device", required_argument, NULL, 'd'},
        {"precision", required_argument, NULL, CLI_OPT_PRECISION},
        {"quiet", no_argument, NULL, 'q'},        {"help", no_argument, NULL, 'h'},
        {"prior-model", required_argument, NULL, 'M'},
        {"coded-size", no_argument, NULL, 'C'},   {NULL, 0, NULL, 0},
    };
    const char *output = NULL, *model_path = NULL, *device = NULL, *prior_model = NULL;
    bsq_precision precision = BSQ_PRECISION_AUTO;
    long long start = 0, max_frames = -1, threads = 0;
    float crf = -1;
    int quiet = 0, skip = 0, as_coded = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:m:t:d:qh", opts, NULL)) != -1) {
        long long v;
        switch (c) {
        case 'o': output = optarg; break;
        case 'm': model_path = optarg; break;
        case 'M': prior_model = optarg; break;
        case 'd': device = optarg; break;
        case CLI_OPT_PRECISION:
            if (!cli_parse_precision(optarg, &precision)) {
                cli_error("decode: --precision takes fp32 or bf16");
                return EXIT_USAGE;
            }
            break;
        case 'q': quiet = 1; break;
        case 'k': skip = 1; break;
        case 'C': as_coded = 1; break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'c': {
            char *end;
            crf = strtof(optarg, &end);
            if (end == optarg || *end || !(crf >= 0 && crf <= 51)) {
                cli_error("decode: --crf takes 0..51");
                return EXIT_USAGE;
            }
            break;
        }
        case 'S':
        case 'F':
        case 't':
            if (!cli_parse_count(optarg, 1LL << 40, &v)) {
                cli_error("decode: bad number '%s'", optarg);
                return EXIT_USAGE;
            }
            if (c == 'S') start = v;
            else if (c == 'F') max_frames = v;
            else threads = v > 1024 ? 1024 : v;
            break;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc - 1 || !output) {
        cli_error("decode: need one INPUT.bsq and -o OUTPUT");
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *input = argv[optind];
    bsq_error err;
    int rc = EXIT_RUNTIME;
    FILE *in = strcmp(input, "-") == 0 ? stdin : fopen(input, "rb");
    if (!in) {
        cli_error("decode: cannot open %s", input);
        return EXIT_RUNTIME;
    }
    bsq_model *model = NULL;
    bsq_reader *rd = NULL;
    bsq_context *ctx = NULL;
    bsq_stream *stream = NULL;
    bsq_prior *prior = NULL;
    bsq_media_out *mo = NULL;
    bsq_tokens *tok = NULL;
    uint64_t *tokens = NULL;
    uint8_t *rgb = NULL;
    bsq_resizer *rs = NULL;
    char *tmp = NULL;
    /* outputs that are one file are written under a temporary name */
    int atomic = strcmp(output, "-") != 0 && !strchr(output, '%') && cli_can_rename(output);

    bsq_reader_options ro = {.skip_damaged = skip, .on_damage = report_damage};
    if (bsq_reader_open_file(in, &ro, &rd, &err) != BSQ_OK) {
        cli_error("decode: %s: %s", input, err.message);
        goto done;
    }
    const bsq_stream_info *si = bsq_reader_info(rd);
    if (!(model = cli_open_model_matching(model_path, "decode", si->tokenizer_fingerprint)))
        goto done;
    uint8_t fp[32];
    if (bsq_model_fingerprint(model, fp, &err) != BSQ_OK ||
        bsq_stream_info_check_config(si, bsq_model_config(model), &err) != BSQ_OK ||
        bsq_stream_info_check_models(si, fp, NULL, NULL, &err) != BSQ_OK) {
        cli_error("decode: %s: %s", input, err.message);
        goto done;
    }
    bsq_frame_geom geom = {si->L, si->tiles_y, si->tiles_x, si->grid_h, si->grid_w};
    char prior_kind[BSQ_PRIOR_NAME_SIZE + 1];
    snprintf(prior_kind, sizeof prior_kind, "%.*s", BSQ_PRIOR_NAME_SIZE, si->prior_name);
    if (strcmp(prior_kind, "context") && strcmp(prior_kind, "learned")) {
        cli_error("decode: %s: coded with the prior '%s', which this bsqcodec does not know",
                  input, prior_kind);
        goto done;
    }
    if (!(prior = cli_open_prior(prior_kind, prior_model, model, &geom, "decode")))
        goto done;
    if (bsq_stream_info_check_models(si, NULL, prior->ops->name, prior->fingerprint, &err) !=
        BSQ_OK) {
        cli_error("decode: %s: %s", input, err.message);
        goto done;
    }
    bsq_context_options copt = {.threads = (int)threads, .device = device,
                                .precision = precision};
    /* tokens decode to W x H; frames are written at OW x OH */
    const int W = si->token_width, H = si->token_height;
    const int OW = as_coded ? W : (int)si->width, OH = as_coded ? H : (int)si->height;
    if (bsq_context_create(model, &copt, &ctx, &err) != BSQ_OK ||
        bsq_stream_create(ctx, BSQ_STREAM_DECODE, H, W, &stream, &err) != BSQ_OK) {
        cli_error("decode: %s", err.message);
        goto done;
    }
    const size_t per_frame = bsq_stream_info_tokens_per_frame(si);
    bsq_token_layout lay = {.L = si->L, .batch = 1, .frames = 1, .tiles_y = si->tiles_y,
                            .tiles_x = si->tiles_x, .grid_h = si->grid_h, .grid_w = si->grid_w,
                            .height = H, .width = W};
    tokens = malloc(per_frame * si->num_frames * sizeof(uint64_t));
    rgb = malloc((size_t)W * H * 3);
    rs = bsq_resizer_create(cli_thread_count(threads));
    if (!tokens || !rgb || !rs ||
        bsq_tokens_create(&lay, &tok, &err) != BSQ_OK) {
        cli_error("decode: out of memory");
        goto done;
    }

    bsq_media_out_options mopt;
    bsq_media_out_options_init(&mopt, OW, OH);
    mopt.time_base = (bsq_rational){(int)si->time_base_num, (int)si->time_base_den};
    if (si->frame_rate_num && si->frame_rate_den)
        mopt.frame_rate = (bsq_rational){(int)si->frame_rate_num, (int)si->frame_rate_den};
    if (si->sar_num && si->sar_den)
        mopt.sample_aspect_ratio = (bsq_rational){(int)si->sar_num, (int)si->sar_den};
    if (OW != (int)si->width || OH != (int)si->height) {
        /* coded frames stretched by another factor across than down keep
         * the picture's shape through their sample aspect ratio:
         * sar * (width * OH) / (height * OW), reduced factor by factor so
         * that no product passes 64 bits */
        uint64_t a = (uint64_t)si->width * (uint64_t)OH, b = (uint64_t)si->height * (uint64_t)OW;
        uint64_t sn = si->sar_num && si->sar_den ? si->sar_num : 1;
        uint64_t sd = si->sar_num && si->sar_den ? si->sar_den : 1;
        uint64_t g = gcd64(a, b);
        a /= g, b /= g;
        g = gcd64(sn, sd);
        sn /= g, sd /= g;
        g = gcd64(a, sd);
        a /= g, sd /= g;
        g = gcd64(sn, b);
        sn /= g, b /= g;
        uint64_t n = a * sn, d = b * sd; /* each factor < 2^32 */
        while (n > INT32_MAX || d > INT32_MAX) { /* approximate beyond int range */
            n >>= 1;
            d >>= 1;
        }
        if (n != d || si->sar_num)
            mopt.sample_aspect_ratio = (bsq_rational){(int)(n ? n : 1), (int)(d ? d : 1)};
    }
    mopt.color_primaries = si->color_primaries;
    mopt.color_trc = si->color_transfer;
    mopt.colorspace = si->color_matrix;
    mopt.color_range = si->color_range;
    if (crf >= 0)
        mopt.crf = crf;
    if (atomic && !(tmp = cli_temp_name(output))) {
        cli_error("decode: out of memory");
        goto done;
    }
    cli_cleanup_on_signal(tmp);
    if (bsq_media_out_open(atomic ? tmp : output, &mopt, &mo, &err) != BSQ_OK) {
        cli_error("decode: %s: %s", output, err.message);
        goto done;
    }
    if (start > 0 && bsq_reader_seek_frame(rd, (uint64_t)start, &err) != BSQ_OK) {
        cli_error("decode: %s: %s", input, err.message);
        goto done;
    }
    uint64_t total = 0;
    bsq_reader_frame_count(rd, &total, &err);
    cli_progress prog;
    int64_t want = max_frames >= 0 ? max_frames : (total > (uint64_t)start ? (int64_t)(total - (uint64_t)start) : 0);
    cli_progress_init(&prog, quiet, want);
    int64_t written = 0;
    uint64_t coded_bytes = 0;
    const double tb = (double)si->time_base_num / si->time_base_den;
    for (;;) {
        const bsq_gop *g;
        if (max_frames >= 0 && written >= max_frames)
            break;
        if (bsq_reader_next_gop(rd, &g, &err) != BSQ_OK) {
            cli_error("decode: %s: %s", input, err.message);
            goto done;
        }
        if (!g)
            break;
        if ((int)g->frame_count > si->num_frames) {
            cli_error("decode: %s: GOP at byte %lld holds %u frames", input, (long long)g->offset,
                      g->frame_count);
            goto done;
        }
        if (bsq_gop_decode(prior, g->payload, g->payload_size, (int)g->frame_count, per_frame,
                           tokens, &err) != BSQ_OK) {
            if (skip) { /* the chunk's CRC held but its contents do not decode */
                report_damage(NULL, g->offset, err.message);
                continue;
            }
            cli_error("decode: %s: GOP at byte %lld: %s", input, (long long)g->offset, err.message);
            goto done;
        }
        bsq_stream_restart(stream);
        coded_bytes += g->payload_size;
        for (uint32_t f = 0; f < g->frame_count; f++) {
            memcpy(bsq_tokens_indices_mut(tok), tokens + f * per_frame, per_frame * sizeof(uint64_t));
            /* every frame of the GOP goes through the stream (the cache needs
             * the frames before --start too) */
            if (bsq_stream_decode_rgb8(stream, tok, rgb, (size_t)W * 3, &err) != BSQ_OK) {
                cli_error("decode: %s", err.message);
                goto done;
            }
            if (g->first_frame + f < (uint64_t)start ||
                (max_frames >= 0 && written >= max_frames))
                continue;
            const uint8_t *shown;
            if (bsq_resize_frame(rs, rgb, W, H, (size_t)W * 3, OW, OH, &shown, &err) != BSQ_OK) {
                cli_error("decode: %s", err.message);
                goto done;
            }
            if (bsq_media_out_write(mo, shown, (size_t)OW * 3, g->pts[f], &err) != BSQ_OK) {
                cli_error("decode: %s: %s", output, err.message);
                goto done;
            }
            written++;
            cli_progress_update(&prog, written, coded_bytes, (double)(g->pts[f] + 1) * tb);
        }
    }
    cli_progress_end(&prog);
    if (written == 0) {
        cli_error("decode: %s: no frames decoded", input);
        goto done;
    }
    bsq_status st = bsq_media_out_close(mo, &err);
    mo = NULL;
    if (st != BSQ_OK) {
        cli_error("decode: %s: %s", output, err.message);
        goto done;
    }
    if (atomic && rename(tmp, output) != 0) {
        cli_error("decode: cannot rename %s to %s", tmp, output);
        goto done;
    }
    if (bsq_reader_damage_count(rd))
        cli_error("decode: %llu damaged part(s) skipped", (unsigned long long)bsq_reader_damage_count(rd));
    rc = EXIT_OK;
done:
    if (mo)
        bsq_media_out_abort(mo);
    cli_cleanup_on_signal(NULL);
    if (rc != EXIT_OK && tmp)
        unlink(tmp);
    free(tmp);
    bsq_tokens_free(tok);
    free(tokens);
    free(rgb);
    bsq_resizer_destroy(rs);
    if (prior)
        prior->ops->destroy(prior);
    bsq_stream_destroy(stream);
    bsq_context_destroy(ctx);
    bsq_reader_close(rd);
    bsq_model_close(model);
    if (in != stdin)
        fclose(in);
    return rc;
}
