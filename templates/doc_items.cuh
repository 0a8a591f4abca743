// attnjit_doc_items: fwd_sm90's work items aligned to documents (AJ_DOC_ITEMS), listed after
// attnjit_tensor_runs from the runs of the id tensor.
//
// For a mask `ids[b, q] == ids[b, kv] && rest` whose ids are sorted along each row, a query
// block that starts at its document's first row and keys that start there too see only their
// own document: the mask is `rest` (causal, say) with the document's end as the key bound, so
// tile classes come from interval analysis of `rest` alone and no tile straddles two documents.
// Each entry is (b, q0, k_lo, k_end): rows q0 .. min(q0 + AJ_BLOCK_M, k_end) - 1 against keys
// k_lo .. k_end - 1. A row of ids that is not monotone keeps the plain blocks of the whole
// sequence, b stored as ~b (the kernel then evaluates the whole mask), and so does every row
// when seq_q != seq_k (a row's position and a key's then differ). Entries go in row order,
// a document's blocks last first (the heaviest under a causal `rest`); the kernel's work item i
// is entry i % count of head i / count.
//
// One CTA: the positions of the batch's rows split into contiguous ranges per thread, the
// entries each range starts counted, one block-wide scan (aj_cta_exclusive_scan), then written.
//
// Buffer (AttnjitFwdSm90Args::doc_items): int count, three ints of padding, then int4 entries;
// the host sizes it for batch * (ceil(seq_q / AJ_BLOCK_M) + seq_q) entries (fwd_sm90_doc_items_bytes).
#ifndef ATTNJIT_DOC_ITEMS_CUH
#define ATTNJIT_DOC_ITEMS_CUH

#define AJ_DOC_ITEMS_THREADS 1024

namespace aj_doc_items {

// Row b of the runs, position j: its run [lo, end), clamped to the sequence; false when the
// row's ids are not monotone (or the call's lengths differ).
__device__ __forceinline__ bool run_at(const AttnjitFwdArgs& args, const AttnjitTensorArg& r, int b, int j, int seq,
                                       int& lo, int& end) {
  if (args.seq_q != args.seq_k) return false;
  const int* at = (const int*)r.data + (long long)b * r.stride[0] + (long long)j * r.stride[1];
  const int l = at[0], h = at[r.stride[2]];
  if (l > h) return false;
  lo = max(l, 0);
  end = min(h == (int)AJ_INT_MAX ? seq : h + 1, seq);
  return true;
}

// Entries that position p (row p / seq, position p % seq) starts.
__device__ __forceinline__ int entries_at(const AttnjitFwdArgs& args, const AttnjitTensorArg& r, int p, int seq) {
  const int b = p / seq, j = p % seq;
  int lo, end;
  if (!run_at(args, r, b, j, seq, lo, end)) return j % AJ_BLOCK_M == 0 ? 1 : 0;
  return lo == j ? (end - j + AJ_BLOCK_M - 1) / AJ_BLOCK_M : 0;
}

}  // namespace aj_doc_items

extern "C" __global__ void __launch_bounds__(AJ_DOC_ITEMS_THREADS)
    attnjit_doc_items(const __grid_constant__ AttnjitFwdSm90Args params) {
  using namespace aj_doc_items;
  const AttnjitFwdArgs& args = params.fwd;
  const AttnjitTensorArg& r = args.tensors[AJ_RUNS_SLOT];
  const int seq = args.seq_q, total = args.batch * seq;
  const int per = (total + AJ_DOC_ITEMS_THREADS - 1) / AJ_DOC_ITEMS_THREADS;
  const int p0 = min((int)threadIdx.x * per, total), p1 = min(p0 + per, total);
  int mine = 0;
  for (int p = p0; p < p1; ++p) mine += entries_at(args, r, p, seq);
  int count;
  int at = aj_cta_exclusive_scan(mine, count);
  int4* const entries = (int4*)(params.doc_items + 4);
  for (int p = p0; p < p1; ++p) {
    const int b = p / seq, j = p % seq;
    int lo, end;
    if (!run_at(args, r, b, j, seq, lo, end)) {
      if (j % AJ_BLOCK_M == 0) entries[at++] = make_int4(~b, j, 0, args.seq_k);
    } else if (lo == j) {
      const int blocks = (end - j + AJ_BLOCK_M - 1) / AJ_BLOCK_M;
      for (int k = blocks - 1; k >= 0; --k) entries[at++] = make_int4(b, j + k * AJ_BLOCK_M, j, end);
    }
  }
  if (threadIdx.x == 0) params.doc_items[0] = count;
}

#endif  // ATTNJIT_DOC_ITEMS_CUH
