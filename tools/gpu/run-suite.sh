#!/usr/bin/env bash
# The GPU suite in one call (run on the device machine from the repo root, with the build
# folder built on the development machine carried along as build-gpu/):
#   1. the GPU tests (ctest label gpu: every preset x dtype x head dim x MHA/GQA, edge cases);
#   2. cold-compile and cache-hit timings of `attnjit compile`;
#   3. the peer comparison (attnjit vs SDPA flash / cuDNN vs FlexAttention), same run, with
#      a PNG chart ($OUT/peers.png).
# Logs go to $OUT (or /tmp/attnjit-suite); the short tables come last.
set -uo pipefail
out=${OUT:-/tmp/attnjit-suite}
mkdir -p "$out"
build=${ATTNJIT_BUILD_DIR:-build-gpu}
export ATTNJIT_CACHE_DIR=${ATTNJIT_CACHE_DIR:-/tmp/attnjit-cache}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$out/device.txt"

echo "== GPU tests"
"$build/tests/attnjit_gpu_tests" ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} >"$out/gpu_tests.log" 2>&1
tests_rc=$?
grep -E '^\[ result|FAILED|PASSED|SKIPPED|tests ran' "$out/gpu_tests.log" | tail -n 200 >"$out/gpu_results.txt"

echo "== compile timings"
"$build/attnjit" compile --preset alibi_causal --arch sm_90a --head-dim 128 --measure 5 2>/dev/null | tee "$out/compile.txt"

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  echo "== peers"
  python3 tools/bench/peers.py --attnjit "$build/attnjit" --out "$out/peers.json" --chart peers.png \
    ${BENCH_QUICK:+--quick} \
    >"$out/peers.log" 2>&1
fi

echo
echo "==== summary"
grep -cE '^\[ result' "$out/gpu_results.txt" | xargs echo "preset checks printed:"
grep -E 'PASSED|FAILED' "$out/gpu_results.txt" | tail -n 20
tail -n 2 "$out/compile.txt"
[ -f "$out/peers.log" ] && sed -n '/^## Forward/,$p' "$out/peers.log"
exit $tests_rc
