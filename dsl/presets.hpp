// The preset library: ordinary functions returning variants, which compose with
// Variant::then (e.g. alibi().then(sliding_window()).then(softcap())).
//
// Position conventions: q and kv are 0-based positions in their own sequences. Masks use
// top-left alignment (query i sees key i) unless a preset says otherwise; causal() can
// align bottom-right, where query i sits at absolute position i + kv_len - q_len (the
// KV-cache convention). Tensor-reading presets that need a query's absolute position use
// bottom-right alignment, which equals top-left when q_len == kv_len.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "dsl/variant.hpp"

namespace attnjit::presets {

enum class CausalAlignment { TopLeft, BottomRight };

Variant dense();
// kv <= q (top-left) or kv <= q + kv_len - q_len (bottom-right).
Variant causal(CausalAlignment alignment = CausalAlignment::TopLeft);
// Causal, and each query sees at most `window` keys: q - window < kv <= q.
Variant sliding_window(const Expr& window = param_int("window"));
// Bidirectional over the first `prefix_len` keys, causal after: kv < prefix_len || kv <= q.
Variant prefix_lm(const Expr& prefix_len = param_int("prefix_len"));
// Packed sequences: a query sees keys of its own document. `doc_ids` is [batch, kv_len] (i32).
Variant document(const Tensor& doc_ids = Tensor("doc", ir::TensorDType::I32, 2));
// ALiBi with the standard slopes 2^(-8 (h + 1) / num_heads) (exact for a power-of-two head
// count; pass a slope tensor otherwise): score + slope_h * (kv - q).
Variant alibi();
// ALiBi with slopes from a tensor [heads] (f32).
Variant alibi(const Tensor& slopes);
// score + bias[h, kv - q + q_len - 1], bias is [heads, q_len + kv_len - 1].
Variant relative_bias(const Tensor& bias = Tensor("rel_bias", ir::TensorDType::F32, 2));
// cap * tanh(score / cap).
Variant softcap(const Expr& cap = param_float("softcap"));
// Forgetting-Transformer decay: score + c[b, h, q + kv_len - q_len] - c[b, h, kv] with c the
// cumulative log forget gates [batch, heads, kv_len] (f32). Combine with bottom-right causal().
Variant forget_gate(const Tensor& cumulative_log_gates = Tensor("log_fgate", ir::TensorDType::F32, 3));
// S2-Attention-style per-head strided sparsity: causal, and a key is seen when it is within
// `local` of the query (q - kv < local) or when (kv + h) % stride == 0 (each head samples its
// own stride phase).
Variant strided(const Expr& stride = param_int("stride"), const Expr& local = param_int("local"));
// LongLoRA shifted sparse attention: tokens grouped in blocks of `group`; the first half of
// the heads attends within groups, the second half within groups shifted by group / 2.
Variant shifted_sparse(const Expr& group = param_int("group"));
// Vector-level hooks as variants, for composition.
Variant rope(const RopeHook& hook = RopeHook{});
Variant output_gate(const OutputGateHook& hook = OutputGateHook{"gate", ir::TensorDType::BF16, 3});

struct PresetInfo {
  std::string name;
  std::string description;
  std::function<Variant()> make;
};

// Every named preset, including common compositions, in listing order.
const std::vector<PresetInfo>& registry();
// The preset called `name`; a UserError listing the names when there is none.
Variant by_name(std::string_view name);

}  // namespace attnjit::presets
