// The block-mask template (see block_mask_template.hpp).
#include "templates/block_mask/block_mask_template.hpp"

#include <fmt/format.h>

#include "compiler/codegen.hpp"
#include "compiler/ir.hpp"
#include "runtime/driver/nvrtc_compiler.hpp"
#include "runtime/driver/templates.hpp"
#include "templates/abi.h"

namespace attnjit {

std::vector<std::string> BlockMaskTemplate::archs() const { return runtime::supported_architectures(); }

Support BlockMaskTemplate::can_implement(const TemplateRequest& request) const {
  const ArgumentSlots slots = assign_slots(*request.variant);
  if (!emit_hooks(*request.variant, slots).facts.mask_reads_tensor)
    return Support::no("the mask reads no tensor; interval analysis classifies its tiles");
  return Support::yes();
}

std::vector<KnobSpec> BlockMaskTemplate::knob_space(int) const {
  return {{"block_m", {64, 128}, "query rows per tile (the forward kernel's)"},
          {"block_n", {32, 64, 128}, "keys per tile (the forward kernel's)"}};
}

Knobs BlockMaskTemplate::default_knobs(const TemplateRequest& request) const {
  const Schedule s = Schedule::default_for(request.head_dim);
  return Knobs{{"block_m", s.block_m}, {"block_n", s.block_n}};
}

Support BlockMaskTemplate::check_knobs(const Knobs& knobs, int, int) const {
  const int bm = knobs.get("block_m"), bn = knobs.get("block_n");
  if (bm != 64 && bm != 128)
    return Support::invalid(fmt::format("block_mask block_m {} is not allowed; use 64 or 128", bm));
  if (bn != 32 && bn != 64 && bn != 128)
    return Support::invalid(fmt::format("block_mask block_n {} is not allowed; use 32, 64 or 128", bn));
  return Support::yes();
}

std::vector<HookPrototype> BlockMaskTemplate::hooks() const {
  auto all = attention_hook_prototypes();
  all.erase(all.begin());  // no score_mod: only the mask and the tile class
  return all;
}

std::string BlockMaskTemplate::fragment(const HookFacts& facts) {
  return macro_block("block mask (templates/block_mask)",
                     {{"AJ_BLOCK_MASK_PER_BATCH", facts.mask_uses_batch ? "1" : "0"},
                      {"AJ_BLOCK_MASK_PER_HEAD", facts.mask_uses_head ? "1" : "0"}}) +
         runtime::load_template("block_mask.cuh");
}

std::string BlockMaskTemplate::forward_section(const HookFacts& facts) {
  if (!facts.mask_reads_tensor) return {};
  return "\n// the mask reads a tensor: attnjit_block_mask writes the tile classes attnjit_fwd reads\n" +
         fragment(facts);
}

std::vector<std::pair<std::string, std::string>> BlockMaskTemplate::forward_fact_macros(ElementType dtype,
                                                                                        const HookFacts& facts) {
  return {{dtype == ElementType::BF16 ? "AJ_DTYPE_BF16" : "AJ_DTYPE_FP16", "1"},
          {"AJ_HAS_SCORE_MOD", facts.has_score_mod ? "1" : "0"},
          {"AJ_HAS_MASK", facts.has_mask ? "1" : "0"},
          {"AJ_HAS_BLOCK_MASK", facts.mask_reads_tensor ? "1" : "0"}};
}

GeneratedUnit BlockMaskTemplate::generate(const TemplateRequest& request) const {
  EmittedHooks emitted;
  GeneratedUnit unit = start_unit(name(), request, emitted);
  unit.kernel_names = {kKernelName};
  unit.body = unit_preamble();
  unit.body += macro_block("block_mask knobs", {{"AJ_BLOCK_M", std::to_string(request.knobs.get("block_m"))},
                                                {"AJ_BLOCK_N", std::to_string(request.knobs.get("block_n"))}});
  unit.body += hook_section(hooks(), emitted);
  unit.body += fragment(unit.facts);
  return unit;
}

// A ragged batch's tile classes are built over (sequence, the longest sequence's tiles): the
// hooks see each sequence's index and positions, and the elements past a sequence's end can
// only widen a class (empty and full hold for the real elements too); the forward kernels
// bound every tile by the sequence's own lengths whatever its class.
Support BlockMaskTemplate::ragged_support(const TemplateRequest&) { return Support::yes(); }

BlockMaskLayout BlockMaskTemplate::layout(const HookFacts& facts, int block_m, int block_n,
                                          const ProblemShape& problem) {
  BlockMaskLayout l;
  l.q_tiles = static_cast<unsigned>((problem.seq_q + block_m - 1) / block_m);
  l.kv_tiles = static_cast<unsigned>((problem.seq_k + block_n - 1) / block_n);
  const long long heads = facts.mask_uses_head ? problem.heads_q : 1;
  const long long batches = facts.mask_uses_batch ? problem.batch : 1;
  l.stride[2] = l.kv_tiles;
  l.stride[1] = facts.mask_uses_head ? static_cast<long long>(l.q_tiles) * l.kv_tiles : 0;
  l.stride[0] = facts.mask_uses_batch ? heads * l.q_tiles * l.kv_tiles : 0;
  l.planes = static_cast<unsigned>(batches * heads);
  l.bytes = static_cast<std::size_t>(batches * heads) * l.q_tiles * l.kv_tiles;
  return l;
}

// One CTA of 128 threads (AJ_BM_THREADS) per (kv tile, q tile, plane).
KernelLaunch BlockMaskTemplate::launch(const BlockMaskLayout& l) {
  KernelLaunch k;
  k.kernel = kKernelName;
  k.role = kRole;
  k.grid = {l.kv_tiles, l.q_tiles, l.planes};
  k.block = {128, 1, 1};
  return k;
}

void BlockMaskTemplate::bind(AttnjitFwdArgs& args, std::uint64_t workspace, const BlockMaskLayout& l) {
  args.tile_classes = reinterpret_cast<unsigned char*>(workspace);
  for (int i = 0; i < 3; ++i) args.tile_class_stride[i] = l.stride[i];
}

std::string BlockMaskTemplate::runs_section(const HookFacts& facts) {
  if (facts.runs_slot < 0) return {};
  return "\n// the mask reads runs: attnjit_tensor_runs computes them from the id tensor first\n" +
         macro_block("tensor runs", {{"AJ_RUNS_SOURCE", std::to_string(facts.runs_source)},
                                     {"AJ_RUNS_SLOT", std::to_string(facts.runs_slot)}}) +
         runtime::load_template("tensor_runs.cuh");
}

// Any grid serves (the kernel takes its items in a loop): two CTAs per SM.
void BlockMaskTemplate::add_runs(const HookFacts& facts, const ProblemShape& problem, LaunchPlan& plan) {
  if (facts.runs_slot < 0) return;
  KernelLaunch k;
  k.kernel = kRunsKernelName;
  k.role = kRunsRole;
  k.grid = {static_cast<unsigned>(2 * problem.multiprocessors_or_default()), 1, 1};
  k.block = {256, 1, 1};
  plan.kernels.insert(plan.kernels.begin(), k);
  plan.runs_slot = facts.runs_slot;
  plan.runs_source = facts.runs_source;
}

LaunchPlan BlockMaskTemplate::launch_plan(const GeneratedUnit& unit, const ProblemShape& problem) const {
  const BlockMaskLayout l = layout(unit.facts, unit.knobs.get("block_m"), unit.knobs.get("block_n"), problem);
  LaunchPlan plan;
  plan.kernels = {launch(l)};
  plan.workspace_bytes = l.bytes;
  plan.bind_workspace = [l](AttnjitFwdArgs& args, std::uint64_t workspace) { bind(args, workspace, l); };
  return plan;
}

std::unique_ptr<KernelTemplate> make_block_mask_template() { return std::make_unique<BlockMaskTemplate>(); }

}  // namespace attnjit
