#!/usr/bin/env python3
"""One PyTorch SDPA call (GQA allowed, causal optional), for profiling a peer's kernel
beside attnjit's with tools/gpu/profile-kernel.sh, e.g. on the GPU machine:

    tools/gpu/profile-kernel.sh 'flash' $OUT/fa2 -- python3 tools/bench/sdpa_once.py flash 8,32,8,1,32768,128
    tools/gpu/profile-kernel.sh 'cudnn|sdpa|fmha' $OUT/cudnn -- python3 tools/bench/sdpa_once.py cudnn \
        16,32,32,1024,1024,64 causal
    tools/gpu/profile-kernel.sh 'attnjit_decode' $OUT/aj -- build-gpu/attnjit bench --template decode_sm80 \\
        --preset dense --shape 8,32,8,1,32768,128 --reps 1 --warmup 0

Arguments: the backend (flash or cudnn), B,Hq,Hkv,Sq,Sk,D (bf16, K and V [B, Hkv, Sk, D]) and
optionally `causal` (top-left aligned, as SDPA's is_causal).
profile-kernel.sh profiles the first launch whose name matches its regex (Nsight Compute
replays it per metric pass, from the same cache state each time).
"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def main():
    if len(sys.argv) not in (3, 4) or sys.argv[1] not in ("flash", "cudnn") or sys.argv[3:] not in ([], ["causal"]):
        sys.exit(__doc__)
    backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[sys.argv[1]]
    b, hq, hkv, sq, sk, d = (int(x) for x in sys.argv[2].split(","))
    q = torch.randn(b, hq, sq, d, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(b, hkv, sk, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    with sdpa_kernel([backend]):
        F.scaled_dot_product_attention(q, k, v, is_causal=len(sys.argv) == 4, enable_gqa=True)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
