// Runtime bindings (see bindings.hpp).
#include "runtime/api/bindings.hpp"

#include <fmt/format.h>

#include <cmath>

#include "runtime/api/dlpack_view.hpp"

namespace attnjit {

Bindings& Bindings::set(const std::string& name, int value) {
  scalars_[name] = static_cast<std::int64_t>(value);
  return *this;
}
Bindings& Bindings::set(const std::string& name, std::int64_t value) {
  scalars_[name] = value;  // an int parameter outside int32 is refused by check_bindings
  return *this;
}
Bindings& Bindings::set(const std::string& name, double value) {
  scalars_[name] = value;
  return *this;
}
Bindings& Bindings::set(const std::string& name, const DLTensor& tensor) {
  tensors_[name] = tensor;
  return *this;
}

std::int64_t bound_int(const Bindings& bindings, const std::string& name) {
  const auto& v = bindings.scalars().at(name);
  if (const auto* i = std::get_if<std::int64_t>(&v)) {
    if (*i < INT32_MIN || *i > INT32_MAX)
      throw UserError(
          fmt::format("parameter '{}' is int and was bound to {}, outside the 32-bit range [{}, {}] the "
                      "kernels compute in; bind a value in that range",
                      name, *i, INT32_MIN, INT32_MAX));
    return *i;
  }
  const double d = std::get<double>(v);
  if (d != std::floor(d) || std::fabs(d) > 2147483647.0)
    throw UserError(fmt::format("parameter '{}' is int but was bound to {}; bind a 32-bit integer", name, d));
  return static_cast<std::int64_t>(d);
}

double bound_float(const Bindings& bindings, const std::string& name) {
  const auto& v = bindings.scalars().at(name);
  if (const auto* i = std::get_if<std::int64_t>(&v)) return static_cast<double>(*i);
  return std::get<double>(v);
}

void check_bindings(const Variant& variant, const Bindings& bindings) {
  const auto params = variant.params();
  const auto tensors = variant.tensors();
  std::string declared;
  for (const auto& p : params)
    declared += fmt::format("{}{} ({})", declared.empty() ? "" : ", ", p.name, ir::type_name(p.type));
  for (const auto& t : tensors)
    declared +=
        fmt::format("{}{} ({}, rank {})", declared.empty() ? "" : ", ", t.name, ir::dtype_name(t.dtype), t.rank);
  if (declared.empty()) declared = "nothing";

  for (const auto& p : params) {
    if (!bindings.scalars().count(p.name))
      throw UserError(fmt::format("parameter '{}' ({}) of variant '{}' is not bound; bind it with set(\"{}\", value)",
                                  p.name, ir::type_name(p.type), variant.name(), p.name));
    if (p.type == ir::Type::Int) bound_int(bindings, p.name);  // throws on a non-integer
  }
  for (const auto& [name, value] : bindings.scalars()) {
    bool known = false;
    for (const auto& p : params) known |= p.name == name;
    if (!known)
      throw UserError(fmt::format("binding '{}' names no parameter of variant '{}'; it declares: {}", name,
                                  variant.name(), declared));
  }
  for (const auto& t : tensors) {
    auto it = bindings.tensors().find(t.name);
    if (it == bindings.tensors().end())
      throw UserError(
          fmt::format("tensor '{}' ({}, rank {}) of variant '{}' is not bound; bind it with set(\"{}\", tensor)",
                      t.name, ir::dtype_name(t.dtype), t.rank, variant.name(), t.name));
    const DLTensor& dl = it->second;
    if (!dlpack_dtype_matches(dl.dtype, t.dtype))
      throw UserError(
          fmt::format("tensor '{}' has dtype {} but the variant declares {}; convert it or change the declaration",
                      t.name, dlpack_dtype_name(dl.dtype), ir::dtype_name(t.dtype)));
    if (dl.ndim != t.rank)
      throw UserError(fmt::format("tensor '{}' has rank {} (shape {}) but the variant declares rank {}", t.name,
                                  dl.ndim, shape_string(dlpack_shape(dl)), t.rank));
    if (!dl.data && dl.ndim > 0)
      throw UserError(fmt::format("tensor '{}' has a null data pointer; bind allocated memory", t.name));
  }
  for (const auto& [name, tensor] : bindings.tensors()) {
    bool known = false;
    for (const auto& t : tensors) known |= t.name == name;
    if (!known)
      throw UserError(
          fmt::format("binding '{}' names no tensor of variant '{}'; it declares: {}", name, variant.name(), declared));
  }
}

}  // namespace attnjit
