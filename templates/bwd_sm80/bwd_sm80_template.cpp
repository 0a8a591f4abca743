// The sm80 backward template's descriptor (see bwd_sm80_template.hpp).
#include "templates/bwd_sm80/bwd_sm80_template.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <string>

#include "compiler/codegen.hpp"
#include "compiler/error.hpp"
#include "compiler/ir.hpp"
#include "runtime/driver/nvrtc_compiler.hpp"
#include "runtime/driver/templates.hpp"
#include "templates/abi.h"
#include "templates/block_mask/block_mask_template.hpp"

namespace attnjit {

int bwd_sm80_shared_bytes(int head_dim, int block_m, int warps, int stages, int row_pad) {
  const int block_n = 16 * warps;
  const int row_bytes = (head_dim + row_pad) * 2;
  return 2 * block_n * row_bytes + 2 * stages * block_m * row_bytes + block_n * (block_m + 8) * 2 +
         2 * stages * block_m * 4;
}

namespace {

constexpr int kRowsPerSideCta = 16;                           // query rows per CTA of the preprocess and postprocess
constexpr const char* kRopeKernel = "attnjit_bwd_rope";       // Q and K rotated (RoPE)
constexpr const char* kRopeDkKernel = "attnjit_bwd_rope_dk";  // dK turned back (RoPE)

}  // namespace

std::string BwdSm80Template::description() const {
  return "backward, FlashAttention-2 structure (cp.async, ldmatrix, mma.sync; dK, dV in registers, dQ by "
         "atomics or fixed point); sm_80 and newer";
}
std::vector<std::string> BwdSm80Template::archs() const { return runtime::supported_architectures(); }

Support BwdSm80Template::can_implement(const TemplateRequest& r) const {
  if (r.ragged) return Support::no("ragged batches are served by fwd_sm80");
  if (r.head_dim != 64 && r.head_dim != 128)
    return Support::no(fmt::format("head_dim {} is not 64 or 128", r.head_dim));
  if (const auto& rope = r.variant->rope(); rope && rope->rotary_dim > r.head_dim)
    return Support::invalid(fmt::format("variant '{}': rope rotary_dim {} exceeds head_dim {}", r.variant->name(),
                                        rope->rotary_dim, r.head_dim));
  if (const auto& gate = r.variant->output_gate()) {
    for (const auto& n : ir::topological_order({r.variant->score_mod().node()}))
      if (n->op == ir::Op::TensorRead && n->name == gate->tensor)
        return Support::no(
            fmt::format("the gate tensor '{}' is also read by the score_mod; the backward takes "
                        "the gate's gradient from one of them only",
                        gate->tensor));
  }
  return Support::yes();
}

std::vector<KnobSpec> BwdSm80Template::knob_space(int) const {
  return {{"block_m", {32, 64}, "query rows per step of a kv block's loop"},
          {"warps", {4, 8}, "warps per CTA; each owns 16 keys (block_n = 16 * warps)"},
          {"stages", {1, 2}, "Q / dO buffers in shared memory (2: the next step's rows load meanwhile)"},
          {"row_pad",
           {0, 8},
           "elements between the shared-memory rows of K, V, Q and dO past the head dim: 0 rows D apart, their "
           "16-byte chunks swizzled by row (32-byte aligned like their sources, ldmatrix conflict-free); 8 "
           "padded (every other row 16 bytes off its source's alignment: the copies ask L2 for 1.5x the sectors). "
           "Not tuned",
           /*tuned=*/false}};
}

// D=128: block_m 64 and 8 warps (128 keys per CTA); dense and causal run 9-10% faster than with
// block_m 32 on an H200. D=64: block_m 32 and 4 warps (64 keys per CTA), 4-6% faster dense and
// 7-17% causal at S 1k-16k (docs/perf-notes.md, eighteenth session). Variants whose hooks need
// more registers spill at block_m 64 (forget gate, shifted sparse, document masks at D=128):
// prepare() then compiles them at block_m 32.
Knobs BwdSm80Template::default_knobs(const TemplateRequest& request) const {
  const bool narrow_head = request.head_dim <= 64;
  Knobs k;
  k.set("block_m", narrow_head ? 32 : 64);
  k.set("warps", narrow_head ? 4 : 8);
  k.set("stages", 2);
  k.set("row_pad", 0);
  return k;
}
std::optional<Knobs> BwdSm80Template::spill_fallback_knobs(const Knobs& spilling) const {
  if (spilling.get("block_m") != 64) return std::nullopt;
  Knobs k = spilling;
  k.set("block_m", 32);
  return k;
}

Support BwdSm80Template::check_knobs(const Knobs& knobs, int head_dim, int max_shared_bytes) const {
  const int block_m = knobs.get("block_m"), warps = knobs.get("warps"), stages = knobs.get("stages");
  if (block_m != 32 && block_m != 64) return Support::invalid(fmt::format("block_m {} is not 32 or 64", block_m));
  if (warps != 4 && warps != 8) return Support::invalid(fmt::format("warps {} is not 4 or 8", warps));
  if (stages != 1 && stages != 2) return Support::invalid(fmt::format("stages {} is not 1 or 2", stages));
  const int row_pad = knobs.get("row_pad");
  if (row_pad != 0 && row_pad != 8) return Support::invalid(fmt::format("row_pad {} is not 0 or 8", row_pad));
  return check_shared_bytes(knobs, head_dim, max_shared_bytes);
}

int BwdSm80Template::shared_bytes(int head_dim, const Knobs& knobs) const {
  return bwd_sm80_shared_bytes(head_dim, knobs.get("block_m"), knobs.get("warps"), knobs.get("stages"),
                               knobs.get("row_pad"));
}

Support BwdSm80Template::check_shared_bytes(const Knobs& knobs, int head_dim, int max_shared_bytes) const {
  const int bytes = shared_bytes(head_dim, knobs);
  if (bytes > max_shared_bytes)
    return Support::invalid(fmt::format(
        "{} block_m={} warps={} stages={} at head_dim {} needs {} bytes of shared memory; the limit is {}", name(),
        knobs.get("block_m"), knobs.get("warps"), knobs.get("stages"), head_dim, bytes, max_shared_bytes));
  return Support::yes();
}

std::vector<HookPrototype> BwdSm80Template::hooks() const {
  auto all = forward_hook_prototypes();
  all.push_back({"aj_score_mod_grad", "float",
                 "float score, float ds, int b, int h, int q, int kv, const AttnjitBwdArgs& bargs", ""});
  return all;
}

GeneratedUnit BwdSm80Template::generate(const TemplateRequest& r) const {
  EmittedHooks emitted;
  GeneratedUnit unit = start_unit(name(), r, emitted);
  const EmittedGradHook grad = emit_score_mod_grad_hook(*r.variant, unit.slots);
  emitted.source += grad.source;
  unit.tensor_gradients = grad.grad_tensors;
  if (const auto& gate = r.variant->output_gate()) unit.tensor_gradients.push_back(gate->tensor);
  const int block_m = r.knobs.get("block_m"), warps = r.knobs.get("warps"), stages = r.knobs.get("stages");
  const int row_pad = r.knobs.get("row_pad");
  unit.max_dynamic_shared_bytes = shared_bytes(r.head_dim, r.knobs);
  unit.kernel_names = {"attnjit_bwd_preprocess", "attnjit_bwd", "attnjit_bwd_postprocess"};
  if (unit.facts.mask_reads_tensor)  // tile classes first, at this template's tile sizes
    unit.kernel_names.insert(unit.kernel_names.begin(), BlockMaskTemplate::kKernelName);
  if (unit.facts.has_rope) {
    unit.kernel_names.insert(unit.kernel_names.begin(), kRopeKernel);
    unit.kernel_names.insert(unit.kernel_names.end() - 1, kRopeDkKernel);  // in plan order
  }
  std::vector<std::pair<std::string, std::string>> macros = {
      {"AJ_HEAD_DIM", std::to_string(r.head_dim)},
      {"AJ_BLOCK_M", std::to_string(block_m)},
      {"AJ_NUM_WARPS", std::to_string(warps)},
      {"AJ_STAGES", std::to_string(stages)},
      {r.dtype == ElementType::BF16 ? "AJ_DTYPE_BF16" : "AJ_DTYPE_FP16", "1"},
      {"AJ_HAS_SCORE_MOD", unit.facts.has_score_mod ? "1" : "0"},
      {"AJ_HAS_MASK", unit.facts.has_mask ? "1" : "0"},
      {"AJ_HAS_BLOCK_MASK", unit.facts.mask_reads_tensor ? "1" : "0"},
      {"AJ_BLOCK_N", std::to_string(16 * warps)},  // (for the block-mask kernel's tiles)
  };
  if (row_pad != 0) macros.emplace_back("AJ_ROW_PAD", std::to_string(row_pad));
  // The special-function unit bounds a soft-capped backward (P's exp2 and the tanh per
  // score): tanh's exponential goes to the FMA pipe (H200, 2026-11-29: soft-cap causal D=128
  // 185 -> 194 TFLOP/s; the forward, bound by instruction issue instead, lost 12% with it).
  unit.body = unit_preamble({{"AJ_TANH_ON_FMA", "1"}});
  unit.body += runtime::load_template("bwd_hooks.cuh");
  unit.body += "\n";
  unit.body += macro_block(name() + " knobs and the variant's facts", macros);
  unit.body += hook_section(hooks(), emitted);
  unit.body += runtime::load_template("sm80_dtype.cuh");
  unit.body += runtime::load_template("rope_pairs.cuh");
  unit.body += product_section(r);
  unit.body += runtime::load_template("bwd_sm80.cuh");
  unit.body += BlockMaskTemplate::forward_section(unit.facts);
  return unit;
}

// Workspace, each part 256-aligned: D (a float per query row) | the dQ accumulator (8 bytes
// per element, query rows padded to whole blocks) | with dq_ordered: an int per query block | with RoPE: Q and K
// rotated, dK rotated (fp32) | with the gate: dO * s | with a mask that reads tensors: the tile classes.
LaunchPlan BwdSm80Template::launch_plan(const GeneratedUnit& unit, const ProblemShape& p) const {
  const int warps = unit.knobs.get("warps");
  const std::size_t head_dim = static_cast<std::size_t>(unit.head_dim);
  const std::size_t q_rows = static_cast<std::size_t>(p.batch) * p.heads_q * p.seq_q;
  const std::size_t k_rows = static_cast<std::size_t>(p.batch) * p.heads_kv * p.seq_k;
  struct Parts {
    std::size_t delta = 0, dq_accum = 0, dq_turns = 0, rope_q = 0, rope_k = 0, dk_rotated = 0, d_out_gated = 0;
  } at;
  std::size_t end = 0;
  const auto part = [&end](std::size_t bytes) {
    const std::size_t offset = end;
    end += workspace_aligned(bytes);
    return offset;
  };
  at.delta = part(q_rows * 4);
  // (whole query blocks per (b, h): the kernel adds into them in its fragment order)
  const std::size_t block_m = static_cast<std::size_t>(unit.knobs.get("block_m"));
  const std::size_t padded_q_rows =
      static_cast<std::size_t>(p.batch) * p.heads_q * ((p.seq_q + block_m - 1) / block_m * block_m);
  at.dq_accum = part(padded_q_rows * head_dim * 8);
  // bwd_sm90's dq_ordered: a turn counter per query block.
  const bool ordered = unit.knobs.has("dq_ordered") && unit.knobs.get("dq_ordered") != 0;
  if (ordered) at.dq_turns = part(padded_q_rows / block_m * 4);
  const bool rope = unit.facts.has_rope, gate = unit.facts.has_output_gate;
  if (rope) {
    at.rope_q = part(q_rows * head_dim * 2);
    at.rope_k = part(k_rows * head_dim * 2);
    at.dk_rotated = part(k_rows * head_dim * 4);
  }
  if (gate) at.d_out_gated = part(q_rows * head_dim * 2);
  std::optional<BlockMaskLayout> mask;
  std::size_t mask_at = 0;
  if (unit.facts.mask_reads_tensor) {
    mask = BlockMaskTemplate::layout(unit.facts, static_cast<int>(block_m), 16 * warps, p);
    mask_at = part(mask->bytes);
  }
  LaunchPlan plan;
  plan.workspace_bytes = end;
  plan.bind_workspace = [at, ordered, rope, gate, mask, mask_at](AttnjitFwdArgs& args, std::uint64_t w) {
    // A launch plan binds through the forward block, the first member of AttnjitBwdArgs.
    auto& bargs = reinterpret_cast<AttnjitBwdArgs&>(args);
    bargs.delta = reinterpret_cast<float*>(w + at.delta);
    bargs.dq_accum = reinterpret_cast<void*>(w + at.dq_accum);
    if (ordered) bargs.dq_turns = reinterpret_cast<int*>(w + at.dq_turns);
    if (rope) {
      bargs.rope_q = reinterpret_cast<void*>(w + at.rope_q);
      bargs.fwd.rope_k = reinterpret_cast<void*>(w + at.rope_k);
      bargs.dk_rotated = reinterpret_cast<float*>(w + at.dk_rotated);
    }
    if (gate) bargs.d_out_gated = reinterpret_cast<void*>(w + at.d_out_gated);
    if (mask) BlockMaskTemplate::bind(args, w + mask_at, *mask);
  };
  const Dim3 side_grid{static_cast<unsigned>((p.seq_q + kRowsPerSideCta - 1) / kRowsPerSideCta),
                       static_cast<unsigned>(p.heads_q), static_cast<unsigned>(p.batch)};
  const auto pair_blocks = [head_dim](int rows) {
    return static_cast<unsigned>((static_cast<std::size_t>(rows) * (head_dim / 2) + 255) / 256);
  };
  if (rope)
    plan.kernels.push_back({kRopeKernel,
                            "bwd_rope",
                            {pair_blocks(std::max(p.seq_q, p.seq_k)), static_cast<unsigned>(p.heads_q + p.heads_kv),
                             static_cast<unsigned>(p.batch)},
                            {256, 1, 1},
                            {},
                            0});
  if (mask) plan.kernels.push_back(BlockMaskTemplate::launch(*mask));
  plan.kernels.push_back({"attnjit_bwd_preprocess", "bwd_preprocess", side_grid, {128, 1, 1}, {}, 0});
  const int block_n = 16 * warps;
  plan.kernels.push_back({"attnjit_bwd",
                          "backward",
                          {static_cast<unsigned>((p.seq_k + block_n - 1) / block_n), static_cast<unsigned>(p.heads_kv),
                           static_cast<unsigned>(p.batch)},
                          {static_cast<unsigned>(warps * 32), 1, 1},
                          {},
                          unit.max_dynamic_shared_bytes});
  if (rope)
    plan.kernels.push_back({kRopeDkKernel,
                            "bwd_rope_dk",
                            {pair_blocks(p.seq_k), static_cast<unsigned>(p.heads_kv), static_cast<unsigned>(p.batch)},
                            {256, 1, 1},
                            {},
                            0});
  plan.kernels.push_back({"attnjit_bwd_postprocess", "bwd_postprocess", side_grid, {128, 1, 1}, {}, 0});
  return plan;
}

std::unique_ptr<KernelTemplate> make_bwd_sm80_template() { return std::make_unique<BwdSm80Template>(); }

}  // namespace attnjit
