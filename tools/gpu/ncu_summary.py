#!/usr/bin/env python3
"""Summarizes an Nsight Compute source-page export of one kernel (SASS with per-instruction metrics).

Make the export on the GPU machine (tools/gpu/profile-kernel.sh does both steps):
    ncu --set full --import-source no -k regex:NAME -c 1 -o prof COMMAND
    ncu -i prof.ncu-rep --page source --csv --print-source sass > prof_sass.csv
then, anywhere:
    tools/gpu/ncu_summary.py prof_sass.csv [--top 20] [--regions 60]

Prints the instruction count, the share of warp-stall samples per reason, the instruction mix
(share of executed instructions and of stall samples per opcode), and the hottest instructions
with their main stall reasons: enough to see whether a kernel waits on memory, on barriers or
on its own arithmetic, and where. With --regions N, also the shares per run of N consecutive
SASS instructions in address order, each with the landmark opcodes it holds (barrier waits,
wgmma, global stores, exits): the prologue, main loop and epilogue of a kernel side by side.
"""
import argparse
import collections
import csv
import sys


def number(row, index, key):
    try:
        return float(row[index[key]].replace(",", "") or 0)
    except (KeyError, ValueError):
        return 0.0


def opcode(source):
    words = source.split()
    if words and words[0].startswith("@"):  # predicate
        words = words[1:]
    return words[0].split(".")[0] if words else "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", help="the source-page export (--page source --csv --print-source sass)")
    parser.add_argument("--top", type=int, default=20, help="hottest instructions to list")
    parser.add_argument("--regions", type=int, default=0, metavar="N",
                        help="also list stall samples and instructions per N consecutive instructions")
    args = parser.parse_args()
    rows = list(csv.reader(open(args.csv, newline="")))
    header_at = next((i for i, r in enumerate(rows) if "Source" in r and "Instructions Executed" in r), None)
    if header_at is None:
        sys.exit(f"{args.csv}: no 'Source' / 'Instructions Executed' header; is it a --page source --csv export?")
    header, data = rows[header_at], [r for r in rows[header_at + 1:] if len(r) == len(rows[header_at])]
    index = {h: i for i, h in enumerate(header)}
    samples_key = "Warp Stall Sampling (All Samples)"
    stalls = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]
    total_samples = sum(number(r, index, samples_key) for r in data) or 1.0
    total_inst = sum(number(r, index, "Instructions Executed") for r in data) or 1.0

    by_reason = collections.Counter()
    inst_by_op, samples_by_op = collections.Counter(), collections.Counter()
    for r in data:
        op = opcode(r[index["Source"]].strip())
        inst_by_op[op] += number(r, index, "Instructions Executed")
        samples_by_op[op] += number(r, index, samples_key)
        for s in stalls:
            by_reason[s] += number(r, index, s)

    print(f"instructions executed (warp level): {total_inst:.4g}; stall samples: {total_samples:.0f}")
    print("\nstall reasons (share of samples):")
    for reason, n in by_reason.most_common(12):
        print(f"  {reason[6:]:24s} {100 * n / total_samples:5.1f}%")
    print("\nopcodes: share of instructions, share of stall samples")
    for op, n in inst_by_op.most_common(20):
        print(f"  {op:12s} {100 * n / total_inst:5.1f}%  {100 * samples_by_op[op] / total_samples:5.1f}%")
    print(f"\nhottest {args.top} instructions: line, share of samples, executions, main stall reasons")
    hottest = sorted(range(len(data)), key=lambda i: -number(data[i], index, samples_key))[: args.top]
    for i in sorted(hottest):
        r = data[i]
        s = number(r, index, samples_key) or 1.0
        reasons = sorted(((number(r, index, k), k[6:]) for k in stalls), reverse=True)[:2]
        why = " ".join(f"{k}:{100 * v / s:.0f}%" for v, k in reasons if v > 0)
        print(f"  {i:5d} {100 * s / total_samples:5.1f}% {number(r, index, 'Instructions Executed'):10.3g}  "
              f"{r[index['Source']].strip()[:64]:64s} {why}")
    if args.regions > 0:
        print_regions(data, index, samples_key, total_samples, total_inst, args.regions)


# Opcodes that locate a region in a kernel: waits and barriers, tensor-core issue, special
# functions, memory traffic, the end of a thread.
LANDMARKS = ("SYNCS", "BAR", "HGMMA", "HMMA", "WARPGROUP", "MUFU", "LDG", "STG", "LDS", "STS", "LDSM", "UTMALDG",
             "UTMASTG", "SHFL", "USETMAXREG", "EXIT")


def print_regions(data, index, samples_key, total_samples, total_inst, size):
    print(f"\nregions of {size} instructions: first line, share of samples, share of instructions, landmarks")
    for start in range(0, len(data), size):
        block = data[start:start + size]
        samples = sum(number(r, index, samples_key) for r in block)
        inst = sum(number(r, index, "Instructions Executed") for r in block)
        marks = collections.Counter(op for op in (opcode(r[index["Source"]].strip()) for r in block) if op in LANDMARKS)
        where = " ".join(f"{op}x{n}" for op, n in sorted(marks.items()))
        print(f"  {start:5d} {100 * samples / total_samples:5.1f}% {100 * inst / total_inst:5.1f}%  {where}")


if __name__ == "__main__":
    main()
