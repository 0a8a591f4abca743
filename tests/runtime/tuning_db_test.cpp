// The tuning database: keys and buckets, two concurrent writer processes, export/import,
// a corrupt file (clear error, file untouched), and the compile-time lookup's fallback.
#include "runtime/cache/tuning_db.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "compiler/error.hpp"
#include "dsl/presets.hpp"
#include "runtime/api/attention.hpp"

namespace attnjit {
namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TuningRecord record(const std::string& hash, int head_dim, int seq, Schedule s, double ms) {
  TuningRecord r;
  r.key.variant_hash = hash;
  r.key.arch = "sm_90a";
  r.key.dtype = "bf16";
  r.key.head_dim = head_dim;
  r.key.seq_q_bucket = seq;
  r.key.seq_k_bucket = seq;
  r.schedule = s;
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
    const char* old = std::getenv("ATTNJIT_TUNING_DB");
    saved_env_ = old ? std::optional<std::string>(old) : std::nullopt;
  }
  void TearDown() override {
    if (saved_env_)
      ::setenv("ATTNJIT_TUNING_DB", saved_env_->c_str(), 1);
    else
      ::unsetenv("ATTNJIT_TUNING_DB");
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::filesystem::path dir_;
  std::optional<std::string> saved_env_;
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
  r.schedule = Schedule{128, 128, 8, 2};
  r.variant_name = "causal";
  r.ms = 1.5;
  r.default_ms = 2.0;
  db.put(r);
  const auto found = db.find(TuningKey::make(causal, "sm_90a", ElementType::BF16, 64, ShapeHint{1, 8, 8, 3000, 3500}));
  ASSERT_TRUE(found);
  EXPECT_EQ(found->schedule, (Schedule{128, 128, 8, 2}));
  EXPECT_EQ(found->ms, 1.5);
  EXPECT_EQ(found->default_ms, 2.0);
  EXPECT_FALSE(found->version.empty());
  EXPECT_EQ(found->date.size(), 10u) << found->date;  // YYYY-MM-DD
  // Other buckets, arch, dtype, head dim, GQA: nothing.
  EXPECT_FALSE(db.find(TuningKey::make(causal, "sm_90a", ElementType::BF16, 64, ShapeHint{1, 8, 8, 5000, 5000})));
  EXPECT_FALSE(db.find(TuningKey::make(causal, "sm_80", ElementType::BF16, 64, ShapeHint{1, 8, 8, 4096, 4096})));
  EXPECT_FALSE(db.find(TuningKey::make(causal, "sm_90a", ElementType::FP16, 64, ShapeHint{1, 8, 8, 4096, 4096})));
  EXPECT_FALSE(db.find(TuningKey::make(causal, "sm_90a", ElementType::BF16, 128, ShapeHint{1, 8, 8, 4096, 4096})));
  EXPECT_FALSE(db.find(TuningKey::make(causal, "sm_90a", ElementType::BF16, 64, ShapeHint{1, 8, 2, 4096, 4096})));
  // The same key again replaces the record.
  r.schedule = Schedule{64, 64, 4, 2};
  db.put(r);
  ASSERT_EQ(db.list().size(), 1u);
  EXPECT_EQ(db.list()[0].schedule, (Schedule{64, 64, 4, 2}));
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

  TuningDatabase b(dir_ / "b.sqlite");
  EXPECT_EQ(b.import_json(json), 2);
  const auto la = a.list(), lb = b.list();
  ASSERT_EQ(la.size(), lb.size());
  for (std::size_t i = 0; i < la.size(); ++i) {
    EXPECT_EQ(la[i].key, lb[i].key);
    EXPECT_EQ(la[i].schedule, lb[i].schedule);
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

TEST_F(TuningDbTest, GenerateUsesTheTunedScheduleForTheHintedBucket) {
  const auto path = dir_ / "tuning.sqlite";
  ::setenv("ATTNJIT_TUNING_DB", path.c_str(), 1);
  const Variant causal = presets::causal();
  CompileOptions o;
  o.with_head_dim(64).with_arch("sm_90a");
  // No file: the default, and no file is created by a lookup.
  o.with_shape_hint(4, 32, 32, 4096, 4096);
  EXPECT_EQ(generate(causal, o).config.schedule, Schedule::default_for(64));
  EXPECT_FALSE(std::filesystem::exists(path));
  {
    TuningDatabase db(path);
    TuningRecord r;
    r.key = TuningKey::make(causal, "sm_90a", ElementType::BF16, 64, ShapeHint{4, 32, 32, 4096, 4096});
    r.schedule = Schedule{64, 128, 4, 1};
    db.put(r);
  }
  EXPECT_EQ(generate(causal, o).config.schedule, (Schedule{64, 128, 4, 1}));
  // Another bucket, no hint, or an explicit schedule: not the tuned one.
  CompileOptions other = o;
  other.with_shape_hint(4, 32, 32, 1024, 1024);
  EXPECT_EQ(generate(causal, other).config.schedule, Schedule::default_for(64));
  CompileOptions no_hint;
  no_hint.with_head_dim(64).with_arch("sm_90a");
  EXPECT_EQ(generate(causal, no_hint).config.schedule, Schedule::default_for(64));
  CompileOptions explicit_schedule = o;
  explicit_schedule.with_schedule(Schedule{128, 32, 8, 1});
  EXPECT_EQ(generate(causal, explicit_schedule).config.schedule, (Schedule{128, 32, 8, 1}));
  // "off" disables the lookup.
  ::setenv("ATTNJIT_TUNING_DB", "off", 1);
  EXPECT_EQ(generate(causal, o).config.schedule, Schedule::default_for(64));
}

TEST_F(TuningDbTest, GenerateFallsBackToTheDefaultWhenTheDatabaseIsUnusable) {
  const Variant causal = presets::causal();
  CompileOptions o;
  o.with_head_dim(128).with_arch("sm_90a").with_shape_hint(1, 8, 8, 1024, 1024);
  const auto corrupt = dir_ / "corrupt.sqlite";
  {
    std::ofstream out(corrupt, std::ios::binary);
    out << std::string(1000, 'z');
  }
  for (const auto& path : {corrupt, dir_ /* a folder */}) {
    ::setenv("ATTNJIT_TUNING_DB", path.c_str(), 1);
    PreparedKernel p;
    ASSERT_NO_THROW(p = generate(causal, o)) << path;
    EXPECT_EQ(p.config.schedule, Schedule::default_for(128)) << path;
  }
  EXPECT_EQ(slurp(corrupt), std::string(1000, 'z'));
}

}  // namespace
}  // namespace attnjit
