// CPU reference attention (see reference.hpp).
#include "runtime/reference/reference.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <span>

#include "compiler/mask_analysis.hpp"
#include "compiler/pipeline.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/reference/reference_problem.hpp"

namespace attnjit {
namespace {

// A row selection must name, for every pair, sorted distinct rows in [0, seq_q).
void check_selection(const RowSelection& selection, int pairs, int seq_q) {
  if (selection.all()) return;
  if (selection.rows.size() != static_cast<std::size_t>(pairs))
    throw UserError(
        fmt::format("row selection has {} lists; expected one per (b, h) pair: {}", selection.rows.size(), pairs));
  for (std::size_t p = 0; p < selection.rows.size(); ++p) {
    const auto& rows = selection.rows[p];
    for (std::size_t i = 0; i < rows.size(); ++i)
      if (rows[i] < 0 || rows[i] >= seq_q || (i > 0 && rows[i] <= rows[i - 1]))
        throw UserError(
            fmt::format("row selection of pair {} holds row {} at position {}; rows must be sorted, "
                        "distinct and in [0, {})",
                        p, rows[i], i, seq_q));
  }
}

}  // namespace

using namespace reference_internal;

double ReferenceResult::o_at(int b, int h, int q, int d) const {
  return o[((static_cast<std::size_t>(b) * heads_q + h) * seq_q + q) * head_dim_v + d];
}
double ReferenceResult::lse_at(int b, int h, int q) const {
  return lse[(static_cast<std::size_t>(b) * heads_q + h) * seq_q + q];
}

ReferenceResult reference_attention(const Variant& variant, const DLTensor& q, const DLTensor& k, const DLTensor& v,
                                    const Bindings& bindings, const ReferenceOptions& options) {
  const Problem problem = check_problem(variant, q, k, v, bindings, options.scale);
  const int batch = problem.batch, heads_q = problem.heads_q, heads_kv = problem.heads_kv;
  const int seq_q = problem.seq_q, seq_k = problem.seq_k, dim = problem.dim, dim_v = problem.dim_v;
  const double scale = problem.scale;
  const ir::LoweredExprs lowered = ir::lower({{"score_mod", variant.score_mod().node(), ir::Type::Float},
                                              {"mask_mod", variant.mask_mod().node(), ir::Type::Bool}});
  const ir::EvalEnv env = make_env(variant, problem, bindings);
  if (!options.seq_lens_k.empty() && static_cast<int>(options.seq_lens_k.size()) != batch)
    throw UserError(fmt::format("seq_lens_k has {} entries for a batch of {}", options.seq_lens_k.size(), batch));
  const std::optional<DLTensor> gate = bound_gate(variant, problem, bindings);

  ReferenceResult out;
  out.batch = batch;
  out.heads_q = heads_q;
  out.seq_q = seq_q;
  out.head_dim_v = dim_v;
  out.rows = options.rows;
  check_selection(out.rows, batch * heads_q, seq_q);
  // Every row is written below (a fully masked one with O = 0, LSE = -inf); rows left out of
  // a selection stay NaN, so reading one by mistake cannot pass a comparison.
  const double unset = std::numeric_limits<double>::quiet_NaN();
  out.o.assign(static_cast<std::size_t>(batch) * heads_q * seq_q * dim_v, unset);
  out.lse.assign(static_cast<std::size_t>(batch) * heads_q * seq_q, unset);

  const NaivePrecision naive = options.naive;
  const auto round_storage = [naive](double x) { return round_to_naive_storage(naive, x); };
  const auto gs = gate ? dlpack_strides(*gate) : std::vector<std::int64_t>{};

  // Rows of one (b, h) pair; rows are independent, so threads split pairs and, when there
  // are fewer pairs than threads, chunks of a pair's rows.
  const auto compute_head = [&](int b, int h, std::span<const int> rows, ir::EvalEnv& env,
                                std::vector<ir::Value>& scratch, std::vector<ir::Value>& roots) {
    const int hk = h / (heads_q / heads_kv);
    // This sequence's keys: all of K, or its own count in a KV-cache problem.
    const int keys =
        options.seq_lens_k.empty() ? seq_k : std::clamp(options.seq_lens_k[static_cast<std::size_t>(b)], 0, seq_k);
    env.kv_len = keys;
    // RoPE puts query i at i + kv_len - q_len with this sequence's kv_len.
    const auto qrows = load_rows(q, b, h, seq_q, dim, variant.rope(), problem.q_position() - seq_k + keys, naive);
    const auto krows = load_rows(k, b, hk, seq_k, dim, variant.rope(), problem.k_position(), naive);
    const auto vrows = widen_rows(v, b, hk, seq_k, dim_v);
    std::vector<double> logits(static_cast<std::size_t>(seq_k));
    std::vector<double> acc(static_cast<std::size_t>(dim_v));
    for (const int i : rows) {
      env.b = b, env.h = h, env.q = i;
      double max_logit = -std::numeric_limits<double>::infinity();
      for (int j = 0; j < keys; ++j) {
        const double* qr = &qrows[static_cast<std::size_t>(i) * dim];
        const double* kr = &krows[static_cast<std::size_t>(j) * dim];
        double dot = 0.0;
        if (naive == NaivePrecision::None) {
          for (int d = 0; d < dim; ++d) dot += qr[d] * kr[d];
        } else {
          float f = 0.0f;
          for (int d = 0; d < dim; ++d) f += static_cast<float>(qr[d]) * static_cast<float>(kr[d]);
          dot = f;
        }
        env.kv = j;
        env.score = naive == NaivePrecision::None ? scale * dot : static_cast<float>(static_cast<float>(scale) * dot);
        ir::evaluate_program(lowered.program, env, scratch, roots);
        double logit = roots[1].b ? roots[0].f : -std::numeric_limits<double>::infinity();
        if (naive != NaivePrecision::None) logit = static_cast<float>(logit);
        logits[static_cast<std::size_t>(j)] = logit;
        max_logit = std::max(max_logit, logit);
      }
      if (max_logit == -std::numeric_limits<double>::infinity()) {  // fully masked: O = 0, LSE = -inf
        std::fill_n(&out.o[((static_cast<std::size_t>(b) * heads_q + h) * seq_q + i) * dim_v], dim_v, 0.0);
        out.lse[(static_cast<std::size_t>(b) * heads_q + h) * seq_q + i] = -std::numeric_limits<double>::infinity();
        continue;
      }
      double denom = 0.0;
      for (int j = 0; j < keys; ++j) {
        double& l = logits[static_cast<std::size_t>(j)];
        l = naive == NaivePrecision::None ? std::exp(l - max_logit) : std::exp(static_cast<float>(l - max_logit));
        denom += l;
      }
      if (naive != NaivePrecision::None) denom = static_cast<float>(denom);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int j = 0; j < keys; ++j) {
        const double p = naive == NaivePrecision::None ? logits[static_cast<std::size_t>(j)]
                                                       : round_storage(logits[static_cast<std::size_t>(j)] / denom);
        if (p == 0.0) continue;
        const double* vr = &vrows[static_cast<std::size_t>(j) * dim_v];
        for (int d = 0; d < dim_v; ++d) acc[d] += p * vr[d];
      }
      double* orow = &out.o[((static_cast<std::size_t>(b) * heads_q + h) * seq_q + i) * dim_v];
      for (int d = 0; d < dim_v; ++d) orow[d] = naive == NaivePrecision::None ? acc[d] / denom : acc[d];
      out.lse[(static_cast<std::size_t>(b) * heads_q + h) * seq_q + i] = max_logit + std::log(denom);
      if (gate) {
        for (int d = 0; d < dim_v; ++d) {
          std::int64_t off = b * gs[0] + h * gs[1] + i * gs[2] + (gate->ndim == 4 ? d * gs[3] : 0);
          orow[d] *= 1.0 / (1.0 + std::exp(-load_as_double(*gate, off)));
        }
      }
      for (int d = 0; d < dim_v; ++d) orow[d] = round_storage(orow[d]);
    }
  };

  const int pairs = batch * heads_q;
  const int threads = worker_count(options.threads, pairs * std::max(1, seq_q / 16));
  std::vector<int> every_row(static_cast<std::size_t>(seq_q));
  std::iota(every_row.begin(), every_row.end(), 0);
  // Work items: a pair's rows, cut in up to `threads / pairs` chunks of at least 16 rows
  // (each chunk loads its pair's Q and K rows again, which is cheap next to 16 x seq_k dots).
  struct Item {
    int pair;
    std::span<const int> rows;
  };
  std::vector<Item> items;
  const int chunks_wanted = std::max(1, (threads + pairs - 1) / pairs);
  for (int p = 0; p < pairs; ++p) {
    const std::span<const int> rows = out.rows.all() ? std::span<const int>(every_row)
                                                     : std::span<const int>(out.rows.rows[static_cast<std::size_t>(p)]);
    const std::size_t chunks = std::clamp<std::size_t>(rows.size() / 16, 1, static_cast<std::size_t>(chunks_wanted));
    for (std::size_t c = 0; c < chunks; ++c) {
      const std::size_t lo = rows.size() * c / chunks, hi = rows.size() * (c + 1) / chunks;
      if (hi > lo) items.push_back({p, rows.subspan(lo, hi - lo)});
    }
  }
  const int workers = worker_count(threads, static_cast<int>(items.size()));
  std::vector<ir::EvalEnv> envs(static_cast<std::size_t>(workers), env);
  std::vector<std::vector<ir::Value>> scratch(static_cast<std::size_t>(workers)), roots(scratch.size());
  for_each_item(static_cast<int>(items.size()), workers, Assignment::Dynamic, [&](int w, int i) {
    const Item& item = items[static_cast<std::size_t>(i)];
    const auto ws = static_cast<std::size_t>(w);
    compute_head(item.pair / heads_q, item.pair % heads_q, item.rows, envs[ws], scratch[ws], roots[ws]);
  });
  return out;
}

bool RowSelection::contains(int pair, int row) const {
  if (all()) return true;
  if (pair < 0 || static_cast<std::size_t>(pair) >= rows.size()) return false;
  const auto& r = rows[static_cast<std::size_t>(pair)];
  return std::binary_search(r.begin(), r.end(), row);
}

void RowSelection::add(int pair, int row) {
  if (all()) return;
  auto& r = rows.at(static_cast<std::size_t>(pair));
  const auto it = std::lower_bound(r.begin(), r.end(), row);
  if (it == r.end() || *it != row) r.insert(it, row);
}

std::int64_t RowSelection::count(int pairs, int seq_q) const {
  if (all()) return static_cast<std::int64_t>(pairs) * seq_q;
  std::int64_t n = 0;
  for (const auto& r : rows) n += static_cast<std::int64_t>(r.size());
  return n;
}

std::vector<std::vector<int>> fully_masked_rows(const Variant& variant, const DLTensor& q, const DLTensor& k,
                                                const Bindings& bindings) {
  check_input(q, "Q");
  check_input(k, "K");
  const int batch = static_cast<int>(q.shape[0]), heads_q = static_cast<int>(q.shape[1]);
  const int seq_q = static_cast<int>(q.shape[2]), seq_k = static_cast<int>(k.shape[2]);
  std::vector<std::vector<int>> masked(static_cast<std::size_t>(batch) * heads_q);
  if (!variant.has_mask() || seq_q <= 0 || seq_k <= 0) return masked;
  check_bindings(variant, bindings);

  const ir::LoweredExprs lowered = ir::lower({{"mask_mod", variant.mask_mod().node(), ir::Type::Bool}});
  const ir::NodeRef normalized = ir::normalize_for_intervals(lowered.roots[0].root);
  ir::EvalEnv env;
  env.q_len = seq_q;
  env.kv_len = seq_k;
  env.num_heads = heads_q;
  ir::TileBox box;
  box.q_len = seq_q;
  box.kv_len = seq_k;
  box.num_heads = heads_q;
  for (const auto& p : variant.params()) {
    if (p.type == ir::Type::Int) {
      env.params[p.name] = ir::Value::of_int(bound_int(bindings, p.name));
      box.int_params[p.name] = bound_int(bindings, p.name);
    } else {
      env.params[p.name] = ir::Value::of_float(bound_float(bindings, p.name));
      box.float_params[p.name] = bound_float(bindings, p.name);
    }
  }
  env.read_tensor = [&](const ir::Node& read, std::span<const std::int64_t> idx) {
    return read_bound_tensor(bindings.tensors().at(read.name), read, idx);
  };
  // A mask that never names b (or h), tensor indices included, is the same for every batch
  // (or head): scan one and copy.
  bool uses_b = false, uses_h = false;
  for (const auto& n : ir::topological_order({lowered.roots[0].root})) {
    uses_b |= n->op == ir::Op::Index && n->name == "b";
    uses_h |= n->op == ir::Op::Index && n->name == "h";
  }
  std::vector<ir::Value> scratch, roots;
  const auto passes = [&](int kv) {
    env.kv = kv;
    ir::evaluate_program(lowered.program, env, scratch, roots);
    return roots[0].b;
  };
  constexpr int kTile = 64;
  const auto sees_a_key = [&](int row) {
    // Candidates first: the diagonal of either alignment, the first and the last key.
    for (const int kv : {std::min(row, seq_k - 1), std::clamp(row + seq_k - seq_q, 0, seq_k - 1), 0, seq_k - 1})
      if (passes(kv)) return true;
    box.q = {row, row};
    for (int k0 = 0; k0 < seq_k; k0 += kTile) {
      box.kv = {k0, std::min(k0 + kTile, seq_k) - 1};
      const ir::TileClass cls = ir::classify_tile(normalized, box);
      if (cls == ir::TileClass::Full) return true;
      if (cls == ir::TileClass::Empty) continue;
      for (int kv = k0; kv <= box.kv.hi; ++kv)
        if (passes(kv)) return true;
    }
    return false;
  };
  for (int b = 0; b < (uses_b ? batch : 1); ++b)
    for (int h = 0; h < (uses_h ? heads_q : 1); ++h) {
      env.b = b, env.h = h;
      box.b = {b, b};
      box.h = {h, h};
      std::vector<int>& rows = masked[static_cast<std::size_t>(b) * heads_q + h];
      for (int row = 0; row < seq_q; ++row) {
        env.q = row;
        if (!sees_a_key(row)) rows.push_back(row);
      }
    }
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < heads_q; ++h)
      masked[static_cast<std::size_t>(b) * heads_q + h] =
          masked[static_cast<std::size_t>(uses_b ? b : 0) * heads_q + (uses_h ? h : 0)];
  return masked;
}

}  // namespace attnjit
