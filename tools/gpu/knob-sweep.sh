#!/usr/bin/env bash
# Knob settings of one attnjit binary timed round-robin (run on the device machine), so that
# the GPU's drift spreads over every setting alike; prints each round's TFLOP/s and, last, the
# best of the rounds per case.
#   tools/gpu/knob-sweep.sh 2 tools/gpu/sweeps/short-causal.txt
# A case file holds one case per line, `preset|B,H,Hkv,Sq,Sk,D|knob options` (empty options:
# the defaults); blank lines and lines starting with # are skipped.
# Environment: ATTNJIT (the binary; default build-gpu/attnjit), REPS (default 50).
set -uo pipefail
[ $# -eq 2 ] || { sed -n '2,8p' "$0"; exit 2; }
rounds=$1 file=$2
bin=${ATTNJIT:-build-gpu/attnjit}
mapfile -t cases < <(grep -v '^\s*\(#\|$\)' "$file")
[ ${#cases[@]} -gt 0 ] || { echo "no cases in $file" >&2; exit 2; }
for ((round = 1; round <= rounds; ++round)); do
  for c in "${cases[@]}"; do
    IFS='|' read -r preset shape knobs <<< "$c"
    # shellcheck disable=SC2086  # the knob options split into words
    line=$(timeout 60 "$bin" bench --csv --preset "$preset" --shape "$shape" $knobs --reps "${REPS:-50}" \
      --warmup 10 2>&1 | tail -n 1)
    tflops=$(awk -F, '{ print $15 }' <<< "$line")
    [[ "$tflops" =~ ^[0-9.]+$ ]] || tflops="failed: $line"
    echo "round $round|$c|$tflops"
  done
done | tee /dev/stderr | awk -F'|' '$5 ~ /^[0-9.]+$/ { key = $2 "|" $3 "|" $4; if (!(key in best) || $5 + 0 > best[key]) best[key] = $5 + 0 }
  END { for (k in best) printf "best|%s|%.1f\n", k, best[k] }' | sort
