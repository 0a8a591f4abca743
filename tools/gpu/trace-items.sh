#!/usr/bin/env bash
# Where fwd_sm90's work items spend their time (run on the device machine): builds a copy of
# templates/ with AJ_TRACE 1 (and any other NAME=VALUE defaults), runs one `attnjit bench` on
# it with ATTNJIT_TRACE set, and prints tools/gpu/trace-items.py's summary of the last launch.
#   tools/gpu/trace-items.sh /tmp/causal.csv -- --preset causal --shape 16,32,32,1024,1024,64
#   tools/gpu/trace-items.sh /tmp/lw.csv AJ_LAST_IN_WORD=1 -- --preset causal --shape ...
# Environment: ATTNJIT (the binary; default build-gpu/attnjit). The traced kernel's speed is not
# the kernel's (its clock reads and the copy after each launch): read the phases, not the time.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,8p' "$0"; exit 2; }
csv=$1
shift
settings=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  settings+=("$1")
  shift
done
[ "${1:-}" = "--" ] || { echo "missing -- before the bench arguments" >&2; exit 2; }
shift
here=$(cd "$(dirname "$0")" && pwd)
bin=${ATTNJIT:-build-gpu/attnjit}
dir=$(mktemp -d /tmp/attnjit-trace.XXXXXX)
rmdir "$dir"
"$here/template-variant.sh" "$dir" AJ_TRACE=1 "${settings[@]}"
ATTNJIT_TEMPLATE_DIR=$dir ATTNJIT_CACHE_DIR=$dir.cache ATTNJIT_TRACE=$csv "$bin" bench "$@" --reps 2 --warmup 1 >/dev/null
rm -rf "$dir" "$dir.cache"
python3 "$here/trace-items.py" "$csv"
