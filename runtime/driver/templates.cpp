// Embedded kernel templates, their development override folder, and their fingerprint.
// See templates.hpp for why this exists.
#include "runtime/driver/templates.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "compiler/error.hpp"

namespace attnjit::runtime {

namespace {

std::string joined_names() {
  std::string out;
  for (const auto& name : embedded_template_names()) out += (out.empty() ? "" : ", ") + name;
  return out;
}

void check_bare_file_name(std::string_view name) {
  if (name.empty() || name.find('/') != std::string_view::npos || name == "." || name == "..") {
    throw UserError(
        fmt::format("template name '{}' is not a bare file name; pass a name such as 'abi.h' (available: {})", name,
                    joined_names()));
  }
}

}  // namespace

std::vector<std::string> embedded_template_names() {
  std::vector<std::string> names;
  for (const auto& [name, content] : detail::embedded_templates()) names.emplace_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

std::string load_template(std::string_view name) {
  check_bare_file_name(name);
  if (const char* dir = std::getenv("ATTNJIT_TEMPLATE_DIR"); dir && *dir) {
    const auto path = std::filesystem::path(dir) / std::string(name);
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      throw UserError(
          fmt::format("template '{}' not found: ATTNJIT_TEMPLATE_DIR is '{}' but {} cannot be read; copy the "
                      "template there (embedded ones: {}) or unset ATTNJIT_TEMPLATE_DIR to use the embedded set",
                      name, dir, path.string(), joined_names()));
    }
    std::ostringstream content;
    content << in.rdbuf();
    return content.str();
  }
  for (const auto& [embedded_name, content] : detail::embedded_templates()) {
    if (embedded_name == name) return std::string(content);
  }
  throw InternalError(
      fmt::format("no embedded template named '{}'; available: {}. The code generator asked for a template "
                  "that the build did not embed (add it under templates/ and rebuild)",
                  name, joined_names()));
}

const std::string& template_set_version() {
  static const std::string version = [] {
    auto entries = detail::embedded_templates();
    std::sort(entries.begin(), entries.end());
    XXH3_state_t state;
    XXH3_128bits_reset(&state);
    for (const auto& [name, content] : entries) {
      for (std::string_view part : {name, content}) {
        const std::uint64_t size = part.size();
        XXH3_128bits_update(&state, &size, sizeof size);
        XXH3_128bits_update(&state, part.data(), part.size());
      }
    }
    const XXH128_hash_t hash = XXH3_128bits_digest(&state);
    return fmt::format("{:016x}{:016x}", hash.high64, hash.low64);
  }();
  return version;
}

}  // namespace attnjit::runtime
