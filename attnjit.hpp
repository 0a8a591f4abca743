// attnjit: the umbrella header. Describe an attention variant with the DSL, compile it,
// and run it. See README.md and examples/.
#pragma once

#include "compiler/error.hpp"
#include "compiler/ir.hpp"
#include "dsl/expr.hpp"
#include "dsl/parser.hpp"
#include "dsl/presets.hpp"
#include "dsl/variant.hpp"
#include "runtime/api/attention.hpp"
#include "runtime/api/bindings.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/reference/forward_check.hpp"
#include "runtime/reference/reference.hpp"
