#!/bin/sh
# bsqcodec compare against FFmpeg's own psnr and ssim filters on the same
# pairs, known answers (identical inputs, a constant offset), videos, and
# bad input.
#
# PSNR must match FFmpeg's psnr filter run in gbrp (per plane and its
# "average", which is the PSNR of the MSE over the three planes) to 0.01 dB.
# SSIM cannot match exactly: FFmpeg's ssim filter uses 8x8 unweighted
# windows on a 4-pixel grid, ours the 11x11 Gaussian of Wang et al. 2004.
# Measured on luma (R=G=B pictures, so both see the same plane), |ours -
# FFmpeg| was 0.006-0.043 on three photos (skimage's astronaut, chelsea,
# coffee; JPEG at -q:v 25, Gaussian blur sigma 1.5, noise 25) and
# 0.001-0.025 on the lavfi sources used here; the test allows 0.05.
set -u
bin=${BSQCODEC:-./bsqcodec/bsqcodec}
ffmpeg=${FFMPEG:-ffmpeg}
if ! command -v "$ffmpeg" >/dev/null 2>&1; then
    echo "SKIP: no ffmpeg binary to make test pictures and run its psnr/ssim filters"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bsqcompare.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fails=0
ok() { if [ "$2" = "$3" ]; then pass=$((pass + 1)); echo "ok: $1"; else fails=$((fails + 1)); echo "FAIL: $1 (got $3, expected $2)"; fi; }
# near NAME A B TOL: |A - B| <= TOL
near() {
    if awk -v a="$2" -v b="$3" -v t="$4" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a ~ /^-?[0-9.]+$/ && b ~ /^-?[0-9.]+$/ && d <= t) }'; then
        pass=$((pass + 1)); echo "ok: $1 ($2 vs $3)"
    else
        fails=$((fails + 1)); echo "FAIL: $1 ($2 vs $3, tolerance $4)"
    fi
}
# key FILE NAME: a number (or null) from our one-line JSON
key() { sed -n "s/.*\"$2\": \([^,}]*\).*/\1/p" "$1"; }
ff() { "$ffmpeg" -nostdin -loglevel error -y "$@"; }
# ffpsnr REF DIST: FFmpeg's summary line of psnr in gbrp
ffpsnr() {
    "$ffmpeg" -nostdin -hide_banner -i "$1" -i "$2" \
        -lavfi "[0]format=gbrp[a];[1]format=gbrp[b];[a][b]psnr" -f null - 2>&1 | grep 'PSNR r:'
}
# field LINE NAME: the value after NAME: in an FFmpeg summary
field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2:\([^ ]*\).*/\1/p"; }
ffssim() {
    "$ffmpeg" -nostdin -hide_banner -i "$1" -i "$2" \
        -lavfi "[0]format=gbrp[a];[1]format=gbrp[b];[a][b]ssim" -f null - 2>&1 |
        grep 'SSIM R:' | sed 's/.*All:\([0-9.]*\).*/\1/'
}
gray="colorchannelmixer=.299:.587:.114:0:.299:.587:.114:0:.299:.587:.114:0,format=rgb24"

# ---------------------------------------------------------------- known answers
ff -f lavfi -i testsrc2=size=160x120 -frames:v 1 -vf format=rgb24 "$tmp/a.png"
"$bin" compare --json "$tmp/a.png" "$tmp/a.png" > "$tmp/same.json"; ok "identical inputs" 0 $?
ok "identical: PSNR null in JSON" null "$(key "$tmp/same.json" psnr_rgb)"
ok "identical: flagged" true "$(key "$tmp/same.json" identical)"
ok "identical: SSIM 1" 1.00000000 "$(key "$tmp/same.json" ssim_y)"
ok "identical: MS-SSIM 1" 1.00000000 "$(key "$tmp/same.json" msssim_y)"
"$bin" compare "$tmp/a.png" "$tmp/a.png" | grep -q 'PSNR-RGB   inf dB'; ok "identical: inf in text" 0 $?

# every sample in 20..230, then +10: MSE 100 everywhere, PSNR 20 log10(25.5)
ff -i "$tmp/a.png" -vf "lutrgb=r='clip(val,20,230)':g='clip(val,20,230)':b='clip(val,20,230)',format=rgb24" "$tmp/c.png"
ff -i "$tmp/c.png" -vf "lutrgb=r=val+10:g=val+10:b=val+10,format=rgb24" "$tmp/c10.png"
"$bin" compare --json "$tmp/c.png" "$tmp/c10.png" > "$tmp/off.json"; ok "offset" 0 $?
ok "offset: MSE 100" 100 "$(key "$tmp/off.json" mse_rgb)"
near "offset: PSNR-RGB = 28.1308" "$(key "$tmp/off.json" psnr_rgb)" 28.130804 0.000001
near "offset: PSNR-R" "$(key "$tmp/off.json" psnr_r)" 28.130804 0.000001
near "offset: PSNR-Y" "$(key "$tmp/off.json" psnr_y)" 28.130804 0.000001
ok "identical flag off" false "$(key "$tmp/off.json" identical)"

# ---------------------------------------------------------------- against FFmpeg
for src in testsrc2 mandelbrot; do
    ff -f lavfi -i "$src=size=320x240" -frames:v 1 -vf format=rgb24 "$tmp/$src.png"
    ff -i "$tmp/$src.png" -vf "$gray" "$tmp/g_$src.png"
    for d in jpeg blur noise; do
        for kind in "" g_; do
            r=$tmp/$kind$src.png o=$tmp/$kind${src}_$d.png
            case $d in
            jpeg) ff -i "$r" -q:v 25 -pix_fmt yuvj420p "$tmp/t.jpg" && ff -i "$tmp/t.jpg" -vf format=rgb24 "$o" ;;
            blur) ff -i "$r" -vf gblur=sigma=1.5,format=rgb24 "$o" ;;
            noise) ff -i "$r" -vf noise=alls=25:allf=t,format=rgb24 "$o" ;;
            esac
            if [ -n "$kind" ]; then # keep the distorted picture grey too
                ff -i "$o" -vf "$gray" "$tmp/t.png" && mv "$tmp/t.png" "$o"
            fi
        done
        "$bin" compare --json "$tmp/$src.png" "$tmp/${src}_$d.png" > "$tmp/o.json"
        ok "$src $d: compare" 0 $?
        line=$(ffpsnr "$tmp/$src.png" "$tmp/${src}_$d.png")
        near "$src $d: PSNR-RGB = ffmpeg psnr average" "$(key "$tmp/o.json" psnr_rgb)" "$(field "$line" average)" 0.01
        near "$src $d: PSNR-R = ffmpeg r" "$(key "$tmp/o.json" psnr_r)" "$(field "$line" r)" 0.01
        near "$src $d: PSNR-G = ffmpeg g" "$(key "$tmp/o.json" psnr_g)" "$(field "$line" g)" 0.01
        near "$src $d: PSNR-B = ffmpeg b" "$(key "$tmp/o.json" psnr_b)" "$(field "$line" b)" 0.01
        # grey pictures: Y is the plane FFmpeg sees
        "$bin" compare --json "$tmp/g_$src.png" "$tmp/g_${src}_$d.png" > "$tmp/g.json"
        line=$(ffpsnr "$tmp/g_$src.png" "$tmp/g_${src}_$d.png")
        near "$src $d grey: PSNR-Y = ffmpeg psnr" "$(key "$tmp/g.json" psnr_y)" "$(field "$line" average)" 0.01
        near "$src $d grey: SSIM-Y ~ ffmpeg ssim" "$(key "$tmp/g.json" ssim_y)" "$(ffssim "$tmp/g_$src.png" "$tmp/g_${src}_$d.png")" 0.05
    done
done
# more distortion, lower numbers
"$bin" compare --json "$tmp/testsrc2.png" "$tmp/testsrc2_noise.png" > "$tmp/n.json"
awk -v a="$(key "$tmp/n.json" msssim_y)" -v b="$(key "$tmp/n.json" ssim_y)" 'BEGIN { exit !(a > 0 && a < 1 && b > 0 && b < 1) }'
ok "noise: SSIM and MS-SSIM in (0, 1)" 0 $?
db=$(key "$tmp/n.json" msssim_y_db) ms=$(key "$tmp/n.json" msssim_y)
near "MS-SSIM dB = -10 log10(1 - MS-SSIM)" "$db" "$(awk -v m="$ms" 'BEGIN { printf "%.6f", -10 * log(1 - m) / log(10) }')" 0.001

# ---------------------------------------------------------------- videos
ff -f lavfi -i testsrc2=size=96x64:rate=25 -frames:v 6 -c:v ffv1 "$tmp/v.mkv"
ff -i "$tmp/v.mkv" -c:v libx264 -crf 35 -pix_fmt yuv420p "$tmp/v264.mkv" 2>/dev/null ||
    ff -i "$tmp/v.mkv" -c:v mpeg4 -q:v 12 "$tmp/v264.mkv"
"$bin" compare --json "$tmp/v.mkv" "$tmp/v264.mkv" > "$tmp/v.json"; ok "video" 0 $?
ok "video: 6 frames" 6 "$(key "$tmp/v.json" frames)"
line=$(ffpsnr "$tmp/v.mkv" "$tmp/v264.mkv")
near "video: PSNR-RGB = ffmpeg psnr over the clip" "$(key "$tmp/v.json" psnr_rgb)" "$(field "$line" average)" 0.01
near "video: PSNR-G = ffmpeg g" "$(key "$tmp/v.json" psnr_g)" "$(field "$line" g)" 0.01
ff -i "$tmp/v.mkv" -frames:v 4 -c:v ffv1 "$tmp/v4.mkv"
"$bin" compare "$tmp/v.mkv" "$tmp/v4.mkv" > /dev/null 2> "$tmp/err"; ok "different frame counts fail" 1 $?
grep -q "has 4" "$tmp/err" && grep -q "has 6" "$tmp/err"; ok "the message gives both counts" 0 $?
"$bin" compare --frames 4 --json "$tmp/v.mkv" "$tmp/v4.mkv" > "$tmp/f.json"; ok "--frames 4" 0 $?
ok "--frames 4 compares 4" 4 "$(key "$tmp/f.json" frames)"
ok "the same frames are identical" true "$(key "$tmp/f.json" identical)"
"$bin" compare --frames 5 "$tmp/v.mkv" "$tmp/v4.mkv" > /dev/null 2>&1; ok "--frames past the shorter fails" 1 $?
"$ffmpeg" -nostdin -loglevel error -i "$tmp/v.mkv" -f yuv4mpegpipe - |
    "$bin" compare --json - "$tmp/v.mkv" > "$tmp/p.json"; ok "y4m from stdin" 0 $?
ok "stdin: 6 frames" 6 "$(key "$tmp/p.json" frames)"

# ---------------------------------------------------------------- small and bad inputs
ff -f lavfi -i testsrc2=size=5x3 -frames:v 1 -vf format=rgb24 "$tmp/tiny.png"
ff -i "$tmp/tiny.png" -vf noise=alls=30:allf=t,format=rgb24 "$tmp/tiny_n.png"
"$bin" compare --json "$tmp/tiny.png" "$tmp/tiny_n.png" > "$tmp/tiny.json"; ok "a 5x3 picture" 0 $?
ok "5x3: one MS-SSIM scale" 1 "$(key "$tmp/tiny.json" msssim_scales)"
"$bin" compare "$tmp/a.png" "$tmp/testsrc2.png" > /dev/null 2> "$tmp/err"; ok "different sizes fail" 1 $?
grep -q "sizes differ.*160x120.*320x240" "$tmp/err"; ok "the message gives both sizes" 0 $?
"$bin" compare "$tmp/a.png" "$tmp/nothing.png" > /dev/null 2>&1; ok "a missing input fails" 1 $?
printf 'not a picture' > "$tmp/junk.png"
"$bin" compare "$tmp/junk.png" "$tmp/a.png" > /dev/null 2>&1; ok "an unreadable input fails" 1 $?
"$bin" compare "$tmp/a.png" > /dev/null 2>&1; ok "one input is a usage error" 2 $?
"$bin" compare --frames 0 "$tmp/a.png" "$tmp/a.png" > /dev/null 2>&1; ok "--frames 0 is a usage error" 2 $?
"$bin" compare - - < /dev/null > /dev/null 2>&1; ok "stdin twice is a usage error" 2 $?
"$bin" compare --help | grep -q -- --frames; ok "compare --help" 0 $?

echo "$pass passed, $fails failed"
[ "$fails" = 0 ]
