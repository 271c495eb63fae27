#!/bin/sh
# The frei0r plugin bsq.so through the system ffmpeg's frei0r filter, against
# tests/frei0r_ref (the same frames through libbsq's own API): round trips
# byte for byte with a video model (across a block boundary) and an image
# model, tokens mode (frames unchanged, the tokens file equal to the
# library's tokens and decodable), alpha passing through, parameter
# parsing, and clear errors instead of crashes.
#
# Frames are 80x41: not a multiple of the models' 32-pixel tiles nor of the
# patch size in height. The width is a multiple of 16 because FFmpeg 5.1
# (Debian 12) hands frei0r plugins rows padded to 64 bytes (see
# man/bsq-frei0r.7).
set -u
ffmpeg=${FFMPEG:-ffmpeg}
data=${TEST_DATA_DIR:-$(dirname "$0")/data}
plugdir=${FREI0R_PLUGIN_DIR:-plugin/.libs}
ref=${FREI0R_REF:-tests/frei0r_ref}
vid=$data/bsqvit-parity/vid4x32_w64_l2_L18g9_blockcausal.weights.safetensors
img=$data/bsqvit-parity/img32_w64_l2_L18g9.weights.safetensors
W=80 H=41 N=6

if [ "${HAVE_FREI0R:-yes}" != yes ]; then
    echo "SKIP: frei0r.h was not found at configure time (Debian package frei0r-plugins-dev), so the plugin was not built"
    exit 77
fi
if [ -z "$ffmpeg" ] || ! command -v "$ffmpeg" >/dev/null 2>&1; then
    echo "SKIP: no ffmpeg program"
    exit 77
fi
if ! "$ffmpeg" -hide_banner -filters 2>/dev/null | grep -q '^ *[A-Z.]* *frei0r '; then
    echo "SKIP: $ffmpeg has no frei0r filter"
    exit 77
fi
if [ ! -f "$plugdir/bsq.so" ] || [ ! -x "$ref" ]; then
    echo "FAIL: $plugdir/bsq.so or $ref was not built"
    exit 1
fi

# A plugin built with -fsanitize=address cannot be loaded into an ffmpeg
# built without: preload the sanitizer runtimes the plugin and libbsq use.
preload=$(ldd "$plugdir/bsq.so" 2>/dev/null | awk '/lib(asan|ubsan)\.so/ { print $3 }' | tr '\n' ' ')
# cuBLAS carries its own C++ runtime, whose exception pool is allocated when
# the library loads; frei0r unloads the plugin (and cuBLAS with it) at the
# end, and LeakSanitizer would report that pool: keep cuBLAS loaded.
if [ -n "$preload" ]; then
    preload="$preload$(ldd "$plugdir/bsq.so" 2>/dev/null | awk '/libcublas(Lt)?\.so/ { print $3 }' | tr '\n' ' ')"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bsq-frei0r.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fails=0
ok() { if [ "$2" = "$3" ]; then pass=$((pass + 1)); echo "ok: $1"; else fails=$((fails + 1)); echo "FAIL: $1 (got $3, expected $2)"; fi; }

# bsqf VF OUT [PIXFMT]: raw frames of $tmp/in.PIXFMT through the filter
# chain VF into OUT; stderr goes to $tmp/err, the exit status is returned.
bsqf() {
    pf=${3:-rgb24}
    env FREI0R_PATH="$plugdir" ${preload:+LD_PRELOAD="$preload"} \
        "$ffmpeg" -nostdin -hide_banner -loglevel error -f rawvideo -pix_fmt "$pf" -s ${W}x$H -r 5 \
        -i "$tmp/in.$pf" -vf "$1" -f rawvideo -pix_fmt "$pf" -y "$2" 2> "$tmp/err"
}
# err_is STATUS TEXT NAME: the run failed with STATUS, printing one line from
# the plugin ("bsq: ...") that contains TEXT, and no other message.
err_is() {
    ok "$3: exit status" "$1" "$status"
    grep -q "^bsq: .*$2" "$tmp/err"; ok "$3: says why" 0 $?
    ok "$3: one line" 1 "$(wc -l < "$tmp/err" | tr -d ' ')"
}

"$ffmpeg" -nostdin -loglevel error -f lavfi -i "testsrc2=size=${W}x$H:rate=5,format=rgb24" \
    -frames:v $N -f rawvideo -pix_fmt rgb24 "$tmp/in.rgb24"
ok "make $N frames of ${W}x$H" $((W * H * 3 * N)) "$(wc -c < "$tmp/in.rgb24" | tr -d ' ')"

# ---- round trips: the plugin gives exactly the library's reconstruction
for m in vid img; do
    eval model=\$$m
    bsqf "frei0r=filter_name=bsq:filter_params=$model" "$tmp/$m.rgb"; ok "$m: roundtrip through ffmpeg" 0 $?
    "$ref" roundtrip "$model" $W $H "$tmp/in.rgb24" "$tmp/$m.ref" > /dev/null; ok "$m: the library's round trip" 0 $?
    cmp -s "$tmp/$m.rgb" "$tmp/$m.ref"; ok "$m: the same bytes" 0 $?
    cmp -s "$tmp/$m.rgb" "$tmp/in.rgb24"; ok "$m: frames are reconstructions, not the input" 1 $?
done
bsqf "frei0r=bsq:$vid|roundtrip||cpu|1" "$tmp/t1.rgb"; ok "all parameters given, short form" 0 $?
cmp -s "$tmp/t1.rgb" "$tmp/vid.rgb"; ok "one thread on the CPU: the same frames" 0 $?

# ---- tokens mode: frames pass through, the file holds the library's tokens
bsqf "frei0r=filter_name=bsq:filter_params=$vid|tokens|$tmp/vid.tok" "$tmp/pass.rgb"; ok "tokens mode" 0 $?
cmp -s "$tmp/pass.rgb" "$tmp/in.rgb24"; ok "frames pass through unchanged" 0 $?
"$ref" tokens "$vid" $W $H "$tmp/in.rgb24" "$tmp/vid.tok"; ok "the tokens file equals the library's tokens" 0 $?
"$ref" decode "$vid" "$tmp/vid.tok" "$tmp/dec.rgb" > /dev/null; ok "it decodes" 0 $?
cmp -s "$tmp/dec.rgb" "$tmp/vid.rgb"; ok "to the frames of roundtrip mode" 0 $?
bsqf "frei0r=filter_name=bsq:filter_params=$img|tokens|$tmp/img.tok" "$tmp/pass.rgb"; ok "tokens mode, image model" 0 $?
"$ref" tokens "$img" $W $H "$tmp/in.rgb24" "$tmp/img.tok"; ok "its tokens equal the library's" 0 $?
bsqf "frei0r=filter_name=bsq:filter_params=$vid|roundtrip|$tmp/rt.tok" "$tmp/rt.rgb"; ok "roundtrip mode with a tokens file" 0 $?
cmp -s "$tmp/rt.rgb" "$tmp/vid.rgb" && cmp -s "$tmp/rt.tok" "$tmp/vid.tok"; ok "the same frames and the same tokens file" 0 $?
# parameters changed in mid-stream (sendcmd): a new thread count goes on
# with the same tokens file, a new tokens file starts there
p="$vid|tokens|$tmp/s1.tok"
bsqf "sendcmd=c='0.5 frei0r filter_params $p|cpu|1',frei0r=bsq:$p" "$tmp/x.rgb"; ok "new threads in mid-stream" 0 $?
ok "the tokens file goes on" $((96 + N * (16 + 8 * 96))) "$(wc -c < "$tmp/s1.tok" | tr -d ' ')"
bsqf "sendcmd=c='0.5 frei0r filter_params $vid|tokens|$tmp/s3.tok',frei0r=bsq:$p" "$tmp/x.rgb"; ok "a new tokens file in mid-stream" 0 $?
ok "the first has 3 frames" $((96 + 3 * (16 + 8 * 96))) "$(wc -c < "$tmp/s1.tok" | tr -d ' ')"
ok "the second the other 3" $((96 + 3 * (16 + 8 * 96))) "$(wc -c < "$tmp/s3.tok" | tr -d ' ')"

# ---- alpha passes through (RGBA in and out: no conversion on the way)
"$ffmpeg" -nostdin -loglevel error -f rawvideo -pix_fmt rgb24 -s ${W}x$H -i "$tmp/in.rgb24" \
    -vf "format=rgba,geq=r='r(X,Y)':g='g(X,Y)':b='b(X,Y)':a='mod(X*7+Y*3,256)'" \
    -f rawvideo -pix_fmt rgba "$tmp/in.rgba"
bsqf "frei0r=filter_name=bsq:filter_params=$vid" "$tmp/out.rgba" rgba; ok "RGBA with alpha" 0 $?
for f in in out; do
    "$ffmpeg" -nostdin -loglevel error -f rawvideo -pix_fmt rgba -s ${W}x$H -i "$tmp/$f.rgba" \
        -vf alphaextract -f rawvideo -pix_fmt gray "$tmp/$f.alpha"
done
cmp -s "$tmp/in.alpha" "$tmp/out.alpha" && [ -s "$tmp/in.alpha" ]; ok "alpha unchanged" 0 $?

# ---- errors: one line from the plugin and exit status 1, never a crash
bsqf "frei0r=filter_name=bsq:filter_params=$tmp/no-such-model.safetensors" "$tmp/x.rgb"; status=$?
err_is 1 "no-such-model.safetensors: No such file" "a missing model"
bsqf "frei0r=filter_name=bsq:filter_params=$tmp/in.rgb24" "$tmp/x.rgb"; status=$?
err_is 1 "in.rgb24: neither a safetensors model" "a file that is no model"
bsqf "frei0r=filter_name=bsq:filter_params=$vid|fast" "$tmp/x.rgb"; status=$?
err_is 1 'unknown mode "fast"' "an unknown mode"
bsqf "frei0r=filter_name=bsq:filter_params=$vid|tokens" "$tmp/x.rgb"; status=$?
err_is 1 "mode tokens needs a file" "tokens mode without a file"
bsqf "frei0r=filter_name=bsq:filter_params=$vid|tokens|$tmp/no/such/dir.tok" "$tmp/x.rgb"; status=$?
err_is 1 "cannot create the tokens file" "an unwritable tokens file"
bsqf "frei0r=filter_name=bsq:filter_params=$vid||||2.5" "$tmp/x.rgb"; status=$?
err_is 1 "threads must be a whole number" "a fractional thread count"
# ':' inside filter_params is escaped twice (filtergraph, then option list)
bsqf "frei0r=filter_name=bsq:filter_params=$vid|||cuda\\\\:x" "$tmp/x.rgb"; status=$?
err_is 1 'bad device "cuda:x"' "an escaped device name arrives whole"
# no model: the default video model when libbsq embeds one, else a message
bsqf "frei0r=filter_name=bsq" "$tmp/x.rgb"; status=$?
if [ "$status" = 0 ]; then
    ok "no model: the default model" $((W * H * 3 * N)) "$(wc -c < "$tmp/x.rgb" | tr -d ' ')"
else
    err_is 1 "no model given and no default model" "no model and no default model"
fi

echo "$pass passed, $fails failed"
[ "$fails" = 0 ]
