// Kernel cache: key hashing, the on-disk entry format (cubin + JSON metadata), atomic commits
// under a directory lock, checksum verification, and the in-memory map.
// See kernel_cache.hpp for why this exists.
#include "runtime/cache/kernel_cache.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <thread>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "compiler/error.hpp"
#include "runtime/driver/templates.hpp"

#ifndef ATTNJIT_VERSION
#define ATTNJIT_VERSION "unknown"
#endif

namespace attnjit::runtime {

namespace fs = std::filesystem;

namespace {

constexpr int kMetadataFormat = 1;

std::string hex128(XXH128_hash_t hash) { return fmt::format("{:016x}{:016x}", hash.high64, hash.low64); }

std::string checksum_of(std::string_view bytes) { return hex128(XXH3_128bits(bytes.data(), bytes.size())); }

bool is_key(std::string_view text) {
  return text.size() == 32 && text.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// ---- metadata <-> JSON (nlohmann-json) ------------------------------------------------

using Json = nlohmann::json;

std::string utc_text(std::int64_t unix_seconds) {
  std::tm utc{};
  const std::time_t created = static_cast<std::time_t>(unix_seconds);
  gmtime_r(&created, &utc);
  char when[32] = {};
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return when;
}

Json resources_to_json(const ResourceReport& report) {
  Json rows = Json::array();
  for (const auto& k : report.kernels) {
    rows.push_back({{"kernel_name", k.kernel_name},
                    {"registers", k.registers},
                    {"shared_static_bytes", k.shared_static_bytes},
                    {"spill_store_bytes", k.spill_store_bytes},
                    {"spill_load_bytes", k.spill_load_bytes},
                    {"stack_frame_bytes", k.stack_frame_bytes},
                    {"barriers", k.barriers}});
  }
  return rows;
}

std::string metadata_to_json(const CacheEntryMetadata& m) {
  const Json doc = {{"format", kMetadataFormat},
                    {"key", m.key},
                    {"variant_text", m.variant_text},
                    {"schedule_text", m.schedule_text},
                    {"nvrtc_options", m.nvrtc_options},
                    {"target_arch", m.target_arch},
                    {"nvrtc_version", m.nvrtc_version},
                    {"template_set_version", m.template_set_version},
                    {"attnjit_version", m.attnjit_version},
                    {"resources", resources_to_json(m.resources)},
                    {"compile_ms", m.compile_ms},
                    {"cubin_size", m.cubin_size},
                    {"cubin_checksum", m.cubin_checksum},
                    {"created_unix_seconds", m.created_unix_seconds},
                    {"created_utc", utc_text(m.created_unix_seconds)}};
  // Bytes that are not UTF-8 (a variant's text is the user's) become U+FFFD rather than failing the write.
  return doc.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

// Field readers: each failure names the field and what was found (the reader reports the
// entry as corrupt with that text).
const Json& field(const Json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end()) throw std::runtime_error(fmt::format("field '{}' is missing", name));
  return *it;
}

[[noreturn]] void wrong_type(const char* name, const Json& value, const char* expected) {
  throw std::runtime_error(fmt::format("field '{}' is {}, expected {}", name,
                                       value.dump(-1, ' ', false, Json::error_handler_t::replace), expected));
}

std::string string_field(const Json& object, const char* name) {
  const Json& value = field(object, name);
  if (!value.is_string()) wrong_type(name, value, "a string");
  return value.get<std::string>();
}

std::int64_t integer_field(const Json& object, const char* name, std::int64_t min, std::int64_t max) {
  const Json& value = field(object, name);
  if (!value.is_number_integer()) wrong_type(name, value, "an integer");
  if (value.is_number_unsigned() ? value.get<std::uint64_t>() > static_cast<std::uint64_t>(max)
                                 : value.get<std::int64_t>() < min || value.get<std::int64_t>() > max)
    wrong_type(name, value, fmt::format("an integer in [{}, {}]", min, max).c_str());
  return value.get<std::int64_t>();
}

int int_field(const Json& object, const char* name) {
  return static_cast<int>(integer_field(object, name, INT_MIN, INT_MAX));
}

const Json& array_field(const Json& object, const char* name) {
  const Json& value = field(object, name);
  if (!value.is_array()) wrong_type(name, value, "an array");
  return value;
}

KernelResourceUsage resource_row_from_json(const Json& row) {
  if (!row.is_object()) wrong_type("resources[]", row, "an object");
  KernelResourceUsage k;
  k.kernel_name = string_field(row, "kernel_name");
  k.registers = int_field(row, "registers");
  k.shared_static_bytes = int_field(row, "shared_static_bytes");
  k.spill_store_bytes = int_field(row, "spill_store_bytes");
  k.spill_load_bytes = int_field(row, "spill_load_bytes");
  k.stack_frame_bytes = int_field(row, "stack_frame_bytes");
  k.barriers = int_field(row, "barriers");
  return k;
}

CacheEntryMetadata metadata_from_json(std::string_view text) {
  const Json root = Json::parse(text);  // json::parse_error (a std::exception) names the byte
  if (!root.is_object()) throw std::runtime_error("the document is not a JSON object");
  if (const auto format = integer_field(root, "format", INT64_MIN, INT64_MAX); format != kMetadataFormat)
    throw std::runtime_error(
        fmt::format("field 'format' is {}; this attnjit reads format {}", format, kMetadataFormat));
  CacheEntryMetadata m;
  m.key = string_field(root, "key");
  m.variant_text = string_field(root, "variant_text");
  m.schedule_text = string_field(root, "schedule_text");
  for (const Json& option : array_field(root, "nvrtc_options")) {
    if (!option.is_string()) wrong_type("nvrtc_options[]", option, "a string");
    m.nvrtc_options.push_back(option.get<std::string>());
  }
  m.target_arch = string_field(root, "target_arch");
  m.nvrtc_version = string_field(root, "nvrtc_version");
  m.template_set_version = string_field(root, "template_set_version");
  m.attnjit_version = string_field(root, "attnjit_version");
  for (const Json& row : array_field(root, "resources")) m.resources.kernels.push_back(resource_row_from_json(row));
  const Json& compile_ms = field(root, "compile_ms");
  if (!compile_ms.is_number()) wrong_type("compile_ms", compile_ms, "a number");
  m.compile_ms = compile_ms.get<double>();
  m.cubin_size = static_cast<std::uint64_t>(integer_field(root, "cubin_size", 0, INT64_MAX));
  m.cubin_checksum = string_field(root, "cubin_checksum");
  m.created_unix_seconds = integer_field(root, "created_unix_seconds", INT64_MIN, INT64_MAX);
  return m;
}

// ---- files ------------------------------------------------------------------------------

std::optional<std::string> read_file(const fs::path& path) {
  FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) return std::nullopt;
  std::string content;
  char buffer[1 << 16];
  size_t got = 0;
  while ((got = std::fread(buffer, 1, sizeof buffer, file)) > 0) content.append(buffer, got);
  const bool failed = std::ferror(file);
  std::fclose(file);
  if (failed) return std::nullopt;
  return content;
}

std::string errno_text() { return std::strerror(errno); }

// Writes `bytes` to a new file in `dir` (same file system as the final name) and fsyncs it.
fs::path write_temporary(const fs::path& dir, const std::string& key, std::string_view extension,
                         std::string_view bytes) {
  static std::atomic<unsigned> counter{0};
  const auto thread_tag = std::hash<std::thread::id>{}(std::this_thread::get_id()) & 0xffffff;
  const fs::path path = dir / fmt::format(".tmp-{}-{}-{:06x}-{}{}", key, getpid(), thread_tag, counter++, extension);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw RuntimeFailure(fmt::format("cannot create {}: {}", path.string(), errno_text()));
  FILE* file = fdopen(fd, "wb");
  if (!file) {
    ::close(fd);
    throw RuntimeFailure(fmt::format("cannot open {}: {}", path.string(), errno_text()));
  }
  const bool written = std::fwrite(bytes.data(), 1, bytes.size(), file) == bytes.size() && std::fflush(file) == 0 &&
                       ::fsync(fileno(file)) == 0;
  const std::string why = written ? "" : errno_text();
  std::fclose(file);
  if (!written) {
    ::unlink(path.c_str());
    throw RuntimeFailure(fmt::format("cannot write {}: {}", path.string(), why));
  }
  return path;
}

void fsync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// The cache directory's lock: held exclusively while committing or clearing, shared while
// verifying, so nobody sees a half-committed entry. Readers on the hot path take no lock: the
// checksum tells them everything.
class DirectoryLock {
 public:
  DirectoryLock(const fs::path& dir, int operation) {
    const fs::path path = dir / ".lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0) throw RuntimeFailure(fmt::format("cannot open the cache lock {}: {}", path.string(), errno_text()));
    while (::flock(fd_, operation) != 0) {
      if (errno != EINTR) {
        const std::string why = errno_text();
        ::close(fd_);
        throw RuntimeFailure(fmt::format("cannot lock {}: {}", path.string(), why));
      }
    }
  }
  ~DirectoryLock() { ::close(fd_); }  // closing releases the flock
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

 private:
  int fd_ = -1;
};

void create_private_directory(const fs::path& dir) {
  if (fs::is_directory(dir)) return;
  if (dir.has_parent_path() && dir.parent_path() != dir) create_private_directory(dir.parent_path());
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    throw RuntimeFailure(
        fmt::format("cannot create the kernel cache directory {}: {}; set ATTNJIT_CACHE_DIR to a writable folder",
                    dir.string(), errno_text()));
  }
}

fs::path cubin_path(const fs::path& dir, const std::string& key) { return dir / (key + ".cubin"); }
fs::path metadata_path(const fs::path& dir, const std::string& key) { return dir / (key + ".json"); }

// Reading one entry: absent (a plain miss), corrupt (with why), or good.
struct DiskEntry {
  bool present = false;
  std::string problem;
  CacheLookupResult result;
  bool good() const { return present && problem.empty(); }
};

DiskEntry read_disk_entry(const fs::path& dir, const std::string& key) {
  DiskEntry entry;
  const auto json = read_file(metadata_path(dir, key));
  if (!json) return entry;
  entry.present = true;
  CacheEntryMetadata metadata;
  try {
    metadata = metadata_from_json(*json);
  } catch (const std::exception& e) {
    entry.problem = fmt::format("metadata {} is unreadable ({})", metadata_path(dir, key).string(), e.what());
    return entry;
  }
  if (metadata.key != key) {
    entry.problem = fmt::format("metadata names key {}, expected {}", metadata.key, key);
    return entry;
  }
  auto cubin = read_file(cubin_path(dir, key));
  if (!cubin) {
    entry.problem = fmt::format("cubin {} is missing", cubin_path(dir, key).string());
  } else if (cubin->size() != metadata.cubin_size) {
    entry.problem = fmt::format("cubin is {} bytes, metadata says {} (truncated or overwritten)", cubin->size(),
                                metadata.cubin_size);
  } else if (const std::string actual = checksum_of(*cubin); actual != metadata.cubin_checksum) {
    entry.problem =
        fmt::format("cubin checksum is {}, metadata says {} (bytes changed on disk)", actual, metadata.cubin_checksum);
  }
  if (!entry.problem.empty()) return entry;
  entry.result.cubin = std::make_shared<const std::string>(std::move(*cubin));
  entry.result.metadata = std::make_shared<const CacheEntryMetadata>(std::move(metadata));
  entry.result.source = CacheSource::DiskHit;
  return entry;
}

// Keys of the committed entries (<key>.json) and of cubins with no metadata.
struct DirectoryScan {
  std::vector<std::string> committed;
  std::vector<std::string> orphan_cubins;
  std::vector<fs::path> temporaries;
};

DirectoryScan scan_directory(const fs::path& dir) {
  DirectoryScan scan;
  std::error_code ec;
  std::vector<std::string> cubins;
  for (const auto& item : fs::directory_iterator(dir, ec)) {
    const std::string name = item.path().filename().string();
    const std::string stem = item.path().stem().string();
    const std::string extension = item.path().extension().string();
    if (name.rfind(".tmp-", 0) == 0)
      scan.temporaries.push_back(item.path());
    else if (is_key(stem) && extension == ".json")
      scan.committed.push_back(stem);
    else if (is_key(stem) && extension == ".cubin")
      cubins.push_back(stem);
  }
  std::sort(scan.committed.begin(), scan.committed.end());
  for (const auto& key : cubins)
    if (!std::binary_search(scan.committed.begin(), scan.committed.end(), key)) scan.orphan_cubins.push_back(key);
  std::sort(scan.orphan_cubins.begin(), scan.orphan_cubins.end());
  return scan;
}

std::uint64_t size_or_zero(const fs::path& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  return ec ? 0 : size;
}

void hash_field(XXH3_state_t& state, std::string_view field) {
  const std::uint64_t size = field.size();
  XXH3_128bits_update(&state, &size, sizeof size);
  XXH3_128bits_update(&state, field.data(), field.size());
}

}  // namespace

// ---- keys and options ---------------------------------------------------------------------

std::string attnjit_version() { return ATTNJIT_VERSION; }

CacheKeyInputs CacheKeyInputs::for_compile(std::string generated_source, const NvrtcCompileOptions& options) {
  CacheKeyInputs inputs;
  inputs.generated_source = std::move(generated_source);
  inputs.nvrtc_options = options.nvrtc_arguments();
  inputs.nvrtc_version = runtime::nvrtc_version();
  inputs.template_set_version = runtime::template_set_version();
  inputs.target_arch = options.arch;
  inputs.attnjit_version = runtime::attnjit_version();
  return inputs;
}

std::string CacheKeyInputs::key() const {
  XXH3_state_t state;
  XXH3_128bits_reset(&state);
  hash_field(state, "attnjit-kernel-cache-key-v1");
  hash_field(state, generated_source);
  hash_field(state, std::to_string(nvrtc_options.size()));
  for (const auto& option : nvrtc_options) hash_field(state, option);
  hash_field(state, nvrtc_version);
  hash_field(state, template_set_version);
  hash_field(state, target_arch);
  hash_field(state, attnjit_version);
  return hex128(XXH3_128bits_digest(&state));
}

const char* to_string(CacheSource source) {
  switch (source) {
    case CacheSource::MemoryHit: return "memory hit";
    case CacheSource::DiskHit: return "disk hit";
    case CacheSource::Compiled: return "compiled";
  }
  return "?";
}

fs::path default_cache_directory() {
  if (const char* dir = std::getenv("ATTNJIT_CACHE_DIR"); dir && *dir) return dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return fs::path(xdg) / "attnjit";
  if (const char* home = std::getenv("HOME"); home && *home) return fs::path(home) / ".cache" / "attnjit";
  return {};
}

void KernelCacheOptions::validate() const {
  if (use_disk && directory.empty()) {
    throw UserError(
        "KernelCacheOptions.directory is empty (ATTNJIT_CACHE_DIR, XDG_CACHE_HOME and HOME are all "
        "unset); set ATTNJIT_CACHE_DIR to a writable folder, or set_use_disk(false)");
  }
  if (use_disk && !directory.is_absolute()) {
    throw UserError(
        fmt::format("KernelCacheOptions.directory is '{}', a relative path; the cache directory must be absolute "
                    "so every process finds the same entries (e.g. ATTNJIT_CACHE_DIR=$HOME/.cache/attnjit)",
                    directory.string()));
  }
}

// ---- the cache ------------------------------------------------------------------------------

KernelCache::KernelCache(KernelCacheOptions options) : options_(std::move(options)) {
  options_.validate();
  if (!options_.warning_sink) {
    options_.warning_sink = [](const std::string& warning) { fmt::print(stderr, "attnjit: warning: {}\n", warning); };
  }
}

void KernelCache::warn(const std::string& message) const { options_.warning_sink(message); }

CacheLookupResult KernelCache::get_or_compile(const CacheKeyInputs& inputs,
                                              const std::function<CompiledKernel()>& build,
                                              const CacheEntryLabels& labels) {
  const std::string key = inputs.key();
  {
    std::lock_guard<std::mutex> lock(memory_mutex_);
    if (auto found = memory_.find(key); found != memory_.end()) {
      CacheLookupResult hit = found->second;
      hit.source = CacheSource::MemoryHit;
      return hit;
    }
  }
  if (options_.use_disk) {
    DiskEntry entry = read_disk_entry(options_.directory, key);
    if (entry.good()) {
      std::lock_guard<std::mutex> lock(memory_mutex_);
      memory_.emplace(key, entry.result);
      return entry.result;
    }
    if (entry.present) warn(fmt::format("kernel cache entry {} is corrupt: {}; rebuilding it", key, entry.problem));
  }

  CompiledKernel compiled = build();
  if (compiled.cubin.empty()) {
    throw InternalError(
        fmt::format("the build callback for cache key {} returned an empty cubin; it must return "
                    "the bytes from compile_to_cubin",
                    key));
  }
  auto metadata = std::make_shared<CacheEntryMetadata>();
  metadata->key = key;
  metadata->variant_text = labels.variant_text;
  metadata->schedule_text = labels.schedule_text;
  metadata->nvrtc_options = inputs.nvrtc_options;
  metadata->target_arch = inputs.target_arch;
  metadata->nvrtc_version = inputs.nvrtc_version;
  metadata->template_set_version = inputs.template_set_version;
  metadata->attnjit_version = inputs.attnjit_version;
  metadata->resources = std::move(compiled.resources);
  metadata->compile_ms = compiled.compile_ms;
  metadata->cubin_size = compiled.cubin.size();
  metadata->cubin_checksum = checksum_of(compiled.cubin);
  metadata->created_unix_seconds = static_cast<std::int64_t>(std::time(nullptr));
  CacheLookupResult result{std::make_shared<const std::string>(std::move(compiled.cubin)), std::move(metadata),
                           CacheSource::Compiled};
  if (options_.use_disk) result = store_on_disk(std::move(result));

  std::lock_guard<std::mutex> lock(memory_mutex_);
  auto [slot, inserted] = memory_.emplace(key, result);  // another thread may have won; keep its entry
  CacheLookupResult stored = slot->second;
  stored.source = CacheSource::Compiled;
  return stored;
}

CacheLookupResult KernelCache::store_on_disk(CacheLookupResult compiled) const {
  const fs::path& dir = options_.directory;
  const std::string& key = compiled.metadata->key;
  fs::path cubin_temporary, metadata_temporary;
  try {
    create_private_directory(dir);
    cubin_temporary = write_temporary(dir, key, ".cubin", *compiled.cubin);
    metadata_temporary = write_temporary(dir, key, ".json", metadata_to_json(*compiled.metadata));
    DirectoryLock lock(dir, LOCK_EX);
    // Lost the race: another process committed a good entry while we compiled. Keep theirs.
    if (DiskEntry existing = read_disk_entry(dir, key); existing.good()) {
      ::unlink(cubin_temporary.c_str());
      ::unlink(metadata_temporary.c_str());
      existing.result.source = CacheSource::Compiled;
      return existing.result;
    }
    if (::rename(cubin_temporary.c_str(), cubin_path(dir, key).c_str()) != 0)
      throw RuntimeFailure(fmt::format("cannot rename {} into place: {}", cubin_temporary.string(), errno_text()));
    cubin_temporary.clear();
    if (::rename(metadata_temporary.c_str(), metadata_path(dir, key).c_str()) != 0)
      throw RuntimeFailure(fmt::format("cannot rename {} into place: {}", metadata_temporary.string(), errno_text()));
    metadata_temporary.clear();
    fsync_directory(dir);
  } catch (const std::exception& e) {
    if (!cubin_temporary.empty()) ::unlink(cubin_temporary.c_str());
    if (!metadata_temporary.empty()) ::unlink(metadata_temporary.c_str());
    warn(
        fmt::format("could not store kernel {} in the cache at {} ({}); the kernel is used from memory and "
                    "will be recompiled by the next process. Check that the directory is writable or set "
                    "ATTNJIT_CACHE_DIR",
                    key, dir.string(), e.what()));
  }
  return compiled;
}

std::vector<CacheListing> KernelCache::list() const {
  std::vector<CacheListing> listing;
  if (!options_.use_disk) return listing;
  for (const auto& key : scan_directory(options_.directory).committed) {
    CacheListing row;
    row.key = key;
    row.bytes =
        size_or_zero(metadata_path(options_.directory, key)) + size_or_zero(cubin_path(options_.directory, key));
    if (const auto json = read_file(metadata_path(options_.directory, key))) {
      try {
        row.metadata = std::make_shared<const CacheEntryMetadata>(metadata_from_json(*json));
      } catch (const std::exception&) {
      }
    }
    listing.push_back(std::move(row));
  }
  return listing;
}

CacheStats KernelCache::stats() const {
  CacheStats stats;
  {
    std::lock_guard<std::mutex> lock(memory_mutex_);
    stats.memory_entries = memory_.size();
  }
  if (!options_.use_disk) return stats;
  const DirectoryScan scan = scan_directory(options_.directory);
  stats.entries = scan.committed.size();
  for (const auto& key : scan.committed)
    stats.bytes +=
        size_or_zero(metadata_path(options_.directory, key)) + size_or_zero(cubin_path(options_.directory, key));
  for (const auto& key : scan.orphan_cubins) stats.bytes += size_or_zero(cubin_path(options_.directory, key));
  return stats;
}

std::size_t KernelCache::clear() {
  drop_memory_entries();
  if (!options_.use_disk || !fs::is_directory(options_.directory)) return 0;
  DirectoryLock lock(options_.directory, LOCK_EX);
  // Only files the cache itself names are removed: the directory may be shared with other data.
  // The lock file stays: removing it would let two processes lock different files.
  const DirectoryScan scan = scan_directory(options_.directory);
  std::error_code ec;
  for (const auto& key : scan.committed) {
    fs::remove(metadata_path(options_.directory, key), ec);  // metadata first: the entry is gone at once
    fs::remove(cubin_path(options_.directory, key), ec);
  }
  for (const auto& key : scan.orphan_cubins) fs::remove(cubin_path(options_.directory, key), ec);
  for (const auto& path : scan.temporaries) fs::remove(path, ec);
  return scan.committed.size();
}

std::vector<CacheEntryCheck> KernelCache::verify() const {
  std::vector<CacheEntryCheck> checks;
  if (!options_.use_disk || !fs::is_directory(options_.directory)) return checks;
  DirectoryLock lock(options_.directory, LOCK_SH);
  const DirectoryScan scan = scan_directory(options_.directory);
  for (const auto& key : scan.committed) {
    const DiskEntry entry = read_disk_entry(options_.directory, key);
    checks.push_back({key, entry.good() ? EntryHealth::Ok : EntryHealth::Corrupt, entry.problem});
  }
  for (const auto& key : scan.orphan_cubins) {
    checks.push_back({key, EntryHealth::Corrupt,
                      "cubin without metadata (a write was interrupted); it is replaced on the next compile"});
  }
  std::sort(checks.begin(), checks.end(), [](const auto& a, const auto& b) { return a.key < b.key; });
  return checks;
}

void KernelCache::drop_memory_entries() {
  std::lock_guard<std::mutex> lock(memory_mutex_);
  memory_.clear();
}

}  // namespace attnjit::runtime
