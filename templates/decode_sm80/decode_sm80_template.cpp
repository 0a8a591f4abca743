// The decode template's descriptor (see decode_sm80_template.hpp).
#include "templates/decode_sm80/decode_sm80_template.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "compiler/codegen.hpp"
#include "compiler/error.hpp"
#include "runtime/driver/nvrtc_compiler.hpp"
#include "runtime/driver/templates.hpp"
#include "templates/abi.h"
#include "templates/decode_schedule.h"

namespace attnjit {

namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerCta = 16 * kWarps;

int row_blocks(const ProblemShape& p) {
  const int rows = p.heads_q / p.heads_kv * p.seq_q;
  return (rows + kRowsPerCta - 1) / kRowsPerCta;
}

// The ring of K and V tiles (the Q rows pass through it first).
int shared_bytes(int head_dim, int block_n, int stages, int row_pad) {
  return stages * 2 * block_n * (head_dim + row_pad) * 2;
}

// Static shared memory of attnjit_decode: a paged split's block-table entries (TABLE_CACHE ints),
// with stream-K also the batch's tile prefix (STREAM_K_MAX_BATCH + 1 longs) and four warp sums.
static_assert(kDecodeStreamKMaxBatch == AJ_STREAM_K_MAX_BATCH, "the host's limit is the kernel's prefix size");
int static_shared_bytes(bool stream_k) { return 1024 * 4 + (stream_k ? (kDecodeStreamKMaxBatch + 1 + 4) * 8 : 0); }
constexpr int kCtasPerSm = 2;  // the kernel's __launch_bounds__ minimum (AJ_CTAS_PER_SM)

// CTAs of `shared` dynamic bytes resident per SM: at most two, since the kernel holds up to 255
// registers per thread (209 at D=128, ptxas for sm_90a; __launch_bounds__ promises two), fewer
// where shared memory (the device's opt-in limit per block plus the 1 KiB reserved per CTA, an
// H100's when unknown) runs out. Counting past what registers allow sends the split rule beyond
// one wave: likely why a two-stage ring (three CTAs by shared memory) lost 14-55% to three stages
// with the rule choosing (H200, 2026-11-30), and won by 1-5% at the same split count.
int resident_ctas(const ProblemShape& p, int shared, bool stream_k) {
  const int per_sm = (p.max_shared_bytes_per_block > 0 ? p.max_shared_bytes_per_block : 227 * 1024) + 1024;
  return std::clamp(per_sm / (shared + static_shared_bytes(stream_k) + 1024), 1, kCtasPerSm);
}

// A plan's workspace (partial O and LSE), argument block and one zeroed counter of pieces per
// (sequence, kv head, row block), for either schedule.
LaunchPlan plan_with_counters(const ProblemShape& p, int blocks, std::size_t workspace_bytes) {
  LaunchPlan plan;
  plan.workspace_bytes = workspace_bytes;
  plan.args_bytes = sizeof(AttnjitDecodeArgs);
  plan.zeroed_bytes = static_cast<std::size_t>(p.batch) * p.heads_kv * blocks * sizeof(int);
  plan.bind_zeroed = [](AttnjitFwdArgs& args, std::uint64_t counters) {
    reinterpret_cast<AttnjitDecodeArgs&>(args).split_counters = reinterpret_cast<int*>(counters);
  };
  return plan;
}

class DecodeSm80Template : public KernelTemplate {
 public:
  std::string name() const override { return kDecodeTemplateName; }
  std::string description() const override {
    return "decode: stream-K (or split-K) over the kv sequences with an LSE merge, a GQA group's query heads "
           "packed into one tile (mma.sync); sm_80 and newer, for Sq <= 16";
  }
  std::vector<std::string> archs() const override { return runtime::supported_architectures(); }
  // Below fwd_sm80 for compile(): decode units are built by Kernel::forward for Sq <= 16
  // calls (see decode_routing_enabled) or chosen by name.
  int priority() const override { return -1; }

  Support can_implement(const TemplateRequest& r) const override {
    if (r.ragged) return Support::no("ragged batches are served by fwd_sm80");
    if (!r.problem || r.problem->seq_q > kDecodeMaxSeqQ)
      return Support::no(fmt::format("for decode shapes only (Sq <= {}, known from a shape hint)", kDecodeMaxSeqQ));
    if (r.head_dim != 64 && r.head_dim != 128)
      return Support::no(fmt::format("head_dim {} is not 64 or 128", r.head_dim));
    if (const auto& rope = r.variant->rope(); rope && rope->rotary_dim > r.head_dim)
      return Support::invalid(fmt::format("variant '{}': rope rotary_dim {} exceeds head_dim {}", r.variant->name(),
                                          rope->rotary_dim, r.head_dim));
    return Support::yes();
  }

  std::vector<KnobSpec> knob_space(int) const override {
    return {{"block_n", {32, 64}, "keys per kv tile"},
            {"stages", {2, 3, 4}, "kv tiles in the cp.async ring (stages - 1 loads in flight)"},
            {"splits", {0, 1, 2, 4, 8, 16, 32, 64}, "kv splits (0: the fewest that fill the GPU's waves)"},
            {"stream_k",
             {1, 0},
             "1: a CTA per resident slot, each taking an equal range of all sequences' kv tiles (LeanAttention), "
             "however their lengths differ (a split layout when every sequence has as many tiles and it is as "
             "balanced); 0: split-K, each sequence's capacity cut into `splits`; splits unused with 1. Not tuned "
             "unless --only names it: tuning times equal full lengths, where split-K wins by 3-6%, and KV caches "
             "are rarely that",
             /*tuned=*/false},
            {"rope_steps",
             {1, 0},
             "RoPE variants: 1 turns each K tile with one sin/cos per thread and tile, the rows after it stepped by a "
             "complex multiply; 0 a sin/cos per pair and row (H200: 1.8-1.9x slower). Not tuned: 1 won at 8k and "
             "32k keys; no effect without RoPE",
             /*tuned=*/false},
            {"row_pad",
             {0, 8, 16},
             "elements between shared-memory rows past the head dim: 0 rows D apart, their 16-byte chunks swizzled "
             "by row (every row 32-byte aligned like its global source, ldmatrix conflict-free); 8 padded, "
             "conflict-free, but every other row 16 bytes off its source's alignment (the copies ask L2 for 1.5x "
             "the sectors); 16 padded and aligned (ldmatrix 2-way conflicts). Not tuned: 0 won without RoPE (H200, "
             "B=8 Hq=32 Hkv=8: D=128 Sk=32k 3910 -> 4156 GB/s, 8k 3276 -> 3494, paged 16 3829 -> 3929, D=64 8k "
             "2461 -> 2525), 8 with RoPE (1467 against 1390 at 8k), each the default there",
             /*tuned=*/false}};
  }
  Knobs default_knobs(const TemplateRequest& r) const override {
    // Two stages: H200, 2026-11-30, B=8 Hq=32 Hkv=8 D=128, splits 4 either way: Sq=1 3349 ->
    // 3380 GB/s (Sk=8k), 3919 -> 3980 (32k); Sq=4 Sk=8k 2813 -> 2948.
    // Stream-K unless the hinted batch is past what it takes (docs/kernels.md has the numbers).
    // RoPE's stepped K turns: H200, 2026-11-30, rope_decode B=8 Hq=32 Hkv=8 D=128 Sq=1: 817 ->
    // 1464 GB/s (Sk=8k), 844 -> 1584 (32k).
    // Swizzled rows (row_pad 0): H200, 2026-11-30, dense Sq=1: 3910 -> 4156 GB/s (Sk=32k), 3276
    // -> 3494 (8k); L2 sectors per copy the ideal 16 per warp instead of 24 on average. Not with
    // RoPE, whose turns address single elements of the rows: rope_decode 1467 -> 1390 (8k), 1600
    // -> 1539 (32k) swizzled, so padded rows stay its default.
    const bool stream_k = !r.problem || r.problem->batch <= kDecodeStreamKMaxBatch;
    const bool rope = r.variant && r.variant->rope().has_value();
    return Knobs{{"block_n", 64},   {"stages", 2},
                 {"splits", 0},     {"stream_k", stream_k ? 1 : 0},
                 {"rope_steps", 1}, {"row_pad", rope ? 8 : 0}};
  }

  Support check_knobs(const Knobs& knobs, int head_dim, int max_shared_bytes) const override {
    const int block_n = knobs.get("block_n"), splits = knobs.get("splits"), stages = knobs.get("stages");
    if (block_n != 32 && block_n != 64) return Support::invalid(fmt::format("block_n {} is not 32 or 64", block_n));
    if (stages < 2 || stages > 4) return Support::invalid(fmt::format("stages {} is not in 2..4", stages));
    if (splits < 0 || splits > 1024) return Support::invalid(fmt::format("splits {} is not in 0..1024", splits));
    if (const int stream_k = knobs.get("stream_k"); stream_k != 0 && stream_k != 1)
      return Support::invalid(fmt::format("stream_k {} is not 0 or 1", stream_k));
    if (const int steps = knobs.get("rope_steps"); steps != 0 && steps != 1)
      return Support::invalid(fmt::format("rope_steps {} is not 0 or 1", steps));
    const int row_pad = knobs.get("row_pad");
    if (row_pad != 0 && row_pad != 8 && row_pad != 16)
      return Support::invalid(fmt::format("row_pad {} is not 0, 8 or 16", row_pad));
    const int shared = shared_bytes(head_dim, block_n, stages, row_pad);
    if (shared > max_shared_bytes)
      return Support::invalid(
          fmt::format("decode_sm80 block_n={} stages={} needs {} bytes of shared memory; the limit is {}", block_n,
                      stages, shared, max_shared_bytes));
    return Support::yes();
  }

  std::vector<HookPrototype> hooks() const override { return forward_hook_prototypes(); }

  GeneratedUnit generate(const TemplateRequest& r) const override {
    EmittedHooks emitted;
    GeneratedUnit unit = start_unit(name(), r, emitted);
    const int block_n = r.knobs.get("block_n"), stages = r.knobs.get("stages");
    const int row_pad = r.knobs.get("row_pad");
    unit.max_dynamic_shared_bytes = shared_bytes(r.head_dim, block_n, stages, row_pad);
    unit.kernel_names = {"attnjit_decode"};
    unit.body = unit_preamble();
    std::vector<std::pair<std::string, std::string>> macros = {
        {"AJ_HEAD_DIM", std::to_string(r.head_dim)},
        {"AJ_BLOCK_N", std::to_string(block_n)},
        {"AJ_STAGES", std::to_string(stages)},
        {"AJ_NUM_WARPS", std::to_string(kWarps)},
        {"AJ_CTAS_PER_SM", std::to_string(kCtasPerSm)},
        {"AJ_STREAM_K", std::to_string(r.knobs.get("stream_k"))},
        {"AJ_PER_SEQUENCE_LENGTHS", "1"},
        {r.dtype == ElementType::BF16 ? "AJ_DTYPE_BF16" : "AJ_DTYPE_FP16", "1"},
        {"AJ_HAS_SCORE_MOD", unit.facts.has_score_mod ? "1" : "0"},
        {"AJ_HAS_MASK", unit.facts.has_mask ? "1" : "0"}};
    if (unit.facts.has_rope && r.knobs.get("rope_steps") == 1) macros.emplace_back("AJ_ROPE_STEPPED", "1");
    if (row_pad != 0) macros.emplace_back("AJ_ROW_PAD", std::to_string(row_pad));
    unit.body += macro_block("decode_sm80 knobs and the variant's facts", macros);
    unit.body += hook_section(hooks(), emitted);
    unit.body += runtime::load_template("sm80_dtype.cuh");
    unit.body += runtime::load_template("rope_pairs.cuh");
    unit.body += runtime::load_template("decode_schedule.h");
    unit.body += runtime::load_template("decode_sm80.cuh");
    return unit;
  }

  LaunchPlan launch_plan(const GeneratedUnit& unit, const ProblemShape& p) const override {
    const int block_n = unit.knobs.get("block_n");
    const int head_dim = unit.head_dim;
    const int n_tiles = (p.seq_k + block_n - 1) / block_n;
    const bool stream_k = unit.knobs.get("stream_k") == 1;
    const int slots = p.multiprocessors_or_default() * resident_ctas(p, unit.max_dynamic_shared_bytes, stream_k);
    if (stream_k) return stream_k_plan(unit, p, slots);
    const int splits_wanted = decode_splits(p, block_n, unit.knobs.get("splits"), slots);
    const int tiles_per_split = (n_tiles + splits_wanted - 1) / splits_wanted;
    const int splits = (n_tiles + tiles_per_split - 1) / tiles_per_split;
    const int blocks = row_blocks(p);
    const std::size_t rows = static_cast<std::size_t>(p.batch) * p.heads_q * p.seq_q * splits;
    const std::size_t o_bytes = workspace_aligned(rows * head_dim * 4);
    LaunchPlan plan = plan_with_counters(p, blocks, o_bytes + rows * 4);
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
    return plan;
  }

 private:
  // Stream-K: one CTA per resident slot (fewer when the capacity holds fewer tiles; the kernel
  // also idles CTAs past the tiles the lengths hold), two partial slots per CTA.
  static LaunchPlan stream_k_plan(const GeneratedUnit& unit, const ProblemShape& p, int slots) {
    if (p.batch > kDecodeStreamKMaxBatch)
      throw UserError(
          fmt::format("decode_sm80 stream_k=1 takes at most {} sequences; this call has {} (use stream_k=0)",
                      kDecodeStreamKMaxBatch, p.batch));
    const int block_n = unit.knobs.get("block_n");
    const int blocks = row_blocks(p);
    const long long tiles =
        static_cast<long long>(std::max(1, (p.seq_k + block_n - 1) / block_n)) * p.batch * p.heads_kv * blocks;
    const int ctas = static_cast<int>(std::min<long long>(slots, tiles));
    const int slot_rows = std::min(kRowsPerCta, p.heads_q / p.heads_kv * p.seq_q);
    const std::size_t rows = static_cast<std::size_t>(2) * ctas * slot_rows;
    const std::size_t o_bytes = workspace_aligned(rows * unit.head_dim * 4);
    LaunchPlan plan = plan_with_counters(p, blocks, o_bytes + rows * 4);
    plan.bind_workspace = [o_bytes, slot_rows, blocks](AttnjitFwdArgs& args, std::uint64_t w) {
      auto& d = reinterpret_cast<AttnjitDecodeArgs&>(args);
      d.partial_o = reinterpret_cast<float*>(w);
      d.partial_lse = reinterpret_cast<float*>(w + o_bytes);
      d.splits = 0;
      d.tiles_per_split = 0;
      d.row_blocks = blocks;
      d.slot_rows = slot_rows;
    };
    plan.kernels.push_back({"attnjit_decode",
                            "decode",
                            {static_cast<unsigned>(ctas), 1, 1},
                            {kWarps * 32, 1, 1},
                            {},
                            unit.max_dynamic_shared_bytes});
    return plan;
  }
};

}  // namespace

int decode_splits(const ProblemShape& p, int block_n, int requested, int slots) {
  const int n_tiles = std::max(1, (p.seq_k + block_n - 1) / block_n);
  // Splits of whole tiles: asking for s gives ceil(n_tiles / ceil(n_tiles / s)) of them.
  const auto effective = [n_tiles](int s) {
    const int per_split = (n_tiles + s - 1) / s;
    return (n_tiles + per_split - 1) / per_split;
  };
  if (requested > 0) return effective(std::min(requested, n_tiles));
  // FlashDecoding's rule: the share of the last wave that is busy, waves / ceil(waves), for
  // each split count; the fewest splits within 85% of the best (each split adds partial
  // results to merge).
  const int ctas = p.batch * p.heads_kv * row_blocks(p);
  const int most = std::min(n_tiles, 128);
  const auto efficiency = [&](int s) {
    const double waves = static_cast<double>(ctas) * effective(s) / std::max(slots, 1);
    return waves / std::ceil(waves);
  };
  double best = 0.0;
  for (int s = 1; s <= most; ++s) best = std::max(best, efficiency(s));
  for (int s = 1; s <= most; ++s)
    if (efficiency(s) >= 0.85 * best) return effective(s);
  return 1;
}

bool decode_routing_enabled() {
  const char* v = std::getenv("ATTNJIT_DECODE");
  return v == nullptr || std::string(v) != "0";
}

std::unique_ptr<KernelTemplate> make_decode_sm80_template() { return std::make_unique<DecodeSm80Template>(); }

}  // namespace attnjit
