// The JSON that attnjit writes for scripts (`attnjit bench --json`) goes through nlohmann-json:
// any variant name, quotes, backslashes and newlines included, comes back unchanged from a
// standard parser. BenchResult::json() is a pure function, so this runs without a GPU.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "runtime/tuning/benchmark.hpp"

namespace attnjit {
namespace {

BenchResult sample_result(const std::string& variant) {
  BenchResult r;
  r.variant = variant;
  r.problem.batch = 2;
  r.problem.heads_q = 16;
  r.problem.heads_kv = 4;
  r.problem.seq_q = 1000;
  r.problem.seq_k = 1537;
  r.head_dim = 128;
  r.dtype = "bf16";
  r.template_name = "fwd_sm80";
  r.schedule = "block_m=128 block_n=64 stages=1 warps=4";
  r.median_ms = 0.123456789;
  r.min_ms = 0.1;
  r.max_ms = 0.2;
  r.density = 0.5;
  r.tflops = 301.256;
  r.bandwidth_gbs = 1234.56;
  r.input_sets = 3;
  return r;
}

TEST(BenchJson, NamesWithQuotesBackslashesAndNewlinesRoundTrip) {
  for (const std::string name : {std::string("a\"b"), std::string("back\\slash\nnew line"),
                                 std::string("tab\there \x01 control, \"both\" \\ kinds\r\n"), std::string("ünï✓")}) {
    const std::string text = sample_result(name).json();
    EXPECT_EQ(text.find('\n'), std::string::npos) << "one object per line: " << text;
    nlohmann::json parsed;
    ASSERT_NO_THROW(parsed = nlohmann::json::parse(text)) << text;
    ASSERT_TRUE(parsed.is_object()) << text;
    EXPECT_EQ(parsed.at("variant").get<std::string>(), name) << text;
  }
}

TEST(BenchJson, CarriesEveryFieldWithItsType) {
  const nlohmann::json parsed = nlohmann::json::parse(sample_result("causal").json());
  EXPECT_EQ(parsed.at("batch"), 2);
  EXPECT_EQ(parsed.at("heads_q"), 16);
  EXPECT_EQ(parsed.at("heads_kv"), 4);
  EXPECT_EQ(parsed.at("seq_q"), 1000);
  EXPECT_EQ(parsed.at("seq_k"), 1537);
  EXPECT_EQ(parsed.at("head_dim"), 128);
  EXPECT_EQ(parsed.at("dtype"), "bf16");
  EXPECT_EQ(parsed.at("template"), "fwd_sm80");
  EXPECT_EQ(parsed.at("schedule"), "block_m=128 block_n=64 stages=1 warps=4");
  EXPECT_DOUBLE_EQ(parsed.at("median_ms").get<double>(), 0.12346);  // rounded as the CSV prints it
  EXPECT_DOUBLE_EQ(parsed.at("min_ms").get<double>(), 0.1);
  EXPECT_DOUBLE_EQ(parsed.at("max_ms").get<double>(), 0.2);
  EXPECT_DOUBLE_EQ(parsed.at("density").get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(parsed.at("tflops").get<double>(), 301.26);
  EXPECT_DOUBLE_EQ(parsed.at("bandwidth_gbs").get<double>(), 1234.6);
  EXPECT_EQ(parsed.at("input_sets"), 3);
}

TEST(BenchJson, BytesThatAreNotUtf8DoNotFailTheWriter) {
  std::string text;
  ASSERT_NO_THROW(text = sample_result(std::string("bad \xff byte")).json());
  const nlohmann::json parsed = nlohmann::json::parse(text);
  EXPECT_EQ(parsed.at("variant").get<std::string>(), "bad \xEF\xBF\xBD byte");  // U+FFFD
}

}  // namespace
}  // namespace attnjit
