// The space the autotuner searches: every combination of a kernel template's knob values
// (its knob_space, optionally restricted per knob), each candidate either feasible or pruned
// with the reason (the template's check_knobs message) before anything is compiled. Pruning
// here is what keeps `attnjit tune` from spending NVRTC time on kernels that cannot run, and
// it works for any template: a new template brings its own space and its own rules.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "compiler/kernel_template.hpp"
#include "compiler/knobs.hpp"

namespace attnjit {

struct KnobCandidate {
  Knobs knobs;
  bool feasible = true;
  std::string reason;  // why it was pruned (check_knobs' Invalid message); empty when feasible
};

// Every combination of `t.knob_space(head_dim)`, in a fixed order: the knobs in the order the
// space declares them, the first one varying slowest, each through its values in the given
// order. `restrict_to` replaces a knob's values (a value outside the template's list is
// enumerated and left to check_knobs to prune); a restriction naming a knob the template lacks,
// or giving no value, is a UserError naming the template's knobs. Each candidate is judged by
// t.check_knobs(knobs, head_dim, max_shared_bytes): Invalid (or NotSupported) prunes it.
std::vector<KnobCandidate> enumerate_knobs(const KernelTemplate& t, int head_dim, int max_shared_bytes,
                                           const std::map<std::string, std::vector<int>>& restrict_to = {});

// `restrict_to` plus, for every knob the autotuner must not choose (KnobSpec::tuned false) and
// `restrict_to` leaves open, the one value `defaults` gives it.
std::map<std::string, std::vector<int>> with_untuned_knobs_fixed(const KernelTemplate& t, int head_dim,
                                                                 const Knobs& defaults,
                                                                 std::map<std::string, std::vector<int>> restrict_to);

// The feasible ones only, in the same order.
std::vector<Knobs> feasible_knobs(const KernelTemplate& t, int head_dim, int max_shared_bytes,
                                  const std::map<std::string, std::vector<int>>& restrict_to = {});

}  // namespace attnjit
