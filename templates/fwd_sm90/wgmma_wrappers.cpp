// Generated wgmma wrappers for the sm_90a forward (see fwd_sm90_template.hpp). One inline-asm
// statement per instruction shape, with every accumulator register an in-out operand.
#include <fmt/format.h>

#include <string>

#include "templates/fwd_sm90/fwd_sm90_template.hpp"

namespace attnjit {
namespace {

// "{%0, %1, ..., %{n-1}}" starting at `first`.
std::string operand_list(int first, int count) {
  std::string out = "{";
  for (int i = 0; i < count; ++i) out += fmt::format("{}%{}", i ? ", " : "", first + i);
  return out + "}";
}

std::string accumulator_constraints(int count) {
  std::string out;
  for (int i = 0; i < count; ++i) out += fmt::format("{}\"+f\"(d[{}])", i ? ", " : "", i);
  return out;
}

}  // namespace

std::string wgmma_wrappers(ElementType dtype, int block_n, int head_dim) {
  const std::string type = dtype == ElementType::BF16 ? "bf16" : "f16";
  const int qk = block_n / 2, pv = head_dim / 2;  // accumulators per thread
  std::string out = "// wgmma wrappers for this unit's shapes (templates/fwd_sm90/wgmma_wrappers.cpp)\n";
  out += fmt::format(
      "// S[64 x {n}] (+)= Q[64 x 16] K[{n} x 16]^T, both K-major in shared memory; accumulate = 0 overwrites.\n"
      "__device__ __forceinline__ void aj_wgmma_ss_qk(float (&d)[{c}], aj_u64 desc_a, aj_u64 desc_b, int "
      "accumulate) {{\n"
      "  asm volatile(\n"
      "      \"{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{acc}, 0;\\n\"\n"
      "      \"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{t}.{t} {regs}, %{da}, %{db}, p, 1, 1, 0, 0;\\n}}\\n\"\n"
      "      : {cons}\n"
      "      : \"l\"(desc_a), \"l\"(desc_b), \"r\"(accumulate));\n"
      "}}\n",
      fmt::arg("n", block_n), fmt::arg("c", qk), fmt::arg("t", type), fmt::arg("regs", operand_list(0, qk)),
      fmt::arg("da", qk), fmt::arg("db", qk + 1), fmt::arg("acc", qk + 2),
      fmt::arg("cons", accumulator_constraints(qk)));
  out += fmt::format(
      "// O[64 x {n}] += P[64 x 16] V[16 x {n}]: P in registers (the A-fragment layout), V MN-major in shared "
      "memory (transposed).\n"
      "__device__ __forceinline__ void aj_wgmma_rs_pv(float (&d)[{c}], const aj_u32 (&a)[4], aj_u64 desc_b) {{\n"
      "  asm volatile(\n"
      "      \"{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{one}, 0;\\n\"\n"
      "      \"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{t}.{t} {regs}, {{%{a0}, %{a1}, %{a2}, %{a3}}}, %{db}, p, "
      "1, 1, "
      "1;\\n}}\\n\"\n"
      "      : {cons}\n"
      "      : \"r\"(a[0]), \"r\"(a[1]), \"r\"(a[2]), \"r\"(a[3]), \"l\"(desc_b), \"r\"(1));\n"
      "}}\n",
      fmt::arg("n", head_dim), fmt::arg("c", pv), fmt::arg("t", type), fmt::arg("regs", operand_list(0, pv)),
      fmt::arg("a0", pv), fmt::arg("a1", pv + 1), fmt::arg("a2", pv + 2), fmt::arg("a3", pv + 3),
      fmt::arg("db", pv + 4), fmt::arg("one", pv + 5), fmt::arg("cons", accumulator_constraints(pv)));
  return out;
}

std::string wgmma_ss_transposed_wrapper(ElementType dtype, int n) {
  const std::string type = dtype == ElementType::BF16 ? "bf16" : "f16";
  const int c = n / 2;  // accumulators per thread
  return fmt::format(
      "// D[64 x {n}] (+)= A[64 x 16] B[16 x {n}], both MN-major in shared memory (read transposed); "
      "accumulate = 0 overwrites.\n"
      "__device__ __forceinline__ void aj_wgmma_ss_tt(float (&d)[{c}], aj_u64 desc_a, aj_u64 desc_b, int "
      "accumulate) {{\n"
      "  asm volatile(\n"
      "      \"{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{acc}, 0;\\n\"\n"
      "      \"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{t}.{t} {regs}, %{da}, %{db}, p, 1, 1, 1, 1;\\n}}\\n\"\n"
      "      : {cons}\n"
      "      : \"l\"(desc_a), \"l\"(desc_b), \"r\"(accumulate));\n"
      "}}\n",
      fmt::arg("n", n), fmt::arg("c", c), fmt::arg("t", type), fmt::arg("regs", operand_list(0, c)), fmt::arg("da", c),
      fmt::arg("db", c + 1), fmt::arg("acc", c + 2), fmt::arg("cons", accumulator_constraints(c)));
}

}  // namespace attnjit
