// The kernel templates that ship with attnjit: one line each (DESIGN §3.0). A new template
// is a folder templates/<name>/ with its sources and descriptor, plus a line here.
#include "compiler/kernel_template.hpp"
#include "templates/block_mask/block_mask_template.hpp"
#include "templates/bwd_sm80/bwd_sm80_template.hpp"
#include "templates/bwd_sm90/bwd_sm90_template.hpp"
#include "templates/decode_sm80/decode_sm80_template.hpp"
#include "templates/fwd_sm80/fwd_sm80_template.hpp"
#include "templates/fwd_sm90/fwd_sm90_template.hpp"

namespace attnjit {

void register_builtin_templates(TemplateRegistry& registry) {
  registry.add(make_fwd_sm80_template());
  registry.add(make_fwd_sm90_template());
  registry.add(make_block_mask_template());
  registry.add(make_bwd_sm80_template());
  registry.add(make_bwd_sm90_template());
  registry.add(make_decode_sm80_template());
}

}  // namespace attnjit
