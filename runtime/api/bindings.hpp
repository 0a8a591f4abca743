// Values for a variant's runtime parameters and captured tensors, bound by name at
// launch. Binding never recompiles. `check_bindings` verifies presence, type, dtype and
// rank against the variant's declarations and rejects unknown names (likely typos).
#pragma once

#include <dlpack/dlpack.h>

#include <cstdint>
#include <map>
#include <string>
#include <variant>

#include "dsl/variant.hpp"

namespace attnjit {

class Bindings {
 public:
  Bindings& set(const std::string& name, int value);
  Bindings& set(const std::string& name, std::int64_t value);  // int params must fit int32 (check_bindings)
  Bindings& set(const std::string& name, double value);
  Bindings& set(const std::string& name, const DLTensor& tensor);  // a non-owning view

  const std::map<std::string, std::variant<std::int64_t, double>>& scalars() const { return scalars_; }
  const std::map<std::string, DLTensor>& tensors() const { return tensors_; }

 private:
  std::map<std::string, std::variant<std::int64_t, double>> scalars_;
  std::map<std::string, DLTensor> tensors_;
};

// Throws UserError naming the field, the value, what is allowed and the remedy.
void check_bindings(const Variant& variant, const Bindings& bindings);

// The bound value of a parameter as the evaluator wants it (int params must get integers).
std::int64_t bound_int(const Bindings& bindings, const std::string& name);
double bound_float(const Bindings& bindings, const std::string& name);

}  // namespace attnjit
