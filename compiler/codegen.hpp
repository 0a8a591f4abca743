// Codegen: the pieces every kernel template assembles its translation unit from, so that
// no template copies them. A unit is self-contained for NVRTC (no includes, no include
// path): a provenance header (variant text, template, knobs, cache key), the kernel ABI
// (templates/abi.h), the shared helpers, the template's configuration macros, the hook
// prototypes it calls, the hooks generated from the variant (keeping the user's names),
// a signature check per hook, and the template's kernel sources. The code is meant to be read.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "compiler/kernel_template.hpp"

namespace attnjit {

// The start of every template's generate(): the template's name, the request's head dim and
// knobs, the variant's argument slots, and its hooks emitted into `emitted` (the unit keeps
// their facts).
// `run_masks`: the template reads a document mask's runs (BlockMaskTemplate::runs_section and
// add_runs) where the mask has one (add_run_slots).
GeneratedUnit start_unit(const std::string& template_name, const TemplateRequest& request, EmittedHooks& emitted,
                         bool run_masks = false);

// abi.h, common.cuh and hooks.cuh: what every generated unit starts with; `helper_macros`
// (e.g. AJ_TANH_ON_FMA 1) are defined ahead of them, as choices among the shared helpers.
std::string unit_preamble(const std::vector<std::pair<std::string, std::string>>& helper_macros = {});

// `#define NAME VALUE` lines under a comment naming who set them.
std::string macro_block(const std::string& title, const std::vector<std::pair<std::string, std::string>>& macros);

// The template's hook prototypes, the generated hooks, then one static_assert per hook that
// fails at a readable line when a generated hook's signature drifts from the prototype.
std::string hook_section(const std::vector<HookPrototype>& prototypes, const EmittedHooks& hooks);

// The full translation unit: the provenance header followed by unit.body.
std::string with_provenance(const GeneratedUnit& unit, const Variant& variant, const TemplateRequest& request,
                            const std::string& cache_key);

// The hooks every attention template calls (score_mod, mask_mod, tile class).
std::vector<HookPrototype> attention_hook_prototypes();
// The row hooks (RoPE at load, the output gate at the epilogue), each under the macro the
// emitted hooks define (AJ_HAS_ROPE, AJ_HAS_OUTPUT_GATE).
std::vector<HookPrototype> row_hook_prototypes();
// Both: what a forward template that serves every variant (RoPE and gate included) declares.
std::vector<HookPrototype> forward_hook_prototypes();

}  // namespace attnjit
