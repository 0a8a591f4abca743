// Host scans of bound tensors for the interval analysis (see tensor_ranges.hpp).
#include "runtime/api/tensor_ranges.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "compiler/eval.hpp"
#include "runtime/api/dlpack_view.hpp"

namespace attnjit {

std::optional<std::pair<double, double>> scan_tensor_range(const DLTensor& t, const ir::Node& read,
                                                           std::span<const ir::IntRange> index, std::int64_t max_scan) {
  if (static_cast<int>(index.size()) != t.ndim) return std::nullopt;
  const auto strides = dlpack_strides(t);
  std::vector<std::int64_t> lo(index.size()), hi(index.size());
  std::int64_t count = 1;
  for (std::size_t d = 0; d < index.size(); ++d) {
    const std::int64_t top = t.shape[d] - 1;
    lo[d] = std::clamp<std::int64_t>(index[d].lo, 0, top);  // reads are clamped into the extent
    hi[d] = std::clamp<std::int64_t>(index[d].hi, 0, top);
    count *= hi[d] - lo[d] + 1;
    if (count > max_scan) return std::nullopt;
  }
  const bool is_float = t.dtype.code == kDLFloat || t.dtype.code == kDLBfloat;
  double mn = std::numeric_limits<double>::infinity(), mx = -mn;
  std::vector<std::int64_t> at = lo;
  for (std::int64_t n = 0; n < count; ++n) {
    std::int64_t offset = 0;
    for (std::size_t d = 0; d < at.size(); ++d) offset += at[d] * strides[d];
    double v = 0;
    if (read.type == ir::Type::Float)
      v = is_float ? load_as_double(t, offset) : static_cast<double>(load_as_int(t, offset));
    else
      v = is_float ? load_as_double(t, offset) : static_cast<double>(ir::wrap_int32(load_as_int(t, offset)));
    if (std::isnan(v)) return std::nullopt;
    mn = std::min(mn, v);
    mx = std::max(mx, v);
    for (std::size_t d = at.size(); d-- > 0;) {  // next index, last dimension fastest
      if (++at[d] <= hi[d]) break;
      at[d] = lo[d];
    }
  }
  return std::make_pair(mn, mx);
}

std::function<std::optional<std::pair<double, double>>(const ir::Node&, std::span<const ir::IntRange>)>
bound_tensor_ranges(const Bindings& bindings) {
  return [&bindings](const ir::Node& read,
                     std::span<const ir::IntRange> index) -> std::optional<std::pair<double, double>> {
    const auto it = bindings.tensors().find(read.name);
    if (it == bindings.tensors().end()) return std::nullopt;
    return scan_tensor_range(it->second, read, index);
  };
}

}  // namespace attnjit
