// `attnjit cache ls | stats | clear | verify`: inspect and maintain the kernel cache
// (runtime/kernel_cache) from a shell. `verify` exits non-zero and names every corrupt entry,
// so it can guard a shared or long-lived cache directory in scripts.
#include <fmt/format.h>

#include <ctime>
#include <filesystem>
#include <memory>
#include <string>

#include "compiler/error.hpp"
#include "runtime/cache/kernel_cache.hpp"
#include "tools/cli/commands.hpp"

namespace attnjit::cli {
namespace {

using runtime::KernelCache;
using runtime::KernelCacheOptions;

// The cache at --dir, or at the default location ($ATTNJIT_CACHE_DIR, ...).
KernelCache open_cache(const std::string& dir) {
  KernelCacheOptions options;
  if (!dir.empty()) options.set_directory(std::filesystem::absolute(dir));
  return KernelCache(std::move(options));
}

std::string one_line(std::string text, size_t width) {
  for (auto& c : text)
    if (c == '\n' || c == '\t') c = ' ';
  if (text.size() > width) text = text.substr(0, width - 3) + "...";
  return text;
}

std::string utc_time(std::int64_t unix_seconds) {
  const std::time_t when = static_cast<std::time_t>(unix_seconds);
  std::tm utc{};
  gmtime_r(&when, &utc);
  char text[32] = {};
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M", &utc);
  return text;
}

void print_listing(const KernelCache& cache) {
  const auto entries = cache.list();
  if (entries.empty()) {
    fmt::print("no entries in {}\n", cache.directory().string());
    return;
  }
  fmt::print("{:<32}  {:<7} {:>9} {:>5} {:>6} {:<16}  {}\n", "key", "arch", "bytes", "regs", "spills", "created (UTC)",
             "variant");
  for (const auto& entry : entries) {
    if (!entry.metadata) {
      fmt::print("{:<32}  (metadata unreadable; run `attnjit cache verify`)\n", entry.key);
      continue;
    }
    const auto& m = *entry.metadata;
    const auto worst = m.resources.worst_case();
    fmt::print("{:<32}  {:<7} {:>9} {:>5} {:>6} {:<16}  {}\n", entry.key, m.target_arch, entry.bytes, worst.registers,
               worst.spill_store_bytes + worst.spill_load_bytes, utc_time(m.created_unix_seconds),
               one_line(m.variant_text.empty() ? "-" : m.variant_text, 60));
  }
}

void print_stats(const KernelCache& cache) {
  const auto stats = cache.stats();
  fmt::print("directory: {}\nentries:   {}\nbytes:     {}\n", cache.directory().string(), stats.entries, stats.bytes);
}

void run_verify(const KernelCache& cache) {
  const auto checks = cache.verify();
  std::string corrupt;
  for (const auto& check : checks) {
    if (check.health == runtime::EntryHealth::Ok) {
      fmt::print("OK       {}\n", check.key);
    } else {
      fmt::print("CORRUPT  {}  {}\n", check.key, check.problem);
      corrupt += (corrupt.empty() ? "" : ", ") + check.key;
    }
  }
  fmt::print("{} entries checked in {}\n", checks.size(), cache.directory().string());
  if (!corrupt.empty()) {
    throw RuntimeFailure(
        fmt::format("corrupt kernel cache entries: {}; they are rebuilt automatically on next use, or remove "
                    "them all with `attnjit cache clear`",
                    corrupt));
  }
}

}  // namespace

void register_cache_commands(CLI::App& app) {
  auto* cache = app.add_subcommand("cache", "Inspect and maintain the compiled-kernel cache");
  cache->require_subcommand(1);
  auto dir = std::make_shared<std::string>();
  auto add_with_dir = [&](const char* name, const char* description) {
    auto* command = cache->add_subcommand(name, description);
    command->add_option("--dir", *dir,
                        "Cache directory (default: $ATTNJIT_CACHE_DIR, else $XDG_CACHE_HOME/attnjit, else "
                        "~/.cache/attnjit)");
    return command;
  };

  add_with_dir("ls", "List entries: key, arch, size, registers, spills, created, variant")->callback([dir] {
    print_listing(open_cache(*dir));
  });
  add_with_dir("stats", "Print the directory, entry count and bytes on disk")->callback([dir] {
    print_stats(open_cache(*dir));
  });
  add_with_dir("clear", "Remove every entry (other files in the directory are left alone)")->callback([dir] {
    auto opened = open_cache(*dir);
    const auto removed = opened.clear();
    fmt::print("removed {} entries from {}\n", removed, opened.directory().string());
  });
  add_with_dir("verify", "Check every entry's checksum; exit non-zero naming corrupt entries")->callback([dir] {
    run_verify(open_cache(*dir));
  });
}

}  // namespace attnjit::cli
