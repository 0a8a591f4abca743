// `attnjit bench --device cpu` and `attnjit check --device cpu`: the kernel commands on the
// CPU backend (runtime/cpu) with host tensors, for machines without a GPU. --dtype takes
// f32 as well as bf16 and fp16 there.
#pragma once

#include <string>
#include <vector>

#include "runtime/tuning/benchmark.hpp"
#include "tools/cli/kernel_args.hpp"

namespace attnjit::cli {

// One line per shape, as the GPU bench prints (a table, --json or --csv), with GFLOP/s.
void run_cpu_bench(const KernelArgs& args, const std::vector<std::string>& shapes, const BenchOptions& bench, bool json,
                   bool csv);
// Random inputs against the fp64 reference (runtime/cpu/cpu_check.hpp); a UserError on failure.
void run_cpu_check(const KernelArgs& args, const ForwardProblem& problem, std::uint64_t seed);

}  // namespace attnjit::cli
