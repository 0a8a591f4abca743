// The tuning database on SQLite (see tuning_db.hpp).
#include "runtime/cache/tuning_db.hpp"

#include <fmt/format.h>
#include <sqlite3.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "compiler/error.hpp"
#include "compiler/kernel_template.hpp"
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

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr const char* kFwdSm80 = "fwd_sm80";  // the template whose knobs Schedule holds
constexpr int kKnobsBlobVersion = 1;          // {"version": 1, "knobs": {...}} in the knobs column

// Schema version 1 (TuningDatabase::kSchemaVersion).
constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS tuning_records (
  variant_hash TEXT NOT NULL, arch TEXT NOT NULL, dtype TEXT NOT NULL, head_dim INTEGER NOT NULL,
  seq_q_bucket INTEGER NOT NULL, seq_k_bucket INTEGER NOT NULL, gqa INTEGER NOT NULL,
  template_name TEXT NOT NULL, knobs TEXT NOT NULL,
  variant_name TEXT NOT NULL, shape TEXT NOT NULL, ms REAL NOT NULL, tflops REAL NOT NULL,
  default_ms REAL NOT NULL, version TEXT NOT NULL, date TEXT NOT NULL,
  PRIMARY KEY (variant_hash, arch, dtype, head_dim, seq_q_bucket, seq_k_bucket, gqa, template_name))
)";

constexpr const char* kColumns =
    "variant_hash, arch, dtype, head_dim, seq_q_bucket, seq_k_bucket, gqa, template_name, knobs, "
    "variant_name, shape, ms, tflops, default_ms, version, date";

// Schema version 0: the table and columns migrate_from_version_0 reads.
constexpr const char* kVersion0Table = "tuned_schedules";
constexpr const char* kVersion0Columns =
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

// Runs `sql`; RuntimeFailure naming the path and the remedy when it fails (a file that is not
// a database has its own message: it is left alone).
void exec_or_throw(sqlite3* db, const char* sql, const fs::path& path) {
  std::string why;
  const int rc = exec_retrying(db, sql, why);
  if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT)
    throw RuntimeFailure(
        fmt::format("the tuning database {} is not a SQLite database ({}); attnjit left it untouched. Move it aside or "
                    "delete it (tuned schedules in it are lost), or set ATTNJIT_TUNING_DB to another path",
                    path.string(), why));
  if (rc != SQLITE_OK)
    throw RuntimeFailure(
        fmt::format("cannot use the tuning database {}: {} (SQLite code {}). Check its permissions, or set "
                    "ATTNJIT_TUNING_DB to another path",
                    path.string(), why, rc));
}

// BEGIN IMMEDIATE, `body`, COMMIT; ROLLBACK when `body` throws or the commit fails.
void in_transaction(sqlite3* db, const fs::path& path, const char* what, const std::function<void()>& body) {
  std::string why;
  if (exec_retrying(db, "BEGIN IMMEDIATE", why) != SQLITE_OK)
    throw RuntimeFailure(
        fmt::format("tuning database {}: cannot start a transaction to {}: {}", path.string(), what, why));
  try {
    body();
  } catch (...) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  if (exec_retrying(db, "COMMIT", why) != SQLITE_OK) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw RuntimeFailure(fmt::format("tuning database {}: cannot commit ({}): {}", path.string(), what, why));
  }
}

class Statement {
 public:
  Statement(sqlite3* db, const char* sql, const fs::path& path) : path_(path) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK)
      throw RuntimeFailure(
          fmt::format("tuning database {}: cannot prepare a query: {}", path.string(), sqlite3_errmsg(db)));
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
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
  fs::path path_;
};

// ---- the knobs blob ---------------------------------------------------------------------

Json knobs_to_json(const Knobs& knobs) {
  Json object = Json::object();
  for (const auto& [name, value] : knobs.values()) object[name] = value;
  return object;
}

bool fits_int(const Json& value) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>() <= static_cast<std::uint64_t>(INT_MAX);
  return value.is_number_integer() && value.get<std::int64_t>() >= INT_MIN && value.get<std::int64_t>() <= INT_MAX;
}

// A JSON object of knob name -> integer. std::invalid_argument naming the bad knob.
Knobs knobs_from_json(const Json& object) {
  if (!object.is_object())
    throw std::invalid_argument(fmt::format("knobs must be an object of name: integer, not {}", object.dump()));
  Knobs knobs;
  for (const auto& [name, value] : object.items()) {
    if (name.empty() || !fits_int(value))
      throw std::invalid_argument(
          fmt::format("knob '{}' is {}; a knob is a non-empty name with an int value", name, value.dump()));
    knobs.set(name, value.get<int>());
  }
  return knobs;
}

std::string knobs_blob(const Knobs& knobs) {
  const Json blob = {{"version", kKnobsBlobVersion}, {"knobs", knobs_to_json(knobs)}};
  return blob.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Knobs knobs_from_blob(const std::string& text) {
  const Json blob = Json::parse(text);
  if (!blob.is_object() || !blob.contains("version") || !blob.contains("knobs"))
    throw std::invalid_argument("it is not an object with \"version\" and \"knobs\"");
  if (blob["version"] != kKnobsBlobVersion)
    throw std::invalid_argument(
        fmt::format("its version is {}; this attnjit reads version {}", blob["version"].dump(), kKnobsBlobVersion));
  return knobs_from_json(blob["knobs"]);
}

// ---- rows -------------------------------------------------------------------------------

// Columns 0-6 of both schemas.
TuningKey read_key(Statement& s) {
  TuningKey k;
  k.variant_hash = s.text(0);
  k.arch = s.text(1);
  k.dtype = s.text(2);
  k.head_dim = s.integer(3);
  k.seq_q_bucket = s.integer(4);
  k.seq_k_bucket = s.integer(5);
  k.gqa = s.integer(6) != 0;
  return k;
}

// variant_name, shape, ms, tflops, default_ms, version, date from column `first` on.
void read_details(Statement& s, int first, TuningRecord& r) {
  r.variant_name = s.text(first);
  r.shape = s.text(first + 1);
  r.ms = s.real(first + 2);
  r.tflops = s.real(first + 3);
  r.default_ms = s.real(first + 4);
  r.version = s.text(first + 5);
  r.date = s.text(first + 6);
}

// A row of kColumns.
TuningRecord read_row(Statement& s, const fs::path& path) {
  TuningRecord r;
  r.key = read_key(s);
  r.template_name = s.text(7);
  const std::string blob = s.text(8);
  try {
    r.knobs = knobs_from_blob(blob);
  } catch (const std::exception& e) {
    throw RuntimeFailure(
        fmt::format("tuning database {}: the {} record for {} has unreadable knobs '{}' ({}). Run `attnjit tune` "
                    "for that shape again, or move the database aside",
                    path.string(), r.template_name, r.key.str(), blob, e.what()));
  }
  read_details(s, 9, r);
  return r;
}

// A row of kVersion0Columns: the schedule columns become fwd_sm80 knobs.
TuningRecord read_version_0_row(Statement& s) {
  TuningRecord r;
  r.key = read_key(s);
  r.template_name = kFwdSm80;
  r.knobs = Schedule{s.integer(7), s.integer(8), s.integer(9), s.integer(10)}.to_knobs();
  read_details(s, 11, r);
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

void insert_record(sqlite3* db, const fs::path& path, const TuningRecord& r) {
  if (r.template_name.empty())
    throw UserError(
        fmt::format("TuningRecord.template_name is empty for {}; set it to the kernel template the knobs belong to "
                    "(e.g. fwd_sm80)",
                    r.key.str()));
  const std::string sql =
      fmt::format("INSERT OR REPLACE INTO tuning_records ({}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", kColumns);
  Statement s(db, sql.c_str(), path);
  bind_key(s, r.key, 1);
  s.bind(8, r.template_name);
  s.bind(9, knobs_blob(r.knobs));
  s.bind(10, r.variant_name);
  s.bind(11, r.shape);
  s.bind(12, r.ms);
  s.bind(13, r.tflops);
  s.bind(14, r.default_ms);
  s.bind(15, r.version.empty() ? std::string(ATTNJIT_VERSION) : r.version);
  s.bind(16, r.date.empty() ? today_utc() : r.date);
  s.step();
}

// ---- schema versions ----------------------------------------------------------------------

int stored_schema_version(sqlite3* db, const fs::path& path) {
  Statement s(db, "PRAGMA user_version", path);
  return s.step() == SQLITE_ROW ? s.integer(0) : 0;
}

[[noreturn]] void refuse_newer_schema(int version, const fs::path& path) {
  throw RuntimeFailure(
      fmt::format("the tuning database {} has schema version {}; this attnjit ({}) reads versions 0 to {}. attnjit "
                  "left it untouched. Use the attnjit that wrote it, or set ATTNJIT_TUNING_DB to another path",
                  path.string(), version, ATTNJIT_VERSION, TuningDatabase::kSchemaVersion));
}

bool table_exists(sqlite3* db, const char* table, const fs::path& path) {
  Statement s(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", path);
  s.bind(1, std::string(table));
  return s.step() == SQLITE_ROW;
}

// Version 0 -> 1: every tuned_schedules row becomes a fwd_sm80 record; the old table goes.
void migrate_from_version_0(sqlite3* db, const fs::path& path) {
  std::vector<TuningRecord> records;
  {
    const std::string sql = fmt::format("SELECT {} FROM {}", kVersion0Columns, kVersion0Table);
    Statement s(db, sql.c_str(), path);
    while (s.step() == SQLITE_ROW) records.push_back(read_version_0_row(s));
  }
  for (const auto& r : records) insert_record(db, path, r);
  exec_or_throw(db, fmt::format("DROP TABLE {}", kVersion0Table).c_str(), path);
}

// Brings a file of an older schema (or a new, empty file) to kSchemaVersion in one transaction.
void upgrade_schema(sqlite3* db, const fs::path& path) {
  in_transaction(db, path, "create or migrate its tables", [&] {
    const int version = stored_schema_version(db, path);  // another process may have upgraded it meanwhile
    if (version == TuningDatabase::kSchemaVersion) return;
    if (version > TuningDatabase::kSchemaVersion) refuse_newer_schema(version, path);
    exec_or_throw(db, kSchema, path);
    if (table_exists(db, kVersion0Table, path)) {
      try {
        migrate_from_version_0(db, path);
      } catch (const std::exception& e) {
        throw RuntimeFailure(
            fmt::format("cannot migrate the tuning database {} from schema version 0 to {} ({}); the file is left as "
                        "it was. Check its permissions, or move it aside (tuned schedules in it are lost)",
                        path.string(), TuningDatabase::kSchemaVersion, e.what()));
      }
    }
    exec_or_throw(db, fmt::format("PRAGMA user_version = {}", TuningDatabase::kSchemaVersion).c_str(), path);
  });
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
  // Nothing is written before the header is read (a file that is not a database fails here)
  // and the schema version is known to be one this code understands.
  exec_or_throw(db_->db, "PRAGMA schema_version", path_);
  const int version = stored_schema_version(db_->db, path_);
  if (version > kSchemaVersion) refuse_newer_schema(version, path_);
  exec_or_throw(db_->db, "PRAGMA journal_mode=WAL", path_);
  if (version < kSchemaVersion) upgrade_schema(db_->db, path_);
}

TuningDatabase::~TuningDatabase() = default;

void TuningDatabase::put(const TuningRecord& r) { insert_record(db_->db, path_, r); }

std::optional<TuningRecord> TuningDatabase::find(const TuningKey& key, const std::string& template_name) const {
  const std::string sql = fmt::format(
      "SELECT {} FROM tuning_records WHERE variant_hash=? AND arch=? AND dtype=? AND head_dim=? AND "
      "seq_q_bucket=? AND seq_k_bucket=? AND gqa=? AND template_name=?",
      kColumns);
  Statement s(db_->db, sql.c_str(), path_);
  bind_key(s, key, 1);
  s.bind(8, template_name);
  if (s.step() != SQLITE_ROW) return std::nullopt;
  return read_row(s, path_);
}

std::vector<TuningRecord> TuningDatabase::list() const {
  const std::string sql = fmt::format(
      "SELECT {} FROM tuning_records ORDER BY variant_name, variant_hash, arch, dtype, head_dim, "
      "seq_q_bucket, seq_k_bucket, gqa, template_name",
      kColumns);
  Statement s(db_->db, sql.c_str(), path_);
  std::vector<TuningRecord> out;
  while (s.step() == SQLITE_ROW) out.push_back(read_row(s, path_));
  return out;
}

// ---- JSON export / import (nlohmann-json) ---------------------------------------------------

namespace {

constexpr int kExportVersion = 2;  // 1: the fwd_sm80 schedule in block_m, block_n, num_warps, stages

Json record_to_json(const TuningRecord& r) {
  return {{"variant_hash", r.key.variant_hash},
          {"arch", r.key.arch},
          {"dtype", r.key.dtype},
          {"head_dim", r.key.head_dim},
          {"seq_q_bucket", r.key.seq_q_bucket},
          {"seq_k_bucket", r.key.seq_k_bucket},
          {"gqa", r.key.gqa},
          {"template", r.template_name},
          {"knobs", knobs_to_json(r.knobs)},
          {"variant_name", r.variant_name},
          {"shape", r.shape},
          {"ms", r.ms},
          {"tflops", r.tflops},
          {"default_ms", r.default_ms},
          {"attnjit_version", r.version},
          {"date", r.date}};
}

// One record of an imported document: each failure is a UserError naming the record and field.
struct RecordReader {
  const Json& object;
  int index;

  const Json& field(const char* name) const {
    const auto it = object.find(name);
    if (it == object.end())
      throw UserError(fmt::format(
          "tuning JSON record {} has no field '{}'; import a file written by `attnjit tune --export`", index, name));
    return *it;
  }
  [[noreturn]] void wrong(const char* name, const char* expected) const {
    throw UserError(fmt::format("tuning JSON record {}: field '{}' is {}; it must be {}", index, name,
                                field(name).dump(-1, ' ', false, Json::error_handler_t::replace), expected));
  }
  std::string text(const char* name) const {
    if (!field(name).is_string()) wrong(name, "a string");
    return field(name).get<std::string>();
  }
  double number(const char* name) const {
    if (!field(name).is_number()) wrong(name, "a number");
    return field(name).get<double>();
  }
  int integer(const char* name) const {
    const double d = number(name);
    if (!(d >= INT_MIN && d <= INT_MAX) || d != static_cast<double>(static_cast<int>(d))) wrong(name, "an integer");
    return static_cast<int>(d);
  }
  bool boolean(const char* name) const {
    if (!field(name).is_boolean()) wrong(name, "true or false");
    return field(name).get<bool>();
  }
  Knobs knobs(const char* name) const {
    try {
      return knobs_from_json(field(name));
    } catch (const std::invalid_argument& e) {
      throw UserError(fmt::format("tuning JSON record {}: field '{}': {}", index, name, e.what()));
    }
  }
};

// Template and knobs of a record: version 2 fields, or version 1's fwd_sm80 schedule fields.
void read_template_and_knobs(const RecordReader& rr, int document_version, TuningRecord& r) {
  if (document_version >= 2) {
    r.template_name = rr.text("template");
    r.knobs = rr.knobs("knobs");
    return;
  }
  r.template_name = kFwdSm80;
  r.knobs =
      Schedule{rr.integer("block_m"), rr.integer("block_n"), rr.integer("num_warps"), rr.integer("stages")}.to_knobs();
}

TuningRecord record_from_json(const Json& item, int index, int document_version) {
  if (!item.is_object()) throw UserError(fmt::format("tuning JSON record {} is not an object", index));
  const RecordReader rr{item, index};
  TuningRecord r;
  r.key.variant_hash = rr.text("variant_hash");
  r.key.arch = rr.text("arch");
  r.key.dtype = rr.text("dtype");
  r.key.head_dim = rr.integer("head_dim");
  r.key.seq_q_bucket = rr.integer("seq_q_bucket");
  r.key.seq_k_bucket = rr.integer("seq_k_bucket");
  r.key.gqa = rr.boolean("gqa");
  read_template_and_knobs(rr, document_version, r);
  r.variant_name = rr.text("variant_name");
  r.shape = rr.text("shape");
  r.ms = rr.number("ms");
  r.tflops = rr.number("tflops");
  r.default_ms = rr.number("default_ms");
  r.version = rr.text("attnjit_version");
  r.date = rr.text("date");
  try {
    parse_element_type(r.key.dtype);
    check_tuned_knobs(r.template_name, r.knobs, r.key.head_dim, r.key.arch);
  } catch (const UserError& e) {
    throw UserError(fmt::format("tuning JSON record {} is not usable: {}", index, e.what()));
  }
  return r;
}

// Every record of a document from export_json, checked; nothing is stored here.
std::vector<TuningRecord> parse_tuning_document(const std::string& text) {
  constexpr const char* kRemedy = "import a file written by `attnjit tune --export`";
  Json doc;
  try {
    doc = Json::parse(text);
  } catch (const Json::parse_error& e) {
    throw UserError(fmt::format("tuning JSON is malformed ({}); {}", e.what(), kRemedy));
  }
  if (!doc.is_object())
    throw UserError(fmt::format("tuning JSON must be an object with a \"records\" array; {}", kRemedy));
  if (doc.value("format", Json()) != "attnjit-tuning")
    throw UserError(fmt::format("tuning JSON has no \"format\": \"attnjit-tuning\"; {}", kRemedy));
  const Json version = doc.value("version", Json());
  if (version != 1 && version != kExportVersion)
    throw UserError(
        fmt::format("tuning JSON \"version\" is {}; this attnjit reads versions 1 and {}. Export the "
                    "records again with this attnjit's `attnjit tune --export`",
                    version.dump(), kExportVersion));
  const auto records = doc.find("records");
  if (records == doc.end() || !records->is_array())
    throw UserError(fmt::format("tuning JSON has no \"records\" array; {}", kRemedy));
  std::vector<TuningRecord> parsed;
  for (const Json& item : *records)
    parsed.push_back(record_from_json(item, static_cast<int>(parsed.size()), version.get<int>()));
  return parsed;
}

}  // namespace

std::string TuningDatabase::export_json() const {
  Json records = Json::array();
  for (const auto& r : list()) records.push_back(record_to_json(r));
  const Json doc = {{"format", "attnjit-tuning"}, {"version", kExportVersion}, {"records", std::move(records)}};
  return doc.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

int TuningDatabase::import_json(const std::string& json_text) {
  const std::vector<TuningRecord> records = parse_tuning_document(json_text);
  in_transaction(db_->db, path_, "import tuning records", [&] {
    for (const auto& r : records) insert_record(db_->db, path_, r);
  });
  return static_cast<int>(records.size());
}

// ---- knob checks and the compile-time lookup -------------------------------------------------

namespace {

std::string knob_names(const std::vector<KnobSpec>& space) {
  std::string out;
  for (const auto& spec : space) out += (out.empty() ? "" : ", ") + spec.name;
  return out;
}

// A record holds every knob of its template's space and nothing else.
void check_knob_names(const KernelTemplate& t, const Knobs& knobs, int head_dim) {
  const std::vector<KnobSpec> space = t.knob_space(head_dim);
  for (const auto& spec : space)
    if (!knobs.has(spec.name))
      throw UserError(fmt::format("knobs '{}' of template '{}' lack '{}'; its knobs are: {}", knobs.str(), t.name(),
                                  spec.name, knob_names(space)));
  for (const auto& [name, value] : knobs.values()) {
    const bool known = std::any_of(space.begin(), space.end(), [&](const KnobSpec& k) { return k.name == name; });
    if (!known)
      throw UserError(fmt::format("template '{}' has no knob '{}' (= {}); its knobs are: {}", t.name(), name, value,
                                  knob_names(space)));
  }
}

}  // namespace

void check_tuned_knobs(const std::string& template_name, const Knobs& knobs, int head_dim, const std::string& arch) {
  if (template_name.empty() ||
      template_name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
    throw UserError(fmt::format(
        "template name '{}' is not allowed; use lowercase letters, digits and '_' (e.g. fwd_sm80)", template_name));
  if (knobs.empty())
    throw UserError(
        fmt::format("the knobs of template '{}' are empty; a tuned record names every knob", template_name));
  // A template this attnjit does not have (a record from a newer one) is kept but never looked up.
  const KernelTemplate* t = TemplateRegistry::instance().find(template_name);
  if (!t) return;
  check_knob_names(*t, knobs, head_dim);
  const Support ok = t->check_knobs(knobs, head_dim, max_shared_memory_for_arch(arch));
  if (!ok.supported()) throw UserError(fmt::format("template '{}': {}", template_name, ok.reason()));
}

std::optional<Knobs> find_tuned_knobs(const Variant& variant, const std::string& template_name, const std::string& arch,
                                      ElementType dtype, int head_dim, const ShapeHint& shape) {
  static std::once_flag warned;
  const char* env = std::getenv("ATTNJIT_TUNING_DB");
  if (env && std::string(env) == "off") return std::nullopt;
  try {
    const std::filesystem::path path = TuningDatabase::default_path();
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return std::nullopt;
    TuningDatabase db(path);
    const auto record = db.find(TuningKey::make(variant, arch, dtype, head_dim, shape), template_name);
    if (!record) return std::nullopt;
    check_tuned_knobs(record->template_name, record->knobs, head_dim, arch);
    return record->knobs;
  } catch (const std::exception& e) {
    std::call_once(warned, [&] {
      std::fprintf(stderr, "attnjit: warning: not using the tuning database: %s. Using the default schedule.\n",
                   e.what());
    });
    return std::nullopt;
  }
}

}  // namespace attnjit
