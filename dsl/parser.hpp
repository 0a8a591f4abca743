// The variant text form's parser. `Variant::parse` reads whole variants; this header
// also exposes single-expression parsing against given declarations (used by the CLI
// and tests). Grammar and semantics: docs/variant-language.md.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "dsl/variant.hpp"

namespace attnjit {

struct Declarations {
  std::map<std::string, ir::Type, std::less<>> params;
  std::map<std::string, TensorDecl, std::less<>> tensors;
};

Expr parse_expression(std::string_view text, const Declarations& declarations = {});

}  // namespace attnjit
