// The arguments `attnjit bench --kv-cache --kv-lens` hands to ForwardBenchmark::time_kv_cache,
// checked before anything runs (no GPU needed): one length per sequence, each in 0..Sk.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "compiler/error.hpp"
#include "runtime/tuning/benchmark.hpp"

namespace attnjit {
namespace {

void expect_user_error(const std::vector<int>& lens, const ForwardProblem& p, const std::string& says) {
  try {
    check_kv_cache_lengths(lens, p);
    ADD_FAILURE() << "no error; expected one saying '" << says << "'";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
  }
}

TEST(BenchKvCacheLengths, OnePerSequenceWithinTheCache) {
  const ForwardProblem p{3, 8, 2, 1, 4096};
  EXPECT_NO_THROW(check_kv_cache_lengths({0, 4096, 17}, p));
  expect_user_error({5, 6}, p, "2 lengths for 3 sequences; give one per sequence");
  expect_user_error({5, 6, 7, 8}, p, "4 lengths for 3 sequences");
  expect_user_error({5, 4097, 7}, p, "length 4097 is not in 0..4096 (the cache's Sk)");
  expect_user_error({-1, 6, 7}, p, "length -1 is not in 0..4096");
}

}  // namespace
}  // namespace attnjit
