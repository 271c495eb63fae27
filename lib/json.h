/* A small strict JSON reader (RFC 8259) for safetensors headers and model
 * configurations. Parses into a tree; depth and size are bounded so hostile
 * input cannot exhaust the stack. */
#ifndef BSQ_JSON_H
#define BSQ_JSON_H

#include <stddef.h>

#include "bsq.h"

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value json_value;
struct json_value {
    json_type type;
    int boolean;
    double number;
    char *string;          /* JSON_STRING (NUL-terminated, may hold no NULs) */
    size_t count;          /* elements (array) or members (object) */
    json_value *items;     /* array elements or object member values */
    char **keys;           /* object member names */
};

/* Parses text[0..len). On failure returns an error naming the offset. */
bsq_status json_parse(const char *text, size_t len, json_value **out, bsq_error *err);
void json_free(json_value *v);
/* Member of an object by name, or NULL. */
const json_value *json_get(const json_value *obj, const char *key);

#endif
