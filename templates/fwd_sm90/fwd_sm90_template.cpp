// The Hopper forward template's descriptor (see fwd_sm90_template.hpp): knobs, the unit's
// source, and a launch plan whose argument block carries the TMA descriptors of Q, K and V.
#include "templates/fwd_sm90/fwd_sm90_template.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <string>

#include "compiler/codegen.hpp"
#include "compiler/codegen/hook_emitter.hpp"
#include "compiler/error.hpp"
#include "compiler/ir.hpp"
#include "compiler/passes/run_equality.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "runtime/driver/templates.hpp"
#include "templates/abi.h"
#include "templates/block_mask/block_mask_template.hpp"
#include "templates/rope_prepass/rope_prepass_plan.hpp"

namespace attnjit {

int fwd_sm90_shared_bytes(int head_dim, int block_n, int consumers, int stages, int q_buffers) {
  return q_buffers * 64 * consumers * head_dim * 2 + 2 * stages * block_n * head_dim * 2 +
         8 * (3 * q_buffers + 4 * stages + 1) + 4 * stages + 4 * q_buffers + 1024;
}

int fwd_sm90_split_table_bytes(int block_n, int consumers) { return 16 + 2 * consumers * block_n * 4; }

namespace {

// One consumer runs two CTAs per SM (the kernel's CTAS_PER_SM), each with half the shared
// memory less the 1 KiB the SM reserves per CTA.
int ctas_per_sm(int consumers) { return consumers == 1 ? 2 : 1; }
int cta_shared_limit(int max_shared_bytes, int consumers) {
  return consumers == 1 ? max_shared_bytes / 2 - 1024 : max_shared_bytes;
}

// A knob's value, or its value when the knobs leave it out.
int knob_or(const Knobs& knobs, const char* name, int fallback) { return knobs.has(name) ? knobs.get(name) : fallback; }

int persistent_knob(const Knobs& knobs) { return knob_or(knobs, "persistent", 0); }

// A document mask's ids read as per-row runs (compiler/passes/run_equality.hpp), by default
// (H200, 2026-12-02, S=4096 TFLOP/s off / on, 3 documents: D=128 document_causal 294 -> 321,
// with a prebuilt block mask 312 -> 362, 8 documents 210 -> 208, at 16k 445 -> 462, document
// 401 -> 423; D=64 document_causal 131 -> 167, document 199 -> 253; D=256 document_causal
// 346 -> 381, one round).
int runs_knob(const Knobs& knobs) { return knob_or(knobs, "doc_runs", 1); }

int item_overlap_knob(const Knobs& knobs) { return knob_or(knobs, "item_overlap", 0); }

int last_in_word_knob(const Knobs& knobs) { return knob_or(knobs, "last_in_word", 0); }

int doc_items_knob(const Knobs& knobs) { return knob_or(knobs, "doc_items", 0); }

int ragged_items_knob(const Knobs& knobs) { return knob_or(knobs, "ragged_items", 0); }

// A ragged unit on the persistent schedule takes its items from a list (templates/ragged_items.cuh):
// only query blocks with rows, the sequences longest first. Knob 1: a pre-pass writes it; 2: for a
// batch of at most kRaggedListHere sequences the kernel builds it in shared memory (no launch).
bool ragged_items_on(const Knobs& knobs, bool ragged) {
  return ragged && persistent_knob(knobs) == 1 && ragged_items_knob(knobs) >= 1;
}

constexpr int kRaggedListHere = 32;  // a warp's lanes, one sequence each (AJ_RAGGED_LIST_HERE)

constexpr const char* kRaggedItemsKernelName = "attnjit_ragged_items";

// The pre-pass's list: the number of sequences and of items (16 bytes with the padding), then
// (sequence, first item) per sequence.
std::size_t ragged_items_bytes(const ProblemShape& p) { return 16 + 8 * static_cast<std::size_t>(p.batch); }

// Work items aligned to documents (templates/doc_items.cuh): for a document mask
// `ids[b, q] == ids[b, kv] && rest` read through its runs on the persistent schedule.
bool doc_items_on(const Knobs& knobs, const HookFacts& facts, bool ragged) {
  return doc_items_knob(knobs) == 1 && persistent_knob(knobs) == 1 && runs_knob(knobs) == 1 && facts.document_rest &&
         facts.runs_slot >= 0 && !ragged;
}

constexpr const char* kDocItemsKernelName = "attnjit_doc_items";

// The pre-pass's list: a count (16 bytes with its padding), then 16 bytes per entry, at most
// ceil(seq / block_m) + seq entries per batch row (a document of n rows has ceil(n / block_m)).
std::size_t doc_items_bytes(const ProblemShape& p, int block_m) {
  const std::size_t per_row = static_cast<std::size_t>((p.seq_q + block_m - 1) / block_m + p.seq_q);
  return 16 + 16 * static_cast<std::size_t>(p.batch) * per_row;
}

// Q buffers of a plan: two for a persistent kernel where they fit beside the ring (the next
// item's Q lands while this one's is in use), else one.
int q_buffers(const Knobs& knobs, int head_dim, int max_shared_bytes) {
  if (!persistent_knob(knobs)) return 1;
  const int consumers = knobs.get("consumers");
  const int two = fwd_sm90_shared_bytes(head_dim, knobs.get("block_n"), consumers, knobs.get("stages"), 2);
  return two <= cta_shared_limit(max_shared_bytes, consumers) ? 2 : 1;
}

// Registers a consumer thread may hold after setmaxnreg (templates/fwd_sm90.cuh), less what the
// indexing, the softmax and the hooks need beside the S, P and O accumulators.
int accumulator_budget(int consumers) { return consumers == 1 ? 232 - 40 : (consumers == 2 ? 240 - 40 : 160 - 32); }

class FwdSm90Template : public KernelTemplate {
 public:
  static constexpr const char* kKernelName = "attnjit_fwd";

  std::string name() const override { return kFwdSm90TemplateName; }
  std::string description() const override {
    return "forward for Hopper: TMA ring on mbarriers, wgmma, producer + 2-3 consumer warpgroups, softmax "
           "overlapped with P V; sm_90a, head dims 64/128/256";
  }
  std::vector<std::string> archs() const override { return {"sm_90a"}; }
  int priority() const override { return 1; }

  Support can_implement(const TemplateRequest& r) const override {
    if (r.ragged) {
      if (r.variant->rope())
        return Support::no(
            "ragged batches with RoPE are served by fwd_sm80 (the pre-passes here write one padded "
            "layout)");
      if (Support mask = BlockMaskTemplate::ragged_support(r); !mask.supported()) return mask;
    }
    if (r.head_dim != 64 && r.head_dim != 128 && r.head_dim != 256)
      return Support::no(fmt::format("head_dim {} is not 64, 128 or 256", r.head_dim));
    return rope_fits_head(r);
  }

  std::vector<KnobSpec> knob_space(int) const override {
    return {
        {"block_n", {64, 80, 96, 112, 128, 144, 160, 176}, "keys per kv tile"},
        {"consumers",
         {2, 3, 1},
         "consumer warpgroups, 64 query rows each (block_m = 64 * consumers); 1: two CTAs per SM instead of turns"},
        {"stages", {2, 3}, "K/V tiles in flight in the shared-memory ring"},
        {"pingpong", {1, 0}, "consumers take turns issuing their GEMMs, so one's softmax overlaps another's GEMMs"},
        {"persistent",
         {0, 1},
         "1: a CTA per SM (two with one consumer) takes query blocks from a counter, the next block's Q and first "
         "K / V loading while this one ends"},
        {"item_overlap",
         {0, 1},
         "with persistent 1 and two Q buffers: 1 issues the next item's first S = Q K^T in the turn of this item's "
         "last P V, so the epilogue runs while the tensor cores compute it; no effect otherwise. Opt-in until "
         "measured. Not tuned unless --only names it",
         /*tuned=*/false},
        {"last_in_word",
         {0, 1},
         "1: an item's last tile says so in its word, so the consumers end the item without waiting for an end "
         "stage (only an item without tiles has one); no effect with item_overlap 1. Opt-in until measured. Not "
         "tuned unless --only names it",
         /*tuned=*/false},
        {"doc_runs",
         {1, 0},
         "document masks (ids[b, q] == ids[b, kv]): 1 reads each row's run of equal ids from a pre-pass, so a partial "
         "tile loads no key's id where the ids are sorted; no effect on other masks. Not tuned unless --only names it",
         /*tuned=*/false},
        {"doc_items",
         {1, 0},
         "document masks (ids[b, q] == ids[b, kv] && rest) with doc_runs 1 and persistent 1: 1 starts each query "
         "block and its keys at its document's first row (a pre-pass lists them), so tiles hold one document and "
         "only `rest` is masked; no effect otherwise. Default where the score_mod reads no tensor (D=64 and 128). "
         "Not tuned unless --only names it",
         /*tuned=*/false},
        {"ragged_items",
         {2, 1, 0},
         "ragged batches with persistent 1: 1 takes the work items from a pre-pass's list (only query blocks with "
         "rows, the sequences longest first), 2 is 1 with the list built by the kernel itself for a batch of at most "
         "32 sequences (no pre-pass launch), 0 walks the longest sequence's blocks for every sequence in batch order "
         "and skips the missing ones; no effect otherwise. Not tuned unless --only names it",
         /*tuned=*/false}};
  }

  Knobs default_knobs(const TemplateRequest& r) const override {
    Knobs k = default_schedule(r);
    // Persistent (the Q thread fetching items and Q a whole item ahead, late in the last two
    // waves) where it was measured to win, H200, 2026-12-02, TFLOP/s with the knob off / on:
    // causal D=128 S=1k 401.5 / 414.8, S=4k 575.5 / 600.2, causal D=64 S=1k (one consumer)
    // 290.8 / 316.4; dense S=1k D=128 562.6 / 572.0 and D=64 403.2 / 428.2 (Q thread without the
    // late fetch); ALiBi against the previous persistent loop 375.1 -> 392.4 (1k), 521.1 -> 532.8
    // (4k). Lost: dense D=128 S=4k 662.8 / 630.4 (one round); causal D=64 S=4k (three
    // consumers) 421.2 / 414.0 without the late fetch, not measured with it. So: on for a split
    // score_mod, a hinted S <= 1024, or a mask at D=128 (soft-cap, window and prefix-LM take it
    // there unmeasured; the window and prefix-LM spill 28 bytes in the producer with it). Off
    // where a hook reads a tensor (forget_gate: the older loop lost there, not measured since;
    // document masks take it with document items, below) and at D=256 (spills). Ragged units:
    // below. And only for a hinted problem whose rows span at most 32 key tiles: causal D=128 at
    // S=16384 gained nothing (686.5 / 679.1, H200, 2026-12-02).
    const bool score_reads_tensor =
        r.variant != nullptr && !ir::index_uses(r.variant->score_mod().node()).tensors.empty();
    const bool split = r.variant != nullptr && score_mod_splits(r.variant->score_mod().node()) && !score_reads_tensor;
    const bool reads_tensor =
        score_reads_tensor || (r.variant != nullptr && !ir::index_uses(r.variant->mask_mod().node()).tensors.empty());
    const bool masked = r.variant != nullptr && r.variant->has_mask();
    const bool short_rows = r.problem && r.problem->seq_q <= 1024;
    const bool one_chunk = r.problem && r.problem->seq_k <= 32 * k.get("block_n");
    // Work items aligned to documents, on the persistent schedule, for a document mask
    // (`ids[b, q] == ids[b, kv] && rest`) whose score_mod reads no tensor, at any length (rows
    // span one document). H200, TFLOP/s per pair, 3 documents unless said, default (doc_items 0,
    // persistent 0) / doc_items 1: document_causal S=4096 D=128 319.4 / 346.6, D=64 214.9 /
    // 255.9, 8 documents 210.7 / 206.5, S=8192 420.5 / 445.9, S=16384 6 documents 401.0 / 438.2
    // (2026-12-02), 3 documents 506.0 / 530.4 (2026-12-03). Not at D=256 (not measured).
    const bool doc_items = r.variant != nullptr && !score_reads_tensor && r.head_dim != 256 && !r.ragged &&
                           ir::document_rest(r.variant->mask_mod().node()).has_value();
    // Ragged units at D=128 and 64 (lengths 3001, 517, 4096, 1234, 2048, 777, 3500, 1999, H200,
    // 2026-12-03, persistent 0 / 1, best of 3 rounds, TFLOP/s: H=16 D=128 causal 513.8 / 537.1,
    // dense 619.9 / 640.2; H=32 D=64 causal_bottom_right 358.7 / 365.2, dense 469.8 / 490.6). A
    // reading, not profiled: a CTA per SM taking query blocks from the queue evens out the work of
    // sequences of unequal length, which a grid over the longest one does not. Not for a longest
    // sequence of at most 1024 at D=64 (one consumer: neither measured nor tested ragged).
    const bool ragged_gain = r.ragged && (r.head_dim == 128 || (r.head_dim == 64 && !short_rows));
    const bool persistent =
        doc_items || (one_chunk && r.head_dim != 256 && !reads_tensor &&
                      (r.ragged ? ragged_gain : split || short_rows || (masked && r.head_dim == 128)));
    k.set("persistent", persistent ? 1 : 0);
    // Persistent at D=128: two stages, so that a second Q buffer fits beside the ring (the next
    // item's Q lands during this one), rather than the third K / V tile that won without the
    // persistent schedule (H200, 2026-12-03, stages 3 / 2, best of 3 rounds, TFLOP/s: causal
    // S=1024 416.1 / 434.3, S=512 287.7 / 316.9, dense S=1024 573.5 / 586.6).
    if (persistent && r.head_dim == 128) k.set("stages", 2);
    k.set("doc_runs", runs_knob(k));
    k.set("doc_items", doc_items ? 1 : 0);
    k.set("item_overlap", 0);
    k.set("last_in_word", 0);
    // Ragged items listed longest first (lengths 3001, 517, 4096, 1234, 2048, 777, 3500, 1999,
    // H=16 D=128 causal, H200, 2026-12-03: the same batch given longest first ran 528 -> 554
    // TFLOP/s; ncu: the SMs' busy cycles 90% of the busiest's in batch order, 97% longest first),
    // by the forward itself for up to 32 sequences (knob 0 / 1 / 2, same call: 538.9 / 562.5 /
    // 567.6, padded 623.7).
    k.set("ragged_items", 2);
    return k;
  }

 private:
  Knobs default_schedule(const TemplateRequest& r) const {
    // At D=64 the softmax weighs as much as the GEMMs: a third consumer hides it (H200,
    // 2026-11-29: dense 375 -> 475 TFLOP/s, causal 302 -> 327 at S=4096).
    if (r.head_dim == 256) return Knobs{{"block_n", 80}, {"consumers", 2}, {"stages", 2}, {"pingpong", 1}};
    // Short sequences (hinted): 1024 rows are 5.3 blocks of 192 (the sixth a third full) but 16
    // of 64, and one consumer per CTA with two CTAs per SM overlaps one CTA's prologue and
    // epilogue with the other's main loop (H200, S=1024: 3 -> 2 consumers, 2026-11-29: causal
    // 239 -> 261, dense 380 -> 390; 2 -> 1, 2026-11-30: causal 276 -> 294, dense 393 -> 418).
    if (r.head_dim == 64 && r.problem && r.problem->seq_q <= 1024)
      return Knobs{{"block_n", 128}, {"consumers", 1}, {"stages", 2}, {"pingpong", 1}};
    // A mask that reads a tensor (documents) at D=64: two consumers, 128-row query blocks whose
    // short rows waste less (H200, 2026-12-02, document_causal S=4096, 3 documents: 3 -> 2
    // consumers 166 -> 190 TFLOP/s; not measured on other such masks).
    const bool mask_reads_tensor =
        r.variant != nullptr && !ir::index_uses(r.variant->mask_mod().node()).tensors.empty();
    if (r.head_dim == 64 && mask_reads_tensor)
      return Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 2}, {"pingpong", 1}};
    if (r.head_dim == 64) return Knobs{{"block_n", 128}, {"consumers", 3}, {"stages", 2}, {"pingpong", 1}};
    // D=128, short sequences (hinted), plain scores: a third K/V tile in flight (H200,
    // 2026-11-30, S=1024: causal 401 -> 409, dense 569 -> 568; S=4096 causal 580 -> 584; 16k
    // 684 -> 680). Not with a score_mod: a split one loses its key-part tables to the third
    // stage (alibi_causal 500 -> 471 at S=4096). Not on the persistent schedule either
    // (default_knobs: two Q buffers win there), so only where that is off (a ragged unit).
    const bool plain_scores = r.variant == nullptr || r.variant->score_mod().node()->op == ir::Op::Score;
    if (r.head_dim == 128 && r.problem && r.problem->seq_q <= 1024 && plain_scores)
      return Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 3}, {"pingpong", 1}};
    return Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 2}, {"pingpong", 1}};
  }

 public:
  Support check_knobs(const Knobs& knobs, int head_dim, int max_shared_bytes) const override {
    const int block_n = knobs.get("block_n"), consumers = knobs.get("consumers"), stages = knobs.get("stages");
    if (block_n % 16 != 0 || block_n < 16 || block_n > 256)
      return Support::invalid(fmt::format("block_n {} is not a multiple of 16 in [16, 256]", block_n));
    if (consumers < 1 || consumers > 3)
      return Support::invalid(fmt::format("consumers {} is not 1, 2 or 3", consumers));
    if (stages < 2 || stages > 4) return Support::invalid(fmt::format("stages {} is not in 2..4", stages));
    for (const char* name : {"pingpong", "persistent", "doc_runs", "doc_items", "item_overlap", "last_in_word"})
      if (const int p = knob_or(knobs, name, 0); p != 0 && p != 1)
        return Support::invalid(fmt::format("{} {} is not 0 or 1", name, p));
    if (const int r = knob_or(knobs, "ragged_items", 2); r < 0 || r > 2)
      return Support::invalid(fmt::format("ragged_items {} is not 0, 1 or 2", r));
    // S (block_n / 2), P (block_n / 4) and O (head_dim / 2) live in a consumer's registers.
    const int accumulators = block_n / 2 + block_n / 4 + head_dim / 2;
    if (accumulators > accumulator_budget(consumers))
      return Support::invalid(fmt::format(
          "block_n {} with head_dim {} needs {} accumulator registers per thread; {} consumers leave {} (use a "
          "smaller block_n or 2 consumers)",
          block_n, head_dim, accumulators, consumers, accumulator_budget(consumers)));
    const int bytes = fwd_sm90_shared_bytes(head_dim, block_n, consumers, stages, 1);
    if (bytes > max_shared_bytes)
      return Support::invalid(fmt::format(
          "block_n {}, consumers {}, stages {} at head_dim {} need {} bytes of shared memory; the limit is {}", block_n,
          consumers, stages, head_dim, bytes, max_shared_bytes));
    // One consumer is there to run two CTAs per SM: both must fit (1 KB per CTA is reserved).
    if (consumers == 1 && bytes > cta_shared_limit(max_shared_bytes, consumers))
      return Support::invalid(fmt::format(
          "consumers 1 runs two CTAs per SM: block_n {}, stages {} at head_dim {} need {} bytes of shared memory "
          "each; at most {} fit twice (use a smaller block_n)",
          block_n, stages, head_dim, bytes, cta_shared_limit(max_shared_bytes, consumers)));
    return Support::yes();
  }

  std::vector<HookPrototype> hooks() const override { return forward_hook_prototypes(); }

  GeneratedUnit generate(const TemplateRequest& r) const override {
    const int block_n = r.knobs.get("block_n"), consumers = r.knobs.get("consumers"), stages = r.knobs.get("stages");
    const int persistent = persistent_knob(r.knobs);
    const int queries = q_buffers(r.knobs, r.head_dim, max_shared_memory_for_arch(r.arch));
    EmittedHooks emitted;
    GeneratedUnit unit = start_unit(name(), r, emitted, runs_knob(r.knobs) == 1);
    unit.max_dynamic_shared_bytes = fwd_sm90_shared_bytes(r.head_dim, block_n, consumers, stages, queries);
    // A split score_mod's key parts go through per-tile tables where they fit beside the ring
    // (not at D=128 with 3 stages of 128 keys); elsewhere score_mod runs per element.
    const int limit = cta_shared_limit(max_shared_memory_for_arch(r.arch), consumers);
    const bool split_tables = unit.facts.score_split &&
                              unit.max_dynamic_shared_bytes + fwd_sm90_split_table_bytes(block_n, consumers) <= limit;
    if (split_tables) unit.max_dynamic_shared_bytes += fwd_sm90_split_table_bytes(block_n, consumers);
    unit.kernel_names = {kKernelName};
    if (unit.facts.mask_reads_tensor)
      unit.kernel_names.insert(unit.kernel_names.begin(), BlockMaskTemplate::kKernelName);
    // RoPE: Q and K turned once into the workspace by pre-passes; the TMA copies those.
    if (unit.facts.has_rope) unit.kernel_names.insert(unit.kernel_names.begin(), {kRopeQKernelName, kRopeKKernelName});
    if (unit.facts.runs_slot >= 0)
      unit.kernel_names.insert(unit.kernel_names.begin(), BlockMaskTemplate::kRunsKernelName);
    const bool doc_items = doc_items_on(r.knobs, unit.facts, r.ragged);
    if (doc_items) unit.kernel_names.insert(unit.kernel_names.end() - 1, kDocItemsKernelName);
    const bool ragged_items = ragged_items_on(r.knobs, r.ragged);
    if (ragged_items) unit.kernel_names.insert(unit.kernel_names.end() - 1, kRaggedItemsKernelName);

    std::vector<std::pair<std::string, std::string>> macros = {
        {"AJ_HEAD_DIM", std::to_string(r.head_dim)},   {"AJ_BLOCK_M", std::to_string(64 * consumers)},
        {"AJ_BLOCK_N", std::to_string(block_n)},       {"AJ_CONSUMERS", std::to_string(consumers)},
        {"AJ_STAGES", std::to_string(stages)},         {"AJ_PINGPONG", std::to_string(r.knobs.get("pingpong"))},
        {"AJ_PERSISTENT", std::to_string(persistent)}, {"AJ_Q_BUFFERS", std::to_string(queries)},
    };
    if (unit.facts.has_rope) macros.emplace_back("AJ_ROPE_Q_PREPASS", "1");
    if (r.ragged) {  // per-sequence offsets and lengths (Kernel::forward_ragged)
      macros.emplace_back("AJ_RAGGED", "1");
      macros.emplace_back("AJ_PER_SEQUENCE_LENGTHS", "1");
    }
    macros.emplace_back("AJ_SPLIT_TABLES", split_tables ? "1" : "0");
    if (doc_items) macros.emplace_back("AJ_DOC_ITEMS", "1");
    if (ragged_items) macros.emplace_back("AJ_RAGGED_ITEMS", "1");
    if (ragged_items && ragged_items_knob(r.knobs) == 2)
      macros.emplace_back("AJ_RAGGED_LIST_HERE", std::to_string(kRaggedListHere));
    const bool item_overlap = item_overlap_knob(r.knobs) == 1 && persistent == 1 && queries == 2 && !r.ragged;
    if (item_overlap) macros.emplace_back("AJ_ITEM_OVERLAP", "1");
    if (last_in_word_knob(r.knobs) == 1 && !item_overlap) macros.emplace_back("AJ_LAST_IN_WORD", "1");
    for (auto& m : BlockMaskTemplate::forward_fact_macros(r.dtype, unit.facts)) macros.push_back(std::move(m));
    // tanh as one MUFU instruction (tanh.approx): see common.cuh's aj_tanh for its error.
    unit.body = unit_preamble({{"AJ_TANH_APPROX", "1"}});
    unit.body += macro_block("fwd_sm90 knobs and the variant's facts", macros);
    unit.body += hook_section(hooks(), emitted);
    unit.body += runtime::load_template("sm80_dtype.cuh");
    unit.body += runtime::load_template("sm90_primitives.cuh");
    unit.body += wgmma_wrappers(r.dtype, block_n, r.head_dim);
    unit.body += runtime::load_template("fwd_sm90.cuh");
    unit.body += runtime::load_template("rope_pairs.cuh");
    unit.body += runtime::load_template("rope_prepass.cuh");
    unit.body += BlockMaskTemplate::forward_section(unit.facts);
    unit.body += BlockMaskTemplate::runs_section(unit.facts);
    if (doc_items) unit.body += runtime::load_template("doc_items.cuh");
    if (ragged_items) unit.body += runtime::load_template("ragged_items.cuh");
    return unit;
  }

  LaunchPlan launch_plan(const GeneratedUnit& unit, const ProblemShape& p) const override {
    const int block_n = unit.knobs.get("block_n"), consumers = unit.knobs.get("consumers");
    const int block_m = 64 * consumers;
    const int head_dim = unit.head_dim;
    LaunchPlan plan;
    const auto runs = [&](const char* kernel) {
      return std::find(unit.kernel_names.begin(), unit.kernel_names.end(), kernel) != unit.kernel_names.end();
    };
    // (a small batch's ragged items are listed by the forward itself with ragged_items 2)
    const bool doc_items = runs(kDocItemsKernelName);
    const bool ragged_items =
        runs(kRaggedItemsKernelName) && !(ragged_items_knob(unit.knobs) == 2 && p.batch <= kRaggedListHere);
    // Workspace: [Q turned by RoPE | K turned | document items | tile classes of the block mask],
    // each part 256-byte aligned; the block mask last (a prebuilt one replaces it).
    std::size_t rope_q_bytes = 0, rope_k_bytes = 0;
    if (unit.facts.has_rope) {
      rope_q_bytes = workspace_aligned(static_cast<std::size_t>(p.batch) * p.heads_q * p.seq_q * head_dim * 2);
      rope_k_bytes = workspace_aligned(static_cast<std::size_t>(p.batch) * p.heads_kv * p.seq_k * head_dim * 2);
      plan.kernels.push_back(rope_prepass_launch(kRopeQKernelName, "rope_q", p.seq_q, p.heads_q, p.batch, head_dim));
      plan.kernels.push_back(rope_prepass_launch(kRopeKKernelName, "rope_k", p.seq_k, p.heads_kv, p.batch, head_dim));
    }
    std::optional<BlockMaskLayout> mask;
    if (unit.facts.mask_reads_tensor) {
      mask = BlockMaskTemplate::layout(unit.facts, block_m, block_n, p);
      // (with document items the tiles come from interval analysis inside each document: a
      // block mask built for this kernel carries only its runs)
      if (!doc_items) plan.kernels.push_back(BlockMaskTemplate::launch(*mask));
      plan.block_mask_bytes = mask->bytes;
      plan.bind_block_mask = [l = *mask](AttnjitFwdArgs& args, std::uint64_t classes) {
        BlockMaskTemplate::bind(args, classes, l);
      };
    }
    // (a unit lists document items or ragged items, never both: documents are not ragged)
    const std::size_t items_bytes = doc_items      ? workspace_aligned(doc_items_bytes(p, block_m))
                                    : ragged_items ? workspace_aligned(ragged_items_bytes(p))
                                                   : 0;
    plan.workspace_bytes = rope_q_bytes + rope_k_bytes + items_bytes + (mask ? mask->bytes : 0);
    if (plan.workspace_bytes > 0)
      plan.bind_workspace = [rope_q_bytes, rope_k_bytes, items_bytes, ragged_items, mask](AttnjitFwdArgs& args,
                                                                                          std::uint64_t w) {
        if (rope_q_bytes > 0) {
          args.rope_q = reinterpret_cast<void*>(w);
          args.rope_k = reinterpret_cast<void*>(w + rope_q_bytes);
        }
        if (items_bytes > 0) {
          int* const items = reinterpret_cast<int*>(w + rope_q_bytes + rope_k_bytes);
          auto& a = reinterpret_cast<AttnjitFwdSm90Args&>(args);
          (ragged_items ? a.ragged_items : a.doc_items) = items;
        }
        if (mask) BlockMaskTemplate::bind(args, w + rope_q_bytes + rope_k_bytes + items_bytes, *mask);
      };
    BlockMaskTemplate::add_runs(unit.facts, p, plan);
    if (doc_items) {  // after the runs, before the forward
      KernelLaunch list;
      list.kernel = kDocItemsKernelName;
      list.role = "doc_items";
      list.block = {1024, 1, 1};
      plan.kernels.push_back(list);
    }
    if (ragged_items) {
      KernelLaunch list;
      list.kernel = kRaggedItemsKernelName;
      list.role = "ragged_items";
      list.block = {1024, 1, 1};
      plan.kernels.push_back(list);
    }
    plan.args_bytes = sizeof(AttnjitFwdSm90Args);
    plan.finish_args = [block_m, block_n, head_dim](void* block) -> std::string {
      auto& a = *static_cast<AttnjitFwdSm90Args*>(block);
      const AttnjitFwdArgs& f = a.fwd;
      struct Operand {
        const char* name;
        const void* data;
        const long long* stride;
        int heads, seq;
        unsigned rows;
        AttnjitTensorMap* map;
      };
      // With RoPE, Q and K as the pre-passes wrote them: contiguous [batch, heads, seq, D].
      const long long rope_q_stride[3] = {static_cast<long long>(f.heads_q) * f.seq_q * head_dim,
                                          static_cast<long long>(f.seq_q) * head_dim, head_dim};
      const long long rope_k_stride[3] = {static_cast<long long>(f.heads_kv) * f.seq_k * head_dim,
                                          static_cast<long long>(f.seq_k) * head_dim, head_dim};
      const bool rope = f.rope_q != nullptr;
      // A ragged batch: the packed tokens as one sequence (its batch stride is 0, extent 1).
      const bool ragged = f.cu_seqlens_q != nullptr;
      const int q_rows = ragged ? f.total_q : f.seq_q, kv_rows = ragged ? f.total_k : f.seq_k;
      const Operand operands[] = {
          {"q", rope ? f.rope_q : f.q, rope ? rope_q_stride : f.q_stride, f.heads_q, q_rows,
           static_cast<unsigned>(block_m), &a.tma_q},
          {"k", rope ? f.rope_k : f.k, rope ? rope_k_stride : f.k_stride, f.heads_kv, kv_rows,
           static_cast<unsigned>(block_n), &a.tma_k},
          {"v", f.v, f.v_stride, f.heads_kv, kv_rows, static_cast<unsigned>(block_n), &a.tma_v}};
      for (const Operand& o : operands) {
        runtime::TensorMap4d t;
        t.address = reinterpret_cast<std::uint64_t>(o.data);
        const std::uint64_t extent[3] = {static_cast<std::uint64_t>(o.seq), static_cast<std::uint64_t>(o.heads),
                                         static_cast<std::uint64_t>(ragged ? 1 : f.batch)};
        t.dims[0] = static_cast<std::uint64_t>(head_dim);
        // Strides of [seq, head, batch] in bytes; a dimension of extent 1 is never stepped, so
        // any stride will do there: give it a legal one.
        std::uint64_t previous = static_cast<std::uint64_t>(head_dim) * 2;
        for (int i = 0; i < 3; ++i) {
          const long long s = o.stride[2 - i];
          t.dims[i + 1] = extent[i];
          t.strides_bytes[i] = extent[i] == 1 || s <= 0 ? previous : static_cast<std::uint64_t>(s) * 2;
          previous = t.strides_bytes[i] * extent[i];
        }
        t.box_inner = 64;
        t.box_rows = o.rows;
        if (std::string why = runtime::encode_tensor_map(o.map, t); !why.empty())
          return fmt::format("the TMA cannot read tensor {}: {}", o.name, why);
      }
      return {};
    };
    KernelLaunch fwd;
    fwd.kernel = kKernelName;
    fwd.role = "forward";
    fwd.grid = {static_cast<unsigned>((p.seq_q + block_m - 1) / block_m), static_cast<unsigned>(p.heads_q),
                static_cast<unsigned>(p.batch)};
    if (persistent_knob(unit.knobs)) {
      // As many CTAs as fit at once (or items), each taking items until the counter runs out.
      const long long items = static_cast<long long>(fwd.grid.x) * fwd.grid.y * fwd.grid.z;
      const long long resident = static_cast<long long>(p.multiprocessors_or_default()) * ctas_per_sm(consumers);
      fwd.grid = {static_cast<unsigned>(std::max(1LL, std::min(items, resident))), 1, 1};
      plan.zeroed_bytes = 2 * sizeof(int);
      plan.bind_zeroed = [](AttnjitFwdArgs& args, std::uint64_t counters) {
        // Bound through the forward block, the first member of AttnjitFwdSm90Args.
        reinterpret_cast<AttnjitFwdSm90Args&>(args).work_counters = reinterpret_cast<int*>(counters);
      };
    }
    fwd.block = {static_cast<unsigned>(128 * (consumers + 1)), 1, 1};
    fwd.dynamic_shared_bytes = unit.max_dynamic_shared_bytes;
    plan.kernels.push_back(fwd);
    return plan;
  }
};

}  // namespace

std::unique_ptr<KernelTemplate> make_fwd_sm90_template() { return std::make_unique<FwdSm90Template>(); }

}  // namespace attnjit
