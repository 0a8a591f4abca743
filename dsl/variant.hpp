// An attention variant: what to compute, kept apart from how (the schedule).
//
// A Variant holds a name, a score_mod (a float expression of `score` and the indices),
// a mask_mod (a bool expression: false excludes the (q, kv) pair), and the declared
// vector-level hooks (RoPE on Q/K rows, an output gate). Variants compose with `then`:
// masks are and-ed and the second score_mod is applied to the first's result, so
// `alibi().then(softcap(cap))` caps the biased score.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dsl/expr.hpp"

namespace attnjit {

// Rotary position embedding applied to Q and K rows as they are loaded. Query row q sits
// at position q + kv_len - q_len + offset (bottom-right aligned), key row kv at kv + offset;
// pair j of a row at position p is rotated by p * theta^(-2j / rotary_dim).
struct RopeHook {
  enum class Layout { Half, Interleaved };  // rotate (x[i], x[i + d/2]) or (x[2i], x[2i + 1])
  double theta = 10000.0;
  int rotary_dim = 0;  // 0: the whole head dimension; else an even number <= head dim
  Layout layout = Layout::Half;
  // Name of a runtime int parameter added to every position (a decode step's cache length);
  // empty: no offset. It is one of Variant::params(), bound like any other parameter, so a
  // new offset never recompiles.
  std::string offset_param;
  friend bool operator==(const RopeHook&, const RopeHook&) = default;
};

// O *= sigmoid(g) at the epilogue. Rank 3: one gate per (b, h, q); rank 4: per (b, h, q, d).
struct OutputGateHook {
  std::string tensor;
  ir::TensorDType dtype = ir::TensorDType::BF16;
  int rank = 3;
  friend bool operator==(const OutputGateHook&, const OutputGateHook&) = default;
};

struct ParamDecl {
  std::string name;
  ir::Type type;
  friend bool operator==(const ParamDecl&, const ParamDecl&) = default;
};

struct TensorDecl {
  std::string name;
  ir::TensorDType dtype;
  int rank;
  friend bool operator==(const TensorDecl&, const TensorDecl&) = default;
};

class Variant {
 public:
  Variant();  // dense softmax attention: score_mod = score, mask_mod = true
  explicit Variant(std::string name);

  Variant& with_name(std::string name);
  Variant& with_score_mod(const Expr& score_mod);  // must be float
  Variant& with_mask_mod(const Expr& mask_mod);    // must be bool
  Variant& with_rope(const RopeHook& rope);
  Variant& with_output_gate(const OutputGateHook& gate);

  // Composition: masks and-ed, `next`'s score_mod applied to this one's result, hooks
  // merged (declaring the same hook twice with different settings is an error).
  Variant then(const Variant& next) const;

  const std::string& name() const { return name_; }
  const Expr& score_mod() const { return score_mod_; }
  const Expr& mask_mod() const { return mask_mod_; }
  const std::optional<RopeHook>& rope() const { return rope_; }
  const std::optional<OutputGateHook>& output_gate() const { return output_gate_; }

  // Parameters and tensors the variant reads, sorted by name (the RoPE offset parameter and
  // the gate tensor included). Throws UserError when one name is used with two different
  // declarations.
  std::vector<ParamDecl> params() const;
  std::vector<TensorDecl> tensors() const;
  bool has_mask() const;  // mask_mod is not the constant true

  // Canonical text form (docs/variant-language.md); parse(text()) reproduces the variant.
  std::string text() const;
  // Stable structural hash of everything but the name: equal hashes, equal kernels.
  ir::Hash128 hash() const;

  // Parses the text form; errors are UserErrors pointing at line and column with a caret.
  static Variant parse(std::string_view text);

  // Throws UserError if the declarations conflict; called by every mutator.
  void validate() const;

 private:
  template <class T>
  void assign_validated(T& field, T value);

  std::string name_;
  Expr score_mod_;
  Expr mask_mod_;
  std::optional<RopeHook> rope_;
  std::optional<OutputGateHook> output_gate_;
};

}  // namespace attnjit
