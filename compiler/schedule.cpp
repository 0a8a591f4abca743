// Schedules: validation, shared-memory size and defaults (see schedule.hpp).
#include "compiler/schedule.hpp"

#include <fmt/format.h>

#include "compiler/error.hpp"

namespace attnjit {

std::string element_type_name(ElementType t) { return t == ElementType::BF16 ? "bf16" : "fp16"; }

ElementType parse_element_type(const std::string& text) {
  if (text == "bf16") return ElementType::BF16;
  if (text == "fp16" || text == "f16") return ElementType::FP16;
  throw UserError(fmt::format("dtype '{}' is not supported; allowed: bf16, fp16", text));
}

bool is_supported_head_dim(int d) { return d == 32 || d == 64 || d == 96 || d == 128 || d == 256; }

int max_shared_memory_for_arch(const std::string& arch) {
  if (arch == "sm_80") return 163 * 1024;
  if (arch == "sm_86" || arch == "sm_89") return 99 * 1024;
  return 227 * 1024;
}

void Schedule::validate(int head_dim) const { validate(head_dim, 227 * 1024); }

void Schedule::validate(int head_dim, int max_shared_memory_bytes) const {
  if (!is_supported_head_dim(head_dim))
    throw UserError(fmt::format("head_dim {} is not supported; allowed: 32, 64, 96, 128, 256", head_dim));
  if (block_m != 64 && block_m != 128)
    throw UserError(fmt::format("schedule block_m {} is not allowed; use 64 or 128", block_m));
  if (block_n != 32 && block_n != 64 && block_n != 128)
    throw UserError(fmt::format("schedule block_n {} is not allowed; use 32, 64 or 128", block_n));
  if (num_warps != 4 && num_warps != 8)
    throw UserError(fmt::format("schedule num_warps {} is not allowed; use 4 or 8", num_warps));
  const int rows = block_m / num_warps;
  if (rows != 16 && rows != 32)
    throw UserError(fmt::format("schedule block_m {} with {} warps gives {} rows per warp; it must be 16 or 32",
                                block_m, num_warps, rows));
  // The per-warp register budget: Q fragments plus the S tile must fit, or the kernel spills
  // heavily (templates/fwd_sm80.cuh refuses these shapes too).
  if ((rows / 16) * (head_dim + block_n) > 384)
    throw UserError(
        fmt::format("schedule {} at head_dim {} holds too much per warp ({} rows x (head_dim + block_n) = "
                    "{}); keep (rows per warp / 16) * (head_dim + block_n) <= 384: use 8 warps or a "
                    "smaller block_n",
                    str(), head_dim, rows, (rows / 16) * (head_dim + block_n)));
  if (stages != 1 && stages != 2) throw UserError(fmt::format("schedule stages {} is not allowed; use 1 or 2", stages));
  const int kMaxSharedMemory = max_shared_memory_bytes;
  if (shared_memory_bytes(head_dim) > kMaxSharedMemory)
    throw UserError(
        fmt::format("schedule {} needs {} bytes of shared memory at head_dim {}; the limit is {}. Use smaller "
                    "tiles or one stage",
                    str(), shared_memory_bytes(head_dim), head_dim, kMaxSharedMemory));
}

int Schedule::shared_memory_bytes(int head_dim) const { return (block_m + 2 * stages * block_n) * (head_dim + 8) * 2; }

std::string Schedule::str() const {
  return fmt::format("block_m={} block_n={} warps={} stages={}", block_m, block_n, num_warps, stages);
}

Schedule Schedule::default_for(int head_dim) {
  if (head_dim <= 64) return Schedule{128, 64, 4, 2};
  if (head_dim <= 128) return Schedule{128, 64, 4, 1};
  return Schedule{64, 32, 4, 2};
}

Knobs Schedule::to_knobs() const {
  return Knobs{{"block_m", block_m}, {"block_n", block_n}, {"warps", num_warps}, {"stages", stages}};
}

Schedule Schedule::from_knobs(const Knobs& knobs) {
  return Schedule{knobs.get("block_m"), knobs.get("block_n"), knobs.get("warps"), knobs.get("stages")};
}

}  // namespace attnjit
