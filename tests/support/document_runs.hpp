// The runs of one row of document ids as the pre-pass writes them (templates/tensor_runs.cuh,
// compiler/passes/run_equality.hpp): per position (lo, hi), the first and last index of the run
// of equal ids that holds it, INT_MIN / INT_MAX for a run that reaches the row's start / end;
// (INT_MAX, INT_MIN) everywhere when the ids are not monotone towards the row's end.
#pragma once

#include <climits>
#include <cstddef>
#include <utility>
#include <vector>

namespace attnjit {

inline std::vector<std::pair<int, int>> document_runs(const int* ids, int n) {
  const int first = ids[0], last = ids[n - 1];
  bool monotone = true;
  for (int j = 1; j < n; ++j)
    monotone &= first < last ? ids[j] >= ids[j - 1] : (first > last ? ids[j] <= ids[j - 1] : ids[j] == ids[j - 1]);
  std::vector<std::pair<int, int>> out(static_cast<std::size_t>(n), {INT_MAX, INT_MIN});
  if (!monotone) return out;
  for (int j = 0; j < n; ++j) {
    int lo = j, hi = j;
    while (lo > 0 && ids[lo - 1] == ids[j]) --lo;
    while (hi + 1 < n && ids[hi + 1] == ids[j]) ++hi;
    out[static_cast<std::size_t>(j)] = {lo == 0 ? INT_MIN : lo, hi == n - 1 ? INT_MAX : hi};
  }
  return out;
}

inline std::vector<std::pair<int, int>> document_runs(const std::vector<int>& ids) {
  return document_runs(ids.data(), static_cast<int>(ids.size()));
}

}  // namespace attnjit
