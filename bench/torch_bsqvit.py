#!/usr/bin/python3
"""BSQ-ViT image tokenizer in PyTorch, written from docs/bsq-vit.md, as the
baseline for bench/bench_bsq.c.

Modes:
  --export PATH   write the random weights (seeded) as safetensors in the
                  official key layout, config in __metadata__["config"]
  (default)       benchmark encode (pixels -> indices) and decode
                  (indices -> pixels) and print lines such as
                  "torch encode 256 images_per_s=... peak_rss_mb=..."

The same --seed and --size give the same weights in both modes, so the
benchmark runs on the model the C side opens without loading the file
(loading would add the file's pages to the peak RSS being measured).
--weights PATH loads a safetensors file instead (e.g. a parity fixture).

Image models only (num_frames 1, full attention): that is what the
benchmark measures. Runs on Debian's python3-torch 1.13; no dependency
beyond torch and numpy.
"""

import argparse
import collections
import ctypes
import json
import os
import math
import resource
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn


def official_config(size, L=18, group_size=9):
    """The released ImageNet configuration (spec section 5) at size x size."""
    return {
        "image_height": size, "image_width": size, "patch_size": 8,
        "width": 768, "layers": 12, "heads": 12, "mlp_ratio": 4.0,
        "decoder_ffn_dim": 3072, "L": L, "group_size": group_size,
        "num_frames": 1, "mask": "none", "layer_norm_eps": 1e-5,
    }


class Block(nn.Module):
    """Pre-LN block; attribute names give the official state-dict keys."""

    def __init__(self, d, heads, mlp, eps):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, eps=eps)
        # nn.MultiheadAttention is what the release uses (packed in_proj,
        # out_proj); with need_weights=False in inference mode torch 1.13
        # takes its fused native path, the fairest baseline torch offers.
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(d, eps=eps)
        self.mlp = nn.Sequential(collections.OrderedDict([
            ("c_fc", nn.Linear(d, mlp)),
            ("gelu", nn.GELU()),  # exact (erf) form by default
            ("c_proj", nn.Linear(mlp, d)),
        ]))

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, d, layers, heads, mlp, eps):
        super().__init__()
        self.resblocks = nn.ModuleList(
            [Block(d, heads, mlp, eps) for _ in range(layers)])

    def forward(self, x):
        for blk in self.resblocks:
            x = blk(x)
        return x


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        p, d = c["patch_size"], c["width"]
        tokens = (c["image_height"] // p) * (c["image_width"] // p)
        mlp = int(round(d * c["mlp_ratio"]))
        eps = c["layer_norm_eps"]
        self.conv1 = nn.Linear(3 * p * p, d, bias=False)
        self.positional_embedding = nn.Parameter(torch.randn(tokens, d) * d ** -0.5)
        self.ln_pre = nn.LayerNorm(d, eps=eps)
        self.transformer = Transformer(d, c["layers"], c["heads"], mlp, eps)
        self.ln_post = nn.LayerNorm(d, eps=eps)

    def forward(self, patches):
        x = self.conv1(patches) + self.positional_embedding
        return self.ln_post(self.transformer(self.ln_pre(x)))


class Decoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        p, d = c["patch_size"], c["width"]
        tokens = (c["image_height"] // p) * (c["image_width"] // p)
        mlp = int(round(d * c["mlp_ratio"]))
        eps = c["layer_norm_eps"]
        self.positional_embedding = nn.Parameter(torch.randn(tokens, d) * d ** -0.5)
        self.ln_pre = nn.LayerNorm(d, eps=eps)
        self.transformer = Transformer(d, c["layers"], c["heads"], mlp, eps)
        self.ln_post = nn.LayerNorm(d, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(d, c["decoder_ffn_dim"]), nn.Tanh())
        self.conv_out = nn.Linear(c["decoder_ffn_dim"], 3 * p * p)

    def forward(self, x):
        x = self.ln_pre(x + self.positional_embedding)
        x = self.ln_post(self.transformer(x))
        return self.conv_out(self.ffn(x))


class BSQViT(nn.Module):
    def __init__(self, c):
        super().__init__()
        if c.get("num_frames", 1) != 1 or c.get("mask", "none") != "none":
            raise ValueError("only image models (num_frames 1, no mask) are written here")
        self.c = c
        self.p = c["patch_size"]
        self.gh = c["image_height"] // self.p
        self.gw = c["image_width"] // self.p
        self.L = c["L"]
        self.encoder = Encoder(c)
        self.quant_embed = nn.Linear(c["width"], self.L)
        self.post_quant_embed = nn.Linear(self.L, c["width"])
        self.decoder = Decoder(c)
        # MSB-first weights 2^(L-1-d), int64 so indices stay exact (spec 4)
        self.register_buffer(
            "msb", torch.tensor([1 << (self.L - 1 - d) for d in range(self.L)],
                                dtype=torch.int64), persistent=False)

    def patchify(self, pix):
        # [B,3,H,W] -> [B, gh*gw, 3*p*p], channel-major inside a patch
        b, p = pix.shape[0], self.p
        x = pix.reshape(b, 3, self.gh, p, self.gw, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, self.gh * self.gw, 3 * p * p)

    def unpatchify(self, tok):
        b, p = tok.shape[0], self.p
        x = tok.reshape(b, self.gh, self.gw, 3, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, 3, self.gh * p, self.gw * p)

    def encode_latents(self, pix):
        """pixels [B,3,H,W] in [-1,1] -> (encoder_out, pre_quant, z)."""
        h = self.encoder(self.patchify(pix))
        v = self.quant_embed(h)
        z = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return h, v, z

    def encode(self, pix):
        """pixels -> MSB-first int64 indices [B, N] (L <= 62)."""
        z = self.encode_latents(pix)[2]
        bits = (z > 0).to(torch.int64)
        return (bits * self.msb).sum(-1)  # integer sum: exact

    def bits_to_codes(self, bits):
        return (bits.to(torch.float32) * 2 - 1) / math.sqrt(self.L)

    def decode_codes(self, codes, clamp=True):
        x = self.decoder(self.post_quant_embed(codes))
        x = self.unpatchify(x)
        return x.clamp(-1, 1) if clamp else x

    def decode(self, idx):
        """MSB-first indices [B, N] -> pixels [B,3,H,W] in [-1,1]."""
        bits = (idx.unsqueeze(-1) & self.msb) != 0
        return self.decode_codes(self.bits_to_codes(bits))


# ------------------------------------------------------------------ safetensors

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64,
           "I32": np.int32, "U8": np.uint8, "F64": np.float64}


def write_safetensors(path, tensors, metadata):
    """tensors: ordered name -> float32 numpy array. Header padded with
    spaces so the data starts 8-byte aligned (readers may mmap it)."""
    header = {"__metadata__": metadata}
    off = 0
    for name, a in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())


def read_safetensors(path):
    """-> (dict name -> numpy array, metadata dict)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=_DTYPES[e["dtype"]])
        out[name] = arr.reshape(e["shape"])
    return out, meta


def export(model, path):
    sd = model.state_dict()
    tensors = collections.OrderedDict(
        (k, v.detach().to(torch.float32).contiguous().numpy()) for k, v in sd.items())
    meta = {"format": "official-bsq-vit-state-dict",
            "config": json.dumps(model.c)}
    write_safetensors(path, tensors, meta)


def load(path):
    tensors, meta = read_safetensors(path)
    c = json.loads(meta["config"])
    model = BSQViT(c)
    sd = {k: torch.from_numpy(v.copy()) for k, v in tensors.items()
          if not k.startswith("quantize.")}
    model.load_state_dict(sd, strict=True)
    return model.eval()


# ------------------------------------------------------------------ benchmark

def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def timed(fn, iters):
    """-> per-iteration wall times."""
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def report(op, size, batch, threads, times):
    # images_per_s over the whole timed run; best_ from the fastest
    # iteration, since shared (virtual) machines have slow bursts.
    # peak_rss_mb is the process high-water mark: with --op both, decode's
    # figure includes encode's.
    print("torch %s %s images_per_s=%.4f best_images_per_s=%.4f peak_rss_mb=%.1f "
          "sec_per_batch=%.4f batch=%d threads=%d"
          % (op, size, len(times) * batch / sum(times), batch / min(times), peak_rss_mb(),
             sum(times) / len(times), batch, threads), flush=True)


def openblas():
    """Debian's torch does its products through the system OpenBLAS
    (BLAS_INFO=generic), whose thread count torch.set_num_threads does not
    set; None when it is not loaded."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib
    except (OSError, AttributeError):
        return None


def bench(model, args):
    c = model.c
    h, w = c["image_height"], c["image_width"]
    size = str(h) if h == w else "%dx%d" % (h, w)
    n = model.gh * model.gw
    g = torch.Generator().manual_seed(args.seed + 1)
    with torch.inference_mode():
        if args.op in ("encode", "both"):
            pix = torch.rand(args.batch, 3, h, w, generator=g) * 2 - 1
            for _ in range(args.warmup):
                model.encode(pix)
            report("encode", size, args.batch, args.threads,
                   timed(lambda: model.encode(pix), args.iters))
        if args.op in ("decode", "both"):
            # random indices: decode alone needs no encoder run
            idx = torch.randint(0, 1 << model.L, (args.batch, n), generator=g, dtype=torch.int64)
            for _ in range(args.warmup):
                model.decode(idx)
            report("decode", size, args.batch, args.threads,
                   timed(lambda: model.decode(idx), args.iters))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="image size (square), multiple of 8")
    ap.add_argument("--L", type=int, default=18)
    ap.add_argument("--group-size", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--op", choices=("encode", "decode", "both"), default="both",
                    help="run one op per process to get that op's own peak RSS")
    ap.add_argument("--weights", metavar="PATH", help="load a safetensors model instead of random init")
    ap.add_argument("--export", metavar="PATH", help="write the random model as safetensors and exit")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    blas = openblas()
    if blas is not None:
        blas.openblas_set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.weights:
        model = load(args.weights)
    else:
        model = BSQViT(official_config(args.size, args.L, args.group_size)).eval()
    if args.export:
        export(model, args.export)
        print("exported %s (%d parameters)" % (args.export, sum(p.numel() for p in model.parameters())),
              file=sys.stderr)
        return 0
    print("torch %s, %d threads, OpenBLAS core %s, OMP_WAIT_POLICY=%s, model %dx%d, "
          "%d parameters, peak_rss_mb after init %.1f"
          % (torch.__version__, torch.get_num_threads(),
             blas.openblas_get_corename().decode() if blas is not None else "(not loaded)",
             os.environ.get("OMP_WAIT_POLICY", "(unset)"), model.c["image_height"],
             model.c["image_width"], sum(p.numel() for p in model.parameters()), peak_rss_mb()),
          file=sys.stderr)
    bench(model, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
