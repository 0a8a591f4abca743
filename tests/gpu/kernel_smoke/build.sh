#!/bin/bash
# Builds the kernel smoke test (no GPU needed here):
#   1. nvrtc_check: compiles every config (tu.hpp) with NVRTC, no headers, codegen's options,
#      for sm_80 (report only) and sm_90a (cubins into $OUT_DIR for the GPU run);
#   2. nvcc -cubin of one emitted TU per head dim for sm_80 and sm_90a with -Xptxas -v;
#   3. smoke: the GPU test/timing program (loads the sm_90a cubins).
# Usage: tests/gpu/kernel_smoke/build.sh [OUT_DIR]   (default: <repo>/.gpu-bin, git-ignored)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
OUT_DIR="${1:-$REPO/.gpu-bin}"
CUDA="${CUDA_HOME:-/usr/local/cuda}"
mkdir -p "$OUT_DIR/cubin"
g++ -O1 -std=c++17 -I"$CUDA/include" "$HERE/nvrtc_check.cpp" -o "$OUT_DIR/nvrtc_check" \
  -L"$CUDA/lib64" -lnvrtc -Wl,-rpath,"$CUDA/lib64"
# FAST=1: skip the sm_80 report and the nvcc cross-checks (iteration builds).
[ -z "${FAST:-}" ] && "$OUT_DIR/nvrtc_check" "$REPO" sm_80 | tee "$OUT_DIR/nvrtc_sm80.txt"
"$OUT_DIR/nvrtc_check" "$REPO" sm_90a --out "$OUT_DIR/cubin" | tee "$OUT_DIR/nvrtc_sm90a.txt"
[ -z "${FAST:-}" ] && for name in causal_bf16_d64_m128n64w4s2 causal_bf16_d128_m128n64w4s1 swa+softcap_fp16_d128_m128n64w4s1 causal_bf16_d256_m64n32w4s2; do
  "$OUT_DIR/nvrtc_check" "$REPO" sm_80 --emit "$name" > "$OUT_DIR/$name.cu"
  "$CUDA/bin/nvcc" -std=c++17 -arch=sm_80 -cubin -Xptxas -v -o "$OUT_DIR/$name.sm80.cubin" \
    "$OUT_DIR/$name.cu" 2>&1 | grep -E "Used|spill" | sed "s/^/nvcc sm_80  $name: /"
  "$CUDA/bin/nvcc" -std=c++17 -gencode=arch=compute_90a,code=sm_90a -cubin -Xptxas -v \
    -o "$OUT_DIR/$name.sm90a.cubin" "$OUT_DIR/$name.cu" 2>&1 | grep -E "Used|spill" |
    sed "s/^/nvcc sm_90a $name: /"
done
"$CUDA/bin/nvcc" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a \
  -gencode=arch=compute_80,code=sm_80 "$HERE/smoke.cu" -o "$OUT_DIR/smoke" -lcuda
echo "built $OUT_DIR/smoke; run: $OUT_DIR/smoke $OUT_DIR/cubin"
