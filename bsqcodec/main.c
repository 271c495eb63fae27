/* bsqcodec: command-line front end to libbsq. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavutil/log.h>

#include "bsq.h"
#include "commands.h"

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *summary;
} commands[] = {
    {"encode", cmd_encode, "encode a video or image into a .bsq file"},
    {"decode", cmd_decode, "decode a .bsq file into a video or images"},
    {"info", cmd_info, "describe a .bsq file"},
    {"train", cmd_train, "train a model on images and videos"},
    {"train-prior", cmd_train_prior, "train the learned prior on a model's tokens of clips"},
    {"tokenize", cmd_tokenize, "tokenize image collections into token-array shards"},
    {"detokenize", cmd_detokenize, "decode token arrays (.npy, safetensors) back to PNG images"},
    {"compare", cmd_compare, "PSNR, SSIM and MS-SSIM between two images or videos"},
    {"import", cmd_import, "convert an official PyTorch checkpoint to a safetensors model"},
};

void cli_error(const char *fmt, ...)
{
    va_list ap;
    fputs("bsqcodec: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: bsqcodec COMMAND [OPTIONS] [ARGS]\n"
            "       bsqcodec --help | --version\n\n"
            "BSQ-ViT image and video tokenizer.\n\nCommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nRun 'bsqcodec COMMAND --help' for a command's options; see bsqcodec(1).\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("bsqcodec %s (libbsq %s)\n", PACKAGE_VERSION, bsq_version());
        return EXIT_OK;
    }
    /* FFmpeg's log level is process-wide: the program, not the library,
     * decides that its codecs only speak up for errors */
    av_log_set_level(getenv("BSQ_FFMPEG_LOG") ? AV_LOG_INFO : AV_LOG_ERROR);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    cli_error("unknown command '%s'", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
}
