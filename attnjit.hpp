// attnjit: the umbrella header. Describe an attention variant with the DSL, compile it,
// and run it. See README.md and examples/.
#pragma once

#include "compiler/error.hpp"
#include "compiler/ir.hpp"
#include "dsl/expr.hpp"
#include "dsl/parser.hpp"
#include "dsl/presets.hpp"
#include "dsl/variant.hpp"
#include "runtime/attention.hpp"
#include "runtime/bindings.hpp"
#include "runtime/dlpack_view.hpp"
#include "runtime/forward_check.hpp"
#include "runtime/reference.hpp"
