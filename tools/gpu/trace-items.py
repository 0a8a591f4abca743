#!/usr/bin/env python3
"""Summarizes a work-item trace of fwd_sm90 (ATTNJIT_TRACE=FILE with a template folder whose
AJ_TRACE is 1: tools/gpu/trace-items.sh makes both): where an item's time goes, in SM clock
cycles per item and per tile, and a fit of item time against its tiles (the fixed part is what
an item costs beyond its tiles).

    tools/gpu/trace-items.py trace.csv [more.csv ...]
"""
import csv
import statistics
import sys
from collections import defaultdict

PHASES = [  # (name, from column, to column)
    ("wait for Q", "start", "q"),
    ("wait for first K", "q", "k"),
    ("first S", "k", "s0"),
    ("tile loop", "s0", "loop"),
    ("last P V", "loop", "pv"),
    ("normalize + stage O", "pv", "staged"),
    ("store O", "staged", "end"),
]
WAITS = ["softmax", "rescale", "issue_qk", "issue_pv", "wait_pv", "wait_k", "wait_turn", "wait_v", "wait_s"]


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k != "kernel":
                r[k] = int(v)
    return rows


def fit(points):
    """Least squares time = a + b * tiles; returns (a, b)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - b * mx, b


def summarize(path):
    rows = [r for r in load(path) if r["tiles"] > 0]
    if not rows:
        print(f"{path}: no item with tiles")
        return
    tiles = [r["tiles"] for r in rows]
    item = [r["end"] - r["start"] for r in rows]
    print(f"{path}: {len(rows)} items, {statistics.mean(tiles):.2f} tiles each on average, "
          f"{statistics.mean(item):.0f} cycles per item")
    print(f"{'phase':<24}{'cycles / item':>14}{'share':>8}")
    total = statistics.mean(item)
    for name, a, b in PHASES:
        v = statistics.mean(r[b] - r[a] for r in rows)
        print(f"{name:<24}{v:>14.0f}{v / total:>8.1%}")
    loop_tiles = sum(r["tiles"] for r in rows)
    print(f"{'in the tile loop':<24}{'cycles / tile':>14}")
    for w in WAITS:
        v = sum(r.get(w, 0) for r in rows) / loop_tiles
        print(f"{w:<24}{v:>14.0f}")
    per_tile = sum(r["loop"] - r["s0"] for r in rows) / loop_tiles
    print(f"{'loop time':<24}{per_tile:>14.0f}")
    # Idle time of an SM's consumer between an item's end and the next item's start (clock64 is
    # the SM's, so this spans CTAs too: with one item per CTA it is the CTA turnover). Items of
    # CTAs resident side by side go to parallel lanes, each item to the lane free the longest.
    by_sm = defaultdict(list)
    for r in rows:
        by_sm[(r["sm"], r["consumer"])].append(r)
    gaps = []
    for seq in by_sm.values():
        seq.sort(key=lambda r: r["start"])
        lanes = []  # each lane's last end
        for r in seq:
            free = [i for i, end in enumerate(lanes) if end <= r["start"]]
            if free:
                i = min(free, key=lambda i: lanes[i])
                gaps.append(r["start"] - lanes[i])
                lanes[i] = r["end"]
            else:
                lanes.append(r["end"])
    if gaps:
        print(f"{'gap between items':<24}{statistics.mean(gaps):>14.0f}")
    f = fit([(r["tiles"], r["end"] - r["start"]) for r in rows])
    if f:
        a, b = f
        print(f"fit: item = {a:.0f} + {b:.0f} * tiles cycles (fixed part = {a / b:.2f} tiles)")


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    for path in sys.argv[1:]:
        summarize(path)
        print()


if __name__ == "__main__":
    main()
