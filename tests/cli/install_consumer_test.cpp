// Packaging: `cmake --install` of this build, then a separate downstream project
// (tests/install/consumer) that does find_package(attnjit CONFIG REQUIRED), links
// attnjit::attnjit, includes <attnjit.hpp>, and runs a tiny causal reference attention.
// Every step must exit 0; the consumer prints the causal variant's text.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "support/process.hpp"

namespace {

using attnjit::test_support::shell_quote;

namespace fs = std::filesystem;

struct Step {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

Step run(const std::string& command) {
  Step s;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return s;
  std::array<char, 4096> buf{};
  while (std::size_t n = fread(buf.data(), 1, buf.size(), pipe)) s.output.append(buf.data(), n);
  const int status = pclose(pipe);
  s.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return s;
}

std::string cache_value(const fs::path& cache, const std::string& key) {
  std::ifstream in(cache);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ":", 0) == 0) return line.substr(line.find('=') + 1);
  return {};
}

TEST(Install, FindPackageConsumerBuildsAndRuns) {
  const auto start = std::chrono::steady_clock::now();
  const fs::path work = fs::temp_directory_path() / ("attnjit_install_test_" + std::to_string(::getpid()));
  fs::remove_all(work);
  fs::create_directories(work);
  const fs::path prefix = work / "prefix";
  const fs::path build = work / "consumer-build";
  const std::string cmake = shell_quote(ATTNJIT_CMAKE_COMMAND);

  const Step install =
      run(cmake + " --install " + shell_quote(ATTNJIT_BINARY_DIR) + " --prefix " + shell_quote(prefix.string()));
  ASSERT_EQ(install.exit_code, 0) << "cmake --install failed:\n" << install.output;
  EXPECT_TRUE(fs::exists(prefix / "include" / "attnjit" / "attnjit.hpp")) << install.output;
  EXPECT_TRUE(fs::exists(prefix / "include" / "attnjit" / "dsl" / "variant.hpp")) << install.output;
  EXPECT_TRUE(fs::exists(prefix / "include" / "attnjit" / "runtime" / "reference" / "reference.hpp")) << install.output;

  const fs::path source = fs::path(ATTNJIT_SOURCE_DIR) / "tests" / "install" / "consumer";
  const Step configure = run(cmake + " -S " + shell_quote(source.string()) + " -B " + shell_quote(build.string()) +
                             " -DCMAKE_BUILD_TYPE=Release -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_PREFIX_PATH=" +
                             shell_quote(prefix.string()));
  ASSERT_EQ(configure.exit_code, 0) << "configuring the consumer failed:\n" << configure.output;
  // The package must come from the fresh prefix, not from anywhere else on the machine.
  const std::string found = cache_value(build / "CMakeCache.txt", "attnjit_DIR");
  EXPECT_EQ(fs::weakly_canonical(found).string().rfind(fs::weakly_canonical(prefix).string(), 0), 0u)
      << "attnjit_DIR=" << found;

  const Step compile = run(cmake + " --build " + shell_quote(build.string()) + " -j 2");
  ASSERT_EQ(compile.exit_code, 0) << "building the consumer failed:\n" << compile.output;

  const Step consumer = run(shell_quote((build / "consumer").string()));
  ASSERT_EQ(consumer.exit_code, 0) << "the consumer failed:\n" << consumer.output;
  EXPECT_NE(consumer.output.find("kv <= q"), std::string::npos) << consumer.output;
  EXPECT_NE(consumer.output.find("reference: finite, mask held"), std::string::npos) << consumer.output;

  const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RecordProperty("seconds", std::to_string(seconds));
  std::printf("install + configure + build + run of the consumer: %.1f s\n", seconds);
  if (!HasFailure()) fs::remove_all(work);
}

}  // namespace
