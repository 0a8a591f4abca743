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
# On a machine of two or more GPUs the tests run one shard per GPU side by side (about half
# the time: the suite fits one call there), and memcheck and racecheck one GPU each.
# Environment: GTEST_FILTER (GPU tests), TESTS_TIMEOUT (seconds, default 3000), SKIP_BENCH=1,
# BENCH_QUICK=1, PEERS_ONLY=forward,dense,flex,rope,backward,decode,ragged (comma list: one
# pass's peer tables), PEERS_SEQS=16384 (dense grid lengths), GTEST_TOTAL_SHARDS=2 with
# GTEST_SHARD_INDEX=0 or 1 (GoogleTest's own sharding: the whole GPU suite takes about 480 s of
# tests on an H200, so two calls of under 600 s run it all), ATTNJIT_BUILD_DIR,
# ATTNJIT_CACHE_DIR, OUT, SHARDS_PER_GPU=N (N shards side by side on each GPU: the suite's
# time is mostly NVRTC and the CPU reference, which the device machine's cores run in
# parallel), SHARD_CALLS=C with SHARD_CALL=i (the suite cut into C x the shards of one call,
# this call running the i-th group of them: C calls of under 600 s run it all). Logs go to $OUT (or /tmp/attnjit-suite); each part prints its wall time, and a
# short table (part, seconds, result) comes last. Exit status: the GPU tests' (or the
# sanitizer runs', when they fail).
set -uo pipefail
sanitize=${SANITIZE:-0}
for arg in "$@"; do
  case "$arg" in
    --sanitize) sanitize=1 ;;
    -h | --help)
      sed -n "2,24p" "$0"
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
# "N passed, N failed, N skipped" from gtest logs (summed over the logs given: one per shard).
gtest_counts() {
  local passed=0 failed=0 skipped=0 log n
  for log in "$@"; do
    n=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) tests\{0,1\}\..*/\1/p' "$log" | tail -n 1)
    passed=$((passed + ${n:-0}))
    n=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) tests\{0,1\}, listed below.*/\1/p' "$log" | tail -n 1)
    failed=$((failed + ${n:-0}))
    n=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) tests\{0,1\}, listed below.*/\1/p' "$log" | tail -n 1)
    skipped=$((skipped + ${n:-0}))
  done
  echo "$passed passed, $failed failed, $skipped skipped"
}
# GPUs on this machine: with two or more (and no shard asked for), the GPU tests run one
# GoogleTest shard per GPU side by side, and the two sanitizer tools one GPU each.
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
[ "${gpus:-0}" -ge 1 ] || gpus=1
shards=$((gpus * ${SHARDS_PER_GPU:-1}))
calls=${SHARD_CALLS:-1} call=${SHARD_CALL:-0}

start_part "GPU tests"
if [ -z "${GTEST_TOTAL_SHARDS:-}" ] && [ $((shards * calls)) -gt 1 ]; then
  pids=()
  for ((i = 0; i < shards; ++i)); do
    CUDA_VISIBLE_DEVICES=$((i % gpus)) GTEST_TOTAL_SHARDS=$((shards * calls)) GTEST_SHARD_INDEX=$((call * shards + i)) \
      timeout "${TESTS_TIMEOUT:-3000}" \
      "$build/tests/attnjit_gpu_tests" ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} >"$out/gpu_tests.$i.log" 2>&1 &
    pids+=($!)
  done
  tests_rc=0
  for pid in "${pids[@]}"; do wait "$pid" || tests_rc=$?; done
  shard_logs=("$out"/gpu_tests.[0-9]*.log)
  cat "${shard_logs[@]}" >"$out/gpu_tests.log"
else
  timeout "${TESTS_TIMEOUT:-3000}" "$build/tests/attnjit_gpu_tests" ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} \
    >"$out/gpu_tests.log" 2>&1
  tests_rc=$?
  shard_logs=("$out/gpu_tests.log")
fi
grep -E '^\[ result|FAILED|PASSED|SKIPPED|tests ran' "$out/gpu_tests.log" | tail -n 300 >"$out/gpu_results.txt"
end_part "GPU tests" "$(gtest_counts "${shard_logs[@]}") (rc $tests_rc, $gpus GPU(s), ${#shard_logs[@]} shard(s))"

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
  # With two GPUs, racecheck runs on the second while memcheck runs on the first.
  if [ "$gpus" -gt 1 ]; then
    ATTNJIT_GPU_REDUCED=1 CUDA_VISIBLE_DEVICES=1 "$sanitizer" --tool racecheck --print-limit 50 \
      "$build/tests/attnjit_gpu_tests" ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} >"$out/sanitize_racecheck.log" 2>&1 &
    racecheck_pid=$!
  fi
  for tool in memcheck racecheck; do
    start_part "$tool (reduced suite)"
    log="$out/sanitize_$tool.log"
    if [ "$tool" = racecheck ] && [ "$gpus" -gt 1 ]; then
      wait "$racecheck_pid"
    else
      ATTNJIT_GPU_REDUCED=1 CUDA_VISIBLE_DEVICES=0 "$sanitizer" --tool "$tool" --print-limit 50 \
        "$build/tests/attnjit_gpu_tests" ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} >"$log" 2>&1
    fi
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
