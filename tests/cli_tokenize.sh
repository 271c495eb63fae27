#!/bin/sh
# bsqcodec tokenize / detokenize end to end with the tiny image model: a
# folder of generated images plus a corrupt file and a text file; skipped
# counts, resume (nothing redone, a deleted or stale shard redone byte for
# byte), --shard K/N, --list and patterns, the formats, determinism across
# batch and thread counts, tokens equal to samples/tokenize (the library
# API) and detokenized pixels equal to it and to bsqcodec encode/decode;
# then, when python3-numpy is there, tests/npy_check.py reads the shards
# with numpy, and samples/ctypes_example.py calls libbsq through ctypes.
set -u
bin=${BSQCODEC:-./bsqcodec/bsqcodec}
data=${TEST_DATA_DIR:-$(dirname "$0")/data}
top=${TOP_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
ffmpeg=${FFMPEG:-ffmpeg}
build=$(cd "$(dirname "$bin")/.." && pwd)
bin=$build/bsqcodec/$(basename "$bin")
sample=$build/samples/tokenize
model=$data/bsqvit-parity/img32_w64_l2_L18g9.weights.safetensors
other=$data/bsqvit-parity/img32x48_w64_l2_L36g4.weights.safetensors
py=/usr/bin/python3
if ! command -v "$ffmpeg" >/dev/null 2>&1; then
    echo "SKIP: no ffmpeg binary to make test images"
    exit 77
fi
if [ ! -x "$sample" ]; then
    echo "FAIL: $sample is missing (make builds it)"
    exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bsqtok.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
pass=0 fails=0
ok() { if [ "$2" = "$3" ]; then pass=$((pass + 1)); echo "ok: $1"; else fails=$((fails + 1)); echo "FAIL: $1 (got $3, expected $2)"; fi; }
tok() { "$bin" tokenize -m "$model" "$@"; }
# same_files DIR1 DIR2 PATTERN: the files matching PATTERN in DIR1 exist in DIR2, byte for byte
same_files() {
    for f in "$1"/$3; do cmp -s "$f" "$2/$(basename "$f")" || return 1; done
}
rgb() { "$ffmpeg" -loglevel error -y -i "$1" -f rawvideo -pix_fmt rgb24 "$2"; }

mkdir -p in/sub/deeper
gen() { "$ffmpeg" -loglevel error -f lavfi -i "$1" -frames:v 1 "$2"; }
gen testsrc2=size=32x32 in/a.png
gen mandelbrot=size=64x48 in/b.png
gen testsrc=size=45x37 in/sub/c.png
gen smptebars=size=100x200 in/sub/d.jpg
gen rgbtestsrc=size=32x32 in/sub/deeper/e.png
gen testsrc2=size=64x64 in/f.png
gen "cellauto=size=48x32:rule=110" in/sub/g.bmp
head -c 200 in/b.png > in/corrupt.png         # a PNG cut short
echo "not an image" > in/readme.txt
cp in/a.png in/.hidden.png                    # hidden names are not searched

# ---------------------------------------------------------------- a first run
tok in -o out --shard-size 3 -q 2> err.txt; ok "tokenize a folder" 0 $?
[ "$(ls out/shard-*.npy | wc -l)" = 3 ]; ok "9 inputs make 3 shards of 3" 0 $?
grep -q '"inputs": 9,' out/manifest.json && grep -q '"images": 7,' out/manifest.json &&
    grep -q '"skipped": 2,' out/manifest.json
ok "manifest: 9 inputs, 7 images, 2 skipped" 0 $?
grep -q 'corrupt.png' err.txt && grep -q 'readme.txt' err.txt; ok "skipped files are reported" 0 $?
[ "$(grep -c '"error":' out/manifest.json)" = 2 ]; ok "and listed in the manifest" 0 $?
grep -q hidden out/*.jsonl; ok "hidden files are left out" 1 $?
grep -q '"path": "in/sub/deeper/e.png", "row": 1, "width": 32, "height": 32}' out/shard-000002.jsonl
ok "index: row, path, original size; sorted order" 0 $?
grep -q '"path": "in/b.png", "row": 1, "width": 64, "height": 48}' out/shard-000000.jsonl
ok "index of another shard" 0 $?
ls -a out | grep -q part-; ok "no temporary files left" 1 $?

# ---------------------------------------------------------------- resume
cksum out/* > sums1
tok in -o out --shard-size 3 2> err.txt; ok "a second run" 0 $?
grep -q '(0 written, 3 already complete)' err.txt; ok "does nothing" 0 $?
cksum out/* | cmp -s - sums1; ok "and changes nothing" 0 $?
rm out/shard-000001.npy
tok in -o out --shard-size 3 2> err.txt; ok "a run after losing a shard" 0 $?
grep -q '(1 written, 2 already complete)' err.txt; ok "redoes only that shard" 0 $?
cksum out/* | cmp -s - sums1; ok "byte for byte" 0 $?
sed -i '$d' out/shard-000002.jsonl      # an index that lost its last line
printf 'xx' >> out/shard-000000.npy      # and a data file with extra bytes
tok in -o out --shard-size 3 2> err.txt
grep -q '(2 written, 1 already complete)' err.txt; ok "stale shards are redone" 0 $?
cksum out/* | cmp -s - sums1; ok "byte for byte" 0 $?

# ---------------------------------------------------------------- machines, lists, patterns
tok in -o parts --shard-size 3 --shard 0/2 -q 2>/dev/null; ok "--shard 0/2" 0 $?
tok in -o parts --shard-size 3 --shard 1/2 -q 2>/dev/null; ok "--shard 1/2" 0 $?
same_files out parts 'shard-*'; ok "together they equal the single run" 0 $?
grep -q '"shard": 1,' parts/manifest-1-of-2.json && ! grep -q '"shard": 0,' parts/manifest-1-of-2.json
ok "each machine's manifest lists its own shards" 0 $?
{ find in -type f ! -name '.*' | sort -r; echo; echo in/a.png; } > list.txt
tok --list list.txt -o listed --shard-size 3 -q 2>/dev/null; ok "--list" 0 $?
same_files out listed 'shard-*'; ok "a list (unsorted, duplicates) gives the same shards" 0 $?
tok --list - -o stdin --shard-size 3 -q < list.txt 2>/dev/null
same_files out stdin 'shard-*'; ok "--list - reads stdin" 0 $?
tok 'in/*.png' -o globbed -q 2>/dev/null; ok "a quoted pattern" 0 $?
grep -q '"inputs": 4,' globbed/manifest.json && grep -q '"images": 3,' globbed/manifest.json
ok "matches the 4 top-level PNGs" 0 $?
tok in -o exts --ext png,JPG -q 2>/dev/null
grep -q '"inputs": 7,' exts/manifest.json; ok "--ext png,JPG" 0 $?
tok in -o one --shard-size 3 -q -b 1 -t 1 -j 1 2>/dev/null
same_files out one 'shard-*'; ok "batch 1, one thread each: the same bytes" 0 $?
tok in -o many --shard-size 3 -q -b 5 -t 3 -j 7 2>/dev/null
same_files out many 'shard-*'; ok "batch 5, 3 engine and 7 decoder threads: the same bytes" 0 $?

# ---------------------------------------------------------------- tokens = the library's
# the sample program (public API) on the 32x32 images, which need no resizing
"$ffmpeg" -loglevel error -i in/a.png a.ppm && "$ffmpeg" -loglevel error -i in/sub/deeper/e.png e.ppm
"$sample" "$model" a.ppm a_dec.ppm > a.groups; ok "samples/tokenize runs" 0 $?
"$sample" "$model" e.ppm e_dec.ppm > e.groups
head -n 1 a.groups | grep -q '16 tokens of L=18'; ok "16 tokens of 18 bits" 0 $?
# row R of an .npy of uint16 [rows][16][2], as "v1 v2" lines
npy_row() {
    hl=$(od -An -j8 -N2 -tu2 --endian=little "$1" | tr -d ' ')
    tail -c +$((10 + hl + $2 * 64 + 1)) "$1" | head -c 64 | od -An -v -tu2 --endian=little -w4 |
        awk '{print $1, $2}'
}
tail -n +2 a.groups > a.v && tail -n +2 e.groups > e.v
npy_row out/shard-000000.npy 0 | cmp -s - a.v; ok "in/a.png: the shard's group indices are the library's" 0 $?
npy_row out/shard-000002.npy 1 | cmp -s - e.v; ok "in/sub/deeper/e.png too" 0 $?

"$bin" detokenize out/shard-000000.npy -o dec -m "$model" -q; ok "detokenize a shard" 0 $?
[ "$(ls dec | wc -l)" = 2 ]; ok "one PNG per row" 0 $?
rgb dec/shard-000000-000000.png d1.rgb && tail -c 3072 a_dec.ppm > d2.rgb
cmp -s d1.rgb d2.rgb; ok "its pixels are the library's decoding" 0 $?
"$bin" encode in/a.png -o a.bsq -m "$model" -q && "$bin" decode a.bsq -o a_back.png -m "$model" -q
rgb a_back.png d3.rgb; cmp -s d1.rgb d3.rgb; ok "and bsqcodec encode/decode's" 0 $?
"$bin" detokenize out/shard-000000.npy -o dec1 -m "$model" -q --rows 1:
[ "$(ls dec1)" = shard-000000-000001.png ]; ok "--rows 1:" 0 $?
cmp -s dec/shard-000000-000001.png dec1/shard-000000-000001.png; ok "the same picture" 0 $?

# a 64x64 image at --size 64: 3x3 overlapping tiles of the 32x32 model
tok in/f.png -o big -s 64 -q; ok "--size 64 (tiled)" 0 $?
"$ffmpeg" -loglevel error -i in/f.png f.ppm && "$sample" "$model" f.ppm f_dec.ppm > f.groups
head -n 1 f.groups | grep -q '144 tokens'; ok "144 tokens per image" 0 $?
tail -n +2 f.groups > f.v
hl=$(od -An -j8 -N2 -tu2 --endian=little big/shard-000000.npy | tr -d ' ')
tail -c +$((10 + hl + 1)) big/shard-000000.npy | od -An -v -tu2 --endian=little -w4 |
    awk '{print $1, $2}' | cmp -s - f.v
ok "tiled tokens are the library's" 0 $?
"$bin" detokenize big/shard-000000.npy -o bigdec -m "$model" -q
rgb bigdec/shard-000000-000000.png b1.rgb && tail -c 12288 f_dec.ppm > b2.rgb
cmp -s b1.rgb b2.rgb; ok "and decode to the library's pixels" 0 $?

# other formats decode to the same pictures
tok in -o bits --shard-size 3 -q -f bits --container safetensors 2>/dev/null; ok "bits in safetensors" 0 $?
"$bin" detokenize bits/shard-000000.safetensors -o decb -m "$model" -q
cmp -s dec/shard-000000-000000.png decb/shard-000000-000000.png; ok "detokenize bits: same picture" 0 $?
tok in -o g6 --shard-size 3 -q -g 6 2>/dev/null; ok "--group-bits 6" 0 $?
grep -q '"vocabulary": 64,' g6/manifest.json; ok "vocabulary 64" 0 $?
"$bin" detokenize g6/shard-000000.npy -o dec6 -m "$model" -q
cmp -s dec/shard-000000-000000.png dec6/shard-000000-000000.png; ok "detokenize 3 groups of 6: same picture" 0 $?
tok in -o g18 --shard-size 3 -q -g 18 --container safetensors 2>/dev/null
grep -q '"dtype": "uint32",' g18/manifest.json; ok "18-bit groups are uint32" 0 $?

# ---------------------------------------------------------------- errors
"$bin" detokenize out/shard-000000.npy -o x -m "$other" -q 2> err.txt; ok "another model is refused" 1 $?
grep -q 'L = 18' err.txt; ok "naming both L" 0 $?
cp out/shard-000000.npy lone.npy
"$bin" detokenize lone.npy -o x -m "$model" -q -s 64 2> err.txt; ok "a size that does not fit" 1 $?
grep -q '16 tokens' err.txt; ok "is explained" 0 $?
head -c 150 out/shard-000000.npy > cut.npy
"$bin" detokenize cut.npy -o x -m "$model" -q 2> err.txt; ok "a truncated shard" 1 $?
grep -q truncated err.txt; ok "is called truncated" 0 $?
"$bin" detokenize in/a.png -o x -m "$model" -q 2>/dev/null; ok "a PNG is not a token file" 1 $?
[ ! -e x ] || [ -z "$(ls x)" ]; ok "and no output is written" 0 $?
tok in -o y -g 7 -q 2>/dev/null; ok "--group-bits 7 does not divide 18" 2 $?
tok in -o y -f words -q 2>/dev/null; ok "--format words" 2 $?
tok in -o y --shard 2/2 -q 2>/dev/null; ok "--shard 2/2" 2 $?
tok -o y -q 2>/dev/null; ok "no inputs" 2 $?
tok nothing-here.png -o y -q 2> err.txt; ok "a missing file does not abort the run" 0 $?
grep -q '"skipped": 1,' y/manifest.json; ok "it is skipped and counted" 0 $?
tok in -o /dev/null/out -q 2>/dev/null; ok "an impossible output folder" 1 $?
"$bin" tokenize --help | grep -q -- --decode-threads; ok "tokenize --help" 0 $?
"$bin" detokenize --help | grep -q -- --rows; ok "detokenize --help" 0 $?

# ---------------------------------------------------------------- Python
if [ -x "$py" ] && "$py" -c 'import numpy' 2>/dev/null; then
    mkdir -p samples && cp a.groups samples/a.png.groups && cp e.groups samples/e.png.groups
    "$py" "$top/tests/npy_check.py" out bits g6 samples; ok "numpy reads the shards (tests/npy_check.py)" 0 $?
else
    echo "SKIP (part): python3-numpy is not importable by $py; the numpy check did not run"
fi
lib=$build/.libs/libbsq.so
if [ ! -x "$py" ]; then
    echo "SKIP (part): no $py for samples/ctypes_example.py"
elif [ ! -f "$lib" ]; then
    echo "SKIP (part): no shared $lib (--disable-shared?) for samples/ctypes_example.py"
elif ldd "$lib" 2>/dev/null | grep -q 'libasan'; then
    echo "SKIP (part): libbsq is built with AddressSanitizer; python cannot load it"
else
    "$py" "$top/samples/ctypes_example.py" "$lib" "$model" a.ppm > ctypes.groups 2> ctypes.err
    ok "samples/ctypes_example.py" 0 $?
    cmp -s ctypes.groups a.groups; ok "gives the sample program's tokens" 0 $?
    "$py" "$top/samples/ctypes_example.py" "$lib" "$model" > /dev/null 2>&1
    ok "and runs on its own generated image" 0 $?
fi

echo "$pass passed, $fails failed"
[ "$fails" = 0 ]
