// The Hopper backward template's descriptor (see bwd_sm90_template.hpp): bwd_sm80's, with fixed
// tile knobs, the sm_90a target and the wgmma products pasted before bwd_sm80.cuh.
#include "templates/bwd_sm90/bwd_sm90_template.hpp"

#include <fmt/format.h>

#include <string>
#include <vector>

#include "runtime/driver/templates.hpp"
#include "templates/bwd_sm80/bwd_sm80_template.hpp"
#include "templates/fwd_sm90/fwd_sm90_template.hpp"

namespace attnjit {

int bwd_sm90_shared_bytes(int head_dim, int stages, int dq_bulk) {
  constexpr int block_m = 64;
  const int block_n = head_dim;  // a warpgroup (64 keys) per 64 head-dim columns of dQ
  const int warps = head_dim / 16;
  // K and V, Q and dO per stage, dS^T (block_n x block_m), LSE and D per stage, with dq_bulk a
  // dQ staging area per warp (1024 slots of 8 bytes), and the slack that aligns the tiles to the
  // swizzle's 1024-byte atom.
  return 2 * block_n * head_dim * 2 + 2 * stages * block_m * head_dim * 2 + block_n * block_m * 2 +
         2 * stages * block_m * 4 + (dq_bulk ? warps * 1024 * 8 : 0) + 1024;
}

namespace {

class BwdSm90Template : public BwdSm80Template {
 public:
  std::string name() const override { return "bwd_sm90"; }
  std::string description() const override {
    return "backward, bwd_sm80's kernels with wgmma products (a warpgroup per 64 keys, swizzled tiles); sm_90a";
  }
  std::vector<std::string> archs() const override { return {"sm_90a"}; }
  int priority() const override { return 1; }

  // Knobs only bwd_sm80 takes (block_m 32, other warps, row_pad 8) leave the request to it.
  Support can_implement(const TemplateRequest& r) const override {
    if (Support base = BwdSm80Template::can_implement(r); !base.supported()) return base;
    const auto& asked = r.knobs.values();
    const auto differs = [&asked](const char* knob, int value) {
      const auto it = asked.find(knob);
      return it != asked.end() && it->second != value;
    };
    if (differs("block_m", 64) || differs("warps", r.head_dim / 16) || differs("row_pad", 0))
      return Support::no(fmt::format("knobs {} are bwd_sm80's (bwd_sm90 runs block_m 64, warps {}, row_pad 0)",
                                     r.knobs.str(), r.head_dim / 16));
    return Support::yes();
  }

  // The tile is fixed by the warpgroup shape: 64 query rows per step (dQ's m64), a warpgroup
  // per 64 keys and per 64 columns of dQ (warps = head_dim / 16).
  std::vector<KnobSpec> knob_space(int head_dim) const override {
    return {{"block_m", {64}, "query rows per step (wgmma's m64 for dQ)"},
            {"warps",
             {head_dim / 16},
             "head_dim / 16 warps per CTA: a warpgroup per 64 keys and per 64 head-dim columns of dQ"},
            {"stages", {1, 2}, "Q / dO buffers in shared memory (2: the next step's rows load meanwhile)"},
            {"row_pad", {0}, "always 0: wgmma reads 128-byte-swizzled tiles", /*tuned=*/false},
            {"dq_bulk",
             {0, 1},
             "1: a warp's dQ sums of a step through shared memory and one bulk reduce (cp.reduce.async.bulk) "
             "instead of per-thread atomics"},
            {"dq_before_dk",
             {0, 1},
             "1: the step's last products in the order dV, dQ, dK, so that dQ's adds run while the tensor cores "
             "compute dK"},
            {"dq_ordered",
             {0, 1},
             "1: deterministic calls add dQ in fp32, the kv blocks of a query block taking turns in a fixed order, "
             "instead of fixed-point atomics (no effect on other calls)",
             /*tuned=*/false}};
  }
  Knobs default_knobs(const TemplateRequest& request) const override {
    Knobs k;
    k.set("block_m", 64);
    k.set("warps", request.head_dim / 16);
    k.set("stages", 2);
    k.set("row_pad", 0);
    // H200, 2026-12-01, causal / dense S=4096: dq_bulk 1 lost 5-11% (deterministic too, but D=64
    // causal +4%); dq_before_dk 1 won 7-9% at D=128 (356 -> 383, 427 -> 463 TFLOP/s), 2% at D=64.
    k.set("dq_bulk", 0);
    k.set("dq_before_dk", 1);
    k.set("dq_ordered", 0);  // not yet measured on a GPU (2026-12-01)
    return k;
  }
  std::optional<Knobs> spill_fallback_knobs(const Knobs&) const override { return std::nullopt; }

  Support check_knobs(const Knobs& knobs, int head_dim, int max_shared_bytes) const override {
    const int block_m = knobs.get("block_m"), warps = knobs.get("warps"), stages = knobs.get("stages");
    if (block_m != 64)
      return Support::invalid(
          fmt::format("bwd_sm90 runs block_m 64 only (got {}); --template bwd_sm80 takes 32", block_m));
    if (warps != head_dim / 16)
      return Support::invalid(
          fmt::format("bwd_sm90 runs {} warps at head_dim {} (got {}); --template bwd_sm80 takes 4 or 8", head_dim / 16,
                      head_dim, warps));
    if (stages != 1 && stages != 2) return Support::invalid(fmt::format("stages {} is not 1 or 2", stages));
    for (const char* knob : {"dq_bulk", "dq_before_dk", "dq_ordered"})
      if (const int v = knobs.get(knob); v != 0 && v != 1)
        return Support::invalid(fmt::format("{} {} is not 0 or 1", knob, v));
    if (knobs.get("dq_bulk") && knobs.get("dq_ordered"))
      return Support::invalid("dq_bulk and dq_ordered are two ways of adding dQ; choose one");
    if (const int row_pad = knobs.get("row_pad"); row_pad != 0)
      return Support::invalid(
          fmt::format("bwd_sm90 runs row_pad 0 only (got {}); --template bwd_sm80 takes 8", row_pad));
    return check_shared_bytes(knobs, head_dim, max_shared_bytes);
  }

 protected:
  int shared_bytes(int head_dim, const Knobs& knobs) const override {
    return bwd_sm90_shared_bytes(head_dim, knobs.get("stages"), knobs.get("dq_bulk"));
  }
  std::string product_section(const TemplateRequest& r) const override {
    std::string out = "#define AJ_WGMMA 1\n";
    if (r.knobs.get("dq_bulk")) out += "#define AJ_DQ_BULK 1\n";
    if (r.knobs.get("dq_before_dk")) out += "#define AJ_DQ_BEFORE_DK 1\n";
    if (r.knobs.get("dq_ordered")) out += "#define AJ_DQ_ORDERED 1\n";
    out += runtime::load_template("sm90_primitives.cuh");
    out += wgmma_wrappers(r.dtype, /*block_n=*/64, r.head_dim);  // S^T, dP^T: n = block_m; dV, dK: n = D
    out += wgmma_ss_transposed_wrapper(r.dtype, 64);             // dQ: n = 64 columns per warpgroup
    out += runtime::load_template("bwd_sm90.cuh");
    return out;
  }
};

}  // namespace

std::unique_ptr<KernelTemplate> make_bwd_sm90_template() { return std::make_unique<BwdSm90Template>(); }

}  // namespace attnjit
