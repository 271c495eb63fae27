#!/usr/bin/python3
"""A small BSQ-ViT image model trained briefly in PyTorch, only so that
measurements that need a model with real reconstructions (tile seams) can be
made before the C trainer exists. Not a model to ship.

    train_tiny_torch.py --out tiny.safetensors --steps 1500 IMAGE...

Random crops of the given photos; straight-through BSQ; L1 + MSE on pixels.
"""
import argparse
import math
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from torch_bsqvit import BSQViT, export  # noqa: E402


def config(size, width, layers, L):
    return {"image_height": size, "image_width": size, "patch_size": 8, "width": width,
            "layers": layers, "heads": width // 32, "mlp_ratio": 4.0,
            "decoder_ffn_dim": 4 * width, "L": L, "group_size": L // 2 if L % 2 == 0 else L,
            "num_frames": 1, "mask": "none", "layer_norm_eps": 1e-5}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--L", type=int, default=18)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    torch.set_num_threads(a.threads)
    photos = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 127.5 - 1
              for p in a.images]
    model = BSQViT(config(a.size, a.width, a.layers, a.L))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=a.steps)
    s = a.size
    for step in range(a.steps):
        crops = []
        for _ in range(a.batch):
            im = photos[rng.integers(len(photos))]
            y, x = rng.integers(im.shape[0] - s), rng.integers(im.shape[1] - s)
            c = im[y:y + s, x:x + s]
            crops.append(c[:, ::-1] if rng.random() < 0.5 else c)
        pix = torch.from_numpy(np.stack(crops).transpose(0, 3, 1, 2).copy())
        u = model.encode_latents(pix)[2]
        codes = torch.where(u > 0, 1.0, -1.0) / math.sqrt(a.L)
        codes = u + (codes - u).detach()  # straight-through
        rec = model.decode_codes(codes, clamp=False)
        loss = (rec - pix).abs().mean() + ((rec - pix) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == a.steps - 1:
            mse = ((rec.clamp(-1, 1) - pix) ** 2).mean().item() / 4  # in [0,1] units
            print(f"step {step} loss {loss.item():.4f} psnr {10 * math.log10(1 / mse):.2f} dB",
                  flush=True)
    export(model.eval(), a.out)


if __name__ == "__main__":
    main()
