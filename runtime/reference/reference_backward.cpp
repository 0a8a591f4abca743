// CPU reference backward (see reference_backward.hpp).
//
// Work is split by (b, kv head): one item owns its dK and dV rows and the dQ rows and gate
// gradients of its query heads, so those are written without sharing. Captured-tensor
// gradients can land anywhere (a bias row is shared by every batch), so each worker sums
// into its own copy and the copies are added in worker order at the end.
#include "runtime/reference/reference_backward.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>

#include "compiler/error.hpp"
#include "compiler/passes/cse.hpp"
#include "compiler/passes/differentiate.hpp"
#include "compiler/pipeline.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/reference/reference_problem.hpp"

namespace attnjit {
namespace {

using namespace reference_internal;

// A float tensor read of score_mod: where its derivative and its indices sit among the
// backward program's roots.
struct ReadSlot {
  const ir::Node* read = nullptr;
  const DLTensor* tensor = nullptr;
  std::size_t derivative_root = 0, first_index_root = 0;
};

struct Context {
  const Problem& problem;
  const Variant& variant;
  const DLTensor &q, &k, &v, &d_out;
  std::optional<DLTensor> gate;
  ir::Program forward;   // roots: score_mod, mask_mod
  ir::Program backward;  // roots: d score_mod / d score, then per read its derivative and its indices
  std::vector<ReadSlot> reads;
  ReferenceGradients& out;
};

struct Worker {
  ir::EvalEnv env;
  std::vector<ir::Value> scratch, roots;
  std::vector<std::int64_t> index;                     // a read's indices
  std::map<std::string, std::vector<double>> tensors;  // this worker's partial tensor gradients
};

std::size_t numel(const DLTensor& t) {
  std::size_t n = 1;
  for (int d = 0; d < t.ndim; ++d) n *= static_cast<std::size_t>(t.shape[d]);
  return n;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// The scores and normalized probabilities of query row i against every key; false when the
// row is fully masked.
bool recompute_row(const Context& c, Worker& w, const double* qrow, const std::vector<double>& krows,
                   std::vector<double>& scores, std::vector<double>& p) {
  const Problem& pr = c.problem;
  double max_logit = -std::numeric_limits<double>::infinity();
  for (int j = 0; j < pr.seq_k; ++j) {
    double dot = 0.0;
    for (int d = 0; d < pr.dim; ++d) dot += qrow[d] * krows[static_cast<std::size_t>(j) * pr.dim + d];
    w.env.kv = j;
    w.env.score = scores[static_cast<std::size_t>(j)] = pr.scale * dot;
    ir::evaluate_program(c.forward, w.env, w.scratch, w.roots);
    p[static_cast<std::size_t>(j)] = w.roots[1].b ? w.roots[0].f : -std::numeric_limits<double>::infinity();
    max_logit = std::max(max_logit, p[static_cast<std::size_t>(j)]);
  }
  if (max_logit == -std::numeric_limits<double>::infinity()) return false;
  double denom = 0.0;
  for (double& x : p) denom += (x = std::exp(x - max_logit));
  for (double& x : p) x /= denom;
  return true;
}

// dS for one (row, key) element, chained into dQ, dK and the captured tensors.
void chain_element(const Context& c, Worker& w, double ds, const double* qrow, const double* krow, double* dq_row,
                   double* dk_row) {
  const Problem& pr = c.problem;
  ir::evaluate_program(c.backward, w.env, w.scratch, w.roots);
  const double ds_raw = ds * w.roots[0].f;
  for (int d = 0; d < pr.dim; ++d) {
    dq_row[d] += pr.scale * ds_raw * krow[d];
    dk_row[d] += pr.scale * ds_raw * qrow[d];
  }
  for (const ReadSlot& r : c.reads) {
    const double derivative = w.roots[r.derivative_root].f;
    if (derivative == 0.0) continue;
    w.index.clear();
    for (std::size_t i = 0; i < r.read->args.size(); ++i) w.index.push_back(w.roots[r.first_index_root + i].i);
    w.tensors.at(r.read->name)[static_cast<std::size_t>(contiguous_offset(*r.tensor, r.read->name, w.index))] +=
        ds * derivative;
  }
}

// Query head h of batch b against its kv head's rows; adds to that kv head's (rotated) dK and dV.
void backward_head(const Context& c, Worker& w, int b, int h, const std::vector<double>& krows,
                   const std::vector<double>& vrows, std::vector<double>& dk_rot, std::vector<double>& dv) {
  const Problem& pr = c.problem;
  const auto qrows = load_rows(c.q, b, h, pr.seq_q, pr.dim, c.variant.rope(), pr.q_position(), NaivePrecision::None);
  const auto dorows = widen_rows(c.d_out, b, h, pr.seq_q, pr.dim_v);
  const auto gs = c.gate ? dlpack_strides(*c.gate) : std::vector<std::int64_t>{};
  std::vector<double> dq_rot(qrows.size(), 0.0), scores(pr.seq_k), p(pr.seq_k), o(pr.dim_v), dout(pr.dim_v);
  w.env.b = b, w.env.h = h;
  for (int i = 0; i < pr.seq_q; ++i) {
    w.env.q = i;
    const double* qrow = &qrows[static_cast<std::size_t>(i) * pr.dim];
    if (!recompute_row(c, w, qrow, krows, scores, p)) continue;  // fully masked: no gradient
    std::fill(o.begin(), o.end(), 0.0);
    for (int j = 0; j < pr.seq_k; ++j)
      for (int d = 0; d < pr.dim_v; ++d) o[d] += p[j] * vrows[static_cast<std::size_t>(j) * pr.dim_v + d];
    for (int d = 0; d < pr.dim_v; ++d) {
      dout[d] = dorows[static_cast<std::size_t>(i) * pr.dim_v + d];
      if (!c.gate) continue;
      const bool rank4 = c.gate->ndim == 4;
      const double s = sigmoid(load_as_double(*c.gate, b * gs[0] + h * gs[1] + i * gs[2] + (rank4 ? d * gs[3] : 0)));
      const std::size_t row = (static_cast<std::size_t>(b) * pr.heads_q + h) * pr.seq_q + i;
      c.out.d_gate[rank4 ? row * pr.dim_v + d : row] += dout[d] * o[d] * s * (1.0 - s);
      dout[d] *= s;
    }
    double rowsum = 0.0;  // D = rowsum(dO * O)
    for (int d = 0; d < pr.dim_v; ++d) rowsum += dout[d] * o[d];
    for (int j = 0; j < pr.seq_k; ++j) {
      if (p[j] == 0.0) continue;
      const double* vrow = &vrows[static_cast<std::size_t>(j) * pr.dim_v];
      double dp = 0.0;
      for (int d = 0; d < pr.dim_v; ++d) {
        dp += dout[d] * vrow[d];
        dv[static_cast<std::size_t>(j) * pr.dim_v + d] += p[j] * dout[d];
      }
      w.env.kv = j;
      w.env.score = scores[j];
      chain_element(c, w, p[j] * (dp - rowsum), qrow, &krows[static_cast<std::size_t>(j) * pr.dim],
                    &dq_rot[static_cast<std::size_t>(i) * pr.dim], &dk_rot[static_cast<std::size_t>(j) * pr.dim]);
    }
  }
  if (c.variant.rope())
    rotate_rows(dq_rot, pr.seq_q, pr.dim, *c.variant.rope(), pr.q_position(), NaivePrecision::None, true);
  const std::size_t pair = static_cast<std::size_t>(b) * pr.heads_q + h;
  std::copy(dq_rot.begin(), dq_rot.end(), c.out.dq.begin() + static_cast<std::ptrdiff_t>(pair * dq_rot.size()));
}

void backward_group(const Context& c, Worker& w, int b, int hk) {
  const Problem& pr = c.problem;
  const auto krows = load_rows(c.k, b, hk, pr.seq_k, pr.dim, c.variant.rope(), pr.k_position(), NaivePrecision::None);
  const auto vrows = widen_rows(c.v, b, hk, pr.seq_k, pr.dim_v);
  std::vector<double> dk_rot(krows.size(), 0.0), dv(vrows.size(), 0.0);
  for (int g = 0; g < pr.group(); ++g) backward_head(c, w, b, hk * pr.group() + g, krows, vrows, dk_rot, dv);
  if (c.variant.rope())
    rotate_rows(dk_rot, pr.seq_k, pr.dim, *c.variant.rope(), pr.k_position(), NaivePrecision::None, true);
  const std::size_t pair = static_cast<std::size_t>(b) * pr.heads_kv + hk;
  std::copy(dk_rot.begin(), dk_rot.end(), c.out.dk.begin() + static_cast<std::ptrdiff_t>(pair * dk_rot.size()));
  std::copy(dv.begin(), dv.end(), c.out.dv.begin() + static_cast<std::ptrdiff_t>(pair * dv.size()));
}

}  // namespace

ReferenceGradients reference_attention_backward(const Variant& variant, const DLTensor& q, const DLTensor& k,
                                                const DLTensor& v, const DLTensor& d_out, const Bindings& bindings,
                                                const ReferenceOptions& options) {
  if (options.naive != NaivePrecision::None)
    throw UserError("the reference backward computes in fp64 only; leave ReferenceOptions::naive at None");
  if (!options.rows.all())
    throw UserError(
        "the reference backward computes every row (dK and dV need them all); leave ReferenceOptions::rows "
        "at its default");
  const Problem pr = check_problem(variant, q, k, v, bindings, options.scale);
  check_input(d_out, "dO");
  const std::vector<std::int64_t> o_shape = {pr.batch, pr.heads_q, pr.seq_q, pr.dim_v};
  if (dlpack_shape(d_out) != o_shape)
    throw UserError(fmt::format("reference input dO has shape {}; expected the output's shape {} [B, Hq, Sq, Dv]",
                                shape_string(dlpack_shape(d_out)), shape_string(o_shape)));

  ReferenceGradients out;
  Context c{pr, variant, q, k, v, d_out, bound_gate(variant, pr, bindings), {}, {}, {}, out};
  c.forward = ir::lower({{"score_mod", variant.score_mod().node(), ir::Type::Float},
                         {"mask_mod", variant.mask_mod().node(), ir::Type::Bool}})
                  .program;
  const ir::ScoreModDerivatives derivatives = ir::differentiate_score_mod(variant.score_mod().node());
  std::vector<ir::NodeRef> roots = {derivatives.d_score};
  std::map<std::string, std::vector<double>> zero_tensors;
  for (const auto& r : derivatives.tensor_reads) {
    const DLTensor& t = bindings.tensors().at(r.read->name);
    zero_tensors[r.read->name].assign(numel(t), 0.0);
    c.reads.push_back({r.read.get(), &t, roots.size(), roots.size() + 1});
    roots.push_back(r.derivative);
    roots.insert(roots.end(), r.read->args.begin(), r.read->args.end());
  }
  c.backward = ir::eliminate_common_subexpressions(roots);

  out.dq.assign(static_cast<std::size_t>(pr.batch) * pr.heads_q * pr.seq_q * pr.dim, 0.0);
  out.dk.assign(static_cast<std::size_t>(pr.batch) * pr.heads_kv * pr.seq_k * pr.dim, 0.0);
  out.dv.assign(static_cast<std::size_t>(pr.batch) * pr.heads_kv * pr.seq_k * pr.dim_v, 0.0);
  if (c.gate)
    out.d_gate.assign(static_cast<std::size_t>(pr.batch) * pr.heads_q * pr.seq_q * (c.gate->ndim == 4 ? pr.dim_v : 1),
                      0.0);

  const int items = pr.batch * pr.heads_kv;
  const int workers = worker_count(options.threads, items);
  std::vector<Worker> state(static_cast<std::size_t>(workers),
                            Worker{make_env(variant, pr, bindings), {}, {}, {}, zero_tensors});
  for_each_item(items, workers, Assignment::RoundRobin, [&](int w, int item) {
    backward_group(c, state[static_cast<std::size_t>(w)], item / pr.heads_kv, item % pr.heads_kv);
  });
  out.tensors = std::move(zero_tensors);
  for (const Worker& w : state)
    for (const auto& [name, partial] : w.tensors) {
      auto& total = out.tensors.at(name);
      for (std::size_t i = 0; i < total.size(); ++i) total[i] += partial[i];
    }
  return out;
}

}  // namespace attnjit
