// The tuning database on SQLite (see tuning_db.hpp).
#include "runtime/cache/tuning_db.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <thread>
#include <variant>

#include "compiler/error.hpp"
#include "runtime/cache/kernel_cache.hpp"

#ifndef ATTNJIT_VERSION
#define ATTNJIT_VERSION "unknown"
#endif

namespace attnjit {

// ---- keys ---------------------------------------------------------------------------

int TuningKey::bucket_of(int seq) {
  int b = 1;
  while (b < seq && b < (1 << 30)) b <<= 1;
  return b;
}

TuningKey TuningKey::make(const Variant& variant, const std::string& arch, ElementType dtype, int head_dim,
                          const ShapeHint& shape) {
  TuningKey k;
  k.variant_hash = variant.hash().hex();
  k.arch = arch;
  k.dtype = element_type_name(dtype);
  k.head_dim = head_dim;
  k.seq_q_bucket = bucket_of(shape.seq_q);
  k.seq_k_bucket = bucket_of(shape.seq_k);
  k.gqa = shape.heads_q != shape.heads_kv;
  return k;
}

std::string TuningKey::str() const {
  return fmt::format("{} {} D={} Sq<={} Sk<={} {} variant {}", arch, dtype, head_dim, seq_q_bucket, seq_k_bucket,
                     gqa ? "gqa" : "mha", variant_hash.substr(0, 12));
}

// ---- SQLite ---------------------------------------------------------------------------

namespace {

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS tuned_schedules (
  variant_hash TEXT NOT NULL, arch TEXT NOT NULL, dtype TEXT NOT NULL, head_dim INTEGER NOT NULL,
  seq_q_bucket INTEGER NOT NULL, seq_k_bucket INTEGER NOT NULL, gqa INTEGER NOT NULL,
  block_m INTEGER NOT NULL, block_n INTEGER NOT NULL, num_warps INTEGER NOT NULL, stages INTEGER NOT NULL,
  variant_name TEXT NOT NULL, shape TEXT NOT NULL, ms REAL NOT NULL, tflops REAL NOT NULL,
  default_ms REAL NOT NULL, version TEXT NOT NULL, date TEXT NOT NULL,
  PRIMARY KEY (variant_hash, arch, dtype, head_dim, seq_q_bucket, seq_k_bucket, gqa))
)";

constexpr const char* kColumns =
    "variant_hash, arch, dtype, head_dim, seq_q_bucket, seq_k_bucket, gqa, block_m, block_n, num_warps, stages, "
    "variant_name, shape, ms, tflops, default_ms, version, date";

std::string today_utc() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

// SQLite answers SQLITE_BUSY without waiting for the busy handler where waiting could
// deadlock (two connections upgrading read locks, e.g. while a new file gets its schema
// and WAL mode); such calls are retried here for up to 30 s.
constexpr auto kBusyDeadline = std::chrono::seconds(30);

bool is_busy(int rc) { return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED; }

void busy_pause(int attempt) {
  std::this_thread::sleep_for(std::chrono::milliseconds(1 + (attempt % 20) * (1 + ::getpid() % 3)));
}

int exec_retrying(sqlite3* db, const char* sql, std::string& error) {
  const auto deadline = std::chrono::steady_clock::now() + kBusyDeadline;
  for (int attempt = 0;; ++attempt) {
    char* message = nullptr;
    const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &message);
    error = message ? message : sqlite3_errstr(rc);
    sqlite3_free(message);
    if (!is_busy(rc) || std::chrono::steady_clock::now() > deadline) return rc;
    busy_pause(attempt);
  }
}

class Statement {
 public:
  Statement(sqlite3* db, const char* sql, const std::filesystem::path& path) : path_(path) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK)
      throw RuntimeFailure(
          fmt::format("tuning database {}: cannot prepare a query: {}", path.string(), sqlite3_errmsg(db)));
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  sqlite3_stmt* get() { return stmt_; }
  void bind(int i, const std::string& s) { sqlite3_bind_text(stmt_, i, s.c_str(), -1, SQLITE_TRANSIENT); }
  void bind(int i, int v) { sqlite3_bind_int(stmt_, i, v); }
  void bind(int i, double v) { sqlite3_bind_double(stmt_, i, v); }
  // SQLITE_ROW or SQLITE_DONE; anything else throws.
  int step() {
    const auto deadline = std::chrono::steady_clock::now() + kBusyDeadline;
    int rc = sqlite3_step(stmt_);
    for (int attempt = 0; is_busy(rc) && std::chrono::steady_clock::now() < deadline; ++attempt) {
      sqlite3_reset(stmt_);
      busy_pause(attempt);
      rc = sqlite3_step(stmt_);
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
      throw RuntimeFailure(fmt::format("tuning database {}: {} (SQLite code {})", path_.string(),
                                       sqlite3_errmsg(sqlite3_db_handle(stmt_)), rc));
    return rc;
  }
  std::string text(int i) {
    const auto* p = sqlite3_column_text(stmt_, i);
    return p ? reinterpret_cast<const char*>(p) : "";
  }
  int integer(int i) { return sqlite3_column_int(stmt_, i); }
  double real(int i) { return sqlite3_column_double(stmt_, i); }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  std::filesystem::path path_;
};

TuningRecord read_row(Statement& s) {
  TuningRecord r;
  r.key.variant_hash = s.text(0);
  r.key.arch = s.text(1);
  r.key.dtype = s.text(2);
  r.key.head_dim = s.integer(3);
  r.key.seq_q_bucket = s.integer(4);
  r.key.seq_k_bucket = s.integer(5);
  r.key.gqa = s.integer(6) != 0;
  r.schedule = Schedule{s.integer(7), s.integer(8), s.integer(9), s.integer(10)};
  r.variant_name = s.text(11);
  r.shape = s.text(12);
  r.ms = s.real(13);
  r.tflops = s.real(14);
  r.default_ms = s.real(15);
  r.version = s.text(16);
  r.date = s.text(17);
  return r;
}

void bind_key(Statement& s, const TuningKey& k, int first) {
  s.bind(first, k.variant_hash);
  s.bind(first + 1, k.arch);
  s.bind(first + 2, k.dtype);
  s.bind(first + 3, k.head_dim);
  s.bind(first + 4, k.seq_q_bucket);
  s.bind(first + 5, k.seq_k_bucket);
  s.bind(first + 6, k.gqa ? 1 : 0);
}

}  // namespace

struct TuningDatabase::Connection {
  sqlite3* db = nullptr;
  ~Connection() { sqlite3_close_v2(db); }
};

std::filesystem::path TuningDatabase::default_path() {
  const char* env = std::getenv("ATTNJIT_TUNING_DB");
  if (env && *env) return env;
  return runtime::default_cache_directory() / "tuning.sqlite";
}

TuningDatabase::TuningDatabase(std::filesystem::path path) : path_(std::move(path)), db_(new Connection) {
  std::error_code ec;
  if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path(), ec);
  const int open_rc = sqlite3_open_v2(path_.c_str(), &db_->db,
                                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (open_rc != SQLITE_OK)
    throw RuntimeFailure(
        fmt::format("cannot open the tuning database {}: {}. Check that the folder exists and is writable, or set "
                    "ATTNJIT_TUNING_DB to another path",
                    path_.string(), db_->db ? sqlite3_errmsg(db_->db) : sqlite3_errstr(open_rc)));
  sqlite3_busy_timeout(db_->db, 30'000);
  // The first statement reads the header: a file that is not a database fails here, before
  // anything is written to it.
  std::string why;
  int rc = exec_retrying(db_->db, "PRAGMA schema_version", why);
  if (rc == SQLITE_OK) rc = exec_retrying(db_->db, "PRAGMA journal_mode=WAL", why);
  if (rc == SQLITE_OK) rc = exec_retrying(db_->db, kSchema, why);
  if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT)
    throw RuntimeFailure(
        fmt::format("the tuning database {} is not a SQLite database ({}); attnjit left it untouched. Move it aside or "
                    "delete it (tuned schedules in it are lost), or set ATTNJIT_TUNING_DB to another path",
                    path_.string(), why));
  if (rc != SQLITE_OK)
    throw RuntimeFailure(
        fmt::format("cannot use the tuning database {}: {} (SQLite code {}). Check its permissions, or set "
                    "ATTNJIT_TUNING_DB to another path",
                    path_.string(), why, rc));
}

TuningDatabase::~TuningDatabase() = default;

void TuningDatabase::put(const TuningRecord& r) {
  Statement s(db_->db,
              "INSERT OR REPLACE INTO tuned_schedules (variant_hash, arch, dtype, head_dim, seq_q_bucket, "
              "seq_k_bucket, gqa, block_m, block_n, num_warps, stages, variant_name, shape, ms, tflops, default_ms, "
              "version, date) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
              path_);
  bind_key(s, r.key, 1);
  s.bind(8, r.schedule.block_m);
  s.bind(9, r.schedule.block_n);
  s.bind(10, r.schedule.num_warps);
  s.bind(11, r.schedule.stages);
  s.bind(12, r.variant_name);
  s.bind(13, r.shape);
  s.bind(14, r.ms);
  s.bind(15, r.tflops);
  s.bind(16, r.default_ms);
  s.bind(17, r.version.empty() ? std::string(ATTNJIT_VERSION) : r.version);
  s.bind(18, r.date.empty() ? today_utc() : r.date);
  s.step();
}

std::optional<TuningRecord> TuningDatabase::find(const TuningKey& key) const {
  const std::string sql = fmt::format(
      "SELECT {} FROM tuned_schedules WHERE variant_hash=? AND arch=? AND dtype=? AND head_dim=? AND "
      "seq_q_bucket=? AND seq_k_bucket=? AND gqa=?",
      kColumns);
  Statement s(db_->db, sql.c_str(), path_);
  bind_key(s, key, 1);
  if (s.step() != SQLITE_ROW) return std::nullopt;
  return read_row(s);
}

std::vector<TuningRecord> TuningDatabase::list() const {
  const std::string sql = fmt::format(
      "SELECT {} FROM tuned_schedules ORDER BY variant_name, variant_hash, arch, dtype, head_dim, "
      "seq_q_bucket, seq_k_bucket, gqa",
      kColumns);
  Statement s(db_->db, sql.c_str(), path_);
  std::vector<TuningRecord> out;
  while (s.step() == SQLITE_ROW) out.push_back(read_row(s));
  return out;
}

// ---- JSON ---------------------------------------------------------------------------

namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20) {
      out += fmt::format("\\u{:04x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// A small JSON reader for the export format: objects, arrays, strings, numbers, booleans, null.
struct JsonValue;
using JsonObject = std::map<std::string, JsonValue>;
using JsonArray = std::vector<JsonValue>;
struct JsonValue {
  std::variant<std::nullptr_t, bool, double, std::string, std::shared_ptr<JsonArray>, std::shared_ptr<JsonObject>> v;
};

class JsonReader {
 public:
  explicit JsonReader(const std::string& text) : t_(text) {}
  JsonValue document() {
    JsonValue v = value();
    skip();
    if (i_ != t_.size()) fail("unexpected text after the document");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw UserError(
        fmt::format("tuning JSON is malformed at byte {}: {}; import a file written by "
                    "`attnjit tune --export`",
                    i_, what));
  }
  void skip() {
    while (i_ < t_.size() && std::isspace(static_cast<unsigned char>(t_[i_]))) ++i_;
  }
  bool eat(char c) {
    skip();
    if (i_ < t_.size() && t_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(fmt::format("expected '{}'", c));
  }
  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      if (i_ >= t_.size()) fail("unterminated string");
      const char c = t_[i_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= t_.size()) fail("unterminated escape");
      const char e = t_[i_++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          if (i_ + 4 > t_.size()) fail("short \\u escape");
          const unsigned code = static_cast<unsigned>(std::stoul(t_.substr(i_, 4), nullptr, 16));
          i_ += 4;
          if (code < 0x80) {
            out += static_cast<char>(code);
          } else if (code < 0x800) {
            out += static_cast<char>(0xC0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3F));
          } else {
            out += static_cast<char>(0xE0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
          }
          break;
        }
        default: out += e;
      }
    }
  }
  JsonValue value() {
    skip();
    if (i_ >= t_.size()) fail("unexpected end");
    const char c = t_[i_];
    if (c == '{') {
      ++i_;
      auto obj = std::make_shared<JsonObject>();
      if (!eat('}')) {
        do {
          skip();
          std::string k = string();
          expect(':');
          (*obj)[k] = value();
        } while (eat(','));
        expect('}');
      }
      return JsonValue{obj};
    }
    if (c == '[') {
      ++i_;
      auto arr = std::make_shared<JsonArray>();
      if (!eat(']')) {
        do arr->push_back(value());
        while (eat(','));
        expect(']');
      }
      return JsonValue{arr};
    }
    if (c == '"') return JsonValue{string()};
    for (const auto& [word, val] : {std::pair<const char*, JsonValue>{"true", JsonValue{true}},
                                    {"false", JsonValue{false}},
                                    {"null", JsonValue{nullptr}}})
      if (t_.compare(i_, std::strlen(word), word) == 0) {
        i_ += std::strlen(word);
        return val;
      }
    const char* begin = t_.c_str() + i_;
    char* end = nullptr;
    const double d = std::strtod(begin, &end);
    if (end == begin) fail(fmt::format("unexpected character '{}'", c));
    i_ += static_cast<std::size_t>(end - begin);
    return JsonValue{d};
  }

  const std::string& t_;
  std::size_t i_ = 0;
};

struct RecordReader {
  const JsonObject& obj;
  int index;
  const JsonValue& field(const char* name) const {
    const auto it = obj.find(name);
    if (it == obj.end())
      throw UserError(
          fmt::format("tuning JSON record {} has no field '{}'; import a file written by "
                      "`attnjit tune --export`",
                      index, name));
    return it->second;
  }
  std::string text(const char* name) const {
    const auto* s = std::get_if<std::string>(&field(name).v);
    if (!s) throw UserError(fmt::format("tuning JSON record {}: field '{}' must be a string", index, name));
    return *s;
  }
  double number(const char* name) const {
    const auto* d = std::get_if<double>(&field(name).v);
    if (!d) throw UserError(fmt::format("tuning JSON record {}: field '{}' must be a number", index, name));
    return *d;
  }
  int integer(const char* name) const {
    const double d = number(name);
    if (d != static_cast<double>(static_cast<int>(d)))
      throw UserError(fmt::format("tuning JSON record {}: field '{}' is {}, not an integer", index, name, d));
    return static_cast<int>(d);
  }
  bool boolean(const char* name) const {
    const auto* b = std::get_if<bool>(&field(name).v);
    if (!b) throw UserError(fmt::format("tuning JSON record {}: field '{}' must be true or false", index, name));
    return *b;
  }
};

}  // namespace

std::string TuningDatabase::export_json() const {
  std::string out = "{\"format\": \"attnjit-tuning\", \"version\": 1, \"records\": [";
  bool first = true;
  for (const auto& r : list()) {
    out += first ? "\n" : ",\n";
    first = false;
    out += fmt::format(
        R"(  {{"variant_hash": {}, "arch": {}, "dtype": {}, "head_dim": {}, "seq_q_bucket": {}, "seq_k_bucket": {}, )"
        R"("gqa": {}, "block_m": {}, "block_n": {}, "num_warps": {}, "stages": {}, "variant_name": {}, "shape": {}, )"
        R"("ms": {}, "tflops": {}, "default_ms": {}, "attnjit_version": {}, "date": {}}})",
        json_string(r.key.variant_hash), json_string(r.key.arch), json_string(r.key.dtype), r.key.head_dim,
        r.key.seq_q_bucket, r.key.seq_k_bucket, r.key.gqa ? "true" : "false", r.schedule.block_m, r.schedule.block_n,
        r.schedule.num_warps, r.schedule.stages, json_string(r.variant_name), json_string(r.shape), r.ms, r.tflops,
        r.default_ms, json_string(r.version), json_string(r.date));
  }
  out += "\n]}\n";
  return out;
}

int TuningDatabase::import_json(const std::string& json_text) {
  const JsonValue doc = JsonReader(json_text).document();
  const auto* root = std::get_if<std::shared_ptr<JsonObject>>(&doc.v);
  if (!root) throw UserError("tuning JSON must be an object with a \"records\" array (from `attnjit tune --export`)");
  const auto format = (*root)->find("format");
  if (format == (*root)->end() || !std::holds_alternative<std::string>(format->second.v) ||
      std::get<std::string>(format->second.v) != "attnjit-tuning")
    throw UserError(
        "tuning JSON has no \"format\": \"attnjit-tuning\"; import a file written by `attnjit tune --export`");
  const auto records = (*root)->find("records");
  const auto* array = records == (*root)->end() ? nullptr : std::get_if<std::shared_ptr<JsonArray>>(&records->second.v);
  if (!array) throw UserError("tuning JSON has no \"records\" array");
  std::vector<TuningRecord> parsed;
  int index = 0;
  for (const JsonValue& v : **array) {
    const auto* obj = std::get_if<std::shared_ptr<JsonObject>>(&v.v);
    if (!obj) throw UserError(fmt::format("tuning JSON record {} is not an object", index));
    const RecordReader rr{**obj, index};
    TuningRecord r;
    r.key.variant_hash = rr.text("variant_hash");
    r.key.arch = rr.text("arch");
    r.key.dtype = rr.text("dtype");
    r.key.head_dim = rr.integer("head_dim");
    r.key.seq_q_bucket = rr.integer("seq_q_bucket");
    r.key.seq_k_bucket = rr.integer("seq_k_bucket");
    r.key.gqa = rr.boolean("gqa");
    r.schedule = Schedule{rr.integer("block_m"), rr.integer("block_n"), rr.integer("num_warps"), rr.integer("stages")};
    r.variant_name = rr.text("variant_name");
    r.shape = rr.text("shape");
    r.ms = rr.number("ms");
    r.tflops = rr.number("tflops");
    r.default_ms = rr.number("default_ms");
    r.version = rr.text("attnjit_version");
    r.date = rr.text("date");
    try {
      parse_element_type(r.key.dtype);
      r.schedule.validate(r.key.head_dim, max_shared_memory_for_arch(r.key.arch));
    } catch (const UserError& e) {
      throw UserError(fmt::format("tuning JSON record {} is not usable: {}", index, e.what()));
    }
    parsed.push_back(std::move(r));
    ++index;
  }
  std::string why;
  if (exec_retrying(db_->db, "BEGIN IMMEDIATE", why) != SQLITE_OK)
    throw RuntimeFailure(fmt::format("tuning database {}: cannot start a transaction: {}", path_.string(), why));
  try {
    for (const auto& r : parsed) put(r);
  } catch (...) {
    sqlite3_exec(db_->db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  if (exec_retrying(db_->db, "COMMIT", why) != SQLITE_OK) {
    sqlite3_exec(db_->db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw RuntimeFailure(fmt::format("tuning database {}: cannot commit the import: {}", path_.string(), why));
  }
  return static_cast<int>(parsed.size());
}

// ---- the compile-time lookup -----------------------------------------------------------

std::optional<Schedule> find_tuned_schedule(const Variant& variant, const std::string& arch, ElementType dtype,
                                            int head_dim, const ShapeHint& shape) {
  static std::once_flag warned;
  const char* env = std::getenv("ATTNJIT_TUNING_DB");
  if (env && std::string(env) == "off") return std::nullopt;
  try {
    const std::filesystem::path path = TuningDatabase::default_path();
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return std::nullopt;
    TuningDatabase db(path);
    const auto record = db.find(TuningKey::make(variant, arch, dtype, head_dim, shape));
    if (!record) return std::nullopt;
    record->schedule.validate(head_dim, max_shared_memory_for_arch(arch));
    return record->schedule;
  } catch (const std::exception& e) {
    std::call_once(warned, [&] {
      std::fprintf(stderr, "attnjit: warning: not using the tuning database: %s. Using the default schedule.\n",
                   e.what());
    });
    return std::nullopt;
  }
}

}  // namespace attnjit
