/* Import of checkpoints in the official BSQ-ViT PyTorch layout: a
 * torch.save zip archive holding a pickled dict (spec §6). Read in C: the
 * zip directory, and enough of the pickle protocol to rebuild dicts, lists,
 * tuples and tensors, treating objects of unknown classes (OmegaConf
 * configs, argparse Namespaces) as opaque. */
#ifndef BSQ_CHECKPOINT_H
#define BSQ_CHECKPOINT_H

#include "tensorset.h"

/* Non-zero when the file starts like a zip archive ("PK\3\4"). */
int bsq_checkpoint_sniff(const void *head, size_t len);

/* Fills the empty set `ts` with the checkpoint's model tensors: the
 * `ema_state_dict` when present, else `state_dict` (or the top-level dict
 * itself when it maps names to tensors), with the prefixes "module.module."
 * / "module." stripped. Tensors own their bytes (converted to contiguous
 * little-endian in the stored dtype). Hyperparameters found in a pickled
 * config are stored as JSON in metadata "config" with the keys the
 * safetensors files use (heads, num_frames, mask, ...); only those found. */
bsq_status bsq_checkpoint_read(const char *path, bsq_tensorset *ts, bsq_error *err);

#endif
