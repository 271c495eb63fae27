/* bsqcodec import: official PyTorch checkpoint -> safetensors model. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bsq.h"
#include "commands.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: bsqcodec import CHECKPOINT -o MODEL.safetensors [OPTIONS]\n\n"
            "Converts a checkpoint in the official BSQ-ViT PyTorch layout (a torch.save\n"
            "zip) into a safetensors model file. The EMA weights are taken when present.\n"
            "Hyperparameters the checkpoint does not record are given as options.\n\n"
            "Options:\n"
            "  -o, --output FILE      output model (required)\n"
            "      --dtype TYPE       f32 (default), f16 or bf16\n"
            "      --heads N          attention heads (when the checkpoint lacks them)\n"
            "      --frames N         frames per block of a video model\n"
            "      --mask MASK        none or block-causal (video models)\n"
            "      --image-size WxH   the model's image size (non-square grids)\n"
            "  -q, --quiet            print nothing on success\n"
            "  -h, --help             show this help\n");
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi)
        return 0;
    *out = (int)v;
    return 1;
}

int cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'}, {"dtype", required_argument, NULL, 'd'},
        {"heads", required_argument, NULL, 'H'},  {"frames", required_argument, NULL, 'f'},
        {"mask", required_argument, NULL, 'm'},   {"image-size", required_argument, NULL, 's'},
        {"quiet", no_argument, NULL, 'q'},        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *output = NULL;
    bsq_dtype dtype = BSQ_F32;
    bsq_config hints;
    memset(&hints, 0, sizeof hints);
    int quiet = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'o': output = optarg; break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'd':
            if (!strcmp(optarg, "f32")) dtype = BSQ_F32;
            else if (!strcmp(optarg, "f16")) dtype = BSQ_F16;
            else if (!strcmp(optarg, "bf16")) dtype = BSQ_BF16;
            else { cli_error("import: --dtype must be f32, f16 or bf16"); return EXIT_USAGE; }
            break;
        case 'H':
            if (!parse_int(optarg, 1, 4096, &hints.heads)) {
                cli_error("import: --heads takes a positive integer");
                return EXIT_USAGE;
            }
            break;
        case 'f':
            if (!parse_int(optarg, 1, 4096, &hints.num_frames)) {
                cli_error("import: --frames takes a positive integer");
                return EXIT_USAGE;
            }
            break;
        case 'm':
            if (!strcmp(optarg, "block-causal")) hints.block_causal = 1;
            else if (!strcmp(optarg, "none")) hints.block_causal = -1;
            else { cli_error("import: --mask must be none or block-causal"); return EXIT_USAGE; }
            break;
        case 's':
            if (sscanf(optarg, "%dx%d", &hints.image_width, &hints.image_height) != 2 ||
                hints.image_width < 1 || hints.image_height < 1) {
                cli_error("import: --image-size takes WxH, e.g. 256x256");
                return EXIT_USAGE;
            }
            break;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc - 1 || !output) {
        cli_error("import: need one CHECKPOINT and -o MODEL.safetensors");
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *input = argv[optind];
    bsq_model *model;
    bsq_error err;
    if (bsq_model_open(input, &hints, &model, &err) != BSQ_OK) {
        cli_error("import: %s", err.message);
        return EXIT_RUNTIME;
    }
    int rc = EXIT_OK;
    if (bsq_model_save(model, output, dtype, &err) != BSQ_OK) {
        cli_error("import: %s", err.message);
        rc = EXIT_RUNTIME;
    } else if (!quiet) {
        const bsq_config *cfg = bsq_model_config(model);
        printf("%s: %dx%d, patch %d, width %d, %d+%d layers, %d heads, L=%d, %d frame%s%s\n",
               output, cfg->image_width, cfg->image_height, cfg->patch_size, cfg->width,
               cfg->layers, cfg->layers, cfg->heads, cfg->L, cfg->num_frames,
               cfg->num_frames > 1 ? "s" : "", cfg->block_causal ? ", block-causal" : "");
    }
    bsq_model_close(model);
    return rc;
}
