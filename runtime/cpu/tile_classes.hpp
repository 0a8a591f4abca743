// Tile classes for the CPU backend: for each block of query rows and each 64-key sub-tile,
// whether the mask admits no pair (empty: skipped), every pair (full: no mask evaluated) or
// some (partial: the mask per element). Answered by the host interval analysis
// (compiler/mask_analysis) over the normalized mask, with the bound parameter values; a mask
// that reads a tensor (document ids) is bounded by scanning the bound tensor over each read's
// index range, so packed documents get exact classes too, without a per-element pass.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compiler/ir.hpp"
#include "compiler/mask_analysis.hpp"
#include "dsl/variant.hpp"
#include "runtime/api/bindings.hpp"

namespace attnjit::cpu {

// What the tile classifier needs from a variant, computed once.
struct MaskFacts {
  bool has_mask = false;
  bool uses_batch = false, uses_head = false;  // the mask mentions b (h), tensor indices included
  std::vector<std::string> tensors;            // the captured tensors the mask reads, by name
  ir::NodeRef normalized;                      // the lowered mask, normalized for intervals
  bool reads_tensor() const { return !tensors.empty(); }
};
MaskFacts analyse_mask(const Variant& variant);

struct TileClassTable {
  static constexpr int kSubTile = 64;  // keys per sub-tile
  int batches = 1, heads = 1;          // 1 where the mask depends on neither b nor h
  int q_blocks = 0, sub_tiles = 0;
  std::vector<std::uint8_t> classes;  // [batches][heads][q_blocks][sub_tiles], ir::TileClass
  // Inside the sub-tiles, which 16-key panels each 16-row slice of a block may need: bit
  // 4 * slice + panel is set unless the interval analysis proves that (slice, panel) empty
  // (every bit on full sub-tiles, none on empty ones); laid out like `classes`. Made for blocks
  // of 64 rows (4 slices, 16 bits) and kept by merge_q_blocks(2) and (4) (8 and 16 slices, the
  // k-th 64-row part 16 k bits up); empty otherwise.
  static constexpr int kSliceRows = 16, kPanelKeys = 16, kPanelsPerSubTile = kSubTile / kPanelKeys;
  // The bit of (slice, panel) in a sub-tile's word: 4 per slice within a 64-row part, each
  // further part 16 bits up.
  static constexpr int slice_bit(int slice, int panel) { return 16 * (slice / 4) + 4 * (slice % 4) + panel; }
  std::vector<std::uint64_t> slices;
  // The same bits for the (slice, panel)s the analysis proves full (the mask admits every pair):
  // inside a partial sub-tile only the other panels need the mask per element.
  std::vector<std::uint64_t> full_slices;
  int slices_per_block = 0;

  // The sub-tiles of one block of rows (b and h ignored where the classes do not depend on them).
  std::size_t offset(int b, int h, int q_block) const {
    const std::size_t bb = batches == 1 ? 0 : static_cast<std::size_t>(b);
    const std::size_t hh = heads == 1 ? 0 : static_cast<std::size_t>(h);
    return ((bb * heads + hh) * q_blocks + q_block) * sub_tiles;
  }
  const std::uint8_t* row(int b, int h, int q_block) const { return &classes[offset(b, h, q_block)]; }
  std::uint8_t* row(int b, int h, int q_block) { return &classes[offset(b, h, q_block)]; }
  const std::uint64_t* slice_row(int b, int h, int q_block) const {
    return slices.empty() ? nullptr : &slices[offset(b, h, q_block)];
  }
  const std::uint64_t* full_slice_row(int b, int h, int q_block) const {
    return full_slices.empty() ? nullptr : &full_slices[offset(b, h, q_block)];
  }
};

struct TileProblem {
  int batch = 1, heads_q = 1, seq_q = 1, seq_k = 1;
  int block_q = 64, block_kv = 256;  // block_kv: a multiple of kSubTile
};

// The classes for every (b, h, q block, sub-tile); `bindings` are checked already. Work is
// spread over `threads` workers of the pool. A mask that reads a tensor's element range of
// more than 65536 elements for one tile leaves that tile partial.
TileClassTable classify_tiles(const Variant& variant, const MaskFacts& facts, const TileProblem& problem,
                              const Bindings& bindings, int threads);

// The classes for blocks `factor` times as many rows: a sub-tile is empty (full) where it is
// empty (full) in every block merged, else partial.
TileClassTable merge_q_blocks(const TileClassTable& table, int factor);

}  // namespace attnjit::cpu
