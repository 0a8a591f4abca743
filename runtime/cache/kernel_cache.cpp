// Kernel cache: key hashing, the on-disk entry format (cubin + JSON metadata), atomic commits
// under a directory lock, checksum verification, and the in-memory map.
// See kernel_cache.hpp for why this exists.
#include "runtime/cache/kernel_cache.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
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

// ---- JSON: a writer and a small reader, enough for the metadata file -------------------

void append_json_string(std::string& out, std::string_view text) {
  out += '"';
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += fmt::format("\\u{:04x}", static_cast<unsigned char>(c));
        else
          out += c;
    }
  }
  out += '"';
}

struct JsonValue {
  enum class Kind { Null, Bool, Number, String, Array, Object } kind = Kind::Null;
  bool boolean = false;
  std::string text;  // string content, or the number's literal text
  std::vector<JsonValue> items;
  std::vector<std::pair<std::string, JsonValue>> members;

  const JsonValue* member(std::string_view name) const {
    for (const auto& [key, value] : members)
      if (key == name) return &value;
    return nullptr;
  }
};

class JsonReader {
 public:
  explicit JsonReader(std::string_view text) : text_(text) {}

  JsonValue parse_document() {
    JsonValue value = parse_value(0);
    skip_space();
    if (at_ < text_.size()) fail("trailing characters after the JSON value");
    return value;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(fmt::format("{} at offset {}", what, at_));
  }
  void skip_space() {
    while (at_ < text_.size() && (text_[at_] == ' ' || text_[at_] == '\n' || text_[at_] == '\r' || text_[at_] == '\t'))
      ++at_;
  }
  char peek() {
    skip_space();
    if (at_ >= text_.size()) fail("unexpected end of file");
    return text_[at_];
  }
  void expect(char c) {
    if (peek() != c) fail(fmt::format("expected '{}'", c));
    ++at_;
  }
  bool take_word(std::string_view word) {
    if (text_.substr(at_, word.size()) != word) return false;
    at_ += word.size();
    return true;
  }

  JsonValue parse_value(int depth) {
    if (depth > 32) fail("nesting too deep");
    JsonValue value;
    const char c = peek();
    if (c == '{') {
      value.kind = JsonValue::Kind::Object;
      ++at_;
      if (peek() == '}') return ++at_, value;
      while (true) {
        if (peek() != '"') fail("expected a member name");
        std::string name = parse_string();
        expect(':');
        value.members.emplace_back(std::move(name), parse_value(depth + 1));
        if (peek() == ',') {
          ++at_;
          continue;
        }
        expect('}');
        return value;
      }
    }
    if (c == '[') {
      value.kind = JsonValue::Kind::Array;
      ++at_;
      if (peek() == ']') return ++at_, value;
      while (true) {
        value.items.push_back(parse_value(depth + 1));
        if (peek() == ',') {
          ++at_;
          continue;
        }
        expect(']');
        return value;
      }
    }
    if (c == '"') {
      value.kind = JsonValue::Kind::String;
      value.text = parse_string();
      return value;
    }
    if (take_word("true")) {
      value.kind = JsonValue::Kind::Bool;
      value.boolean = true;
      return value;
    }
    if (take_word("false")) {
      value.kind = JsonValue::Kind::Bool;
      return value;
    }
    if (take_word("null")) return value;
    const size_t start = at_;
    while (at_ < text_.size() && std::strchr("+-0123456789.eE", text_[at_])) ++at_;
    if (start == at_) fail("unexpected character");
    value.kind = JsonValue::Kind::Number;
    value.text = std::string(text_.substr(start, at_ - start));
    return value;
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    while (true) {
      if (at_ >= text_.size()) fail("unterminated string");
      const char c = text_[at_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_ >= text_.size()) fail("unterminated escape");
      const char e = text_[at_++];
      switch (e) {
        case '"':
        case '\\':
        case '/': out += e; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': append_utf8(out, parse_code_point()); break;
        default: fail("unknown escape");
      }
    }
  }

  unsigned parse_hex4() {
    if (at_ + 4 > text_.size()) fail("short \\u escape");
    unsigned value = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = text_[at_++];
      value <<= 4;
      if (h >= '0' && h <= '9')
        value |= h - '0';
      else if (h >= 'a' && h <= 'f')
        value |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F')
        value |= h - 'A' + 10;
      else
        fail("bad hex digit in \\u escape");
    }
    return value;
  }

  unsigned parse_code_point() {
    unsigned code = parse_hex4();
    if (code >= 0xD800 && code <= 0xDBFF && take_word("\\u")) {
      const unsigned low = parse_hex4();
      if (low < 0xDC00 || low > 0xDFFF) fail("bad surrogate pair");
      code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
    }
    return code;
  }

  static void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }

  std::string_view text_;
  size_t at_ = 0;
};

// ---- metadata <-> JSON ----------------------------------------------------------------

std::string metadata_to_json(const CacheEntryMetadata& m) {
  std::string out = "{\n";
  auto field = [&](std::string_view name) {
    out += "  ";
    append_json_string(out, name);
    out += ": ";
  };
  auto string_field = [&](std::string_view name, std::string_view value) {
    field(name);
    append_json_string(out, value);
    out += ",\n";
  };
  field("format");
  out += fmt::format("{},\n", kMetadataFormat);
  string_field("key", m.key);
  string_field("variant_text", m.variant_text);
  string_field("schedule_text", m.schedule_text);
  field("nvrtc_options");
  out += "[";
  for (size_t i = 0; i < m.nvrtc_options.size(); ++i) {
    if (i) out += ", ";
    append_json_string(out, m.nvrtc_options[i]);
  }
  out += "],\n";
  string_field("target_arch", m.target_arch);
  string_field("nvrtc_version", m.nvrtc_version);
  string_field("template_set_version", m.template_set_version);
  string_field("attnjit_version", m.attnjit_version);
  field("resources");
  out += "[";
  for (size_t i = 0; i < m.resources.kernels.size(); ++i) {
    const auto& k = m.resources.kernels[i];
    out += i ? ",\n    {" : "\n    {";
    append_json_string(out, "kernel_name");
    out += ": ";
    append_json_string(out, k.kernel_name);
    out += fmt::format(
        ", \"registers\": {}, \"shared_static_bytes\": {}, \"spill_store_bytes\": {}, "
        "\"spill_load_bytes\": {}, \"stack_frame_bytes\": {}, \"barriers\": {}}}",
        k.registers, k.shared_static_bytes, k.spill_store_bytes, k.spill_load_bytes, k.stack_frame_bytes, k.barriers);
  }
  out += m.resources.kernels.empty() ? "],\n" : "\n  ],\n";
  field("compile_ms");
  out += fmt::format("{:.3f},\n", m.compile_ms);
  field("cubin_size");
  out += fmt::format("{},\n", m.cubin_size);
  string_field("cubin_checksum", m.cubin_checksum);
  field("created_unix_seconds");
  out += fmt::format("{},\n", m.created_unix_seconds);
  std::tm utc{};
  const std::time_t created = static_cast<std::time_t>(m.created_unix_seconds);
  gmtime_r(&created, &utc);
  char when[32] = {};
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &utc);
  field("created_utc");
  append_json_string(out, when);
  out += "\n}\n";
  return out;
}

const JsonValue& required(const JsonValue& object, std::string_view name, JsonValue::Kind kind) {
  const JsonValue* value = object.member(name);
  if (!value || value->kind != kind)
    throw std::runtime_error(fmt::format("field '{}' missing or of the wrong type", name));
  return *value;
}

std::string required_string(const JsonValue& object, std::string_view name) {
  return required(object, name, JsonValue::Kind::String).text;
}

long long required_integer(const JsonValue& object, std::string_view name) {
  const std::string& text = required(object, name, JsonValue::Kind::Number).text;
  try {
    size_t used = 0;
    const long long value = std::stoll(text, &used);
    if (used == text.size()) return value;
  } catch (...) {
  }
  throw std::runtime_error(fmt::format("field '{}' is '{}', not an integer", name, text));
}

CacheEntryMetadata metadata_from_json(std::string_view text) {
  const JsonValue root = JsonReader(text).parse_document();
  if (root.kind != JsonValue::Kind::Object) throw std::runtime_error("the document is not an object");
  if (required_integer(root, "format") != kMetadataFormat) throw std::runtime_error("unknown metadata format");
  CacheEntryMetadata m;
  m.key = required_string(root, "key");
  m.variant_text = required_string(root, "variant_text");
  m.schedule_text = required_string(root, "schedule_text");
  for (const auto& option : required(root, "nvrtc_options", JsonValue::Kind::Array).items) {
    if (option.kind != JsonValue::Kind::String) throw std::runtime_error("nvrtc_options holds a non-string");
    m.nvrtc_options.push_back(option.text);
  }
  m.target_arch = required_string(root, "target_arch");
  m.nvrtc_version = required_string(root, "nvrtc_version");
  m.template_set_version = required_string(root, "template_set_version");
  m.attnjit_version = required_string(root, "attnjit_version");
  for (const auto& row : required(root, "resources", JsonValue::Kind::Array).items) {
    if (row.kind != JsonValue::Kind::Object) throw std::runtime_error("resources holds a non-object");
    KernelResourceUsage k;
    k.kernel_name = required_string(row, "kernel_name");
    k.registers = static_cast<int>(required_integer(row, "registers"));
    k.shared_static_bytes = static_cast<int>(required_integer(row, "shared_static_bytes"));
    k.spill_store_bytes = static_cast<int>(required_integer(row, "spill_store_bytes"));
    k.spill_load_bytes = static_cast<int>(required_integer(row, "spill_load_bytes"));
    k.stack_frame_bytes = static_cast<int>(required_integer(row, "stack_frame_bytes"));
    k.barriers = static_cast<int>(required_integer(row, "barriers"));
    m.resources.kernels.push_back(std::move(k));
  }
  m.compile_ms = std::strtod(required(root, "compile_ms", JsonValue::Kind::Number).text.c_str(), nullptr);
  const long long cubin_size = required_integer(root, "cubin_size");
  if (cubin_size < 0) throw std::runtime_error("cubin_size is negative");
  m.cubin_size = static_cast<std::uint64_t>(cubin_size);
  m.cubin_checksum = required_string(root, "cubin_checksum");
  m.created_unix_seconds = required_integer(root, "created_unix_seconds");
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
