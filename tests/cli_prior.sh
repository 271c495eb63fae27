#!/bin/sh
# The learned prior from the command line: bsqcodec train-prior on a small
# model's tokens, encode --prior learned with that network, decode, and the
# mistakes a user can make (network for another tokenizer, no network).
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
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bsqprior.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fails=0
ok() { if [ "$2" = "$3" ]; then pass=$((pass + 1)); echo "ok: $1"; else fails=$((fails + 1)); echo "FAIL: $1 (got $3, expected $2)"; fi; }

"$ffmpeg" -loglevel error -f lavfi -i testsrc2=size=96x64:rate=10 -frames:v 24 -c:v ffv1 "$tmp/a.mkv"
"$ffmpeg" -loglevel error -f lavfi -i testsrc=size=64x64:rate=10 -frames:v 12 -c:v ffv1 "$tmp/b.mkv"

"$bin" train-prior "$tmp/a.mkv" "$tmp/b.mkv" -m "$vid" -o "$tmp/p.safetensors" --epochs 2 --hidden 16 -q
ok "train-prior" 0 $?
"$bin" train-prior "$tmp/a.mkv" "$tmp/b.mkv" -m "$vid" -o "$tmp/p2.safetensors" --epochs 2 --hidden 16 -q
cmp -s "$tmp/p.safetensors" "$tmp/p2.safetensors"; ok "the same run gives the same network" 0 $?
"$bin" train-prior "$tmp/a.mkv" "$tmp/b.mkv" -m "$vid" -o "$tmp/pn.safetensors" --epochs 2 --hidden 16 -q --no-fill
ok "train-prior --no-fill" 0 $?
cmp -s "$tmp/p.safetensors" "$tmp/pn.safetensors"; ok "trains on other tokens (frames not stretched to fill the tiles)" 1 $?

"$bin" encode "$tmp/a.mkv" -o "$tmp/l.bsq" -m "$vid" --prior learned --prior-model "$tmp/p.safetensors" -q
ok "encode with the learned prior" 0 $?
"$bin" info "$tmp/l.bsq" | grep -q "prior *learned"; ok "the file names the learned prior" 0 $?
"$bin" encode "$tmp/a.mkv" -o "$tmp/l1.bsq" -m "$vid" --prior-model "$tmp/p.safetensors" -q -t 1
cmp -s "$tmp/l.bsq" "$tmp/l1.bsq"; ok "--prior-model alone means learned; same bytes with 1 thread" 0 $?
"$bin" encode "$tmp/a.mkv" -o "$tmp/c.bsq" -m "$vid" --prior context -q; ok "encode with the context prior" 0 $?
"$bin" decode "$tmp/l.bsq" -o "$tmp/l.y4m" -m "$vid" --prior-model "$tmp/p.safetensors" -q
ok "decode the learned file" 0 $?
"$bin" decode "$tmp/c.bsq" -o "$tmp/c.y4m" -m "$vid" -q; ok "decode the context file" 0 $?
cmp -s "$tmp/l.y4m" "$tmp/c.y4m"; ok "both priors give the same frames" 0 $?

"$bin" decode "$tmp/l.bsq" -o "$tmp/x.y4m" -m "$vid" -q --prior-model "$tmp/nope" 2>/dev/null
ok "a missing network is an error" 1 $?
"$bin" train-prior "$tmp/b.mkv" -m "$vid" -o "$tmp/q.safetensors" --epochs 1 --hidden 8 -q
"$bin" decode "$tmp/l.bsq" -o "$tmp/x.y4m" -m "$vid" --prior-model "$tmp/q.safetensors" -q 2> "$tmp/err"
ok "decoding with another network is refused" 1 $?
grep -q "fingerprint\|prior" "$tmp/err"; ok "naming the prior" 0 $?
"$bin" train-prior "$tmp/b.mkv" -m "$img" -o "$tmp/i.safetensors" --epochs 1 --hidden 8 -q
"$bin" encode "$tmp/a.mkv" -o "$tmp/x.bsq" -m "$vid" --prior-model "$tmp/i.safetensors" -q 2> "$tmp/err"
ok "a network for another tokenizer is refused" 1 $?
grep -q "another tokenizer" "$tmp/err"; ok "saying so" 0 $?
[ ! -e "$tmp/x.bsq" ]; ok "no output left" 0 $?
"$bin" encode "$tmp/a.mkv" -o "$tmp/x.bsq" -m "$vid" --prior fancy -q 2>/dev/null; ok "an unknown prior is a usage error" 2 $?
"$bin" train-prior "$tmp/a.mkv" -m "$vid" -q 2>/dev/null; ok "train-prior without -o" 2 $?
"$bin" train-prior "$tmp/none.mkv" -m "$vid" -o "$tmp/y.safetensors" -q 2>/dev/null; ok "train-prior on a missing clip" 1 $?
[ ! -e "$tmp/y.safetensors" ]; ok "writes nothing" 0 $?
"$bin" train-prior --help | grep -q -- --hidden; ok "train-prior --help" 0 $?

echo "$pass passed, $fails failed"
[ "$fails" = 0 ]
