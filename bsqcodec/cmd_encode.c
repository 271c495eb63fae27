/* bsqcodec encode: any video or image FFmpeg reads -> .bsq */
#include <getopt.h>
#include <math.h>
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
            "Usage: bsqcodec encode INPUT -o OUTPUT.bsq [OPTIONS]\n\n"
            "Encodes a video or image (any format FFmpeg reads; '-' reads y4m from stdin)\n"
            "into a .bsq file: BSQ-ViT tokens coded losslessly by an adaptive prior.\n\n"
            "Options:\n"
            "  -o, --output FILE   output .bsq ('-': stdout)\n"
            "  -m, --model FILE    tokenizer model (default: $BSQ_MODEL, else the built-in\n"
            "                      image model for a still picture, video model otherwise)\n"
            "      --prior P       auto (default: learned when a network for the model is at\n"
            "                      hand, else context), context or learned\n"
            "      --prior-model F the learned prior's network (bsqcodec train-prior); the\n"
            "                      default models have theirs built in\n"
            "  -g, --gop N         frames per GOP, 1..1024 (default: 16, or the smallest\n"
            "                      multiple of a video model's block from 16 up); the\n"
            "                      prior's context spans a GOP\n"
            "      --start N       skip the first N frames\n"
            "      --frames N      encode at most N frames\n"
            "  -s, --scale S       code the frames resampled by S, 0.125..4 (default 1):\n"
            "                      the rate control; fewer tokens below 1, more above.\n"
            "                      The size is then stretched to fill the model's tiles\n"
            "                      (same tokens, sharper). Decoding resamples back to\n"
            "                      the input's size\n"
            "      --no-fill       code at exactly the scaled size (edge tiles padded)\n"
            "      --coded-size WxH code the frames resampled to exactly W x H\n"
            "  -t, --threads N     CPU threads (default: all)\n"
            "  -d, --device DEV    auto, cpu, cuda, cuda:N (default: auto)\n"
            "      --precision P   fp32 or bf16 on a GPU (default: bf16); the CPU\n"
            "                      is always fp32\n"
            "  -q, --quiet         no progress line\n"
            "  -h, --help          show this help\n");
}

typedef struct {
    bsq_context *ctx;
    bsq_stream *stream;
    bsq_prior *prior;
    bsq_writer *writer;
    uint64_t *gop_tokens; /* gop * per_frame */
    int64_t *gop_pts;
    int gop_len, in_gop;
    size_t per_frame;
    uint64_t next_frame;
} encoder;

static int flush_gop(encoder *e, bsq_error *err)
{
    if (!e->in_gop)
        return BSQ_OK;
    uint8_t *payload;
    size_t size;
    bsq_status st = bsq_gop_encode(e->prior, e->gop_tokens, e->in_gop, e->per_frame, &payload,
                                   &size, err);
    if (st != BSQ_OK)
        return st;
    bsq_gop g = {.first_frame = e->next_frame, .frame_count = (uint32_t)e->in_gop,
                 .pts = e->gop_pts, .payload = payload, .payload_size = size};
    st = bsq_writer_write_gop(e->writer, &g, err);
    free(payload);
    e->next_frame += (uint64_t)e->in_gop;
    e->in_gop = 0;
    bsq_stream_restart(e->stream); /* the next GOP decodes on its own */
    return st;
}

int cmd_encode(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'}, {"model", required_argument, NULL, 'm'},
        {"gop", required_argument, NULL, 'g'},    {"start", required_argument, NULL, 'S'},
        {"frames", required_argument, NULL, 'F'}, {"threads", required_argument, NULL, 't'},
        {"device", required_argument, NULL, 'd'}, {"quiet", no_argument, NULL, 'q'},
        {"precision", required_argument, NULL, CLI_OPT_PRECISION},
        {"prior", required_argument, NULL, 'P'}, {"prior-model", required_argument, NULL, 'M'},
        {"scale", required_argument, NULL, 's'},  {"coded-size", required_argument, NULL, 'C'},
        {"no-fill", no_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *output = NULL, *model_path = NULL, *device = NULL;
    bsq_precision precision = BSQ_PRECISION_AUTO;
    const char *prior_kind = "auto", *prior_model = NULL;
    long long gop = 0, start = 0, max_frames = -1, threads = 0;
    double scale = 0;
    int coded_w = 0, coded_h = 0, fill = 1;
    int quiet = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:m:g:t:d:s:qh", opts, NULL)) != -1) {
        long long v;
        switch (c) {
        case 'o': output = optarg; break;
        case 'm': model_path = optarg; break;
        case 'd': device = optarg; break;
        case CLI_OPT_PRECISION:
            if (!cli_parse_precision(optarg, &precision)) {
                cli_error("encode: --precision takes fp32 or bf16");
                return EXIT_USAGE;
            }
            break;
        case 'q': quiet = 1; break;
        case 'P':
            if (strcmp(optarg, "auto") && strcmp(optarg, "context") && strcmp(optarg, "learned")) {
                cli_error("encode: --prior takes auto, context or learned");
                return EXIT_USAGE;
            }
            prior_kind = optarg;
            break;
        case 'M': prior_model = optarg; break;
        case 'N': fill = 0; break;
        case 's': {
            char *end;
            scale = strtod(optarg, &end);
            if (end == optarg || *end || !(scale >= 0.125 && scale <= 4)) {
                cli_error("encode: --scale takes a factor from 0.125 to 4");
                return EXIT_USAGE;
            }
            break;
        }
        case 'C': {
            char *x, *end;
            long w = strtol(optarg, &x, 10), h = x != optarg && (*x == 'x' || *x == 'X')
                                                     ? strtol(x + 1, &end, 10) : 0;
            coded_w = w >= 1 && w <= 65535 ? (int)w : 0;
            coded_h = h >= 1 && h <= 65535 && end != x + 1 && !*end ? (int)h : 0;
            if (!coded_w || !coded_h) {
                cli_error("encode: --coded-size takes WxH, 1..65535 each, such as 640x360");
                return EXIT_USAGE;
            }
            break;
        }
        case 'h': usage(stdout); return EXIT_OK;
        case 'g':
        case 'S':
        case 'F':
        case 't':
            if (!cli_parse_count(optarg, 1LL << 40, &v) || ((c == 'g') && v < 1)) {
                cli_error("encode: bad number '%s'", optarg);
                return EXIT_USAGE;
            }
            if (c == 'g') gop = v;
            else if (c == 'S') start = v;
            else if (c == 'F') max_frames = v;
            else threads = v > 1024 ? 1024 : v;
            break;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc - 1 || !output) {
        cli_error("encode: need one INPUT and -o OUTPUT.bsq");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (scale > 0 && coded_w > 0) {
        cli_error("encode: --scale and --coded-size: give one of them");
        return EXIT_USAGE;
    }
    const char *input = argv[optind];
    bsq_error err;
    int rc = EXIT_RUNTIME;
    bsq_model *model = cli_open_model_for_input(model_path, "encode", input);
    if (!model)
        return EXIT_RUNTIME;
    const bsq_config *cfg = bsq_model_config(model);
    if (gop > 1024) {
        cli_error("encode: --gop %lld: at most 1024 frames", gop);
        bsq_model_close(model);
        return EXIT_USAGE;
    }
    encoder e;
    memset(&e, 0, sizeof e);
    /* an image model's frames are tokenized alone; a GOP of several lets
     * the prior use the previous frame. Video models: whole blocks, at
     * least 16 frames, so short blocks do not restart the prior often */
    int block = cfg->num_frames > 1 ? cfg->num_frames : 1;
    e.gop_len = gop ? (int)gop : ((16 + block - 1) / block) * block;
    bsq_media_in *in = NULL;
    FILE *out = NULL;
    char *tmp = NULL;
    uint8_t *rgb = NULL;
    bsq_resizer *rs = NULL;
    bsq_tokens *tok = NULL;
    int to_stdout = strcmp(output, "-") == 0;
    /* a new or regular file is written under a temporary name and renamed
     * when complete; devices and FIFOs are written in place */
    int atomic = !to_stdout && cli_can_rename(output);

    bsq_context_options copt = {.threads = (int)threads, .device = device,
                                .precision = precision};
    if (bsq_media_in_open(input, NULL, &in, &err) != BSQ_OK ||
        bsq_context_create(model, &copt, &e.ctx, &err) != BSQ_OK) {
        cli_error("encode: %s", err.message);
        goto done;
    }
    const bsq_media_info *mi = bsq_media_in_info(in);
    const int W = mi->width, H = mi->height;
    /* the coded size: what the tokens cover; decoders resample back to W x H */
    int CW = W, CH = H;
    if (coded_w > 0) {
        CW = coded_w;
        CH = coded_h;
    } else if (scale > 0 && scale != 1) {
        long cw = lround(W * scale), ch = lround(H * scale);
        if (cw > 65535 || ch > 65535) {
            cli_error("encode: --scale %g makes %ldx%ld, above 65535 a side", scale, cw, ch);
            goto done;
        }
        CW = cw < 1 ? 1 : (int)cw;
        CH = ch < 1 ? 1 : (int)ch;
    }
    /* the tiles that cover CW x CH cost their tokens whether the picture
     * fills them or not: stretched to fill them, it gets more of each
     * token (held-out clip: +0.34 dB at the same rate, 640x360 -> 728x368) */
    if (!coded_w && fill && bsq_tile_cover_size(cfg, CW, CH, &CW, &CH, &err) != BSQ_OK) {
        cli_error("encode: %s", err.message);
        goto done;
    }
    if (bsq_stream_create(e.ctx, BSQ_STREAM_ENCODE, CH, CW, &e.stream, &err) != BSQ_OK) {
        cli_error("encode: %s%s", err.message,
                  CW != W || CH != H ? " (at the coded size asked for)" : "");
        goto done;
    }
    rgb = malloc((size_t)W * H * 3);
    rs = bsq_resizer_create(cli_thread_count(threads));
    if (!rgb || !rs) {
        cli_error("encode: out of memory");
        goto done;
    }
    if (to_stdout) {
        out = stdout;
    } else {
        tmp = atomic ? cli_temp_name(output) : NULL;
        out = !atomic || tmp ? fopen(atomic ? tmp : output, "wb") : NULL;
        cli_cleanup_on_signal(tmp);
        if (!out) {
            cli_error("encode: cannot create %s", tmp ? tmp : output);
            goto done;
        }
    }

    cli_progress prog;
    cli_progress_init(&prog, quiet, mi->frame_count > start ? mi->frame_count - start : 0);
    int64_t pts = 0;
    uint64_t seen = 0, coded = 0;
    for (;;) {
        int got;
        if (bsq_media_in_read(in, rgb, (size_t)W * 3, &pts, &got, &err) != BSQ_OK) {
            cli_error("encode: %s: %s", input, err.message);
            goto done;
        }
        if (!got || (max_frames >= 0 && coded >= (uint64_t)max_frames))
            break;
        if (seen++ < (uint64_t)start)
            continue;
        const uint8_t *frame;
        if (bsq_resize_frame(rs, rgb, W, H, (size_t)W * 3, CW, CH, &frame, &err) != BSQ_OK ||
            bsq_stream_encode_rgb8(e.stream, frame, (size_t)CW * 3, &tok, &err) != BSQ_OK) {
            cli_error("encode: frame %llu: %s", (unsigned long long)seen - 1, err.message);
            goto done;
        }
        if (!e.writer) { /* the first frame fixes the token geometry */
            const bsq_token_layout *l = bsq_tokens_layout(tok);
            bsq_frame_geom geom = {l->L, l->tiles_y, l->tiles_x, l->grid_h, l->grid_w};
            e.per_frame = l->count;
            e.gop_tokens = malloc(e.per_frame * e.gop_len * sizeof(uint64_t));
            e.gop_pts = malloc(e.gop_len * sizeof(int64_t));
            if (!e.gop_tokens || !e.gop_pts) {
                cli_error("encode: out of memory");
                goto done;
            }
            if (!(e.prior = cli_open_prior(prior_kind, prior_model, model, &geom, "encode")))
                goto done;
            bsq_stream_info si;
            memset(&si, 0, sizeof si);
            si.width = (uint32_t)W;
            si.height = (uint32_t)H;
            si.time_base_num = (uint32_t)mi->time_base.num;
            si.time_base_den = (uint32_t)mi->time_base.den;
            if (mi->avg_frame_rate.num > 0 && mi->avg_frame_rate.den > 0) {
                si.frame_rate_num = (uint32_t)mi->avg_frame_rate.num;
                si.frame_rate_den = (uint32_t)mi->avg_frame_rate.den;
            }
            if (mi->sample_aspect_ratio.num > 0 && mi->sample_aspect_ratio.den > 0) {
                si.sar_num = (uint32_t)mi->sample_aspect_ratio.num;
                si.sar_den = (uint32_t)mi->sample_aspect_ratio.den;
            }
            /* the tokens hold RGB converted with this description */
            si.color_primaries = (uint8_t)mi->color_primaries;
            si.color_transfer = (uint8_t)mi->color_trc;
            si.color_matrix = (uint8_t)mi->matrix_used;
            si.color_range = (uint8_t)mi->color_range;
            si.rotation = 0; /* already applied to the frames */
            si.L = l->L;
            si.num_frames = e.gop_len;
            si.grid_h = l->grid_h;
            si.grid_w = l->grid_w;
            si.tiles_y = l->tiles_y;
            si.tiles_x = l->tiles_x;
            si.token_width = l->width;
            si.token_height = l->height;
            snprintf(si.prior_name, sizeof si.prior_name, "%s", e.prior->ops->name);
            memcpy(si.prior_fingerprint, e.prior->fingerprint, BSQ_PRIOR_FP_SIZE);
            if (bsq_model_fingerprint(model, si.tokenizer_fingerprint, &err) != BSQ_OK ||
                bsq_writer_open_file(out, &si, &e.writer, &err) != BSQ_OK) {
                cli_error("encode: %s", err.message);
                goto done;
            }
        }
        memcpy(e.gop_tokens + e.in_gop * e.per_frame, bsq_tokens_indices(tok),
               e.per_frame * sizeof(uint64_t));
        e.gop_pts[e.in_gop++] = pts;
        bsq_tokens_free(tok);
        tok = NULL;
        coded++;
        if (e.in_gop == e.gop_len && flush_gop(&e, &err) != BSQ_OK) {
            cli_error("encode: %s", err.message);
            goto done;
        }
        double secs = (double)(pts + 1) * mi->time_base.num / (mi->time_base.den ? mi->time_base.den : 1);
        cli_progress_update(&prog, (int64_t)coded, (uint64_t)bsq_writer_offset(e.writer), secs);
    }
    cli_progress_end(&prog);
    if (!e.writer) {
        cli_error("encode: %s: no frames to encode", input);
        goto done;
    }
    if (flush_gop(&e, &err) != BSQ_OK) {
        cli_error("encode: %s", err.message);
        goto done;
    }
    bsq_status st = bsq_writer_close(e.writer, &err);
    e.writer = NULL;
    if (st != BSQ_OK) {
        cli_error("encode: %s", err.message);
        goto done;
    }
    if (!to_stdout) {
        int bad = fflush(out) != 0 || (atomic && fsync(fileno(out)) != 0);
        bad |= fclose(out) != 0;
        out = NULL;
        if (bad || (atomic && rename(tmp, output) != 0)) {
            cli_error("encode: writing %s failed", output);
            goto done;
        }
    } else if (fflush(stdout) != 0) {
        cli_error("encode: writing to stdout failed");
        goto done;
    }
    rc = EXIT_OK;
done:
    if (e.writer)
        bsq_writer_abort(e.writer);
    if (out && !to_stdout)
        fclose(out);
    cli_cleanup_on_signal(NULL);
    if (rc != EXIT_OK && tmp)
        unlink(tmp); /* never leave a partial file behind */
    free(tmp);
    bsq_tokens_free(tok);
    if (e.prior)
        e.prior->ops->destroy(e.prior);
    free(e.gop_tokens);
    free(e.gop_pts);
    bsq_stream_destroy(e.stream);
    bsq_context_destroy(e.ctx);
    bsq_media_in_close(in);
    bsq_model_close(model);
    bsq_resizer_destroy(rs);
    free(rgb);
    return rc;
}
