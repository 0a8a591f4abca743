// Hook emission: the variant's score_mod, mask_mod and tile class as CUDA device functions
// (aj_score_mod, aj_mask_mod, aj_tile_class) with the one index signature every kernel
// template calls, and the row hooks (RoPE at load, the output gate at the epilogue). Shared
// by all templates, so a hook is generated in exactly one place.
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
  // Tensors the runtime derives from bound ones before the kernels run, in the slots after
  // `tensors`: the runs of a document mask's id tensor (add_run_slots).
  std::vector<TensorDecl> derived;  // args.tensors[tensors.size() + i]
};

// Slot assignment (also used when binding arguments at launch). UserError when the variant
// has more parameters or tensors than the ABI holds.
ArgumentSlots assign_slots(const Variant& variant);

// For templates that take document masks as per-row key intervals (compiler/passes/
// run_equality.hpp): adds the derived runs tensor to `slots` when the mask has a run equality
// and a slot is free; emit_hooks then emits a second split of the mask through the runs
// (AJ_MASK_RUNS, aj_mask_pair_runs) beside the usual one. Returns whether it did.
bool add_run_slots(const Variant& variant, ArgumentSlots& slots);

// What the emitted hooks tell a template about the variant.
struct HookFacts {
  bool has_score_mod = false;            // score_mod is not the identity
  bool has_mask = false;                 // mask_mod is not the constant true
  bool mask_reads_tensor = false;        // tile classes must come from the GPU (block mask)
  bool mask_uses_batch = false;          // the mask depends on b (directly or through a tensor index)
  bool mask_uses_head = false;           // ... on h
  bool has_rope = false;                 // AJ_HAS_ROPE: aj_rope_* are emitted
  bool has_output_gate = false;          // AJ_HAS_OUTPUT_GATE: aj_output_gate is emitted
  bool output_gate_per_element = false;  // a rank-4 gate (AJ_OUTPUT_GATE_PER_ELEMENT)
  bool score_split = false;              // AJ_SCORE_SPLIT: aj_score_col / aj_score_row are emitted
  // The mask split reads the runs of tensor slot runs_source from slot runs_slot (-1: none),
  // which the template's plan computes first (templates/tensor_runs.cuh).
  int runs_source = -1;
  int runs_slot = -1;
  bool document_rest = false;  // AJ_MASK_DOC: the mask inside a document is emitted (with the runs)
};

struct EmittedHooks {
  std::string source;  // the device functions and the row-hook macros
  HookFacts facts;
};

// aj_score_mod, aj_mask_mod and aj_tile_class for `variant`, reading parameters and tensors
// from `slots` of `const AttnjitFwdArgs& args`; `#define AJ_SCORE_SPLIT 0/1` and, when 1,
//          float aj_score_col(int b, int h, int kv, int aj_anchor, const AttnjitFwdArgs& args)
//          float aj_score_row(int b, int h, int q, int aj_anchor, const AttnjitFwdArgs& args)
// with score_mod = score + col + row for any anchor row (compiler/passes/score_split.hpp);
// then the row hooks, always with their macros (`#define AJ_HAS_ROPE 0/1`,
// `#define AJ_HAS_OUTPUT_GATE 0/1`) and, when on:
//   RoPE:  AJ_ROPE_DIM (a number, or AJ_HEAD_DIM for the whole head), AJ_ROPE_INTERLEAVED 0/1,
//          float aj_rope_inv_freq(int j)                             theta^(-2j / AJ_ROPE_DIM)
//          int aj_rope_q_position(int q, const AttnjitFwdArgs& args)   q + seq_k - seq_q + offset
//          int aj_rope_kv_position(int kv, const AttnjitFwdArgs& args) kv + offset
//   gate:  AJ_OUTPUT_GATE_PER_ELEMENT 0/1 (rank 3 / rank 4),
//          float aj_output_gate(int b, int h, int q, int d, const AttnjitFwdArgs& args)
//                                                                    sigmoid(gate[b, h, q(, d)])
EmittedHooks emit_hooks(const Variant& variant, const ArgumentSlots& slots);

// The backward's gradient hook, from compiler/passes/differentiate (with #define
// AJ_HAS_TENSOR_GRADS 0/1 before it):
//   float aj_score_mod_grad(float score, float ds, int b, int h, int q, int kv, const AttnjitBwdArgs& bargs)
// returns ds * d score_mod / d score, and adds ds * d score_mod / d T[i] to the gradient
// accumulator of T (templates/bwd_hooks.cuh) for every read T[i] of a captured float tensor.
struct EmittedGradHook {
  std::string source;
  std::vector<std::string> grad_tensors;  // the captured tensors that get a gradient, in order
};
EmittedGradHook emit_score_mod_grad_hook(const Variant& variant, const ArgumentSlots& slots);

// Whether a forward unit of this score_mod gets the additive split (HookFacts::score_split):
// score_mod = score + col(kv) + row(q), and no learned per-head factor.
bool score_mod_splits(const ir::NodeRef& score_mod);

// `text` with every line prefixed (for comment blocks in generated code).
std::string comment_block(const std::string& text, const std::string& prefix);

}  // namespace attnjit
