#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "cli.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"

bsq_model *cli_open_model(const char *path, const char *cmd)
{
    const char *env = getenv("BSQ_MODEL");
    if (!path)
        path = env && *env ? env : NULL;
    if (!path) {
        cli_error("%s: no model given: pass --model MODEL.safetensors (or set BSQ_MODEL); "
                  "bsqcodec import converts official checkpoints",
                  cmd);
        return NULL;
    }
    bsq_model *m;
    bsq_error err;
    if (bsq_model_open(path, NULL, &m, &err) != BSQ_OK) {
        cli_error("%s: %s", cmd, err.message);
        return NULL;
    }
    return m;
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
