#!/bin/sh
# bench/quality: its Bjontegaard and interpolation self-test, then a whole
# run on one small generated image and one short clip with the tiny
# random-weight models (the pictures are noise; this checks the harness,
# not the codec): exit status, CSV rows, report tables, bad arguments.
set -u
top=${TOP_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
bin=${BSQCODEC:-./bsqcodec/bsqcodec}
data=${TEST_DATA_DIR:-$top/tests/data}
ffmpeg=${FFMPEG:-ffmpeg}
py=${PYTHON3:-/usr/bin/python3}
[ -x "$py" ] || py=$(command -v python3 || echo python3)
if ! "$py" -c 'import numpy' 2>/dev/null; then
    echo "SKIP: bench/quality needs python3 with numpy (Debian: python3-numpy)"
    exit 77
fi
if ! command -v "$ffmpeg" >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
    echo "SKIP: bench/quality needs the ffmpeg and ffprobe programs"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bsqquality.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fails=0
ok() { if [ "$2" = "$3" ]; then pass=$((pass + 1)); echo "ok: $1"; else fails=$((fails + 1)); echo "FAIL: $1 (got $3, expected $2)"; fi; }
q() { "$py" "$top/bench/quality" "$@"; }

q --self-test > "$tmp/self.txt"; ok "self-test" 0 $?
grep -q ' 0 failed' "$tmp/self.txt"; ok "self-test has no failure" 0 $?

mkdir -p "$tmp/images" "$tmp/clips"
# an odd size: the harness crops its reference to 96x64
"$ffmpeg" -nostdin -loglevel error -f lavfi -i mandelbrot=size=97x65 -frames:v 1 "$tmp/images/m.png"
"$ffmpeg" -nostdin -loglevel error -f lavfi -i testsrc2=size=64x48:rate=25 -frames:v 8 -c:v ffv1 "$tmp/clips/t.mkv"
img=$data/bsqvit-parity/img32_w64_l2_L18g9.weights.safetensors
vid=$data/bsqvit-parity/vid4x32_w64_l2_L18g9_blockcausal.weights.safetensors
q --quick --bsqcodec "$bin" --images "$tmp/images" --clips "$tmp/clips" --image-model "$img" \
    --video-model "$vid" --methods ours,jpeg,x264 -j 2 -o "$tmp/out" > "$tmp/report.txt" 2> "$tmp/err"
ok "a quick run" 0 $?
for f in points.csv summary.csv compare.csv report.md; do
    [ -s "$tmp/out/$f" ]; ok "writes $f" 0 $?
done
ok "four rows of ours per set (the default --scales)" 8 "$(grep -c ',ours,' "$tmp/out/points.csv")"
ok "four JPEG points on the image" 4 "$(grep -c '^images,m.png,jpeg-' "$tmp/out/points.csv")"
if "$ffmpeg" -hide_banner -encoders 2>/dev/null | grep -q libx264; then
    ok "four x264 points on the clip" 4 "$(grep -c '^clips,t.mkv,x264,' "$tmp/out/points.csv")"
fi
grep -q '^images,m.png,ours,img32_w64_l2_L18g9.weights@0.5,96,64,1,' "$tmp/out/points.csv"
ok "our image row at --scale 0.5: measured at 96x64" 0 $?
grep -q '^clips,t.mkv,ours,vid4x32_w64_l2_L18g9_blockcausal.weights@1.41,64,48,8,' "$tmp/out/points.csv"
ok "our clip row at --scale 1.41: 8 frames of 64x48" 0 $?
# more tokens, more bytes: the four points of a set are in order of rate
for set in images clips; do
    grep "^$set,.*,ours," "$tmp/out/points.csv" | cut -d, -f9 | sort -c -g
    ok "$set: bpp grows with the scale" 0 $?
done
grep -q '^| ours | img32_w64_l2_L18g9.weights@0.71 ' "$tmp/report.txt"; ok "the report's table has our points" 0 $?
grep -q 'ours against the baselines (images)' "$tmp/report.txt"; ok "matched-bpp comparison" 0 $?
# (random weights: the PSNR ranges need not overlap, so BD-rate may be n/a)
grep -q '^| jpeg-[a-z]* | [0-9]* / [0-9]* | \(n/a\|[-+][0-9.]*%\) | [-+][0-9.]* |' "$tmp/report.txt"
ok "a Bjontegaard row against JPEG" 0 $?
q --quick --bsqcodec "$bin" --images "$tmp/images" --sets images --image-model "$img" \
    --methods ours,jpeg --scales 1 -j 2 -o "$tmp/out1" > "$tmp/report1.txt" 2>/dev/null
ok "one scale" 0 $?
grep -q 'Bjontegaard deltas need at least 4 points' "$tmp/report1.txt"; ok "says why there is no BD-rate" 0 $?
cmp -s "$tmp/report.txt" "$tmp/out/report.md"; ok "report.md is what was printed" 0 $?
[ -z "$(ls "$tmp/out" | grep '^work-')" ]; ok "no work files left" 0 $?
q --reanalyse "$tmp/out/points.csv" -o "$tmp/again" > "$tmp/again.txt" 2>/dev/null
ok "--reanalyse" 0 $?
tail -n +4 "$tmp/report.txt" | grep -v "^Plot: " > "$tmp/r1"; tail -n +4 "$tmp/again.txt" | grep -v "^Plot: " > "$tmp/r2"
cmp -s "$tmp/r1" "$tmp/r2"; ok "gives the same tables from points.csv" 0 $?
cmp -s "$tmp/out/summary.csv" "$tmp/again/summary.csv"; ok "and the same summary.csv" 0 $?
printf 'a,b\n1,2\n' > "$tmp/bad.csv"
q --reanalyse "$tmp/bad.csv" -o "$tmp/again2" > /dev/null 2>&1; ok "--reanalyse of another CSV is an error" 2 $?

q --images "$tmp/images" --clips "$tmp/none" --image-model "$tmp/nothing.safetensors" \
    -o "$tmp/o2" > /dev/null 2>&1
ok "a missing model is an error" 2 $?
q --bsqcodec "$bin" --images "$tmp/none" --clips "$tmp/none" -o "$tmp/o3" > /dev/null 2> "$tmp/err"
ok "no inputs is an error" 2 $?
grep -q 'no inputs' "$tmp/err"; ok "saying so" 0 $?
q --methods ours,mpeg2 > /dev/null 2>&1; ok "an unknown method is a usage error" 2 $?
q --scales 0.5,9 > /dev/null 2>&1; ok "a scale above 4 is a usage error" 2 $?
q --help | grep -q -- '--image-model'; ok "--help" 0 $?

echo "$pass passed, $fails failed"
[ "$fails" = 0 ]
