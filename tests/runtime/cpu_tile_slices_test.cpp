// The (slice, panel) words of the CPU backend's tile classes (runtime/cpu/tile_classes.hpp):
// a cleared bit is a promise that no row of that 16-row slice admits any key of that 16-key
// panel, which the CPU forward relies on to skip the panel's products. Checked here against
// the mask evaluated per element, for masks without tensors (parameters bound), on 64-row
// blocks and on their merge into 128-row blocks; and the words must do something: a sliding
// window's partial sub-tiles have cleared bits. Likewise a set full bit (full_slices) is a
// promise that every pair of its (slice, panel) admits, which lets the forward skip the mask.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "compiler/eval.hpp"
#include "compiler/pipeline.hpp"
#include "dsl/presets.hpp"
#include "runtime/cpu/tile_classes.hpp"

namespace attnjit {
namespace {

using cpu::TileClassTable;

struct Case {
  std::string preset;
  Bindings bindings;
};

// Whether any (q, kv) of the box admits; the box clipped to the problem.
bool any_admitted(const ir::NodeRef& mask, ir::EvalEnv env, int q0, int q1, int k0, int k1) {
  for (int q = q0; q < q1; ++q)
    for (int kv = k0; kv < k1; ++kv) {
      env.q = q;
      env.kv = kv;
      if (ir::evaluate(mask, env).b) return true;
    }
  return false;
}

// Whether every (q, kv) of the box admits.
bool all_admitted(const ir::NodeRef& mask, ir::EvalEnv env, int q0, int q1, int k0, int k1) {
  for (int q = q0; q < q1; ++q)
    for (int kv = k0; kv < k1; ++kv) {
      env.q = q;
      env.kv = kv;
      if (!ir::evaluate(mask, env).b) return false;
    }
  return true;
}

// A set full bit is a promise that every pair of its (slice, panel) admits (the forward skips
// the mask there); returns how many full bits partial sub-tiles hold.
int expect_full_bits_sound(const TileClassTable& t, const ir::NodeRef& mask, const ir::EvalEnv& env, int block_q,
                           int seq_q, int seq_k, const std::string& what) {
  EXPECT_EQ(t.full_slices.size(), t.slices.size()) << what;
  int in_partial = 0;
  for (int qb = 0; qb < t.q_blocks; ++qb)
    for (int st = 0; st < t.sub_tiles; ++st) {
      const std::uint64_t word = t.full_slice_row(0, 0, qb)[st];
      EXPECT_EQ(word & ~t.slice_row(0, 0, qb)[st], 0u) << what << ": a full (slice, panel) that is not non-empty";
      for (int sl = 0; sl < t.slices_per_block; ++sl)
        for (int pn = 0; pn < TileClassTable::kPanelsPerSubTile; ++pn) {
          const int bit = 16 * (sl / 4) + 4 * (sl % 4) + pn;
          const int q0 = qb * block_q + sl * TileClassTable::kSliceRows;
          const int k0 = st * TileClassTable::kSubTile + pn * TileClassTable::kPanelKeys;
          if (!(word & (std::uint64_t{1} << bit)) || q0 >= seq_q || k0 >= seq_k) continue;
          in_partial += t.row(0, 0, qb)[st] == static_cast<std::uint8_t>(ir::TileClass::Partial);
          EXPECT_TRUE(all_admitted(mask, env, q0, std::min(q0 + 16, seq_q), k0, std::min(k0 + 16, seq_k)))
              << what << ": q block " << qb << " sub-tile " << st << " slice " << sl << " panel " << pn;
        }
    }
  return in_partial;
}

void expect_sound(const TileClassTable& t, const ir::NodeRef& mask, const ir::EvalEnv& env, int block_q, int seq_q,
                  int seq_k, const std::string& what) {
  ASSERT_EQ(t.slices_per_block * TileClassTable::kSliceRows, block_q) << what;
  for (int qb = 0; qb < t.q_blocks; ++qb)
    for (int st = 0; st < t.sub_tiles; ++st) {
      const std::uint64_t word = t.slice_row(0, 0, qb)[st];
      for (int sl = 0; sl < t.slices_per_block; ++sl)
        for (int pn = 0; pn < TileClassTable::kPanelsPerSubTile; ++pn) {
          const int bit = 16 * (sl / 4) + 4 * (sl % 4) + pn;
          if (word & (std::uint64_t{1} << bit)) continue;
          const int q0 = qb * block_q + sl * TileClassTable::kSliceRows;
          const int k0 = st * TileClassTable::kSubTile + pn * TileClassTable::kPanelKeys;
          EXPECT_FALSE(any_admitted(mask, env, q0, std::min(q0 + 16, seq_q), k0, std::min(k0 + 16, seq_k)))
              << what << ": q block " << qb << " sub-tile " << st << " slice " << sl << " panel " << pn;
        }
    }
}

TEST(CpuTileSlices, ClearedBitsAreEmptyAndWindowsHaveThem) {
  const std::vector<Case> cases = {
      {"sliding_window", Bindings().set("window", 100)},
      {"causal", {}},
      {"causal_bottom_right", {}},
      {"prefix_lm", Bindings().set("prefix_len", 70)},
      {"strided", Bindings().set("stride", 4).set("local", 40)},
  };
  const int seq_q = 333, seq_k = 401;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.preset);
    const Variant variant = presets::by_name(c.preset);
    const cpu::MaskFacts facts = cpu::analyse_mask(variant);
    const ir::LoweredExprs lowered = ir::lower({{"mask_mod", variant.mask_mod().node(), ir::Type::Bool}});
    ir::EvalEnv env;
    env.q_len = seq_q;
    env.kv_len = seq_k;
    env.num_heads = 2;
    for (const auto& p : variant.params()) env.params[p.name] = ir::Value::of_int(bound_int(c.bindings, p.name));
    const TileClassTable table =
        cpu::classify_tiles(variant, facts, cpu::TileProblem{1, 2, seq_q, seq_k, 64, 256}, c.bindings, 1);
    expect_sound(table, lowered.roots[0].root, env, 64, seq_q, seq_k, "64 rows");
    expect_sound(cpu::merge_q_blocks(table, 2), lowered.roots[0].root, env, 128, seq_q, seq_k, "128 rows");
    expect_sound(cpu::merge_q_blocks(table, 4), lowered.roots[0].root, env, 256, seq_q, seq_k, "256 rows");
    const int full_in_partial =
        expect_full_bits_sound(table, lowered.roots[0].root, env, 64, seq_q, seq_k, "full, 64 rows");
    expect_full_bits_sound(cpu::merge_q_blocks(table, 4), lowered.roots[0].root, env, 256, seq_q, seq_k,
                           "full, 256 rows");
    // A band's partial sub-tiles are mostly full panels: only those need no mask.
    if (c.preset == "sliding_window" || c.preset == "causal") EXPECT_GT(full_in_partial, 0);
    // The merged words hold each 64-row part's bits 16 bits apart.
    const TileClassTable four = cpu::merge_q_blocks(table, 4);
    for (int st = 0; st < table.sub_tiles; ++st)
      for (int k = 0; k < 4 && k < table.q_blocks; ++k)
        EXPECT_EQ((four.slice_row(0, 0, 0)[st] >> (16 * k)) & 0xffffu, table.slice_row(0, 0, k)[st]) << st << " " << k;
    if (c.preset == "sliding_window") {
      int cleared = 0;
      for (std::size_t i = 0; i < table.classes.size(); ++i)
        if (table.classes[i] == static_cast<std::uint8_t>(ir::TileClass::Partial))
          cleared += 16 - __builtin_popcount(table.slices[i] & 0xffffu);
      EXPECT_GT(cleared, 0);
    }
  }
}

}  // namespace
}  // namespace attnjit
