// attnjit_tensor_runs: the runs of a document mask's id tensor (compiler/passes/
// run_equality.hpp), computed before the kernels whose mask reads them.
//
// R[i, j] = (lo, hi): the first and last index of the run of equal ids in row i of T that holds
// position j, INT_MIN for a run that starts the row and INT_MAX for one that ends it (a clamped
// read before or past the row is its first or last id, which such a run holds); lo = INT_MAX,
// hi = INT_MIN at every position of a row whose ids are not monotone (an id may then form two
// runs), where the mask compares the ids itself. Work items (row, chunk of AJ_RUNS_CHUNK
// positions) over a grid of any size: each CTA checks its row's order whole (from L2 for all
// but a row's first CTA), then finds its positions' run ends by binary search.
//
// Configuration macros (codegen): AJ_RUNS_SOURCE, AJ_RUNS_SLOT: the args.tensors[] slots of T
// (i32, rank 2) and R (i32, [size0, size1, 2], the runtime's buffer).
#ifndef ATTNJIT_TENSOR_RUNS_CUH
#define ATTNJIT_TENSOR_RUNS_CUH

#define AJ_RUNS_THREADS 256
#define AJ_RUNS_CHUNK 1024

extern "C" __global__ void __launch_bounds__(AJ_RUNS_THREADS) attnjit_tensor_runs(const AttnjitFwdArgs args) {
  const AttnjitTensorArg& t = args.tensors[AJ_RUNS_SOURCE];
  const AttnjitTensorArg& r = args.tensors[AJ_RUNS_SLOT];
  const int rows = t.size[0], len = t.size[1];
  const int chunks = (len + AJ_RUNS_CHUNK - 1) / AJ_RUNS_CHUNK;
  const long long step = t.stride[1];
  for (int item = blockIdx.x; item < rows * chunks; item += gridDim.x) {
    const int row = item / chunks, chunk = item % chunks;
    const int* ids = (const int*)t.data + (long long)row * t.stride[0];
    const int first = ids[0], last = ids[(long long)(len - 1) * step];
    // Monotone in the direction of the row's ends (constant where they are equal): then every
    // id's positions form one run.
    bool bad = false;
    for (int j = 1 + (int)threadIdx.x; j < len; j += AJ_RUNS_THREADS) {
      const int a = ids[(long long)(j - 1) * step], b = ids[(long long)j * step];
      bad |= first < last ? b < a : (first > last ? b > a : b != a);
    }
    bad = __syncthreads_or(bad);
    int* const out = (int*)r.data + (long long)row * r.stride[0];
    const int end = min(len, (chunk + 1) * AJ_RUNS_CHUNK);
    for (int j = chunk * AJ_RUNS_CHUNK + (int)threadIdx.x; j < end; j += AJ_RUNS_THREADS) {
      int lo = (int)AJ_INT_MAX, hi = (int)AJ_INT_MIN;
      if (!bad) {
        // In a monotone row the positions holding v are one interval around j: the first in
        // [0, j] and the last in [j, len) with id v, each by bisection.
        const int v = ids[(long long)j * step];
        int a = 0, b = j;
        while (a < b) {
          const int m = (a + b) >> 1;
          if (ids[(long long)m * step] == v)
            b = m;
          else
            a = m + 1;
        }
        lo = a == 0 ? (int)AJ_INT_MIN : a;
        a = j;
        b = len - 1;
        while (a < b) {
          const int m = (a + b + 1) >> 1;
          if (ids[(long long)m * step] == v)
            a = m;
          else
            b = m - 1;
        }
        hi = a == len - 1 ? (int)AJ_INT_MAX : a;
      }
      out[(long long)j * r.stride[1]] = lo;
      out[(long long)j * r.stride[1] + r.stride[2]] = hi;
    }
  }
}

#endif  // ATTNJIT_TENSOR_RUNS_CUH
