// Access to the CUDA kernel templates (DESIGN §2 templates/). The build embeds templates/*.cuh
// and templates/*.h into the library as a string table, so a user's machine needs no template
// files; during template development ATTNJIT_TEMPLATE_DIR points at a folder whose files are
// read instead. template_set_version() fingerprints the embedded set for the kernel cache key,
// so a library built with different templates never reuses another build's cubins.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace attnjit {
namespace detail {
// Generated at build time by cmake/EmbedTemplatesScript.cmake: file name -> content.
const std::vector<std::pair<std::string_view, std::string_view>>& embedded_templates();
}  // namespace detail

namespace runtime {

// The template text for `name` (a bare file name such as "abi.h"). With ATTNJIT_TEMPLATE_DIR
// set, reads <dir>/<name> (UserError if missing); otherwise the embedded copy (InternalError
// listing the available names if unknown).
std::string load_template(std::string_view name);

// Names of the embedded templates, sorted.
std::vector<std::string> embedded_template_names();

// XXH3-128 (32 hex chars) over every embedded template's name and content.
const std::string& template_set_version();

}  // namespace runtime
}  // namespace attnjit
