// The kernel cache (DESIGN §4): compiled cubins, content-addressed, in memory and on disk, so
// that a kernel is compiled once per machine rather than once per process. The key is an
// XXH3-128 over everything that determines the cubin (generated source, NVRTC options and
// version, template-set version, target arch, attnjit version). An entry on disk is
// <key>.cubin plus <key>.json metadata; both are written to temporary files, fsync'ed and
// renamed, the metadata last (it is the commit marker), under a directory lock so concurrent
// processes that compiled the same kernel leave exactly one entry. A reader verifies the
// cubin's checksum; a corrupt entry is reported through the warning sink and treated as a miss,
// so the caller rebuilds and overwrites it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/driver/nvrtc_compiler.hpp"

namespace attnjit::runtime {

// Everything that determines the compiled bytes. Changing any field changes the key.
struct CacheKeyInputs {
  std::string generated_source;
  std::vector<std::string> nvrtc_options;
  std::string nvrtc_version;
  std::string template_set_version;
  std::string target_arch;
  std::string attnjit_version;

  // Fills nvrtc_version, template_set_version and attnjit_version from this build and the
  // options' arch and arguments: the usual way to make the inputs for a compile.
  static CacheKeyInputs for_compile(std::string generated_source, const NvrtcCompileOptions& options);
  // 32 lowercase hex characters.
  std::string key() const;
};

// The version of this library, as baked into cache keys.
std::string attnjit_version();

// Human-readable provenance stored with an entry; not part of the key (the generated source
// already determines them).
struct CacheEntryLabels {
  std::string variant_text;
  std::string schedule_text;
};

// What a build callback returns.
struct CompiledKernel {
  std::string cubin;
  ResourceReport resources;
  double compile_ms = 0;

  static CompiledKernel from(const CompiledCubin& compiled) {
    return {compiled.cubin, compiled.resources, compiled.compile_ms};
  }
};

// The <key>.json content.
struct CacheEntryMetadata {
  std::string key;
  std::string variant_text;
  std::string schedule_text;
  std::vector<std::string> nvrtc_options;
  std::string target_arch;
  std::string nvrtc_version;
  std::string template_set_version;
  std::string attnjit_version;
  ResourceReport resources;
  double compile_ms = 0;
  std::uint64_t cubin_size = 0;
  std::string cubin_checksum;  // XXH3-128 hex of the cubin bytes
  std::int64_t created_unix_seconds = 0;
};

enum class CacheSource { MemoryHit, DiskHit, Compiled };
const char* to_string(CacheSource source);

struct CacheLookupResult {
  std::shared_ptr<const std::string> cubin;
  std::shared_ptr<const CacheEntryMetadata> metadata;
  CacheSource source = CacheSource::Compiled;
};

struct CacheListing {
  std::string key;
  std::uint64_t bytes = 0;                             // cubin + metadata on disk
  std::shared_ptr<const CacheEntryMetadata> metadata;  // null when unreadable
};

struct CacheStats {
  std::size_t entries = 0;
  std::uint64_t bytes = 0;
  std::size_t memory_entries = 0;
};

enum class EntryHealth { Ok, Corrupt };
struct CacheEntryCheck {
  std::string key;
  EntryHealth health = EntryHealth::Ok;
  std::string problem;  // why it is corrupt; empty when Ok
};

// $ATTNJIT_CACHE_DIR, else $XDG_CACHE_HOME/attnjit, else $HOME/.cache/attnjit.
std::filesystem::path default_cache_directory();

using CacheWarningSink = std::function<void(const std::string& warning)>;

struct KernelCacheOptions {
  std::filesystem::path directory = default_cache_directory();
  bool use_disk = true;
  // Receives corrupt-entry and write-failure warnings; defaults to "attnjit: warning: ..." on stderr.
  CacheWarningSink warning_sink;

  KernelCacheOptions& set_directory(std::filesystem::path value) {
    directory = std::move(value);
    return *this;
  }
  KernelCacheOptions& set_use_disk(bool value) {
    use_disk = value;
    return *this;
  }
  KernelCacheOptions& set_warning_sink(CacheWarningSink value) {
    warning_sink = std::move(value);
    return *this;
  }
  void validate() const;
};

class KernelCache {
 public:
  explicit KernelCache(KernelCacheOptions options = {});

  // Returns the cubin for `inputs`: from memory, else from a verified disk entry, else by
  // calling `build` and storing its result. `build` may throw; nothing is stored then.
  CacheLookupResult get_or_compile(const CacheKeyInputs& inputs, const std::function<CompiledKernel()>& build,
                                   const CacheEntryLabels& labels = {});

  std::vector<CacheListing> list() const;
  CacheStats stats() const;
  // Removes every entry (and leftover temporary files) from disk and memory; returns the
  // number of entries removed.
  std::size_t clear();
  // Checks every entry on disk (metadata parses, cubin present, size and checksum match).
  std::vector<CacheEntryCheck> verify() const;
  // Forgets the in-memory entries only (the next lookup reads the disk).
  void drop_memory_entries();

  const std::filesystem::path& directory() const { return options_.directory; }

 private:
  void warn(const std::string& message) const;
  // Writes the entry (or adopts an equal entry another process committed first) and returns it.
  CacheLookupResult store_on_disk(CacheLookupResult compiled) const;

  KernelCacheOptions options_;
  mutable std::mutex memory_mutex_;
  std::unordered_map<std::string, CacheLookupResult> memory_;
};

}  // namespace attnjit::runtime
