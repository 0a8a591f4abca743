// Downstream use of an installed attnjit: build the causal preset, print its text, and
// run the CPU reference on a tiny problem. Exits 0 only when every output is finite and
// the causal mask held (query 0 sees only key 0, so its output row is V's row 0).
#include <attnjit.hpp>
#include <runtime/api/dlpack_view.hpp>

#include <cmath>
#include <cstdio>

int main() {
  const attnjit::Variant causal = attnjit::presets::causal();
  std::printf("%s", causal.text().c_str());

  constexpr int kSeq = 5, kDim = 4;
  attnjit::HostTensor q(attnjit::dlpack_float32(), {1, 1, kSeq, kDim});
  attnjit::HostTensor k(attnjit::dlpack_float32(), {1, 1, kSeq, kDim});
  attnjit::HostTensor v(attnjit::dlpack_float32(), {1, 1, kSeq, kDim});
  for (std::int64_t i = 0; i < q.numel(); ++i) {
    q.set(i, std::sin(0.7 * static_cast<double>(i) + 0.1));
    k.set(i, std::cos(0.3 * static_cast<double>(i) - 0.2));
    v.set(i, 0.25 * static_cast<double>(i % 7) - 0.5);
  }
  const attnjit::ReferenceResult out = attnjit::reference_attention(causal, q.dl(), k.dl(), v.dl());

  bool ok = true;
  for (int row = 0; row < kSeq; ++row) {
    if (!std::isfinite(out.lse_at(0, 0, row))) ok = false;
    for (int d = 0; d < kDim; ++d)
      if (!std::isfinite(out.o_at(0, 0, row, d))) ok = false;
  }
  for (int d = 0; d < kDim; ++d)
    if (std::fabs(out.o_at(0, 0, 0, d) - v.get(d)) > 1e-12) ok = false;  // row 0 attends to key 0 only
  std::printf("reference: %s\n", ok ? "finite, mask held" : "FAILED");
  return ok ? 0 : 1;
}
