// attnjit command-line tool: entry point. Subcommands live in their own files.
#include <fmt/format.h>

#include <cstdio>

#include "compiler/error.hpp"
#include "tools/cli/commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"attnjit: a JIT compiler for attention variants"};
  app.require_subcommand(1);
  attnjit::cli::register_demo_command(app);
  attnjit::cli::register_variant_commands(app);
  attnjit::cli::register_kernel_commands(app);
  attnjit::cli::register_tune_command(app);
  attnjit::cli::register_templates_command(app);
  attnjit::cli::register_cache_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const attnjit::UserError& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  } catch (const attnjit::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 2;
  }
  return 0;
}
