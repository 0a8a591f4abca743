// Diagnostic traces of a kernel's work items (templates/fwd_sm90.cuh built with AJ_TRACE 1):
// after each launch, when the environment names a file in ATTNJIT_TRACE, the records the kernel
// left in its library's aj_trace are written there as CSV (one row per consumer warpgroup and
// item; tools/gpu/trace-items.py summarizes them) and the library's records are zeroed. Launches
// then wait for the GPU, so a traced run is for reading phases, not for timing.
#pragma once

#include <string>

#include "runtime/driver/cuda_driver.hpp"

namespace attnjit::runtime {

// The file ATTNJIT_TRACE names, or "" when tracing is off (read once per process).
const std::string& kernel_trace_path();

// Writes the records of `library`'s last launch of `kernel_name` (none if it has no aj_trace, or
// left no record) to kernel_trace_path(), replacing the file, and zeroes the records. Call only
// when kernel_trace_path() is not empty.
void dump_kernel_trace(const LoadedLibrary& library, const std::string& kernel_name);

}  // namespace attnjit::runtime
