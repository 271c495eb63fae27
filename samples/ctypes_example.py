#!/usr/bin/env python3
"""Calling libbsq from Python with ctypes (the standard library only).

    ctypes_example.py LIBBSQ MODEL [IN.ppm]

LIBBSQ is the shared library (libbsq.so.0 once installed, or .libs/libbsq.so
in a build tree). Encodes IN.ppm (a binary PPM; without it, a generated
48x40 gradient), prints one line per token with its group indices, exactly
as samples/tokenize.c does, then decodes the tokens and reports the PSNR.
"""
import ctypes
import math
import sys
from ctypes import POINTER, Structure, byref, c_char, c_char_p, c_float, c_int, c_size_t
from ctypes import c_uint8, c_uint32, c_uint64, c_void_p


class Error(Structure):  # bsq_error
    _fields_ = [("code", c_int), ("message", c_char * 512)]


class Config(Structure):  # bsq_config
    _fields_ = [(n, c_int) for n in (
        "image_height", "image_width", "patch_size", "width", "layers", "heads", "mlp_dim",
        "decoder_ffn_dim", "L", "group_size", "num_frames", "block_causal")] + [
        ("layer_norm_eps", c_float)]


class ContextOptions(Structure):  # bsq_context_options
    _fields_ = [("threads", c_int), ("device", c_char_p)]


class Layout(Structure):  # bsq_token_layout
    _fields_ = [(n, c_int) for n in (
        "L", "batch", "frames", "tiles_y", "tiles_x", "grid_h", "grid_w", "height",
        "width")] + [("count", c_size_t)]


def load(path):
    lib = ctypes.CDLL(path)
    sig = {
        "bsq_model_open": (c_int, [c_char_p, c_void_p, POINTER(c_void_p), POINTER(Error)]),
        "bsq_model_config": (POINTER(Config), [c_void_p]),
        "bsq_model_close": (None, [c_void_p]),
        "bsq_context_create": (c_int, [c_void_p, POINTER(ContextOptions), POINTER(c_void_p),
                                       POINTER(Error)]),
        "bsq_context_destroy": (None, [c_void_p]),
        "bsq_encode_rgb8": (c_int, [c_void_p, c_char_p, c_int, c_int, c_size_t,
                                    POINTER(c_void_p), POINTER(Error)]),
        "bsq_decode_rgb8": (c_int, [c_void_p, c_void_p, POINTER(c_uint8), c_size_t,
                                    POINTER(Error)]),
        "bsq_tokens_layout": (POINTER(Layout), [c_void_p]),
        "bsq_tokens_indices": (POINTER(c_uint64), [c_void_p]),
        "bsq_tokens_get_groups": (c_int, [c_void_p, c_int, POINTER(c_uint32), POINTER(Error)]),
        "bsq_tokens_free": (None, [c_void_p]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def read_ppm(path):
    data = open(path, "rb").read()
    fields, pos = [], 0
    while len(fields) < 4:  # magic, width, height, maxval (no comments)
        while data[pos:pos + 1].isspace():
            pos += 1
        start = pos
        while not data[pos:pos + 1].isspace():
            pos += 1
        fields.append(data[start:pos])
    if fields[0] != b"P6" or fields[3] != b"255":
        sys.exit(f"{path}: not a binary PPM with maxval 255")
    w, h = int(fields[1]), int(fields[2])
    return w, h, data[pos + 1:pos + 1 + w * h * 3]


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    lib = load(sys.argv[1])
    err = Error()

    def check(status):
        if status != 0:
            sys.exit(err.message.decode())

    model, ctx, tok = c_void_p(), c_void_p(), c_void_p()
    check(lib.bsq_model_open(sys.argv[2].encode(), None, byref(model), byref(err)))
    cfg = lib.bsq_model_config(model).contents
    check(lib.bsq_context_create(model, byref(ContextOptions(0, None)), byref(ctx), byref(err)))
    if len(sys.argv) == 4:
        w, h, rgb = read_ppm(sys.argv[3])
    else:
        w, h = 48, 40
        rgb = bytes(v for y in range(h) for x in range(w)
                    for v in (x * 255 // (w - 1), y * 255 // (h - 1), 128))
    check(lib.bsq_encode_rgb8(ctx, rgb, w, h, w * 3, byref(tok), byref(err)))

    lay = lib.bsq_tokens_layout(tok).contents
    g, per = cfg.group_size, cfg.L // cfg.group_size
    groups = (c_uint32 * (lay.count * per))()
    check(lib.bsq_tokens_get_groups(tok, g, groups, byref(err)))
    print(f"# {w}x{h} image: {lay.count} tokens of L={lay.L} bits ({lay.tiles_x}x{lay.tiles_y} "
          f"tiles of {lay.grid_w}x{lay.grid_h}), {per} groups of {g} bits")
    idx = lib.bsq_tokens_indices(tok)
    for i in range(lay.count):
        row = groups[i * per:(i + 1) * per]
        # group indices are the MSB-first index cut into g-bit pieces
        assert idx[i] == sum(v << (g * (per - 1 - j)) for j, v in enumerate(row))
        print(" ".join(map(str, row)))

    out = (c_uint8 * (w * h * 3))()
    check(lib.bsq_decode_rgb8(ctx, tok, out, w * 3, byref(err)))
    mse = sum((a - b) ** 2 for a, b in zip(rgb, bytes(out))) / len(rgb)
    psnr = 10 * math.log10(255 ** 2 / mse) if mse else float("inf")
    print(f"# decoded: PSNR {psnr:.2f} dB", file=sys.stderr)
    lib.bsq_tokens_free(tok)
    lib.bsq_context_destroy(ctx)
    lib.bsq_model_close(model)


if __name__ == "__main__":
    main()
