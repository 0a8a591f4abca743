// Running a shell command from a test: stdout and stderr captured apart, the exit code
// decoded. Shared by the tests that drive the `attnjit` CLI and the install consumer.
#pragma once

#include <filesystem>
#include <string>

namespace attnjit::test_support {

struct CommandResult {
  int exit_code = -1;     // -1 when the command did not exit normally
  bool signaled = false;  // killed by a signal (a crash)
  std::string out;
  std::string err;
};

// Quotes `s` for the POSIX shell.
std::string shell_quote(const std::string& s);

// The whole file, or "" when it cannot be read.
std::string read_file(const std::filesystem::path& path);

bool contains(const std::string& haystack, const std::string& needle);

// Runs `command` with /bin/sh; stderr goes through `stderr_path` (removed afterwards).
CommandResult run_command(const std::string& command, const std::filesystem::path& stderr_path);

}  // namespace attnjit::test_support
