// Subcommands of the `attnjit` CLI; each file under tools/cli/ registers one group.
#pragma once

#include <CLI/CLI.hpp>

namespace attnjit::cli {

// Every register_* function adds its subcommand(s) to `app`. A subcommand's callback
// throws attnjit::Error for failures; main() prints it and sets a non-zero exit code.
void register_variant_commands(CLI::App& app);
void register_demo_command(CLI::App& app);
void register_cache_commands(CLI::App& app);
void register_kernel_commands(CLI::App& app);    // emit, compile, check
void register_tune_command(CLI::App& app);       // tune (and the tuning database)
void register_templates_command(CLI::App& app);  // templates

}  // namespace attnjit::cli
