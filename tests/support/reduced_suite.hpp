// ATTNJIT_GPU_REDUCED=1: the reduced GPU suite (one small case per preset), which
// tools/gpu/run-suite.sh runs under compute-sanitizer; tests drop their large cases there.
#pragma once

#include <cstdlib>
#include <string>

namespace attnjit {

inline bool reduced_suite() {
  const char* v = std::getenv("ATTNJIT_GPU_REDUCED");
  return v != nullptr && std::string(v) != "" && std::string(v) != "0";
}

}  // namespace attnjit
