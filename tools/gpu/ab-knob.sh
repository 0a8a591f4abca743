#!/usr/bin/env bash
# Alternating A/B of two knob settings with one attnjit binary (run on the device machine):
# A = the arguments before the second --, B = those after it, each added to the shared bench
# arguments; prints every round's TFLOP/s per shape and the best of each (ab-rounds.sh).
#   tools/gpu/ab-knob.sh 3 --persistent 0 -- --persistent 1 -- --preset causal --shape 4,16,16,4096,4096,128
# Environment: ATTNJIT (the binary; default build-gpu/attnjit).
set -euo pipefail
rounds=$1
shift
a=() b=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do a+=("$1"); shift; done
[ $# -gt 0 ] && shift
while [ $# -gt 0 ] && [ "$1" != "--" ]; do b+=("$1"); shift; done
[ $# -gt 0 ] || { sed -n '2,6p' "$0"; exit 2; }
shift
bin=${ATTNJIT:-build-gpu/attnjit}
bench_side() {
  local side=$1
  shift
  if [ "$side" = A ]; then "$bin" bench --csv "${a[@]}" "$@"; else "$bin" bench --csv "${b[@]}" "$@"; fi
}
# shellcheck source=tools/gpu/ab-rounds.sh
source "$(dirname "$0")/ab-rounds.sh"
ab_rounds "$rounds" "$@"
