/* The default models, embedded in the library at build time so that a
 * program finds them without any file (uninstalled builds, static links). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stddef.h>
#include <string.h>

#include "bsq.h"
#include "codec/prior_net.h"
#include "error.h"

static const char *const names[] = {"bsqvit-image.safetensors", "bsqvit-video.safetensors"};

const char *bsq_default_model_name(bsq_default_model which)
{
    return (unsigned)which < sizeof names / sizeof names[0] ? names[which] : NULL;
}

#ifdef BSQ_MODELS_DIR
/* .incbin keeps the bytes out of the C compiler (a 10 MB initialiser is slow
 * to compile); the labels stay local to this object. */
#define EMBED(sym, file)                                                                       \
    ".balign 64\n" #sym ":\n.incbin \"" BSQ_MODELS_DIR "/" file "\"\n" #sym "_end:\n"
__asm__(".section .rodata.bsq_models,\"a\"\n"
        EMBED(bsq_embedded_image, "bsqvit-image.safetensors")
        EMBED(bsq_embedded_video, "bsqvit-video.safetensors")
        ".previous\n");
#ifdef BSQ_EMBED_PRIOR
__asm__(".section .rodata.bsq_models,\"a\"\n"
        EMBED(bsq_embedded_prior_image, "bsqvit-image-prior.safetensors")
        EMBED(bsq_embedded_prior_video, "bsqvit-video-prior.safetensors")
        ".previous\n");
extern const unsigned char bsq_embedded_prior_image[], bsq_embedded_prior_image_end[];
extern const unsigned char bsq_embedded_prior_video[], bsq_embedded_prior_video_end[];
#endif
#undef EMBED
extern const unsigned char bsq_embedded_image[], bsq_embedded_image_end[];
extern const unsigned char bsq_embedded_video[], bsq_embedded_video_end[];
#endif

bsq_status bsq_model_open_default(bsq_default_model which, bsq_model **out, bsq_error *err)
{
    const char *name = bsq_default_model_name(which);
    if (!name || !out)
        return bsq_fail(err, BSQ_ERR_INVALID_ARGUMENT, "bsq_model_open_default: bad argument");
#ifdef BSQ_MODELS_DIR
    const unsigned char *b = which == BSQ_DEFAULT_IMAGE ? bsq_embedded_image : bsq_embedded_video;
    const unsigned char *e =
        which == BSQ_DEFAULT_IMAGE ? bsq_embedded_image_end : bsq_embedded_video_end;
    bsq_status st = bsq_model_open_memory(b, (size_t)(e - b), NULL, out, err);
    if (st != BSQ_OK)
        bsq_fail_prefix(err, st, "embedded %s", name);
    return st;
#else
    return bsq_fail(err, BSQ_ERR_UNSUPPORTED,
                    "this build of libbsq embeds no default models (models/%s was missing when "
                    "it was configured); pass a model file",
                    name);
#endif
}

bsq_status bsq_prior_net_open_default(const uint8_t tokenizer_fp[32], bsq_prior_net **out,
                                      bsq_error *err)
{
#if defined(BSQ_MODELS_DIR) && defined(BSQ_EMBED_PRIOR)
    /* one network per default model, each naming the tokenizer it is for */
    const unsigned char *const nets[2][2] = {
        {bsq_embedded_prior_image, bsq_embedded_prior_image_end},
        {bsq_embedded_prior_video, bsq_embedded_prior_video_end}};
    for (int i = 0; i < 2; i++) {
        bsq_prior_net *net;
        bsq_status st =
            bsq_prior_net_open_memory(nets[i][0], (size_t)(nets[i][1] - nets[i][0]), &net, err);
        if (st != BSQ_OK)
            return bsq_fail_prefix(err, st, "embedded learned prior");
        if (!memcmp(net->tokenizer, tokenizer_fp, 32)) {
            *out = net;
            return BSQ_OK;
        }
        bsq_prior_net_free(net);
    }
    return bsq_fail(err, BSQ_ERR_UNSUPPORTED,
                    "no built-in learned prior for this tokenizer (only for the default models)");
#else
    (void)tokenizer_fp;
    (void)out;
    return bsq_fail(err, BSQ_ERR_UNSUPPORTED, "this build of libbsq has no built-in learned prior");
#endif
}
