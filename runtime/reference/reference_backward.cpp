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

// The arithmetic of one run: exact (fp64) or the naive same-precision emulation.
struct Arithmetic {
  NaivePrecision naive = NaivePrecision::None;

  bool low() const { return naive != NaivePrecision::None; }
  // A result held in an fp32 register (x itself in fp64 mode).
  double reg(double x) const { return low() ? static_cast<double>(static_cast<float>(x)) : x; }
  // A value stored in, or fed to a tensor core in, the storage dtype (x itself in fp64 mode).
  double store(double x) const { return round_to_naive_storage(naive, x); }
};

struct Context {
  const Problem& problem;
  const Variant& variant;
  Arithmetic arith;
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
// row is fully masked. Naive: fp32 dot products, scale, modified score and exponentials, and
// P = exp(S - LSE) from the fp32 LSE of the naive forward, as a FlashAttention backward
// recomputes it.
bool recompute_row(const Context& c, Worker& w, const double* qrow, const std::vector<double>& krows,
                   std::vector<double>& scores, std::vector<double>& p) {
  const Problem& pr = c.problem;
  const Arithmetic& a = c.arith;
  const double scale = a.reg(pr.scale);
  double max_logit = -std::numeric_limits<double>::infinity();
  for (int j = 0; j < pr.seq_k; ++j) {
    const double* krow = &krows[static_cast<std::size_t>(j) * pr.dim];
    double dot = 0.0;
    for (int d = 0; d < pr.dim; ++d) dot = a.reg(dot + qrow[d] * krow[d]);
    w.env.kv = j;
    w.env.score = scores[static_cast<std::size_t>(j)] = a.reg(scale * dot);
    ir::evaluate_program(c.forward, w.env, w.scratch, w.roots);
    p[static_cast<std::size_t>(j)] = w.roots[1].b ? a.reg(w.roots[0].f) : -std::numeric_limits<double>::infinity();
    max_logit = std::max(max_logit, p[static_cast<std::size_t>(j)]);
  }
  if (max_logit == -std::numeric_limits<double>::infinity()) return false;
  if (!a.low()) {
    double denom = 0.0;
    for (double& x : p) denom += (x = std::exp(x - max_logit));
    for (double& x : p) x /= denom;
    return true;
  }
  double denom = 0.0;  // the naive forward's sum (reference.cpp), then its fp32 LSE
  for (const double x : p) denom += std::exp(static_cast<float>(x - max_logit));
  const double lse = a.reg(max_logit + std::log(static_cast<float>(denom)));
  for (double& x : p) x = a.reg(std::exp(static_cast<float>(x - lse)));
  return true;
}

// dS for one (row, key) element, chained into dQ, dK (both without the softmax scale, which
// the caller applies once) and the captured tensors. Naive: dS_raw is rounded to the storage
// dtype before the products (the matmuls read it from shared memory), the sums are fp32;
// tensor gradients take the fp32 dS and accumulate in fp32.
void chain_element(const Context& c, Worker& w, double ds, const double* qrow, const double* krow, double* dq_row,
                   double* dk_row) {
  const Problem& pr = c.problem;
  const Arithmetic& a = c.arith;
  ir::evaluate_program(c.backward, w.env, w.scratch, w.roots);
  const double ds_raw = a.store(a.reg(ds * a.reg(w.roots[0].f)));
  for (int d = 0; d < pr.dim; ++d) {
    dq_row[d] = a.reg(dq_row[d] + ds_raw * krow[d]);
    dk_row[d] = a.reg(dk_row[d] + ds_raw * qrow[d]);
  }
  for (const ReadSlot& r : c.reads) {
    const double derivative = a.reg(w.roots[r.derivative_root].f);
    if (derivative == 0.0) continue;
    w.index.clear();
    for (std::size_t i = 0; i < r.read->args.size(); ++i) w.index.push_back(w.roots[r.first_index_root + i].i);
    double& total =
        w.tensors.at(r.read->name)[static_cast<std::size_t>(contiguous_offset(*r.tensor, r.read->name, w.index))];
    total = a.reg(total + a.reg(ds * derivative));
  }
}

// Rows of Q or K as the run reads them: naive, the values are rounded to the storage dtype
// first (a no-op for inputs already stored in it) and RoPE rotates them as a separate pass
// in that dtype would.
std::vector<double> load_input_rows(const Context& c, const DLTensor& t, int b, int h, int seq, int dim,
                                    std::int64_t position_offset) {
  std::vector<double> rows = widen_rows(t, b, h, seq, dim);
  for (double& x : rows) x = c.arith.store(x);
  if (c.variant.rope()) rotate_rows(rows, seq, dim, *c.variant.rope(), position_offset, c.arith.naive, false);
  return rows;
}

// The final store of dQ or dK rows (rotated, not yet scaled): times the softmax scale, RoPE's
// inverse rotation, rounded to the storage dtype (naive; a no-op in fp64).
void finish_rows(const Context& c, std::vector<double>& rows, int seq, std::int64_t position_offset) {
  const Arithmetic& a = c.arith;
  const double scale = a.reg(c.problem.scale);
  for (double& x : rows) x = a.reg(x * scale);
  if (c.variant.rope()) rotate_rows(rows, seq, c.problem.dim, *c.variant.rope(), position_offset, a.naive, true);
  for (double& x : rows) x = a.store(x);
}

// Query head h of batch b against its kv head's rows; adds to that kv head's (rotated,
// unscaled) dK and to its dV.
void backward_head(const Context& c, Worker& w, int b, int h, const std::vector<double>& krows,
                   const std::vector<double>& vrows, std::vector<double>& dk_rot, std::vector<double>& dv) {
  const Problem& pr = c.problem;
  const Arithmetic& a = c.arith;
  const auto qrows = load_input_rows(c, c.q, b, h, pr.seq_q, pr.dim, pr.q_position());
  auto dorows = widen_rows(c.d_out, b, h, pr.seq_q, pr.dim_v);
  for (double& x : dorows) x = a.store(x);
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
    // Naive: O as the forward stored it, rounded to the storage dtype (the fp32 P is within
    // a few fp32 ulps of the exact one, so this is the fp64 O rounded, up to rare ties).
    for (double& x : o) x = a.store(x);
    for (int d = 0; d < pr.dim_v; ++d) {
      dout[d] = dorows[static_cast<std::size_t>(i) * pr.dim_v + d];
      if (!c.gate) continue;
      const bool rank4 = c.gate->ndim == 4;
      const double s =
          a.reg(sigmoid(load_as_double(*c.gate, b * gs[0] + h * gs[1] + i * gs[2] + (rank4 ? d * gs[3] : 0))));
      const std::size_t row = (static_cast<std::size_t>(b) * pr.heads_q + h) * pr.seq_q + i;
      double& dg = c.out.d_gate[rank4 ? row * pr.dim_v + d : row];
      dg = a.reg(dg + a.reg(a.reg(dout[d] * o[d]) * a.reg(s * (1.0 - s))));
      // Naive: the ungated output's gradient is a tensor of the storage dtype (autograd's
      // dO * sigmoid(gate) in bf16 / fp16), which the matmuls below read.
      dout[d] = a.store(a.reg(dout[d] * s));
    }
    double rowsum = 0.0;  // D = rowsum(dO * O)
    for (int d = 0; d < pr.dim_v; ++d) rowsum = a.reg(rowsum + dout[d] * o[d]);
    for (int j = 0; j < pr.seq_k; ++j) {
      if (p[j] == 0.0) continue;
      const double* vrow = &vrows[static_cast<std::size_t>(j) * pr.dim_v];
      const double p_stored = a.store(p[j]);  // naive: P is rounded before dV = P^T dO
      double dp = 0.0;
      for (int d = 0; d < pr.dim_v; ++d) {
        dp = a.reg(dp + dout[d] * vrow[d]);
        double& dv_e = dv[static_cast<std::size_t>(j) * pr.dim_v + d];
        dv_e = a.reg(dv_e + p_stored * dout[d]);
      }
      w.env.kv = j;
      w.env.score = scores[j];
      chain_element(c, w, a.reg(p[j] * a.reg(dp - rowsum)), qrow, &krows[static_cast<std::size_t>(j) * pr.dim],
                    &dq_rot[static_cast<std::size_t>(i) * pr.dim], &dk_rot[static_cast<std::size_t>(j) * pr.dim]);
    }
  }
  finish_rows(c, dq_rot, pr.seq_q, pr.q_position());
  const std::size_t pair = static_cast<std::size_t>(b) * pr.heads_q + h;
  std::copy(dq_rot.begin(), dq_rot.end(), c.out.dq.begin() + static_cast<std::ptrdiff_t>(pair * dq_rot.size()));
}

void backward_group(const Context& c, Worker& w, int b, int hk) {
  const Problem& pr = c.problem;
  const auto krows = load_input_rows(c, c.k, b, hk, pr.seq_k, pr.dim, pr.k_position());
  auto vrows = widen_rows(c.v, b, hk, pr.seq_k, pr.dim_v);
  for (double& x : vrows) x = c.arith.store(x);
  std::vector<double> dk_rot(krows.size(), 0.0), dv(vrows.size(), 0.0);
  for (int g = 0; g < pr.group(); ++g) backward_head(c, w, b, hk * pr.group() + g, krows, vrows, dk_rot, dv);
  finish_rows(c, dk_rot, pr.seq_k, pr.k_position());
  for (double& x : dv) x = c.arith.store(x);
  const std::size_t pair = static_cast<std::size_t>(b) * pr.heads_kv + hk;
  std::copy(dk_rot.begin(), dk_rot.end(), c.out.dk.begin() + static_cast<std::ptrdiff_t>(pair * dk_rot.size()));
  std::copy(dv.begin(), dv.end(), c.out.dv.begin() + static_cast<std::ptrdiff_t>(pair * dv.size()));
}

}  // namespace

ReferenceGradients reference_attention_backward(const Variant& variant, const DLTensor& q, const DLTensor& k,
                                                const DLTensor& v, const DLTensor& d_out, const Bindings& bindings,
                                                const ReferenceOptions& options) {
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
  Context c{pr, variant, Arithmetic{options.naive}, q, k, v, d_out, bound_gate(variant, pr, bindings), {}, {}, {}, out};
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
      for (std::size_t i = 0; i < total.size(); ++i) total[i] = c.arith.reg(total[i] + partial[i]);
    }
  return out;
}

}  // namespace attnjit
