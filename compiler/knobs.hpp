// Knobs: a kernel template's own schedule settings, by name (block_m=128, stages=2, ...).
//
// Each template declares its knob space (names, allowed values, a help line); the CLI's
// schedule flags, the autotuner's candidates and the tuning database's records are all
// made from it, so a new template brings new knobs without touching any of them.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace attnjit {

class Knobs {
 public:
  Knobs() = default;
  Knobs(std::initializer_list<std::pair<const std::string, int>> values) : values_(values) {}

  Knobs& set(const std::string& name, int value) {
    values_[name] = value;
    return *this;
  }
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  // InternalError when absent: a template asked for a knob its space does not declare.
  int get(const std::string& name) const;
  const std::map<std::string, int>& values() const { return values_; }
  bool empty() const { return values_.empty(); }

  std::string str() const;  // "block_m=128 block_n=64 stages=1 warps=4" (sorted by name)
  // Parses str()'s form; UserError naming the bad token.
  static Knobs parse(const std::string& text);

  friend bool operator==(const Knobs&, const Knobs&) = default;

 private:
  std::map<std::string, int> values_;
};

// One knob of a template's space.
struct KnobSpec {
  std::string name;         // also the CLI flag: --block-m for block_m
  std::vector<int> values;  // allowed values, in the order the autotuner tries them
  std::string help;
  // False: the autotuner keeps the template's default unless `--only` names the knob, since its
  // best value depends on what the tuner's timing cannot see (decode_sm80's stream_k: the
  // lengths in a KV cache; equal full lengths favour split-K, real caches stream-K).
  bool tuned = true;
};

}  // namespace attnjit
