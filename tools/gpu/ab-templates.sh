#!/usr/bin/env bash
# Alternating A/B of two versions of the kernel templates with one attnjit binary (run on the
# device machine): A = the templates under $1 (ATTNJIT_TEMPLATE_DIR; e.g. main's, from
# `git archive main templates`), B = the templates built into the binary. Each round times
# both with `attnjit bench` (the arguments after --), separate kernel caches; prints every
# round's TFLOP/s per shape and the best of each.
#   tools/gpu/ab-templates.sh /path/to/main/templates 3 -- --preset causal --head-dim 128 \
#       --shape 4,16,16,4096,4096,128
# Environment: ATTNJIT (the binary; default build-gpu/attnjit).
set -euo pipefail
if [ $# -lt 3 ] || [ "$3" != "--" ]; then
  sed -n '2,9p' "$0"
  exit 2
fi
dir=$1 rounds=$2
shift 3
bin=${ATTNJIT:-build-gpu/attnjit}
[ -d "$dir" ] || { echo "no template folder '$dir'" >&2; exit 2; }
for ((i = 1; i <= rounds; ++i)); do
  for side in A B; do
    if [ "$side" = A ]; then
      out=$(ATTNJIT_TEMPLATE_DIR=$dir ATTNJIT_CACHE_DIR=/tmp/attnjit-ab-a "$bin" bench --csv "$@")
    else
      out=$(ATTNJIT_CACHE_DIR=/tmp/attnjit-ab-b "$bin" bench --csv "$@")
    fi
    # CSV: a header, then a line per shape; the TFLOP/s column by name.
    echo "$out" | awk -F, -v side="$side" -v round="$i" '
      NR == 1 { for (c = 1; c <= NF; ++c) if (tolower($c) == "tflops") col = c; next }
      { printf "%s round %d shape %d: %s TFLOP/s\n", side, round, NR - 1, $col }'
  done
done | tee /dev/stderr | awk '{ key = $1 " shape " $5; v = $6 + 0; if (!(key in best) || v > best[key]) best[key] = v }
  END { for (k in best) printf "best %s %.1f\n", k, best[k] }' | sort
