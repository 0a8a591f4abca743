// Example 02: write a custom variant with the DSL and run the CPU reference on it.
//
// The variant below biases each head toward a learned per-head distance scale read from a
// captured tensor, masks keys farther than a runtime window, and keeps the diagonal.
#include <attnjit.hpp>

#include <cmath>
#include <cstdio>
#include <random>

int main() {
  using namespace attnjit;
  using namespace attnjit::dsl::vars;  // b, h, q, kv, q_len, kv_len, num_heads, score

  const Tensor distance_scale("distance_scale", ir::TensorDType::F32, 1);  // [heads]
  const Expr window = param_int("window");

  Variant v("learned_distance");
  v.with_score_mod(score - distance_scale[h] * log(to_float(abs(q - kv) + 1)))
      .with_mask_mod(abs(q - kv) < window || q == kv);
  std::printf("%s\n", v.text().c_str());

  // A small problem: B=1, 2 query heads over 1 kv head (MQA), 5 queries, 6 keys, D=8.
  std::mt19937 rng(7);
  std::normal_distribution<double> normal;
  auto make = [&](std::vector<std::int64_t> shape) {
    HostTensor t(dlpack_float32(), std::move(shape));
    for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, normal(rng));
    return t;
  };
  HostTensor qt = make({1, 2, 5, 8}), kt = make({1, 1, 6, 8}), vt = make({1, 1, 6, 8});
  HostTensor scales(dlpack_float32(), {2});
  scales.set(0, 0.5);
  scales.set(1, 2.0);

  Bindings bindings;
  bindings.set("window", 2).set("distance_scale", scales.dl());
  const ReferenceResult r = reference_attention(v, qt.dl(), kt.dl(), vt.dl(), bindings);
  for (int i = 0; i < 5; ++i) std::printf("head 1, query %d: LSE %.5f\n", i, r.lse_at(0, 1, i));
  return std::isfinite(r.lse_at(0, 1, 4)) ? 0 : 1;
}
