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
constexpr std::size_t kWords = 20;
constexpr const char* kHeader =
    "kernel,global_ns,start,q,k,s0,loop,pv,staged,end,wait_k,wait_turn,wait_v,wait_s,wait_pv,softmax,rescale,"
    "issue_qk,issue_pv,spare,tiles,consumer,sm,cta";
constexpr std::uint64_t kValid = 1ull << 63;  // set in a written record's last word

}  // namespace

const std::string& kernel_trace_path() {
  static const std::string path = [] {
    const char* env = std::getenv("ATTNJIT_TRACE");
    return std::string(env != nullptr ? env : "");
  }();
  return path;
}

void dump_kernel_trace(const LoadedLibrary& library, const std::string& kernel_name) {
  const auto records_at = library.global("aj_trace");
  if (!records_at) return;
  synchronize_current_context();
  std::vector<std::uint64_t> words(records_at->bytes / sizeof(std::uint64_t));
  copy_device_to_host(words.data(), records_at->pointer, words.size() * sizeof(std::uint64_t));
  std::size_t kept = 0;
  for (std::size_t r = 0; r + kWords <= words.size(); r += kWords)
    if (words[r + kWords - 1] & kValid) ++kept;
  if (kept == 0) return;
  zero_device_bytes(records_at->pointer, records_at->bytes);

  const std::string& path = kernel_trace_path();
  std::FILE* file = std::fopen(path.c_str(), "w");
  if (file == nullptr) throw UserError(fmt::format("ATTNJIT_TRACE: cannot write '{}'", path));
  fmt::print(file, "{}\n", kHeader);
  for (std::size_t r = 0; r + kWords <= words.size(); r += kWords) {
    const std::uint64_t* w = &words[r];
    const std::uint64_t where = w[kWords - 1];
    if (!(where & kValid)) continue;
    fmt::print(file, "{}", kernel_name);
    for (std::size_t i = 0; i + 1 < kWords; ++i) fmt::print(file, ",{}", w[i]);
    fmt::print(file, ",{},{},{},{}\n", where & 0xffff, (where >> 16) & 0xff, (where >> 24) & 0xff,
               (where >> 32) & 0x7fffffff);
  }
  std::fclose(file);
  fmt::print(stderr, "attnjit: {} trace records of {} written to {}\n", kept, kernel_name, path);
}

}  // namespace attnjit::runtime
