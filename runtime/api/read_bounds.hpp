// Whether a launch's reads of captured tensors stay inside the bound extents, decided on the
// host by interval analysis of the index expressions over the problem (q in [0, Sq), kv in
// [0, Sk), the bound parameter values). Where the analysis proves every read in range, the
// kernel runs without recording; where it cannot (a `where` whose untaken branch is out of
// range, as in T5 buckets, or an index that is really out of range), the device records the
// first out-of-range read and the runtime reports it after the launch. An exact read that is
// certainly out of range (the output gate's [b, h, q(, d)]) is refused before the launch.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "compiler/kernel_template.hpp"
#include "runtime/api/bindings.hpp"

namespace attnjit {

struct UnprovenRead {
  std::string tensor;
  int dim = 0;
  std::int64_t lo = 0, hi = 0;  // the index range the analysis found
  std::int64_t extent = 0;      // the bound tensor's extent in that dimension
  std::string str() const;      // "tensor 'bias' dimension 1: indices in [-5, 2050], extent 2048"
};

// The first read the analysis cannot prove in range; nothing when all are proven. UserError
// for an output gate tensor smaller than [batch, heads_q, seq_q(, head_dim)].
std::optional<UnprovenRead> first_unproven_read(const Variant& variant, const ProblemShape& problem, int head_dim,
                                                const Bindings& bindings);

}  // namespace attnjit
