// Example 03: a custom variant end to end on the GPU.
//
// Describe the variant in C++, compile it (codegen + NVRTC, cached on disk), bind its
// runtime parameter and captured tensor, run it, and compare against the CPU reference.
// Without a GPU it prints the generated kernel's resource report and exits 0.
#include <attnjit.hpp>

#include <cstdio>

int main() {
  using namespace attnjit;
  using namespace attnjit::dsl::vars;

  // Each head gets a learned additive bias (a bf16 tensor [heads]); keys further than a
  // runtime `window` are masked; the logit is soft-capped at 20.
  const Tensor head_bias("head_bias", ir::TensorDType::BF16, 1);
  const Expr window = param_int("window");
  Variant v("biased_window");
  v.with_score_mod(20.0 * tanh((score + head_bias[h]) / 20.0)).with_mask_mod(kv <= q && q - kv < window);

  try {
    // Compile without a GPU: an explicit arch needs none.
    const PreparedKernel prepared = prepare(v, CompileOptions().with_head_dim(64).with_arch("sm_80"));
    const auto usage = prepared.cached.metadata->resources.worst_case();
    std::printf("compiled %s for sm_80: %d registers, %d bytes spilled, key %s (%s)\n", v.name().c_str(),
                usage.registers, usage.spill_store_bytes, prepared.cache_key.c_str(),
                runtime::to_string(prepared.cached.source));

    // On a GPU: run it against the reference on odd lengths with GQA (8 query heads on 2).
    // check_forward compiles for this GPU, draws random inputs and the head_bias tensor,
    // poisons the outputs, launches and applies the 2x-naive-error rule.
    ForwardProblem problem{2, 8, 2, 333, 517};
    const ForwardCheckResult r =
        check_forward(v, CompileOptions().with_head_dim(64), problem, Bindings().set("window", 128), 1);
    std::printf("%s: %s\n", problem.str().c_str(), r.summary().c_str());
    return r.pass ? 0 : 1;
  } catch (const RuntimeFailure& e) {
    std::printf("no GPU run: %s\n", e.what());
    return 0;
  }
}
