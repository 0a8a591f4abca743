// Timing of the CPU backend's forward: inputs filled once (random, captured tensors as the
// GPU benchmark makes them: floats 0.5 * N(0, 1), int ids in `documents` equal documents
// along the last axis), warm-up calls, then the median of timed calls (steady clock around
// each forward). Throughput counts only the pairs the mask admits, as the GPU benchmark does
// (runtime/tuning/benchmark.hpp): 4 * admitted pairs * D FLOPs.
#pragma once

#include <dlpack/dlpack.h>

#include "runtime/cpu/cpu_attention.hpp"
#include "runtime/tuning/benchmark.hpp"

namespace attnjit {

// `dtype`: f32, f16 or bf16. The result's template_name is "cpu", its schedule names the
// blocks, the hooks (jit / interpreted) and the GEMM backend; tflops is TFLOP/s (x1000 for
// GFLOP/s).
BenchResult benchmark_cpu_forward(const CpuAttention& attention, const ForwardProblem& problem, int head_dim,
                                  DLDataType dtype, const Bindings& scalars, const BenchOptions& bench = {});

}  // namespace attnjit
