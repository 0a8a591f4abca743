// The split-K decode template's descriptor (see decode_sm80_template.hpp).
#include "templates/decode_sm80/decode_sm80_template.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "compiler/codegen.hpp"
#include "compiler/error.hpp"
#include "runtime/driver/nvrtc_compiler.hpp"
#include "runtime/driver/templates.hpp"
#include "templates/abi.h"

namespace attnjit {

namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerCta = 16 * kWarps;

int row_blocks(const ProblemShape& p) {
  const int rows = p.heads_q / p.heads_kv * p.seq_q;
  return (rows + kRowsPerCta - 1) / kRowsPerCta;
}

int shared_bytes(int head_dim, int block_n) { return (kRowsPerCta + 4 * block_n) * (head_dim + 8) * 2; }

class DecodeSm80Template : public KernelTemplate {
 public:
  std::string name() const override { return kDecodeTemplateName; }
  std::string description() const override {
    return "decode: split-K over the kv sequence with an LSE combine, a GQA group's query heads packed into "
           "one tile (mma.sync); sm_80 and newer, for Sq <= 16";
  }
  std::vector<std::string> archs() const override { return runtime::supported_architectures(); }
  // Below fwd_sm80 for compile(): decode units are built by Kernel::forward for Sq <= 16
  // calls (see decode_routing_enabled) or chosen by name.
  int priority() const override { return -1; }

  Support can_implement(const TemplateRequest& r) const override {
    if (!r.problem || r.problem->seq_q > kDecodeMaxSeqQ)
      return Support::no(fmt::format("for decode shapes only (Sq <= {}, known from a shape hint)", kDecodeMaxSeqQ));
    if (r.head_dim != 64 && r.head_dim != 128)
      return Support::no(fmt::format("head_dim {} is not 64 or 128", r.head_dim));
    if (r.variant->rope()) return Support::no("RoPE is not served (fwd_sm80 runs it)");
    return Support::yes();
  }

  std::vector<KnobSpec> knob_space(int) const override {
    return {{"block_n", {32, 64}, "keys per kv tile"},
            {"splits", {0, 1, 2, 4, 8, 16, 32, 64}, "kv splits (0: enough CTAs for two per SM)"}};
  }
  Knobs default_knobs(const TemplateRequest&) const override { return Knobs{{"block_n", 64}, {"splits", 0}}; }

  Support check_knobs(const Knobs& knobs, int head_dim, int max_shared_bytes) const override {
    const int block_n = knobs.get("block_n"), splits = knobs.get("splits");
    if (block_n != 32 && block_n != 64) return Support::invalid(fmt::format("block_n {} is not 32 or 64", block_n));
    if (splits < 0 || splits > 1024) return Support::invalid(fmt::format("splits {} is not in 0..1024", splits));
    if (shared_bytes(head_dim, block_n) > max_shared_bytes)
      return Support::invalid(fmt::format("decode_sm80 block_n={} needs {} bytes of shared memory; the limit is {}",
                                          block_n, shared_bytes(head_dim, block_n), max_shared_bytes));
    return Support::yes();
  }

  std::vector<HookPrototype> hooks() const override { return forward_hook_prototypes(); }

  GeneratedUnit generate(const TemplateRequest& r) const override {
    EmittedHooks emitted;
    GeneratedUnit unit = start_unit(name(), r, emitted);
    const int block_n = r.knobs.get("block_n");
    unit.max_dynamic_shared_bytes = shared_bytes(r.head_dim, block_n);
    unit.kernel_names = {"attnjit_decode", "attnjit_decode_combine"};
    unit.body = unit_preamble();
    unit.body += macro_block("decode_sm80 knobs and the variant's facts",
                             {{"AJ_HEAD_DIM", std::to_string(r.head_dim)},
                              {"AJ_BLOCK_N", std::to_string(block_n)},
                              {"AJ_NUM_WARPS", std::to_string(kWarps)},
                              {r.dtype == ElementType::BF16 ? "AJ_DTYPE_BF16" : "AJ_DTYPE_FP16", "1"},
                              {"AJ_HAS_SCORE_MOD", unit.facts.has_score_mod ? "1" : "0"},
                              {"AJ_HAS_MASK", unit.facts.has_mask ? "1" : "0"}});
    unit.body += hook_section(hooks(), emitted);
    unit.body += runtime::load_template("sm80_dtype.cuh");
    unit.body += runtime::load_template("decode_sm80.cuh");
    return unit;
  }

  LaunchPlan launch_plan(const GeneratedUnit& unit, const ProblemShape& p) const override {
    const int block_n = unit.knobs.get("block_n");
    const int head_dim = unit.head_dim;
    const int n_tiles = (p.seq_k + block_n - 1) / block_n;
    const int splits_wanted = decode_splits(p, head_dim, block_n, unit.knobs.get("splits"));
    const int tiles_per_split = (n_tiles + splits_wanted - 1) / splits_wanted;
    const int splits = (n_tiles + tiles_per_split - 1) / tiles_per_split;
    const int blocks = row_blocks(p);
    const std::size_t rows = static_cast<std::size_t>(p.batch) * p.heads_q * p.seq_q * splits;
    const std::size_t o_bytes = (rows * head_dim * 4 + 255) / 256 * 256;
    LaunchPlan plan;
    plan.workspace_bytes = o_bytes + rows * 4;
    plan.args_bytes = sizeof(AttnjitDecodeArgs);
    plan.bind_workspace = [o_bytes, splits, tiles_per_split, blocks](AttnjitFwdArgs& args, std::uint64_t w) {
      // Bound through the forward block, the first member of AttnjitDecodeArgs.
      auto& d = reinterpret_cast<AttnjitDecodeArgs&>(args);
      d.partial_o = reinterpret_cast<float*>(w);
      d.partial_lse = reinterpret_cast<float*>(w + o_bytes);
      d.splits = splits;
      d.tiles_per_split = tiles_per_split;
      d.row_blocks = blocks;
    };
    plan.kernels.push_back(
        {"attnjit_decode",
         "decode",
         {static_cast<unsigned>(splits), static_cast<unsigned>(p.heads_kv * blocks), static_cast<unsigned>(p.batch)},
         {kWarps * 32, 1, 1},
         {},
         unit.max_dynamic_shared_bytes});
    plan.kernels.push_back({"attnjit_decode_combine",
                            "decode_combine",
                            {static_cast<unsigned>((p.heads_q * p.seq_q + 3) / 4), static_cast<unsigned>(p.batch), 1},
                            {128, 1, 1},
                            {},
                            0});
    return plan;
  }
};

}  // namespace

int decode_splits(const ProblemShape& p, int, int block_n, int requested, int target_ctas) {
  const int n_tiles = std::max(1, (p.seq_k + block_n - 1) / block_n);
  if (requested > 0) return std::min(requested, n_tiles);
  const int ctas = p.batch * p.heads_kv * row_blocks(p);
  return std::clamp((target_ctas + ctas - 1) / ctas, 1, n_tiles);
}

bool decode_routing_enabled() {
  const char* v = std::getenv("ATTNJIT_DECODE");
  return v == nullptr || std::string(v) != "0";
}

std::unique_ptr<KernelTemplate> make_decode_sm80_template() { return std::make_unique<DecodeSm80Template>(); }

}  // namespace attnjit
