/* bsqcodec train-prior: trains the learned prior's network on a model's
 * tokens of some clips. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bsq.h"
#include "cli.h"
#include "commands.h"
#include "media.h"
#include "resize.h"
#include "train/prior_train.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: bsqcodec train-prior CLIP... -o PRIOR.safetensors [OPTIONS]\n\n"
            "Tokenizes the clips (anything FFmpeg reads) with the model, frame by frame in\n"
            "GOPs as 'encode' does, and trains the learned prior's network to predict each\n"
            "token's bits from the previous frame's 3x3 neighbourhood, the decoded\n"
            "neighbours and the token's earlier bits; then quantises it to the integer\n"
            "network 'encode --prior learned --prior-model PRIOR' runs.\n\n"
            "Options:\n"
            "  -o, --output FILE    the network (safetensors)\n"
            "  -m, --model FILE     tokenizer (default: $BSQ_MODEL, else the built-in video model)\n"
            "  -g, --gop N          frames per GOP, as encode will use (16)\n"
            "      --frames N       at most N frames per clip (all)\n"
            "      --hidden N       hidden units, 1..256 (64)\n"
            "      --epochs N       passes over the tokens (4)\n"
            "      --lr X           Adam's learning rate, decayed linearly (2e-3)\n"
            "      --seed N         (1)\n"
            "      --no-fill        tokenize the frames at their own size (encode --no-fill);\n"
            "                       by default they are stretched to fill the model's tiles,\n"
            "                       as encode codes them\n"
            "  -t, --threads N      tokenizer threads (all CPUs)\n"
            "  -q, --quiet          no per-epoch lines\n"
            "  -h, --help           show this help\n");
}

/* Tokens of every frame of one clip: *tokens malloc'd. */
static int tokenize_clip(bsq_context *ctx, const bsq_config *cfg, int fill, int threads,
                         const char *path, int gop, long long max_frames, bsq_prior_clip *clip,
                         uint64_t **tokens)
{
    bsq_error err;
    bsq_media_in *in = NULL;
    bsq_stream *stream = NULL;
    bsq_resizer *rs = NULL;
    uint8_t *rgb = NULL;
    float *planar = NULL;
    uint64_t *all = NULL;
    size_t per = 0, cap = 0;
    int frames = 0, rc = -1;
    if (bsq_media_in_open(path, NULL, &in, &err) != BSQ_OK) {
        cli_error("train-prior: %s", err.message);
        return -1;
    }
    const bsq_media_info *mi = bsq_media_in_info(in);
    const int W = mi->width, H = mi->height;
    int CW = W, CH = H; /* coded as encode codes them: stretched to fill the tiles */
    if (fill && bsq_tile_cover_size(cfg, W, H, &CW, &CH, &err) != BSQ_OK) {
        cli_error("train-prior: %s: %s", path, err.message);
        goto done;
    }
    rgb = malloc((size_t)W * H * 3);
    planar = malloc((size_t)CW * CH * 3 * sizeof(float));
    rs = bsq_resizer_create(threads);
    if (!rgb || !planar || !rs) {
        cli_error("train-prior: out of memory");
        goto done;
    }
    if (bsq_stream_create(ctx, BSQ_STREAM_ENCODE, CH, CW, &stream, &err) != BSQ_OK) {
        cli_error("train-prior: %s: %s", path, err.message);
        goto done;
    }
    for (;;) {
        int got;
        if (bsq_media_in_read(in, rgb, (size_t)W * 3, NULL, &got, &err) != BSQ_OK) {
            cli_error("train-prior: %s: %s", path, err.message);
            goto done;
        }
        if (!got || (max_frames > 0 && frames >= max_frames))
            break;
        if (frames % gop == 0)
            bsq_stream_restart(stream); /* as the encoder does at a GOP start */
        const uint8_t *frame;
        if (bsq_resize_frame(rs, rgb, W, H, (size_t)W * 3, CW, CH, &frame, &err) != BSQ_OK) {
            cli_error("train-prior: %s: %s", path, err.message);
            goto done;
        }
        bsq_rgb8_to_planar(frame, CW, CH, (size_t)CW * 3, planar);
        bsq_tokens *tok;
        if (bsq_stream_encode(stream, planar, &tok, &err) != BSQ_OK) {
            cli_error("train-prior: %s: %s", path, err.message);
            goto done;
        }
        const bsq_token_layout *l = bsq_tokens_layout(tok);
        if (!per) {
            per = l->count;
            clip->geom = (bsq_frame_geom){l->L, l->tiles_y, l->tiles_x, l->grid_h, l->grid_w};
        }
        if ((size_t)(frames + 1) * per > cap) {
            cap = cap ? cap * 2 : per * 16;
            uint64_t *n = realloc(all, cap * sizeof *all);
            if (!n) {
                bsq_tokens_free(tok);
                cli_error("train-prior: out of memory");
                goto done;
            }
            all = n;
        }
        memcpy(all + (size_t)frames * per, bsq_tokens_indices(tok), per * sizeof *all);
        bsq_tokens_free(tok);
        frames++;
    }
    if (!frames) {
        cli_error("train-prior: %s: no frames", path);
        goto done;
    }
    clip->frames = frames;
    clip->gop = gop;
    *tokens = all;
    all = NULL;
    rc = 0;
done:
    free(all);
    free(rgb);
    bsq_resizer_destroy(rs);
    free(planar);
    bsq_stream_destroy(stream);
    bsq_media_in_close(in);
    return rc;
}

int cmd_train_prior(int argc, char **argv)
{
    enum { O_FRAMES = 256, O_HIDDEN, O_EPOCHS, O_LR, O_SEED };
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'}, {"model", required_argument, NULL, 'm'},
        {"gop", required_argument, NULL, 'g'},    {"frames", required_argument, NULL, O_FRAMES},
        {"hidden", required_argument, NULL, O_HIDDEN},
        {"epochs", required_argument, NULL, O_EPOCHS}, {"lr", required_argument, NULL, O_LR},
        {"seed", required_argument, NULL, O_SEED}, {"threads", required_argument, NULL, 't'},
        {"quiet", no_argument, NULL, 'q'},         {"help", no_argument, NULL, 'h'},
        {"no-fill", no_argument, NULL, 'N'},
        {NULL, 0, NULL, 0}};
    const char *output = NULL, *model_path = NULL;
    long long gop = 16, max_frames = 0, hidden = 64, epochs = 4, seed = 1, threads = 0;
    double lr = 2e-3;
    int quiet = 0, fill = 1, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:m:g:t:qh", opts, NULL)) != -1) {
        int ok = 1;
        switch (c) {
        case 'o': output = optarg; break;
        case 'm': model_path = optarg; break;
        case 'g': ok = cli_parse_count(optarg, 1024, &gop) && gop >= 1; break;
        case O_FRAMES: ok = cli_parse_count(optarg, 1 << 30, &max_frames) && max_frames >= 1; break;
        case O_HIDDEN: ok = cli_parse_count(optarg, 256, &hidden) && hidden >= 1; break;
        case O_EPOCHS: ok = cli_parse_count(optarg, 1000, &epochs) && epochs >= 1; break;
        case O_SEED: ok = cli_parse_count(optarg, 1LL << 40, &seed); break;
        case 't': ok = cli_parse_count(optarg, 1024, &threads); break;
        case O_LR: {
            char *end;
            lr = strtod(optarg, &end);
            ok = *end == 0 && lr > 0 && lr < 1;
            break;
        }
        case 'q': quiet = 1; break;
        case 'N': fill = 0; break;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
        if (!ok) {
            cli_error("train-prior: bad value '%s'", optarg);
            return EXIT_USAGE;
        }
    }
    if (!output || optind >= argc) {
        cli_error("train-prior: need CLIPs and -o PRIOR.safetensors");
        usage(stderr);
        return EXIT_USAGE;
    }
    int rc = EXIT_RUNTIME, nclips = argc - optind;
    bsq_error err;
    bsq_context *ctx = NULL;
    bsq_prior_clip *clips = calloc((size_t)nclips, sizeof *clips);
    uint64_t **toks = calloc((size_t)nclips, sizeof *toks);
    bsq_model *model = cli_open_model(model_path, "train-prior");
    if (!model || !clips || !toks)
        goto done;
    bsq_context_options copt = {.threads = (int)threads};
    if (bsq_context_create(model, &copt, &ctx, &err) != BSQ_OK) {
        cli_error("train-prior: %s", err.message);
        goto done;
    }
    for (int i = 0; i < nclips; i++) {
        if (tokenize_clip(ctx, bsq_model_config(model), fill, cli_thread_count(threads),
                          argv[optind + i], (int)gop, max_frames, &clips[i], &toks[i]))
            goto done;
        clips[i].tokens = toks[i];
        if (!quiet)
            fprintf(stderr, "bsqcodec: train-prior: %s: %d frames\n", argv[optind + i],
                    clips[i].frames);
    }
    uint8_t fp[32];
    if (bsq_model_fingerprint(model, fp, &err) != BSQ_OK) {
        cli_error("train-prior: %s", err.message);
        goto done;
    }
    bsq_prior_train_options o;
    bsq_prior_train_options_default(&o);
    o.hidden = (int)hidden;
    o.epochs = (int)epochs;
    o.lr = lr;
    o.seed = (uint64_t)seed;
    o.verbose = !quiet;
    bsq_prior_train_report rep;
    if (bsq_prior_train(clips, nclips, bsq_model_config(model)->L, fp, &o, output, &rep, &err) !=
        BSQ_OK) {
        cli_error("train-prior: %s", err.message);
        goto done;
    }
    if (!quiet)
        fprintf(stderr,
                "bsqcodec: train-prior: %zu tokens; %.4f bits per token (float), %.4f "
                "(integer network alone); wrote %s\n",
                rep.tokens, rep.float_bits, rep.int_bits, output);
    rc = EXIT_OK;
done:
    for (int i = 0; toks && i < nclips; i++)
        free(toks[i]);
    free(toks);
    free(clips);
    bsq_context_destroy(ctx);
    bsq_model_close(model);
    return rc;
}
