// The CPU reference with per-sequence key counts (ReferenceOptions::seq_lens_k, the judge of
// KV-cache calls): sequence b must come out as a problem of its own over its first
// seq_lens_k[b] keys, its hooks seeing kv_len = that count; a sequence with none gives O = 0
// and LSE = -inf, and keys past a length (NaN here) are never read. RoPE puts the queries at
// the ends of their own sequences.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "compiler/error.hpp"
#include "dsl/presets.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/reference/reference.hpp"

namespace attnjit {
namespace {

// Sequence b of a [B, H, S, D] tensor, its first `len` rows, as [1, H, len, D].
HostTensor slice(const HostTensor& t, int b, int len) {
  const auto& s = t.dl().shape;
  HostTensor out(dlpack_float32(), {1, s[1], len, s[3]});
  for (std::int64_t h = 0; h < s[1]; ++h)
    for (std::int64_t j = 0; j < len; ++j)
      for (std::int64_t d = 0; d < s[3]; ++d)
        out.set((h * len + j) * s[3] + d, t.get(((b * s[1] + h) * s[2] + j) * s[3] + d));
  return out;
}

TEST(ReferenceSeqLens, EachSequenceIsItsOwnProblem) {
  const int batch = 3, heads_q = 4, heads_kv = 2, seq_q = 3, capacity = 40, dim = 8;
  const std::vector<int> lens = {0, 17, 40};
  std::mt19937 rng(5);
  std::normal_distribution<double> normal;
  HostTensor q(dlpack_float32(), {batch, heads_q, seq_q, dim});
  HostTensor k(dlpack_float32(), {batch, heads_kv, capacity, dim}),
      v(dlpack_float32(), {batch, heads_kv, capacity, dim});
  for (std::int64_t i = 0; i < q.numel(); ++i) q.set(i, normal(rng));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (int b = 0; b < batch; ++b)
    for (std::int64_t i = 0; i < heads_kv * capacity * dim; ++i) {
      const bool used = (i / dim) % capacity < lens[static_cast<std::size_t>(b)];
      k.set(b * heads_kv * capacity * dim + i, used ? normal(rng) : nan);
      v.set(b * heads_kv * capacity * dim + i, used ? normal(rng) : nan);
    }
  for (const char* preset : {"causal_bottom_right", "sliding_window", "softcap", "dense", "rope_causal"}) {
    SCOPED_TRACE(preset);
    const Variant variant = presets::by_name(preset);
    Bindings bindings;
    if (std::string(preset) == "sliding_window") bindings.set("window", 5);
    if (std::string(preset) == "softcap") bindings.set("softcap", 2.0);
    const ReferenceResult all =
        reference_attention(variant, q.dl(), k.dl(), v.dl(), bindings, ReferenceOptions().with_seq_lens_k(lens));
    for (int b = 0; b < batch; ++b) {
      const int len = lens[static_cast<std::size_t>(b)];
      for (int h = 0; h < heads_q; ++h)
        for (int i = 0; i < seq_q; ++i) {
          if (len == 0) {
            EXPECT_EQ(all.lse_at(b, h, i), -std::numeric_limits<double>::infinity());
            for (int d = 0; d < dim; ++d) EXPECT_EQ(all.o_at(b, h, i, d), 0.0);
          }
          for (int d = 0; d < dim; ++d) EXPECT_FALSE(std::isnan(all.o_at(b, h, i, d))) << b << " " << h << " " << i;
        }
      if (len == 0) continue;
      const HostTensor qb = slice(q, b, seq_q), kb = slice(k, b, len), vb = slice(v, b, len);
      const ReferenceResult one = reference_attention(variant, qb.dl(), kb.dl(), vb.dl(), bindings);
      for (int h = 0; h < heads_q; ++h)
        for (int i = 0; i < seq_q; ++i) {
          EXPECT_DOUBLE_EQ(all.lse_at(b, h, i), one.lse_at(0, h, i)) << b << " " << h << " " << i;
          for (int d = 0; d < dim; ++d) EXPECT_DOUBLE_EQ(all.o_at(b, h, i, d), one.o_at(0, h, i, d));
        }
    }
  }
  EXPECT_THROW(
      reference_attention(presets::causal(), q.dl(), k.dl(), v.dl(), {}, ReferenceOptions().with_seq_lens_k({1, 2})),
      UserError);
}

}  // namespace
}  // namespace attnjit
