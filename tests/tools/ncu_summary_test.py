#!/usr/bin/env python3
"""tools/gpu/ncu_summary.py on a small hand-made source-page export: the stall shares, the
opcode mix, the hottest instruction and the regions (--regions) it reports follow from the rows
below; a file without the export's header is refused."""
import os
import subprocess
import sys
import tempfile

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "gpu", "ncu_summary.py")

HEADER = ['"Address"', '"Source"', '"Warp Stall Sampling (All Samples)"', '"Instructions Executed"',
          '"stall_barrier"', '"stall_long_sb"', '"stall_barrier (Not Issued)"']
ROWS = [
    ['"0x10"', '"HMMA.16816.F32.BF16 R4, R8, R12, R4"', '"10"', '"300"', '"0"', '"0"', '"0"'],
    ['"0x20"', '"@!P0 LDG.E R2, desc[UR4][R6.64]"', '"30"', '"100"', '"0"', '"30"', '"0"'],
    ['"0x30"', '"BAR.SYNC.DEFER_BLOCKING 0x0"', '"60"', '"100"', '"60"', '"0"', '"5"'],
]


def run(text, *extra):
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        f.write(text)
    try:
        return subprocess.run([sys.executable, SCRIPT, f.name, "--top", "1", *extra], capture_output=True, text=True)
    finally:
        os.unlink(f.name)


def main():
    export = '"Kernel Name","attnjit_bwd",\n' + "\n".join(",".join(r) for r in [HEADER] + ROWS) + "\n"
    r = run(export)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    expect = [
        "instructions executed (warp level): 500; stall samples: 100",
        "barrier                   60.0%",  # 60 of 100 samples
        "long_sb                   30.0%",
        "HMMA          60.0%   10.0%",  # 300 of 500 instructions, 10 of 100 samples
        "LDG           20.0%   30.0%",  # the predicate is not the opcode
        "BAR.SYNC.DEFER_BLOCKING 0x0",  # the hottest instruction
    ]
    for line in expect:
        assert line in out, f"missing {line!r} in:\n{out}"
    assert "HMMA.16816" not in out.split("hottest")[1], out  # --top 1: only the barrier
    assert "regions of" not in out, out  # only with --regions
    # --regions 2: rows 0-1 (the HMMA and the LDG: 40 of 100 samples, 400 of 500 instructions),
    # then row 2 (the barrier).
    regions = run(export, "--regions", "2").stdout.split("regions of 2 instructions")[1]
    assert "      0  40.0%  80.0%  HMMAx1 LDGx1" in regions, regions
    assert "      2  60.0%  20.0%  BARx1" in regions, regions
    bad = run('"Address","Something else"\n"0x10","x"\n')
    assert bad.returncode != 0 and "no 'Source'" in bad.stderr, bad
    print("ncu_summary: ok")


if __name__ == "__main__":
    main()
