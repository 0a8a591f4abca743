// attnjit_ragged_items: fwd_sm90's work items of a ragged batch (AJ_RAGGED_ITEMS), listed
// before the persistent forward runs.
//
// Without the list the persistent kernel's items cover the longest sequence for every sequence
// and skip the query blocks a shorter one lacks, one counter round trip each (1888 of 4096 items
// for lengths 3001, 517, 4096, 1234, 2048, 777, 3500, 1999), and take the sequences in batch
// order, so a long sequence late in the batch leaves a tail of long items (ncu, H200,
// 2026-12-03: SMs busy 90% of the busiest one's cycles; the same batch with its sequences
// longest first ran 4.9% faster). The list holds the sequences in order of decreasing query
// blocks (ties in batch order), each with the number of its first item: sequence k's items are
// first_k .. first_k + heads * blocks_k - 1, its heads in turn, each head's blocks last first
// (the heaviest under a causal mask). Only blocks with rows are items.
//
// One CTA. Up to AJ_RAGGED_SORT_MAX sequences are ranked (thread b counts the sequences that
// go before b); a larger batch keeps batch order. Then one block-wide scan of the blocks.
//
// Buffer (AttnjitFwdSm90Args::ragged_items): int {sequences listed, items, 0, 0}, then int2
// (b, first item) per sequence; the host sizes it 16 + 8 * batch bytes.
#ifndef ATTNJIT_RAGGED_ITEMS_CUH
#define ATTNJIT_RAGGED_ITEMS_CUH

#define AJ_RAGGED_ITEMS_THREADS 1024
#define AJ_RAGGED_SORT_MAX 1024

extern "C" __global__ void __launch_bounds__(AJ_RAGGED_ITEMS_THREADS)
    attnjit_ragged_items(const __grid_constant__ AttnjitFwdSm90Args params) {
  using aj_fwd90::ragged_query_blocks;
  const AttnjitFwdArgs& args = params.fwd;
  const int sequences = args.batch, t = threadIdx.x;
  const bool ranked = sequences <= AJ_RAGGED_SORT_MAX;
  // Ranked: position p holds sequence order[p] with blocks[p] query blocks.
  __shared__ int blocks_by_seq[AJ_RAGGED_SORT_MAX], blocks[AJ_RAGGED_SORT_MAX], order[AJ_RAGGED_SORT_MAX];
  if (ranked) {
    if (t < sequences) blocks_by_seq[t] = ragged_query_blocks(t, args);
    __syncthreads();
    if (t < sequences) {
      const int mine = blocks_by_seq[t];
      int rank = 0;
      for (int j = 0; j < sequences; ++j) {
        const int other = blocks_by_seq[j];
        rank += other > mine || (other == mine && j < t);
      }
      order[rank] = t;
      blocks[rank] = mine;
    }
    __syncthreads();
  }
  // Each thread's run of positions, its blocks, then an exclusive scan over the CTA.
  const int per = ranked ? 1 : (sequences + AJ_RAGGED_ITEMS_THREADS - 1) / AJ_RAGGED_ITEMS_THREADS;
  const int p0 = min(t * per, sequences), p1 = min(p0 + per, sequences);
  const auto blocks_at = [&](int p) { return ranked ? blocks[p] : ragged_query_blocks(p, args); };
  int mine = 0;
  for (int p = p0; p < p1; ++p) mine += blocks_at(p);
  int total_blocks;
  int first = aj_cta_exclusive_scan(mine, total_blocks);
  int* const out = params.ragged_items;
  int2* const entries = reinterpret_cast<int2*>(out + 4);
  for (int p = p0; p < p1; ++p) {
    entries[p] = make_int2(ranked ? order[p] : p, first * args.heads_q);
    first += blocks_at(p);
  }
  if (t == 0) {
    out[0] = sequences;
    out[1] = total_blocks * args.heads_q;
    out[2] = out[3] = 0;
  }
}

#endif  // ATTNJIT_RAGGED_ITEMS_CUH
