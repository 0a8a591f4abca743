// Tile classes for the CPU backend (see tile_classes.hpp).
#include "runtime/cpu/tile_classes.hpp"

#include <algorithm>

#include "compiler/pipeline.hpp"
#include "runtime/api/tensor_ranges.hpp"
#include "runtime/cpu/thread_pool.hpp"

namespace attnjit::cpu {

MaskFacts analyse_mask(const Variant& variant) {
  MaskFacts facts;
  const ir::LoweredExprs lowered = ir::lower({{"mask_mod", variant.mask_mod().node(), ir::Type::Bool}});
  const ir::NodeRef& mask = lowered.roots[0].root;
  facts.has_mask = !(mask->op == ir::Op::ConstBool && mask->int_value == 1);
  facts.normalized = ir::normalize_for_intervals(mask);
  ir::IndexUses uses = ir::index_uses(mask);
  facts.uses_batch = uses.batch;
  facts.uses_head = uses.head;
  facts.tensors = std::move(uses.tensors);
  return facts;
}

TileClassTable classify_tiles(const Variant& variant, const MaskFacts& facts, const TileProblem& p,
                              const Bindings& bindings, int threads) {
  TileClassTable table;
  table.q_blocks = (p.seq_q + p.block_q - 1) / p.block_q;
  table.sub_tiles = (p.seq_k + TileClassTable::kSubTile - 1) / TileClassTable::kSubTile;
  if (!facts.has_mask) {
    table.classes.assign(static_cast<std::size_t>(table.q_blocks) * table.sub_tiles,
                         static_cast<std::uint8_t>(ir::TileClass::Full));
    return table;
  }
  // Slices of 64-row blocks: 4 x 4 (slice, panel) bits per sub-tile.
  const bool with_slices = p.block_q == 4 * TileClassTable::kSliceRows;
  table.batches = facts.uses_batch ? p.batch : 1;
  table.heads = facts.uses_head ? p.heads_q : 1;
  table.classes.assign(static_cast<std::size_t>(table.batches) * table.heads * table.q_blocks * table.sub_tiles, 0);
  if (with_slices) {
    table.slices.assign(table.classes.size(), 0);
    table.full_slices.assign(table.classes.size(), 0);
    table.slices_per_block = 4;
  }

  ir::TileBox base;
  base.q_len = p.seq_q;
  base.kv_len = p.seq_k;
  base.num_heads = p.heads_q;
  for (const auto& param : variant.params()) {
    if (param.type == ir::Type::Int)
      base.int_params[param.name] = bound_int(bindings, param.name);
    else
      base.float_params[param.name] = bound_float(bindings, param.name);
  }
  if (facts.reads_tensor()) base.tensor_range = bound_tensor_ranges(bindings);

  const int sub = TileClassTable::kSubTile, per_tile = p.block_kv / sub;
  const int rows_of_tasks = table.batches * table.heads * table.q_blocks;
  ThreadPool::instance().parallel_for(
      rows_of_tasks,
      [&](int, int task) {
        const int qb = task % table.q_blocks, bh = task / table.q_blocks;
        const int b = bh / table.heads, h = bh % table.heads;
        ir::TileBox box = base;
        box.b = {b, b};
        box.h = {h, h};
        box.q = {static_cast<std::int64_t>(qb) * p.block_q,
                 std::min<std::int64_t>((qb + 1LL) * p.block_q, p.seq_q) - 1};
        std::uint8_t* out = &table.classes[static_cast<std::size_t>(task) * table.sub_tiles];
        const auto classify = [&](int first_sub, int last_sub) {  // sub-tiles [first, last)
          box.kv = {static_cast<std::int64_t>(first_sub) * sub,
                    std::min<std::int64_t>(static_cast<std::int64_t>(last_sub) * sub, p.seq_k) - 1};
          return ir::classify_tile(facts.normalized, box);
        };
        for (int t0 = 0; t0 < table.sub_tiles; t0 += per_tile) {
          const int t1 = std::min(t0 + per_tile, table.sub_tiles);
          const ir::TileClass whole = classify(t0, t1);
          for (int s = t0; s < t1; ++s)
            out[s] =
                static_cast<std::uint8_t>(whole != ir::TileClass::Partial || t1 - t0 == 1 ? whole : classify(s, s + 1));
        }
        if (!with_slices) return;
        // (slice, panel) classes inside the partial sub-tiles.
        std::uint64_t* words = &table.slices[static_cast<std::size_t>(task) * table.sub_tiles];
        std::uint64_t* full_words = &table.full_slices[static_cast<std::size_t>(task) * table.sub_tiles];
        const ir::IntRange block_rows = box.q;
        for (int t = 0; t < table.sub_tiles; ++t) {
          if (out[t] != static_cast<std::uint8_t>(ir::TileClass::Partial)) {
            words[t] = out[t] == static_cast<std::uint8_t>(ir::TileClass::Full) ? 0xffffu : 0u;
            full_words[t] = words[t];
            continue;
          }
          std::uint64_t bits = 0, full_bits = 0;
          for (int sl = 0; sl < 4; ++sl) {
            const std::int64_t r0 = block_rows.lo + sl * TileClassTable::kSliceRows;
            if (r0 > block_rows.hi) break;
            box.q = {r0, std::min<std::int64_t>(r0 + TileClassTable::kSliceRows - 1, block_rows.hi)};
            for (int pn = 0; pn < TileClassTable::kPanelsPerSubTile; ++pn) {
              const std::int64_t k0 = static_cast<std::int64_t>(t) * sub + pn * TileClassTable::kPanelKeys;
              if (k0 >= p.seq_k) break;
              box.kv = {k0, std::min<std::int64_t>(k0 + TileClassTable::kPanelKeys - 1, p.seq_k - 1)};
              const ir::TileClass cls = ir::classify_tile(facts.normalized, box);
              const std::uint64_t bit = std::uint64_t{1} << TileClassTable::slice_bit(sl, pn);
              if (cls != ir::TileClass::Empty) bits |= bit;
              if (cls == ir::TileClass::Full) full_bits |= bit;
            }
          }
          box.q = block_rows;
          words[t] = bits;
          full_words[t] = full_bits;
        }
      },
      threads);
  return table;
}

TileClassTable merge_q_blocks(const TileClassTable& table, int factor) {
  TileClassTable out = table;
  out.q_blocks = (table.q_blocks + factor - 1) / factor;
  out.classes.assign(static_cast<std::size_t>(out.batches) * out.heads * out.q_blocks * out.sub_tiles, 0);
  // Two or four blocks of 4 slices make one of 8 or 16; other merges drop the slices.
  const bool keep_slices = (factor == 2 || factor == 4) && table.slices_per_block == 4;
  out.slices.assign(keep_slices ? out.classes.size() : 0, 0);
  out.full_slices.assign(keep_slices ? out.classes.size() : 0, 0);
  out.slices_per_block = keep_slices ? 4 * factor : 0;
  for (int b = 0; b < out.batches; ++b)
    for (int h = 0; h < out.heads; ++h)
      for (int qb = 0; qb < out.q_blocks; ++qb) {
        std::uint8_t* merged = out.row(b, h, qb);
        for (int s = 0; s < out.sub_tiles; ++s) {
          const std::uint8_t first = table.row(b, h, qb * factor)[s];
          std::uint8_t cls = first;
          for (int k = 1; k < factor && qb * factor + k < table.q_blocks; ++k)
            if (table.row(b, h, qb * factor + k)[s] != first) cls = static_cast<std::uint8_t>(ir::TileClass::Partial);
          merged[s] = cls;
          if (keep_slices) {
            std::uint64_t word = 0, full_word = 0;
            for (int k = 0; k < factor && qb * factor + k < table.q_blocks; ++k) {
              word |= table.slice_row(b, h, qb * factor + k)[s] << (16 * k);
              full_word |= table.full_slice_row(b, h, qb * factor + k)[s] << (16 * k);
            }
            out.slices[out.offset(b, h, qb) + s] = word;
            out.full_slices[out.offset(b, h, qb) + s] = full_word;
          }
        }
      }
  return out;
}

}  // namespace attnjit::cpu
