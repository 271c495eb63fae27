#!/bin/sh
# bsqcodec encode / decode / info end to end on short clips, with a small
# block-causal video model: round trips, seeking, pipes, wrong models,
# damaged and truncated files, no partial outputs.
set -u
bin=${BSQCODEC:-./bsqcodec/bsqcodec}
data=${TEST_DATA_DIR:-$(dirname "$0")/data}
ffmpeg=${FFMPEG:-ffmpeg}
vid=$data/bsqvit-parity/vid4x32_w64_l2_L18g9_blockcausal.weights.safetensors
img=$data/bsqvit-parity/img32_w64_l2_L18g9.weights.safetensors
if ! command -v "$ffmpeg" >/dev/null 2>&1; then
    echo "SKIP: no ffmpeg binary to make test clips"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bsqcodec.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fails=0
ok() { if [ "$2" = "$3" ]; then pass=$((pass + 1)); echo "ok: $1"; else fails=$((fails + 1)); echo "FAIL: $1 (got $3, expected $2)"; fi; }

"$ffmpeg" -loglevel error -f lavfi -i testsrc2=size=72x40:rate=25 -frames:v 10 -pix_fmt yuv420p "$tmp/clip.mkv"
"$ffmpeg" -loglevel error -f lavfi -i testsrc2=size=45x37 -frames:v 1 "$tmp/still.png"

"$bin" encode "$tmp/clip.mkv" -o "$tmp/a.bsq" -m "$vid" -q --gop 4; ok "encode a clip" 0 $?
"$bin" encode "$tmp/clip.mkv" -o "$tmp/b.bsq" -m "$vid" -q -t 1 --gop 4; ok "encode with one thread" 0 $?
"$bin" encode "$tmp/clip.mkv" -o "$tmp/d.bsq" -m "$vid" -q; ok "encode with the default GOP" 0 $?
"$bin" info "$tmp/d.bsq" | grep -q "10 in 1 GOP"; ok "the default GOP is 16 frames (4 blocks of this model)" 0 $?
cmp -s "$tmp/a.bsq" "$tmp/b.bsq"; ok "same bytes whatever the thread count" 0 $?
"$bin" info "$tmp/a.bsq" > "$tmp/info.txt"; ok "info" 0 $?
grep -q "10 in 3 GOPs" "$tmp/info.txt"; ok "info counts 10 frames in 3 GOPs" 0 $?
"$bin" info --json "$tmp/a.bsq" | grep -q '"frames": 10'; ok "info --json" 0 $?

"$bin" decode "$tmp/a.bsq" -o "$tmp/all%02d.png" -m "$vid" -q; ok "decode to a PNG sequence" 0 $?
[ "$(ls "$tmp" | grep -c '^all..\.png$')" = 10 ]; ok "ten frames" 0 $?
"$bin" decode "$tmp/a.bsq" -o "$tmp/part%02d.png" -m "$vid" -q --start 5 --frames 3; ok "decode --start 5 --frames 3" 0 $?
cmp -s "$tmp/all06.png" "$tmp/part01.png" && cmp -s "$tmp/all08.png" "$tmp/part03.png"
ok "seeking gives the same frames" 0 $?
cat "$tmp/a.bsq" | "$bin" decode - -o - -m "$vid" -q > "$tmp/pipe.y4m"; ok "decode from a pipe to a pipe" 0 $?
"$bin" decode "$tmp/a.bsq" -o "$tmp/file.y4m" -m "$vid" -q; ok "decode to y4m" 0 $?
cmp -s "$tmp/pipe.y4m" "$tmp/file.y4m"; ok "pipe and file outputs agree" 0 $?
"$ffmpeg" -loglevel error -i "$tmp/clip.mkv" -f yuv4mpegpipe - | "$bin" encode - -o - -m "$vid" -q > "$tmp/c.bsq"
ok "encode y4m from stdin to stdout" 0 $?
"$bin" decode "$tmp/c.bsq" -o "$tmp/c.y4m" -m "$vid" -q; ok "decode a streamed file (no seeking when written)" 0 $?
"$bin" decode "$tmp/a.bsq" -o "$tmp/out.mkv" -m "$vid" -q; ok "decode to mkv (x264)" 0 $?

"$bin" encode "$tmp/still.png" -o "$tmp/still.bsq" -m "$img" -q; ok "encode a still image of odd size" 0 $?
"$bin" decode "$tmp/still.bsq" -o "$tmp/still_out.png" -m "$img" -q; ok "decode it to one PNG" 0 $?

"$bin" decode "$tmp/a.bsq" -o "$tmp/wrong.y4m" -m "$img" -q 2> "$tmp/err"; ok "another model is refused" 1 $?
[ ! -e "$tmp/wrong.y4m" ]; ok "and leaves no output" 0 $?

size=$(wc -c < "$tmp/a.bsq")
head -c $((size / 2)) "$tmp/a.bsq" > "$tmp/trunc.bsq"
"$bin" decode "$tmp/trunc.bsq" -o "$tmp/trunc.y4m" -m "$vid" -q 2>/dev/null; ok "a truncated file is an error" 1 $?
[ ! -e "$tmp/trunc.y4m" ]; ok "no partial output" 0 $?
"$bin" decode "$tmp/trunc.bsq" -o "$tmp/trunc%02d.png" -m "$vid" -q --skip-damaged 2>/dev/null
[ -e "$tmp/trunc01.png" ]; ok "--skip-damaged keeps the intact GOPs" 0 $?
# flip one byte in the middle of the first GOP's payload
cp "$tmp/a.bsq" "$tmp/bad.bsq"
printf '\377' | dd of="$tmp/bad.bsq" bs=1 seek=260 conv=notrunc 2>/dev/null
"$bin" decode "$tmp/bad.bsq" -o "$tmp/bad.y4m" -m "$vid" -q 2> "$tmp/err"; ok "a damaged chunk is an error" 1 $?
grep -q "byte\|offset" "$tmp/err"; ok "the message gives the offset" 0 $?
"$bin" decode "$tmp/bad.bsq" -o "$tmp/skip.y4m" -m "$vid" -q --skip-damaged 2>/dev/null; ok "--skip-damaged decodes the rest" 0 $?

"$bin" encode "$tmp/clip.mkv" -o /nonexistent-dir/x.bsq -m "$vid" -q 2>/dev/null; ok "unwritable output fails" 1 $?
"$bin" encode "$tmp/clip.mkv" -o /dev/full -m "$vid" -q 2>/dev/null; [ $? -ne 0 ]; ok "a full disk fails" 0 $?
"$bin" encode "$tmp/nothing.mkv" -o "$tmp/x.bsq" -m "$vid" -q 2>/dev/null; ok "missing input fails" 1 $?
if [ "${HAVE_MODELS:-no}" = yes ]; then
    # the built-in models: the video model for a clip, the image model for a
    # still, and decode finds the one a file names
    "$bin" encode "$tmp/clip.mkv" -o "$tmp/dv.bsq" -q; ok "no model: the built-in video model" 0 $?
    "$bin" encode "$tmp/still.png" -o "$tmp/di.bsq" -q; ok "a still: the built-in image model" 0 $?
    fp='s/.*"tokenizer_fingerprint": "\([0-9a-f]*\)".*/\1/p'
    a=$("$bin" info --json "$tmp/dv.bsq" | sed -n "$fp")
    b=$("$bin" info --json "$tmp/di.bsq" | sed -n "$fp")
    [ -n "$a" ] && [ "$a" != "$b" ]; ok "two different models" 0 $?
    "$bin" decode "$tmp/dv.bsq" -o "$tmp/dv.y4m" -q; ok "decode finds the video model" 0 $?
    "$bin" info "$tmp/dv.bsq" | grep -q "prior *learned"; ok "with its built-in learned prior" 0 $?
    models=${TOP_SRCDIR:-$(dirname "$0")/..}/models
    "$bin" encode "$tmp/clip.mkv" -o "$tmp/dm.bsq" -m "$models/bsqvit-video.safetensors" -q
    cmp -s "$tmp/dv.bsq" "$tmp/dm.bsq"; ok "the built-in model is models/bsqvit-video.safetensors" 0 $?
    "$bin" encode "$tmp/clip.mkv" -o "$tmp/dp.bsq" --prior-model "$models/bsqvit-video-prior.safetensors" -q
    cmp -s "$tmp/dv.bsq" "$tmp/dp.bsq"; ok "and its prior models/bsqvit-video-prior.safetensors" 0 $?
    "$bin" info "$tmp/di.bsq" | grep -q "prior *learned"; ok "a still: with the image model's learned prior" 0 $?
    "$bin" encode "$tmp/still.png" -o "$tmp/dip.bsq" --prior-model "$models/bsqvit-image-prior.safetensors" -q
    cmp -s "$tmp/di.bsq" "$tmp/dip.bsq"; ok "which is models/bsqvit-image-prior.safetensors" 0 $?
    "$bin" encode "$tmp/still.png" -o "$tmp/dic.bsq" --prior context -q
    [ "$(wc -c < "$tmp/dic.bsq")" -gt "$(wc -c < "$tmp/di.bsq")" ]; ok "and codes it smaller than the context prior" 0 $?
    "$bin" encode "$tmp/still.png" -o "$tmp/dvp.bsq" -m "$models/bsqvit-image.safetensors" \
        --prior-model "$models/bsqvit-video-prior.safetensors" -q 2> "$tmp/err"
    ok "the video model's prior with the image model is refused" 1 $?
    grep -q "another tokenizer" "$tmp/err"; ok "saying it was trained on another tokenizer's tokens" 0 $?
    "$bin" decode "$tmp/di.bsq" -o "$tmp/di.png" -q; ok "decode finds the image model" 0 $?
    "$bin" decode "$tmp/a.bsq" -o "$tmp/x.y4m" -q 2> "$tmp/err"
    ok "a file of another model without -m is an error" 1 $?
    grep -q "not built into" "$tmp/err"; ok "saying to pass it" 0 $?
else
    "$bin" encode "$tmp/clip.mkv" -o "$tmp/x.bsq" -q 2>/dev/null; ok "no model: an error saying how to give one" 1 $?
fi
"$bin" encode "$tmp/clip.mkv" -o "$tmp/x.bsq" -m "$vid" --gop 0 2>/dev/null; ok "--gop 0 is a usage error" 2 $?
"$bin" encode "$tmp/clip.mkv" -o "$tmp/x.bsq" -m "$vid" --precision fp64 2>/dev/null; ok "--precision fp64 is a usage error" 2 $?
"$bin" encode "$tmp/clip.mkv" -o "$tmp/x.bsq" -m "$vid" -d cpu --precision bf16 2> "$tmp/err"
ok "bf16 on the CPU is refused" 1 $?
grep -q "fp32 only" "$tmp/err"; ok "saying the CPU computes in fp32" 0 $?
[ ! -e "$tmp/x.bsq" ]; ok "and leaving no output" 0 $?
"$bin" encode "$tmp/clip.mkv" -o "$tmp/p.bsq" -m "$vid" -d cpu --precision fp32 -q --gop 4; ok "--precision fp32 on the CPU" 0 $?
cmp -s "$tmp/p.bsq" "$tmp/a.bsq"; ok "changes nothing (the CPU is fp32)" 0 $?
"$bin" encode "$tmp/clip.mkv" -o "$tmp/v9.bsq" -m "$vid" -q --gop 9; ok "a GOP longer than the model's block" 0 $?
"$bin" decode "$tmp/v9.bsq" -o "$tmp/v9.y4m" -m "$vid" -q; ok "decodes" 0 $?
# an image model: the GOP changes only the coding, never the pictures
"$bin" encode "$tmp/clip.mkv" -o "$tmp/i1.bsq" -m "$img" -q --gop 1; ok "image model, GOP 1" 0 $?
"$bin" encode "$tmp/clip.mkv" -o "$tmp/i8.bsq" -m "$img" -q --gop 8; ok "image model, GOP 8" 0 $?
"$bin" decode "$tmp/i1.bsq" -o "$tmp/i1.y4m" -m "$img" -q && "$bin" decode "$tmp/i8.bsq" -o "$tmp/i8.y4m" -m "$img" -q
cmp -s "$tmp/i1.y4m" "$tmp/i8.y4m"; ok "same pictures whatever the GOP" 0 $?

# --scale: the rate control. Tokens cover the coded size (the scaled size
# stretched to fill the model's tiles, 32x32 overlapping by 2 here, unless
# --no-fill); decode resamples back to the input's size, or writes the
# coded size with --coded-size.
jkey() { sed -n "s/.*\"$2\": \([^,}]*\).*/\1/p" "$1"; }
"$bin" encode "$tmp/clip.mkv" -o "$tmp/s5.bsq" -m "$vid" -q --scale 0.5; ok "encode --scale 0.5" 0 $?
"$bin" info --json "$tmp/s5.bsq" > "$tmp/s5.json"
"$bin" info --json "$tmp/d.bsq" > "$tmp/s1.json"
grep -q '"width": 72, "height": 40,' "$tmp/s5.json"; ok "the file keeps the input's size" 0 $?
grep -q '"coded_size": \[62, 32\]' "$tmp/s5.json"; ok "and codes 36x20 filled to its 2x1 tiles: 62x32" 0 $?
"$bin" info "$tmp/s5.bsq" | grep -q "coded size *62x32"; ok "info says the coded size" 0 $?
grep -q '"coded_size": \[92, 62\]' "$tmp/s1.json"; ok "the default fills the tiles too: 72x40 as 92x62" 0 $?
"$bin" encode "$tmp/clip.mkv" -o "$tmp/s5n.bsq" -m "$vid" -q --scale 0.5 --no-fill
"$bin" info --json "$tmp/s5n.bsq" | grep -q '"coded_size": \[36, 20\]'; ok "--no-fill codes 36x20" 0 $?
awk -v a="$(jkey "$tmp/s5.json" raw_bits_per_pixel)" -v b="$(jkey "$tmp/s1.json" raw_bits_per_pixel)" \
    'BEGIN { exit !(a > 0 && a < b) }'; ok "fewer token bits per pixel than at scale 1" 0 $?
"$bin" decode "$tmp/s5.bsq" -o "$tmp/s5.y4m" -m "$vid" -q; ok "decode it" 0 $?
head -c 40 "$tmp/s5.y4m" | grep -q "W72 H40 "; ok "back at 72x40" 0 $?
"$bin" decode "$tmp/s5.bsq" -o "$tmp/s5c.y4m" -m "$vid" -q --coded-size; ok "decode --coded-size" 0 $?
head -c 40 "$tmp/s5c.y4m" | grep -q "W62 H32 "; ok "at 62x32" 0 $?
"$bin" encode "$tmp/clip.mkv" -o "$tmp/sq.bsq" -m "$vid" -q --coded-size 40x40; ok "encode --coded-size 40x40" 0 $?
"$bin" decode "$tmp/sq.bsq" -o "$tmp/sq.y4m" -m "$vid" -q --coded-size
head -c 60 "$tmp/sq.y4m" | grep -q "W40 H40 .* A9:5 "; ok "square coded frames keep the picture's shape (SAR 9:5)" 0 $?
"$bin" encode "$tmp/clip.mkv" -o "$tmp/s2.bsq" -m "$vid" -q --scale 1 --gop 16
cmp -s "$tmp/s2.bsq" "$tmp/d.bsq"; ok "--scale 1 is the default" 0 $?
for bad in 0 0.1 4.5 x 1e400; do
    "$bin" encode "$tmp/clip.mkv" -o "$tmp/x.bsq" -m "$vid" -q --scale "$bad" 2>/dev/null
    ok "--scale $bad is a usage error" 2 $?
done
for bad in 0x5 40 40x 40x40x2 70000x40; do
    "$bin" encode "$tmp/clip.mkv" -o "$tmp/x.bsq" -m "$vid" -q --coded-size "$bad" 2>/dev/null
    ok "--coded-size $bad is a usage error" 2 $?
done
"$bin" encode "$tmp/clip.mkv" -o "$tmp/x.bsq" -m "$vid" -q --scale 2 --coded-size 8x8 2>/dev/null
ok "--scale with --coded-size is a usage error" 2 $?
if [ "${HAVE_MODELS:-no}" = yes ]; then
    # a real picture through the built-in image model: more tokens, better
    # pictures (a broken resampler would not get better with the scale)
    top=${TOP_SRCDIR:-$(dirname "$0")/..}
    "$ffmpeg" -loglevel error -i "$top/samples/cockatoo-360p.mp4" -frames:v 1 -vf crop=160:96:240:120 "$tmp/photo.png"
    last=0
    for s in 0.5 1 2; do
        "$bin" encode "$tmp/photo.png" -o "$tmp/p$s.bsq" -q --scale $s && "$bin" decode "$tmp/p$s.bsq" -o "$tmp/p$s.png" -q
        ok "the built-in image model at --scale $s" 0 $?
        head -c 24 "$tmp/p$s.png" | od -An -tx1 | tr -d ' \n' | grep -q '000000a000000060'
        ok "decodes to 160x96" 0 $?
        "$bin" compare --json "$tmp/photo.png" "$tmp/p$s.png" > "$tmp/p$s.json"
        psnr=$(jkey "$tmp/p$s.json" psnr_rgb)
        awk -v a="$psnr" -v b="$last" 'BEGIN { exit !(a > b + 0.5) }'
        ok "PSNR at --scale $s ($psnr dB) above the one below ($last dB)" 0 $?
        last=$psnr
    done
    # filling the tiles: the same tokens, a better picture
    "$bin" encode "$tmp/photo.png" -o "$tmp/pn.bsq" -q --no-fill && "$bin" decode "$tmp/pn.bsq" -o "$tmp/pn.png" -q
    "$bin" compare --json "$tmp/photo.png" "$tmp/pn.png" > "$tmp/pn.json"
    "$bin" info --json "$tmp/p1.bsq" > "$tmp/p1i.json"; "$bin" info --json "$tmp/pn.bsq" > "$tmp/pni.json"
    ok "filled or not, the same tokens" "$(jkey "$tmp/pni.json" raw_bits_per_pixel)" "$(jkey "$tmp/p1i.json" raw_bits_per_pixel)"
    filled=$(jkey "$tmp/p1.json" psnr_rgb) plain=$(jkey "$tmp/pn.json" psnr_rgb)
    awk -v a="$filled" -v b="$plain" 'BEGIN { exit !(a > b) }'
    ok "filled tiles give the better picture ($filled dB, $plain dB without)" 0 $?
fi
ls -a "$tmp" | grep -q part-; ok "no temporary files left" 1 $?
"$bin" encode --help | grep -q -- --gop; ok "encode --help" 0 $?
"$bin" decode --help | grep -q -- --skip-damaged; ok "decode --help" 0 $?
"$bin" encode --help | grep -q -- --scale; ok "encode --help tells of --scale" 0 $?

echo "$pass passed, $fails failed"
[ "$fails" = 0 ]
