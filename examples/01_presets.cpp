// Example 01: build preset variants, compose them, and print their canonical text.
//
// Presets are plain functions returning attnjit::Variant. Variants compose with `then`:
// masks are and-ed, and the second score_mod applies to the first's result.
#include <attnjit.hpp>

#include <cstdio>

int main() {
  using namespace attnjit;

  // A causal mask and a runtime-width sliding window (the width is bound at launch).
  const Variant window = presets::sliding_window(param_int("window"));

  // ALiBi, then the window, then a soft-cap of 30 baked in as a constant (recompiles if changed).
  const Variant composed = presets::alibi().then(window).then(presets::softcap(30.0));

  std::printf("%s\n", composed.text().c_str());
  std::printf("hash: %s\n", composed.hash().hex().c_str());

  // The text form reads back to the same variant.
  const Variant reparsed = Variant::parse(composed.text());
  return reparsed.hash() == composed.hash() ? 0 : 1;
}
