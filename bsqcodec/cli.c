#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "cli.h"
#include "media.h"
#include "codec/prior_net.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"

/* --model, else $BSQ_MODEL, else NULL (the default model). */
static const char *model_path(const char *path)
{
    const char *env = getenv("BSQ_MODEL");
    return path ? path : env && *env ? env : NULL;
}

static bsq_model *open_default(bsq_default_model which, const char *cmd)
{
    bsq_model *m;
    bsq_error err;
    if (bsq_model_open_default(which, &m, &err) != BSQ_OK) {
        cli_error("%s: %s", cmd, err.message);
        return NULL;
    }
    return m;
}

bsq_model *cli_open_model_for(const char *path, const char *cmd, bsq_default_model which)
{
    path = model_path(path);
    if (!path)
        return open_default(which, cmd);
    bsq_model *m;
    bsq_error err;
    if (bsq_model_open(path, NULL, &m, &err) != BSQ_OK) {
        cli_error("%s: %s", cmd, err.message);
        return NULL;
    }
    return m;
}

bsq_model *cli_open_model(const char *path, const char *cmd)
{
    return cli_open_model_for(path, cmd, BSQ_DEFAULT_VIDEO);
}

bsq_model *cli_open_model_for_input(const char *path, const char *cmd, const char *input)
{
    if (model_path(path) || !strcmp(input, "-"))
        return cli_open_model_for(path, cmd, BSQ_DEFAULT_VIDEO);
    /* a still picture goes to the image model, anything else to the video model */
    bsq_media_in *in;
    bsq_error err;
    int still = 0;
    if (bsq_media_in_open(input, NULL, &in, &err) == BSQ_OK) {
        still = bsq_media_in_info(in)->is_still_image;
        bsq_media_in_close(in);
    }
    return open_default(still ? BSQ_DEFAULT_IMAGE : BSQ_DEFAULT_VIDEO, cmd);
}

bsq_model *cli_open_model_matching(const char *path, const char *cmd, const uint8_t fp[32])
{
    if (model_path(path))
        return cli_open_model_for(path, cmd, BSQ_DEFAULT_VIDEO);
    bsq_error err;
    for (int which = BSQ_DEFAULT_IMAGE; which <= BSQ_DEFAULT_VIDEO; which++) {
        bsq_model *m;
        uint8_t mfp[32];
        if (bsq_model_open_default((bsq_default_model)which, &m, &err) != BSQ_OK) {
            cli_error("%s: %s", cmd, err.message);
            return NULL;
        }
        if (bsq_model_fingerprint(m, mfp, &err) == BSQ_OK && !memcmp(mfp, fp, 32))
            return m;
        bsq_model_close(m);
    }
    cli_error("%s: the file was made with a model that is not built into bsqcodec; pass it "
              "with --model",
              cmd);
    return NULL;
}

bsq_prior *cli_open_prior(const char *kind, const char *prior_model, const bsq_model *model,
                          const bsq_frame_geom *geom, const char *cmd)
{
    bsq_error err;
    uint8_t fp[32];
    bsq_prior *p = NULL;
    if (!strcmp(kind, "context")) {
        if (bsq_prior_context_create(geom, &p, &err) != BSQ_OK)
            cli_error("%s: %s", cmd, err.message);
        return p;
    }
    if (strcmp(kind, "learned") && strcmp(kind, "auto")) {
        cli_error("%s: unknown prior '%s' (context, learned or auto)", cmd, kind);
        return NULL;
    }
    if (bsq_model_fingerprint(model, fp, &err) != BSQ_OK) {
        cli_error("%s: %s", cmd, err.message);
        return NULL;
    }
    bsq_prior_net *net = NULL;
    bsq_status st;
    if (prior_model) {
        st = bsq_prior_net_open(prior_model, &net, &err);
        if (st == BSQ_OK && memcmp(net->tokenizer, fp, 32)) {
            bsq_prior_net_free(net);
            cli_error("%s: %s was trained on another tokenizer's tokens", cmd, prior_model);
            return NULL;
        }
    } else {
        st = bsq_prior_net_open_default(fp, &net, &err);
        if (st != BSQ_OK && !strcmp(kind, "auto")) /* no network for this model: baseline */
            return cli_open_prior("context", NULL, model, geom, cmd);
    }
    if (st != BSQ_OK) {
        cli_error("%s: %s%s", cmd, err.message,
                  prior_model ? "" : "; give the network with --prior-model");
        return NULL;
    }
    if (bsq_prior_learned_create(geom, net, &p, &err) != BSQ_OK)
        cli_error("%s: %s", cmd, err.message);
    return p;
}

int cli_thread_count(long long threads)
{
    if (threads > 0)
        return threads > 1024 ? 1024 : (int)threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (n > 1024 ? 1024 : (int)n) : 1;
}

char *cli_temp_name(const char *final)
{
    const char *slash = strrchr(final, '/');
    const char *base = slash ? slash + 1 : final;
    const char *dot = strrchr(base, '.');
    size_t dirlen = (size_t)(base - final), n = strlen(final) + 64;
    char *t = malloc(n);
    if (!t)
        return NULL;
    snprintf(t, n, "%.*s.%.*s.part-%ld%s", (int)dirlen, final,
             (int)(dot && dot != base ? (size_t)(dot - base) : strlen(base)), base, (long)getpid(),
             dot && dot != base ? dot : "");
    return t;
}

/* The program's one piece of signal state: the partial output to remove. */
static const char *volatile cleanup_path;

static void on_signal(int sig)
{
    const char *p = cleanup_path;
    if (p)
        unlink(p); /* async-signal-safe */
    signal(sig, SIG_DFL);
    raise(sig);
}

void cli_cleanup_on_signal(const char *path)
{
    cleanup_path = path;
    if (path) {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        signal(SIGHUP, on_signal);
    }
}

int cli_can_rename(const char *path)
{
    struct stat sb;
    return stat(path, &sb) != 0 ? errno == ENOENT : S_ISREG(sb.st_mode);
}

int cli_parse_count(const char *s, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < 0 || v > max)
        return 0;
    *out = v;
    return 1;
}

double cli_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

void cli_progress_init(cli_progress *p, int quiet, int64_t total)
{
    p->enabled = !quiet && isatty(STDERR_FILENO);
    p->start = p->last = cli_now();
    p->total = total;
}

void cli_progress_update(cli_progress *p, int64_t frames, uint64_t bytes, double video_seconds)
{
    if (!p->enabled)
        return;
    double now = cli_now();
    if (now - p->last < 0.25 && frames != p->total)
        return;
    p->last = now;
    double el = now - p->start, fps = el > 0 ? frames / el : 0;
    double kbps = video_seconds > 0 ? bytes * 8.0 / video_seconds / 1000.0 : 0;
    fprintf(stderr, "\rframe %lld", (long long)frames);
    if (p->total > 0)
        fprintf(stderr, "/%lld", (long long)p->total);
    fprintf(stderr, "  %.2f fps  %.1f kbit/s", fps, kbps);
    if (p->total > 0 && fps > 0 && frames < p->total)
        fprintf(stderr, "  ETA %.0f s", (double)(p->total - frames) / fps);
    fputs("   ", stderr);
    fflush(stderr);
}

void cli_progress_end(cli_progress *p)
{
    if (p->enabled)
        fputc('\n', stderr);
}

int cli_parse_precision(const char *s, bsq_precision *out)
{
    if (!strcmp(s, "auto"))
        *out = BSQ_PRECISION_AUTO;
    else if (!strcmp(s, "fp32"))
        *out = BSQ_PRECISION_FP32;
    else if (!strcmp(s, "bf16"))
        *out = BSQ_PRECISION_BF16;
    else
        return 0;
    return 1;
}
