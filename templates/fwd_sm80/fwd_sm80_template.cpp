// The sm80 forward template's descriptor (see fwd_sm80_template.hpp). Its knobs are the
// fields of Schedule (block_m, block_n, warps, stages), whose validate() holds the rules.
#include "templates/fwd_sm80/fwd_sm80_template.hpp"

#include <fmt/format.h>

#include <optional>
#include <string>

#include "compiler/codegen.hpp"
#include "compiler/error.hpp"
#include "runtime/driver/nvrtc_compiler.hpp"
#include "runtime/driver/templates.hpp"
#include "templates/abi.h"
#include "templates/block_mask/block_mask_template.hpp"
#include "templates/rope_prepass/rope_prepass_plan.hpp"

namespace attnjit {
namespace {

class FwdSm80Template : public KernelTemplate {
 public:
  static constexpr const char* kKernelName = "attnjit_fwd";

  std::string name() const override { return kFallbackForwardTemplate; }
  std::string description() const override {
    return "forward, FlashAttention-2 structure (cp.async, ldmatrix, mma.sync); sm_80 and newer";
  }
  // Every target attnjit compiles for: mma.sync runs on sm_80 and everything newer.
  std::vector<std::string> archs() const override { return runtime::supported_architectures(); }

  Support can_implement(const TemplateRequest& r) const override {
    if (!is_supported_head_dim(r.head_dim))
      return Support::no(fmt::format("head_dim {} is not one of 32, 64, 96, 128, 256", r.head_dim));
    if (Support fits = rope_fits_head(r); !fits.supported()) return fits;
    if (r.ragged) return BlockMaskTemplate::ragged_support(r);
    return Support::yes();
  }

  std::vector<KnobSpec> knob_space(int) const override {
    return {{"block_m", {64, 128}, "query rows per CTA"},
            {"block_n", {32, 64, 128}, "keys per kv tile"},
            {"warps", {4, 8}, "warps per CTA; each owns block_m / warps (16 or 32) rows"},
            {"stages", {1, 2}, "kv buffers in shared memory (2: the next tile loads during this one)"}};
  }

  Knobs default_knobs(const TemplateRequest& r) const override { return Schedule::default_for(r.head_dim).to_knobs(); }

  Support check_knobs(const Knobs& knobs, int head_dim, int max_shared_bytes) const override {
    try {
      Schedule::from_knobs(knobs).validate(head_dim, max_shared_bytes);
    } catch (const UserError& e) {
      return Support::invalid(e.what());
    }
    return Support::yes();
  }

  std::vector<HookPrototype> hooks() const override { return forward_hook_prototypes(); }

  GeneratedUnit generate(const TemplateRequest& r) const override {
    const Schedule s = Schedule::from_knobs(r.knobs);
    EmittedHooks emitted;
    GeneratedUnit unit = start_unit(name(), r, emitted);
    unit.max_dynamic_shared_bytes = s.shared_memory_bytes(r.head_dim);
    unit.kernel_names = {kKernelName};
    if (unit.facts.mask_reads_tensor)
      unit.kernel_names.insert(unit.kernel_names.begin(), BlockMaskTemplate::kKernelName);
    if (unit.facts.has_rope) unit.kernel_names.insert(unit.kernel_names.begin(), kRopeKKernelName);

    std::vector<std::pair<std::string, std::string>> macros = {
        {"AJ_HEAD_DIM", std::to_string(r.head_dim)}, {"AJ_BLOCK_M", std::to_string(s.block_m)},
        {"AJ_BLOCK_N", std::to_string(s.block_n)},   {"AJ_NUM_WARPS", std::to_string(s.num_warps)},
        {"AJ_STAGES", std::to_string(s.stages)},
    };
    if (r.ragged) {  // per-sequence offsets and lengths (Kernel::forward_ragged)
      macros.emplace_back("AJ_RAGGED", "1");
      macros.emplace_back("AJ_PER_SEQUENCE_LENGTHS", "1");
    }
    for (auto& m : BlockMaskTemplate::forward_fact_macros(r.dtype, unit.facts)) macros.push_back(std::move(m));
    unit.body = unit_preamble();
    unit.body += macro_block("fwd_sm80 knobs and the variant's facts", macros);
    unit.body += hook_section(hooks(), emitted);
    unit.body += runtime::load_template("sm80_dtype.cuh");
    unit.body += runtime::load_template("rope_pairs.cuh");
    unit.body += runtime::load_template("fwd_sm80.cuh");
    unit.body += runtime::load_template("rope_prepass.cuh");
    unit.body += BlockMaskTemplate::forward_section(unit.facts);
    return unit;
  }

  // Workspace: [K rotated by RoPE | tile classes of the block mask], each part 256-byte aligned.
  LaunchPlan launch_plan(const GeneratedUnit& unit, const ProblemShape& p) const override {
    const Schedule s = Schedule::from_knobs(unit.knobs);
    const int head_dim = unit.head_dim;
    LaunchPlan plan;
    std::size_t rope_bytes = 0;
    if (unit.facts.has_rope) {
      rope_bytes = workspace_aligned(static_cast<std::size_t>(p.batch) * p.heads_kv * p.seq_k * head_dim * 2);
      plan.kernels.push_back(rope_prepass_launch(kRopeKKernelName, "rope_k", p.seq_k, p.heads_kv, p.batch, head_dim));
    }
    std::optional<BlockMaskLayout> mask;
    if (unit.facts.mask_reads_tensor) {
      mask = BlockMaskTemplate::layout(unit.facts, s.block_m, s.block_n, p);
      plan.kernels.push_back(BlockMaskTemplate::launch(*mask));
      plan.block_mask_bytes = mask->bytes;
      plan.bind_block_mask = [l = *mask](AttnjitFwdArgs& args, std::uint64_t classes) {
        BlockMaskTemplate::bind(args, classes, l);
      };
    }
    plan.workspace_bytes = rope_bytes + (mask ? mask->bytes : 0);
    if (plan.workspace_bytes > 0)
      plan.bind_workspace = [rope_bytes, mask](AttnjitFwdArgs& args, std::uint64_t w) {
        if (rope_bytes > 0) args.rope_k = reinterpret_cast<void*>(w);
        if (mask) BlockMaskTemplate::bind(args, w + rope_bytes, *mask);
      };
    KernelLaunch fwd;
    fwd.kernel = kKernelName;
    fwd.role = "forward";
    fwd.grid = {static_cast<unsigned>((p.seq_q + s.block_m - 1) / s.block_m), static_cast<unsigned>(p.heads_q),
                static_cast<unsigned>(p.batch)};
    fwd.block = {static_cast<unsigned>(s.num_warps * 32), 1, 1};
    fwd.dynamic_shared_bytes = unit.max_dynamic_shared_bytes;
    plan.kernels.push_back(fwd);
    return plan;
  }
};

}  // namespace

std::unique_ptr<KernelTemplate> make_fwd_sm80_template() { return std::make_unique<FwdSm80Template>(); }

}  // namespace attnjit
