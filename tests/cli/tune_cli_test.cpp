// `attnjit tune` without a GPU: argument errors, --list / --export / --import on a temporary
// database, and a corrupt database file (clear error, file untouched); a backward record used by
// `compile --backward`. Also `bench --json --csv`.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "dsl/presets.hpp"
#include "runtime/cache/tuning_db.hpp"
#include "support/process.hpp"

namespace attnjit {
namespace {

using namespace attnjit::test_support;

class TuneCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("attnjit_tune_cli_test_" + std::to_string(::getpid()) + "_" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  CommandResult run(const std::string& args) {
    const std::string command = "ATTNJIT_CACHE_DIR=" + shell_quote((dir_ / "cache").string()) +
                                " ATTNJIT_TUNING_DB=" + shell_quote(db().string()) + " " +
                                shell_quote(ATTNJIT_CLI_PATH) + " " + args;
    return run_command(command, dir_ / ("stderr_" + std::to_string(counter_++)));
  }
  std::filesystem::path db() const { return dir_ / "tuning.sqlite"; }
  std::filesystem::path dir_;
  int counter_ = 0;
};

TEST_F(TuneCliTest, ArgumentErrorsNameTheFix) {
  struct Case {
    std::string args, message;
  };
  const Case cases[] = {
      {"tune", "needs --shape B,H,Hkv,Sq,Sk,D"},
      {"tune --list --shape 1,2,2,64,64,64", "only one of --shape, --list"},
      {"tune --list --export x.json", "only one of"},
      {"tune --preset causal --shape 1,2,x", "is not B,H,Hkv,Sq,Sk,D"},
      {"tune --preset causal --shape 1,2,2,64,64,100", "head_dim 100 is not supported"},
      {"tune --preset causal --head-dim 128 --shape 1,2,2,64,64,64", "has head_dim 64 but --head-dim is 128"},
      {"tune --shape 1,2,2,64,64,64", "exactly one of --preset NAME or --variant TEXT"},
      {"tune --preset no_such_preset --shape 1,2,2,64,64,64", "no_such_preset"},
      {"tune --preset causal --shape 1,2,2,64,64,64 --threads 0", "--threads 0 is out of range"},
      {"tune --preset causal --shape 1,2,2,64,64,64 --reps 0", "--reps 0 must be at least 1"},
      {"tune --preset sliding_window --shape 1,2,2,64,64,64 --param window", "is not NAME=VALUE"},
      {"tune --import " + shell_quote((std::filesystem::temp_directory_path() / "no_such_attnjit.json").string()),
       "cannot read"},
      {"bench --preset causal --shape 1,2,2,64,64,64 --json --csv", "at most one of --json and --csv"},
      // --only restricts the chosen template's knob space; its knobs are named when one is wrong.
      {"tune --preset causal --shape 1,2,2,64,64,64 --only block_m", "--only 'block_m' is not KNOB=V1,V2"},
      {"tune --preset causal --shape 1,2,2,64,64,64 --only block_m=64,x", "is not KNOB=V1,V2"},
      {"tune --preset causal --shape 1,2,2,64,64,64 --only =64", "is not KNOB=V1,V2"},
      {"tune --preset causal --shape 1,2,2,64,64,64 --only block_m=64 --only block_m=128", "knob 'block_m' twice"},
      {"tune --preset causal --shape 1,2,2,64,64,64 --only unroll=2,4", "no forward template has a knob 'unroll'"},
      // --backward searches the backward template's knobs, and a named template must be of that role.
      {"tune --preset causal --shape 1,2,2,64,64,64 --backward --only block_n=64",
       "no backward template has a knob 'block_n'; the knobs are: block_m, dq_before_dk, dq_bulk, dq_ordered, row_pad, "
       "stages, "
       "warps"},
      {"tune --preset causal --shape 1,2,2,64,64,64 --backward --template fwd_sm80",
       "--template fwd_sm80 is a forward template; tune searches backward templates"},
      {"tune --preset causal --shape 1,2,2,64,64,64 --template bwd_sm80",
       "is a backward template; tune searches "
       "forward templates (add --backward for it)"},
      {"tune --preset causal --shape 1,2,2,64,64,64 --template fwd_sm80 --only splits=2",
       "template 'fwd_sm80' has no knob 'splits' to restrict; its knobs are: block_m, block_n, warps, stages"},
      {"tune --preset causal --shape 1,2,2,64,64,64 --template no_such_template",
       "template 'no_such_template' does not exist"},
  };
  for (const auto& c : cases) {
    const auto r = run(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.err;
    EXPECT_TRUE(contains(r.err, c.message)) << c.args << "\nstderr: " << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(db()));  // no argument error touched the database
}

TEST_F(TuneCliTest, HelpListsTheKnobSpaces) {
  const auto r = run("tune --help");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "--only")) << r.out;
  EXPECT_TRUE(contains(r.out, "--template")) << r.out;
  EXPECT_TRUE(contains(r.out, "fwd_sm80: block_m (64,128)")) << r.out;
  EXPECT_TRUE(contains(r.out, "bwd_sm80: block_m (32,64)")) << r.out;
  EXPECT_TRUE(contains(r.out, "--backward")) << r.out;
}

// A record `tune --backward` would store (template bwd_sm80, the backward for sm_80) is what
// `compile --backward` builds for a shape in its bucket; another bucket gets the defaults.
TEST_F(TuneCliTest, CompileBackwardTakesTheRecordOfItsShapesBucket) {
  {
    TuningDatabase d(db());
    TuningRecord r;
    r.key = TuningKey::make(presets::causal(), "sm_80", ElementType::BF16, 128, ShapeHint{4, 16, 16, 1024, 1024});
    r.template_name = "bwd_sm80";
    r.knobs = Knobs::parse("block_m=64 row_pad=0 stages=2 warps=4");
    r.variant_name = "causal";
    d.put(r);
  }
  const auto tuned = run("compile --backward --preset causal --arch sm_80 --shape 4,16,16,1000,1000,128");
  ASSERT_EQ(tuned.exit_code, 0) << tuned.err;
  EXPECT_TRUE(contains(tuned.out, "template:       bwd_sm80 (tuned knobs)")) << tuned.out;
  EXPECT_TRUE(contains(tuned.out, "knobs:          block_m=64 row_pad=0 stages=2 warps=4")) << tuned.out;
  const auto other = run("compile --backward --preset causal --arch sm_80 --shape 4,16,16,8192,8192,128");
  ASSERT_EQ(other.exit_code, 0) << other.err;
  EXPECT_TRUE(contains(other.out, "knobs:          block_m=64 row_pad=0 stages=2 warps=8")) << other.out;
  EXPECT_FALSE(contains(other.out, "tuned knobs")) << other.out;
}

TEST_F(TuneCliTest, ListExportImport) {
  {
    TuningDatabase d(db());
    TuningRecord r;
    r.key.variant_hash = "0123456789abcdef0123456789abcdef";
    r.key.arch = "sm_90a";
    r.key.dtype = "bf16";
    r.key.head_dim = 128;
    r.key.seq_q_bucket = r.key.seq_k_bucket = 4096;
    r.template_name = "fwd_sm80";
    r.knobs = Schedule{128, 128, 8, 2}.to_knobs();
    r.variant_name = "causal";
    r.ms = 1.25;
    r.default_ms = 1.5;
    r.tflops = 300;
    d.put(r);
  }
  const auto list = run("tune --list");
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_TRUE(contains(list.out, "1 record(s)")) << list.out;
  EXPECT_TRUE(contains(list.out, "fwd_sm80   block_m=128 block_n=128 stages=2 warps=8")) << list.out;

  const auto json = dir_ / "out.json";
  const auto exp = run("tune --export " + shell_quote(json.string()));
  ASSERT_EQ(exp.exit_code, 0) << exp.err;
  EXPECT_TRUE(contains(read_file(json), "\"variant_hash\": \"0123456789abcdef0123456789abcdef\"")) << read_file(json);
  EXPECT_TRUE(contains(read_file(json), "\"template\": \"fwd_sm80\"")) << read_file(json);

  const auto other = dir_ / "other.sqlite";
  const auto imp = run("tune --import " + shell_quote(json.string()) + " --db " + shell_quote(other.string()));
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  EXPECT_TRUE(contains(imp.out, "imported 1 record(s)")) << imp.out;
  TuningDatabase d(other);
  ASSERT_EQ(d.list().size(), 1u);
  EXPECT_EQ(d.list()[0].template_name, "fwd_sm80");
  EXPECT_EQ(d.list()[0].knobs, (Schedule{128, 128, 8, 2}.to_knobs()));

  const auto bad = dir_ / "bad.json";
  std::ofstream(bad) << "{\"format\": \"attnjit-tuning\", \"version\": 2, \"records\": [{\"arch\": \"sm_90a\"}]}";
  const auto r = run("tune --import " + shell_quote(bad.string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "record 0 has no field")) << r.err;
}

TEST_F(TuneCliTest, CorruptDatabaseIsReportedAndLeftAlone) {
  const std::string garbage(2048, 'q');
  std::ofstream(db(), std::ios::binary) << garbage;
  for (const char* args : {"tune --list", "tune --export x.json"}) {
    const auto r = run(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.err;
    EXPECT_TRUE(contains(r.err, db().string())) << r.err;
    EXPECT_TRUE(contains(r.err, "not a SQLite database")) << r.err;
    EXPECT_EQ(read_file(db()), garbage);
  }
}

}  // namespace
}  // namespace attnjit
