// attnjit forward attention kernel for sm_90a (Hopper): TMA, mbarriers, wgmma, warp
// specialization.
//
// Pasted last into the generated unit, after abi.h, common.cuh, sm80_dtype.cuh,
// sm90_primitives.cuh, the configuration macros, the hooks and the unit's wgmma wrappers
// (aj_wgmma_ss_qk: S[64 x BLOCK_N] = Q K^T from shared memory; aj_wgmma_rs_pv: O[64 x D] += P V
// with P in registers and V transposed from shared memory). docs/kernels.md describes it.
//
// One CTA: AJ_BLOCK_M = 64 * AJ_CONSUMERS query rows of one (batch, head), 128 * (1 +
// AJ_CONSUMERS) threads.
//   warpgroup 0 (producer, registers given back with setmaxnreg): one thread issues the TMA
//     copies, Q once, then K and V of every kv tile the variant admits (the tile classes of the
//     sm80 path) into a ring of AJ_STAGES stages; each copy completes a "full" mbarrier, each
//     consumer warpgroup frees a stage through an "empty" mbarrier. The thread also writes
//     each stage's tile number and class into shared memory before the K copy's arrival (a
//     sentinel after the last tile), so the consumers never evaluate a tile class.
//   warpgroups 1..AJ_CONSUMERS (consumers): 64 query rows each. Per tile n: S(n) = Q K(n)^T is
//     issued, then O += P(n-1) V(n-1) behind it; while the tensor cores run the second, the
//     score_mod, the mask and the online softmax of S(n) run on the CUDA cores. With
//     AJ_PINGPONG the consumers take turns issuing their GEMMs (named barriers, round robin),
//     so one warpgroup's softmax runs while another's GEMMs keep the tensor cores busy. O, the
//     row maximum and sum stay in registers; the epilogue stages O (normalized, gated) in the
//     Q tile's shared memory and writes it with 16-byte stores.
// With AJ_PERSISTENT the grid is a CTA per SM (two with one consumer), and a Q thread (warp 1
// of the producer warpgroup) takes work items (query blocks) from a counter in a loop: each
// item's Q goes to one of AJ_Q_BUFFERS buffers as soon as it is free, with the item number
// beside it; the K / V warp walks the items in the same order, their tiles into the same ring,
// each followed by an end stage whose word is NO_TILE; the consumers free that stage and, after
// the epilogue, the Q buffer. With AJ_LAST_IN_WORD an item's last tile says so in its word and
// only an item without tiles has an end stage (the consumers need not wait for one).
// Shared memory tiles hold 128-byte rows of 64 elements with the 128-byte swizzle (TMA writes
// them so, wgmma reads them so): a [rows x D] tile is D / 64 chunks of [rows x 64].
//
// Configuration macros (codegen):
//   AJ_HEAD_DIM 64, 128 or 256; AJ_BLOCK_N keys per tile (a multiple of 16, at most 256);
//   AJ_CONSUMERS 1 (two CTAs per SM), 2 or 3; AJ_STAGES 2..4; AJ_PINGPONG 0 or 1 (default 1);
//   AJ_PERSISTENT 0 or 1 (default 0) with AJ_Q_BUFFERS 1 or 2, and AJ_ITEM_OVERLAP 0 or 1 (with
//   two Q buffers: an item's epilogue runs while the next item's first S is computed);
//   AJ_DTYPE_BF16 / AJ_DTYPE_FP16; AJ_HAS_SCORE_MOD, AJ_HAS_MASK, AJ_HAS_BLOCK_MASK, AJ_HAS_OUTPUT_GATE (+
//   AJ_OUTPUT_GATE_PER_ELEMENT); AJ_SCORE_SPLIT (the hooks: score_mod = score + aj_score_col +
//   aj_score_row) with AJ_SPLIT_TABLES (codegen: the key-part tables fit); AJ_SCORE_MOD_RAW
//   (aj_score_mod_raw: the softmax scale folded into score_mod's first product); AJ_RAGGED 1
//   (with AJ_PER_SEQUENCE_LENGTHS 1): a ragged batch (AttnjitFwdArgs::cu_seqlens_q / _k), the
//   tensor maps over the packed tokens with a batch of 1, each item's rows offset by its
//   sequence's start and bounded by its own lengths (rows of the next sequence the TMA brings
//   into a tile are masked as keys and never stored as queries); AJ_DOC_ITEMS 1 (with
//   AJ_PERSISTENT, AJ_MASK_RUNS and AJ_MASK_DOC): work items aligned to documents, listed by
//   templates/doc_items.cuh, each a query block and the key tiles from its document's first
//   row, masked by the mask inside a document (aj_mask_pair_doc, aj_tile_class_doc) and bounded
//   by its end; the rows of a batch whose ids are not sorted keep plain blocks and the whole mask.
// Dynamic shared memory (the host computes the same), with QB = AJ_Q_BUFFERS:
//   QB * AJ_BLOCK_M * D * 2 + 2 * AJ_STAGES * AJ_BLOCK_N * D * 2 + 8 * (3 * QB + 4 * AJ_STAGES + 1)
//   + 4 * AJ_STAGES + 4 * QB + 1024, plus 16 + 2 * AJ_CONSUMERS * AJ_BLOCK_N * 4 with AJ_SPLIT_TABLES.
#ifndef ATTNJIT_FWD_SM90_CUH
#define ATTNJIT_FWD_SM90_CUH

#if !defined(AJ_HEAD_DIM) || !defined(AJ_BLOCK_N) || !defined(AJ_CONSUMERS) || !defined(AJ_STAGES) || \
    !defined(AJ_HAS_SCORE_MOD) || !defined(AJ_HAS_MASK)
#error "attnjit fwd_sm90: a configuration macro (AJ_HEAD_DIM, AJ_BLOCK_N, AJ_CONSUMERS, AJ_STAGES, AJ_HAS_SCORE_MOD, AJ_HAS_MASK) is missing"
#endif
#if !(AJ_HEAD_DIM == 64 || AJ_HEAD_DIM == 128 || AJ_HEAD_DIM == 256)
#error "attnjit fwd_sm90: AJ_HEAD_DIM must be 64, 128 or 256"
#endif
#if AJ_BLOCK_N % 16 != 0 || AJ_BLOCK_N < 16 || AJ_BLOCK_N > 256
#error "attnjit fwd_sm90: AJ_BLOCK_N must be a multiple of 16 in [16, 256]"
#endif
#if !(AJ_CONSUMERS == 1 || AJ_CONSUMERS == 2 || AJ_CONSUMERS == 3)
#error "attnjit fwd_sm90: AJ_CONSUMERS must be 1, 2 or 3"
#endif
#if AJ_STAGES < 2 || AJ_STAGES > 4
#error "attnjit fwd_sm90: AJ_STAGES must be 2, 3 or 4"
#endif
#ifndef AJ_HAS_BLOCK_MASK
#define AJ_HAS_BLOCK_MASK 0
#endif
#ifndef AJ_PINGPONG
#define AJ_PINGPONG 1
#endif
// Turns between consumers need two of them; one consumer per CTA runs two CTAs per SM
// instead, whose warpgroups interleave (and whose prologues and epilogues overlap) on their own.
#define AJ_TURNS (AJ_PINGPONG && AJ_CONSUMERS > 1)
#ifndef AJ_HAS_OUTPUT_GATE
#define AJ_HAS_OUTPUT_GATE 0
#endif
// A CTA per SM (two with one consumer) taking work items from a counter until none are left:
// the next item's Q and first K / V tiles load while this one ends, where a CTA of its own
// would wait for them. AJ_Q_BUFFERS 2: the next Q lands beside this item's (1: after it).
#ifndef AJ_PERSISTENT
#define AJ_PERSISTENT 0
#endif
#ifndef AJ_RAGGED
#define AJ_RAGGED 0
#endif
#ifndef AJ_Q_BUFFERS
#define AJ_Q_BUFFERS 1
#endif
#if !AJ_PERSISTENT && AJ_Q_BUFFERS != 1
#error "attnjit fwd_sm90: AJ_Q_BUFFERS 2 needs AJ_PERSISTENT"
#endif
// Items back to back (persistent, two Q buffers): an item's epilogue overlaps the next item's
// first S = Q K^T, issued in the same turn as the item's last P V.
#ifndef AJ_ITEM_OVERLAP
#define AJ_ITEM_OVERLAP 0
#endif
#if AJ_ITEM_OVERLAP && !(AJ_PERSISTENT && AJ_Q_BUFFERS == 2 && !AJ_RAGGED)
#error "attnjit fwd_sm90: AJ_ITEM_OVERLAP needs AJ_PERSISTENT, AJ_Q_BUFFERS 2 and no AJ_RAGGED"
#endif
// The last tile's word says it is the last (bit 2), so an item ends without an end stage: the
// consumers go from their last softmax to the last P V and the epilogue without waiting for the
// producer to publish a word into a freed stage. An item without tiles keeps its end stage.
#ifndef AJ_LAST_IN_WORD
#define AJ_LAST_IN_WORD 0
#endif
#if AJ_LAST_IN_WORD && AJ_ITEM_OVERLAP
#error "attnjit fwd_sm90: AJ_LAST_IN_WORD and AJ_ITEM_OVERLAP do not go together (the overlap reads end stages)"
#endif
// A mask that reads a tensor (doc[b, kv]): a partial tile's key parts (aj_mask_col) are loads,
// issued before the wait for S so that they land while the tensor cores run (D=64's three
// consumers have no registers to hold them; at D=256 they spill).
// With AJ_MASK_RUNS (a document mask read through its rows' runs) only for the work items
// whose runs are not valid.
#ifndef AJ_MASK_RUNS
#define AJ_MASK_RUNS 0
#endif
#ifndef AJ_DOC_ITEMS
#define AJ_DOC_ITEMS 0
#endif
// A ragged batch's items from the pre-pass's list (templates/ragged_items.cuh): only query
// blocks with rows, the sequences longest first (else: the longest sequence's blocks for every
// sequence, the missing ones skipped, in batch order).
#ifndef AJ_RAGGED_ITEMS
#define AJ_RAGGED_ITEMS 0
#endif
#if AJ_RAGGED_ITEMS && !(AJ_PERSISTENT && AJ_RAGGED)
#error "attnjit fwd_sm90: AJ_RAGGED_ITEMS needs AJ_PERSISTENT and AJ_RAGGED"
#endif
// A batch of at most AJ_RAGGED_LIST_HERE sequences (at most 32; 0: never) is listed by the
// kernel itself, in shared memory, by warp 2 while thread 0 sets up the barriers: no pre-pass
// launch before the forward (the host leaves it out for such a batch).
#ifndef AJ_RAGGED_LIST_HERE
#define AJ_RAGGED_LIST_HERE 0
#endif
#if AJ_RAGGED_LIST_HERE && !(AJ_RAGGED_ITEMS && AJ_RAGGED_LIST_HERE <= 32)
#error "attnjit fwd_sm90: AJ_RAGGED_LIST_HERE needs AJ_RAGGED_ITEMS and at most 32 sequences"
#endif
#if AJ_DOC_ITEMS && !(AJ_PERSISTENT && AJ_MASK_RUNS && defined(AJ_MASK_DOC) && !AJ_RAGGED)
#error "attnjit fwd_sm90: AJ_DOC_ITEMS needs AJ_PERSISTENT, a document mask's runs (AJ_MASK_DOC) and no AJ_RAGGED"
#endif
// AJ_TRACE (diagnostic, off; tools/gpu/trace-items.sh): warp 0 of each consumer warpgroup records
// per work item the SM clock at its phases and the cycles its tile loop spent in each wait, into
// the module's aj_trace (AJ_TRACE_WORDS words per record; the runtime copies it to the file
// ATTNJIT_TRACE names after each launch). Clock reads constrain the scheduling around them, so
// a traced kernel's timings are for comparing its phases, not for its speed.
#ifndef AJ_TRACE
#define AJ_TRACE 0
#endif
#if AJ_TRACE && AJ_ITEM_OVERLAP
#error "attnjit fwd_sm90: AJ_TRACE records items of the default loop, not of AJ_ITEM_OVERLAP's"
#endif
#if AJ_TRACE
#define AJ_TRACE_WORDS 20
#define AJ_TRACE_CAPACITY 65536
extern "C" {  // unmangled, for cuLibraryGetGlobal
// Each (CTA, consumer) writes its items' records in turn into its own share of the records (no
// atomics: a record marks itself valid in its last word); the runtime zeroes them after reading.
__device__ unsigned long long aj_trace[AJ_TRACE_CAPACITY * AJ_TRACE_WORDS];
}
// A record's words: phase clocks, then span totals of the tile loop, then the tile count and where.
enum AjTraceWord {
  AJ_TR_GLOBAL_NS,  // %globaltimer at the item's start (ns; orders items across SMs)
  AJ_TR_START,      // the item's start (before its Q buffer's wait)
  AJ_TR_Q,          // its Q in shared memory
  AJ_TR_K,          // its first tile's K in shared memory
  AJ_TR_S0,         // its first S computed
  AJ_TR_LOOP,       // the tile loop left (every softmax done)
  AJ_TR_PV,         // the last P V computed
  AJ_TR_STAGED,     // O normalized and staged in shared memory
  AJ_TR_END,        // O stored
  AJ_TR_WAIT_K,     // cycles in the loop waiting for a tile's K
  AJ_TR_WAIT_TURN,  // ... for the turn to issue GEMMs
  AJ_TR_WAIT_V,     // ... for the previous tile's V
  AJ_TR_WAIT_S,     // ... for S (wgmma wait 1)
  AJ_TR_WAIT_PV,    // ... for the previous P V (wgmma wait 0)
  AJ_TR_SOFTMAX,    // ... in the score_mod, mask and softmax
  AJ_TR_RESCALE,    // ... in O's rescale and P's packing
  AJ_TR_ISSUE_QK,   // ... issuing S = Q K^T
  AJ_TR_ISSUE_PV,   // ... issuing O += P V
  AJ_TR_SPARE,
  AJ_TR_WHERE,      // tiles | consumer << 16 | SM << 24 | CTA (linear, 31 bits) << 32 | valid << 63
};
__device__ __forceinline__ unsigned long long aj_clock() {
  unsigned long long c;
  asm volatile("mov.u64 %0, %%clock64;" : "=l"(c));
  return c;
}
__device__ __forceinline__ unsigned long long aj_global_ns() {
  unsigned long long c;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(c));
  return c;
}
__device__ __forceinline__ unsigned aj_smid() {
  unsigned v;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(v));
  return v;
}
// In a consumer: tr points at its record in shared memory, which thread 0 fills (volatile asm
// keeps the clock reads in order with the waits, which are volatile asm too). A grid of more
// than AJ_TRACE_CAPACITY / AJ_CONSUMERS CTAs leaves items out. Tracing cost 16% of causal
// D=128 S=4k's speed on an H200 (2026-12-03: 502 against 600 TFLOP/s).
#define AJ_TRACE_AT(word)                \
  do {                                   \
    if (ct == 0) tr[word] = aj_clock();  \
  } while (0)
#define AJ_TRACE_SPAN(word, stmt)                       \
  do {                                                  \
    const unsigned long long tr0_ = aj_clock();         \
    stmt;                                               \
    if (ct == 0) tr[word] += aj_clock() - tr0_;         \
  } while (0)
#define AJ_TRACE_ITEM_START()                  \
  do {                                         \
    if (ct == 0) {                             \
      tr[AJ_TR_GLOBAL_NS] = aj_global_ns();    \
      tr[AJ_TR_START] = aj_clock();            \
    }                                          \
  } while (0)
#define AJ_TRACE_TILE()                  \
  do {                                   \
    if (ct == 0) ++tr[AJ_TR_WHERE];      \
  } while (0)
// The item's record out (while its (CTA, consumer) share has room), the next one's words cleared.
#define AJ_TRACE_ITEM_END()                                                                        \
  do {                                                                                             \
    if (ct == 0) {                                                                                 \
      const unsigned cta_ = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);        \
      const unsigned share_ = AJ_TRACE_CAPACITY / (gridDim.x * gridDim.y * gridDim.z * NC);        \
      tr[AJ_TR_WHERE] |= (unsigned long long)cw << 16 | (unsigned long long)aj_smid() << 24 |      \
                         (unsigned long long)cta_ << 32 | 1ull << 63;                              \
      if (trace_items < share_) {                                                                  \
        unsigned long long* out_ =                                                                 \
            aj_trace + ((unsigned long long)(cta_ * NC + cw) * share_ + trace_items) * AJ_TRACE_WORDS; \
        for (int w_ = 0; w_ < AJ_TRACE_WORDS; ++w_) out_[w_] = tr[w_];                             \
      }                                                                                            \
      ++trace_items;                                                                               \
      for (int w_ = 0; w_ < AJ_TRACE_WORDS; ++w_) tr[w_] = 0;                                      \
    }                                                                                              \
  } while (0)
#else
#define AJ_TRACE_AT(word) ((void)0)
#define AJ_TRACE_SPAN(word, stmt) \
  do {                            \
    stmt;                         \
  } while (0)
#define AJ_TRACE_ITEM_START() ((void)0)
#define AJ_TRACE_TILE() ((void)0)
#define AJ_TRACE_ITEM_END() ((void)0)
#endif
#ifndef AJ_PREFETCH_MASK_COLS
#define AJ_PREFETCH_MASK_COLS (AJ_HAS_BLOCK_MASK && AJ_HAS_MASK && AJ_HEAD_DIM == 128)
#endif
#if AJ_HAS_OUTPUT_GATE && !defined(AJ_OUTPUT_GATE_PER_ELEMENT)
#define AJ_OUTPUT_GATE_PER_ELEMENT 0
#endif

namespace aj_fwd90 {

constexpr int D = AJ_HEAD_DIM;
constexpr int BN = AJ_BLOCK_N;
constexpr int NC = AJ_CONSUMERS;
constexpr int BM = AJ_BLOCK_M;
constexpr int ST = AJ_STAGES;
constexpr int NT = 128 * (NC + 1);
constexpr int CTAS_PER_SM = NC == 1 ? 2 : 1;  // the __launch_bounds__ minimum
constexpr int NN = BN / 8;   // 8-key column groups of S per thread
constexpr int KD = D / 16;   // k steps of Q K^T
constexpr int KN = BN / 16;  // k steps of P V
constexpr int ND = D / 8;    // 8-wide column groups of O
// A ragged sequence's query blocks (its work items per head with AJ_RAGGED_ITEMS; also the
// pre-pass's ranking key, templates/ragged_items.cuh).
__device__ __forceinline__ int ragged_query_blocks(int b, const AttnjitFwdArgs& args) {
  return (aj_seq_len_q(b, args) + BM - 1) / BM;
}
constexpr int QB = AJ_Q_BUFFERS;
constexpr aj_u32 Q_CHUNK = BM * 128;  // bytes of one 64-column chunk of the Q tile
constexpr aj_u32 KV_CHUNK = BN * 128;
constexpr aj_u32 Q_BYTES = BM * D * 2;
constexpr aj_u32 KV_BYTES = BN * D * 2;
constexpr aj_u32 OFF_K = QB * Q_BYTES;
constexpr aj_u32 OFF_V = OFF_K + ST * KV_BYTES;
constexpr aj_u32 OFF_BAR = OFF_V + ST * KV_BYTES;
constexpr aj_u32 OFF_TILES = OFF_BAR + 8 * (3 * QB + 4 * ST + 1);  // per stage: a tile's word, or NO_TILE
constexpr aj_u32 OFF_ITEMS = OFF_TILES + 4 * ST;                // per Q buffer: its item, or -1 (no more)
constexpr aj_u32 NO_TILE = 0xffffffffu;
constexpr int TILE_SHIFT = AJ_LAST_IN_WORD ? 3 : 2;  // a word: (tile << TILE_SHIFT) | (last << 2) | class
// Per consumer, two tiles' key parts of the score split (aj_score_col), BN floats each: tile n
// is written while tile n - 1's may still be read.
constexpr aj_u32 OFF_COLS = (OFF_ITEMS + 4 * QB + 15) & ~15u;
// Registers per thread after setmaxnreg. The CTA keeps the pool it was launched with
// (LAUNCH_REGS per thread, the __launch_bounds__ cap): the consumers' setmaxnreg.inc waits until
// the producer's .dec has returned enough of it, so NC * (CONSUMER - LAUNCH) must not exceed
// LAUNCH - PRODUCER, or the CTA hangs.
constexpr int LAUNCH_REGS = 65536 / NT / CTAS_PER_SM / 8 * 8;  // 168 for 384 threads, 128 for 512 or 2 x 256
constexpr int PRODUCER_REGS = 24;
constexpr int CONSUMER_REGS = NC == 1 ? 232 : (NC == 2 ? 240 : 160);
static_assert(NC * (CONSUMER_REGS - LAUNCH_REGS) <= LAUNCH_REGS - PRODUCER_REGS, "setmaxnreg pool");
static_assert(BM == 64 * NC, "AJ_BLOCK_M must be 64 * AJ_CONSUMERS");

using namespace aj_sm80;  // pack2 (sm80_dtype.cuh)

// The mbarriers, 8 bytes each after the tiles: Q full and Q empty per Q buffer, then K full,
// V full, K empty, V empty per stage, then item full per Q buffer (persistent: the item number
// is in shared memory, before its Q has landed) and walk done (the K / V warp has issued an
// item's last tile).
struct Barriers {
  aj_u32 base;
  __device__ aj_u32 q_full(int i) const { return base + 8 * i; }
  __device__ aj_u32 q_empty(int i) const { return base + 8 * (QB + i); }
  __device__ aj_u32 k_full(int s) const { return base + 8 * (2 * QB + s); }
  __device__ aj_u32 v_full(int s) const { return base + 8 * (2 * QB + ST + s); }
  __device__ aj_u32 k_empty(int s) const { return base + 8 * (2 * QB + 2 * ST + s); }
  __device__ aj_u32 v_empty(int s) const { return base + 8 * (2 * QB + 3 * ST + s); }
  __device__ aj_u32 item_full(int i) const { return base + 8 * (2 * QB + 4 * ST + i); }
  __device__ aj_u32 walk_done() const { return base + 8 * (3 * QB + 4 * ST); }
};

// One CTA's share of the grid: a query block of one (batch, head): rows q0 .. q0 + BM - 1 (below
// q_end) against keys k_lo .. k_end - 1; the plain grid's are m_block * BM and the sequence's
// (ragged: relative to the sequence's start), AJ_DOC_ITEMS's a document's (absolute).
struct WorkItem {
  int m_block, h, b;
  int q0, q_end, k_lo, k_end;
  bool in_document;  // AJ_DOC_ITEMS: the rows and keys lie in one document (else the whole mask)
};

// Queries and keys of sequence b where `args` is in scope: the longest (every sequence alike)
// or, in a ragged batch, its own (macros: the other units keep the plain fields, code and all).
#if AJ_RAGGED
#define AJ_SEQ_Q_OF(b) aj_seq_len_q((b), args)
#define AJ_SEQ_K_OF(b) aj_seq_len_k((b), args)
#else
#define AJ_SEQ_Q_OF(b) args.seq_q
#define AJ_SEQ_K_OF(b) args.seq_k
#endif

// The kv tiles of one CTA, in the order the producer walks them (and hands them on): the
// tile classes (0 empty, 1 partial, 2 full) from the block mask when one is bound, else from
// the variant's interval analysis (aj_tile_class) over the CTA's query rows. The producer warp
// walks them together (AjTileChunk).
// (AJ_DOC_ITEMS: tile n starts at key k_lo + n * BN, and in a document the mask inside it decides.)
struct TileWalk {
  int b, h, q0, q_hi, k_lo, seq_k, n_tiles;
  bool in_document;
  const unsigned char* classes;
  AjTileChunk chunk;
  __device__ int class_at(int n, const AttnjitFwdArgs& args) const {
#if AJ_HAS_BLOCK_MASK && !AJ_DOC_ITEMS
    if (classes != nullptr) return classes[n];
#endif
    const int kv_lo = k_lo + n * BN;
#if AJ_DOC_ITEMS
    if (in_document) return aj_tile_class_doc(b, h, q0, q_hi, kv_lo, min(kv_lo + BN, seq_k) - 1, args);
#endif
    return aj_tile_class(b, h, q0, q_hi, kv_lo, min(kv_lo + BN, seq_k) - 1, args);
  }
  // The first admitted tile from n on (n_tiles: none) and its class; every lane of the warp calls it.
  __device__ int next(int n, int& cls, const AttnjitFwdArgs& args) {
    return chunk.next(n, n_tiles, cls, [&](int i) { return class_at(i, args); });
  }
};

// Excluded pairs of one S tile become -inf. BOUND: kv < seq_k; MASK: the variant's mask, its
// row and key parts computed once (aj_mask_row / aj_mask_col) and paired per element. Element e
// of column group j sits at row q_row + 8 * (e / 2), key kv_col + 8 j + e % 2 (the wgmma
// accumulator layout, as mma.sync's).
#if AJ_HAS_MASK
// The key parts of the columns this thread holds in an S tile (column group j, element c at
// cols[2 j + c]), clamped into range as mask_scores clamps them.
__device__ __forceinline__ void load_mask_cols(AjMaskCol (&cols)[2 * NN], int b, int h, int kv_col,
                                               const AttnjitFwdArgs& args) {
#pragma unroll
  for (int j = 0; j < NN; ++j)
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int kv = kv_col + j * 8 + c;
      cols[2 * j + c] = aj_mask_col(b, h, kv < AJ_SEQ_K_OF(b) ? kv : AJ_SEQ_K_OF(b) - 1, args);
    }
}
#endif

// Every element of this thread's S tile through one split of the mask (codegen:
// split_mask_hooks): Row / Col its types, col_of(i, kv) element i's key part, pair(row, col, q,
// kv) the element's mask.
template <bool BOUND, bool MASK, class Row, class Col, class ColOf, class Pair>
__device__ __forceinline__ void mask_pairs(float (&s)[BN / 2], int seq_k, const int (&qc)[2], const Row (&rows)[2],
                                           int kv_col, ColOf col_of, Pair pair) {
#pragma unroll
  for (int j = 0; j < NN; ++j) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int kv = kv_col + j * 8 + c;
      const int kvc = kv < seq_k ? kv : seq_k - 1;
      Col col;
      if (MASK) col = col_of(2 * j + c, kvc);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        bool keep = true;
        if (BOUND) keep = kv < seq_k;
        if (MASK) keep = keep && pair(rows[r], col, qc[r], kvc);
        s[4 * j + 2 * r + c] = keep ? s[4 * j + 2 * r + c] : AJ_NEG_INF;
      }
      (void)col;
    }
  }
}

#if AJ_MASK_RUNS
// Whether the rows of a work item read a document mask through their runs: valid for all rows
// of the id tensor or for none (compiler/passes/run_equality.hpp), so uniform per warp.
__device__ __forceinline__ bool rows_runs_valid(int b, int h, int q_row, const AttnjitFwdArgs& args) {
  bool ok = true;
#pragma unroll
  for (int r = 0; r < 2; ++r) ok = ok && aj_mask_runs_ok(b, h, min(q_row + 8 * r, AJ_SEQ_Q_OF(b) - 1), args);
  return __all_sync(0xffffffffu, ok);
}
#endif

// `runs`: the rows' runs are valid (rows_runs_valid), so a document mask's pair reads no key's id
// (AJ_DOC_ITEMS: the item lies in one document, where the mask is aj_mask_pair_doc). BOUND
// masks the keys from kv_end on.
template <bool BOUND, bool MASK, bool COLS_GIVEN = false>
__device__ __forceinline__ void mask_scores(float (&s)[BN / 2], int b, int h, int q_row, int kv_col, int kv_end,
                                            const AttnjitFwdArgs& args, const AjMaskCol* given = nullptr,
                                            bool runs = false) {
  (void)b; (void)h; (void)q_row; (void)given; (void)runs;
  // Hooks only ever see in-range indices (captured tensors may be indexed by them).
  int qc[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) qc[r] = min(q_row + 8 * r, AJ_SEQ_Q_OF(b) - 1);
#if AJ_DOC_ITEMS
  if (MASK && runs) {
    AjMaskRow_doc rows[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) rows[r] = aj_mask_row_doc(b, h, qc[r], args);
    mask_pairs<BOUND, MASK, AjMaskRow_doc, AjMaskCol_doc>(
        s, kv_end, qc, rows, kv_col, [&](int, int kv) { return aj_mask_col_doc(b, h, kv, args); },
        [&](const AjMaskRow_doc& row, const AjMaskCol_doc& col, int q, int kv) {
          return aj_mask_pair_doc(row, col, b, h, q, kv, args);
        });
    return;
  }
#elif AJ_MASK_RUNS
  if (MASK && runs) {
    AjMaskRow_runs rows[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) rows[r] = aj_mask_row_runs(b, h, qc[r], args);
    mask_pairs<BOUND, MASK, AjMaskRow_runs, AjMaskCol_runs>(
        s, kv_end, qc, rows, kv_col, [&](int, int kv) { return aj_mask_col_runs(b, h, kv, args); },
        [&](const AjMaskRow_runs& row, const AjMaskCol_runs& col, int q, int kv) {
          return aj_mask_pair_runs(row, col, b, h, q, kv, args);
        });
    return;
  }
#endif
  AjMaskRow rows[2];
#pragma unroll
  for (int r = 0; r < 2; ++r)
    if (MASK) rows[r] = aj_mask_row(b, h, qc[r], args);
  mask_pairs<BOUND, MASK, AjMaskRow, AjMaskCol>(
      s, kv_end, qc, rows, kv_col,
      [&](int i, int kv) { return COLS_GIVEN ? given[i] : aj_mask_col(b, h, kv, args); },
      [&](const AjMaskRow& row, const AjMaskCol& col, int q, int kv) {
        return aj_mask_pair(row, col, b, h, q, kv, args);
      });
}

#if AJ_HAS_SCORE_MOD
__device__ __forceinline__ void score_mod_tile(float (&s)[BN / 2], int b, int h, int q_row, int kv_col,
                                               const AttnjitFwdArgs& args) {
#pragma unroll
  for (int j = 0; j < NN; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int q = q_row + (e >> 1) * 8;
      const int kv = kv_col + j * 8 + (e & 1);
      const int qc = q < AJ_SEQ_Q_OF(b) ? q : AJ_SEQ_Q_OF(b) - 1;
      const int kvc = kv < AJ_SEQ_K_OF(b) ? kv : AJ_SEQ_K_OF(b) - 1;
#if AJ_SCORE_MOD_RAW
      s[4 * j + e] = aj_score_mod_raw(s[4 * j + e], args.scale, b, h, qc, kvc, args);
#else
      s[4 * j + e] = aj_score_mod(s[4 * j + e] * args.scale, b, h, qc, kvc, args);
#endif
    }
  }
}
#endif

#if AJ_SCORE_SPLIT && AJ_SPLIT_TABLES
// score_mod = score + aj_score_col(kv) + aj_score_row(q) (compiler/passes/score_split.cpp):
// the key part of the BN keys from kv0 on, once per warpgroup (a key per thread) into `table`.
__device__ __forceinline__ void score_cols_to_shared(aj_u32 table, int ct, int b, int h, int kv0, int anchor,
                                                     const AttnjitFwdArgs& args) {
#pragma unroll
  for (int k = 0; k < (BN + 127) / 128; ++k) {
    const int i = ct + 128 * k;
    if (i < BN) {
      const int kv = min(kv0 + i, AJ_SEQ_K_OF(b) - 1);  // hooks see in-range keys only
      aj_st_shared_u32(table + 4 * i, __float_as_uint(aj_score_col(b, h, kv, anchor, args)));
    }
  }
}

// S = scale * S + the key part of each column, from the table: one FMA per element. The row
// part is constant along a row, so softmax ignores it; only the LSE adds it.
__device__ __forceinline__ void score_split_tile(float (&s)[BN / 2], aj_u32 table, int t, float scale) {
#pragma unroll
  for (int j = 0; j < NN; ++j) {
    float c0, c1;
    asm volatile("ld.shared.v2.f32 {%0,%1}, [%2];\n" : "=f"(c0), "=f"(c1) : "r"(table + 4 * (8 * j + 2 * t)));
    s[4 * j + 0] = fmaf(s[4 * j + 0], scale, c0);
    s[4 * j + 1] = fmaf(s[4 * j + 1], scale, c1);
    s[4 * j + 2] = fmaf(s[4 * j + 2], scale, c0);
    s[4 * j + 3] = fmaf(s[4 * j + 3], scale, c1);
  }
}
#endif

// The ring's next stage, its phase flipped at the wrap.
__device__ __forceinline__ void advance(int& stage, int& phase) {
  if (++stage == ST) {
    stage = 0;
    phase ^= 1;
  }
}

// S = Q K^T for this warpgroup's 64 rows: Q at sq (its first row), K at sk.
__device__ __forceinline__ void issue_qk(float (&s)[BN / 2], aj_u32 sq, aj_u32 sk) {
  aj_wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < KD; ++kk) {
    const aj_u64 da = aj_smem_desc_sw128(sq + (kk >> 2) * Q_CHUNK + (kk & 3) * 32, 16, 1024);
    const aj_u64 db = aj_smem_desc_sw128(sk + (kk >> 2) * KV_CHUNK + (kk & 3) * 32, 16, 1024);
    aj_wgmma_ss_qk(s, da, db, kk > 0 ? 1 : 0);
  }
  aj_wgmma_commit();
}

// O += P V: P (bf16/fp16 pairs in the A-fragment layout) from registers, V at sv read
// transposed (MN-major: 64-column chunks KV_CHUNK apart, 8-key groups 1024 bytes apart).
__device__ __forceinline__ void issue_pv(float (&o)[D / 2], const aj_u32 (&p)[KN][4], aj_u32 sv) {
  aj_wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < KN; ++kk) aj_wgmma_rs_pv(o, p[kk], aj_smem_desc_sw128(sv + kk * 2048, KV_CHUNK, 1024));
  aj_wgmma_commit();
}

}  // namespace aj_fwd90

extern "C" __global__ void __launch_bounds__(aj_fwd90::NT, aj_fwd90::CTAS_PER_SM)
    attnjit_fwd(const __grid_constant__ AttnjitFwdSm90Args params) {
  using namespace aj_fwd90;
  extern __shared__ __align__(1024) unsigned char aj_smem[];
  const AttnjitFwdArgs& args = params.fwd;

  const int tid = threadIdx.x;
  const int wg = tid >> 7;
  const int seq_q = args.seq_q;
  const int seq_k = args.seq_k;
  // Work items (query block, head, batch) in the order a grid of one CTA each launches them:
  // the query block fastest, heaviest (causal: last) first for a better tail, then the head, so
  // that the blocks in flight together share K and V in L2.
  const int m_blocks = (seq_q + BM - 1) / BM;
  const auto plain_item = [&](int m_block, int h, int b) {
    WorkItem w;
    w.m_block = m_block;
    w.h = h;
    w.b = b;
    w.q0 = m_block * BM;
    w.q_end = AJ_SEQ_Q_OF(b);
    w.k_lo = 0;
    w.k_end = AJ_SEQ_K_OF(b);
    w.in_document = false;
    return w;
  };
  (void)plain_item;
#if AJ_DOC_ITEMS
  // The pre-pass's list (templates/doc_items.cuh): item i is entry i % count of head i / count.
  const int doc_count = params.doc_items[0];
  const int4* const doc_entries = reinterpret_cast<const int4*>(params.doc_items + 4);
  const auto item_of = [&](int i) {
    const int4 e = doc_entries[i % doc_count];
    WorkItem w;
    w.in_document = e.x >= 0;
    w.b = w.in_document ? e.x : ~e.x;
    w.h = i / doc_count;
    w.m_block = 0;
    w.q0 = e.y;
    w.k_lo = e.z;
    w.k_end = e.w;
    w.q_end = w.in_document ? min(e.w, seq_q) : seq_q;  // a document's rows are its keys
    return w;
  };
  const int items = doc_count * args.heads_q;
  (void)m_blocks;
#elif AJ_RAGGED_ITEMS
  // The list (the pre-pass's, or this kernel's in shared memory; set once the barriers are):
  // sequence k's items start at entries[k].y (the last entry at or below i is its sequence:
  // sequences without blocks share the next one's start), its heads in turn.
  int listed = 0;
  const int2* ragged_entries = nullptr;
  (void)m_blocks;
  const auto item_of = [&](int i) {
    int lo = 0, hi = listed - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) >> 1;
      if (ragged_entries[mid].y <= i) lo = mid;
      else hi = mid - 1;
    }
    const int2 e = ragged_entries[lo];
    const int blocks = ragged_query_blocks(e.x, args), j = i - e.y;
    return plain_item(blocks - 1 - j % blocks, j / blocks, e.x);
  };
#else
  const auto item_of = [&](int i) {
    return plain_item(m_blocks - 1 - i % m_blocks, i / m_blocks % args.heads_q, i / m_blocks / args.heads_q);
  };
#endif
#if AJ_PERSISTENT
#if AJ_RAGGED_ITEMS
  int items = 0;
#elif !AJ_DOC_ITEMS
  const int items = m_blocks * args.heads_q * args.batch;
#endif
#else
  (void)item_of;
  // One CTA per item: the grid is (query block, head, batch).
  const WorkItem my_item = plain_item((int)gridDim.x - 1 - (int)blockIdx.x, (int)blockIdx.y, (int)blockIdx.z);
#if AJ_RAGGED
  // The grid covers the longest sequence: a shorter one's later query blocks have no rows.
  if (my_item.m_block * BM >= AJ_SEQ_Q_OF(my_item.b)) return;
#endif
#endif

  // Tiles from a 1024-byte aligned base (the 128-byte swizzle's atom).
  const aj_u32 base = (aj_smem_addr(aj_smem) + 1023u) & ~1023u;
  const aj_u32 s_q = base, s_k = base + OFF_K, s_v = base + OFF_V, s_tiles = base + OFF_TILES;
  const Barriers bar{base + OFF_BAR};
#if AJ_PERSISTENT
  const aj_u32 s_items = base + OFF_ITEMS;
#endif

  if (tid == 0) {
    for (int i = 0; i < QB; ++i) {
      aj_mbar_init(bar.q_full(i), 1);
      aj_mbar_init(bar.q_empty(i), 128 * NC);
      aj_mbar_init(bar.item_full(i), 1);
    }
    aj_mbar_init(bar.walk_done(), 1);
    for (int s = 0; s < ST; ++s) {
      aj_mbar_init(bar.k_full(s), 1);
      aj_mbar_init(bar.v_full(s), 1);
      aj_mbar_init(bar.k_empty(s), NC);
      aj_mbar_init(bar.v_empty(s), NC);
    }
    aj_mbar_init_fence();
  }
#if AJ_RAGGED_ITEMS
  // AJ_RAGGED_LIST_HERE: lane b of warp 2 ranks sequence b by its query blocks (longest first,
  // ties in batch order) and sums the blocks of the sequences ranked before it.
  const bool list_here = AJ_RAGGED_LIST_HERE > 0 && args.batch <= AJ_RAGGED_LIST_HERE;
#if AJ_RAGGED_LIST_HERE
  __shared__ int2 list_in_smem[AJ_RAGGED_LIST_HERE];
  __shared__ int items_in_smem;
  if (list_here && (tid >> 5) == 2) {
    const int lane = tid & 31;
    const int blocks = lane < args.batch ? ragged_query_blocks(lane, args) : -1;
    int rank = 0, before = 0, all = 0;
    for (int j = 0; j < 32; ++j) {
      const int other = __shfl_sync(0xffffffffu, blocks, j);
      const bool first = other > blocks || (other == blocks && j < lane);
      rank += first;
      before += first ? max(other, 0) : 0;
      all += max(other, 0);
    }
    if (lane < args.batch) list_in_smem[rank] = make_int2(lane, before * args.heads_q);
    if (lane == 0) items_in_smem = all * args.heads_q;
  }
#endif
#endif
  __syncthreads();
#if AJ_RAGGED_ITEMS
#if AJ_RAGGED_LIST_HERE
  if (list_here) {
    listed = args.batch;
    ragged_entries = list_in_smem;
    items = items_in_smem;
  }
#endif
  if (!list_here) {
    listed = params.ragged_items[0];
    ragged_entries = reinterpret_cast<const int2*>(params.ragged_items + 4);
    items = params.ragged_items[1];
  }
#endif

  if (wg == 0) {
    // ---- producer -------------------------------------------------------------------------
    aj_regs_release<PRODUCER_REGS>();
    // An item's Q tile into buffer qb, completing q_full(qb) with its bytes.
    const auto load_q = [&](const WorkItem& w, int qb) {
#if AJ_RAGGED
      const int q_start = args.cu_seqlens_q[w.b], map_b = 0;  // the packed tokens (the maps' batch is 1)
#else
      const int q_start = 0, map_b = w.b;
#endif
      aj_mbar_arrive_expect_tx(bar.q_full(qb), Q_BYTES);
#pragma unroll
      for (int c = 0; c < D / 64; ++c)
        aj_tma_load_4d(s_q + qb * Q_BYTES + c * Q_CHUNK, &params.tma_q, bar.q_full(qb), c * 64, q_start + w.q0,
                       w.h, map_b);
    };
    (void)load_q;
    if (tid < 32) {  // the K / V warp: all lanes walk the tiles (TileWalk), lane 0 issues
      const bool leader = tid == 0;
      if (leader) {
#if !AJ_PERSISTENT
        aj_tma_prefetch_descriptor(&params.tma_q);
#endif
        aj_tma_prefetch_descriptor(&params.tma_k);
        aj_tma_prefetch_descriptor(&params.tma_v);
      }
      int stage = 0, phase = 0;
      // One item: its Q into buffer qb (persistent: the Q thread's), its admitted kv tiles into
      // the ring, then a stage whose word says the item ends.
      const auto produce = [&](const WorkItem& w, int qb) {
        (void)qb;
        const int hk = w.h / (args.heads_q / args.heads_kv);
        TileWalk walk;
        walk.b = w.b;
        walk.h = w.h;
        walk.q0 = w.q0;
        walk.q_hi = min(w.q0 + BM, w.q_end) - 1;
        walk.k_lo = w.k_lo;
        walk.seq_k = w.k_end;
        walk.in_document = w.in_document;
#if AJ_RAGGED
        // The sequence's rows start at its offsets in the packed tokens (the maps' batch is 1); a
        // short sequence has no rows in the later query blocks.
        const int k_start = args.cu_seqlens_k[w.b], map_b = 0;
        walk.n_tiles = w.q0 < w.q_end ? (w.k_end + BN - 1) / BN : 0;
#else
        const int k_start = w.k_lo, map_b = w.b;  // (AJ_DOC_ITEMS: from the document's first key)
        walk.n_tiles = (w.k_end - w.k_lo + BN - 1) / BN;
#endif
        walk.classes = nullptr;
#if AJ_HAS_BLOCK_MASK
        if (args.tile_classes != nullptr)
          walk.classes = args.tile_classes + (aj_i64)w.b * args.tile_class_stride[0] +
                         (aj_i64)w.h * args.tile_class_stride[1] + (aj_i64)w.m_block * args.tile_class_stride[2];
#endif
#if !AJ_PERSISTENT
        if (leader) load_q(w, qb);
#endif
        int cls = 0;
#if AJ_LAST_IN_WORD
        // A walked tile waits one step, until the next walk step says whether it is the last.
        int held = -1, held_cls = 0;
#endif
        // (one call of walk.next: the tile classes' code inlined once)
        for (int n = -1;;) {
#if AJ_ITEM_OVERLAP
          const bool first = n < 0;
#endif
          n = walk.next(n + 1, cls, args);
          const bool past = n >= walk.n_tiles;
#if AJ_ITEM_OVERLAP
          // An item without an admitted tile gets the one past its keys (class full: only the key
          // bound masks it, every score), so that every item's consumers have a tile's GEMMs.
          if (past && !first) break;
          if (past) {
            n = walk.n_tiles;
            cls = 2;
          }
          const int tile = n, tile_cls = cls;
          const aj_u32 last = 0;
#elif AJ_LAST_IN_WORD
          const int tile = held, tile_cls = held_cls;
          const aj_u32 last = past ? 1u : 0u;
          if (!past) {
            held = n;
            held_cls = cls;
          }
          if (tile < 0) {  // the item's first walk step: nothing held yet
            if (past) break;
            continue;
          }
#else
          if (past) break;
          const int tile = n, tile_cls = cls;
          const aj_u32 last = 0;
#endif
          // The leader issues; the other lanes wait for it here rather than at the next walk step
          // (no lane runs ahead of it into another sync point).
          if (leader) {
            aj_mbar_wait(bar.k_empty(stage), phase ^ 1);
            // (the arrival releases this store to the consumers' wait)
            aj_st_shared_u32(s_tiles + 4 * stage, ((aj_u32)tile << TILE_SHIFT) | (last << 2) | (aj_u32)tile_cls);
            aj_mbar_arrive_expect_tx(bar.k_full(stage), KV_BYTES);
#pragma unroll
            for (int c = 0; c < D / 64; ++c)
              aj_tma_load_4d(s_k + stage * KV_BYTES + c * KV_CHUNK, &params.tma_k, bar.k_full(stage), c * 64,
                             k_start + tile * BN, hk, map_b);
            aj_mbar_wait(bar.v_empty(stage), phase ^ 1);
            aj_mbar_arrive_expect_tx(bar.v_full(stage), KV_BYTES);
#pragma unroll
            for (int c = 0; c < D / 64; ++c)
              aj_tma_load_4d(s_v + stage * KV_BYTES + c * KV_CHUNK, &params.tma_v, bar.v_full(stage), c * 64,
                             k_start + tile * BN, hk, map_b);
            advance(stage, phase);
          }
          __syncwarp();
#if AJ_ITEM_OVERLAP || AJ_LAST_IN_WORD
          if (past) break;
#endif
        }
#if AJ_LAST_IN_WORD
        const bool end_stage = held < 0;  // the item has no tile
#else
        const bool end_stage = true;
#endif
        // The item's end (the leader); the other lanes wait for it, so none starts the next item's
        // walk while the leader still waits here.
#if AJ_PERSISTENT
        if (leader) aj_mbar_arrive(bar.walk_done());  // the Q thread may fetch an item in the last wave now
#endif
        if (leader && end_stage) {
          aj_mbar_wait(bar.k_empty(stage), phase ^ 1);
#if AJ_PERSISTENT
          // The end stage is freed like any other, so V's barriers complete it too: they keep the
          // phase K's do. V's previous phase is seen before the word goes out: the consumers free
          // the end stage's V without waiting on v_full, so once they have the word they could
          // complete the next phase too, and a parity wait after that would wait a phase late
          // (tools/gpu/fwd_sm90_protocol.py finds it).
          aj_mbar_wait(bar.v_empty(stage), phase ^ 1);
#endif
          aj_st_shared_u32(s_tiles + 4 * stage, NO_TILE);
          aj_mbar_arrive(bar.k_full(stage));
#if AJ_PERSISTENT
          aj_mbar_arrive(bar.v_full(stage));
          advance(stage, phase);
#endif
        }
        __syncwarp();
      };
#if AJ_PERSISTENT
      // The items the Q thread fetched, in order, each announced on item_full before its Q lands.
      for (int local = 0;; ++local) {
        const int qb = local % QB;
        aj_mbar_wait(bar.item_full(qb), local / QB & 1);
        const int item = (int)aj_ld_shared_u32(s_items + 4 * qb);
        if (item < 0) break;
        produce(item_of(item), qb);
      }
#else
      produce(my_item, 0);
#endif
    }
#if AJ_PERSISTENT
    else if (tid == 32) {
      // The Q thread: items from the launch's counter into the Q buffers in turn, as soon as a
      // buffer's last item has been stored (QB 2: a whole item ahead of the consumers, so that
      // neither the counter's round trip nor Q's load waits behind the K / V ring). In the last
      // wave it fetches only once the K / V warp has walked the current item: an item taken a
      // whole item early may wait while another CTA idles. The item number goes to shared
      // memory before the arrivals that announce it. The last CTA to run out puts both counters
      // back to zero for the next launch.
      aj_tma_prefetch_descriptor(&params.tma_q);
      int* const counters = params.work_counters;
      bool last_wave = false;
      for (int local = 0;; ++local) {
        const int qb = local % QB;
        aj_mbar_wait(bar.q_empty(qb), (local / QB & 1) ^ 1);
        // (after the wait above the K / V warp has walked item local - QB, so the phase this
        // parity names is item local - 1's; with one Q buffer it is already complete)
        if (last_wave) aj_mbar_wait(bar.walk_done(), (local - 1) & 1);
        int item = atomicAdd(counters, 1);
#if AJ_RAGGED && !AJ_RAGGED_ITEMS
        // Items past their sequence's queries (the item space covers the longest) are skipped.
        while (item < items) {
          const WorkItem w = item_of(item);
          if (w.q0 < w.q_end) break;
          item = atomicAdd(counters, 1);
        }
#endif
        last_wave = item >= items - 2 * (int)gridDim.x;
        aj_st_shared_u32(s_items + 4 * qb, (aj_u32)(item < items ? item : -1));
        aj_mbar_arrive(bar.item_full(qb));
        if (item >= items) {
          aj_mbar_arrive(bar.q_full(qb));
          break;
        }
        load_q(item_of(item), qb);
      }
      __threadfence();  // this CTA's last fetch, before it counts itself out
      if (atomicAdd(counters + 1, 1) == (int)gridDim.x - 1) {
        counters[0] = 0;
        counters[1] = 0;
      }
    }
#endif
  } else {
    // ---- consumers: 64 query rows each ------------------------------------------------------
    aj_regs_claim<CONSUMER_REGS>();
    const int cw = wg - 1;
    const int ct = tid - 128 * wg;
    const int warp = ct >> 5;
    const int lane = ct & 31;
    const int g = lane >> 2;
    const int t = lane & 3;
    const bool signals = ct == 0;  // frees a stage for this warpgroup
#if AJ_TRACE
    __shared__ unsigned long long aj_trace_records[NC][AJ_TRACE_WORDS];  // the items in flight
    unsigned long long* const tr = aj_trace_records[cw];
    unsigned trace_items = 0;  // records this consumer wrote
    if (ct == 0)
      for (int w = 0; w < AJ_TRACE_WORDS; ++w) tr[w] = 0;
#endif
    // The item's batch, head, first query row, this thread's first row and this warpgroup's Q
    // rows in each chunk of the item's Q buffer (set per item; the lambdas below read them).
    int b = 0, h = 0, q0 = 0, q_row = 0;
    // The item's row and key bounds and its first key (WorkItem); ragged: its first row in the
    // packed Q / O.
    int item_seq_q = seq_q, item_seq_k = seq_k, kv0 = 0;
#if AJ_RAGGED
    int q_start = 0;
#endif
    aj_u32 sq = 0;
    bool runs = false;  // AJ_MASK_RUNS: this item's rows read the mask through their runs
    const auto start_item = [&](const WorkItem& w, int qb) {
      b = w.b;
      h = w.h;
      item_seq_q = w.q_end;
      item_seq_k = w.k_end;
      kv0 = w.k_lo;
#if AJ_RAGGED
      q_start = args.cu_seqlens_q[b];
#endif
      q0 = w.q0;
      q_row = q0 + 64 * cw + 16 * warp + g;
      sq = s_q + qb * Q_BYTES + 64 * cw * 128;
#if AJ_DOC_ITEMS
      runs = w.in_document;
#elif AJ_MASK_RUNS
      runs = rows_runs_valid(b, h, q_row, args);
#endif
    };
#if AJ_HAS_SCORE_MOD
    const float mult = AJ_LOG2E;
#else
    const float mult = args.scale_log2;
#endif

    float o[D / 2];
    float row_max[2], row_sum[2];
    aj_u32 p[KN][4];
    float s[BN / 2];
#if AJ_PREFETCH_MASK_COLS
    AjMaskCol cols[2 * NN];
    const auto prefetch_cols = [&](int n, int cls) {
      if (cls == 1 && !runs) load_mask_cols(cols, b, h, kv0 + n * BN + 2 * t, args);
    };
#else
    const auto prefetch_cols = [](int, int) {};
#endif
#if AJ_SCORE_SPLIT && AJ_SPLIT_TABLES
    // Tile n's key parts into this consumer's next table, then a barrier of its 128 threads
    // (after the epilogue's 1..NC and the turns' NC+1..2NC); the softmax reads that table.
    const aj_u32 cols_tables = base + OFF_COLS + cw * 2 * BN * 4;
    int cols_buf = 0;
    const auto split_cols = [&](int n) {
      score_cols_to_shared(cols_tables + cols_buf * BN * 4, ct, b, h, kv0 + n * BN, q0, args);
      aj_named_barrier(1 + 2 * NC + cw, 128);
    };
#else
    const auto split_cols = [](int) {};
#endif

    // Scores of tile n -> probabilities in s (in place), the running max and sum updated;
    // returns through alpha[] the factor the O rows must be scaled by.
    auto softmax = [&](int n, int cls, float (&alpha)[2]) {
      const int kv_col = kv0 + n * BN + 2 * t;
      (void)cls;
#if AJ_SCORE_SPLIT && AJ_SPLIT_TABLES
      score_split_tile(s, cols_tables + cols_buf * BN * 4, t, args.scale);
      cols_buf ^= 1;
#elif AJ_HAS_SCORE_MOD
      score_mod_tile(s, b, h, q_row, kv_col, args);
#endif
#if AJ_HAS_MASK
      if (cls == 1) {
#if AJ_PREFETCH_MASK_COLS
        mask_scores<true, true, true>(s, b, h, q_row, kv_col, item_seq_k, args, cols, runs);
#else
        mask_scores<true, true>(s, b, h, q_row, kv_col, item_seq_k, args, nullptr, runs);
#endif
      } else
#endif
          if (kv0 + n * BN + BN > item_seq_k) {
        mask_scores<true, false>(s, b, h, q_row, kv_col, item_seq_k, args);
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = row_max[r];
#pragma unroll
        for (int j = 0; j < NN; ++j) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * r], s[4 * j + 2 * r + 1]));
        mx = fmaxf(mx, aj_shfl_xor(mx, 1));
        mx = fmaxf(mx, aj_shfl_xor(mx, 2));
        // A row with no admitted key so far keeps max -inf: use 0 to avoid inf - inf.
        const float ms = mx == AJ_NEG_INF ? 0.f : mx * mult;
        alpha[r] = aj_exp2(row_max[r] * mult - ms);
        row_max[r] = mx;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < NN; ++j) {
          const float p0 = aj_exp2(s[4 * j + 2 * r] * mult - ms);
          const float p1 = aj_exp2(s[4 * j + 2 * r + 1] * mult - ms);
          s[4 * j + 2 * r] = p0;
          s[4 * j + 2 * r + 1] = p1;
          sum += p0 + p1;
        }
        row_sum[r] = row_sum[r] * alpha[r] + sum;
      }
    };
    auto to_fragments = [&]() {
#pragma unroll
      for (int kk = 0; kk < KN; ++kk) {
        p[kk][0] = pack2(s[8 * kk + 0], s[8 * kk + 1]);
        p[kk][1] = pack2(s[8 * kk + 2], s[8 * kk + 3]);
        p[kk][2] = pack2(s[8 * kk + 4], s[8 * kk + 5]);
        p[kk][3] = pack2(s[8 * kk + 6], s[8 * kk + 7]);
      }
    };
    auto rescale = [&](const float (&alpha)[2]) {
#pragma unroll
      for (int j = 0; j < ND; ++j) {
        o[4 * j + 0] *= alpha[0];
        o[4 * j + 1] *= alpha[0];
        o[4 * j + 2] *= alpha[1];
        o[4 * j + 3] *= alpha[1];
      }
    };

#if AJ_TURNS
    // Turns to issue GEMMs, round robin over the consumers: warpgroup cw waits on barrier
    // TURN + cw (its 128 threads plus the 128 of the one before it, which arrive when done).
    constexpr int TURN = 1 + NC;  // after the epilogue's barriers 1..NC
    const auto take_turn = [&] { aj_named_barrier(TURN + cw, 256); };
    const auto pass_turn = [&] { aj_named_barrier_arrive(TURN + (cw + 1) % NC, 256); };
#else
    const auto take_turn = [] {};
    const auto pass_turn = [] {};
#endif
    // The next tile from the producer: waits for stage `stage`'s K; false after the last one.
    bool last = false;  // AJ_LAST_IN_WORD: the tile just read is its item's last
    const auto next_tile = [&](int stage, int phase, int& n, int& cls) {
      aj_mbar_wait(bar.k_full(stage), phase);
      const aj_u32 word = aj_ld_shared_u32(s_tiles + 4 * stage);
      n = (int)(word >> TILE_SHIFT);
      cls = (int)(word & 3u);
      last = AJ_LAST_IN_WORD && (word & 4u) != 0u;
      return word != NO_TILE;
    };

    int stage = 0, phase = 0;
    // From an item's first tile (its S done) through its last: softmax(n) runs while P(n-1) V(n-1)
    // does, then S(n+1) and P(n) V(n) are issued. The loop starts at the softmax, so one body
    // serves every tile: a single copy of the softmax and the hooks (compile time), and the GEMMs
    // on no branch of their own (ptxas serializes a wgmma behind a branch, or behind a wait it
    // cannot count). Returns at the item's end stage (its word read), or after a tile whose word
    // says it is the last (AJ_LAST_IN_WORD), the last P V not issued.
    const auto tile_loop = [&](int& n, int& cls, int& pv_stage, int& pv_phase) {
      float alpha[2];
      for (;;) {
        aj_fence_registers(s);
        if (signals) aj_mbar_arrive(bar.k_empty(stage));
        AJ_TRACE_TILE();
        AJ_TRACE_SPAN(AJ_TR_SOFTMAX, softmax(n, cls, alpha));
        AJ_TRACE_SPAN(AJ_TR_WAIT_PV, aj_wgmma_wait<0>());
        aj_fence_registers(o);
        aj_keep_registers(p);  // the wgmma read them until here
        if (signals && pv_stage >= 0) aj_mbar_arrive(bar.v_empty(pv_stage));
        AJ_TRACE_SPAN(AJ_TR_RESCALE, rescale(alpha); to_fragments());  // the first tile's alpha is 0, O still 0
        pv_stage = stage;
        pv_phase = phase;
        advance(stage, phase);
        bool more;
        AJ_TRACE_SPAN(AJ_TR_WAIT_K, more = !last && next_tile(stage, phase, n, cls));
        if (!more) break;
        AJ_TRACE_SPAN(AJ_TR_WAIT_TURN, take_turn());
        AJ_TRACE_SPAN(AJ_TR_ISSUE_QK, issue_qk(s, sq, s_k + stage * KV_BYTES));
        AJ_TRACE_SPAN(AJ_TR_WAIT_V, aj_mbar_wait(bar.v_full(pv_stage), pv_phase));
        AJ_TRACE_SPAN(AJ_TR_ISSUE_PV, issue_pv(o, p, s_v + pv_stage * KV_BYTES));
        pass_turn();
        prefetch_cols(n, cls);
        split_cols(n);
        AJ_TRACE_SPAN(AJ_TR_WAIT_S, aj_wgmma_wait<1>());  // S(n) is done; P(n-1) V(n-1) may still run
      }
    };
    // The first tile's S, issued in a turn (the last consumer's extra arrival first lets consumer 0
    // start) and waited.
    const auto first_s = [&](int n, int cls) {
      if (cw == NC - 1) pass_turn();
      take_turn();
      issue_qk(s, sq, s_k + stage * KV_BYTES);
      pass_turn();
      prefetch_cols(n, cls);
      split_cols(n);
      aj_wgmma_wait<0>();
    };
    const auto start_rows = [&]() {
#pragma unroll
      for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        row_max[r] = AJ_NEG_INF;
        row_sum[r] = 0.f;
      }
    };
    // The epilogue, first half: O normalized (LSE, gate) and staged in this warpgroup's Q rows
    // (its reads of Q are done), then the warpgroup's barrier.
    const auto stage_o = [&]() {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float l = row_sum[r];
        l += aj_shfl_xor(l, 1);
        l += aj_shfl_xor(l, 2);
        const bool any = l > 0.f;
        const float inv = any ? 1.0f / l : 0.f;
        const int lrow = 16 * warp + 8 * r + g;  // row within the warpgroup
        const int q = q_row + 8 * r;
        if (args.lse != nullptr && t == 0 && q < item_seq_q) {
          // ms * ln 2 + ln l, with ms the softmax's rounded max (its rounding cancels against the
          // one l carries) and a single rounding at the LSE's magnitude: gradients of learned
          // biases weigh every row's LSE error by the row's key distances.
          float lse_rest = aj_log2(l) * AJ_LN2;  // small beside the max
#if AJ_SCORE_SPLIT && AJ_SPLIT_TABLES
          lse_rest += aj_score_row(b, h, q, q0, args);  // the row part softmax left out
#endif
          const float lse = any ? fmaf(row_max[r] * mult, AJ_LN2, lse_rest) : AJ_NEG_INF;
#if AJ_RAGGED
          args.lse[(aj_i64)h * args.total_q + q_start + q] = lse;  // [heads_q, total_q]
#else
          args.lse[((aj_i64)b * args.heads_q + h) * seq_q + q] = lse;
#endif
        }
#if AJ_HAS_OUTPUT_GATE
        // O *= sigmoid(gate) in fp32 before the one rounding; rows past seq_q read in range
        // (row 0 for a ragged batch's sequence without queries, whose rows are never stored).
#if AJ_RAGGED
        const int qg = q < item_seq_q ? q : max(item_seq_q - 1, 0);
#else
        const int qg = q < item_seq_q ? q : item_seq_q - 1;
#endif
#if !AJ_OUTPUT_GATE_PER_ELEMENT
        const float row_gate = aj_output_gate(b, h, qg, 0, args);
#endif
#endif
        const aj_u32 row_addr = sq + lrow * 128;
#pragma unroll
        for (int j = 0; j < ND; ++j) {
          float o0 = o[4 * j + 2 * r] * inv, o1 = o[4 * j + 2 * r + 1] * inv;
#if AJ_HAS_OUTPUT_GATE
#if AJ_OUTPUT_GATE_PER_ELEMENT
          o0 *= aj_output_gate(b, h, qg, j * 8 + 2 * t, args);
          o1 *= aj_output_gate(b, h, qg, j * 8 + 2 * t + 1, args);
#else
          o0 *= row_gate;
          o1 *= row_gate;
#endif
#endif
          // Column group j: chunk j / 8, 16-byte slot (j % 8) XOR (row % 8), as the Q tile.
          aj_st_shared_u32(row_addr + (j >> 3) * Q_CHUNK + (((j & 7) ^ (lrow & 7)) << 4) + 4 * t, pack2(o0, o1));
        }
      }
      aj_named_barrier(1 + cw, 128);
    };
    // The epilogue, second half: the staged rows to global memory, 16-byte stores.
    const auto store_o = [&]() {
      aj_u16* og = (aj_u16*)args.o + b * args.o_stride[0] + h * args.o_stride[1];
#if AJ_RAGGED
      og += (aj_i64)q_start * args.o_stride[2];
#endif
      constexpr int TOTAL = 64 * ND;  // 16-byte pieces of this warpgroup's rows
#pragma unroll
      for (int i = 0; i < TOTAL / 128; ++i) {
        const int idx = ct + i * 128;
        const int lrow = idx / ND;
        const int cc = idx % ND;
        const int q = q0 + 64 * cw + lrow;
        if (q < item_seq_q) {
          aj_u32 v[4];
          aj_ld_shared_v4(sq + lrow * 128 + (cc >> 3) * Q_CHUNK + (((cc & 7) ^ (lrow & 7)) << 4), v);
          aj_st_global_v4(og + (aj_i64)q * args.o_stride[2] + cc * 8, v);
        }
      }
    };

#if AJ_ITEM_OVERLAP
    // Items back to back: at an item's end, its last P V and the next item's first S go out in
    // one turn (the next Q already in the other buffer, its first K tile in the ring), and the
    // epilogue runs while the tensor cores compute that S; the next item starts at its softmax.
    // Every item has a tile (the producer gives an empty one a tile of masked keys), so the GEMMs
    // are on no branch: ptxas counts the waits and keeps them asynchronous. After the last item
    // the S is a dummy (the end stage's K, which no copy is writing), never read. Every turn taken
    // is passed on; the last consumer passes once more before its first (so that consumer 0
    // starts), which consumer 0 takes at the end.
    int local = 0, qb = 0, n = 0, cls = 0;
    aj_mbar_wait(bar.q_full(0), 0);
    int item = (int)aj_ld_shared_u32(s_items);
    start_rows();
    if (item >= 0) {
      start_item(item_of(item), 0);
      next_tile(stage, phase, n, cls);
      first_s(n, cls);
    }
    while (item >= 0) {
      int pv_stage = -1, pv_phase = 0;
      tile_loop(n, cls, pv_stage, pv_phase);
      const int end_stage = stage;  // its word (NO_TILE) read
      advance(stage, phase);
      const int next_local = local + 1, next_qb = next_local % QB;
      aj_mbar_wait(bar.q_full(next_qb), next_local / QB & 1);
      const int next_item = (int)aj_ld_shared_u32(s_items + 4 * next_qb);
      if (next_item >= 0) next_tile(stage, phase, n, cls);
      take_turn();
      aj_mbar_wait(bar.v_full(pv_stage), pv_phase);
      issue_pv(o, p, s_v + pv_stage * KV_BYTES);
      issue_qk(s, s_q + next_qb * Q_BYTES + 64 * cw * 128, s_k + (next_item >= 0 ? stage : end_stage) * KV_BYTES);
      pass_turn();
      aj_wgmma_wait<1>();  // this item's P V done; the next S may still run
      aj_fence_registers(o);
      aj_keep_registers(p);
      if (signals) aj_mbar_arrive(bar.v_empty(pv_stage));
      stage_o();
      // The end stage, freed once every thread of the warpgroup has read its word (the barrier
      // in stage_o); the Q buffer after this thread's accesses, fenced from the next TMA write.
      if (signals) {
        aj_mbar_arrive(bar.k_empty(end_stage));
        aj_mbar_arrive(bar.v_empty(end_stage));
      }
      store_o();
      aj_fence_proxy_async();
      aj_mbar_arrive(bar.q_empty(qb));
      local = next_local;
      qb = next_qb;
      item = next_item;
      if (item >= 0) {
        start_item(item_of(item), qb);
        prefetch_cols(n, cls);
        split_cols(n);
      }
      aj_wgmma_wait<0>();  // the next S
      start_rows();        // (O's registers only once no GEMM is in flight)
    }
    if (cw == 0 && local > 0) take_turn();
#else
#if AJ_PERSISTENT
    for (int local = 0;; ++local) {
      const int qb = local % QB;
      AJ_TRACE_ITEM_START();
      aj_mbar_wait(bar.q_full(qb), local / QB & 1);  // also before the epilogue reuses the Q tile
      const int item = (int)aj_ld_shared_u32(s_items + 4 * qb);
      if (item < 0) break;
      start_item(item_of(item), qb);
#else
    {
      start_item(my_item, 0);
      AJ_TRACE_ITEM_START();
      aj_mbar_wait(bar.q_full(0), 0);  // also before the epilogue reuses the Q tile
#endif
      AJ_TRACE_AT(AJ_TR_Q);
      start_rows();
      int n = 0, cls = 0;
      const bool has_tiles = next_tile(stage, phase, n, cls);
      AJ_TRACE_AT(AJ_TR_K);
      if (has_tiles) {
        // Every consumer sees the same tiles, so each takes the same number of turns; the last
        // one's last arrival is left out.
        first_s(n, cls);
        AJ_TRACE_AT(AJ_TR_S0);
        int pv_stage = -1, pv_phase = 0;
        tile_loop(n, cls, pv_stage, pv_phase);
        AJ_TRACE_AT(AJ_TR_LOOP);
        take_turn();
        aj_mbar_wait(bar.v_full(pv_stage), pv_phase);
        issue_pv(o, p, s_v + pv_stage * KV_BYTES);
        if (cw != NC - 1) pass_turn();
        aj_wgmma_wait<0>();
        AJ_TRACE_AT(AJ_TR_PV);
        aj_fence_registers(o);
        aj_keep_registers(p);
        if (signals) aj_mbar_arrive(bar.v_empty(pv_stage));
      }
      stage_o();
      AJ_TRACE_AT(AJ_TR_STAGED);
#if AJ_PERSISTENT
      // The item's end stage (the word NO_TILE; with AJ_LAST_IN_WORD only an item without tiles has
      // one), freed for the next item's tiles once every thread of the warpgroup has read its word
      // (the barrier in stage_o).
      if (!has_tiles || !AJ_LAST_IN_WORD) {
        if (signals) {
          aj_mbar_arrive(bar.k_empty(stage));
          aj_mbar_arrive(bar.v_empty(stage));
        }
        advance(stage, phase);
      }
#endif
      store_o();
      AJ_TRACE_AT(AJ_TR_END);
      AJ_TRACE_ITEM_END();
#if AJ_PERSISTENT
      // This thread's writes and reads of the staged O are done; the Q thread's next TMA load
      // into the buffer is an async-proxy write, so the generic accesses are fenced first.
      aj_fence_proxy_async();
      aj_mbar_arrive(bar.q_empty(qb));
#endif
    }  // item
#endif  // AJ_ITEM_OVERLAP
  }
}

#endif  // ATTNJIT_FWD_SM90_CUH
