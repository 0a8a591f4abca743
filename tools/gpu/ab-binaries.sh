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
run_side() {  # folder, cache, extra arguments (one string, split on spaces)
  local dir=$1 cache=$2 extra=$3
  shift 3
  # shellcheck disable=SC2086
  LD_LIBRARY_PATH="$dir/lib:${LD_LIBRARY_PATH:-}" ATTNJIT_CACHE_DIR=$cache "$dir/attnjit" bench --csv "$@" $extra
}
for ((i = 1; i <= rounds; ++i)); do
  for side in A B; do
    if [ "$side" = A ]; then
      out=$(run_side "$a" /tmp/attnjit-abb-a "${A_ARGS:-}" "$@")
    else
      out=$(run_side "$b" /tmp/attnjit-abb-b "${B_ARGS:-}" "$@")
    fi
    echo "$out" | awk -F, -v side="$side" -v round="$i" '
      NR == 1 { for (c = 1; c <= NF; ++c) if (tolower($c) == "tflops") col = c; next }
      { printf "%s round %d shape %d: %s TFLOP/s\n", side, round, NR - 1, $col }'
  done
done | tee /dev/stderr | awk '{ key = $1 " shape " $5; v = $6 + 0; if (!(key in best) || v > best[key]) best[key] = v }
  END { for (k in best) printf "best %s %.1f\n", k, best[k] }' | sort
