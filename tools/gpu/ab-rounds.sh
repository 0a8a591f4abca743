# Sourced by ab-templates.sh and ab-binaries.sh. ab_rounds ROUNDS ARGS...: ROUNDS times, side A
# then side B, calls the sourcing script's `bench_side SIDE ARGS...` (an `attnjit bench --csv`
# run: a header, then a line per shape), prints every round's TFLOP/s per shape (also on
# stderr) and, sorted, the best of each side per shape.
ab_rounds() {
  local rounds=$1 i side
  shift
  for ((i = 1; i <= rounds; ++i)); do
    for side in A B; do
      # The TFLOP/s column by name.
      bench_side "$side" "$@" | awk -F, -v side="$side" -v round="$i" '
        NR == 1 { for (c = 1; c <= NF; ++c) if (tolower($c) == "tflops") col = c; next }
        { printf "%s round %d shape %d: %s TFLOP/s\n", side, round, NR - 1, $col }'
    done
  done | tee /dev/stderr | awk '{ key = $1 " shape " $5; v = $6 + 0; if (!(key in best) || v > best[key]) best[key] = v }
    END { for (k in best) printf "best %s %.1f\n", k, best[k] }' | sort
}
