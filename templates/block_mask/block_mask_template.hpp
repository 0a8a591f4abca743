// The block-mask template: tile classes of a mask that reads tensors (documents, learned
// block masks), built on the GPU by templates/block_mask.cuh. Interval analysis cannot see
// through a tensor read, so without it such a mask is "partial" on every tile.
//
// It serves other templates: a forward template whose mask reads a tensor pastes
// `fragment()` into its unit, puts `launch()` first in its plan and lets `bind()` point the
// argument block at the workspace. It can also build a unit of its own (the block mask
// alone, for `Kernel::build_block_mask`-style reuse across calls).
#pragma once

#include <cstdint>
#include <memory>

#include "compiler/kernel_template.hpp"

namespace attnjit {

// The tile-class buffer: [B', H', q_tiles, kv_tiles] bytes, B' = batch when the mask
// mentions b else 1, H' = heads_q when it mentions h else 1.
struct BlockMaskLayout {
  unsigned q_tiles = 0, kv_tiles = 0, planes = 0;  // planes = B' * H'
  long long stride[3] = {0, 0, 0};                 // bytes; 0 for a dimension of extent 1
  std::size_t bytes = 0;
};

class BlockMaskTemplate : public KernelTemplate {
 public:
  static constexpr const char* kKernelName = "attnjit_block_mask";
  static constexpr const char* kRole = "block_mask";
  // The runs of a document mask's ids (templates/tensor_runs.cuh), before the block mask.
  static constexpr const char* kRunsKernelName = "attnjit_tensor_runs";
  static constexpr const char* kRunsRole = "tensor_runs";

  std::string name() const override { return "block_mask"; }
  std::string description() const override {
    return "tile classes of a mask that reads tensors, built on the GPU (used by the forward templates)";
  }
  std::vector<std::string> archs() const override;
  TemplateRole role() const override { return TemplateRole::Helper; }
  Support can_implement(const TemplateRequest& request) const override;
  std::vector<KnobSpec> knob_space(int head_dim) const override;
  Knobs default_knobs(const TemplateRequest& request) const override;
  Support check_knobs(const Knobs& knobs, int head_dim, int max_shared_bytes) const override;
  std::vector<HookPrototype> hooks() const override;
  GeneratedUnit generate(const TemplateRequest& request) const override;
  LaunchPlan launch_plan(const GeneratedUnit& unit, const ProblemShape& problem) const override;

  // For composing into another template's unit with the same tile sizes (AJ_BLOCK_M/N).
  static std::string fragment(const HookFacts& facts);
  // What a forward template appends to its unit: the fragment under a comment when the mask
  // reads a tensor, else nothing.
  static std::string forward_section(const HookFacts& facts);
  // The macros a forward unit defines from the dtype and the variant's facts: AJ_DTYPE_*,
  // AJ_HAS_SCORE_MOD, AJ_HAS_MASK, AJ_HAS_BLOCK_MASK.
  static std::vector<std::pair<std::string, std::string>> forward_fact_macros(ElementType dtype,
                                                                              const HookFacts& facts);
  // A forward template's answer for a ragged batch of this variant: not served when its mask
  // reads a tensor (the tile classes are built for one padded shape), else yes.
  static Support ragged_support(const TemplateRequest& request);
  static BlockMaskLayout layout(const HookFacts& facts, int block_m, int block_n, const ProblemShape& problem);
  static KernelLaunch launch(const BlockMaskLayout& layout);
  static void bind(AttnjitFwdArgs& args, std::uint64_t workspace, const BlockMaskLayout& layout);
  // A unit whose mask split reads runs (HookFacts::runs_slot >= 0, compiler/passes/
  // run_equality.hpp): the pre-pass's source under a comment, its launch (first in the plan),
  // and the plan's runs slots; nothing otherwise.
  static std::string runs_section(const HookFacts& facts);
  static void add_runs(const HookFacts& facts, const ProblemShape& problem, LaunchPlan& plan);
};

std::unique_ptr<KernelTemplate> make_block_mask_template();

}  // namespace attnjit
