// Host-side proof that captured-tensor reads stay in range (see read_bounds.hpp).
#include "runtime/api/read_bounds.hpp"

#include <fmt/format.h>

#include "compiler/ir.hpp"
#include "compiler/mask_analysis.hpp"
#include "runtime/api/dlpack_view.hpp"

namespace attnjit {

std::string UnprovenRead::str() const {
  return fmt::format("tensor '{}' dimension {}: indices in [{}, {}], extent {}", tensor, dim, lo, hi, extent);
}

namespace {

void check_gate_extent(const Variant& variant, const ProblemShape& p, int head_dim, const Bindings& bindings) {
  const auto& gate = *variant.output_gate();
  auto it = bindings.tensors().find(gate.tensor);
  if (it == bindings.tensors().end()) return;  // check_bindings reports a missing tensor
  std::vector<std::int64_t> need = {p.batch, p.heads_q, p.seq_q};
  if (gate.rank == 4) need.push_back(head_dim);
  const auto have = dlpack_shape(it->second);
  for (std::size_t d = 0; d < need.size() && d < have.size(); ++d)
    if (have[d] < need[d])
      throw UserError(
          fmt::format("output gate tensor '{}' has shape {}; this call reads indices up to {} in dimension "
                      "{} (extent {}): it must be at least {}",
                      gate.tensor, shape_string(have), need[d] - 1, d, have[d], shape_string(need)));
}

}  // namespace

std::optional<UnprovenRead> first_unproven_read(const Variant& variant, const ProblemShape& p, int head_dim,
                                                const Bindings& bindings) {
  if (variant.output_gate()) check_gate_extent(variant, p, head_dim, bindings);
  ir::TileBox box;
  box.b = {0, p.batch - 1};
  box.h = {0, p.heads_q - 1};
  box.q = {0, p.seq_q - 1};
  box.kv = {0, p.seq_k - 1};
  box.q_len = p.seq_q;
  box.kv_len = p.seq_k;
  box.num_heads = p.heads_q;
  for (const auto& param : variant.params()) {
    if (!bindings.scalars().count(param.name)) continue;
    if (param.type == ir::Type::Int)
      box.int_params[param.name] = bound_int(bindings, param.name);
    else
      box.float_params[param.name] = bound_float(bindings, param.name);
  }
  for (const auto& n : ir::topological_order({variant.score_mod().node(), variant.mask_mod().node()})) {
    if (n->op != ir::Op::TensorRead) continue;
    auto it = bindings.tensors().find(n->name);
    if (it == bindings.tensors().end()) continue;
    const auto extents = dlpack_shape(it->second);
    for (std::size_t d = 0; d < n->args.size() && d < extents.size(); ++d) {
      const ir::IntRange r = ir::int_range_of(n->args[d], box);
      if (r.lo < 0 || r.hi >= extents[d]) return UnprovenRead{n->name, static_cast<int>(d), r.lo, r.hi, extents[d]};
    }
  }
  return std::nullopt;
}

}  // namespace attnjit
