// GPU test of `attnjit tune --backward` (tune_backward): a two-candidate search on a small
// causal problem stores a checked winner under bwd_sm80, and Kernel::backward of a kernel
// compiled with that shape hint runs the stored knobs (a kernel without the hint, the
// defaults). Skips with a message without a GPU.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include "dsl/presets.hpp"
#include "runtime/cache/tuning_db.hpp"
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

TEST(TuneBackward, StoresACheckedWinnerThatKernelBackwardRuns) {
  std::string why;
  if (!gpu_present(why)) GTEST_SKIP() << "no GPU: " << why;
  ScopedTuningDb scoped;
  TuningDatabase db(scoped.path());
  const Variant causal = presets::causal();
  const ForwardProblem problem{2, 4, 4, 640, 640};
  CompileOptions base;
  base.with_head_dim(64);

  TuneOptions options;
  options.restrict_to = {{"block_m", {32, 64}}, {"warps", {4}}, {"stages", {2}}};
  options.threads = 2;
  options.bench = BenchOptions{2, 5, 0, 3};
  options.database = &db;
  const TuneResult r = tune_backward(causal, base, problem, {}, options);
  EXPECT_TRUE(r.backward);
  EXPECT_EQ(r.template_name, "bwd_sm80");
  EXPECT_EQ(r.candidates.size(), 2u);
  for (const auto& c : r.candidates) EXPECT_TRUE(c.error.empty()) << c.knobs.str() << ": " << c.error;
  ASSERT_TRUE(r.best);
  ASSERT_TRUE(r.backward_check);
  EXPECT_TRUE(r.backward_check->pass) << r.backward_check->summary();
  EXPECT_FALSE(r.check);
  ASSERT_TRUE(r.stored);
  const ShapeHint hint{problem.batch, problem.heads_q, problem.heads_kv, problem.seq_q, problem.seq_k};
  const auto stored = db.find(TuningKey::make(causal, r.arch, ElementType::BF16, 64, hint), "bwd_sm80");
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->knobs, r.best->knobs);

  // A record the defaults never give, so that its use is visible: a kernel compiled for this
  // shape's bucket builds its backward with it, and the result still passes; without the hint,
  // the defaults.
  TuningRecord other = *stored;
  other.knobs = Knobs::parse("block_m=64 row_pad=8 stages=1 warps=8");
  db.put(other);
  CompileOptions hinted = base;
  hinted.with_shape_hint(hint.batch, hint.heads_q, hint.heads_kv, hint.seq_q, hint.seq_k);
  const Kernel tuned = compile(causal, hinted);
  EXPECT_EQ(tuned.prepared_backward().config.knobs, other.knobs);
  const auto check = check_backward(tuned, ForwardProblem{1, 4, 4, 333, 401}, {}, 11);
  EXPECT_TRUE(check.pass) << check.summary();
  const Kernel plain = compile(causal, base);
  EXPECT_EQ(plain.prepared_backward().config.knobs.str(), "block_m=32 row_pad=0 stages=2 warps=4");
}

}  // namespace
}  // namespace attnjit
