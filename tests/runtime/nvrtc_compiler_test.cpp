// Tests for runtime/nvrtc_compiler: NVRTC needs no GPU, so these run on every machine.
#include "runtime/driver/nvrtc_compiler.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "compiler/error.hpp"

namespace attnjit::runtime {
namespace {

constexpr const char* kTinyKernel = R"(
extern "C" __global__ void scale_rows(float* data, int n, float factor) {
  __shared__ float staged[128];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  staged[threadIdx.x] = i < n ? data[i] : 0.0f;
  __syncthreads();
  if (i < n) data[i] = staged[threadIdx.x] * factor;
}
)";

bool starts_with_elf_magic(const std::string& bytes) {
  return bytes.size() > 4 && bytes.compare(0, 4,
                                           "\x7f"
                                           "ELF") == 0;
}

TEST(NvrtcCompiler, CompilesForAmpereAndHopper) {
  for (const char* arch : {"sm_80", "sm_90a"}) {
    SCOPED_TRACE(arch);
    const auto compiled = compile_to_cubin(kTinyKernel, NvrtcCompileOptions{}.set_arch(arch));
    EXPECT_TRUE(starts_with_elf_magic(compiled.cubin));
    EXPECT_EQ(compiled.arch, arch);
    ASSERT_EQ(compiled.resources.kernels.size(), 1u) << compiled.log;
    const auto* usage = compiled.resources.find("scale_rows");
    ASSERT_NE(usage, nullptr);
    EXPECT_GT(usage->registers, 0);
    EXPECT_EQ(usage->shared_static_bytes, 128 * 4);
    EXPECT_FALSE(compiled.resources.has_spills());
    EXPECT_GT(compiled.compile_ms, 0.0);
  }
}

TEST(NvrtcCompiler, ArgumentsCarryArchAndExtras) {
  const auto args = NvrtcCompileOptions{}.set_arch("sm_90a").add_option("-lineinfo").nvrtc_arguments();
  const std::vector<std::string> expected = {"-std=c++17", "--gpu-architecture=sm_90a", "-default-device",
                                             "--ptxas-options=-v", "-lineinfo"};
  EXPECT_EQ(args, expected);
}

TEST(NvrtcCompiler, SyntaxErrorReportsLogAndDumpedSource) {
  const auto dump_dir = std::filesystem::temp_directory_path() / "attnjit-nvrtc-test-dumps";
  std::filesystem::remove_all(dump_dir);
  const std::string broken = "extern \"C\" __global__ void broken(float* x) { x[0] = ; }\n";
  try {
    compile_to_cubin(broken, NvrtcCompileOptions{}.set_program_name("broken.cu").set_failure_dump_dir(dump_dir));
    FAIL() << "expected RuntimeFailure";
  } catch (const RuntimeFailure& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("broken.cu(1)"), std::string::npos) << message;  // the log line
    EXPECT_NE(message.find("expected an expression"), std::string::npos) << message;
    EXPECT_NE(message.find(dump_dir.string()), std::string::npos) << message;
    // The dumped file holds the source exactly.
    const auto at = message.find(dump_dir.string());
    const auto path = message.substr(at, message.find(".cu", at) + 3 - at);
    std::ifstream in(path);
    std::string dumped((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(dumped, broken) << path;
  }
  std::filesystem::remove_all(dump_dir);
}

TEST(NvrtcCompiler, UnknownArchIsAUserErrorNamingTheAllowedSet) {
  try {
    compile_to_cubin(kTinyKernel, NvrtcCompileOptions{}.set_arch("sm_75"));
    FAIL() << "expected UserError";
  } catch (const UserError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("sm_75"), std::string::npos);
    EXPECT_NE(message.find("sm_80, sm_86, sm_89, sm_90, sm_90a"), std::string::npos) << message;
  }
  EXPECT_THROW(NvrtcCompileOptions{}.add_option("--gpu-architecture=sm_86").validate(), UserError);
  EXPECT_THROW(NvrtcCompileOptions{}.add_option("lineinfo").validate(), UserError);
}

TEST(NvrtcCompiler, ParsesPtxasReportWithDeviceFunctionsAndSpills) {
  const std::string log =
      "ptxas info    : 0 bytes gmem\n"
      "ptxas info    : Function properties for helper\n"
      "ptxas         .     48 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads\n"
      "ptxas info    : Compiling entry function 'attn_fwd' for 'sm_90a'\n"
      "ptxas info    : Function properties for attn_fwd\n"
      "ptxas         .     16 bytes stack frame, 12 bytes spill stores, 20 bytes spill loads\n"
      "ptxas info    : Used 168 registers, used 2 barriers, 49152 bytes smem\n"
      "ptxas info    : Compiling entry function 'merge' for 'sm_90a'\n"
      "ptxas info    : Function properties for merge\n"
      "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
      "ptxas info    : Used 32 registers, 364 bytes cmem[0]\n";
  const auto report = parse_ptxas_report(log);
  ASSERT_EQ(report.kernels.size(), 2u);
  const auto& fwd = report.kernels[0];
  EXPECT_EQ(fwd.kernel_name, "attn_fwd");
  EXPECT_EQ(fwd.registers, 168);
  EXPECT_EQ(fwd.barriers, 2);
  EXPECT_EQ(fwd.shared_static_bytes, 49152);
  EXPECT_EQ(fwd.stack_frame_bytes, 16);
  EXPECT_EQ(fwd.spill_store_bytes, 12);
  EXPECT_EQ(fwd.spill_load_bytes, 20);
  EXPECT_EQ(report.kernels[1].registers, 32);
  EXPECT_EQ(report.kernels[1].shared_static_bytes, 0);
  EXPECT_TRUE(report.has_spills());
  EXPECT_EQ(report.worst_case().registers, 168);
  EXPECT_TRUE(parse_ptxas_report("no report here").empty());
}

TEST(NvrtcCompiler, ReportsItsVersion) {
  const auto version = nvrtc_version();
  EXPECT_NE(version, "unknown");
  EXPECT_NE(version.find('.'), std::string::npos);
}

}  // namespace
}  // namespace attnjit::runtime
