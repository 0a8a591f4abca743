#!/usr/bin/env bash
# Alternating A/B of two versions of the kernel templates with one attnjit binary (run on the
# device machine): A = the templates under $1 (ATTNJIT_TEMPLATE_DIR; e.g. main's, from
# `git archive main templates`), B = the templates built into the binary. Each round times
# both with `attnjit bench` (the arguments after --), separate kernel caches; prints every
# round's TFLOP/s per shape and the best of each.
#   tools/gpu/ab-templates.sh /path/to/main/templates 3 -- --preset causal --head-dim 128 \
#       --shape 4,16,16,4096,4096,128
# Environment: ATTNJIT (the binary; default build-gpu/attnjit).
# Only for kernel text changes: the binary's template descriptors (shared-memory sizes, macros)
# apply to both sides, so a change of layout or knobs needs the knob in one binary instead (a
# padded-row kernel run with a swizzled layout's shared-memory size faults).
set -euo pipefail
if [ $# -lt 3 ] || [ "$3" != "--" ]; then
  sed -n '2,12p' "$0"
  exit 2
fi
dir=$1 rounds=$2
shift 3
bin=${ATTNJIT:-build-gpu/attnjit}
[ -d "$dir" ] || { echo "no template folder '$dir'" >&2; exit 2; }
bench_side() {  # A: the folder's templates, B: the binary's
  local side=$1
  shift
  if [ "$side" = A ]; then
    ATTNJIT_TEMPLATE_DIR=$dir ATTNJIT_CACHE_DIR=/tmp/attnjit-ab-a "$bin" bench --csv "$@"
  else
    ATTNJIT_CACHE_DIR=/tmp/attnjit-ab-b "$bin" bench --csv "$@"
  fi
}
# shellcheck source=tools/gpu/ab-rounds.sh
source "$(dirname "$0")/ab-rounds.sh"
ab_rounds "$rounds" "$@"
