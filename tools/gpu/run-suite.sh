#!/usr/bin/env bash
# The GPU suite in one call (run on the device machine from the repo root, with the build
# folder built on the development machine carried along as build-gpu/):
#   1. the GPU tests (every preset x dtype x head dim x MHA/GQA, edge cases);
#   2. cold-compile and cache-hit timings of `attnjit compile`;
#   3. the peer comparison (attnjit vs SDPA flash / cuDNN vs FlexAttention), same run, with
#      a PNG chart ($OUT/peers.png);
#   4. with --sanitize (or SANITIZE=1): compute-sanitizer --tool memcheck and --tool racecheck
#      over the reduced GPU suite (ATTNJIT_GPU_REDUCED=1: one small case per preset, which
#      runs the forward kernel and, for masks that read a tensor, the block-mask kernel), then
#      tools/gpu/sanitize-checks.sh (the decode unit, fwd_sm90's persistent schedule).
# Environment: GTEST_FILTER (GPU tests), TESTS_TIMEOUT (seconds, default 3000), SKIP_BENCH=1,
# BENCH_QUICK=1, PEERS_ONLY=forward,dense,flex,rope,backward,decode,ragged (comma list: one
# pass's peer tables), PEERS_SEQS=16384 (dense grid lengths), GTEST_TOTAL_SHARDS=2 with
# GTEST_SHARD_INDEX=0 or 1 (GoogleTest's own sharding: the whole GPU suite takes about 480 s of
# tests on an H200, so two calls of under 600 s run it all), ATTNJIT_BUILD_DIR,
# ATTNJIT_CACHE_DIR, OUT. Logs go to $OUT (or /tmp/attnjit-suite); each part prints its wall
# time, and a short table (part, seconds, result) comes last. Exit status: the GPU tests'
# (or the sanitizer runs', when they fail).
set -uo pipefail
sanitize=${SANITIZE:-0}
for arg in "$@"; do
  case "$arg" in
    --sanitize) sanitize=1 ;;
    -h | --help)
      sed -n '2,19p' "$0"
      exit 0
      ;;
    *)
      echo "unknown argument '$arg'; allowed: --sanitize, --help" >&2
      exit 2
      ;;
  esac
done
out=${OUT:-/tmp/attnjit-suite}
mkdir -p "$out"
build=${ATTNJIT_BUILD_DIR:-build-gpu}
export ATTNJIT_CACHE_DIR=${ATTNJIT_CACHE_DIR:-/tmp/attnjit-cache}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$out/device.txt"

table=()  # "part|seconds|result" rows of the final table
started=0
start_part() {
  echo "== $1"
  started=$(date +%s.%N)
}
end_part() {  # part name, result
  local seconds
  seconds=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  echo "   ($1: ${seconds} s)"
  table+=("$1|$seconds|$2")
}
# "N passed, N failed, N skipped" from a gtest log.
gtest_counts() {
  local passed failed skipped
  passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) tests\{0,1\}\..*/\1/p' "$1" | tail -n 1)
  failed=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) tests\{0,1\}, listed below.*/\1/p' "$1" | tail -n 1)
  skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) tests\{0,1\}, listed below.*/\1/p' "$1" | tail -n 1)
  echo "${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped"
}

start_part "GPU tests"
timeout "${TESTS_TIMEOUT:-3000}" "$build/tests/attnjit_gpu_tests" ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} \
  >"$out/gpu_tests.log" 2>&1
tests_rc=$?
grep -E '^\[ result|FAILED|PASSED|SKIPPED|tests ran' "$out/gpu_tests.log" | tail -n 300 >"$out/gpu_results.txt"
end_part "GPU tests" "$(gtest_counts "$out/gpu_tests.log") (rc $tests_rc)"

start_part "compile timings"
"$build/attnjit" compile --preset alibi_causal --arch sm_90a --head-dim 128 --measure 5 2>/dev/null | tee "$out/compile.txt"
end_part "compile timings" "rc ${PIPESTATUS[0]}"

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  start_part "peers"
  python3 tools/bench/peers.py --attnjit "$build/attnjit" --out "$out/peers.json" --chart peers.png \
    ${BENCH_QUICK:+--quick} ${PEERS_ONLY:+--only "$PEERS_ONLY"} ${PEERS_SEQS:+--seqs "$PEERS_SEQS"} \
    >"$out/peers.log" 2>&1
  end_part "peers" "rc $? (peers.log)"
fi

sanitize_rc=0
if [ "$sanitize" = 1 ]; then
  sanitizer=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
  for tool in memcheck racecheck; do
    start_part "$tool (reduced suite)"
    log="$out/sanitize_$tool.log"
    ATTNJIT_GPU_REDUCED=1 "$sanitizer" --tool "$tool" --print-limit 50 \
      "$build/tests/attnjit_gpu_tests" ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} >"$log" 2>&1
    rc=$?
    # memcheck: "ERROR SUMMARY: N errors"; racecheck: "RACECHECK SUMMARY: .. (N errors, M warnings)".
    errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) error.*/\1/p; s/.*RACECHECK SUMMARY: .*(\([0-9]*\) error.*/\1/p' "$log" |
      awk '{ n += $1; seen = 1 } END { if (seen) print n; else print "?" }')
    verdict="$errors errors"
    [ "$errors" = 0 ] || verdict="$errors errors, NOT CLEAN ($log)"
    [ "$errors" = "?" ] && verdict="no sanitizer summary ($log)"
    end_part "$tool (reduced suite)" "$verdict; tests $(gtest_counts "$log") (rc $rc)"
    if [ "$errors" != 0 ] || [ "$rc" != 0 ]; then sanitize_rc=1; fi
  done
  # Then single `attnjit check` calls of the decode unit (split-K, stream-K, KV caches) and of
  # fwd_sm90's persistent schedule, which the reduced suite does not reach.
  start_part "sanitize-checks.sh"
  ATTNJIT="$build/attnjit" OUT="$out" "$(dirname "$0")/sanitize-checks.sh" >"$out/sanitize_checks.log" 2>&1
  rc=$?
  # Not part of the exit status: racecheck reports fwd_sm90's tile-word WAR there (two reports
  # per fwd_sm90 check, docs/kernels.md); the row says how many runs were clean.
  end_part "sanitize-checks.sh" "rc $rc, $(grep -c 'errors 0 ' "$out/sanitize_checks.log") of \
$(grep -cE '^(memcheck|racecheck) ' "$out/sanitize_checks.log") runs clean (sanitize_checks.log)"
fi

echo
echo "==== details"
grep -cE '^\[ result' "$out/gpu_results.txt" | xargs echo "checks printed:"
grep -E '^\[  FAILED  \] [A-Za-z]' "$out/gpu_results.txt" | sort -u | head -n 20
tail -n 2 "$out/compile.txt"
[ -f "$out/peers.log" ] && sed -n '/^## /,$p' "$out/peers.log"

echo
echo "==== summary"
printf '%-28s %9s  %s\n' "part" "seconds" "result"
for row in "${table[@]}"; do
  IFS='|' read -r part seconds result <<<"$row"
  printf '%-28s %9s  %s\n' "$part" "$seconds" "$result"
done
[ "$tests_rc" != 0 ] && exit "$tests_rc"
exit "$sanitize_rc"
