// The preset library (see presets.hpp). Each preset is a few lines of DSL.
#include "dsl/presets.hpp"

#include <fmt/format.h>

namespace attnjit::presets {

using namespace attnjit::dsl::vars;

Variant dense() { return Variant("dense"); }

Variant causal(CausalAlignment alignment) {
  if (alignment == CausalAlignment::TopLeft) return Variant("causal").with_mask_mod(kv <= q);
  return Variant("causal_bottom_right").with_mask_mod(kv <= q + kv_len - q_len);
}

Variant sliding_window(const Expr& window) {
  return Variant("sliding_window").with_mask_mod(kv <= q && q - kv < window);
}

Variant prefix_lm(const Expr& prefix_len) { return Variant("prefix_lm").with_mask_mod(kv < prefix_len || kv <= q); }

Variant document(const Tensor& doc_ids) {
  return Variant("document").with_mask_mod(doc_ids(b, q + kv_len - q_len) == doc_ids(b, kv));
}

Variant alibi() {
  const Expr slope = exp2(-8.0 * to_float(h + 1) / to_float(num_heads));
  return Variant("alibi").with_score_mod(score + slope * to_float(kv - q));
}

Variant alibi(const Tensor& slopes) {
  return Variant("alibi_tensor").with_score_mod(score + slopes[h] * to_float(kv - q));
}

Variant relative_bias(const Tensor& bias) {
  return Variant("relative_bias").with_score_mod(score + bias(h, kv - q + q_len - 1));
}

Variant softcap(const Expr& cap) { return Variant("softcap").with_score_mod(cap * tanh(score / cap)); }

Variant forget_gate(const Tensor& cumulative_log_gates) {
  const Tensor& c = cumulative_log_gates;
  return Variant("forget_gate").with_score_mod(score + c(b, h, q + kv_len - q_len) - c(b, h, kv));
}

Variant strided(const Expr& stride, const Expr& local) {
  return Variant("strided").with_mask_mod(kv <= q && (q - kv < local || (kv + h) % stride == 0));
}

Variant shifted_sparse(const Expr& group) {
  const Expr shift = where(h < num_heads / 2, Expr(0), group / 2);
  return Variant("shifted_sparse").with_mask_mod((q + shift) / group == (kv + shift) / group);
}

Variant rope(const RopeHook& hook) { return Variant("rope").with_rope(hook); }

Variant output_gate(const OutputGateHook& hook) { return Variant("output_gate").with_output_gate(hook); }

const std::vector<PresetInfo>& registry() {
  static const std::vector<PresetInfo> presets = {
      {"dense", "plain softmax attention", [] { return dense(); }},
      {"causal", "causal mask, top-left aligned (kv <= q)", [] { return causal(); }},
      {"causal_bottom_right", "causal mask, bottom-right aligned (kv <= q + kv_len - q_len)",
       [] { return causal(CausalAlignment::BottomRight); }},
      {"sliding_window", "causal sliding window of runtime width `window`", [] { return sliding_window(); }},
      {"prefix_lm", "bidirectional prefix of runtime length `prefix_len`, causal after", [] { return prefix_lm(); }},
      {"document", "packed sequences: document ids from tensor `doc` [b, kv_len]", [] { return document(); }},
      {"document_causal", "document mask and causal (bottom-right aligned, like the document ids)",
       [] { return document().then(causal(CausalAlignment::BottomRight)).with_name("document_causal"); }},
      {"alibi", "ALiBi bias with standard slopes", [] { return alibi(); }},
      {"alibi_tensor", "ALiBi bias with slopes from tensor `slopes` [h]",
       [] { return alibi(Tensor("slopes", ir::TensorDType::F32, 1)); }},
      {"alibi_causal", "ALiBi and causal", [] { return alibi().then(causal()).with_name("alibi_causal"); }},
      {"relative_bias", "relative-position bias from tensor `rel_bias` [h, q_len + kv_len - 1]",
       [] { return relative_bias(); }},
      {"softcap", "tanh soft-cap of runtime value `softcap`", [] { return softcap(); }},
      {"softcap_causal", "tanh soft-cap and causal",
       [] { return softcap().then(causal()).with_name("softcap_causal"); }},
      {"forget_gate", "forget-gate decay from cumulative log gates `log_fgate` [b, h, kv_len], causal (bottom-right)",
       [] { return forget_gate().then(causal(CausalAlignment::BottomRight)).with_name("forget_gate"); }},
      {"strided", "S2-Attention per-head strided sparsity (runtime `stride`, `local`), causal",
       [] { return strided(); }},
      {"shifted_sparse", "LongLoRA shifted sparse attention in groups of runtime size `group`",
       [] { return shifted_sparse(); }},
      {"alibi_window_softcap", "ALiBi, sliding window and soft-cap composed",
       [] { return alibi().then(sliding_window()).then(softcap()).with_name("alibi_window_softcap"); }},
      {"rope_causal", "RoPE (theta 10000, whole head) on Q and K with a causal mask",
       [] { return rope().then(causal()).with_name("rope_causal"); }},
      {"gated_causal", "causal with an output gate O *= sigmoid(gate[b, h, q])",
       [] { return output_gate().then(causal()).with_name("gated_causal"); }},
  };
  return presets;
}

Variant by_name(std::string_view name) {
  std::string names;
  for (const auto& p : registry()) {
    if (p.name == name) return p.make();
    names += (names.empty() ? "" : ", ") + p.name;
  }
  throw UserError(
      fmt::format("unknown preset '{}'; available presets: {}. `attnjit variant list` describes them", name, names));
}

}  // namespace attnjit::presets
