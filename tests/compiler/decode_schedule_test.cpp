// templates/decode_schedule.h on the host: every CTA of a stream-K decode launch walks its
// pieces with the same functions the kernel runs, and the walk must take each kv tile of each
// (sequence, kv head, row block) exactly once, give a unit's pieces one count and consecutive
// CTAs, leave every piece's partial result in a slot of its own CTA that nothing overwrites
// while another piece may still merge it and that the merging piece (whichever arrives last)
// reads back, and keep the CTAs balanced.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "templates/decode_schedule.h"

namespace {

constexpr int kBlockN = 64;

struct Launch {
  std::vector<int> lens;  // keys per sequence
  int heads_kv = 8, row_blocks = 1;
  long long grid = 264;  // the plan's CTAs (resident slots, or fewer)
  std::string str() const {
    return "B=" + std::to_string(lens.size()) + " Hkv=" + std::to_string(heads_kv) +
           " row_blocks=" + std::to_string(row_blocks) + " grid=" + std::to_string(grid);
  }
};

struct Walk {
  AjDecodeRanges ranges;
  std::map<long long, std::vector<AjDecodePiece>> pieces_of_cta;
};

// What the kernel does: the tile prefix over the batch, the ranges, then each CTA's pieces.
Walk walk(const Launch& l, std::vector<long long>& prefix) {
  const int batch = static_cast<int>(l.lens.size()), units = l.heads_kv * l.row_blocks;
  prefix.assign(batch + 1, 0);
  bool uniform = true;
  for (int b = 0; b < batch; ++b) {
    const int tiles = (l.lens[b] + kBlockN - 1) / kBlockN;
    uniform = uniform && tiles == (l.lens[0] + kBlockN - 1) / kBlockN;
    prefix[b + 1] = prefix[b] + static_cast<long long>(tiles) * units;
  }
  Walk w;
  w.ranges = aj_decode_ranges(prefix[batch], l.grid, uniform, static_cast<long long>(batch) * units);
  for (long long cta = 0; cta < w.ranges.ctas; ++cta) {
    const long long t0 = aj_decode_start(w.ranges, cta), t1 = aj_decode_start(w.ranges, cta + 1);
    if (t0 >= t1) continue;
    int b = aj_decode_sequence_of(prefix.data(), batch, t0);
    for (long long x = t0; x < t1;) {
      AjDecodePiece piece{};
      const long long next = aj_decode_next_piece(w.ranges, prefix.data(), units, l.row_blocks, cta, x, t1, b, piece);
      EXPECT_GT(next, x) << l.str() << " cta " << cta << ": a piece of no tiles";
      if (next <= x) return w;
      w.pieces_of_cta[cta].push_back(piece);
      x = next;
    }
  }
  return w;
}

// Every property the kernel relies on, for one launch.
void check_schedule(const Launch& l) {
  SCOPED_TRACE(l.str());
  std::vector<long long> prefix;
  const Walk w = walk(l, prefix);
  ASSERT_LE(w.ranges.ctas, l.grid);
  const int batch = static_cast<int>(l.lens.size());
  using Unit = std::tuple<int, int, int>;  // b, hk, rb
  std::map<Unit, std::vector<int>> taken;  // times each tile of a unit was taken
  std::map<Unit, std::vector<std::pair<long long, AjDecodePiece>>> by_unit;
  std::map<int, AjDecodePiece> written;  // slot -> its last writer
  long long most = 0;
  for (const auto& [cta, pieces] : w.pieces_of_cta) {
    long long tiles = 0;
    for (const AjDecodePiece& p : pieces) {
      ASSERT_GE(p.b, 0);
      ASSERT_LT(p.b, batch);
      ASSERT_LT(p.hk, l.heads_kv);
      ASSERT_LT(p.rb, l.row_blocks);
      const int n = (l.lens[p.b] + kBlockN - 1) / kBlockN;
      ASSERT_LE(0, p.tile_begin);
      ASSERT_LT(p.tile_begin, p.tile_end);
      ASSERT_LE(p.tile_end, n);
      auto& counts = taken[{p.b, p.hk, p.rb}];
      counts.resize(n);
      for (int t = p.tile_begin; t < p.tile_end; ++t) ++counts[t];
      tiles += p.tile_end - p.tile_begin;
      // The slot this piece writes: its own CTA's (two per CTA). A CTA may write a slot again
      // only over a unit it held whole (one piece), which it merged before moving on; a piece
      // that other CTAs' pieces merge with must stay.
      const int slot = aj_decode_piece_slot(p, p.slot);
      EXPECT_EQ(slot / 2, cta) << "piece " << p.slot << " of unit (" << p.b << "," << p.hk << "," << p.rb << ")";
      const auto [writer, fresh] = written.try_emplace(slot, p);
      if (!fresh) {
        EXPECT_EQ(writer->second.pieces, 1) << "slot " << slot << " overwritten while other CTAs' pieces need it";
        writer->second = p;
      }
      by_unit[{p.b, p.hk, p.rb}].push_back({cta, p});
    }
    most = std::max(most, tiles);
  }
  // Each tile of each sequence with keys taken exactly once; none of an empty sequence.
  for (int b = 0; b < batch; ++b)
    for (int hk = 0; hk < l.heads_kv; ++hk)
      for (int rb = 0; rb < l.row_blocks; ++rb) {
        const int n = (l.lens[b] + kBlockN - 1) / kBlockN;
        const auto it = taken.find({b, hk, rb});
        if (n == 0) {
          EXPECT_EQ(it, taken.end()) << "sequence " << b << " has no keys";
          continue;
        }
        ASSERT_NE(it, taken.end()) << "unit (" << b << "," << hk << "," << rb << ") never taken";
        for (int t = 0; t < n; ++t) EXPECT_EQ(it->second[t], 1) << "tile " << t << " of (" << b << "," << hk << ")";
      }
  // A unit's pieces: one count, consecutive CTAs from first_cta in piece order, and every
  // piece (the merger may be any of them) finds piece k where piece k's CTA wrote it.
  for (const auto& [unit, pieces] : by_unit) {
    const AjDecodePiece& first = pieces.front().second;
    ASSERT_EQ(static_cast<int>(pieces.size()), first.pieces);
    for (const auto& [cta, p] : pieces) {
      EXPECT_EQ(p.pieces, first.pieces);
      EXPECT_EQ(cta, p.first_cta + p.slot);
      for (const auto& [other_cta, q] : pieces)
        EXPECT_EQ(aj_decode_piece_slot(p, q.slot), aj_decode_piece_slot(q, q.slot));
    }
  }
  // Balance: equal ranges differ by one tile at most; the split layout costs one tile more.
  const long long total = prefix[batch];
  if (total > 0) EXPECT_LE(most, (total + w.ranges.ctas - 1) / w.ranges.ctas + 1);
}

TEST(DecodeSchedule, EqualLengthsTakeTheSplitLayout) {
  // B=8 Hkv=8 at 8k keys on 264 slots: 64 units of 128 tiles, 4 pieces of 32 each.
  const Launch l{std::vector<int>(8, 8192), 8, 1, 264};
  check_schedule(l);
  std::vector<long long> prefix;
  const Walk w = walk(l, prefix);
  EXPECT_EQ(w.ranges.per_unit, 4);
  EXPECT_EQ(w.ranges.per_piece, 32);
  EXPECT_EQ(w.pieces_of_cta.size(), 256u);  // 8 CTAs idle
  for (const auto& [cta, pieces] : w.pieces_of_cta) EXPECT_EQ(pieces.size(), 1u) << "cta " << cta;
  // 100 units on 264 slots: 2 pieces of 64 tiles would leave a CTA 64 tiles where equal
  // ranges give 49, so the ranges cross units.
  const Walk uneven = walk(Launch{std::vector<int>(25, 8192), 4, 1, 264}, prefix);
  EXPECT_EQ(uneven.ranges.per_unit, 0);
}

TEST(DecodeSchedule, UnequalLengthsCutAcrossUnits) {
  // One 32k sequence and seven of 1k: the long one's units are shared by many CTAs.
  std::vector<int> lens(8, 1000);
  lens[0] = 32768;
  const Launch l{lens, 8, 1, 264};
  check_schedule(l);
  std::vector<long long> prefix;
  const Walk w = walk(l, prefix);
  EXPECT_EQ(w.ranges.per_unit, 0);
  EXPECT_EQ(w.pieces_of_cta.size(), 264u);
  int most_pieces = 0;
  for (const auto& [cta, pieces] : w.pieces_of_cta) {
    if (pieces.front().b == 0) most_pieces = std::max(most_pieces, pieces.front().pieces);
  }
  EXPECT_GE(most_pieces, 16);  // 4096 of 4992 tiles over 8 units: ~27 CTAs each
}

TEST(DecodeSchedule, EdgeCases) {
  check_schedule(Launch{{0, 0, 0}, 8, 1, 264});           // no keys at all: no CTA runs
  check_schedule(Launch{{1, 2}, 4, 1, 8});                // fewer tiles than CTAs
  check_schedule(Launch{{0, 1, 32763, 100}, 8, 1, 264});  // empty, one key, 32k
  check_schedule(Launch{{3001, 4097}, 4, 4, 264});        // row blocks past the first
  check_schedule(Launch{{5000, 0, 17}, 2, 1, 1});         // one CTA takes everything
  check_schedule(Launch{std::vector<int>(3, 4097), 8, 1, 264});
  check_schedule(Launch{std::vector<int>(300, 64), 8, 1, 264});  // more units than CTAs, equal
  check_schedule(Launch{{100, 0, 0, 0, 200, 0, 64}, 2, 1, 3});   // a range crossing empty sequences
}

TEST(DecodeSchedule, RandomBatches) {
  std::mt19937 rng(11);
  for (int round = 0; round < 300; ++round) {
    const int batch = 1 + static_cast<int>(rng() % (round < 250 ? 40 : AJ_STREAM_K_MAX_BATCH));
    Launch l;
    l.heads_kv = 1 + static_cast<int>(rng() % 8);
    l.row_blocks = 1 + static_cast<int>(rng() % 3);
    l.grid = 1 + static_cast<long long>(rng() % 400);
    const bool equal = rng() % 4 == 0;
    const int common = static_cast<int>(rng() % 9000);
    for (int b = 0; b < batch; ++b)
      l.lens.push_back(equal ? common : (rng() % 8 == 0 ? 0 : static_cast<int>(rng() % 20000)));
    check_schedule(l);
    if (HasFailure()) return;
  }
}

}  // namespace
