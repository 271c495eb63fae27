/* Model hyperparameters: parsing the JSON in safetensors metadata, writing
 * it back, deriving what tensor shapes reveal, and validation. */
#ifndef BSQ_MODEL_CONFIG_H
#define BSQ_MODEL_CONFIG_H

#include <stddef.h>

#include "bsq.h"
#include "tensorset.h"

/* Reads the keys present in `json` into cfg, leaving absent ones untouched. */
bsq_status bsq_config_parse_json(const char *json, bsq_config *cfg, bsq_error *err);
/* The configuration as JSON (the keys the fixtures use); malloc'd string. */
char *bsq_config_to_json(const bsq_config *cfg);
/* Fills fields still 0 from tensor shapes (width, patch, layers, mlp, ffn,
 * L, frames, image size when square) and defaults (eps, group size). heads
 * cannot be derived: its absence is an error that says how to give it. */
bsq_status bsq_config_complete(bsq_config *cfg, const bsq_tensorset *ts, bsq_error *err);
/* Range and consistency checks. */
bsq_status bsq_config_validate(const bsq_config *cfg, bsq_error *err);

#endif
