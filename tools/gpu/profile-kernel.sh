#!/usr/bin/env bash
# Profiles one kernel launch with Nsight Compute on the GPU machine and summarizes it:
#   tools/gpu/profile-kernel.sh KERNEL_REGEX OUT_PREFIX -- COMMAND...
# e.g. tools/gpu/profile-kernel.sh 'attnjit_bwd$' $OUT/bwd -- \
#        build-gpu/attnjit bench --preset causal --backward --shape 4,16,16,4096,4096,128 --reps 1 --warmup 0
# Writes OUT_PREFIX.ncu-rep (the full report), OUT_PREFIX_sass.csv (per-instruction metrics) and
# OUT_PREFIX_summary.txt (tools/gpu/ncu_summary.py), and prints the speed-of-light and launch
# lines (grid, block, shared memory, waves: a peer's schedule read off its launch), the busiest
# pipes and the summary. Clocks are left as they are (--clock-control none).
set -uo pipefail
if [ $# -lt 4 ] || [ "$3" != "--" ]; then
  sed -n '2,9p' "$0"
  exit 2
fi
kernel=$1
prefix=$2
shift 3
here=$(cd "$(dirname "$0")" && pwd)
ncu --clock-control none --set full --import-source no -k "regex:$kernel" -c 1 -f -o "$prefix" "$@" >"$prefix.log" 2>&1 ||
  { tail -n 20 "$prefix.log"; exit 1; }
ncu -i "$prefix.ncu-rep" --page details 2>&1 |
  grep -E "Duration|Registers Per|Executed Ipc A|Warp Cycles Per Issued|Achieved Occupancy|Throughput  |Grid Size|Block Size|Dynamic Shared Memory Per|Waves Per SM|Cluster Size" |
  head -n 18
# Busy share of each pipe (tensor, FMA, ALU, MUFU = xu, LSU, ...), the busiest first.
ncu -i "$prefix.ncu-rep" --page raw 2>&1 |
  grep -E "sm__(inst_executed_pipe_[a-z0-9_]+|pipe_[a-z0-9_]+_cycles_active)\.avg\.pct_of_peak_sustained_active " |
  sort -k3 -g -r | head -n 10
ncu -i "$prefix.ncu-rep" --page source --csv --print-source sass >"${prefix}_sass.csv"
python3 "$here/ncu_summary.py" "${prefix}_sass.csv" --regions 120 | tee "${prefix}_summary.txt"
