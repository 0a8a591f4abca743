// GPU test of `attnjit tune --backward` (tune_backward), per backward template (bwd_sm80; on a
// GPU of compute capability 9.0 also bwd_sm90): a two-candidate search on a small causal
// problem stores a checked winner under the template, and Kernel::backward of a kernel compiled
// with that shape hint runs the stored knobs (a kernel without the hint, the defaults). Skips
// with a message without a GPU.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "dsl/presets.hpp"
#include "runtime/cache/tuning_db.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "runtime/reference/backward_check.hpp"
#include "runtime/tuning/autotune.hpp"
#include "support/gpu_present.hpp"
#include "support/scoped_env.hpp"

namespace attnjit {
namespace {

// ATTNJIT_TUNING_DB pointed at a fresh file for one test, restored afterwards.
class ScopedTuningDb {
 public:
  ScopedTuningDb()
      : dir_(std::filesystem::temp_directory_path() / ("attnjit_tune_backward_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    ::setenv("ATTNJIT_TUNING_DB", path().c_str(), 1);
  }
  ~ScopedTuningDb() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::filesystem::path path() const { return dir_ / "tuning.sqlite"; }

 private:
  ScopedEnvRestore saved_{"ATTNJIT_TUNING_DB"};  // before the folder: restored after it is gone
  std::filesystem::path dir_;
};

// One template's search and its record's use. `restrict_to` gives two candidates; `other` is
// a knob set the defaults never give (so that its use is visible); `plain` the defaults at D=64.
// ATTNJIT_BACKWARD_TEMPLATE names the template for the calls that name none, as a user on a
// Hopper GPU would to run bwd_sm80 there.
void tune_and_use(const std::string& template_name, const std::map<std::string, std::vector<int>>& restrict_to,
                  const char* other_knobs, const char* plain_knobs) {
  ScopedTuningDb scoped;
  ScopedEnvRestore saved_template{"ATTNJIT_BACKWARD_TEMPLATE"};
  ::setenv("ATTNJIT_BACKWARD_TEMPLATE", template_name.c_str(), 1);
  TuningDatabase db(scoped.path());
  const Variant causal = presets::causal();
  const ForwardProblem problem{2, 4, 4, 640, 640};
  CompileOptions base;
  base.with_head_dim(64);

  TuneOptions options;
  options.restrict_to = restrict_to;
  options.threads = 2;
  options.bench = BenchOptions{2, 5, 0, 3};
  options.database = &db;
  CompileOptions tuned_template = base;
  tuned_template.with_template(template_name);
  const TuneResult r = tune_backward(causal, tuned_template, problem, {}, options);
  EXPECT_TRUE(r.backward);
  EXPECT_EQ(r.template_name, template_name);
  EXPECT_EQ(r.candidates.size(), 2u);
  for (const auto& c : r.candidates) EXPECT_TRUE(c.error.empty()) << c.knobs.str() << ": " << c.error;
  ASSERT_TRUE(r.best);
  ASSERT_TRUE(r.backward_check);
  EXPECT_TRUE(r.backward_check->pass) << r.backward_check->summary();
  EXPECT_FALSE(r.check);
  ASSERT_TRUE(r.stored);
  const ShapeHint hint{problem.batch, problem.heads_q, problem.heads_kv, problem.seq_q, problem.seq_k};
  const auto stored = db.find(TuningKey::make(causal, r.arch, ElementType::BF16, 64, hint), template_name);
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->knobs, r.best->knobs);

  // A kernel compiled for this shape's bucket builds its backward with the record, and the
  // result still passes; without the hint, the defaults.
  TuningRecord other = *stored;
  other.knobs = Knobs::parse(other_knobs);
  db.put(other);
  CompileOptions hinted = base;
  hinted.with_shape_hint(hint.batch, hint.heads_q, hint.heads_kv, hint.seq_q, hint.seq_k);
  const Kernel tuned = compile(causal, hinted);
  EXPECT_EQ(tuned.prepared_backward().config.template_name, template_name);
  EXPECT_EQ(tuned.prepared_backward().config.knobs, other.knobs);
  const auto check = check_backward(tuned, ForwardProblem{1, 4, 4, 333, 401}, {}, 11);
  EXPECT_TRUE(check.pass) << check.summary();
  const Kernel plain = compile(causal, base);
  EXPECT_EQ(plain.prepared_backward().config.knobs.str(), plain_knobs);
}

TEST(TuneBackward, Sm80StoresACheckedWinnerThatKernelBackwardRuns) {
  std::string why;
  if (!gpu_present(why)) GTEST_SKIP() << "no GPU: " << why;
  tune_and_use("bwd_sm80", {{"block_m", {32, 64}}, {"warps", {4}}, {"stages", {2}}},
               "block_m=64 row_pad=8 stages=1 warps=8", "block_m=32 row_pad=0 stages=2 warps=4");
}

TEST(TuneBackward, Sm90StoresACheckedWinnerThatKernelBackwardRuns) {
  std::string why;
  if (!gpu_present(why)) GTEST_SKIP() << "no GPU: " << why;
  if (const std::string arch = runtime::DeviceContext(0).properties().arch; arch != "sm_90a")
    GTEST_SKIP() << "bwd_sm90 needs sm_90a; this GPU is " << arch;
  tune_and_use("bwd_sm90", {{"stages", {1, 2}}, {"dq_bulk", {0}}, {"dq_before_dk", {0}}},
               "block_m=64 dq_before_dk=0 dq_bulk=0 dq_ordered=0 row_pad=0 stages=1 warps=4",
               "block_m=64 dq_before_dk=1 dq_bulk=0 dq_ordered=0 row_pad=0 stages=2 warps=4");
}

}  // namespace
}  // namespace attnjit
