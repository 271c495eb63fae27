#!/bin/sh
# bsqcodec train end to end with a tiny model on generated pictures: an
# image model, a video model started from it, determinism, exact resume,
# unreadable data skipped, and the errors.
set -u
bin=${BSQCODEC:-./bsqcodec/bsqcodec}
ffmpeg=${FFMPEG:-ffmpeg}
if ! command -v "$ffmpeg" >/dev/null 2>&1; then
    echo "SKIP: no ffmpeg binary to make training pictures"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bsqtrain.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fails=0
ok() { if [ "$2" = "$3" ]; then pass=$((pass + 1)); echo "ok: $1"; else fails=$((fails + 1)); echo "FAIL: $1 (got $3, expected $2)"; fi; }

mkdir -p "$tmp/data/sub" "$tmp/bad"
"$ffmpeg" -loglevel error -f lavfi -i testsrc2=size=64x48 -frames:v 1 "$tmp/data/a.png"
"$ffmpeg" -loglevel error -f lavfi -i mandelbrot=size=40x40 -frames:v 1 "$tmp/data/sub/b.png"
"$ffmpeg" -loglevel error -f lavfi -i testsrc=size=48x32:rate=10 -frames:v 6 -c:v ffv1 "$tmp/data/sub/c.mkv"
"$ffmpeg" -loglevel error -f lavfi -i testsrc2=size=8x8 -frames:v 1 "$tmp/data/tiny.png"
printf 'not an image' > "$tmp/data/broken.png"
printf 'not an image' > "$tmp/bad/x.png"

tiny="--size 16 --patch 8 --width 32 --layers 1 --heads 2 --bits 6 --group 3 --batch 2 -t 1 -q"
"$bin" train "$tmp/data" -o "$tmp/img.safetensors" $tiny --steps 6 --save-every 3 --warmup 2 2> "$tmp/err.txt"
ok "train an image model" 0 $?
[ -s "$tmp/img.safetensors" ] && [ -s "$tmp/img.safetensors.state" ]; ok "model and state written" 0 $?
[ "$(wc -l < "$tmp/img.safetensors.csv")" = 7 ]; ok "one log line per step" 0 $?
head -1 "$tmp/img.safetensors.csv" | grep -q '^step,loss,l1,mse,psnr'; ok "log header" 0 $?
grep -q "broken.png" "$tmp/err.txt" && grep -q "tiny.png.*smaller" "$tmp/err.txt"
ok "unreadable and too small files are reported" 0 $?
"$bin" encode "$tmp/data/a.png" -o "$tmp/a.bsq" -m "$tmp/img.safetensors" -q; ok "the trained model encodes" 0 $?
"$bin" decode "$tmp/a.bsq" -o "$tmp/a.png" -m "$tmp/img.safetensors" -q; ok "and decodes" 0 $?

"$bin" train "$tmp/data" -o "$tmp/img2.safetensors" $tiny --steps 6 --save-every 3 --warmup 2 2>/dev/null
cmp -s "$tmp/img.safetensors" "$tmp/img2.safetensors"; ok "the same run gives the same model" 0 $?

"$bin" train "$tmp/data" -o "$tmp/r.safetensors" $tiny --steps 6 --until 4 --warmup 2 2>/dev/null
ok "--until stops early" 0 $?
[ "$(wc -l < "$tmp/r.safetensors.csv")" = 5 ]; ok "after 4 steps" 0 $?
"$bin" train "$tmp/data" -o "$tmp/r.safetensors" $tiny --steps 6 --warmup 2 --resume 2>/dev/null
ok "resume" 0 $?
cmp -s "$tmp/img.safetensors" "$tmp/r.safetensors"; ok "4 steps, then resumed to 6, equals 6 steps" 0 $?
[ "$(wc -l < "$tmp/r.safetensors.csv")" = 7 ]; ok "the resumed log continues" 0 $?

"$bin" train "$tmp/data" -o "$tmp/vid.safetensors" --init "$tmp/img.safetensors" --frames 3 \
    --batch 2 --steps 2 -t 1 -q 2>/dev/null
ok "a video model from the image model" 0 $?
"$bin" encode "$tmp/data/sub/c.mkv" -o "$tmp/c.bsq" -m "$tmp/vid.safetensors" -q; ok "the video model encodes" 0 $?
"$bin" info --json "$tmp/c.bsq" | grep -q '"frames": 6'; ok "six frames coded" 0 $?

"$bin" train "$tmp/data" $tiny 2>/dev/null; ok "no output is a usage error" 2 $?
"$bin" train "$tmp/data" -o "$tmp/x.safetensors" $tiny --steps 0 2>/dev/null; ok "--steps 0 is a usage error" 2 $?
"$bin" train "$tmp/nonexistent" -o "$tmp/x.safetensors" $tiny --steps 1 2>/dev/null; ok "missing data" 1 $?
"$bin" train "$tmp/bad" -o "$tmp/x.safetensors" $tiny --steps 1 2> "$tmp/err2.txt"; ok "no usable data" 1 $?
grep -q "no usable image or video" "$tmp/err2.txt"; ok "says so" 0 $?
[ ! -e "$tmp/x.safetensors" ]; ok "no model left behind" 0 $?
"$bin" train "$tmp/data" -o "$tmp/y.safetensors" $tiny --steps 2 --resume 2>/dev/null; ok "--resume without a state" 1 $?
"$bin" train "$tmp/data" -o "$tmp/img.safetensors" --size 32 --width 32 --layers 1 --heads 2 \
    --bits 6 --steps 7 --resume -t 1 -q 2>/dev/null
ok "--resume with another architecture is refused" 1 $?
"$bin" train --help | grep -q -- "--resume"; ok "train --help" 0 $?

echo "$pass passed, $fails failed"
[ "$fails" = 0 ]
