// Kernel::forward_kv_cache: decode steps against a paged or contiguous KV cache with per-sequence
// lengths, run by the decode template (templates/decode_sm80.cuh): stream-K by default.
#include <fmt/format.h>

#include <string>
#include <vector>

#include "compiler/error.hpp"
#include "runtime/api/attention.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/api/kernel_internals.hpp"
#include "templates/decode_sm80/decode_sm80_template.hpp"

namespace attnjit {

using namespace detail;

namespace {

// An int32 CUDA tensor of `rank` dimensions on `device` with a contiguous last dimension.
void check_index_tensor(const DLTensor& t, const char* name, int rank, int device) {
  if (t.device.device_type != kDLCUDA)
    throw UserError(fmt::format("KV cache {} is not in CUDA device memory; move it to the GPU", name));
  check_same_device(t, name, device);
  if (t.dtype.code != kDLInt || t.dtype.bits != 32 || t.dtype.lanes != 1 || t.ndim != rank)
    throw UserError(fmt::format("KV cache {} must be an int32 tensor of rank {}; got {} of shape {}", name, rank,
                                dlpack_dtype_name(t.dtype), shape_string(dlpack_shape(t))));
  if (dlpack_strides(t).back() != 1)
    throw UserError(fmt::format("KV cache {} must have stride 1 in its last dimension; got strides {}", name,
                                shape_string(dlpack_strides(t))));
}

}  // namespace

void Kernel::forward_kv_cache(const DLTensor& q, const KvCache& cache, const DLTensor& o, const DLTensor* lse,
                              const Bindings& bindings, void* stream, double softmax_scale) const {
  state_->require_gpu_unit("forward_kv_cache");
  const PreparedKernel& p = *state_->prepared;
  const ElementType dtype = p.config.dtype;
  const int device = state_->device;
  state_->report_recorded_read();
  check_4d(q, "q", dtype, device);
  check_4d(o, "o", dtype, device);
  check_4d(cache.k, "cache.k", dtype, device);
  check_4d(cache.v, "cache.v", dtype, device);
  const auto qs = dlpack_shape(q), ks = dlpack_shape(cache.k), vs = dlpack_shape(cache.v);
  if (vs != ks)
    throw UserError(fmt::format("cache.k {} and cache.v {} must have one shape", shape_string(ks), shape_string(vs)));
  if (qs[2] > kDecodeMaxSeqQ)
    throw UserError(
        fmt::format("forward_kv_cache serves decode steps of at most {} queries per sequence; q has {}. "
                    "Run a prefill through forward",
                    kDecodeMaxSeqQ, qs[2]));
  const bool paged = cache.block_table.has_value();
  const std::int64_t batch = qs[0];
  // The cache as the forward block would see a contiguous one: k_stride = {page or batch, head, key}.
  std::int64_t heads_kv = 0, capacity = 0, page_size = 0, num_pages = 0, table_stride = 0;
  if (paged) {
    check_index_tensor(*cache.block_table, "block_table", 2, device);
    const auto ts = dlpack_shape(*cache.block_table);
    if (ts[0] != batch)
      throw UserError(fmt::format("block_table {} must have one row per sequence ({})", shape_string(ts), batch));
    num_pages = ks[0];
    page_size = ks[1];
    heads_kv = ks[2];
    capacity = ts[1] * page_size;
    table_stride = dlpack_strides(*cache.block_table)[0];
  } else {
    if (ks[0] != batch)
      throw UserError(
          fmt::format("cache.k {} must have one entry per sequence ({}) in dimension 0 (contiguous cache "
                      "[B, Hkv, capacity, D]; pass block_table for pages [num_pages, page_size, Hkv, D])",
                      shape_string(ks), batch));
    heads_kv = ks[1];
    capacity = ks[2];
  }
  if (capacity > 0x7fffffff)
    throw UserError(fmt::format("the cache holds {} keys per sequence; at most 2^31 - 1", capacity));
  check_index_tensor(cache.seq_lens, "seq_lens", 1, device);
  if (dlpack_shape(cache.seq_lens)[0] != batch)
    throw UserError(fmt::format("seq_lens {} must have one entry per sequence ({})",
                                shape_string(dlpack_shape(cache.seq_lens)), batch));

  // The forward block of an equivalent contiguous call, then the cache's own strides.
  DLTensor k_view = cache.k, v_view = cache.v;
  std::int64_t view_shape[4] = {batch, heads_kv, capacity, ks[3]};
  std::int64_t k_strides[4], v_strides[4];
  const auto kst = dlpack_strides(cache.k), vst = dlpack_strides(cache.v);
  for (int d = 0; d < 4; ++d) {
    // paged [P, page, Hkv, D] -> {page, head, key, 1}; contiguous as given
    const int from = paged ? (d == 1 ? 2 : (d == 2 ? 1 : d)) : d;
    k_strides[d] = kst[static_cast<std::size_t>(from)];
    v_strides[d] = vst[static_cast<std::size_t>(from)];
  }
  k_view.shape = view_shape;
  v_view.shape = view_shape;
  k_view.strides = k_strides;
  v_view.strides = v_strides;
  AttnjitFwdArgs args = attention_arguments(q, k_view, v_view, o, lse, dtype, p.config.head_dim, device, softmax_scale);
  args.seq_lens_k =
      reinterpret_cast<const int*>(static_cast<const char*>(cache.seq_lens.data) + cache.seq_lens.byte_offset);
  check_bindings(state_->variant, bindings);
  bind_variant_arguments(p.unit.slots, bindings, args, device);

  const ProblemShape problem =
      state_->bound_problem(args, bindings, fmt::format("bind tensors that cover the capacity, {} keys", capacity));
  const ProblemShape hint{problem.batch, problem.heads_q, problem.heads_kv, 1, problem.seq_k};
  const KernelState::ExtraUnit* decode = state_->decode_unit(hint);
  if (decode == nullptr)
    throw UserError(fmt::format("the decode template does not serve variant '{}' at head_dim {} on this device",
                                state_->variant.name(), p.config.head_dim));
  const auto fill_pages = [&](void* block) {
    if (!paged) return;
    auto& d = *static_cast<AttnjitDecodeArgs*>(block);
    d.block_table = reinterpret_cast<const int*>(static_cast<const char*>(cache.block_table->data) +
                                                 cache.block_table->byte_offset);
    d.block_table_stride = table_stride;
    d.page_size = static_cast<int>(page_size);
    d.num_pages = static_cast<int>(num_pages);
  };
  state_->run_plan(*decode->prepared, *decode->loaded, args, problem, stream, nullptr, fill_pages);
}

const PreparedKernel* Kernel::prepared_decode() const {
  state_->require_gpu_unit("prepared_decode()");
  if (prepared().config.template_name == kDecodeTemplateName) return &prepared();
  const KernelState::ExtraUnit* unit = state_->built_forward_unit(kDecodeTemplateName, /*ragged=*/false);
  return unit ? unit->prepared.get() : nullptr;
}

}  // namespace attnjit
