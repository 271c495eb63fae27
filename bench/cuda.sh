#!/bin/sh
# bench/cuda.sh: everything the CUDA backend needs checked on a GPU, in one
# run (a lent GPU comes with minutes, not hours):
#   1. configure and build with the CUDA backend for this GPU's architecture
#      only (CUDA_ARCH=90 etc. to choose; default from nvidia-smi, else 90);
#   2. tests/check_cuda: every op against the CPU engine and the parity
#      fixtures, fp32 and bf16 (prints the errors and any bit flips);
#   3. tests/check_parity and tests/check_stream on the CPU, for reference;
#   4. bench/bench_cuda: the official architecture's speed table.
# Arguments go to bench_cuda (e.g. --quick). BUILD=dir picks the build dir.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$src/build-cuda-bench}
jobs=$(nproc 2>/dev/null || echo 4)
arch=${CUDA_ARCH:-}
if [ -z "$arch" ] && command -v nvidia-smi >/dev/null 2>&1; then
    arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
fi
arch=${arch:-90}
step() { printf '\n==== [%ss] %s\n' "$(($(date +%s) - t0))" "$*"; }
t0=$(date +%s)

step "build (sm_$arch) in $build"
[ -x "$src/configure" ] || (cd "$src" && autoreconf -fi >/dev/null)
mkdir -p "$build"
cd "$build"
[ -f Makefile ] || "$src/configure" -q --with-cuda --with-cuda-arch="$arch" --disable-frei0r
make -j"$jobs" >/dev/null
make -j"$jobs" tests/check_cuda tests/check_parity tests/check_stream bench/bench_cuda >/dev/null

step "GPU tests (tests/check_cuda)"
status=0
./tests/check_cuda || status=$?
[ $status -eq 0 ] || echo "tests/check_cuda exited with $status"

step "CPU reference tests"
./tests/check_parity | tail -n 2 || true
./tests/check_stream | tail -n 1 || true

step "speed (bench/bench_cuda $*)"
./bench/bench_cuda "$@"
step "done"
exit $status
