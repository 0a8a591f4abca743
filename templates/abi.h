// attnjit kernel ABI: the argument block every generated attention kernel takes by value.
//
// This one file is compiled into the host library (runtime/) and pasted verbatim into
// every generated CUDA translation unit, so host and device agree on the layout by
// construction. Plain C types only: it must compile under NVRTC with no headers.
#ifndef ATTNJIT_ABI_H
#define ATTNJIT_ABI_H

#define ATTNJIT_MAX_PARAMS 16
#define ATTNJIT_MAX_TENSORS 8

// An out-of-range read of a captured tensor in a launch, written by the device into
// host-mapped memory and reported by the runtime after the launch (Kernel::synchronize, or
// the next forward call): 0 when clear, else bit 63 set, the tensor slot in bits 40..47,
// the dimension in bits 32..39 and the index in bits 0..31 (one store, so never torn).
struct AttnjitErrorRecord {
  unsigned long long word;
};

// A captured tensor as the kernel sees it: base pointer and strides in elements. Reads are
// clamped into the extent; when `error` is set (the host could not prove every read in
// range), an out-of-range index is also recorded there.
struct AttnjitTensorArg {
  const void* data;
  long long stride[4];
  int size[4];
  struct AttnjitErrorRecord* error;
  int slot;
};

// Strides are in elements. Q/O: [batch, heads_q, seq_q, head_dim];
// K/V: [batch, heads_kv, seq_k, head_dim]; the head_dim stride is 1.
struct AttnjitFwdArgs {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;  // [batch, heads_q, seq_q], contiguous; natural log; may be null

  long long q_stride[3];  // batch, head, seq
  long long k_stride[3];
  long long v_stride[3];
  long long o_stride[3];

  int batch;
  int heads_q;
  int heads_kv;
  int seq_q;
  int seq_k;

  float scale;       // softmax scale applied to q.k
  float scale_log2;  // scale * log2(e)

  int int_params[ATTNJIT_MAX_PARAMS];
  float float_params[ATTNJIT_MAX_PARAMS];
  struct AttnjitTensorArg tensors[ATTNJIT_MAX_TENSORS];

  // Tile classes of a mask that reads tensors, one byte per (q tile, kv tile) of
  // AJ_BLOCK_M x AJ_BLOCK_N: 0 empty, 1 partial, 2 full. Written by the block-mask kernel
  // (templates/block_mask.cuh), read by the forward kernel; null: aj_tile_class decides.
  // Layout [B', H', q_tiles, kv_tiles] with B' in {1, batch}, H' in {1, heads_q}; strides
  // in bytes for batch, head and q tile (0 for a dimension of extent 1), the kv tile stride is 1.
  unsigned char* tile_classes;
  long long tile_class_stride[3];

  // K rotated by RoPE once per (b, kv head), [batch, heads_kv, seq_k, head_dim] contiguous,
  // written by attnjit_rope_k and read by the forward kernel; null without RoPE. Q likewise,
  // [batch, heads_q, seq_q, head_dim], written by attnjit_rope_q where the forward kernel
  // does not turn Q itself (fwd_sm90); null otherwise.
  void* rope_k;
  void* rope_q;

  // Keys in use per sequence, [batch] (a KV-cache call: Kernel::forward_kv_cache), clamped into
  // [0, seq_k] where read; null: seq_k for every sequence. Read only by units built with
  // AJ_PER_SEQUENCE_LENGTHS 1, whose hooks then see it as kv_len.
  const int* seq_lens_k;

  // A ragged batch (Kernel::forward_ragged): sequence b's queries are rows [cu_seqlens_q[b],
  // cu_seqlens_q[b + 1]) of Q and O, its keys rows [cu_seqlens_k[b], cu_seqlens_k[b + 1]) of K
  // and V (the batch strides are 0, the seq strides step through the packed tokens); seq_q and
  // seq_k are the longest lengths, LSE is [heads_q, total_q]. Null in every other call; read only
  // by units built with AJ_RAGGED 1. total_k: K's and V's tokens (fwd_sm90's tensor maps).
  const int* cu_seqlens_q;
  const int* cu_seqlens_k;
  int total_q;
  int total_k;
};

// The backward pass's argument block (templates/bwd_sm80.cuh). `fwd` comes first, so a
// pointer to it is a pointer to the whole block: the hooks take `fwd` (q, k, v, o, lse,
// shapes, the variant's parameters and tensors), launch plans bind workspace through it.
// Strides are in elements, [batch, head, seq] as in AttnjitFwdArgs; the head_dim stride is 1.
struct AttnjitBwdArgs {
  struct AttnjitFwdArgs fwd;
  const void* d_out;  // dO, [batch, heads_q, seq_q, head_dim]
  void* dq;           // [batch, heads_q, seq_q, head_dim]
  void* dk;           // [batch, heads_kv, seq_k, head_dim] (GQA: summed over a group's heads)
  void* dv;
  long long d_out_stride[3];
  long long dq_stride[3];
  long long dk_stride[3];
  long long dv_stride[3];

  // Workspace: D = rowsum(dO * O) [batch, heads_q, seq_q]; dQ accumulated over kv blocks,
  // [batch, heads_q, seq_q, head_dim] contiguous, float, or fixed point (long long, units of
  // 2^-32) when deterministic; the same two forms for the gradient of each captured float
  // tensor the score_mod reads (null for the others), contiguous in the tensor's shape.
  float* delta;
  void* dq_accum;
  // With RoPE: Q rotated ([batch, heads_q, seq_q, head_dim] contiguous; K goes to fwd.rope_k),
  // and dK in the rotated frame in fp32, turned back by attnjit_bwd_rope_dk.
  void* rope_q;
  float* dk_rotated;
  // With an output gate: dO * sigmoid(gate), the gradient of the ungated output
  // ([batch, heads_q, seq_q, head_dim] contiguous), written by the preprocess.
  void* d_out_gated;
  void* tensor_grad_accum[ATTNJIT_MAX_TENSORS];
  // The user's fp32 gradient outputs (strides in elements), null when not asked for.
  float* tensor_grad[ATTNJIT_MAX_TENSORS];
  long long tensor_grad_stride[ATTNJIT_MAX_TENSORS][4];
  long long tensor_grad_numel[ATTNJIT_MAX_TENSORS];  // elements of each accumulator (0: none)

  // 1: fixed-point accumulation, whose sums do not depend on the order of the additions,
  // so results are bit-identical run to run; 0: fp32 atomics (faster, order-dependent).
  int deterministic;
  // With bwd_sm90's dq_ordered (workspace): per (batch, query head, query block), how many warps
  // of the kv blocks have added their dQ there, deterministic calls taking turns in a fixed order.
  int* dq_turns;
};

// The split-K decode kernel's argument block (templates/decode_sm80.cuh); `fwd` first, as in
// AttnjitBwdArgs. Workspace: each split's O (normalized, fp32) and LSE per query row.
struct AttnjitDecodeArgs {
  struct AttnjitFwdArgs fwd;
  float* partial_o;    // [splits, batch, heads_q, seq_q, head_dim] (stream-K: see slot_rows)
  float* partial_lse;  // [splits, batch, heads_q, seq_q]
  // Splits finished per (sequence, kv head, row block), [batch, heads_kv, row_blocks]: zero
  // before a launch, and the last split to finish sets its counter back to zero.
  int* split_counters;
  int splits;           // kv splits (grid x of attnjit_decode)
  int tiles_per_split;  // kv tiles of AJ_BLOCK_N keys per split
  int row_blocks;       // tiles of 16 * AJ_NUM_WARPS (query head, query) rows per kv head
  // Stream-K (AJ_STREAM_K): partial_o / partial_lse hold 2 * gridDim.x slots of slot_rows rows
  // (two per CTA: its range's first piece and its last), splits and tiles_per_split unused.
  int slot_rows;

  // A paged KV cache: K and V are pages [num_pages, page_size, heads_kv, head_dim] (fwd.k_stride
  // and v_stride then hold the page, head and in-page row strides), and key j of sequence b
  // lives in page block_table[b * block_table_stride + j / page_size] (clamped into
  // [0, num_pages)), row j % page_size. Null block_table: K and V are [batch, heads_kv, seq_k,
  // head_dim] as in the forward block.
  const int* block_table;
  long long block_table_stride;
  int page_size;
  int num_pages;
};

// A TMA descriptor (the driver's CUtensorMap: 128 opaque bytes, 64-byte aligned), encoded on the
// host with cuTensorMapEncodeTiled and read by the copy engine from the kernel's parameters.
struct alignas(64) AttnjitTensorMap {
  unsigned long long opaque[16];
};

// The sm_90a forward's argument block (templates/fwd_sm90.cuh), taken as a __grid_constant__
// parameter so the descriptors keep their parameter-space address; `fwd` first, as above. The
// maps cover Q, K (or the RoPE-turned K in the workspace) and V as 4-d tensors
// [batch, heads, seq, head_dim] (innermost first in the descriptor), boxes of 64 columns.
struct AttnjitFwdSm90Args {
  struct AttnjitFwdArgs fwd;
  struct AttnjitTensorMap tma_q;
  struct AttnjitTensorMap tma_k;
  struct AttnjitTensorMap tma_v;
  // Persistent kernels (AJ_PERSISTENT): the next work item, and the CTAs that ran out of them;
  // zero at launch, and the last CTA leaves them zero (LaunchPlan::zeroed_bytes).
  int* work_counters;
  // Work items aligned to documents (AJ_DOC_ITEMS, templates/doc_items.cuh): the count, then
  // (b, first row, first key, key bound) per item; the pre-pass attnjit_doc_items writes them.
  int* doc_items;
  // A ragged batch's work items (AJ_RAGGED_ITEMS, templates/ragged_items.cuh): the sequences
  // longest first, each with its first item; the pre-pass attnjit_ragged_items writes them.
  int* ragged_items;
};

#endif  // ATTNJIT_ABI_H
