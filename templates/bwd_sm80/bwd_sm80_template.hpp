// The sm80 backward template (templates/bwd_sm80.cuh): FlashAttention-2's backward with
// cp.async, ldmatrix and mma.sync, for sm_80 and newer. Preprocess (D = rowsum(dO * O)), a
// main kernel per kv block (dK, dV in registers, dQ and captured-tensor gradients added into
// fp32 or fixed-point accumulators) and a postprocess.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "compiler/kernel_template.hpp"

namespace attnjit {

std::unique_ptr<KernelTemplate> make_bwd_sm80_template();

// Dynamic shared memory of the main kernel for these knobs (the formula of bwd_sm80.cuh).
int bwd_sm80_shared_bytes(int head_dim, int block_m, int warps, int stages, int row_pad);

// The descriptor; also the base of bwd_sm90 (templates/bwd_sm90), which runs the same kernels
// with the products by wgmma: it overrides the targets, the knobs, the shared-memory size and
// what is pasted before bwd_sm80.cuh.
class BwdSm80Template : public KernelTemplate {
 public:
  std::string name() const override { return "bwd_sm80"; }
  std::string description() const override;
  std::vector<std::string> archs() const override;
  TemplateRole role() const override { return TemplateRole::Backward; }
  Support can_implement(const TemplateRequest& r) const override;
  std::vector<KnobSpec> knob_space(int head_dim) const override;
  Knobs default_knobs(const TemplateRequest& request) const override;
  std::optional<Knobs> spill_fallback_knobs(const Knobs& spilling) const override;
  Support check_knobs(const Knobs& knobs, int head_dim, int max_shared_bytes) const override;
  std::vector<HookPrototype> hooks() const override;
  GeneratedUnit generate(const TemplateRequest& r) const override;
  LaunchPlan launch_plan(const GeneratedUnit& unit, const ProblemShape& p) const override;

 protected:
  // Dynamic shared memory of the main kernel for resolved knobs.
  virtual int shared_bytes(int head_dim, const Knobs& knobs) const;
  // Sources pasted before bwd_sm80.cuh (bwd_sm90: its primitives, wgmma wrappers and products).
  virtual std::string product_section(const TemplateRequest&) const { return ""; }
  // The shared-memory check of check_knobs, naming this template.
  Support check_shared_bytes(const Knobs& knobs, int head_dim, int max_shared_bytes) const;
};

}  // namespace attnjit
