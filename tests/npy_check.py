#!/usr/bin/env python3
"""Reads bsqcodec tokenize output with numpy, as a training pipeline would.

    npy_check.py GROUPS_DIR BITS_DIR G6_DIR SAMPLES_DIR

GROUPS_DIR: .npy group indices (9-bit groups of the 18-bit test model);
BITS_DIR: the same inputs as packed bits in safetensors; G6_DIR: 6-bit
groups in .npy; SAMPLES_DIR: NAME.groups files, samples/tokenize's output
for the image named NAME. Checks shapes, dtypes, alignment, the indexes and
manifest, that the three encodings hold the same tokens, and that they are
the library's tokens. Run by tests/cli_tokenize.sh.
"""
import json
import os
import sys

import numpy as np

failures = 0


def check(what, cond):
    global failures
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures += 1


def read_index(path):
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        lines = [json.loads(line) for line in f]
    return lines[0], lines[1:]


def load_safetensors(path):
    """The file's one tensor and its metadata, with json and numpy only."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    (name, t), = header.items()
    dtype = {"U8": np.uint8, "U16": np.uint16, "U32": np.uint32}[t["dtype"]]
    start, end = t["data_offsets"]
    arr = np.frombuffer(raw[8 + n + start:8 + n + end], dtype=np.dtype(dtype).newbyteorder("<"))
    return name, arr.reshape(t["shape"]), meta, n


def indices_from_groups(arr, g):
    out = np.zeros(arr.shape[:2], dtype=np.uint64)
    for j in range(arr.shape[2]):
        out = (out << np.uint64(g)) | arr[..., j].astype(np.uint64)
    return out


def main():
    groups_dir, bits_dir, g6_dir, samples_dir = sys.argv[1:5]
    with open(os.path.join(groups_dir, "manifest.json")) as f:
        man = json.load(f)
    L, g, T, V = man["L"], man["group_bits"], man["tokens_per_image"], man["values_per_token"]
    check("manifest: L 18, 9-bit groups, 16 tokens of 2 values",
          (L, g, T, V) == (18, 9, 16, 2) and man["vocabulary"] == 512)

    where = {}      # image basename -> (shard array, row)
    skipped = []
    images = 0
    indices = {}    # shard number -> token indices [rows, T]
    for sh in man["shards"]:
        path = os.path.join(groups_dir, sh["file"])
        arr = np.load(path)
        with open(path, "rb") as f:
            head = f.read(10)
        check(f"{sh['file']}: uint16 [{sh['rows']}, {T}, {V}], data 64-byte aligned",
              arr.dtype == np.uint16 and arr.shape == (sh["rows"], T, V)
              and (10 + int.from_bytes(head[8:10], "little")) % 64 == 0)
        check(f"{sh['file']}: every value below 2^{g}", bool((arr < (1 << g)).all()))
        hdr, entries = read_index(os.path.join(groups_dir, sh["index"]))
        rows = [e["row"] for e in entries if e["row"] is not None]
        check(f"{sh['index']}: {len(entries)} inputs, rows 0..{sh['rows'] - 1} in order",
              hdr["rows"] == sh["rows"] and rows == list(range(sh["rows"]))
              and len(entries) == sh["inputs"] and hdr["fingerprint"] == man["fingerprint"])
        check(f"{sh['index']}: original sizes recorded",
              all(e["width"] > 0 and e["height"] > 0 for e in entries if e["row"] is not None))
        for e in entries:
            if e["row"] is None:
                skipped.append(e["path"])
            else:
                where[os.path.basename(e["path"])] = (arr, e["row"])
        images += sh["rows"]
        indices[sh["shard"]] = indices_from_groups(arr, g)
    check("manifest counts images and skipped files",
          images == man["images"] and len(skipped) == man["skipped"]
          and skipped == [s["path"] for s in man["skipped_files"]])

    samples = sorted(n for n in os.listdir(samples_dir) if n.endswith(".groups"))
    for name in samples:
        with open(os.path.join(samples_dir, name)) as f:
            lib = np.array([[int(v) for v in line.split()] for line in f if not line.startswith("#")])
        arr, row = where[name[:-len(".groups")]]
        check(f"{name[:-7]}: the shard's row equals the library's group indices",
              lib.shape == (T, V) and bool((arr[row] == lib).all()))
    check("samples compared", len(samples) >= 1)

    with open(os.path.join(bits_dir, "manifest.json")) as f:
        bman = json.load(f)
    for sh in bman["shards"]:
        name, arr, meta, n = load_safetensors(os.path.join(bits_dir, sh["file"]))
        check(f"{sh['file']}: tensor 'tokens', uint8 [{sh['rows']}, {T}, 3], header 8-byte aligned",
              name == "tokens" and arr.dtype == np.uint8 and arr.shape == (sh["rows"], T, 3)
              and n % 8 == 0)
        check(f"{sh['file']}: metadata (fingerprint, L, size, grid)",
              meta.get("fingerprint") == man["fingerprint"] and meta.get("L") == "18"
              and meta.get("size") == "32" and meta.get("tokens") == "bits"
              and meta.get("tokens_per_image") == str(T) and "group_bits" not in meta)
        bits = np.unpackbits(arr, axis=-1)[..., :L]  # MSB first: dimension 0 first
        check(f"{sh['file']}: padding bits are zero", not np.unpackbits(arr, axis=-1)[..., L:].any())
        idx = np.zeros(arr.shape[:2], dtype=np.uint64)
        for d in range(L):
            idx = (idx << np.uint64(1)) | bits[..., d].astype(np.uint64)
        check(f"{sh['file']}: packed bits are the same tokens as the group indices",
              bool((idx == indices[sh["shard"]]).all()))

    with open(os.path.join(g6_dir, "manifest.json")) as f:
        gman = json.load(f)
    for sh in gman["shards"]:
        arr = np.load(os.path.join(g6_dir, sh["file"]))
        check(f"{g6_dir}/{sh['file']}: 3 groups of 6 bits, the same tokens",
              arr.shape == (sh["rows"], T, 3) and bool((arr < 64).all())
              and bool((indices_from_groups(arr, 6) == indices[sh["shard"]]).all()))

    print(f"npy_check: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
