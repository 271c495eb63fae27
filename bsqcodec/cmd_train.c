/* bsqcodec train: trains a BSQ-ViT model on folders of images and videos. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bsq.h"
#include "cli.h"
#include "commands.h"
#include "train/trainer.h"
#include "train_data.h"

static void usage(FILE *f)
{
    fprintf(f,
        "Usage: bsqcodec train [OPTIONS] DATA... -o MODEL.safetensors\n\n"
        "Trains a BSQ-ViT model on the images and videos in DATA (files or folders,\n"
        "searched recursively; anything FFmpeg reads). Random crops of the model's size\n"
        "at 1, 1/2 and 1/4 scale, random horizontal flips; video models (--frames > 1,\n"
        "block-causal) see clips of that many frames, and stills panned at random speeds.\n"
        "The output holds the EMA weights. The state (weights, EMA, AdamW moments, step)\n"
        "is saved every --save-every steps, atomically; --resume continues from it.\n\n"
        "Model (ignored with --resume or --init, which carry their own):\n"
        "      --size N          crop and model size, N x N pixels (128)\n"
        "      --patch N         patch size (8)\n"
        "      --width D         transformer width (256)\n"
        "      --layers N        blocks in the encoder and in the decoder (4)\n"
        "      --heads N         attention heads (width / 64)\n"
        "      --mlp-ratio R     MLP width / D (4)\n"
        "      --ffn F           decoder output MLP width (4 D)\n"
        "      --bits L          bits per token (18)\n"
        "      --group G         group size of the entropy loss (L / 2 when even)\n"
        "      --frames T        frames per block; T > 1 trains a block-causal video model (1)\n"
        "      --init MODEL      start from these weights (an image model may start a video\n"
        "                        model: the temporal embedding starts at zero)\n\n"
        "Optimisation:\n"
        "  -n, --steps N         optimisation steps (10000)\n"
        "  -b, --batch B         crops (or clips) per step (16)\n"
        "      --lr X            peak learning rate (5e-4); --min-lr X: the cosine's floor (1e-5)\n"
        "      --warmup N        linear warm-up steps (200)\n"
        "      --weight-decay X  AdamW decay on weight matrices (1e-4)\n"
        "      --clip X          gradient-norm clip, 0 = none (1.0)\n"
        "      --ema X           EMA decay (0.999)\n"
        "      --l1 X --mse X    pixel loss weights (1, 1)\n"
        "      --entropy X       entropy regulariser weight (0.1), from --entropy-start X (0.3)\n"
        "                        over --entropy-decay N steps (2000)\n"
        "      --commit X        commitment loss weight (0)\n"
        "      --seed N          weights and data order (1)\n"
        "  -t, --threads N       compute threads (all CPUs); --loader-threads N (1)\n\n"
        "Output:\n"
        "  -o, --output FILE     the trained model (EMA weights)\n"
        "      --dtype T         f16 (default), bf16 or f32\n"
        "      --state FILE      training state (default: OUTPUT.state)\n"
        "      --save-every N    steps between states and model snapshots (500)\n"
        "      --resume          continue from --state\n"
        "      --until N         stop after step N (state saved; the schedule still spans\n"
        "                        --steps), e.g. to train in chunks of a job's time limit\n"
        "      --log FILE        CSV log, one line per step (default: OUTPUT.csv)\n"
        "  -q, --quiet           no progress display\n"
        "  -h, --help            show this help\n\n"
        "Training is deterministic for a given seed and thread count. Ctrl-C saves the\n"
        "state and the model, then stops.\n");
}

static volatile sig_atomic_t interrupted;
static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

typedef struct {
    const char *output, *state, *log, *init;
    bsq_dtype dtype;
    int save_every, resume, quiet, threads, loader_threads, batch, until;
} run_opts;

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return 0;
    *out = v;
    return 1;
}

static int parse_int(const char *s, long long lo, long long hi, int *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return 0;
    *out = (int)v;
    return 1;
}

static bsq_status save_all(bsq_trainer *t, const run_opts *r, const char *state_extra,
                           bsq_error *err)
{
    bsq_status st = bsq_trainer_save(t, r->state, state_extra, err);
    if (st != BSQ_OK)
        return st;
    bsq_model *m;
    if ((st = bsq_trainer_model(t, 1, &m, err)) != BSQ_OK)
        return st;
    st = bsq_model_save(m, r->output, r->dtype, err);
    bsq_model_close(m);
    return st;
}

static void format_eta(double s, char *buf, size_t n)
{
    if (!isfinite(s) || s < 0)
        snprintf(buf, n, "?");
    else if (s >= 3600)
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
}

int cmd_train(int argc, char **argv)
{
    enum {
        O_SIZE = 256, O_PATCH, O_WIDTH, O_LAYERS, O_HEADS, O_MLP, O_FFN, O_BITS, O_GROUP,
        O_FRAMES, O_INIT, O_LR, O_MINLR, O_WARMUP, O_WD, O_CLIP, O_EMA, O_L1, O_MSE, O_ENT,
        O_ENT0, O_ENTD, O_COMMIT, O_SEED, O_LOADER, O_DTYPE, O_STATE, O_SAVE, O_RESUME, O_LOG, O_UNTIL
    };
    static const struct option opts[] = {
        {"size", required_argument, NULL, O_SIZE}, {"patch", required_argument, NULL, O_PATCH},
        {"width", required_argument, NULL, O_WIDTH}, {"layers", required_argument, NULL, O_LAYERS},
        {"heads", required_argument, NULL, O_HEADS}, {"mlp-ratio", required_argument, NULL, O_MLP},
        {"ffn", required_argument, NULL, O_FFN}, {"bits", required_argument, NULL, O_BITS},
        {"group", required_argument, NULL, O_GROUP}, {"frames", required_argument, NULL, O_FRAMES},
        {"init", required_argument, NULL, O_INIT}, {"steps", required_argument, NULL, 'n'},
        {"batch", required_argument, NULL, 'b'}, {"lr", required_argument, NULL, O_LR},
        {"min-lr", required_argument, NULL, O_MINLR}, {"warmup", required_argument, NULL, O_WARMUP},
        {"weight-decay", required_argument, NULL, O_WD}, {"clip", required_argument, NULL, O_CLIP},
        {"ema", required_argument, NULL, O_EMA}, {"l1", required_argument, NULL, O_L1},
        {"mse", required_argument, NULL, O_MSE}, {"entropy", required_argument, NULL, O_ENT},
        {"entropy-start", required_argument, NULL, O_ENT0},
        {"entropy-decay", required_argument, NULL, O_ENTD},
        {"commit", required_argument, NULL, O_COMMIT}, {"seed", required_argument, NULL, O_SEED},
        {"threads", required_argument, NULL, 't'},
        {"loader-threads", required_argument, NULL, O_LOADER},
        {"output", required_argument, NULL, 'o'}, {"dtype", required_argument, NULL, O_DTYPE},
        {"state", required_argument, NULL, O_STATE}, {"save-every", required_argument, NULL, O_SAVE},
        {"resume", no_argument, NULL, O_RESUME}, {"log", required_argument, NULL, O_LOG},
        {"until", required_argument, NULL, O_UNTIL},
        {"quiet", no_argument, NULL, 'q'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};

    bsq_config cfg = {.image_height = 128, .image_width = 128, .patch_size = 8, .width = 256,
                      .layers = 4, .L = 18, .num_frames = 1, .layer_norm_eps = 1e-5f};
    double mlp_ratio = 4.0;
    bsq_train_options o;
    bsq_train_options_default(&o);
    run_opts r = {.dtype = BSQ_F16, .save_every = 500, .batch = 16, .loader_threads = 1};
    int c, bad = 0, seed = 1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:b:t:o:qh", opts, NULL)) != -1) {
        switch (c) {
        case O_SIZE:
            bad |= !parse_int(optarg, 8, 4096, &cfg.image_height);
            cfg.image_width = cfg.image_height;
            break;
        case O_PATCH: bad |= !parse_int(optarg, 1, 64, &cfg.patch_size); break;
        case O_WIDTH: bad |= !parse_int(optarg, 8, 8192, &cfg.width); break;
        case O_LAYERS: bad |= !parse_int(optarg, 0, 128, &cfg.layers); break;
        case O_HEADS: bad |= !parse_int(optarg, 1, 256, &cfg.heads); break;
        case O_MLP: bad |= !parse_double(optarg, 0.25, 16, &mlp_ratio); break;
        case O_FFN: bad |= !parse_int(optarg, 1, 65536, &cfg.decoder_ffn_dim); break;
        case O_BITS: bad |= !parse_int(optarg, 1, 64, &cfg.L); break;
        case O_GROUP: bad |= !parse_int(optarg, 1, 16, &cfg.group_size); break;
        case O_FRAMES: bad |= !parse_int(optarg, 1, 256, &cfg.num_frames); break;
        case O_INIT: r.init = optarg; break;
        case 'n': bad |= !parse_int(optarg, 1, 1000000000, &o.steps); break;
        case 'b': bad |= !parse_int(optarg, 1, 65536, &r.batch); break;
        case O_LR: bad |= !parse_double(optarg, 0, 1, &o.lr); break;
        case O_MINLR: bad |= !parse_double(optarg, 0, 1, &o.min_lr); break;
        case O_WARMUP: bad |= !parse_int(optarg, 0, 1000000000, &o.warmup); break;
        case O_WD: bad |= !parse_double(optarg, 0, 1, &o.weight_decay); break;
        case O_CLIP: bad |= !parse_double(optarg, 0, 1e9, &o.clip); break;
        case O_EMA: bad |= !parse_double(optarg, 0, 0.999999, &o.ema); break;
        case O_L1: bad |= !parse_double(optarg, 0, 1e6, &o.l1); break;
        case O_MSE: bad |= !parse_double(optarg, 0, 1e6, &o.mse); break;
        case O_ENT: bad |= !parse_double(optarg, 0, 1e6, &o.entropy); break;
        case O_ENT0: bad |= !parse_double(optarg, 0, 1e6, &o.entropy_start); break;
        case O_ENTD: bad |= !parse_int(optarg, 0, 1000000000, &o.entropy_decay); break;
        case O_COMMIT: bad |= !parse_double(optarg, 0, 1e6, &o.commit); break;
        case O_SEED: bad |= !parse_int(optarg, 0, 2147483647, &seed); break;
        case 't': bad |= !parse_int(optarg, 0, 1024, &r.threads); break;
        case O_LOADER: bad |= !parse_int(optarg, 1, 64, &r.loader_threads); break;
        case 'o': r.output = optarg; break;
        case O_DTYPE:
            if (!strcmp(optarg, "f16"))
                r.dtype = BSQ_F16;
            else if (!strcmp(optarg, "bf16"))
                r.dtype = BSQ_BF16;
            else if (!strcmp(optarg, "f32"))
                r.dtype = BSQ_F32;
            else
                bad = 1;
            break;
        case O_STATE: r.state = optarg; break;
        case O_SAVE: bad |= !parse_int(optarg, 1, 1000000000, &r.save_every); break;
        case O_RESUME: r.resume = 1; break;
        case O_LOG: r.log = optarg; break;
        case O_UNTIL: bad |= !parse_int(optarg, 1, 1000000000, &r.until); break;
        case 'q': r.quiet = 1; break;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
        if (bad) {
            cli_error("train: bad value '%s' for an option", optarg ? optarg : "");
            return EXIT_USAGE;
        }
    }
    if (!r.output || optind >= argc) {
        cli_error("train: need training DATA and -o MODEL.safetensors");
        usage(stderr);
        return EXIT_USAGE;
    }
    o.seed = (uint64_t)seed;
    if (!cfg.heads)
        cfg.heads = cfg.width >= 64 ? cfg.width / 64 : 1;
    cfg.mlp_dim = (int)lround(cfg.width * mlp_ratio);
    if (!cfg.decoder_ffn_dim)
        cfg.decoder_ffn_dim = 4 * cfg.width;
    if (!cfg.group_size)
        cfg.group_size = cfg.L % 2 == 0 && cfg.L / 2 <= 16 ? cfg.L / 2 : 1;
    cfg.block_causal = cfg.num_frames > 1;

    char *state_buf = NULL, *log_buf = NULL;
    if (!r.state) {
        state_buf = malloc(strlen(r.output) + 8);
        sprintf(state_buf, "%s.state", r.output);
        r.state = state_buf;
    }
    if (!r.log) {
        log_buf = malloc(strlen(r.output) + 8);
        sprintf(log_buf, "%s.csv", r.output);
        r.log = log_buf;
    }

    int rc = EXIT_RUNTIME;
    bsq_error err;
    bsq_model *init = NULL;
    bsq_trainer *t = NULL;
    train_data *data = NULL;
    FILE *log = NULL;
    if (r.init) {
        if (!(init = cli_open_model(r.init, "train")))
            goto done;
        /* the architecture comes from the initial model; frames from the options */
        int frames = cfg.num_frames;
        cfg = *bsq_model_config(init);
        if (frames > 1) {
            cfg.num_frames = frames;
            cfg.block_causal = 1;
        }
    }
    if (bsq_trainer_create(&cfg, init, &o, r.threads, &t, &err) != BSQ_OK) {
        cli_error("train: %s", err.message);
        goto done;
    }
    if (r.resume) {
        if (access(r.state, F_OK) != 0) {
            cli_error("train: --resume: no state at %s", r.state);
            goto done;
        }
        if (bsq_trainer_load(t, r.state, NULL, &err) != BSQ_OK) {
            cli_error("train: %s", err.message);
            goto done;
        }
    }
    train_data_options dopt = {.height = cfg.image_height, .width = cfg.image_width,
                               .frames = cfg.num_frames, .batch = r.batch,
                               .seed = (uint64_t)seed, .threads = r.loader_threads};
    if (train_data_open(argv + optind, argc - optind, &dopt, &data, &err) != BSQ_OK) {
        cli_error("train: %s", err.message);
        goto done;
    }
    int nimg, nclip, nskip;
    int64_t nfr;
    train_data_describe(data, &nimg, &nclip, &nfr, &nskip);
    int64_t start = bsq_trainer_step_count(t);
    if (!r.quiet)
        fprintf(stderr,
                "bsqcodec: train: %d images, %d videos (%lld frames), %d skipped; model %dx%d "
                "p%d D%d %d+%d layers %d heads L%d g%d, %d frame%s%s; batch %d, steps %lld..%d\n",
                nimg, nclip, (long long)nfr, nskip, cfg.image_width, cfg.image_height,
                cfg.patch_size, cfg.width, cfg.layers, cfg.layers, cfg.heads, cfg.L,
                cfg.group_size, cfg.num_frames, cfg.num_frames > 1 ? "s" : "",
                cfg.num_frames > 1 ? " (block-causal)" : "", r.batch, (long long)start, o.steps);
    log = fopen(r.log, start > 0 ? "a" : "w");
    if (!log) {
        cli_error("train: cannot write %s: %s", r.log, strerror(errno));
        goto done;
    }
    if (start == 0)
        fprintf(log, "step,loss,l1,mse,psnr,h_sample,h_codebook,commit,bit_balance,grad_norm,lr,"
                     "seconds\n");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int tty = !r.quiet && isatty(STDERR_FILENO);
    double t0 = cli_now(), last_print = 0, last_flush = 0;
    double ema_psnr = 0;
    int64_t step;
    const int64_t end = r.until && r.until < o.steps ? r.until : o.steps;
    for (step = start; step < end && !interrupted; step++) {
        const float *pix = train_data_batch(data, step);
        bsq_train_stats s;
        if (bsq_trainer_step(t, pix, r.batch, cfg.num_frames, &s, &err) != BSQ_OK) {
            cli_error("train: %s", err.message);
            goto done;
        }
        double now = cli_now() - t0;
        ema_psnr = step == start ? s.psnr : 0.95 * ema_psnr + 0.05 * s.psnr;
        fprintf(log, "%lld,%.6f,%.6f,%.6f,%.3f,%.4f,%.4f,%.5f,%.4f,%.4f,%.3e,%.2f\n",
                (long long)step + 1, s.loss, s.l1, s.mse, s.psnr, s.h_sample, s.h_codebook,
                s.commit, s.bit_balance, s.grad_norm, s.lr, now);
        if (now - last_flush > 10) { /* so `tail -f` on the log follows the run */
            fflush(log);
            last_flush = now;
        }
        int64_t done_steps = step + 1 - start;
        double rate = done_steps / (now > 0 ? now : 1e-9);
        if (!r.quiet && (tty ? now - last_print > 0.5 : (step + 1) % 100 == 0)) {
            char eta[32];
            format_eta((o.steps - step - 1) / rate, eta, sizeof eta);
            fprintf(stderr,
                    "%sstep %lld/%d loss %.4f l1 %.4f psnr %.2f dB (avg %.2f) H %.2f/%.2f "
                    "bits %.2f lr %.2e %.2f steps/s ETA %s%s",
                    tty ? "\r" : "", (long long)step + 1, o.steps, s.loss, s.l1, s.psnr, ema_psnr,
                    s.h_sample, s.h_codebook, s.bit_balance, s.lr, rate, eta, tty ? "  " : "\n");
            last_print = now;
        }
        if ((step + 1) % r.save_every == 0) {
            fflush(log);
            if (save_all(t, &r, NULL, &err) != BSQ_OK) {
                cli_error("train: %s", err.message);
                goto done;
            }
        }
    }
    if (tty)
        fputc('\n', stderr);
    if (fflush(log) != 0) {
        cli_error("train: writing %s: %s", r.log, strerror(errno));
        goto done;
    }
    if (save_all(t, &r, NULL, &err) != BSQ_OK) {
        cli_error("train: %s", err.message);
        goto done;
    }
    if (!r.quiet)
        fprintf(stderr, "bsqcodec: train: %s after step %lld: %s (state %s)\n",
                interrupted ? "interrupted" : step < o.steps ? "stopped" : "done",
                (long long)step, r.output, r.state);
    rc = interrupted ? 130 : EXIT_OK;
done:
    if (log)
        fclose(log);
    train_data_close(data);
    bsq_trainer_destroy(t);
    bsq_model_close(init);
    free(state_buf);
    free(log_buf);
    return rc;
}
