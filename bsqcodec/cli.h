/* Helpers shared by bsqcodec's commands: models, atomic outputs, progress. */
#ifndef BSQCODEC_CLI_H
#define BSQCODEC_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "bsq.h"

/* Opens --model (`path`), else $BSQ_MODEL, else one of the default models
 * built into libbsq. Each prints the error and returns NULL on failure. */
/* ... the default video model */
bsq_model *cli_open_model(const char *path, const char *cmd);
/* ... the given default model */
bsq_model *cli_open_model_for(const char *path, const char *cmd, bsq_default_model which);
/* ... the image model for a still picture `input`, else the video model */
bsq_model *cli_open_model_for_input(const char *path, const char *cmd, const char *input);
/* ... the default model whose fingerprint is `fp` (what a .bsq file names) */
bsq_model *cli_open_model_matching(const char *path, const char *cmd, const uint8_t fp[32]);

/* The prior for a model's tokens: `kind` "context" (the baseline),
 * "learned" (the network from `prior_model`, else the built-in one for
 * this tokenizer) or "auto" (learned when a network is at hand, else
 * context). Prints the error and returns NULL on failure. */
#include "codec/prior.h"
bsq_prior *cli_open_prior(const char *kind, const char *prior_model, const bsq_model *model,
                          const bsq_frame_geom *geom, const char *cmd);

/* A temporary name beside `final` that keeps its extension (muxers are
 * chosen by extension): "dir/.base.part-PID.ext". malloc'd. */
char *cli_temp_name(const char *final);

/* Whether `path` may be written under a temporary name and renamed: it
 * does not exist yet, or is a regular file (never a device or a FIFO). */
int cli_can_rename(const char *path);

/* Removes `path` (a temporary output) if the program is interrupted by
 * SIGINT, SIGTERM or SIGHUP; NULL forgets it. One at a time. */
void cli_cleanup_on_signal(const char *path);

/* Parses a non-negative integer option; 0 on failure. */
int cli_parse_count(const char *s, long long max, long long *out);
/* A --threads value as a count: itself when positive, else the online CPUs. */
int cli_thread_count(long long threads);

/* --precision: a long option's value in the commands that open a context */
#define CLI_OPT_PRECISION 0x150
/* "fp32" or "bf16" (or "auto"); 0 for anything else */
int cli_parse_precision(const char *s, bsq_precision *out);

/* A one-line progress display on a terminal; silent otherwise. */
typedef struct cli_progress {
    int enabled;
    double start, last;
    int64_t total; /* frames expected, 0 when unknown */
} cli_progress;

void cli_progress_init(cli_progress *p, int quiet, int64_t total);
/* frames done so far and bytes written so far (for the bitrate). */
void cli_progress_update(cli_progress *p, int64_t frames, uint64_t bytes, double seconds_of_video);
void cli_progress_end(cli_progress *p);
double cli_now(void);

#endif
