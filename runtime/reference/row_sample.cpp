// The forward checker's row sample (see row_sample.hpp).
#include "runtime/reference/row_sample.hpp"

#include <algorithm>
#include <iterator>
#include <random>
#include <utility>

namespace attnjit {

std::vector<int> boundary_rows(int seq_q) {
  std::vector<int> rows;
  if (seq_q <= 0) return rows;
  rows.push_back(0);
  rows.push_back(seq_q - 1);
  for (const int tile : kSampledTileRows)
    for (int m = tile; m < seq_q; m += tile) {
      rows.push_back(m - 1);
      rows.push_back(m);
    }
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  return rows;
}

RowSelection sample_rows(const Variant& variant, const DLTensor& q, const DLTensor& k, const Bindings& bindings,
                         const RowSampleOptions& options) {
  const std::int64_t batch = q.shape[0], heads_q = q.shape[1], seq_q = q.shape[2], seq_k = k.shape[2];
  RowSelection selection;
  if (batch * heads_q * seq_q * seq_k <= options.full_check_pairs) return selection;  // every row

  const std::vector<int> required = boundary_rows(static_cast<int>(seq_q));
  selection.rows = fully_masked_rows(variant, q, k, bindings);
  std::mt19937_64 rng(options.seed);
  std::uniform_int_distribution<int> any_row(0, static_cast<int>(seq_q) - 1);
  for (auto& rows : selection.rows) {
    std::vector<int> merged;
    std::merge(rows.begin(), rows.end(), required.begin(), required.end(), std::back_inserter(merged));
    merged.erase(std::unique(merged.begin(), merged.end()), merged.end());
    rows = std::move(merged);
    // Random rows not already in the sample, while there are any left to draw.
    const std::size_t target =
        std::min<std::size_t>(rows.size() + std::max(options.random_rows, 0), static_cast<std::size_t>(seq_q));
    while (rows.size() < target) {
      const int row = any_row(rng);
      const auto it = std::lower_bound(rows.begin(), rows.end(), row);
      if (it == rows.end() || *it != row) rows.insert(it, row);
    }
  }
  return selection;
}

}  // namespace attnjit
