#!/usr/bin/env python3
"""Peer comparison for the forward pass, run on a GPU machine with PyTorch in one process:
attnjit (through `attnjit bench --json`), PyTorch SDPA with the flash and cuDNN backends, and
FlexAttention (torch.compile), on the shapes of shared/ANCHORS.md, in the same run.

TFLOP/s count only admitted (q, kv) pairs: 4 * B * H * pairs * D / time (forward).
Usage: tools/bench/peers.py --attnjit build-gpu/attnjit [--out results.json] [--chart chart.png] [--quick]
A relative --chart path goes into --out's folder; the chart needs matplotlib.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
import triton.testing

DTYPE = torch.bfloat16
# Every FlexAttention variant is its own compiled graph: the forward table and the backward's
# in one process pass dynamo's default limit (8), past which flex_attention silently runs
# unfused (2026-12-01: the backward's Flex rows at 4-13 TFLOP/s).
torch._dynamo.config.recompile_limit = 64


def tflops(b, h, sq, sk, d, density, ms):
    return 4.0 * b * h * sq * sk * d * density / (ms * 1e-3) / 1e12


def median_ms(fn):
    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


def sdpa_ms(backend, q, k, v, causal):
    with sdpa_kernel([backend]):
        fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        fn()
        return median_ms(fn)


def attnjit_bench(binary, preset, shape, params, docs=3, extra=(), env=None):
    """One `attnjit bench` row as a dict; `preset` None: the variant comes in `extra` (--variant);
    `env`: variables added to the environment of that one run."""
    cmd = [binary, "bench", *(["--preset", preset] if preset else []), "--shape", ",".join(map(str, shape)), "--json",
           "--reps", "50", "--docs", str(docs), *extra]
    for p in params:
        cmd += ["--param", p]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env} if env else None)
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-300:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def dense_causal_grid(binary, rows, quick, seqs=None):
    seqs = seqs or ([1024, 4096] if quick else [1024, 4096, 16384])
    for d in (64, 128, 256):
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
                preset = "causal" if causal else "dense"
                r = attnjit_bench(binary, preset, (b, h, h, s, s, d), [])
                row["attnjit"] = r.get("tflops")
                row["attnjit_template"] = r.get("template")
                row["attnjit_error"] = r.get("error")
                # The sm80 template beside the one chosen (fwd_sm90 on Hopper), as the baseline.
                row["attnjit_sm80"] = attnjit_bench(binary, preset, (b, h, h, s, s, d), [],
                                                    extra=["--template", "fwd_sm80"]).get("tflops")
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
        if preset.startswith("document"):
            # Flex builds its block mask once, outside the timed calls; attnjit's row above
            # builds the tile classes in every call. The like-for-like: built once too.
            r = attnjit_bench(binary, preset, (b, h, h, s, s, d), params, extra=["--prebuilt-block-mask"])
            row = dict(row, variant=label + " (mask built once)", attnjit=r.get("tflops"),
                       attnjit_error=r.get("error"))
            rows.append(row)
            print(json.dumps(row), flush=True)


def rope_overhead(binary, rows):
    """Fused RoPE's cost: attnjit rope_causal against attnjit causal on the same shape, timed in
    alternation (best median of 3 rounds each); for scale, PyTorch applying RoPE to Q and K
    (eager, half layout) before cuDNN's causal SDPA."""
    b, h, s = 4, 16, 4096
    for d in (64, 128):
        q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=DTYPE) for _ in range(3))
        inv = 10000.0 ** (-torch.arange(0, d, 2, device="cuda", dtype=torch.float32) / d)
        ang = torch.arange(s, device="cuda", dtype=torch.float32)[:, None] * inv[None, :]
        cos, sin = ang.cos(), ang.sin()

        def rotate(x):
            x1, x2 = x[..., : d // 2].float(), x[..., d // 2:].float()
            return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(DTYPE)

        def torch_rope_cudnn():
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                return F.scaled_dot_product_attention(rotate(q), rotate(k), v, is_causal=True)

        torch_rope_cudnn()
        torch_ms = median_ms(torch_rope_cudnn)
        plain, fused = [], []
        for _ in range(3):
            plain.append(attnjit_bench(binary, "causal", (b, h, h, s, s, d), []).get("median_ms"))
            fused.append(attnjit_bench(binary, "rope_causal", (b, h, h, s, s, d), []).get("median_ms"))
        plain = [x for x in plain if x]
        fused = [x for x in fused if x]
        row = {"table": "rope", "D": d, "causal_ms": min(plain) if plain else None,
               "rope_causal_ms": min(fused) if fused else None, "torch_rope_cudnn_ms": torch_ms}
        rows.append(row)
        print(json.dumps(row), flush=True)


def backward_ms(fn_out, inputs, d_out):
    """Median time of the backward alone: the graph of one forward, differentiated again and again."""
    out = fn_out()
    grad = lambda: torch.autograd.grad(out, inputs, d_out, retain_graph=True)
    grad()
    return median_ms(grad)


def backward_grid(binary, rows, quick):
    """Backward TFLOP/s (2.5x the forward's FLOPs) for dense and causal: SDPA flash (FA2) and cuDNN
    against attnjit (fp32 atomics, and deterministic fixed point)."""
    seqs = [1024, 4096] if quick else [1024, 4096, 16384]
    for d in (64, 128):
        for s in seqs:
            b, h = 16384 // s, 2048 // d
            q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=DTYPE, requires_grad=True) for _ in range(3))
            d_out = torch.randn(b, h, s, d, device="cuda", dtype=DTYPE)
            for causal in (False, True):
                density = 0.5 * (s + 1) / s if causal else 1.0
                row = {"table": "backward", "S": s, "D": d, "causal": causal, "B": b, "H": h}
                for name, backend in (("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                    try:
                        with sdpa_kernel([backend]):
                            ms = backward_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
                                             (q, k, v), d_out)
                        row[name] = 2.5 * tflops(b, h, s, s, d, density, ms)
                    except Exception as e:
                        row[name] = None
                        row[name + "_error"] = str(e)[:200]
                preset = "causal" if causal else "dense"
                r = attnjit_bench(binary, preset, (b, h, h, s, s, d), [], extra=["--backward"])
                row["attnjit"], row["attnjit_error"] = r.get("tflops"), r.get("error")
                r = attnjit_bench(binary, preset, (b, h, h, s, s, d), [], extra=["--backward", "--deterministic"])
                row["attnjit_det"], row["attnjit_det_error"] = r.get("tflops"), r.get("error")
                rows.append(row)
                print(json.dumps(row), flush=True)
            del q, k, v


def flex_backward(binary, rows):
    """FlexAttention's backward on its variant shapes, and a learnable relative bias with its gradient."""
    b, h, s, d = 4, 16, 4096, 128
    q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=DTYPE, requires_grad=True) for _ in range(3))
    d_out = torch.randn(b, h, s, d, device="cuda", dtype=DTYPE)
    slopes = torch.tensor([2.0 ** (-8.0 * (i + 1) / h) for i in range(h)], device="cuda")
    doc = (torch.arange(s, device="cuda") * 3 // s).to(torch.int32)
    rel_bias = (0.1 * torch.randn(h, 2 * s - 1, device="cuda")).requires_grad_(True)

    def causal(b_, h_, qi, ki):
        return ki <= qi

    variants = [
        ("causal", "causal", None, causal, [], []),
        ("alibi+causal", "alibi_causal", lambda sc, b_, h_, qi, ki: sc + slopes[h_] * (ki - qi), causal, [], []),
        ("softcap30+causal", "softcap_causal", lambda sc, b_, h_, qi, ki: 30.0 * torch.tanh(sc / 30.0), causal,
         ["softcap=30"], []),
        ("sliding_window1024", "sliding_window", None, lambda b_, h_, qi, ki: (ki <= qi) & (qi - ki < 1024),
         ["window=1024"], []),
        ("document3+causal", "document_causal", None, lambda b_, h_, qi, ki: (doc[qi] == doc[ki]) & (ki <= qi), [],
         []),
        ("relative_bias (learned, with its gradient)", "relative_bias",
         lambda sc, b_, h_, qi, ki: sc + rel_bias[h_, qi - ki + s - 1], None, [], ["rel_bias"]),
    ]
    compiled = torch.compile(flex_attention)
    qi = torch.arange(s, device="cuda")[:, None]
    ki = torch.arange(s, device="cuda")[None, :]
    for label, preset, score_mod, mask_mod, params, grads in variants:
        density = 1.0 if mask_mod is None else mask_mod(0, 0, qi, ki).float().mean().item()
        block_mask = None if mask_mod is None else create_block_mask(mask_mod, None, None, s, s, device="cuda")
        inputs = (q, k, v, rel_bias) if grads else (q, k, v)
        row = {"table": "flex_backward", "variant": label, "density": density}
        try:
            ms = backward_ms(lambda: compiled(q, k, v, score_mod=score_mod, block_mask=block_mask), inputs, d_out)
            row["flex"] = 2.5 * tflops(b, h, s, s, d, density, ms)
        except Exception as e:
            row["flex"], row["flex_error"] = None, str(e)[:300]
        extra = ["--backward"] + [x for g in grads for x in ("--tensor-grad", g)]
        r = attnjit_bench(binary, preset, (b, h, h, s, s, d), params, extra=extra)
        row["attnjit"], row["attnjit_density"], row["attnjit_error"] = r.get("tflops"), r.get("density"), r.get("error")
        if grads:
            r = attnjit_bench(binary, preset, (b, h, h, s, s, d), params, extra=extra + ["--deterministic"])
            row["attnjit_det"], row["attnjit_det_error"] = r.get("tflops"), r.get("error")
        rows.append(row)
        print(json.dumps(row), flush=True)


ROPE_DECODE = ('variant "rope_decode"; rope: theta=10000.0, dim=0, layout=half; '
               'mask: kv <= q + kv_len - q_len;')


def gb_per_s(r, nbytes):
    """GB/s of an attnjit_bench row over `nbytes`, or None when it did not run."""
    return nbytes / (r["median_ms"] * 1e-3) / 1e9 if r.get("median_ms") else None


def decode_table(binary, rows, flex=True, sks=(8192, 32768)):
    """Decode: Sq query rows against Sk cached keys (each of `sks`), B=8, 32 query heads on 8 kv
    heads, D=128; bandwidth over the K and V bytes (what a decode step must read), GB/s.
    flex=False leaves FlexAttention out (its compiles take most of this table's time)."""
    b, hq, hkv, d = 8, 32, 8, 128
    for sk in sks:
        k, v = (torch.randn(b, hkv, sk, d, device="cuda", dtype=DTYPE) for _ in range(2))
        kv_bytes = 2 * b * hkv * sk * d * 2
        for sq in (1, 4):
            q = torch.randn(b, hq, sq, d, device="cuda", dtype=DTYPE)
            row = {"table": "decode", "Sk": sk, "Sq": sq}
            for name, backend in (("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                try:
                    with sdpa_kernel([backend]):
                        fn = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                        fn()
                        row[name] = kv_bytes / (median_ms(fn) * 1e-3) / 1e9
                except Exception as e:
                    row[name], row[name + "_error"] = None, str(e)[:200]
            try:
                if not flex:
                    raise RuntimeError("left out (--quick)")
                compiled = torch.compile(flex_attention)
                fn = lambda: compiled(q, k, v, enable_gqa=True)
                fn()
                row["flex"] = kv_bytes / (median_ms(fn) * 1e-3) / 1e9
            except Exception as e:
                row["flex"], row["flex_error"] = None, str(e)[:200]
            r = attnjit_bench(binary, "dense", (b, hq, hkv, sq, sk, d), [], extra=["--template", "decode_sm80"])
            row["attnjit"] = gb_per_s(r, kv_bytes)
            row["attnjit_error"] = r.get("error")
            r = attnjit_bench(binary, "dense", (b, hq, hkv, sq, sk, d), [],
                              extra=["--template", "decode_sm80", "--stream-k", "0"])
            row["attnjit_split_k"] = gb_per_s(r, kv_bytes)
            # Padded shared rows (knob row_pad 8, the layout before the swizzled default), contiguous.
            r = attnjit_bench(binary, "dense", (b, hq, hkv, sq, sk, d), [],
                              extra=["--template", "decode_sm80", "--row-pad", "8"])
            row["attnjit_row_pad8"] = gb_per_s(r, kv_bytes)
            r = attnjit_bench(binary, "dense", (b, hq, hkv, sq, sk, d), [], extra=["--template", "fwd_sm80"])
            row["attnjit_fwd"] = gb_per_s(r, kv_bytes)
            # A cache a quarter full (every sequence at Sk / 4 keys): stream-K (the default) against
            # split-K, whose splits are sized by the capacity; GB/s over the keys in use.
            quarter = ",".join([str(sk // 4)] * b)
            for key, schedule in (("quarter_stream_k", "1"), ("quarter_split_k", "0")):
                r = attnjit_bench(binary, "dense", (b, hq, hkv, sq, sk, d), [],
                                  extra=["--template", "decode_sm80", "--kv-cache", "--kv-lens", quarter,
                                         "--stream-k", schedule])
                row[key] = gb_per_s(r, kv_bytes / 4)
            # Kernel::forward_kv_cache on the same bytes: contiguous with per-sequence lengths, and paged.
            for key, extra in (("kv_contig", ["--kv-cache"]), ("kv_page16", ["--kv-cache", "--page-size", "16"]),
                               ("kv_page128", ["--kv-cache", "--page-size", "128"])):
                r = attnjit_bench(binary, "dense", (b, hq, hkv, sq, sk, d), [], extra=extra)
                row[key] = gb_per_s(r, kv_bytes)
                if r.get("error"):
                    row[key + "_error"] = r["error"]
            # RoPE turned inside the decode kernel (Q once, each K tile in shared memory), bottom-right
            # causal: a decode step's queries see the whole cache.
            r = attnjit_bench(binary, None, (b, hq, hkv, sq, sk, d), [], extra=["--variant", ROPE_DECODE, "--kv-cache"])
            row["kv_rope"] = gb_per_s(r, kv_bytes)
            # The same with a sin/cos per pair and row (knob rope_steps 0; the default steps them).
            r = attnjit_bench(binary, None, (b, hq, hkv, sq, sk, d), [],
                              extra=["--variant", ROPE_DECODE, "--kv-cache", "--template", "decode_sm80",
                                     "--rope-steps", "0"])
            row["kv_rope_pairs"] = gb_per_s(r, kv_bytes)
            rows.append(row)
            print(json.dumps(row), flush=True)
        del k, v


# A packed prefill batch (Kernel::forward_ragged) against the same batch padded to its longest
# sequence: TFLOP/s over each one's admitted pairs (the padded batch's include the padding); and
# against one call per sequence (the same pairs, the time of the calls summed).
RAGGED_LENGTHS = (3001, 517, 4096, 1234, 2048, 777, 3500, 1999)


def ragged_table(binary, rows):
    b, h, d, longest = len(RAGGED_LENGTHS), 16, 128, max(RAGGED_LENGTHS)
    lengths = ",".join(str(n) for n in RAGGED_LENGTHS)
    for preset in ("dense", "causal"):
        shape = (b, h, h, longest, longest, d)
        row = {"table": "ragged", "preset": preset, "lengths": lengths}
        r = attnjit_bench(binary, preset, shape, [], extra=["--ragged-lengths", lengths])
        row["ragged"], row["ragged_template"], row["ragged_error"] = r.get("tflops"), r.get("template"), r.get("error")
        # fwd_sm80's ragged unit, opted into on Hopper.
        r = attnjit_bench(binary, preset, shape, [], extra=["--ragged-lengths", lengths], env={"ATTNJIT_RAGGED_SM90": "0"})
        row["ragged_sm80"], row["ragged_sm80_template"] = r.get("tflops"), r.get("template")
        row["ragged_sm80_error"] = r.get("error")
        times = [attnjit_bench(binary, preset, (1, h, h, n, n, d), []).get("median_ms") for n in RAGGED_LENGTHS]
        flops = sum(4.0 * h * d * (n * (n + 1) / 2 if preset == "causal" else n * n) for n in RAGGED_LENGTHS)
        row["per_sequence"] = flops / (sum(times) * 1e-3) / 1e12 if all(times) else None
        r = attnjit_bench(binary, preset, shape, [], extra=["--template", "fwd_sm80"])
        row["padded_sm80"], row["padded_sm80_error"] = r.get("tflops"), r.get("error")
        r = attnjit_bench(binary, preset, shape, [])
        row["padded"], row["padded_template"] = r.get("tflops"), r.get("template")
        rows.append(row)
        print(json.dumps(row), flush=True)


def fmt(x):
    return "—" if x is None else f"{x:.0f}"


def ratio(a, b):
    return "—" if a is None or not b else f"{a / b:.2f}"


def causal_tflops(rows, table):
    """attnjit's causal row of a variants table (the per-pair column's denominator), or None."""
    return next((r.get("attnjit") for r in rows if r["table"] == table and r["variant"] == "causal"), None)


def cost(slower, faster):
    """How much slower `slower` runs than `faster`, as a percentage of `faster`'s rate."""
    return "—" if not slower or not faster else f"{100.0 * (1.0 - slower / faster):.0f}%"


def print_tables(rows, device):
    print(f"\n## Forward, {device}, bf16, TFLOP/s (B*S=16384, H*D=2048)\n")
    print("| S | D | causal | attnjit | template | attnjit fwd_sm80 | FA2 (SDPA flash) | cuDNN (SDPA) | attnjit/FA2 | "
          "attnjit/cuDNN |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["table"] == "dense_causal":
            print(f"| {r['S']} | {r['D']} | {'yes' if r['causal'] else 'no'} | {fmt(r['attnjit'])} | "
                  f"{r.get('attnjit_template') or '—'} | {fmt(r.get('attnjit_sm80'))} | {fmt(r['fa2'])} | "
                  f"{fmt(r['cudnn'])} | {ratio(r['attnjit'], r['fa2'])} | {ratio(r['attnjit'], r['cudnn'])} |")
    print(f"\n## FlexAttention variants, {device}, B=4 H=16 S=4096 D=128 bf16, TFLOP/s on admitted pairs\n")
    # Issue 9's per-pair bar: each variant within 15% of attnjit's own causal on admitted pairs.
    print("| variant | density | attnjit | FlexAttention | attnjit/Flex | Flex first-call s | per pair / attnjit causal |")
    print("|---|---|---|---|---|---|---|")
    causal = causal_tflops(rows, "flex")
    for r in rows:
        if r["table"] == "flex":
            print(f"| {r['variant']} | {r['density']:.3f} | {fmt(r['attnjit'])} | {fmt(r['flex'])} | "
                  f"{ratio(r['attnjit'], r['flex'])} | {r['flex_compile_s']:.1f} | {ratio(r['attnjit'], causal)} |")
    rope = [r for r in rows if r["table"] == "rope"]
    if rope:
        print(f"\n## Fused RoPE overhead, {device}, B=4 H=16 S=4096 causal bf16, ms (best median of 3)\n")
        print("| D | attnjit causal | attnjit rope_causal | overhead | PyTorch RoPE + cuDNN causal |")
        print("|---|---|---|---|---|")
        for r in rope:
            c, f = r["causal_ms"], r["rope_causal_ms"]
            over = "—" if not c or not f else f"{100.0 * (f / c - 1.0):+.1f}%"
            ms = lambda x: "—" if x is None else f"{x:.3f}"
            print(f"| {r['D']} | {ms(c)} | {ms(f)} | {over} | {ms(r['torch_rope_cudnn_ms'])} |")
    if any(r["table"] == "backward" for r in rows):
        print(f"\n## Backward, {device}, bf16, TFLOP/s (2.5x forward FLOPs; B*S=16384, H*D=2048)\n")
        print("| S | D | causal | attnjit | attnjit deterministic | FA2 (SDPA flash) | cuDNN (SDPA) | attnjit/FA2 | "
              "attnjit/cuDNN | deterministic cost |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r["table"] == "backward":
                print(f"| {r['S']} | {r['D']} | {'yes' if r['causal'] else 'no'} | {fmt(r['attnjit'])} | "
                      f"{fmt(r.get('attnjit_det'))} | {fmt(r['fa2'])} | {fmt(r['cudnn'])} | "
                      f"{ratio(r['attnjit'], r['fa2'])} | {ratio(r['attnjit'], r['cudnn'])} | "
                      f"{cost(r.get('attnjit_det'), r['attnjit'])} |")
    if any(r["table"] == "flex_backward" for r in rows):
        print(f"\n## FlexAttention backward, {device}, B=4 H=16 S=4096 D=128 bf16, TFLOP/s on admitted pairs\n")
        print("| variant | density | attnjit | attnjit deterministic | FlexAttention | attnjit/Flex | "
              "per pair / attnjit causal |")
        print("|---|---|---|---|---|---|---|")
        causal = causal_tflops(rows, "flex_backward")
        for r in rows:
            if r["table"] == "flex_backward":
                print(f"| {r['variant']} | {r['density']:.3f} | {fmt(r['attnjit'])} | {fmt(r.get('attnjit_det'))} | "
                      f"{fmt(r['flex'])} | {ratio(r['attnjit'], r['flex'])} | {ratio(r['attnjit'], causal)} |")
                if r.get("flex_error"):
                    print(f"|   Flex error: {r['flex_error'][:150]} | | | | | | |")
    if any(r["table"] == "decode" for r in rows):
        print(f"\n## Decode, {device}, B=8 Hq=32 Hkv=8 D=128 bf16, GB/s over the K and V bytes\n")
        print("| Sk | Sq | attnjit decode_sm80 | split-K | row_pad 8 | kv-cache contiguous | paged 16 | paged 128 | "
              "kv-cache RoPE | RoPE, rope_steps 0 | quarter full: stream-K | split-K | attnjit fwd_sm80 | "
              "FA2 (SDPA flash) | cuDNN (SDPA) | FlexAttention | decode/cuDNN | row_pad 8/cuDNN | paged 16/contiguous |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r["table"] == "decode":
                print(f"| {r['Sk']} | {r['Sq']} | {fmt(r['attnjit'])} | {fmt(r.get('attnjit_split_k'))} | "
                      f"{fmt(r.get('attnjit_row_pad8'))} | {fmt(r.get('kv_contig'))} | "
                      f"{fmt(r.get('kv_page16'))} | {fmt(r.get('kv_page128'))} | {fmt(r.get('kv_rope'))} | "
                      f"{fmt(r.get('kv_rope_pairs'))} | "
                      f"{fmt(r.get('quarter_stream_k'))} | {fmt(r.get('quarter_split_k'))} | "
                      f"{fmt(r.get('attnjit_fwd'))} | "
                      f"{fmt(r['fa2'])} | {fmt(r['cudnn'])} | {fmt(r['flex'])} | {ratio(r['attnjit'], r['cudnn'])} | "
                      f"{ratio(r.get('attnjit_row_pad8'), r['cudnn'])} | "
                      f"{ratio(r.get('kv_page16'), r.get('kv_contig'))} |")
                for key in ("kv_contig", "kv_page16", "kv_page128"):
                    if r.get(key + "_error"):
                        print(f"|   {key} error: {r[key + '_error'][:150]} |")
    if any(r["table"] == "ragged" for r in rows):
        print(f"\n## Ragged prefill, {device}, B={len(RAGGED_LENGTHS)} H=16 D=128 bf16, lengths "
              f"{','.join(map(str, RAGGED_LENGTHS))}, TFLOP/s over admitted pairs\n")
        print("| preset | ragged (template) | ragged, ATTNJIT_RAGGED_SM90=0 (template) | padded, fwd_sm80 | "
              "padded, default (template) | a call per sequence, default | ragged/padded default | "
              "ragged/a call per sequence | fwd_sm80: ragged/padded |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r["table"] == "ragged":
                print(f"| {r['preset']} | {fmt(r['ragged'])} ({r.get('ragged_template') or '—'}) | "
                      f"{fmt(r.get('ragged_sm80'))} ({r.get('ragged_sm80_template') or '—'}) | "
                      f"{fmt(r['padded_sm80'])} | {fmt(r['padded'])} ({r.get('padded_template') or '—'}) | "
                      f"{fmt(r.get('per_sequence'))} | {ratio(r['ragged'], r['padded'])} | "
                      f"{ratio(r['ragged'], r.get('per_sequence'))} | {ratio(r.get('ragged_sm80'), r['padded_sm80'])} |")
                for key in ("ragged_error", "ragged_sm80_error"):
                    if r.get(key):
                        print(f"|   {key}: {r[key][:150]} | | | | | | | | |")
    for r in rows:
        if r.get("attnjit_error") or r.get("attnjit_det_error"):
            print("attnjit error:", r.get("variant", r.get("S")), r.get("attnjit_error") or r.get("attnjit_det_error"))


def write_chart(rows, device, path):
    """Grouped bars: TFLOP/s per shape (x) and system (bar), one panel per table."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    dense = [r for r in rows if r["table"] == "dense_causal"]
    if dense:
        labels = [f"S={r['S']}\nD={r['D']}{' c' if r['causal'] else ''}" for r in dense]
        systems = [("attnjit", "attnjit"), ("fa2", "FA2 (SDPA flash)"), ("cudnn", "cuDNN (SDPA)")]
        panels.append(("Forward, bf16, B*S=16384, H*D=2048 (c = causal)", labels, dense, systems))
    flex = [r for r in rows if r["table"] == "flex"]
    if flex:
        labels = [r["variant"] for r in flex]
        panels.append(("FlexAttention variants, B=4 H=16 S=4096 D=128", labels, flex,
                       [("attnjit", "attnjit"), ("flex", "FlexAttention (compiled)")]))
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 4.8 * len(panels)), squeeze=False)
    for ax, (title, labels, panel_rows, systems) in zip(axes[:, 0], panels):
        width = 0.8 / len(systems)
        for i, (key, name) in enumerate(systems):
            xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(panel_rows))]
            ys = [r.get(key) or 0.0 for r in panel_rows]
            ax.bar(xs, ys, width, label=name)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel("TFLOP/s (admitted pairs)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"attnjit vs peers, {device}, {time.strftime('%Y-%m-%d')}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"chart: {path}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attnjit", required=True)
    ap.add_argument("--out")
    ap.add_argument("--chart", help="PNG chart of TFLOP/s per shape and system (relative: in --out's folder)")
    ap.add_argument("--quick", action="store_true", help="skip S=16384, and FlexAttention in the decode table")
    ap.add_argument("--only", help="comma-separated parts to run: forward (= dense, flex, rope), dense, flex, rope, "
                    "backward, decode, ragged (default: all)")
    ap.add_argument("--seqs", help="comma-separated sequence lengths of the dense/causal grids (default: 1k, 4k, 16k; "
                    "--quick: 1k, 4k)")
    ap.add_argument("--decode-seqs", help="comma-separated cached-key counts of the decode table (default: 8192,32768; "
                    "one each on two GPUs halves its time)")
    args = ap.parse_args()
    parts = {"dense", "flex", "rope", "backward", "decode", "ragged"}
    only = set(args.only.split(",")) if args.only else parts | {"forward"}
    if "forward" in only:
        only |= {"dense", "flex", "rope"}
    if not only <= parts | {"forward"}:
        ap.error(f"--only: unknown part(s) {sorted(only - parts - {'forward'})}; allowed: forward, dense, flex, rope, "
                 "backward, decode, ragged")
    seqs = [int(x) for x in args.seqs.split(",")] if args.seqs else None
    device = torch.cuda.get_device_name()
    print(f"device: {device}; torch {torch.__version__}; date {time.strftime('%Y-%m-%d')}", flush=True)
    rows = []
    if "dense" in only:
        dense_causal_grid(args.attnjit, rows, args.quick, seqs)
    if "flex" in only:
        flex_variants(args.attnjit, rows)
    if "rope" in only:
        rope_overhead(args.attnjit, rows)
    if "backward" in only:
        backward_grid(args.attnjit, rows, args.quick)
        flex_backward(args.attnjit, rows)
    if "decode" in only:
        sks = [int(x) for x in args.decode_seqs.split(",")] if args.decode_seqs else (8192, 32768)
        decode_table(args.attnjit, rows, flex=not args.quick, sks=sks)
    if "ragged" in only:
        ragged_table(args.attnjit, rows)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": device, "torch": torch.__version__, "rows": rows}, f, indent=1)
    print_tables(rows, device)
    if args.chart:
        chart = args.chart
        if not os.path.isabs(chart) and args.out:
            chart = os.path.join(os.path.dirname(os.path.abspath(args.out)), chart)
        try:
            write_chart(rows, device, chart)
        except ImportError as e:
            print(f"no chart: {e}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
