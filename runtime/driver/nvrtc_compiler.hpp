// NVRTC wrapper (DESIGN §2 runtime/nvrtc): turns one generated CUDA translation unit into a
// cubin for one explicit architecture, with no GPU and no toolkit headers needed. It exists
// so that every caller gets the same things from a compile: a validated option set (which is
// also part of the cache key), the full compiler log, the ptxas resource report (registers,
// static shared memory, spills, stack) parsed into numbers, and the wall time. A failed compile
// becomes a RuntimeFailure carrying the log and the path of the dumped `.cu` file.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace attnjit::runtime {

// The architectures attnjit generates code for. `sm_90a` enables wgmma/setmaxnreg (Hopper
// only); plain `sm_90` does not.
const std::vector<std::string>& supported_architectures();
bool is_supported_architecture(std::string_view arch);

// The target "auto" picks for a GPU of compute capability major.minor: sm_90a for 9.0 (the
// arch-specific target for wgmma), sm_XY for the sm_80 family, and for a GPU newer than
// sm_90 its own target when this NVRTC compiles for it (the templates' mma.sync path runs
// there). RuntimeFailure naming the GPU and the newest target otherwise; UserError below sm_80.
std::string choose_auto_arch(int major, int minor);

// What ptxas reported for one entry function (`--ptxas-options=-v`).
struct KernelResourceUsage {
  std::string kernel_name;
  int registers = 0;
  int shared_static_bytes = 0;
  int spill_store_bytes = 0;
  int spill_load_bytes = 0;
  int stack_frame_bytes = 0;
  int barriers = 0;
};

// The ptxas report of a whole translation unit: one row per entry function, in log order.
struct ResourceReport {
  std::vector<KernelResourceUsage> kernels;

  bool empty() const { return kernels.empty(); }
  // The row for `kernel_name`, or nullptr.
  const KernelResourceUsage* find(std::string_view kernel_name) const;
  // Field-wise maximum over all kernels (kernel_name is "*" when there are several).
  KernelResourceUsage worst_case() const;
  bool has_spills() const;
};

// Parses ptxas `-v` output (as NVRTC puts it in the program log). Lines it does not know are
// ignored, so a log without a report yields an empty report.
ResourceReport parse_ptxas_report(std::string_view log);

// NVRTC's own version, e.g. "13.0".
std::string nvrtc_version();

// How to compile. Chainable setters; validate() throws UserError for a bad field.
struct NvrtcCompileOptions {
  std::string arch = "sm_80";
  std::vector<std::string> extra_options;
  std::string program_name = "attnjit_kernel.cu";  // shown in log lines
  bool resource_report = true;                     // adds --ptxas-options=-v
  // Where a failing source is dumped; empty means <temp dir>/attnjit-failed-compiles.
  std::filesystem::path failure_dump_dir;

  NvrtcCompileOptions& set_arch(std::string value) {
    arch = std::move(value);
    return *this;
  }
  NvrtcCompileOptions& add_option(std::string value) {
    extra_options.push_back(std::move(value));
    return *this;
  }
  NvrtcCompileOptions& set_program_name(std::string value) {
    program_name = std::move(value);
    return *this;
  }
  NvrtcCompileOptions& set_resource_report(bool value) {
    resource_report = value;
    return *this;
  }
  NvrtcCompileOptions& set_failure_dump_dir(std::filesystem::path value) {
    failure_dump_dir = std::move(value);
    return *this;
  }

  void validate() const;
  // The exact argument list handed to nvrtcCompileProgram (part of the cache key).
  std::vector<std::string> nvrtc_arguments() const;
};

struct CompiledCubin {
  std::string cubin;  // ELF bytes
  std::string log;    // the full NVRTC/ptxas log
  ResourceReport resources;
  std::vector<std::string> options;  // nvrtc_arguments() used
  std::string arch;
  double compile_ms = 0;  // wall time of nvrtcCompileProgram + cubin retrieval
};

// Compiles `source` (a complete, self-contained translation unit). Throws UserError for bad
// options, RuntimeFailure (with log and dumped source path) when NVRTC rejects the source.
CompiledCubin compile_to_cubin(std::string_view source, const NvrtcCompileOptions& options);

}  // namespace attnjit::runtime
