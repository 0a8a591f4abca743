// Runtime parameter values for the presets' parameters in the GPU tests, chosen so that every
// mask is a real mix of empty, partial and full tiles at the tests' lengths.
#pragma once

#include <gtest/gtest.h>

#include "dsl/variant.hpp"
#include "runtime/api/bindings.hpp"

namespace attnjit {

inline Bindings preset_scalars(const Variant& v) {
  Bindings b;
  for (const auto& p : v.params()) {
    if (p.name == "window")
      b.set("window", 256);
    else if (p.name == "prefix_len")
      b.set("prefix_len", 300);
    else if (p.name == "softcap")
      b.set("softcap", 30.0);
    else if (p.name == "stride")
      b.set("stride", 4);
    else if (p.name == "local")
      b.set("local", 64);
    else if (p.name == "group")
      b.set("group", 256);
    else
      ADD_FAILURE() << "no test value for parameter " << p.name;
  }
  return b;
}

}  // namespace attnjit
