#!/bin/sh
# bench/cuda.sh: everything the CUDA backend needs checked on a GPU, in one
# run (a lent GPU comes with minutes, not hours):
#   1. configure and build with the CUDA backend for this GPU's architecture
#      only (CUDA_ARCH=90 etc. to choose; default from nvidia-smi, else 90);
#   2. tests/check_cuda: every op against the CPU engine and the parity
#      fixtures, fp32 and bf16 (prints the errors and any bit flips);
#   3. tests/check_parity and tests/check_stream on the CPU, for reference;
#   4. bench/bench_cuda: the official architecture's speed table.
# Arguments go to bench_cuda (e.g. --quick). BUILD=dir picks the build dir;
# NOBUILD=1 uses it as it is (built elsewhere with --with-cuda-arch for this
# GPU and carried over, for a machine without the build tools). Each step
# has a time limit (LIMIT seconds, default 300), so a hang cannot eat a
# lent GPU's minutes.
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
limit=${LIMIT:-300}
# the fixtures of this tree, wherever the build was configured
BSQ_TEST_DATA=$src/tests/data
export BSQ_TEST_DATA

if [ "${NOBUILD:-0}" = 1 ]; then
    cd "$build"
else
    step "build (sm_$arch) in $build"
    [ -x "$src/configure" ] || (cd "$src" && autoreconf -fi >/dev/null)
    mkdir -p "$build"
    cd "$build"
    [ -f Makefile ] || "$src/configure" -q --with-cuda --with-cuda-arch="$arch" --disable-frei0r
    make -j"$jobs" >/dev/null
    make -j"$jobs" tests/check_cuda tests/check_parity tests/check_stream bench/bench_cuda >/dev/null
fi
nvidia-smi --query-gpu=name,compute_cap,memory.total,clocks.max.sm --format=csv 2>/dev/null || true

step "GPU tests (tests/check_cuda)"
status=0
timeout "$limit" ./tests/check_cuda || status=$?
[ $status -eq 0 ] || echo "tests/check_cuda exited with $status"

step "CPU reference tests"
timeout "$limit" ./tests/check_parity | tail -n 2 || true
timeout "$limit" ./tests/check_stream | tail -n 1 || true

step "speed (bench/bench_cuda $*)"
timeout "$limit" ./bench/bench_cuda "$@" || status=$?
step "done"
exit $status
