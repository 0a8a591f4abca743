#!/usr/bin/env bash
# Alternating A/B of two attnjit builds (run on the device machine): each folder holds an
# `attnjit` binary and its `lib/` (libattnjit.so.0), as carried in a git-ignored build folder.
# Each round times both with `attnjit bench --csv` (the arguments after --, plus A_ARGS or
# B_ARGS for one side, e.g. B_ARGS="--persistent 1"), separate kernel caches; prints every
# round's TFLOP/s per shape and the best of each.
#   tools/gpu/ab-binaries.sh build-carry/n build-carry/d 3 -- --preset causal --head-dim 128 \
#       --shape 4,16,16,4096,4096,128
set -euo pipefail
if [ $# -lt 4 ] || [ "$4" != "--" ]; then
  sed -n '2,8p' "$0"
  exit 2
fi
a=$1 b=$2 rounds=$3
shift 4
for side in "$a" "$b"; do
  [ -x "$side/attnjit" ] || { echo "no attnjit binary in '$side'" >&2; exit 2; }
done
bench_side() {  # A: the first folder's build (plus A_ARGS), B: the second's (plus B_ARGS)
  local dir cache extra
  if [ "$1" = A ]; then
    dir=$a cache=/tmp/attnjit-abb-a extra=${A_ARGS:-}
  else
    dir=$b cache=/tmp/attnjit-abb-b extra=${B_ARGS:-}
  fi
  shift
  # shellcheck disable=SC2086
  LD_LIBRARY_PATH="$dir/lib:${LD_LIBRARY_PATH:-}" ATTNJIT_CACHE_DIR=$cache "$dir/attnjit" bench --csv "$@" $extra
}
# shellcheck source=tools/gpu/ab-rounds.sh
source "$(dirname "$0")/ab-rounds.sh"
ab_rounds "$rounds" "$@"
