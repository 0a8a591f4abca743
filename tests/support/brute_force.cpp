// Brute-force attention for tests (see brute_force.hpp).
#include "support/brute_force.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <limits>
#include <sstream>

namespace attnjit::brute {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::size_t idx4(int a, int b, int c, int d, int nb, int nc, int nd) {
  return ((static_cast<std::size_t>(a) * nb + b) * nc + c) * nd + d;
}

void fill(std::vector<double>& values, HostTensor& t, std::mt19937& rng, double bound, DLDataType dtype) {
  std::uniform_real_distribution<double> dist(-bound, bound);
  values.resize(static_cast<std::size_t>(t.numel()));
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    double x = 0.0;
    while (x == 0.0) x = round_to_dtype(dist(rng), dtype);
    values[static_cast<std::size_t>(i)] = x;
    t.set(i, x);
  }
}

// Rotates consecutive pairs of `row` (half or interleaved layout) by pos * theta^(-2i/rd).
void apply_rope(std::vector<double>& row, double pos, const RopeSpec& rope) {
  const int dim = static_cast<int>(row.size());
  const int rd = rope.rotary_dim == 0 ? dim : rope.rotary_dim;
  for (int i = 0; i < rd / 2; ++i) {
    const int a = rope.interleaved ? 2 * i : i;
    const int c = rope.interleaved ? 2 * i + 1 : i + rd / 2;
    const double freq = 1.0 / std::pow(rope.theta, static_cast<double>(2 * i) / rd);
    const std::complex<double> z = std::complex<double>(row[a], row[c]) * std::polar(1.0, pos * freq);
    row[a] = z.real();
    row[c] = z.imag();
  }
}

}  // namespace

std::string Shape::str() const {
  std::ostringstream s;
  s << "B=" << batch << " Hq=" << heads_q << " Hkv=" << heads_kv << " Sq=" << seq_q << " Sk=" << seq_k << " D=" << dim
    << " Dv=" << dim_v;
  return s.str();
}

Inputs::Inputs(const Shape& s, std::mt19937& rng, DLDataType dtype)
    : shape(s),
      q_t(dtype, {s.batch, s.heads_q, s.seq_q, s.dim}),
      k_t(dtype, {s.batch, s.heads_kv, s.seq_k, s.dim}),
      v_t(dtype, {s.batch, s.heads_kv, s.seq_k, s.dim_v}) {
  fill(q, q_t, rng, 2.0, dtype);
  fill(k, k_t, rng, 2.0, dtype);
  fill(v, v_t, rng, 1.0, dtype);
}

double Inputs::q_at(int b, int h, int i, int d) const {
  return q[idx4(b, h, i, d, shape.heads_q, shape.seq_q, shape.dim)];
}
double Inputs::k_at(int b, int h, int j, int d) const {
  return k[idx4(b, h, j, d, shape.heads_kv, shape.seq_k, shape.dim)];
}
double Inputs::v_at(int b, int h, int j, int d) const {
  return v[idx4(b, h, j, d, shape.heads_kv, shape.seq_k, shape.dim_v)];
}

double round_to_bf16(double x) { return bf16_bits_to_float(float_to_bf16_bits(static_cast<float>(x))); }
double round_to_f16(double x) { return half_bits_to_float(float_to_half_bits(static_cast<float>(x))); }
double round_to_dtype(double x, DLDataType dtype) {
  if (dtype.code == kDLBfloat) return round_to_bf16(x);
  if (dtype.code == kDLFloat && dtype.bits == 16) return round_to_f16(x);
  if (dtype.code == kDLFloat && dtype.bits == 32) return static_cast<float>(x);
  return x;
}

int floor_div(int a, int b) {
  int q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
int floor_mod(int a, int b) { return a - floor_div(a, b) * b; }

Result attention(const Inputs& in, const Spec& spec) {
  const Shape& s = in.shape;
  const double scale = spec.scale != 0.0 ? spec.scale : 1.0 / std::sqrt(static_cast<double>(s.dim));
  const int group = s.heads_q / s.heads_kv;
  Result r;
  r.o.assign(static_cast<std::size_t>(s.batch) * s.heads_q * s.seq_q * s.dim_v, 0.0);
  r.lse.assign(static_cast<std::size_t>(s.batch) * s.heads_q * s.seq_q, -kInf);
  r.masked.assign(r.lse.size(), 0);
  std::vector<double> qrow(s.dim), krow(s.dim), logit(s.seq_k);
  for (int b = 0; b < s.batch; ++b) {
    for (int h = 0; h < s.heads_q; ++h) {
      const int hk = h / group;
      for (int i = 0; i < s.seq_q; ++i) {
        const std::size_t row = (static_cast<std::size_t>(b) * s.heads_q + h) * s.seq_q + i;
        for (int d = 0; d < s.dim; ++d) qrow[d] = in.q_at(b, h, i, d);
        if (spec.rope)
          apply_rope(qrow, i + s.seq_k - s.seq_q + static_cast<double>(spec.rope->position_offset), *spec.rope);
        double m = -kInf;
        for (int j = 0; j < s.seq_k; ++j) {
          logit[j] = -kInf;
          if (spec.allowed && !spec.allowed(b, h, i, j)) continue;
          for (int d = 0; d < s.dim; ++d) krow[d] = in.k_at(b, hk, j, d);
          if (spec.rope) apply_rope(krow, j + static_cast<double>(spec.rope->position_offset), *spec.rope);
          double dot = 0.0;
          for (int d = 0; d < s.dim; ++d) dot += qrow[d] * krow[d];
          const double score = scale * dot;
          logit[j] = spec.modified ? spec.modified(score, b, h, i, j) : score;
          m = std::max(m, logit[j]);
        }
        if (m == -kInf) {
          r.masked[row] = 1;
          ++r.masked_rows;
          continue;
        }
        double sum = 0.0;
        std::vector<double> acc(s.dim_v, 0.0);
        for (int j = 0; j < s.seq_k; ++j) {
          const double p = std::exp(logit[j] - m);
          sum += p;
          for (int d = 0; d < s.dim_v; ++d) acc[d] += p * in.v_at(b, hk, j, d);
        }
        const double gate = spec.gate_logit ? 1.0 / (1.0 + std::exp(-spec.gate_logit(b, h, i))) : 1.0;
        for (int d = 0; d < s.dim_v; ++d) r.o[row * s.dim_v + d] = acc[d] / sum * gate;
        r.lse[row] = m + std::log(sum);
      }
    }
  }
  return r;
}

int expect_matches(const ReferenceResult& ref, const Result& expected, const Shape& s, double tol) {
  EXPECT_EQ(ref.batch, s.batch);
  EXPECT_EQ(ref.heads_q, s.heads_q);
  EXPECT_EQ(ref.seq_q, s.seq_q);
  EXPECT_EQ(ref.head_dim_v, s.dim_v);
  if (ref.o.size() != expected.o.size() || ref.lse.size() != expected.lse.size()) {
    ADD_FAILURE() << "result sizes differ: O " << ref.o.size() << " vs " << expected.o.size() << ", LSE "
                  << ref.lse.size() << " vs " << expected.lse.size();
    return 0;
  }
  auto close = [tol](double got, double want) { return std::fabs(got - want) <= tol * std::max(1.0, std::fabs(want)); };
  int failures = 0, masked_checked = 0;
  for (int b = 0; b < s.batch; ++b)
    for (int h = 0; h < s.heads_q; ++h)
      for (int i = 0; i < s.seq_q; ++i) {
        const std::size_t row = (static_cast<std::size_t>(b) * s.heads_q + h) * s.seq_q + i;
        const double lse = ref.lse_at(b, h, i);
        bool ok = true;
        if (expected.masked[row]) {
          ++masked_checked;
          ok = lse == -kInf;
          for (int d = 0; d < s.dim_v; ++d) ok = ok && ref.o_at(b, h, i, d) == 0.0;
        } else {
          ok = std::isfinite(lse) && close(lse, expected.lse[row]);
          for (int d = 0; d < s.dim_v; ++d) ok = ok && close(ref.o_at(b, h, i, d), expected.o[row * s.dim_v + d]);
        }
        if (!ok && ++failures <= 3) {
          std::ostringstream msg;
          msg.precision(17);
          msg << "row b=" << b << " h=" << h << " q=" << i << (expected.masked[row] ? " (fully masked)" : "")
              << ": LSE ref " << lse << " brute " << expected.lse[row] << "; O ref/brute:";
          for (int d = 0; d < s.dim_v; ++d) msg << " " << ref.o_at(b, h, i, d) << "/" << expected.o[row * s.dim_v + d];
          ADD_FAILURE() << msg.str();
        }
      }
  if (failures > 3) ADD_FAILURE() << failures << " rows differ in total";
  return masked_checked;
}

}  // namespace attnjit::brute
