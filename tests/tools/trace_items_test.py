#!/usr/bin/env python3
"""tools/gpu/trace-items.py on a trace whose phases are known: the per-item phase means, the
per-tile waits, the gap between one consumer's items and the fit of item time against tiles
(here 260 + 50 * tiles cycles: a fixed part of 5.2 tiles) come out as built; items without
tiles are left out; no argument prints the usage and exits 2."""
import os
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SCRIPT = os.path.join(ROOT, "tools", "gpu", "trace-items.py")
HEADER = ("kernel,global_ns,start,q,k,s0,loop,pv,staged,end,wait_k,wait_turn,wait_v,wait_s,wait_pv,softmax,"
          "rescale,issue_qk,issue_pv,spare,tiles,consumer,sm,cta")


def record(start, tiles, consumer=0):
    q = start + 10
    k = q + 20
    s0 = k + 100
    loop = s0 + 50 * tiles
    pv = loop + 30
    staged = pv + 40
    end = staged + 60
    waits = [1 * tiles, 2 * tiles, 3 * tiles, 4 * tiles, 5 * tiles, 30 * tiles, 6 * tiles, 7 * tiles, 8 * tiles, 0]
    return [start, start, q, k, s0, loop, pv, staged, end, *waits, tiles, consumer, 7, 3]


def main():
    rows, t = [], 1000
    for tiles in (2, 4, 6, 8):
        rows.append(record(t, tiles))
        t = rows[-1][8] + 5  # the next item starts 5 cycles after this one's end
    rows.append(record(99999, 0, consumer=1))  # no tiles: not counted
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.csv")
        with open(path, "w") as f:
            f.write(HEADER + "\n")
            for r in rows:
                f.write("attnjit_fwd," + ",".join(map(str, r)) + "\n")
        out = subprocess.run([sys.executable, SCRIPT, path], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        text = out.stdout
        print(text)
        assert "4 items, 5.00 tiles each on average, 510 cycles per item" in text, text
        lines = {l[:24].strip(): l[24:].split() for l in text.splitlines() if len(l) > 24}
        assert lines["wait for first K"][0] == "20", lines
        assert lines["first S"][0] == "100", lines
        assert lines["tile loop"][0] == "250", lines
        assert lines["store O"][0] == "60", lines
        assert lines["softmax"][0] == "30" and lines["wait_s"][0] == "4", lines
        assert lines["rescale"][0] == "6" and lines["issue_pv"][0] == "8", lines
        assert lines["loop time"][0] == "50", lines
        assert lines["gap between items"][0] == "5", lines
        assert "fit: item = 260 + 50 * tiles cycles (fixed part = 5.20 tiles)" in text, text
    usage = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True)
    assert usage.returncode == 2 and "trace-items.sh" in usage.stdout, usage
    print("trace-items: ok")


if __name__ == "__main__":
    main()
