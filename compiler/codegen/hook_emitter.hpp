// Hook emission: the variant's score_mod, mask_mod and tile class as CUDA device functions
// (aj_score_mod, aj_mask_mod, aj_tile_class) with the one index signature every kernel
// template calls. Shared by all templates, so a hook is generated in exactly one place.
#pragma once

#include <string>
#include <vector>

#include "dsl/variant.hpp"

namespace attnjit {

// Where each runtime parameter and tensor goes in AttnjitFwdArgs.
struct ArgumentSlots {
  std::vector<ParamDecl> int_params;    // args.int_params[i]
  std::vector<ParamDecl> float_params;  // args.float_params[i]
  std::vector<TensorDecl> tensors;      // args.tensors[i]
};

// Slot assignment (also used when binding arguments at launch). UserError when the variant
// has more parameters or tensors than the ABI holds.
ArgumentSlots assign_slots(const Variant& variant);

// What the emitted hooks tell a template about the variant.
struct HookFacts {
  bool has_score_mod = false;      // score_mod is not the identity
  bool has_mask = false;           // mask_mod is not the constant true
  bool mask_reads_tensor = false;  // tile classes must come from the GPU (block mask)
  bool mask_uses_batch = false;    // the mask depends on b (directly or through a tensor index)
  bool mask_uses_head = false;     // ... on h
};

struct EmittedHooks {
  std::string source;  // the three device functions
  HookFacts facts;
};

// aj_score_mod, aj_mask_mod and aj_tile_class for `variant`, reading parameters and tensors
// from `slots` of `const AttnjitFwdArgs& args`.
EmittedHooks emit_hooks(const Variant& variant, const ArgumentSlots& slots);

// `text` with every line prefixed (for comment blocks in generated code).
std::string comment_block(const std::string& text, const std::string& prefix);

}  // namespace attnjit
