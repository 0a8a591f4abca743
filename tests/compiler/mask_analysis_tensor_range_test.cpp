// TileBox::tensor_range (compiler/mask_analysis.hpp): with the values a captured tensor read
// can take over a tile, the interval analysis classifies masks that read tensors (document
// ids, learned masks) instead of calling every such tile partial. The CPU backend supplies the
// ranges by scanning the bound tensor (runtime/cpu/tile_classes.cpp).
#include <gtest/gtest.h>

#include <optional>
#include <span>
#include <utility>

#include "compiler/mask_analysis.hpp"
#include "compiler/pipeline.hpp"
#include "dsl/presets.hpp"

namespace attnjit {
namespace {

using ir::TileClass;

ir::NodeRef normalized_mask(const Variant& v) {
  const auto lowered = ir::lower({{"mask_mod", v.mask_mod().node(), ir::Type::Bool}});
  return ir::normalize_for_intervals(lowered.roots[0].root);
}

// A box over q [q0, q1] and kv [k0, k1]; reads of `doc` take the values in [lo(q), hi(q)] for
// the query's index range and [lo(kv), hi(kv)] for the key's, as if ids were i / 100.
ir::TileBox document_box(std::int64_t q0, std::int64_t q1, std::int64_t k0, std::int64_t k1) {
  ir::TileBox box;
  box.q = {q0, q1};
  box.kv = {k0, k1};
  box.q_len = box.kv_len = 1000;
  box.tensor_range = [](const ir::Node& read, std::span<const ir::IntRange> index) {
    EXPECT_EQ(read.name, "doc");
    EXPECT_EQ(index.size(), 2u);
    return std::optional<std::pair<double, double>>(
        std::make_pair(static_cast<double>(index[1].lo / 100), static_cast<double>(index[1].hi / 100)));
  };
  return box;
}

TEST(MaskAnalysisTensorRange, DocumentTilesAreExactWithRanges) {
  const ir::NodeRef mask = normalized_mask(presets::document());
  EXPECT_EQ(ir::classify_tile(mask, document_box(0, 63, 0, 63)), TileClass::Full);         // one document
  EXPECT_EQ(ir::classify_tile(mask, document_box(0, 63, 200, 263)), TileClass::Empty);     // documents 0 and 2
  EXPECT_EQ(ir::classify_tile(mask, document_box(64, 127, 64, 127)), TileClass::Partial);  // 0 and 1 on both sides
  ir::TileBox unknown = document_box(0, 63, 200, 263);
  unknown.tensor_range = nullptr;  // no ranges: as before, a tensor read is unknown
  EXPECT_EQ(ir::classify_tile(mask, unknown), TileClass::Partial);
  unknown.tensor_range = [](const ir::Node&, std::span<const ir::IntRange>) {
    return std::optional<std::pair<double, double>>();  // the provider gives up: unknown
  };
  EXPECT_EQ(ir::classify_tile(mask, unknown), TileClass::Partial);
}

TEST(MaskAnalysisTensorRange, FloatAndBoolReads) {
  // A learned keep-mask of floats, thresholded, and a boolean mask tensor.
  const Variant learned = Variant::parse("tensor keep: f32, rank=2;\nmask: keep[q / 64, kv / 64] > 0.5;\n");
  const Variant boolean = Variant::parse("tensor allow: u8, rank=2;\nmask: allow[q, kv];\n");
  const auto box_with = [](double lo, double hi) {
    ir::TileBox box;
    box.q = {0, 63};
    box.kv = {0, 63};
    box.tensor_range = [lo, hi](const ir::Node&, std::span<const ir::IntRange>) {
      return std::optional<std::pair<double, double>>(std::make_pair(lo, hi));
    };
    return box;
  };
  const ir::NodeRef keep = normalized_mask(learned), allow = normalized_mask(boolean);
  EXPECT_EQ(ir::classify_tile(keep, box_with(0.7, 0.9)), TileClass::Full);
  EXPECT_EQ(ir::classify_tile(keep, box_with(0.0, 0.2)), TileClass::Empty);
  EXPECT_EQ(ir::classify_tile(keep, box_with(0.2, 0.7)), TileClass::Partial);
  EXPECT_EQ(ir::classify_tile(allow, box_with(1, 1)), TileClass::Full);
  EXPECT_EQ(ir::classify_tile(allow, box_with(0, 0)), TileClass::Empty);
  EXPECT_EQ(ir::classify_tile(allow, box_with(0, 1)), TileClass::Partial);
}

}  // namespace
}  // namespace attnjit
