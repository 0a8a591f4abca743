// Bounds of captured-tensor reads (runtime/api/read_bounds): what interval analysis proves
// in range needs no device check; a where whose untaken branch leaves the extent (T5-style
// buckets) and a table too small for the problem are not proven; an output gate smaller
// than [B, H, Sq] is refused before the launch. And int parameters outside int32 are a
// UserError instead of wrapping.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "compiler/error.hpp"
#include "dsl/presets.hpp"
#include "runtime/api/bindings.hpp"
#include "runtime/api/read_bounds.hpp"

namespace attnjit {
namespace {

using namespace attnjit::dsl::vars;

// A shape-only DLTensor view (the analysis reads shapes, never data).
struct ShapeOnly {
  std::vector<std::int64_t> shape;
  float dummy = 0;
  DLTensor dl() {
    DLTensor t{};
    t.data = &dummy;
    t.device = {kDLCUDA, 0};
    t.ndim = static_cast<int>(shape.size());
    t.dtype = {kDLFloat, 32, 1};
    t.shape = shape.data();
    return t;
  }
};

TEST(ReadBounds, ARelativeBiasTableThatCoversTheProblemIsProven) {
  const Variant v = presets::relative_bias();  // rel_bias[h, kv - q + q_len - 1]
  const ProblemShape p{2, 4, 4, 100, 100};
  ShapeOnly fits{{4, 199}}, short_table{{4, 150}}, few_heads{{2, 199}};
  Bindings b;
  b.set("rel_bias", fits.dl());
  EXPECT_FALSE(first_unproven_read(v, p, 64, b).has_value());
  b.set("rel_bias", short_table.dl());
  const auto r = first_unproven_read(v, p, 64, b);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->tensor, "rel_bias");
  EXPECT_EQ(r->dim, 1);
  EXPECT_EQ(r->hi, 198);
  EXPECT_EQ(r->extent, 150);
  EXPECT_NE(r->str().find("extent 150"), std::string::npos) << r->str();
  b.set("rel_bias", few_heads.dl());
  const auto h = first_unproven_read(v, p, 64, b);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->dim, 0);
}

TEST(ReadBounds, AWhereWhoseUntakenBranchLeavesTheTableIsNotProven) {
  // T5-style: distances beyond 31 all read bucket 31, but the other branch's range reaches
  // kv - q itself, which interval analysis cannot rule out: the device checks instead.
  const Tensor bucket_bias("bucket_bias", ir::TensorDType::F32, 1);
  const Expr d = kv - q;
  const Variant v = Variant("t5").with_score_mod(score + bucket_bias(where(d < 32 && d > -32, d + 32, 63)));
  ShapeOnly table{{64}};
  Bindings b;
  b.set("bucket_bias", table.dl());
  EXPECT_TRUE(first_unproven_read(v, ProblemShape{1, 1, 1, 500, 500}, 64, b).has_value());
  // On a problem small enough that every distance is in [-31, 31], it is proven.
  EXPECT_FALSE(first_unproven_read(v, ProblemShape{1, 1, 1, 20, 20}, 64, b).has_value());
}

TEST(ReadBounds, AnOutputGateSmallerThanTheProblemIsRefused) {
  const Variant v = presets::output_gate(OutputGateHook{"gate", ir::TensorDType::F32, 3});
  ShapeOnly fits{{2, 4, 100}}, short_gate{{2, 4, 99}};
  Bindings b;
  b.set("gate", fits.dl());
  EXPECT_FALSE(first_unproven_read(v, ProblemShape{2, 4, 4, 100, 100}, 64, b).has_value());
  b.set("gate", short_gate.dl());
  try {
    first_unproven_read(v, ProblemShape{2, 4, 4, 100, 100}, 64, b);
    FAIL() << "expected a UserError";
  } catch (const UserError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("'gate'"), std::string::npos) << m;
    EXPECT_NE(m.find("dimension 2"), std::string::npos) << m;
    EXPECT_NE(m.find("extent 99"), std::string::npos) << m;
  }
}

TEST(Bindings, IntParametersOutsideInt32AreRefused) {
  const Variant v = presets::sliding_window();
  Bindings b;
  b.set("window", std::int64_t{3000000000});
  try {
    check_bindings(v, b);
    FAIL() << "expected a UserError";
  } catch (const UserError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("'window'"), std::string::npos) << m;
    EXPECT_NE(m.find("3000000000"), std::string::npos) << m;
    EXPECT_NE(m.find("2147483647"), std::string::npos) << m;
  }
  b.set("window", std::int64_t{2147483647});
  EXPECT_NO_THROW(check_bindings(v, b));
  b.set("window", std::int64_t{-2147483648LL});
  EXPECT_NO_THROW(check_bindings(v, b));
  b.set("window", std::int64_t{-2147483649LL});
  EXPECT_THROW(check_bindings(v, b), UserError);
}

}  // namespace
}  // namespace attnjit
