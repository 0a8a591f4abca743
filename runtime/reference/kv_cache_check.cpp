// check_forward_kv_cache (runtime/reference/kv_cache_check.hpp).
#include "runtime/reference/kv_cache_check.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "compiler/error.hpp"
#include "runtime/reference/check_tensors.hpp"
#include "runtime/reference/reference.hpp"

namespace attnjit {

using check_internal::MirroredTensor;

namespace {

// Every element of a 2-byte (bf16 / fp16) tensor set to one value, rounded once.
void fill_with(HostTensor& t, double value) {
  if (t.numel() == 0) return;
  t.set(0, value);
  auto* const bits = static_cast<std::uint16_t*>(t.data());
  std::fill_n(bits, t.numel(), bits[0]);
}

}  // namespace

std::string KvCacheProblem::str() const {
  std::string s =
      fmt::format("B={} Hq={} Hkv={} Sq={} lens=[{}]", batch, heads_q, heads_kv, seq_q, fmt::join(seq_lens, ","));
  if (capacity > 0) s += fmt::format(" capacity {}", capacity);
  return s + (page_size > 0 ? fmt::format(" pages of {}", page_size) : std::string(" contiguous"));
}

ForwardCheckResult check_forward_kv_cache(const Kernel& kernel, const KvCacheProblem& p, const Bindings& scalars,
                                          std::uint64_t seed) {
  if (static_cast<int>(p.seq_lens.size()) != p.batch)
    throw UserError(fmt::format("{}: seq_lens needs one entry per sequence", p.str()));
  const Variant& variant = kernel.variant();
  const KernelConfig& config = kernel.prepared().config;
  const int dim = config.head_dim;
  const DLDataType dtype = config.dtype == ElementType::BF16 ? dlpack_bfloat16() : dlpack_float16();
  const int longest = std::max(1, *std::max_element(p.seq_lens.begin(), p.seq_lens.end()));
  int capacity = std::max(p.capacity > 0 ? p.capacity : longest, longest);
  const int pages_per_seq = p.page_size > 0 ? (capacity + p.page_size - 1) / p.page_size : 0;
  if (p.page_size > 0) capacity = pages_per_seq * p.page_size;
  std::mt19937_64 rng(seed);

  // The logical cache [B, Hkv, capacity, D], NaN past each sequence's length (the reference
  // never reads there; the kernel must not either). Random values only for the keys in use: a
  // 32k-key cache a quarter full draws a quarter of the samples.
  MirroredTensor q(dtype, {p.batch, p.heads_q, p.seq_q, dim});
  MirroredTensor o(dtype, {p.batch, p.heads_q, p.seq_q, dim});
  MirroredTensor lse(dlpack_float32(), {p.batch, p.heads_q, p.seq_q});
  HostTensor k(dtype, {p.batch, p.heads_kv, capacity, dim}), v(dtype, {p.batch, p.heads_kv, capacity, dim});
  check_internal::fill_normal(q.host, rng);
  q.upload();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  fill_with(k, nan);
  fill_with(v, nan);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (HostTensor* t : {&k, &v})
    for (int b = 0; b < p.batch; ++b)
      for (int h = 0; h < p.heads_kv; ++h) {
        const std::int64_t row0 = (static_cast<std::int64_t>(b) * p.heads_kv + h) * capacity;
        const std::int64_t used = static_cast<std::int64_t>(std::max(p.seq_lens[static_cast<std::size_t>(b)], 0)) * dim;
        for (std::int64_t i = 0; i < used; ++i) t->set(row0 * dim + i, normal(rng));
      }

  // Captured tensors shaped for the capacity (what the kernel's bounds proof assumes).
  const ForwardProblem shape{p.batch, p.heads_q, p.heads_kv, p.seq_q, capacity};
  const check_internal::CapturedTensors captured =
      check_internal::make_captured_tensors(variant, shape, scalars, dim, rng);

  // The device cache: the logical one as given, or its pages scattered over a shuffled pool
  // with two spare pages of NaN, which the unused block-table entries point at.
  KvCache cache;
  std::vector<std::int64_t> cache_shape = {p.batch, p.heads_kv, capacity, dim};
  int num_pages = 0;
  std::vector<int> table;
  if (p.page_size > 0) {
    num_pages = p.batch * pages_per_seq + 2;
    cache_shape = {num_pages, p.page_size, p.heads_kv, dim};
    std::vector<int> order(static_cast<std::size_t>(num_pages));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    const int spare = order.back();
    table.assign(static_cast<std::size_t>(p.batch) * pages_per_seq, spare);
    for (int b = 0; b < p.batch; ++b) {
      const int used = (std::max(p.seq_lens[static_cast<std::size_t>(b)], 0) + p.page_size - 1) / p.page_size;
      for (int j = 0; j < used; ++j)
        table[static_cast<std::size_t>(b) * pages_per_seq + j] = order[static_cast<std::size_t>(b) * pages_per_seq + j];
    }
  }
  MirroredTensor kc(dtype, cache_shape), vc(dtype, cache_shape);
  if (p.page_size > 0) {
    fill_with(kc.host, nan);
    fill_with(vc.host, nan);
    // Each key in use, a row of D 2-byte elements, to its page (the rest stays NaN).
    const std::size_t row_bytes = static_cast<std::size_t>(dim) * 2;
    for (int b = 0; b < p.batch; ++b)
      for (int h = 0; h < p.heads_kv; ++h)
        for (int j = 0; j < std::max(p.seq_lens[static_cast<std::size_t>(b)], 0); ++j) {
          const int page = table[static_cast<std::size_t>(b) * pages_per_seq + j / p.page_size];
          const std::int64_t from = ((static_cast<std::int64_t>(b) * p.heads_kv + h) * capacity + j) * dim;
          const std::int64_t to =
              ((static_cast<std::int64_t>(page) * p.page_size + j % p.page_size) * p.heads_kv + h) * dim;
          std::memcpy(static_cast<std::uint16_t*>(kc.host.data()) + to,
                      static_cast<const std::uint16_t*>(k.data()) + from, row_bytes);
          std::memcpy(static_cast<std::uint16_t*>(vc.host.data()) + to,
                      static_cast<const std::uint16_t*>(v.data()) + from, row_bytes);
        }
  } else {
    std::copy_n(static_cast<const unsigned char*>(k.data()), kc.host_bytes(),
                static_cast<unsigned char*>(kc.host.data()));
    std::copy_n(static_cast<const unsigned char*>(v.data()), vc.host_bytes(),
                static_cast<unsigned char*>(vc.host.data()));
  }
  kc.upload();
  vc.upload();
  cache.k = kc.device_view;
  cache.v = vc.device_view;
  MirroredTensor lens(dlpack_int32(), {p.batch});
  for (int b = 0; b < p.batch; ++b) lens.host.set(b, p.seq_lens[static_cast<std::size_t>(b)]);
  lens.upload();
  cache.seq_lens = lens.device_view;
  std::unique_ptr<MirroredTensor> block_table;
  if (p.page_size > 0) {
    block_table = std::make_unique<MirroredTensor>(dlpack_int32(), std::vector<std::int64_t>{p.batch, pages_per_seq});
    for (std::size_t i = 0; i < table.size(); ++i) block_table->host.set(static_cast<std::int64_t>(i), table[i]);
    block_table->upload();
    cache.block_table = block_table->device_view;
  }

  o.poison();
  lse.poison();
  kernel.forward_kv_cache(q.device_view, cache, o.device_view, &lse.device_view, captured.device);
  kernel.synchronize();
  o.download();
  lse.download();

  const ReferenceOptions base = ReferenceOptions().with_seq_lens_k(p.seq_lens);
  const ReferenceResult ref = reference_attention(variant, q.host.dl(), k.dl(), v.dl(), captured.host, base);
  const ReferenceResult naive =
      reference_attention(variant, q.host.dl(), k.dl(), v.dl(), captured.host,
                          ReferenceOptions(base).with_naive_precision(
                              config.dtype == ElementType::BF16 ? NaivePrecision::BF16 : NaivePrecision::FP16));
  return compare_forward(o.host.dl(), lse.host.dl(), ref, naive);
}

}  // namespace attnjit
