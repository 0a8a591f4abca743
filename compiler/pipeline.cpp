#include "compiler/pipeline.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "compiler/passes/constant_fold.hpp"
#include "compiler/passes/simplify.hpp"
#include "compiler/passes/type_check.hpp"
#include "compiler/printer.hpp"

namespace attnjit::ir {
namespace {

bool dump_ir() {
  const char* dump = std::getenv("ATTNJIT_DUMP");
  return dump && std::strstr(dump, "ir") != nullptr;
}

void dump(std::string_view pass, const std::vector<NamedRoot>& roots) {
  if (!dump_ir()) return;
  fmt::print(stderr, "=== IR after {} ===\n", pass);
  for (const auto& r : roots) fmt::print(stderr, "  {} = {}\n", r.name, print_expr(r.root));
}

void run_pass(std::string_view pass, std::vector<NamedRoot>& roots, const std::function<NodeRef(const NodeRef&)>& f) {
  for (auto& r : roots) {
    r.root = f(r.root);
    type_check(r.root, r.type);
  }
  dump(pass, roots);
}

}  // namespace

LoweredExprs lower(const std::vector<NamedRoot>& input) {
  std::vector<NamedRoot> roots = input;
  for (const auto& r : roots) type_check(r.root, r.type);
  dump("type_check", roots);
  run_pass("constant_fold", roots, constant_fold);
  run_pass("simplify", roots, simplify);
  run_pass("constant_fold (after simplify)", roots, constant_fold);

  std::vector<NodeRef> nodes;
  std::vector<std::string> names;
  for (const auto& r : roots) {
    nodes.push_back(r.root);
    names.push_back(r.name);
  }
  LoweredExprs out{roots, eliminate_common_subexpressions(nodes)};
  if (dump_ir()) fmt::print(stderr, "=== IR after cse ===\n{}", out.program.str(names));
  return out;
}

}  // namespace attnjit::ir
