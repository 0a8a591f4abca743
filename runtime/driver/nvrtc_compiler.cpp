// NVRTC wrapper: options, compile, log capture, ptxas report parsing, failure dumps.
// See nvrtc_compiler.hpp for why this exists.
#include "runtime/driver/nvrtc_compiler.hpp"

#include <fmt/format.h>
#include <nvrtc.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <regex>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "compiler/error.hpp"

namespace attnjit::runtime {

namespace {

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

void check_nvrtc(nvrtcResult result, const char* call) {
  if (result != NVRTC_SUCCESS) {
    throw RuntimeFailure(
        fmt::format("NVRTC call {} failed with {}; check that libnvrtc matches the CUDA toolkit attnjit was "
                    "built against (NVRTC {})",
                    call, nvrtcGetErrorString(result), nvrtc_version()));
  }
}

struct ProgramHandle {
  nvrtcProgram program = nullptr;
  ~ProgramHandle() {
    if (program) nvrtcDestroyProgram(&program);
  }
};

std::string program_log(nvrtcProgram program) {
  size_t size = 0;
  if (nvrtcGetProgramLogSize(program, &size) != NVRTC_SUCCESS || size == 0) return {};
  std::string log(size, '\0');
  if (nvrtcGetProgramLog(program, log.data()) != NVRTC_SUCCESS) return {};
  while (!log.empty() && log.back() == '\0') log.pop_back();
  return log;
}

// Writes the failing source (and its log) where a person can open it; returns the .cu path.
// Never throws: a failure to dump must not hide the compile error itself.
std::filesystem::path dump_failed_source(std::string_view source, const std::string& log,
                                         const NvrtcCompileOptions& options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path dir = options.failure_dump_dir;
  if (dir.empty()) dir = fs::temp_directory_path(ec) / "attnjit-failed-compiles";
  fs::create_directories(dir, ec);
  const auto digest = XXH3_64bits(source.data(), source.size());
  std::string stem = fs::path(options.program_name).stem().string();
  if (stem.empty()) stem = "attnjit_kernel";
  const fs::path cu_path = dir / fmt::format("{}-{}-{:016x}.cu", stem, options.arch, digest);
  {
    std::ofstream out(cu_path, std::ios::binary | std::ios::trunc);
    out.write(source.data(), static_cast<std::streamsize>(source.size()));
    if (!out) return fs::path("<could not write ") += cu_path.string() + ">";
  }
  fs::path log_path = cu_path;
  log_path.replace_extension(".log");
  std::ofstream log_out(log_path, std::ios::binary | std::ios::trunc);
  log_out << "options: " << joined(options.nvrtc_arguments()) << "\n" << log;
  return cu_path;
}

int to_int(const std::string& digits) {
  try {
    return std::stoi(digits);
  } catch (...) {
    return 0;
  }
}

}  // namespace

// The archs NVRTC itself compiles for, as numbers (80, 90, 100, ...).
std::vector<int> nvrtc_architectures() {
  int count = 0;
  if (nvrtcGetNumSupportedArchs(&count) != NVRTC_SUCCESS || count <= 0) return {};
  std::vector<int> archs(static_cast<std::size_t>(count));
  if (nvrtcGetSupportedArchs(archs.data()) != NVRTC_SUCCESS) return {};
  return archs;
}

const std::vector<std::string>& supported_architectures() {
  // sm_80 to sm_90a are tested; newer GPUs get their own target when this NVRTC has it.
  static const std::vector<std::string> archs = [] {
    std::vector<std::string> out = {"sm_80", "sm_86", "sm_89", "sm_90", "sm_90a"};
    for (int a : nvrtc_architectures())
      if (a >= 100) out.push_back(fmt::format("sm_{}", a));
    return out;
  }();
  return archs;
}

std::string choose_auto_arch(int major, int minor) {
  if (major < 8)
    throw UserError(fmt::format("this GPU has compute capability {}.{}; attnjit's kernels need sm_80 (Ampere) or newer",
                                major, minor));
  const std::string arch = major == 9 && minor == 0 ? "sm_90a" : fmt::format("sm_{}{}", major, minor);
  if (is_supported_architecture(arch)) return arch;
  throw RuntimeFailure(fmt::format(
      "this GPU is {} (compute capability {}.{}), which this NVRTC ({}) cannot compile for; the newest target it "
      "has is {}. Install a newer CUDA toolkit's NVRTC, or pass an explicit arch if the GPU runs it",
      arch, major, minor, nvrtc_version(), supported_architectures().back()));
}

bool is_supported_architecture(std::string_view arch) {
  const auto& archs = supported_architectures();
  return std::find(archs.begin(), archs.end(), arch) != archs.end();
}

const KernelResourceUsage* ResourceReport::find(std::string_view kernel_name) const {
  for (const auto& kernel : kernels)
    if (kernel.kernel_name == kernel_name) return &kernel;
  return nullptr;
}

KernelResourceUsage ResourceReport::worst_case() const {
  KernelResourceUsage worst;
  worst.kernel_name = kernels.size() == 1 ? kernels.front().kernel_name : "*";
  for (const auto& k : kernels) {
    worst.registers = std::max(worst.registers, k.registers);
    worst.shared_static_bytes = std::max(worst.shared_static_bytes, k.shared_static_bytes);
    worst.spill_store_bytes = std::max(worst.spill_store_bytes, k.spill_store_bytes);
    worst.spill_load_bytes = std::max(worst.spill_load_bytes, k.spill_load_bytes);
    worst.stack_frame_bytes = std::max(worst.stack_frame_bytes, k.stack_frame_bytes);
    worst.barriers = std::max(worst.barriers, k.barriers);
  }
  return worst;
}

bool ResourceReport::has_spills() const {
  return std::any_of(kernels.begin(), kernels.end(),
                     [](const auto& k) { return k.spill_store_bytes > 0 || k.spill_load_bytes > 0; });
}

// ptxas -v prints, per entry function:
//   ptxas info    : Compiling entry function 'k' for 'sm_80'
//   ptxas info    : Function properties for k
//   ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
//   ptxas info    : Used 9 registers, used 1 barriers, 1024 bytes smem, 364 bytes cmem[0]
// Non-inlined device functions get their own "Function properties" block; only the entry
// function's block is attributed to the entry.
ResourceReport parse_ptxas_report(std::string_view log) {
  static const std::regex entry_re(R"(Compiling entry function '([^']+)')");
  static const std::regex properties_re(R"(Function properties for (\S+))");
  static const std::regex stack_re(R"((\d+) bytes stack frame)");
  static const std::regex spill_store_re(R"((\d+) bytes spill stores)");
  static const std::regex spill_load_re(R"((\d+) bytes spill loads)");
  static const std::regex registers_re(R"(Used (\d+) registers)");
  static const std::regex barriers_re(R"(used (\d+) barriers)");
  static const std::regex smem_re(R"((\d+) bytes smem)");

  ResourceReport report;
  KernelResourceUsage* current = nullptr;
  bool properties_of_current = false;
  size_t start = 0;
  while (start < log.size()) {
    size_t end = log.find('\n', start);
    if (end == std::string_view::npos) end = log.size();
    const std::string line(log.substr(start, end - start));
    start = end + 1;
    std::smatch m;
    if (std::regex_search(line, m, entry_re)) {
      report.kernels.push_back({});
      current = &report.kernels.back();
      current->kernel_name = m[1];
      properties_of_current = false;
    } else if (std::regex_search(line, m, properties_re)) {
      properties_of_current = current && m[1] == current->kernel_name;
    } else if (current && properties_of_current && std::regex_search(line, m, stack_re)) {
      current->stack_frame_bytes = to_int(m[1]);
      if (std::regex_search(line, m, spill_store_re)) current->spill_store_bytes = to_int(m[1]);
      if (std::regex_search(line, m, spill_load_re)) current->spill_load_bytes = to_int(m[1]);
    } else if (current && std::regex_search(line, m, registers_re)) {
      current->registers = to_int(m[1]);
      if (std::regex_search(line, m, barriers_re)) current->barriers = to_int(m[1]);
      if (std::regex_search(line, m, smem_re)) current->shared_static_bytes = to_int(m[1]);
    }
  }
  return report;
}

std::string nvrtc_version() {
  int major = 0, minor = 0;
  if (nvrtcVersion(&major, &minor) != NVRTC_SUCCESS) return "unknown";
  return fmt::format("{}.{}", major, minor);
}

void NvrtcCompileOptions::validate() const {
  if (!is_supported_architecture(arch)) {
    throw UserError(
        fmt::format("NvrtcCompileOptions.arch is '{}', which attnjit does not target; allowed: {}. Pass one "
                    "of these (use 'sm_90a', not 'sm_90', for the Hopper wgmma fast path)",
                    arch, joined(supported_architectures())));
  }
  if (program_name.empty()) {
    throw UserError(
        "NvrtcCompileOptions.program_name is empty; it must be a file-like name such as "
        "'attnjit_kernel.cu' (it appears in compiler log lines)");
  }
  for (const auto& option : extra_options) {
    if (option.empty() || option.front() != '-') {
      throw UserError(
          fmt::format("NvrtcCompileOptions.extra_options contains '{}'; every option must start with '-' "
                      "(e.g. '-lineinfo', '--use_fast_math')",
                      option));
    }
    if (option.rfind("--gpu-architecture", 0) == 0 || option.rfind("-arch", 0) == 0) {
      throw UserError(
          fmt::format("NvrtcCompileOptions.extra_options contains '{}'; the architecture is set only through "
                      "NvrtcCompileOptions.arch (allowed: {})",
                      option, joined(supported_architectures())));
    }
  }
}

std::vector<std::string> NvrtcCompileOptions::nvrtc_arguments() const {
  std::vector<std::string> args = {"-std=c++17", "--gpu-architecture=" + arch, "-default-device"};
  if (resource_report) args.emplace_back("--ptxas-options=-v");
  args.insert(args.end(), extra_options.begin(), extra_options.end());
  return args;
}

CompiledCubin compile_to_cubin(std::string_view source, const NvrtcCompileOptions& options) {
  options.validate();
  const std::string source_text(source);  // NVRTC wants a NUL-terminated string
  CompiledCubin result;
  result.arch = options.arch;
  result.options = options.nvrtc_arguments();
  std::vector<const char*> argv;
  for (const auto& arg : result.options) argv.push_back(arg.c_str());

  const auto started = std::chrono::steady_clock::now();
  ProgramHandle handle;
  check_nvrtc(
      nvrtcCreateProgram(&handle.program, source_text.c_str(), options.program_name.c_str(), 0, nullptr, nullptr),
      "nvrtcCreateProgram");
  const nvrtcResult compiled = nvrtcCompileProgram(handle.program, static_cast<int>(argv.size()), argv.data());
  result.log = program_log(handle.program);
  if (compiled != NVRTC_SUCCESS) {
    const auto dumped = dump_failed_source(source, result.log, options);
    throw RuntimeFailure(
        fmt::format("NVRTC failed to compile '{}' for {} ({}); options: {}\n--- compiler log ---\n{}\n"
                    "--- end of log ---\nsource dumped to {} (log next to it); fix the generated source or "
                    "the template it came from, and report it if attnjit generated it",
                    options.program_name, options.arch, nvrtcGetErrorString(compiled), joined(result.options),
                    result.log, dumped.string()));
  }
  size_t cubin_size = 0;
  check_nvrtc(nvrtcGetCUBINSize(handle.program, &cubin_size), "nvrtcGetCUBINSize");
  result.cubin.resize(cubin_size);
  check_nvrtc(nvrtcGetCUBIN(handle.program, result.cubin.data()), "nvrtcGetCUBIN");
  result.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  if (result.cubin.empty()) {
    throw RuntimeFailure(
        fmt::format("NVRTC compiled '{}' for {} but returned an empty cubin; options: {}. Check the NVRTC "
                    "installation (NVRTC {})",
                    options.program_name, options.arch, joined(result.options), nvrtc_version()));
  }
  result.resources = parse_ptxas_report(result.log);
  return result;
}

}  // namespace attnjit::runtime
