// The values a bound captured tensor holds over a box of indices, found by scanning it on the
// host: the interval analysis's `TileBox::tensor_range` hook, so that tiles of a mask that
// reads a tensor (document ids) get exact classes where the ids are known. Used by the CPU
// backend's tile classes and by `mask_density` (the admitted pairs `attnjit bench` counts).
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <utility>

#include "compiler/mask_analysis.hpp"
#include "runtime/api/bindings.hpp"

namespace attnjit {

// The smallest and largest value `read` sees in `t` over `index` (one range per dimension,
// clamped into the extents as the hooks clamp reads); nullopt when the box holds more than
// `max_scan` elements, the ranks differ, or a value is NaN.
std::optional<std::pair<double, double>> scan_tensor_range(const DLTensor& t, const ir::Node& read,
                                                           std::span<const ir::IntRange> index,
                                                           std::int64_t max_scan = 65536);

// A TileBox::tensor_range over the tensors bound in `bindings` (which must outlive it): unknown
// (nullopt) for a tensor not bound there.
std::function<std::optional<std::pair<double, double>>(const ir::Node&, std::span<const ir::IntRange>)>
bound_tensor_ranges(const Bindings& bindings);

}  // namespace attnjit
