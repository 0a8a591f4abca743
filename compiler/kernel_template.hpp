// The kernel-template contract (DESIGN §3.0): what every kernel family (the sm80 forward,
// the block-mask builder, and the Hopper forward, backward and decode templates to come)
// declares so that one path takes any variant from the DSL to a launch.
//
// A template is a folder templates/<name>/ (its .cuh sources and a descriptor, a class
// deriving from KernelTemplate) plus one registration line in templates/registry.cpp.
// The descriptor answers, in this order:
//   can_implement(request)  Supported | NotSupported(why) | Invalid(the user's mistake).
//                           NotSupported makes the dispatcher try the next template;
//                           Invalid stops it (CUTLASS keeps kErrorNotSupported apart from
//                           kErrorInvalidProblem for the same reason).
//   knob_space / defaults   its own schedule settings; the CLI's flags, the autotuner's
//                           candidates and the tuning database are made from them.
//   hooks()                 the hook functions it calls; their prototypes go into the
//                           generated unit so that a mismatch is a compile error there.
//   generate(request)       the translation unit body: shared preamble, its configuration
//                           macros, the hooks, its kernel sources.
//   launch_plan(...)        the kernels in order with grid / block / cluster / shared
//                           memory, and the workspace they share.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "compiler/codegen/hook_emitter.hpp"
#include "compiler/knobs.hpp"
#include "compiler/schedule.hpp"
#include "dsl/variant.hpp"

struct AttnjitFwdArgs;

namespace attnjit {

// The problem a kernel is launched on (or, at compile time, mostly run on).
struct ProblemShape {
  int batch = 1, heads_q = 1, heads_kv = 1, seq_q = 1, seq_k = 1;
  // The device a launch plan is made for (grid-size heuristics); 0: unknown, an H100 assumed.
  int multiprocessors = 0;
  int max_shared_bytes_per_block = 0;
  std::string str() const;  // "B=1 Hq=4 Hkv=4 Sq=1000 Sk=1537"
  int multiprocessors_or_default() const { return multiprocessors > 0 ? multiprocessors : 132; }
};

// What a template computes: compile() picks among Forward templates, Kernel::backward among
// Backward ones; Helper templates (the block mask) serve other templates.
enum class TemplateRole { Forward, Backward, Helper };
std::string_view template_role_name(TemplateRole role);  // "forward", "backward", "helper"

// What to build: the variant, the target and the template's knobs (complete once resolved).
struct TemplateRequest {
  TemplateRole role = TemplateRole::Forward;
  const Variant* variant = nullptr;
  std::string arch;  // sm_80, sm_86, sm_89, sm_90, sm_90a
  int head_dim = 128;
  ElementType dtype = ElementType::BF16;
  Knobs knobs;
  std::optional<ProblemShape> problem;  // known at compile time only when hinted
  // A unit for ragged batches (Kernel::forward_ragged): per-sequence offsets and lengths.
  bool ragged = false;
};

class Support {
 public:
  enum class Kind { Supported, NotSupported, Invalid };
  static Support yes() { return Support(Kind::Supported, ""); }
  static Support no(std::string why) { return Support(Kind::NotSupported, std::move(why)); }
  static Support invalid(std::string user_error) { return Support(Kind::Invalid, std::move(user_error)); }

  Kind kind() const { return kind_; }
  bool supported() const { return kind_ == Kind::Supported; }
  const std::string& reason() const { return reason_; }

 private:
  Support(Kind kind, std::string reason) : kind_(kind), reason_(std::move(reason)) {}
  Kind kind_;
  std::string reason_;
};

// A hook the template's kernels call, as the generated unit must define it.
struct HookPrototype {
  std::string name;                 // aj_score_mod
  std::string return_type;          // float
  std::string parameters;           // "float score, int b, int h, int q, int kv, const AttnjitFwdArgs& args"
  std::string condition;            // a macro the hooks define ("AJ_HAS_ROPE"): called only when it is 1; empty: always
  std::string declaration() const;  // "__device__ __forceinline__ float aj_score_mod(...);"
  std::string pointer_type() const;  // "float (*)(float, int, ...)" for the signature check
};

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

// One kernel launch of a plan. `role` names what it does ("forward", "block_mask"): a
// caller may run part of a plan (build a block mask once, reuse it across forward calls).
struct KernelLaunch {
  std::string kernel;  // entry point in the generated unit
  std::string role;
  Dim3 grid, block, cluster;
  int dynamic_shared_bytes = 0;
};

// Bytes of one part of a launch plan's workspace, rounded up so that the next part starts
// 256-byte aligned.
inline std::size_t workspace_aligned(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

struct LaunchPlan {
  std::vector<KernelLaunch> kernels;  // launched in order, on one stream
  std::size_t workspace_bytes = 0;    // device scratch shared by the kernels; 0: none
  // Points the argument block at the workspace (called only when workspace_bytes > 0).
  std::function<void(AttnjitFwdArgs&, std::uint64_t workspace)> bind_workspace;
  // When the plan builds a block mask (kernels with role "block_mask"): its size, a part of
  // the workspace, and how to point the argument block at a mask elsewhere, which is how a
  // prebuilt one is used (its kernels are then skipped) and how one is built on its own.
  std::size_t block_mask_bytes = 0;
  std::function<void(AttnjitFwdArgs&, std::uint64_t tile_classes)> bind_block_mask;
  // A tensor derived from a bound one by the plan's kernel of role "tensor_runs" (the runs of a
  // document mask's ids, HookFacts::runs_slot): its args.tensors[] slot and its source's. The
  // runtime sizes it from the bound source ([size0, size1, 2] i32, after the workspace) and
  // binds it. -1: none.
  int runs_slot = -1;
  int runs_source = -1;
  // Counters between the CTAs of a launch (e.g. which split finishes last), which the kernels
  // leave at zero: the runtime keeps them per stream, zeroed once when allocated, apart from
  // the workspace. 0: none.
  std::size_t zeroed_bytes = 0;
  std::function<void(AttnjitFwdArgs&, std::uint64_t counters)> bind_zeroed;
  // The argument block the plan's kernels take: AttnjitFwdArgs first, then the template's own
  // fields (AttnjitDecodeArgs, AttnjitFwdSm90Args); 0 means AttnjitFwdArgs alone. At most
  // kMaxArgumentBytes, 64-byte aligned by the caller.
  std::size_t args_bytes = 0;
  static constexpr std::size_t kMaxArgumentBytes = 4096;  // the kernel parameter limit
  // Fills the template's own fields from the forward block, once the workspace is bound (TMA
  // descriptors encode the final pointers). Returns "" or why this problem's tensors cannot be
  // served by the plan (e.g. strides a TMA descriptor cannot express); null: nothing to fill.
  std::function<std::string(void* block)> finish_args;
};

// The generated translation unit body (everything but the provenance header) and what the
// runtime needs to launch it.
struct GeneratedUnit {
  std::string body;
  std::string template_name;
  int head_dim = 0;  // the request's (launch plans size their workspaces with it)
  Knobs knobs;
  ArgumentSlots slots;
  HookFacts facts;
  std::vector<std::string> kernel_names;      // entry points, in plan order
  int max_dynamic_shared_bytes = 0;           // the largest of the plan's kernels
  std::vector<std::string> tensor_gradients;  // backward: the captured tensors that get a gradient
};

// Spill stores (bytes) above which prepare() compiles a template's spill_fallback_knobs instead
// of its default knobs. Not 0: alibi_causal's backward at D=128 (sm_90a) spills 12 bytes at
// block_m 64 and still runs 222 TFLOP/s against 199 at the fallback's block_m 32 (H200,
// 2026-11-30); the variants that fall back spill 28-304 there.
inline constexpr int kSpillFallbackBytes = 16;

class KernelTemplate {
 public:
  virtual ~KernelTemplate() = default;

  virtual std::string name() const = 0;
  virtual std::string description() const = 0;
  virtual std::vector<std::string> archs() const = 0;  // the targets it compiles for
  virtual TemplateRole role() const { return TemplateRole::Forward; }
  // Higher is tried first among the templates that serve an arch.
  virtual int priority() const { return 0; }

  virtual Support can_implement(const TemplateRequest& request) const = 0;

  virtual std::vector<KnobSpec> knob_space(int head_dim) const = 0;
  // The measured default for a request (its knobs are ignored).
  virtual Knobs default_knobs(const TemplateRequest& request) const = 0;
  // Knobs to compile instead when the default ones spill more than kSpillFallbackBytes (a
  // variant whose hooks need more registers than the default tile leaves), or none: prepare()
  // then keeps the default.
  virtual std::optional<Knobs> spill_fallback_knobs(const Knobs& /*spilling*/) const { return std::nullopt; }
  // Supported, or Invalid naming the knob, its value and what is allowed (the autotuner
  // prunes with it; `max_shared_bytes` is the device's or the arch's opt-in limit).
  virtual Support check_knobs(const Knobs& knobs, int head_dim, int max_shared_bytes) const = 0;

  virtual std::vector<HookPrototype> hooks() const = 0;
  // The body of the unit for a resolved request (knobs complete and checked).
  virtual GeneratedUnit generate(const TemplateRequest& request) const = 0;
  virtual LaunchPlan launch_plan(const GeneratedUnit& unit, const ProblemShape& problem) const = 0;

  // Every knob of the space set, unknown names rejected: `overrides` on top of the default.
  Knobs resolve_knobs(const TemplateRequest& request, const Knobs& overrides) const;
  bool serves(const std::string& arch) const;
};

// The registered templates (templates/registry.cpp adds the built-in ones).
class TemplateRegistry {
 public:
  static TemplateRegistry& instance();

  void add(std::unique_ptr<KernelTemplate> t);  // InternalError on a duplicate name
  const std::vector<std::unique_ptr<KernelTemplate>>& all() const { return templates_; }
  const KernelTemplate* find(const std::string& name) const;
  // UserError listing the registered names when absent.
  const KernelTemplate& get(const std::string& name) const;

  // The template of the request's role: `forced` by name when non-empty, else the highest
  // priority one serving the arch, having every knob named in request.knobs (the user's
  // overrides), whose can_implement says Supported. Invalid from any
  // template is the user's error (UserError with its reason); when none is Supported, the
  // UserError lists every template's reason.
  const KernelTemplate& select(const TemplateRequest& request, const std::string& forced) const;

 private:
  std::vector<std::unique_ptr<KernelTemplate>> templates_;
};

// Registers the templates that ship with attnjit (templates/registry.cpp).
void register_builtin_templates(TemplateRegistry& registry);

}  // namespace attnjit
