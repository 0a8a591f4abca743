#include "runtime/driver/kernel_trace.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "compiler/error.hpp"

namespace attnjit::runtime {

namespace {

// The record's layout, as AjTraceWord in templates/fwd_sm90.cuh.
constexpr std::size_t kWords = 16;
constexpr const char* kHeader =
    "kernel,global_ns,start,q,k,s0,loop,pv,staged,end,wait_k,wait_turn,wait_v,wait_s,wait_pv,softmax,tiles,"
    "consumer,sm,cta";

}  // namespace

const std::string& kernel_trace_path() {
  static const std::string path = [] {
    const char* env = std::getenv("ATTNJIT_TRACE");
    return std::string(env != nullptr ? env : "");
  }();
  return path;
}

void dump_kernel_trace(const LoadedLibrary& library, const std::string& kernel_name) {
  const auto count_at = library.global("aj_trace_count");
  const auto records_at = library.global("aj_trace");
  if (!count_at || !records_at) return;
  synchronize_current_context();
  std::uint32_t count = 0;
  copy_device_to_host(&count, count_at->pointer, sizeof(count));
  if (count == 0) return;
  const std::size_t capacity = records_at->bytes / (kWords * sizeof(std::uint64_t));
  const std::size_t kept = std::min<std::size_t>(count, capacity);
  std::vector<std::uint64_t> words(kept * kWords);
  copy_device_to_host(words.data(), records_at->pointer, words.size() * sizeof(std::uint64_t));
  zero_device_bytes(count_at->pointer, sizeof(count));

  const std::string& path = kernel_trace_path();
  std::FILE* file = std::fopen(path.c_str(), "w");
  if (file == nullptr) throw UserError(fmt::format("ATTNJIT_TRACE: cannot write '{}'", path));
  fmt::print(file, "{}\n", kHeader);
  for (std::size_t r = 0; r < kept; ++r) {
    const std::uint64_t* w = &words[r * kWords];
    fmt::print(file, "{}", kernel_name);
    for (std::size_t i = 0; i + 1 < kWords; ++i) fmt::print(file, ",{}", w[i]);
    const std::uint64_t where = w[kWords - 1];
    fmt::print(file, ",{},{},{},{}\n", where & 0xffff, (where >> 16) & 0xff, (where >> 24) & 0xff, where >> 32);
  }
  std::fclose(file);
  fmt::print(stderr, "attnjit: {} of {} trace records of {} written to {}\n", kept, count, kernel_name, path);
}

}  // namespace attnjit::runtime
