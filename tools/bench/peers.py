#!/usr/bin/env python3
"""Peer comparison for the forward pass, run on a GPU machine with PyTorch in one process:
attnjit (through `attnjit bench --json`), PyTorch SDPA with the flash and cuDNN backends, and
FlexAttention (torch.compile), on the shapes of shared/ANCHORS.md, in the same run.

TFLOP/s count only admitted (q, kv) pairs: 4 * B * H * pairs * D / time (forward).
Usage: tools/bench/peers.py --attnjit build-gpu/attnjit [--out results.json] [--quick]
"""
import argparse
import json
import math
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
import triton.testing

DTYPE = torch.bfloat16


def tflops(b, h, sq, sk, d, density, ms):
    return 4.0 * b * h * sq * sk * d * density / (ms * 1e-3) / 1e12


def median_ms(fn):
    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


def sdpa_ms(backend, q, k, v, causal):
    with sdpa_kernel([backend]):
        fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        fn()
        return median_ms(fn)


def attnjit_bench(binary, preset, shape, params, docs=3):
    cmd = [binary, "bench", "--preset", preset, "--shape", ",".join(map(str, shape)), "--json", "--reps", "50",
           "--docs", str(docs)]
    for p in params:
        cmd += ["--param", p]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-300:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def dense_causal_grid(binary, rows, quick):
    seqs = [1024, 4096] if quick else [1024, 4096, 16384]
    for d in (64, 128):
        for s in seqs:
            b, h = 16384 // s, 2048 // d
            q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=DTYPE) for _ in range(3))
            for causal in (False, True):
                density = 0.5 * (s + 1) / s if causal else 1.0
                row = {"table": "dense_causal", "S": s, "D": d, "causal": causal, "B": b, "H": h}
                for name, backend in (("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                    try:
                        row[name] = tflops(b, h, s, s, d, density, sdpa_ms(backend, q, k, v, causal))
                    except Exception as e:  # a backend may refuse a shape
                        row[name] = None
                        row[name + "_error"] = str(e)[:200]
                r = attnjit_bench(binary, "causal" if causal else "dense", (b, h, h, s, s, d), [])
                row["attnjit"] = r.get("tflops")
                row["attnjit_error"] = r.get("error")
                rows.append(row)
                print(json.dumps(row), flush=True)
            del q, k, v


def flex_variants(binary, rows):
    b, h, s, d = 4, 16, 4096, 128
    q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=DTYPE) for _ in range(3))
    slopes = torch.tensor([2.0 ** (-8.0 * (i + 1) / h) for i in range(h)], device="cuda")
    doc = (torch.arange(s, device="cuda") * 3 // s).to(torch.int32)

    def causal(b_, h_, qi, ki):
        return ki <= qi

    variants = [
        ("dense", "dense", None, None, []),
        ("causal", "causal", None, causal, []),
        ("alibi+causal", "alibi_causal", lambda sc, b_, h_, qi, ki: sc + slopes[h_] * (ki - qi), causal, []),
        ("softcap30+causal", "softcap_causal", lambda sc, b_, h_, qi, ki: 30.0 * torch.tanh(sc / 30.0), causal,
         ["softcap=30"]),
        ("sliding_window1024", "sliding_window", None, lambda b_, h_, qi, ki: (ki <= qi) & (qi - ki < 1024),
         ["window=1024"]),
        ("document3+causal", "document_causal", None, lambda b_, h_, qi, ki: (doc[qi] == doc[ki]) & (ki <= qi), []),
        ("prefix_lm1024", "prefix_lm", None, lambda b_, h_, qi, ki: (ki < 1024) | (ki <= qi), ["prefix_len=1024"]),
    ]
    compiled = torch.compile(flex_attention)
    qi = torch.arange(s, device="cuda")[:, None]
    ki = torch.arange(s, device="cuda")[None, :]
    for label, preset, score_mod, mask_mod, params in variants:
        density = 1.0 if mask_mod is None else mask_mod(0, 0, qi, ki).float().mean().item()
        block_mask = None if mask_mod is None else create_block_mask(mask_mod, None, None, s, s, device="cuda")
        fn = lambda: compiled(q, k, v, score_mod=score_mod, block_mask=block_mask)
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        flex = tflops(b, h, s, s, d, density, median_ms(fn))
        r = attnjit_bench(binary, preset, (b, h, h, s, s, d), params)
        row = {"table": "flex", "variant": label, "density": density, "flex": flex, "flex_compile_s": compile_s,
               "attnjit": r.get("tflops"), "attnjit_density": r.get("density"), "attnjit_error": r.get("error")}
        rows.append(row)
        print(json.dumps(row), flush=True)


def fmt(x):
    return "—" if x is None else f"{x:.0f}"


def ratio(a, b):
    return "—" if a is None or not b else f"{a / b:.2f}"


def print_tables(rows, device):
    print(f"\n## Forward, {device}, bf16, TFLOP/s (B*S=16384, H*D=2048)\n")
    print("| S | D | causal | attnjit | FA2 (SDPA flash) | cuDNN (SDPA) | attnjit/FA2 | attnjit/cuDNN |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["table"] == "dense_causal":
            print(f"| {r['S']} | {r['D']} | {'yes' if r['causal'] else 'no'} | {fmt(r['attnjit'])} | {fmt(r['fa2'])} | "
                  f"{fmt(r['cudnn'])} | {ratio(r['attnjit'], r['fa2'])} | {ratio(r['attnjit'], r['cudnn'])} |")
    print(f"\n## FlexAttention variants, {device}, B=4 H=16 S=4096 D=128 bf16, TFLOP/s on admitted pairs\n")
    print("| variant | density | attnjit | FlexAttention | attnjit/Flex | Flex first-call s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["table"] == "flex":
            print(f"| {r['variant']} | {r['density']:.3f} | {fmt(r['attnjit'])} | {fmt(r['flex'])} | "
                  f"{ratio(r['attnjit'], r['flex'])} | {r['flex_compile_s']:.1f} |")
    for r in rows:
        if r.get("attnjit_error"):
            print("attnjit error:", r.get("variant", r.get("S")), r["attnjit_error"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attnjit", required=True)
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true", help="skip S=16384")
    args = ap.parse_args()
    device = torch.cuda.get_device_name()
    print(f"device: {device}; torch {torch.__version__}; date {time.strftime('%Y-%m-%d')}", flush=True)
    rows = []
    dense_causal_grid(args.attnjit, rows, args.quick)
    flex_variants(args.attnjit, rows)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": device, "torch": torch.__version__, "rows": rows}, f, indent=1)
    print_tables(rows, device)


if __name__ == "__main__":
    sys.exit(main())
