// The kernel-template contract (compiler/kernel_template): the registry picks the best
// template that can implement a request and falls back on NotSupported, stops on Invalid,
// honours a forced name; knobs resolve on top of the defaults and unknown ones are refused;
// launch plans order the block-mask kernel before the forward kernel and size the
// workspace; a hook whose signature drifts from the template's prototype fails to compile
// at the signature check. Also the arch "auto" picks for a GPU of each generation.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "compiler/codegen.hpp"
#include "compiler/error.hpp"
#include "compiler/kernel_template.hpp"
#include "dsl/presets.hpp"
#include "runtime/driver/nvrtc_compiler.hpp"
#include "templates/abi.h"
#include "templates/block_mask/block_mask_template.hpp"

namespace attnjit {
namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an attnjit::Error, nothing was thrown";
  return "";
}

TemplateRequest request_for(const Variant& v, const std::string& arch = "sm_90a", int head_dim = 128) {
  TemplateRequest r;
  r.variant = &v;
  r.arch = arch;
  r.head_dim = head_dim;
  return r;
}

// A template that answers what it is told to, to drive the registry's choice.
class ScriptedTemplate : public KernelTemplate {
 public:
  ScriptedTemplate(std::string name, int priority, Support answer)
      : name_(std::move(name)), priority_(priority), answer_(std::move(answer)) {}
  std::string name() const override { return name_; }
  std::string description() const override { return "scripted"; }
  std::vector<std::string> archs() const override { return {"sm_90a"}; }
  int priority() const override { return priority_; }
  Support can_implement(const TemplateRequest&) const override { return answer_; }
  std::vector<KnobSpec> knob_space(int) const override { return {{"tile", {1, 2}, "a knob"}}; }
  Knobs default_knobs(const TemplateRequest&) const override { return Knobs{{"tile", 1}}; }
  Support check_knobs(const Knobs& k, int, int) const override {
    return k.get("tile") == 1 || k.get("tile") == 2 ? Support::yes() : Support::invalid("tile must be 1 or 2");
  }
  std::vector<HookPrototype> hooks() const override { return {}; }
  GeneratedUnit generate(const TemplateRequest&) const override { return {}; }
  LaunchPlan launch_plan(const GeneratedUnit&, const ProblemShape&) const override { return {}; }

 private:
  std::string name_;
  int priority_;
  Support answer_;
};

TEST(TemplateRegistry, BuiltinsAreRegisteredAndTheForwardOneIsChosen) {
  const auto& registry = TemplateRegistry::instance();
  ASSERT_NE(registry.find("fwd_sm80"), nullptr);
  ASSERT_NE(registry.find("block_mask"), nullptr);
  EXPECT_EQ(registry.find("block_mask")->role(), TemplateRole::Helper);
  ASSERT_NE(registry.find("fwd_sm90"), nullptr);
  const Variant causal = presets::by_name("causal");
  // The Hopper template where wgmma exists (RoPE too, through pre-passes), the sm80 one
  // everywhere else and for what the Hopper one declines (head dims other than 64/128/256).
  for (const std::string arch : {"sm_80", "sm_86", "sm_89", "sm_90"})
    EXPECT_EQ(registry.select(request_for(causal, arch), "").name(), "fwd_sm80") << arch;
  EXPECT_EQ(registry.select(request_for(causal, "sm_90a"), "").name(), "fwd_sm90");
  const Variant rope = presets::by_name("rope_causal");
  EXPECT_EQ(registry.select(request_for(rope, "sm_90a"), "").name(), "fwd_sm90");
}

TEST(TemplateRegistry, FallsBackOnNotSupportedAndStopsOnInvalid) {
  const Variant causal = presets::by_name("causal");
  TemplateRegistry registry;
  registry.add(std::make_unique<ScriptedTemplate>("fast", 10, Support::no("needs a feature")));
  registry.add(std::make_unique<ScriptedTemplate>("fallback", 0, Support::yes()));
  EXPECT_EQ(registry.select(request_for(causal), "").name(), "fallback");
  // Forcing the one that cannot: its reason, as the user's error.
  EXPECT_TRUE(contains(error_of([&] { registry.select(request_for(causal), "fast"); }), "needs a feature"));
  // An arch no template serves: every template's reason.
  const std::string none = error_of([&] { registry.select(request_for(causal, "sm_80"), ""); });
  EXPECT_TRUE(contains(none, "fast: does not compile for sm_80")) << none;
  EXPECT_TRUE(contains(none, "fallback: does not compile for sm_80")) << none;

  TemplateRegistry stops;
  stops.add(std::make_unique<ScriptedTemplate>("strict", 10, Support::invalid("rotary_dim 300 exceeds head_dim")));
  stops.add(std::make_unique<ScriptedTemplate>("lenient", 0, Support::yes()));
  EXPECT_TRUE(contains(error_of([&] { stops.select(request_for(causal), ""); }), "rotary_dim 300"));

  EXPECT_THROW(registry.add(std::make_unique<ScriptedTemplate>("fast", 1, Support::yes())), InternalError);
  const std::string unknown = error_of([&] { registry.get("nope"); });
  EXPECT_TRUE(contains(unknown, "fast, fallback")) << unknown;
}

TEST(TemplateRegistry, HelperTemplatesCannotBeForced) {
  const Variant doc = presets::by_name("document_causal");
  const std::string e = error_of([&] { TemplateRegistry::instance().select(request_for(doc), "block_mask"); });
  EXPECT_TRUE(contains(e, "helper")) << e;
}

TEST(KernelTemplate, KnobsResolveOnTheDefaultAndUnknownOnesAreRefused) {
  const Variant causal = presets::by_name("causal");
  const KernelTemplate& t = TemplateRegistry::instance().get("fwd_sm80");
  const TemplateRequest r = request_for(causal, "sm_90a", 64);
  const Knobs k = t.resolve_knobs(r, Knobs{{"block_n", 32}});
  EXPECT_EQ(k.get("block_n"), 32);
  EXPECT_EQ(k.get("block_m"), Schedule::default_for(64).block_m);
  EXPECT_EQ(k.values().size(), t.knob_space(64).size());
  const std::string e = error_of([&] { t.resolve_knobs(r, Knobs{{"tile_k", 2}}); });
  EXPECT_TRUE(contains(e, "no knob 'tile_k'")) << e;
  EXPECT_TRUE(contains(e, "block_m, block_n, warps, stages")) << e;

  EXPECT_TRUE(t.check_knobs(k, 64, 227 * 1024).supported());
  const Support bad =
      t.check_knobs(Knobs{{"block_m", 96}, {"block_n", 64}, {"warps", 4}, {"stages", 1}}, 64, 227 * 1024);
  EXPECT_EQ(bad.kind(), Support::Kind::Invalid);
  EXPECT_TRUE(contains(bad.reason(), "block_m 96")) << bad.reason();
  // Every value of the declared space is one the template accepts somewhere.
  for (const auto& spec : t.knob_space(64)) EXPECT_FALSE(spec.values.empty()) << spec.name;
}

TEST(KernelTemplate, LaunchPlanPutsTheBlockMaskFirstAndSizesTheWorkspace) {
  const KernelTemplate& t = TemplateRegistry::instance().get("fwd_sm80");
  const Variant doc = presets::by_name("document_causal");
  TemplateRequest r = request_for(doc, "sm_90a", 64);
  r.knobs = t.resolve_knobs(r, Knobs{{"block_m", 128}, {"block_n", 64}});
  const GeneratedUnit unit = t.generate(r);
  EXPECT_EQ(unit.kernel_names, (std::vector<std::string>{"attnjit_block_mask", "attnjit_fwd"}));
  const ProblemShape problem{2, 3, 3, 1000, 1537};
  const LaunchPlan plan = t.launch_plan(unit, problem);
  ASSERT_EQ(plan.kernels.size(), 2u);
  EXPECT_EQ(plan.kernels[0].role, BlockMaskTemplate::kRole);
  EXPECT_EQ(plan.kernels[1].role, "forward");
  const unsigned q_tiles = (1000 + 127) / 128, kv_tiles = (1537 + 63) / 64;
  // document_causal mentions b (doc[b, ...]) but not h: one plane per batch.
  EXPECT_EQ(plan.workspace_bytes, std::size_t{2} * q_tiles * kv_tiles);
  EXPECT_EQ(plan.kernels[0].grid.x, kv_tiles);
  EXPECT_EQ(plan.kernels[1].grid.x, q_tiles);
  EXPECT_EQ(plan.kernels[1].grid.y, 3u);
  EXPECT_EQ(plan.kernels[1].grid.z, 2u);
  EXPECT_EQ(plan.kernels[1].block.x, 4u * 32u);
  EXPECT_EQ(plan.kernels[1].dynamic_shared_bytes, Schedule::from_knobs(r.knobs).shared_memory_bytes(64));
  AttnjitFwdArgs args{};
  plan.bind_workspace(args, 4096);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(args.tile_classes), 4096u);
  EXPECT_EQ(args.tile_class_stride[0], static_cast<long long>(q_tiles) * kv_tiles);
  EXPECT_EQ(args.tile_class_stride[1], 0);

  const Variant causal = presets::by_name("causal");
  TemplateRequest rc = request_for(causal, "sm_90a", 64);
  rc.knobs = t.resolve_knobs(rc, {});
  const LaunchPlan plain = t.launch_plan(t.generate(rc), problem);
  ASSERT_EQ(plain.kernels.size(), 1u);
  EXPECT_EQ(plain.workspace_bytes, 0u);
}

TEST(KernelTemplate, TheBlockMaskTemplateBuildsAUnitOfItsOwn) {
  const KernelTemplate& bm = TemplateRegistry::instance().get("block_mask");
  const Variant causal = presets::by_name("causal");
  EXPECT_EQ(bm.can_implement(request_for(causal)).kind(), Support::Kind::NotSupported);
  const Variant doc = presets::by_name("document");
  TemplateRequest r = request_for(doc, "sm_80", 64);
  ASSERT_TRUE(bm.can_implement(r).supported());
  r.knobs = bm.resolve_knobs(r, {});
  const GeneratedUnit unit = bm.generate(r);
  EXPECT_EQ(unit.kernel_names, (std::vector<std::string>{"attnjit_block_mask"}));
  const auto cubin = runtime::compile_to_cubin(unit.body, runtime::NvrtcCompileOptions().set_arch("sm_80"));
  EXPECT_FALSE(cubin.cubin.empty());
}

TEST(KernelTemplate, AHookThatDriftsFromItsPrototypeFailsAtTheSignatureCheck) {
  const KernelTemplate& t = TemplateRegistry::instance().get("fwd_sm80");
  const Variant alibi = presets::by_name("alibi_causal");
  TemplateRequest r = request_for(alibi, "sm_80", 64);
  r.knobs = t.resolve_knobs(r, {});
  std::string body = t.generate(r).body;
  // The generated definition (not the prototype) takes a double score.
  const std::string def =
      "__device__ __forceinline__ float aj_score_mod(float score, int b, int h, int q, int kv, "
      "const AttnjitFwdArgs& args) {";
  const auto at = body.find(def);
  ASSERT_NE(at, std::string::npos);
  body.replace(at, def.size(),
               "__device__ __forceinline__ float aj_score_mod(double score, int b, int h, int q, int kv, "
               "const AttnjitFwdArgs& args) {");
  const std::string e =
      error_of([&] { runtime::compile_to_cubin(body, runtime::NvrtcCompileOptions().set_arch("sm_80")); });
  EXPECT_TRUE(contains(e, "aj_score_mod")) << e.substr(0, 2000);
}

TEST(HookPrototype, DeclarationAndPointerType) {
  const HookPrototype p{"aj_mask_mod", "bool", "int b, int h, int q, int kv, const AttnjitFwdArgs& args"};
  EXPECT_EQ(p.declaration(),
            "__device__ __forceinline__ bool aj_mask_mod(int b, int h, int q, int kv, const AttnjitFwdArgs& args);");
  EXPECT_EQ(p.pointer_type(), "bool (*)(int, int, int, int, const AttnjitFwdArgs&)");
}

TEST(AutoArch, EachGenerationGetsATargetOrAClearError) {
  EXPECT_EQ(runtime::choose_auto_arch(8, 0), "sm_80");
  EXPECT_EQ(runtime::choose_auto_arch(8, 6), "sm_86");
  EXPECT_EQ(runtime::choose_auto_arch(8, 9), "sm_89");
  EXPECT_EQ(runtime::choose_auto_arch(9, 0), "sm_90a");
  EXPECT_THROW(runtime::choose_auto_arch(7, 5), UserError);
  const std::string future = error_of([] { runtime::choose_auto_arch(99, 0); });
  EXPECT_TRUE(contains(future, "sm_990")) << future;
  EXPECT_TRUE(contains(future, "newest target")) << future;
  // A newer GPU gets its own target when this NVRTC has it, and the forward template serves it.
  if (runtime::is_supported_architecture("sm_120")) {
    EXPECT_EQ(runtime::choose_auto_arch(12, 0), "sm_120");
    EXPECT_TRUE(TemplateRegistry::instance().get("fwd_sm80").serves("sm_120"));
  }
}

}  // namespace
}  // namespace attnjit
