#!/bin/sh
# bsqcodec import from the command line: exit codes, output, no partial files.
set -u
bin=${BSQCODEC:-./bsqcodec/bsqcodec}
data=${TEST_DATA_DIR:-$(dirname "$0")/data}
ckpt=$data/official-checkpoint/official_layout_tiny.pt
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bsqcli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fails=0
check() { # check DESCRIPTION EXPECTED-RC ACTUAL-RC
    if [ "$2" = "$3" ]; then echo "ok: $1"; else echo "FAIL: $1 (exit $3, expected $2)"; fails=$((fails + 1)); fi
}

"$bin" import "$ckpt" -o "$tmp/a.safetensors" -q; check "import the official-layout fixture" 0 $?
[ -s "$tmp/a.safetensors" ]; check "model written" 0 $?
"$bin" import "$ckpt" -o "$tmp/b.safetensors" -q; check "import again" 0 $?
cmp -s "$tmp/a.safetensors" "$tmp/b.safetensors"; check "same bytes every time" 0 $?
"$bin" import "$tmp/a.safetensors" -o "$tmp/c.safetensors" --dtype bf16 -q; check "re-save a safetensors model as bf16" 0 $?
"$bin" import "$ckpt" -o "$tmp/d.safetensors" --dtype f8 2>/dev/null; check "bad --dtype is a usage error" 2 $?
"$bin" import "$ckpt" 2>/dev/null; check "missing -o is a usage error" 2 $?
"$bin" frobnicate 2>/dev/null; check "unknown command is a usage error" 2 $?
head -c 5000 "$ckpt" > "$tmp/trunc.pt"
"$bin" import "$tmp/trunc.pt" -o "$tmp/e.safetensors" 2>"$tmp/err"; check "truncated checkpoint fails" 1 $?
grep -q "trunc.pt" "$tmp/err"; check "the message names the file" 0 $?
[ ! -e "$tmp/e.safetensors" ]; check "no output left behind" 0 $?
"$bin" import /nonexistent.pt -o "$tmp/f.safetensors" 2>/dev/null; check "missing input fails" 1 $?
"$bin" import "$ckpt" -o /nonexistent-dir/x.safetensors 2>/dev/null; check "unwritable output fails" 1 $?
ls "$tmp" | grep -q tmp; check "no temporary files left" 1 $?
"$bin" --help >/dev/null; check "--help" 0 $?
"$bin" import --help | grep -q "dtype"; check "import --help" 0 $?

echo "$((16 - fails)) passed, $fails failed"
[ "$fails" = 0 ]
