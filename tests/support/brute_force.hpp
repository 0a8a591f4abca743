// Brute-force attention for tests: a plain fp64 implementation written without the DSL,
// the IR or the evaluator, against which the CPU reference (and through it every kernel)
// is checked. Masks and score modifications are ordinary C++ callables, RoPE is an
// independent complex-number rotation, and random inputs are drawn fresh (never zeros).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "runtime/api/dlpack_view.hpp"
#include "runtime/reference/reference.hpp"

namespace attnjit::brute {

struct Shape {
  int batch = 1, heads_q = 1, heads_kv = 1, seq_q = 1, seq_k = 1, dim = 8, dim_v = 8;
  std::string str() const;  // "B=.. Hq=.. Hkv=.. Sq=.. Sk=.. D=.. Dv=.."
};

// Q [B, Hq, Sq, D], K [B, Hkv, Sk, D], V [B, Hkv, Sk, Dv] as host tensors of `dtype`, with
// the exact values they hold kept as doubles (row-major) for the brute force. Values are
// uniform in [-2, 2] (Q, K) and [-1, 1] (V), rounded to `dtype`, redrawn if zero.
// Not copyable: a HostTensor's DLTensor points into its own storage.
struct Inputs {
  Inputs(const Shape& shape, std::mt19937& rng, DLDataType dtype = dlpack_float32());
  Inputs(const Inputs&) = delete;
  Inputs& operator=(const Inputs&) = delete;

  Shape shape;
  std::vector<double> q, k, v;
  HostTensor q_t, k_t, v_t;
  double q_at(int b, int h, int i, int d) const;
  double k_at(int b, int h, int j, int d) const;
  double v_at(int b, int h, int j, int d) const;
};

// What a bf16 / f16 / f32 tensor holds after storing x.
double round_to_bf16(double x);
double round_to_f16(double x);
double round_to_dtype(double x, DLDataType dtype);

// Python-style floor division and modulo on ints (b != 0).
int floor_div(int a, int b);
int floor_mod(int a, int b);

struct RopeSpec {
  double theta = 10000.0;
  int rotary_dim = 0;  // 0: the whole head
  bool interleaved = false;
  std::int64_t position_offset = 0;  // added to every Q and K position
};

// Everything the brute force needs to know about a variant, in plain C++.
struct Spec {
  std::function<bool(int b, int h, int q, int kv)> allowed;                   // empty: all allowed
  std::function<double(double score, int b, int h, int q, int kv)> modified;  // empty: identity
  std::optional<RopeSpec> rope;
  std::function<double(int b, int h, int q)> gate_logit;  // empty: no output gate
  double scale = 0.0;                                     // 0: 1 / sqrt(D)
};

struct Result {
  std::vector<double> o;     // [B, Hq, Sq, Dv]
  std::vector<double> lse;   // [B, Hq, Sq]
  std::vector<char> masked;  // [B, Hq, Sq]: 1 where no key passed (O = 0, LSE = -inf)
  int masked_rows = 0;
};

Result attention(const Inputs& in, const Spec& spec);

// Compares the reference with the brute force: O and LSE within `tol` relative to
// max(1, |expected|); fully masked rows must be O == 0 and LSE == -inf exactly. Reports
// through gtest (at most a few failures per call) and returns the number of fully masked
// rows that were checked.
int expect_matches(const ReferenceResult& ref, const Result& expected, const Shape& shape, double tol = 1e-9);

}  // namespace attnjit::brute
