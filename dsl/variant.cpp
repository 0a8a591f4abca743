// Variant construction, composition, declarations and canonical text (see variant.hpp).
#include "dsl/variant.hpp"

#include <fmt/format.h>

#include <map>

#include "compiler/printer.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace attnjit {
namespace {

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

// Sets `field`, keeping the old value if the variant's declarations then conflict.
template <class T>
void Variant::assign_validated(T& field, T value) {
  T previous = std::move(field);
  field = std::move(value);
  try {
    validate();
  } catch (...) {
    field = std::move(previous);
    throw;
  }
}

namespace {

std::string_view layout_name(RopeHook::Layout l) { return l == RopeHook::Layout::Half ? "half" : "interleaved"; }

}  // namespace

Variant::Variant() : Variant("dense") {}

Variant::Variant(std::string name) : name_(std::move(name)), score_mod_(dsl::score_value()), mask_mod_(Expr(true)) {}

Variant& Variant::with_name(std::string name) {
  for (char c : name)
    if (c == '\n' || c == '\r' || c == '\0')
      throw UserError("variant name contains a line break or NUL; use a single-line name");
  name_ = std::move(name);
  return *this;
}

Variant& Variant::with_score_mod(const Expr& score_mod) {
  if (score_mod.type() != ir::Type::Float)
    throw UserError(
        fmt::format("score_mod must be a float expression, got {} `{}`. A boolean condition belongs in "
                    "mask_mod; a number in score_mod can be made float with to_float(...)",
                    ir::type_name(score_mod.type()), score_mod.str()));
  assign_validated(score_mod_, Expr(score_mod));
  return *this;
}

Variant& Variant::with_mask_mod(const Expr& mask_mod) {
  if (mask_mod.type() != ir::Type::Bool)
    throw UserError(
        fmt::format("mask_mod must be a bool expression, got {} `{}`. Compare it to get a condition, "
                    "e.g. `{} > 0`",
                    ir::type_name(mask_mod.type()), mask_mod.str(), mask_mod.str()));
  assign_validated(mask_mod_, Expr(mask_mod));
  return *this;
}

Variant& Variant::with_rope(const RopeHook& rope) {
  if (!(rope.theta > 0.0))
    throw UserError(fmt::format("rope theta is {}; it must be positive (10000 is the common choice)", rope.theta));
  if (rope.rotary_dim < 0 || rope.rotary_dim % 2 != 0)
    throw UserError(
        fmt::format("rope rotary_dim is {}; it must be 0 (whole head) or a positive even number", rope.rotary_dim));
  if (!rope.offset_param.empty() && !is_valid_user_name(rope.offset_param))
    throw UserError(
        fmt::format("rope offset parameter name '{}' is not allowed: use an identifier ([A-Za-z_][A-Za-z0-9_]*) "
                    "that is not a built-in or reserved name, e.g. \"pos\"; or leave it empty for no offset",
                    rope.offset_param));
  assign_validated(rope_, std::optional<RopeHook>(rope));
  return *this;
}

Variant& Variant::with_output_gate(const OutputGateHook& gate) {
  if (gate.rank != 3 && gate.rank != 4)
    throw UserError(fmt::format("output gate tensor '{}' has rank {}; allowed: 3 ([b, h, q]) or 4 ([b, h, q, d])",
                                gate.tensor, gate.rank));
  if (ir::value_type_of(gate.dtype) != ir::Type::Float)
    throw UserError(fmt::format("output gate tensor '{}' has dtype {}; allowed: f32, f16, bf16", gate.tensor,
                                ir::dtype_name(gate.dtype)));
  Tensor check(gate.tensor, gate.dtype, gate.rank);  // validates the name
  assign_validated(output_gate_, std::optional<OutputGateHook>(gate));
  return *this;
}

Variant Variant::then(const Variant& next) const {
  Variant out(name_ + "+" + next.name_);
  out.score_mod_ = Expr(ir::substitute(next.score_mod_.node(), dsl::score_value().node(), score_mod_.node()));
  const bool this_masks = has_mask(), next_masks = next.has_mask();
  out.mask_mod_ = this_masks && next_masks ? (mask_mod_ && next.mask_mod_) : (this_masks ? mask_mod_ : next.mask_mod_);
  out.rope_ = rope_;
  if (next.rope_) {
    if (rope_ && !(*rope_ == *next.rope_))
      throw UserError(fmt::format("cannot compose '{}' with '{}': both declare RoPE with different settings; keep one",
                                  name_, next.name_));
    out.rope_ = next.rope_;
  }
  out.output_gate_ = output_gate_;
  if (next.output_gate_) {
    if (output_gate_ && !(*output_gate_ == *next.output_gate_))
      throw UserError(
          fmt::format("cannot compose '{}' with '{}': both declare an output gate with different tensors; keep one",
                      name_, next.name_));
    out.output_gate_ = next.output_gate_;
  }
  out.validate();
  return out;
}

bool Variant::has_mask() const {
  const auto& m = mask_mod_.node();
  return !(m->op == ir::Op::ConstBool && m->int_value == 1);
}

std::vector<ParamDecl> Variant::params() const {
  std::map<std::string, ParamDecl> found;
  for (const auto& n : ir::topological_order({score_mod_.node(), mask_mod_.node()})) {
    if (n->op != ir::Op::Param) continue;
    auto [it, inserted] = found.emplace(n->name, ParamDecl{n->name, n->type});
    if (!inserted && it->second.type != n->type)
      throw UserError(fmt::format("parameter '{}' is used both as {} and as {}; give each its own name", n->name,
                                  ir::type_name(it->second.type), ir::type_name(n->type)));
  }
  if (rope_ && !rope_->offset_param.empty()) {
    auto [it, inserted] = found.emplace(rope_->offset_param, ParamDecl{rope_->offset_param, ir::Type::Int});
    if (!inserted && it->second.type != ir::Type::Int)
      throw UserError(
          fmt::format("parameter '{}' is used both as the rope offset (int) and as {}; give the offset its own name",
                      rope_->offset_param, ir::type_name(it->second.type)));
  }
  std::vector<ParamDecl> out;
  for (auto& [name, decl] : found) out.push_back(decl);
  return out;
}

std::vector<TensorDecl> Variant::tensors() const {
  std::map<std::string, TensorDecl> found;
  auto add = [&](const TensorDecl& d) {
    auto [it, inserted] = found.emplace(d.name, d);
    if (!inserted && !(it->second == d))
      throw UserError(
          fmt::format("tensor '{}' is declared both as {} rank {} and as {} rank {}; give each its own name", d.name,
                      ir::dtype_name(it->second.dtype), it->second.rank, ir::dtype_name(d.dtype), d.rank));
  };
  for (const auto& n : ir::topological_order({score_mod_.node(), mask_mod_.node()}))
    if (n->op == ir::Op::TensorRead) add(TensorDecl{n->name, n->tensor_dtype, static_cast<int>(n->int_value)});
  if (output_gate_) add(TensorDecl{output_gate_->tensor, output_gate_->dtype, output_gate_->rank});
  std::vector<TensorDecl> out;
  for (auto& [name, decl] : found) out.push_back(decl);
  return out;
}

void Variant::validate() const {
  const auto ps = params();
  const auto ts = tensors();
  for (const auto& p : ps)
    for (const auto& t : ts)
      if (p.name == t.name)
        throw UserError(fmt::format("the name '{}' is used for both a parameter and a tensor; rename one", p.name));
}

std::string Variant::text() const {
  std::string out = fmt::format("variant {};\n", quote(name_));
  for (const auto& p : params()) out += fmt::format("param {}: {};\n", p.name, ir::type_name(p.type));
  for (const auto& t : tensors())
    out += fmt::format("tensor {}: {}, rank={};\n", t.name, ir::dtype_name(t.dtype), t.rank);
  out += fmt::format("score: {};\n", score_mod_.str());
  out += fmt::format("mask: {};\n", mask_mod_.str());
  if (rope_)
    out +=
        fmt::format("rope: theta={}, dim={}, layout={}{};\n", ir::format_float_literal(rope_->theta), rope_->rotary_dim,
                    layout_name(rope_->layout), rope_->offset_param.empty() ? "" : ", offset=" + rope_->offset_param);
  if (output_gate_) out += fmt::format("gate: {};\n", output_gate_->tensor);
  return out;
}

ir::Hash128 Variant::hash() const {
  std::string text_without_name = text();
  text_without_name.erase(0, text_without_name.find('\n') + 1);
  const XXH128_hash_t h = XXH3_128bits(text_without_name.data(), text_without_name.size());
  return ir::Hash128{h.low64, h.high64};
}

}  // namespace attnjit
