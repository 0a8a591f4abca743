// The tuning database: keys and buckets, two concurrent writer processes, export/import,
// a corrupt file (clear error, file untouched), the compile-time lookup's fallback, and the
// schema versions: a file of schema version 0 is migrated in place, a newer one is refused.
#include "runtime/cache/tuning_db.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "compiler/error.hpp"
#include "dsl/presets.hpp"
#include "runtime/api/attention.hpp"
#include "support/scoped_env.hpp"

namespace attnjit {
namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Runs SQL on a file directly (not through TuningDatabase); fails the test on an error.
void run_sql(const std::filesystem::path& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  EXPECT_EQ(rc, SQLITE_OK) << (error ? error : "") << "\n" << sql;
  sqlite3_free(error);
  sqlite3_close(db);
}

// The first column of the first row of `query`, as text ("" when there is no row).
std::string query_text(const std::filesystem::path& path, const std::string& query) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open(path.c_str(), &db) == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, query.c_str(), -1, &stmt, nullptr) == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW)
      if (const auto* text = sqlite3_column_text(stmt, 0)) out = reinterpret_cast<const char*>(text);
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return out;
}

// Schema version 0, exactly as attnjit 0.1.0 created it (runtime/cache/tuning_db.cpp kSchema
// before the knobs blob); the code no longer creates it, so it is kept here as written.
constexpr const char* kVersion0Schema = R"(
CREATE TABLE IF NOT EXISTS tuned_schedules (
  variant_hash TEXT NOT NULL, arch TEXT NOT NULL, dtype TEXT NOT NULL, head_dim INTEGER NOT NULL,
  seq_q_bucket INTEGER NOT NULL, seq_k_bucket INTEGER NOT NULL, gqa INTEGER NOT NULL,
  block_m INTEGER NOT NULL, block_n INTEGER NOT NULL, num_warps INTEGER NOT NULL, stages INTEGER NOT NULL,
  variant_name TEXT NOT NULL, shape TEXT NOT NULL, ms REAL NOT NULL, tflops REAL NOT NULL,
  default_ms REAL NOT NULL, version TEXT NOT NULL, date TEXT NOT NULL,
  PRIMARY KEY (variant_hash, arch, dtype, head_dim, seq_q_bucket, seq_k_bucket, gqa))
)";

// attnjit 0.1.0's put(), with the values bound in place.
std::string version_0_insert(const std::string& variant_hash, int head_dim, int seq, int gqa, Schedule s,
                             const std::string& variant_name) {
  return fmt::format(
      "INSERT OR REPLACE INTO tuned_schedules (variant_hash, arch, dtype, head_dim, seq_q_bucket, "
      "seq_k_bucket, gqa, block_m, block_n, num_warps, stages, variant_name, shape, ms, tflops, default_ms, "
      "version, date) VALUES ('{}', 'sm_90a', 'bf16', {}, {}, {}, {}, {}, {}, {}, {}, '{}', 'B=4 Hq=32 Hkv=32', "
      "1.25, 300.5, 1.5, '0.1.0', '2026-11-26');",
      variant_hash, head_dim, seq, seq, gqa, s.block_m, s.block_n, s.num_warps, s.stages, variant_name);
}

TuningRecord record(const std::string& hash, int head_dim, int seq, Schedule s, double ms) {
  TuningRecord r;
  r.template_name = "fwd_sm80";
  r.key.variant_hash = hash;
  r.key.arch = "sm_90a";
  r.key.dtype = "bf16";
  r.key.head_dim = head_dim;
  r.key.seq_q_bucket = seq;
  r.key.seq_k_bucket = seq;
  r.knobs = s.to_knobs();
  r.variant_name = "test";
  r.shape = "B=1 Hq=2 Hkv=2 Sq=" + std::to_string(seq) + " Sk=" + std::to_string(seq);
  r.ms = ms;
  r.tflops = 100.0 / ms;
  r.default_ms = ms * 1.25;
  return r;
}

class TuningDbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("attnjit_tuning_db_test_" + std::to_string(::getpid()) + "_" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::filesystem::path dir_;
  ScopedEnvRestore saved_env_{"ATTNJIT_TUNING_DB"};  // the tests point it at their own files
};

TEST(TuningKey, BucketsArePowersOfTwoAndGqaIsItsOwnBucket) {
  EXPECT_EQ(TuningKey::bucket_of(1), 1);
  EXPECT_EQ(TuningKey::bucket_of(1000), 1024);
  EXPECT_EQ(TuningKey::bucket_of(1024), 1024);
  EXPECT_EQ(TuningKey::bucket_of(1025), 2048);
  const Variant causal = presets::causal();
  const TuningKey a = TuningKey::make(causal, "sm_90a", ElementType::BF16, 128, ShapeHint{4, 16, 16, 4096, 3000});
  EXPECT_EQ(a.variant_hash, causal.hash().hex());
  EXPECT_EQ(a.seq_q_bucket, 4096);
  EXPECT_EQ(a.seq_k_bucket, 4096);
  EXPECT_FALSE(a.gqa);
  EXPECT_EQ(a, TuningKey::make(causal, "sm_90a", ElementType::BF16, 128, ShapeHint{1, 8, 8, 2049, 4096}));
  EXPECT_TRUE(TuningKey::make(causal, "sm_90a", ElementType::BF16, 128, ShapeHint{4, 16, 4, 4096, 4096}).gqa);
  EXPECT_FALSE(a ==
               TuningKey::make(presets::dense(), "sm_90a", ElementType::BF16, 128, ShapeHint{4, 16, 16, 4096, 4096}));
}

TEST_F(TuningDbTest, PutFindReplaceAndLookupByBucket) {
  TuningDatabase db(dir_ / "sub" / "tuning.sqlite");  // the folder is created
  EXPECT_TRUE(db.list().empty());
  const Variant causal = presets::causal();
  TuningRecord r;
  r.key = TuningKey::make(causal, "sm_90a", ElementType::BF16, 64, ShapeHint{4, 32, 32, 4096, 4096});
  r.template_name = "fwd_sm80";
  r.knobs = Schedule{128, 128, 8, 2}.to_knobs();
  r.variant_name = "causal";
  r.ms = 1.5;
  r.default_ms = 2.0;
  db.put(r);
  const auto found =
      db.find(TuningKey::make(causal, "sm_90a", ElementType::BF16, 64, ShapeHint{1, 8, 8, 3000, 3500}), "fwd_sm80");
  ASSERT_TRUE(found);
  EXPECT_EQ(found->template_name, "fwd_sm80");
  EXPECT_EQ(found->knobs, (Knobs{{"block_m", 128}, {"block_n", 128}, {"warps", 8}, {"stages", 2}}));
  EXPECT_EQ(found->ms, 1.5);
  EXPECT_EQ(found->default_ms, 2.0);
  EXPECT_FALSE(found->version.empty());
  EXPECT_EQ(found->date.size(), 10u) << found->date;  // YYYY-MM-DD
  // Other buckets, arch, dtype, head dim, GQA, template: nothing.
  const auto find = [&](const char* arch, ElementType dtype, int dim, ShapeHint shape, const char* t = "fwd_sm80") {
    return db.find(TuningKey::make(causal, arch, dtype, dim, shape), t);
  };
  EXPECT_FALSE(find("sm_90a", ElementType::BF16, 64, ShapeHint{1, 8, 8, 5000, 5000}));
  EXPECT_FALSE(find("sm_80", ElementType::BF16, 64, ShapeHint{1, 8, 8, 4096, 4096}));
  EXPECT_FALSE(find("sm_90a", ElementType::FP16, 64, ShapeHint{1, 8, 8, 4096, 4096}));
  EXPECT_FALSE(find("sm_90a", ElementType::BF16, 128, ShapeHint{1, 8, 8, 4096, 4096}));
  EXPECT_FALSE(find("sm_90a", ElementType::BF16, 64, ShapeHint{1, 8, 2, 4096, 4096}));
  EXPECT_FALSE(find("sm_90a", ElementType::BF16, 64, ShapeHint{1, 8, 8, 4096, 4096}, "fwd_sm90a"));
  // The same key again replaces the record; another template is a record of its own.
  r.knobs = Schedule{64, 64, 4, 2}.to_knobs();
  db.put(r);
  ASSERT_EQ(db.list().size(), 1u);
  EXPECT_EQ(db.list()[0].knobs, (Schedule{64, 64, 4, 2}.to_knobs()));
  TuningRecord other = r;
  other.template_name = "fwd_sm90a";
  other.knobs = Knobs{{"consumers", 2}, {"block_n", 176}};
  db.put(other);
  ASSERT_EQ(db.list().size(), 2u);
  EXPECT_EQ(find("sm_90a", ElementType::BF16, 64, ShapeHint{1, 8, 8, 4096, 4096}, "fwd_sm90a")->knobs, other.knobs);
  EXPECT_EQ(find("sm_90a", ElementType::BF16, 64, ShapeHint{1, 8, 8, 4096, 4096})->knobs, r.knobs);
  // A record must name its template.
  other.template_name.clear();
  EXPECT_THROW(db.put(other), UserError);
}

TEST_F(TuningDbTest, TwoConcurrentWriterProcessesLoseNoRecord) {
  const auto path = dir_ / "tuning.sqlite";
  constexpr int kPerWriter = 150;
  pid_t children[2];
  for (int w = 0; w < 2; ++w) {
    children[w] = ::fork();
    ASSERT_GE(children[w], 0);
    if (children[w] == 0) {
      int rc = 0;
      try {
        TuningDatabase db(path);  // both processes may create the file
        for (int i = 0; i < kPerWriter; ++i)
          db.put(record("writer" + std::to_string(w), 64, i + 1, Schedule{128, 64, 4, 2}, 1.0 + i));  // distinct keys
      } catch (const std::exception& e) {
        std::fprintf(stderr, "writer %d: %s\n", w, e.what());
        rc = 1;
      }
      ::_exit(rc);
    }
  }
  for (pid_t child : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
  }
  TuningDatabase db(path);
  const auto all = db.list();
  EXPECT_EQ(all.size(), 2u * kPerWriter);
  int per_writer[2] = {0, 0};
  for (const auto& r : all) ++per_writer[r.key.variant_hash == "writer1" ? 1 : 0];
  EXPECT_EQ(per_writer[0], kPerWriter);
  EXPECT_EQ(per_writer[1], kPerWriter);
}

TEST_F(TuningDbTest, ExportImportRoundTrips) {
  TuningDatabase a(dir_ / "a.sqlite");
  a.put(record("h1", 64, 1024, Schedule{128, 64, 4, 2}, 0.123456789));
  TuningRecord gqa = record("h2", 128, 4096, Schedule{64, 32, 4, 1}, 3.25);
  gqa.key.gqa = true;
  gqa.key.seq_k_bucket = 8192;
  gqa.variant_name = "name with \"quotes\" and \\ backslash";
  gqa.version = "0.0.9";
  gqa.date = "2026-11-26";
  a.put(gqa);
  const std::string json = a.export_json();
  EXPECT_TRUE(contains(json, "\"format\": \"attnjit-tuning\"")) << json;
  const nlohmann::json doc = nlohmann::json::parse(json);
  EXPECT_EQ(doc.at("version"), 2);
  ASSERT_EQ(doc.at("records").size(), 2u);
  const nlohmann::json& h2 = doc.at("records").at(0);  // ordered by variant name
  EXPECT_EQ(h2.at("variant_name"), gqa.variant_name);
  EXPECT_EQ(h2.at("template"), "fwd_sm80");
  EXPECT_EQ(h2.at("knobs"), (nlohmann::json{{"block_m", 64}, {"block_n", 32}, {"warps", 4}, {"stages", 1}}));

  TuningDatabase b(dir_ / "b.sqlite");
  EXPECT_EQ(b.import_json(json), 2);
  const auto la = a.list(), lb = b.list();
  ASSERT_EQ(la.size(), lb.size());
  for (std::size_t i = 0; i < la.size(); ++i) {
    EXPECT_EQ(la[i].key, lb[i].key);
    EXPECT_EQ(la[i].template_name, lb[i].template_name);
    EXPECT_EQ(la[i].knobs, lb[i].knobs);
    EXPECT_EQ(la[i].variant_name, lb[i].variant_name);
    EXPECT_EQ(la[i].shape, lb[i].shape);
    EXPECT_EQ(la[i].ms, lb[i].ms);
    EXPECT_EQ(la[i].tflops, lb[i].tflops);
    EXPECT_EQ(la[i].default_ms, lb[i].default_ms);
    EXPECT_EQ(la[i].version, lb[i].version);
    EXPECT_EQ(la[i].date, lb[i].date);
  }
  EXPECT_EQ(b.export_json(), json);
  // Importing again replaces, it does not duplicate.
  EXPECT_EQ(b.import_json(json), 2);
  EXPECT_EQ(b.list().size(), 2u);
}

TEST_F(TuningDbTest, ImportRejectsMalformedDocumentsAndImportsNothing) {
  TuningDatabase db(dir_ / "t.sqlite");
  EXPECT_THROW(db.import_json("not json"), UserError);
  EXPECT_THROW(db.import_json("{\"records\": []}"), UserError);  // no format tag
  TuningDatabase src(dir_ / "src.sqlite");
  src.put(record("h1", 64, 1024, Schedule{128, 64, 4, 2}, 1.0));
  src.put(record("h2", 64, 1024, Schedule{128, 64, 4, 2}, 1.0));
  std::string json = src.export_json();
  // The second record asks for a schedule the kernel cannot run: the whole import is refused.
  const auto pos = json.rfind("\"block_m\": 128");
  json.replace(pos, std::string("\"block_m\": 128").size(), "\"block_m\": 96");
  try {
    db.import_json(json);
    FAIL() << "expected a UserError";
  } catch (const UserError& e) {
    EXPECT_TRUE(contains(e.what(), "record 1")) << e.what();
    EXPECT_TRUE(contains(e.what(), "block_m 96")) << e.what();
  }
  EXPECT_TRUE(db.list().empty());
}

TEST_F(TuningDbTest, ImportChecksTemplateAndKnobs) {
  TuningDatabase src(dir_ / "src.sqlite");
  src.put(record("h1", 64, 1024, Schedule{128, 64, 4, 2}, 1.0));
  const nlohmann::json good = nlohmann::json::parse(src.export_json());
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::string message;
  };
  const Case cases[] = {
      {[](nlohmann::json& r) { r["knobs"].erase("warps"); },
       "lack 'warps'; its knobs are: block_m, block_n, warps, stages"},
      {[](nlohmann::json& r) { r["knobs"]["unroll"] = 2; }, "template 'fwd_sm80' has no knob 'unroll' (= 2)"},
      {[](nlohmann::json& r) { r["knobs"]["warps"] = "four"; }, "field 'knobs': knob 'warps' is \"four\""},
      {[](nlohmann::json& r) { r["knobs"] = nlohmann::json::object(); }, "the knobs of template 'fwd_sm80' are empty"},
      {[](nlohmann::json& r) { r["template"] = "Fwd SM80"; }, "template name 'Fwd SM80' is not allowed"},
      {[](nlohmann::json& r) { r["knobs"]["stages"] = 3; }, "stages 3 is not allowed; use 1 or 2"},
      {[](nlohmann::json& r) { r.erase("template"); }, "record 0 has no field 'template'"},
  };
  for (const auto& c : cases) {
    nlohmann::json doc = good;
    c.edit(doc["records"][0]);
    TuningDatabase db(dir_ / "t.sqlite");
    try {
      db.import_json(doc.dump());
      ADD_FAILURE() << "expected a UserError for " << doc.dump();
    } catch (const UserError& e) {
      EXPECT_TRUE(contains(e.what(), c.message)) << e.what();
    }
    EXPECT_TRUE(db.list().empty());
  }
  // A newer document version is refused, naming the versions this code reads.
  nlohmann::json newer = good;
  newer["version"] = 3;
  TuningDatabase db(dir_ / "t.sqlite");
  try {
    db.import_json(newer.dump());
    ADD_FAILURE() << "expected a UserError";
  } catch (const UserError& e) {
    EXPECT_TRUE(contains(e.what(), "\"version\" is 3; this attnjit reads versions 1 and 2")) << e.what();
  }
  // A template this attnjit does not have: kept as it is (a newer attnjit's record), never looked up.
  nlohmann::json foreign = good;
  foreign["records"][0]["template"] = "fwd_sm100";
  foreign["records"][0]["knobs"] = {{"tiles", 3}};
  EXPECT_EQ(db.import_json(foreign.dump()), 1);
  ASSERT_EQ(db.list().size(), 1u);
  EXPECT_EQ(db.list()[0].template_name, "fwd_sm100");
  EXPECT_EQ(db.list()[0].knobs, (Knobs{{"tiles", 3}}));
}

// Version 1 documents (attnjit 0.1.0's `tune --export`) carry the fwd_sm80 schedule in fields.
TEST_F(TuningDbTest, ImportReadsVersion1Documents) {
  const std::string v1 = R"({"format": "attnjit-tuning", "version": 1, "records": [
  {"variant_hash": "h1", "arch": "sm_90a", "dtype": "bf16", "head_dim": 64, "seq_q_bucket": 1024, "seq_k_bucket": 1024, "gqa": false, "block_m": 128, "block_n": 64, "num_warps": 4, "stages": 2, "variant_name": "a\"b", "shape": "B=1 Hq=2 Hkv=2 Sq=1024 Sk=1024", "ms": 0.5, "tflops": 200, "default_ms": 0.625, "attnjit_version": "0.1.0", "date": "2026-11-26"}
]}
)";
  TuningDatabase db(dir_ / "t.sqlite");
  EXPECT_EQ(db.import_json(v1), 1);
  const auto all = db.list();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].template_name, "fwd_sm80");
  EXPECT_EQ(all[0].knobs, (Schedule{128, 64, 4, 2}.to_knobs()));
  EXPECT_EQ(all[0].variant_name, "a\"b");
  EXPECT_EQ(all[0].version, "0.1.0");
  // The export published with the benchmarks (docs/benchmarks.md) still imports.
  TuningDatabase docs(dir_ / "docs.sqlite");
  EXPECT_EQ(docs.import_json(slurp(std::filesystem::path(ATTNJIT_SOURCE_DIR) / "docs" / "tune-2026-11-26-h100.json")),
            3);
  for (const auto& r : docs.list()) EXPECT_EQ(r.knobs, (Schedule{128, 64, 4, 2}.to_knobs())) << r.key.str();
}

TEST_F(TuningDbTest, CorruptFileGivesAClearErrorAndIsNotOverwritten) {
  for (const std::string& content : {std::string(4096, 'x'), std::string("this is not a database\n"),
                                     std::string("SQLite format 3") + std::string(200, '\x01')}) {
    const auto path = dir_ / "corrupt.sqlite";
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out << content;
    }
    try {
      TuningDatabase db(path);
      db.put(record("h", 64, 1024, Schedule{128, 64, 4, 2}, 1.0));
      FAIL() << "expected a RuntimeFailure for content of size " << content.size();
    } catch (const RuntimeFailure& e) {
      EXPECT_TRUE(contains(e.what(), path.string())) << e.what();
      EXPECT_TRUE(contains(e.what(), "not a SQLite database")) << e.what();
      EXPECT_TRUE(contains(e.what(), "Move it aside or delete it")) << e.what();
    }
    EXPECT_EQ(slurp(path), content) << "the corrupt file was modified";
  }
}

TEST_F(TuningDbTest, DefaultPathFollowsTheEnvironment) {
  ::setenv("ATTNJIT_TUNING_DB", (dir_ / "x.sqlite").c_str(), 1);
  EXPECT_EQ(TuningDatabase::default_path(), dir_ / "x.sqlite");
  ::unsetenv("ATTNJIT_TUNING_DB");
  EXPECT_EQ(TuningDatabase::default_path().filename(), "tuning.sqlite");
}

TEST_F(TuningDbTest, Version0FileIsMigratedInPlace) {
  const auto path = dir_ / "tuning.sqlite";
  const Variant causal = presets::causal();
  run_sql(path, std::string("PRAGMA journal_mode=WAL;") + kVersion0Schema + ";" +
                    version_0_insert(causal.hash().hex(), 64, 4096, 0, Schedule{128, 128, 8, 2}, "causal") +
                    version_0_insert(causal.hash().hex(), 128, 1024, 1, Schedule{64, 32, 4, 1}, "it''s gqa"));
  ASSERT_EQ(query_text(path, "PRAGMA user_version"), "0");

  {
    TuningDatabase db(path);
    const auto all = db.list();
    ASSERT_EQ(all.size(), 2u);
    for (const auto& r : all) EXPECT_EQ(r.template_name, "fwd_sm80");
    const TuningRecord& mha = all[0].key.gqa ? all[1] : all[0];
    const TuningRecord& gqa = all[0].key.gqa ? all[0] : all[1];
    EXPECT_EQ(mha.knobs, (Knobs{{"block_m", 128}, {"block_n", 128}, {"warps", 8}, {"stages", 2}}));
    EXPECT_EQ(mha.key.head_dim, 64);
    EXPECT_EQ(mha.key.seq_q_bucket, 4096);
    EXPECT_EQ(mha.variant_name, "causal");
    EXPECT_EQ(mha.shape, "B=4 Hq=32 Hkv=32");
    EXPECT_EQ(mha.ms, 1.25);
    EXPECT_EQ(mha.tflops, 300.5);
    EXPECT_EQ(mha.default_ms, 1.5);
    EXPECT_EQ(mha.version, "0.1.0");
    EXPECT_EQ(mha.date, "2026-11-26");
    EXPECT_EQ(gqa.knobs, (Schedule{64, 32, 4, 1}.to_knobs()));
    EXPECT_EQ(gqa.variant_name, "it's gqa");
  }
  EXPECT_EQ(query_text(path, "PRAGMA user_version"), std::to_string(TuningDatabase::kSchemaVersion));
  EXPECT_EQ(query_text(path, "SELECT name FROM sqlite_master WHERE name = 'tuned_schedules'"), "");
  EXPECT_EQ(query_text(path, "SELECT knobs FROM tuning_records WHERE head_dim = 64"),
            R"({"knobs":{"block_m":128,"block_n":128,"stages":2,"warps":8},"version":1})");

  // The compile-time lookup reads the migrated record; opening again changes nothing.
  ::setenv("ATTNJIT_TUNING_DB", path.c_str(), 1);
  EXPECT_EQ(find_tuned_knobs(causal, "fwd_sm80", "sm_90a", ElementType::BF16, 64, ShapeHint{1, 8, 8, 3000, 3000}),
            (Schedule{128, 128, 8, 2}.to_knobs()));
  EXPECT_EQ(TuningDatabase(path).list().size(), 2u);
}

TEST_F(TuningDbTest, FailedMigrationRollsBackAndLeavesTheFileAsItWas) {
  const auto path = dir_ / "tuning.sqlite";
  // A version-0 table that lacks a column the migration reads.
  run_sql(path,
          "CREATE TABLE tuned_schedules (variant_hash TEXT NOT NULL, arch TEXT NOT NULL);"
          "INSERT INTO tuned_schedules VALUES ('h', 'sm_80');");
  try {
    TuningDatabase db(path);
    FAIL() << "expected a RuntimeFailure";
  } catch (const RuntimeFailure& e) {
    EXPECT_TRUE(contains(e.what(), path.string())) << e.what();
    EXPECT_TRUE(contains(e.what(), "cannot migrate the tuning database")) << e.what();
    EXPECT_TRUE(contains(e.what(), "from schema version 0 to 1")) << e.what();
  }
  EXPECT_EQ(query_text(path, "PRAGMA user_version"), "0");
  EXPECT_EQ(query_text(path, "SELECT arch FROM tuned_schedules"), "sm_80");
  EXPECT_EQ(query_text(path, "SELECT name FROM sqlite_master WHERE name = 'tuning_records'"), "");
}

TEST_F(TuningDbTest, NewerSchemaIsRefusedAndLeftUntouched) {
  const auto path = dir_ / "tuning.sqlite";
  run_sql(path, "CREATE TABLE future (x INTEGER); INSERT INTO future VALUES (7); PRAGMA user_version = 7;");
  const std::string before = slurp(path);
  try {
    TuningDatabase db(path);
    FAIL() << "expected a RuntimeFailure";
  } catch (const RuntimeFailure& e) {
    EXPECT_TRUE(contains(e.what(), path.string())) << e.what();
    EXPECT_TRUE(contains(e.what(), "has schema version 7")) << e.what();
    EXPECT_TRUE(contains(e.what(), "reads versions 0 to 1")) << e.what();
    EXPECT_TRUE(contains(e.what(), "left it untouched")) << e.what();
  }
  EXPECT_EQ(slurp(path), before) << "the newer database was modified";
  EXPECT_FALSE(std::filesystem::exists(path.string() + "-wal"));
  // The compile-time lookup falls back to nothing.
  ::setenv("ATTNJIT_TUNING_DB", path.c_str(), 1);
  EXPECT_FALSE(
      find_tuned_knobs(presets::causal(), "fwd_sm80", "sm_90a", ElementType::BF16, 64, ShapeHint{1, 8, 8, 64, 64}));
  EXPECT_EQ(slurp(path), before);
}

TEST_F(TuningDbTest, UnreadableKnobsBlobNamesTheRecord) {
  const auto path = dir_ / "tuning.sqlite";
  {
    TuningDatabase db(path);
    db.put(record("h1", 64, 1024, Schedule{128, 64, 4, 2}, 1.0));
  }
  run_sql(path, "UPDATE tuning_records SET knobs = '{\"version\": 9, \"knobs\": {}}'");
  TuningDatabase db(path);
  try {
    db.list();
    FAIL() << "expected a RuntimeFailure";
  } catch (const RuntimeFailure& e) {
    EXPECT_TRUE(contains(e.what(), path.string())) << e.what();
    EXPECT_TRUE(contains(e.what(), "unreadable knobs")) << e.what();
    EXPECT_TRUE(contains(e.what(), "its version is 9; this attnjit reads version 1")) << e.what();
  }
}

TEST_F(TuningDbTest, GenerateUsesTheTunedScheduleForTheHintedBucket) {
  const auto path = dir_ / "tuning.sqlite";
  ::setenv("ATTNJIT_TUNING_DB", path.c_str(), 1);
  const Variant causal = presets::causal();
  CompileOptions o;
  o.with_head_dim(64).with_arch("sm_80");  // fwd_sm80 is the default there (sm_90a: fwd_sm90)
  // No file: the default, and no file is created by a lookup.
  o.with_shape_hint(4, 32, 32, 4096, 4096);
  EXPECT_EQ(generate(causal, o).config.knobs, Schedule::default_for(64).to_knobs());
  EXPECT_FALSE(std::filesystem::exists(path));
  {
    TuningDatabase db(path);
    TuningRecord r;
    r.key = TuningKey::make(causal, "sm_80", ElementType::BF16, 64, ShapeHint{4, 32, 32, 4096, 4096});
    r.template_name = "fwd_sm80";
    r.knobs = Schedule{64, 128, 4, 1}.to_knobs();
    db.put(r);
  }
  EXPECT_EQ(generate(causal, o).config.knobs, (Schedule{64, 128, 4, 1}.to_knobs()));
  EXPECT_EQ(find_tuned_knobs(causal, "fwd_sm80", "sm_80", ElementType::BF16, 64, ShapeHint{4, 32, 32, 4096, 4096}),
            (Schedule{64, 128, 4, 1}.to_knobs()));
  EXPECT_FALSE(find_tuned_knobs(causal, "fwd_sm90", "sm_80", ElementType::BF16, 64, ShapeHint{4, 32, 32, 4096, 4096}));
  // Another bucket, no hint, or an explicit schedule: not the tuned one.
  CompileOptions other = o;
  other.with_shape_hint(4, 32, 32, 1024, 1024);
  EXPECT_EQ(generate(causal, other).config.knobs, Schedule::default_for(64).to_knobs());
  CompileOptions no_hint;
  no_hint.with_head_dim(64).with_arch("sm_80");
  EXPECT_EQ(generate(causal, no_hint).config.knobs, Schedule::default_for(64).to_knobs());
  CompileOptions explicit_schedule = o;
  explicit_schedule.with_schedule(Schedule{128, 32, 8, 1});
  EXPECT_EQ(generate(causal, explicit_schedule).config.knobs, (Schedule{128, 32, 8, 1}.to_knobs()));
  // "off" disables the lookup.
  ::setenv("ATTNJIT_TUNING_DB", "off", 1);
  EXPECT_EQ(generate(causal, o).config.knobs, Schedule::default_for(64).to_knobs());
}

// A backward record (`attnjit tune --backward`) is found for a backward request with a shape
// hint in its bucket, as a forward record is, under the template the request selects (bwd_sm80
// for sm_80); the two roles' records do not mix, nor do two templates'.
TEST_F(TuningDbTest, GenerateUsesTheTunedBackwardKnobsForTheHintedBucket) {
  const auto path = dir_ / "tuning.sqlite";
  ::setenv("ATTNJIT_TUNING_DB", path.c_str(), 1);
  const Variant causal = presets::causal();
  CompileOptions backward;
  backward.with_head_dim(128).with_arch("sm_80").with_role(TemplateRole::Backward);
  backward.with_shape_hint(4, 16, 16, 1024, 1024);
  CompileOptions forward = backward;
  forward.with_role(TemplateRole::Forward);
  const Knobs defaults = generate(causal, backward).config.knobs;
  EXPECT_EQ(defaults.str(), "block_m=64 row_pad=0 stages=2 warps=8");
  const Knobs forward_defaults = generate(causal, forward).config.knobs;
  const Knobs tuned = Knobs::parse("block_m=64 row_pad=0 stages=2 warps=4");
  const auto put_bwd_sm80_record = [&](const char* arch) {
    TuningDatabase db(path);
    TuningRecord r;
    r.key = TuningKey::make(causal, arch, ElementType::BF16, 128, ShapeHint{4, 16, 16, 1024, 1024});
    r.template_name = "bwd_sm80";
    r.knobs = tuned;
    db.put(r);
  };
  put_bwd_sm80_record("sm_80");
  const PreparedKernel p = generate(causal, backward);
  EXPECT_EQ(p.config.knobs, tuned);
  EXPECT_TRUE(p.config.tuned);
  EXPECT_EQ(generate(causal, forward).config.knobs, forward_defaults);  // not the forward's record
  CompileOptions other_bucket = backward;
  other_bucket.with_shape_hint(4, 16, 16, 8192, 8192);
  EXPECT_EQ(generate(causal, other_bucket).config.knobs, defaults);
  // bwd_sm90 (first on sm_90a) does not take bwd_sm80's record for the same bucket.
  put_bwd_sm80_record("sm_90a");
  CompileOptions hopper = backward;
  hopper.with_arch("sm_90a");
  const PreparedKernel h = generate(causal, hopper);
  EXPECT_EQ(h.config.template_name, "bwd_sm90");
  EXPECT_EQ(h.config.knobs.str(), "block_m=64 dq_before_dk=1 dq_bulk=0 dq_ordered=0 row_pad=0 stages=2 warps=8");
  EXPECT_FALSE(h.config.tuned);
}

TEST_F(TuningDbTest, GenerateFallsBackToTheDefaultWhenTheDatabaseIsUnusable) {
  const Variant causal = presets::causal();
  CompileOptions o;
  o.with_head_dim(128).with_arch("sm_80").with_shape_hint(1, 8, 8, 1024, 1024);
  const auto corrupt = dir_ / "corrupt.sqlite";
  {
    std::ofstream out(corrupt, std::ios::binary);
    out << std::string(1000, 'z');
  }
  for (const auto& path : {corrupt, dir_ /* a folder */}) {
    ::setenv("ATTNJIT_TUNING_DB", path.c_str(), 1);
    PreparedKernel p;
    ASSERT_NO_THROW(p = generate(causal, o)) << path;
    EXPECT_EQ(p.config.knobs, Schedule::default_for(128).to_knobs()) << path;
  }
  EXPECT_EQ(slurp(corrupt), std::string(1000, 'z'));
}

}  // namespace
}  // namespace attnjit
