// Tests for runtime/templates: the embedded table, the ATTNJIT_TEMPLATE_DIR override, errors,
// and the template-set fingerprint used in the cache key.
#include "runtime/driver/templates.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "compiler/error.hpp"

namespace attnjit::runtime {
namespace {

// Unsets ATTNJIT_TEMPLATE_DIR (or sets it) for one test and restores it afterwards.
class TemplateDirOverride {
 public:
  explicit TemplateDirOverride(const char* value) {
    if (const char* old = getenv("ATTNJIT_TEMPLATE_DIR")) saved_ = old, had_ = true;
    if (value)
      setenv("ATTNJIT_TEMPLATE_DIR", value, 1);
    else
      unsetenv("ATTNJIT_TEMPLATE_DIR");
  }
  ~TemplateDirOverride() {
    if (had_)
      setenv("ATTNJIT_TEMPLATE_DIR", saved_.c_str(), 1);
    else
      unsetenv("ATTNJIT_TEMPLATE_DIR");
  }

 private:
  std::string saved_;
  bool had_ = false;
};

TEST(Templates, AbiHeaderIsEmbeddedAndMatchesTheSourceTree) {
  TemplateDirOverride none(nullptr);
  const auto names = embedded_template_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "abi.h"), names.end());
  const auto abi = load_template("abi.h");
  EXPECT_NE(abi.find("struct AttnjitFwdArgs"), std::string::npos);
  std::ifstream in(std::string(ATTNJIT_SOURCE_DIR) + "/templates/abi.h", std::ios::binary);
  std::string on_disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(abi, on_disk);
}

TEST(Templates, UnknownEmbeddedNameIsAnInternalErrorListingNames) {
  TemplateDirOverride none(nullptr);
  try {
    load_template("no_such_template.cuh");
    FAIL() << "expected InternalError";
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("no_such_template.cuh"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("abi.h"), std::string::npos);
  }
  EXPECT_THROW(load_template("../abi.h"), UserError);
}

TEST(Templates, OverrideFolderIsReadInstead) {
  const auto dir = std::filesystem::temp_directory_path() / "attnjit-template-override-test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "abi.h") << "// overridden\n";
  TemplateDirOverride set(dir.c_str());
  EXPECT_EQ(load_template("abi.h"), "// overridden\n");
  try {
    load_template("missing.cuh");
    FAIL() << "expected UserError";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("ATTNJIT_TEMPLATE_DIR"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("missing.cuh"), std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

TEST(Templates, SetVersionIsAStable128BitHex) {
  const auto& version = template_set_version();
  EXPECT_EQ(version.size(), 32u);
  EXPECT_EQ(version.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(version, template_set_version());
}

}  // namespace
}  // namespace attnjit::runtime
