// attnjit decode schedule: which kv tiles each CTA of a stream-K decode launch takes, and in
// which partial slot each piece of a (sequence, kv head, row block) leaves its result.
//
// One file, two compilers: the decode template (templates/decode_sm80/) pastes it into the
// generated unit ahead of decode_sm80.cuh, whose kernel walks its CTA's pieces with it, and
// tests/compiler/decode_schedule_test.cpp walks every CTA's pieces on the host to check that
// each tile is taken once, each unit's pieces agree on their count and their slots. Plain C++
// only: no headers, nothing NVRTC would need an include path for.
//
// Units: every sequence b has `units` of them (kv head x row block, unit = hk * row_blocks +
// rb), each of n_b kv tiles (its length in tiles); laid end to end, sequence-major, they are
// `total` tiles, and prefix[b] counts the tiles of the sequences before b (prefix[batch] =
// total). CTA c takes tiles [start(c), start(c + 1)); a piece is its share of one unit.
#ifndef ATTNJIT_DECODE_SCHEDULE_H
#define ATTNJIT_DECODE_SCHEDULE_H

#ifndef AJ_HOST_DEVICE
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define AJ_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define AJ_HOST_DEVICE inline
#endif
#endif

// The most sequences a stream-K launch takes: every CTA keeps the batch's tile prefix in shared
// memory (kDecodeStreamKMaxBatch on the host, which runs split-K past it).
#define AJ_STREAM_K_MAX_BATCH 1024

// One CTA's share of one (sequence, kv head, row block): kv tiles [tile_begin, tile_end) of
// it, written as piece `slot` of `pieces`; the piece that arrives last merges all of them.
// Split-K: piece = slot = the split. Stream-K: the pieces are consecutive CTAs from
// `first_cta`; where piece k lies: aj_decode_piece_slot.
struct AjDecodePiece {
  int b, hk, rb;
  int tile_begin, tile_end;
  int pieces, slot;
  int first_cta, first_slot;  // stream-K only
};

// Stream-K's partial slot of the unit's piece k: two per CTA, the first for the first piece of
// its range, the second for its last (only those can share a unit with another CTA).
AJ_HOST_DEVICE int aj_decode_piece_slot(const AjDecodePiece& piece, int k) {
  return k == 0 ? piece.first_slot : 2 * (piece.first_cta + k);
}

// The CTAs' ranges of the `total` tiles: CTA c takes [start(c), start(c + 1)); owner(x) is the
// CTA whose range holds tile x. Equal ranges cut across units (stream-K), unless every unit has
// the same `unit_tiles` and a split layout (each unit cut into `per_unit` ranges of `per_piece`
// tiles, no range crossing a unit's end) is as balanced: then a CTA runs one piece, never two
// with a pipeline start each, as split-K does for equal lengths.
struct AjDecodeRanges {
  long long total = 0, ctas = 0;
  long long unit_tiles = 0;
  int per_unit = 0, per_piece = 0;  // the split layout when per_unit > 0
};

// `grid` CTAs over `total` tiles of `units` units (all sequences'); `uniform`: every unit has
// total / units tiles.
AJ_HOST_DEVICE AjDecodeRanges aj_decode_ranges(long long total, long long grid, bool uniform, long long units) {
  AjDecodeRanges r;
  r.total = total;
  r.ctas = grid < total ? grid : total;  // at most one CTA per tile: every range holds one or more
  if (!uniform || total == 0 || units > grid) return r;
  r.unit_tiles = total / units;
  const long long split = grid / units;
  const long long piece = (r.unit_tiles + split - 1) / split;
  // One tile of slack for the second pipeline start a crossing range pays.
  if (piece > (total + r.ctas - 1) / r.ctas + 1) return r;
  r.per_piece = (int)piece;
  r.per_unit = (int)((r.unit_tiles + piece - 1) / piece);
  return r;
}

// First tile of CTA c's range (total for CTAs past the last range).
AJ_HOST_DEVICE long long aj_decode_start(const AjDecodeRanges& r, long long c) {
  if (r.per_unit == 0) return c * r.total / r.ctas;
  if (c >= (r.total / r.unit_tiles) * r.per_unit) return r.total;
  const long long within = (c % r.per_unit) * (long long)r.per_piece;
  return (c / r.per_unit) * r.unit_tiles + (within < r.unit_tiles ? within : r.unit_tiles);
}

// The CTA whose range holds tile x.
AJ_HOST_DEVICE long long aj_decode_owner(const AjDecodeRanges& r, long long x) {
  if (r.per_unit == 0) return ((x + 1) * r.ctas + r.total - 1) / r.total - 1;
  return (x / r.unit_tiles) * r.per_unit + (x % r.unit_tiles) / r.per_piece;
}

// The sequence holding tile x (x < prefix[batch]): the last b with prefix[b] <= x, which has
// tiles.
AJ_HOST_DEVICE int aj_decode_sequence_of(const long long* prefix, int batch, long long x) {
  int lo = 0, hi = batch - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (prefix[mid] <= x)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// CTA `cta`'s piece that starts at tile x of its range (which ends at t1); `b` is the sequence
// of the previous piece (or aj_decode_sequence_of the range's start) and moves past sequences
// that end at x or have no tiles. Returns the tile after the piece: the next piece's start.
AJ_HOST_DEVICE long long aj_decode_next_piece(const AjDecodeRanges& r, const long long* prefix, int units,
                                              int row_blocks, long long cta, long long x, long long t1, int& b,
                                              AjDecodePiece& piece) {
  while (prefix[b + 1] <= x) ++b;
  const long long n_tiles = (prefix[b + 1] - prefix[b]) / units;
  const long long unit = (x - prefix[b]) / n_tiles;  // kv head and row block within sequence b
  const long long u0 = prefix[b] + unit * n_tiles, u1 = u0 + n_tiles;
  const long long end = u1 < t1 ? u1 : t1;
  const long long first_cta = aj_decode_owner(r, u0);
  piece.b = b;
  piece.hk = (int)(unit / row_blocks);
  piece.rb = (int)(unit % row_blocks);
  piece.tile_begin = (int)(x - u0);
  piece.tile_end = (int)(end - u0);
  piece.pieces = (int)(aj_decode_owner(r, u1 - 1) - first_cta + 1);
  piece.first_cta = (int)first_cta;
  piece.first_slot = 2 * (int)first_cta + (u0 == aj_decode_start(r, first_cta) ? 0 : 1);
  piece.slot = (int)(cta - first_cta);
  return end;
}

#endif  // ATTNJIT_DECODE_SCHEDULE_H
