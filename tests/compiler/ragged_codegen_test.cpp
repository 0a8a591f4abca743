// The ragged-batch unit without a GPU: only fwd_sm80 serves it (and declines masks that read
// tensors), it turns on per-sequence offsets and lengths (RoPE's positions included), and it
// compiles with NVRTC for sm_80 and sm_90a for every preset it serves.
#include <gtest/gtest.h>

#include <string>

#include "compiler/error.hpp"
#include "dsl/presets.hpp"
#include "runtime/api/attention.hpp"
#include "support/temp_cache.hpp"

namespace attnjit {
namespace {

TEST(RaggedCodegen, OnlyFwdSm80ServesItWithPerSequenceLengths) {
  TempKernelCache temp("attnjit_ragged_codegen_");
  CompileOptions o = CompileOptions().with_arch("sm_90a").with_head_dim(128).with_cache(temp.cache());
  o.ragged = true;
  const PreparedKernel p = generate(presets::causal(presets::CausalAlignment::BottomRight), o);
  EXPECT_EQ(p.config.template_name, "fwd_sm80");  // not fwd_sm90, the default on sm_90a
  EXPECT_NE(p.unit.body.find("#define AJ_RAGGED 1"), std::string::npos);
  EXPECT_NE(p.unit.body.find("#define AJ_PER_SEQUENCE_LENGTHS 1"), std::string::npos);
  EXPECT_NE(p.unit.body.find("aj_q_len(b, args)"), std::string::npos);
  for (const char* declined : {"document", "document_causal"}) {
    SCOPED_TRACE(declined);
    EXPECT_THROW(generate(presets::by_name(declined), o), UserError);
  }
  // RoPE: K turns in the pre-pass from each sequence's rows of the packed K, the queries at
  // their sequence's own positions.
  const PreparedKernel rope = generate(presets::by_name("rope_causal"), o);
  EXPECT_NE(rope.unit.body.find("const aj_i64 k_start = args.cu_seqlens_k[b];"), std::string::npos);
  EXPECT_NE(rope.unit.body.find("return q + aj_kv_len(b, args) - aj_q_len(b, args);"), std::string::npos);
  o.ragged = false;
  EXPECT_EQ(generate(presets::causal(), o).unit.body.find("#define AJ_RAGGED 1"), std::string::npos);
}

TEST(RaggedCodegen, EveryServedPresetCompiles) {
  TempKernelCache temp("attnjit_ragged_compile_");
  int compiled = 0, index = 0;
  for (const auto& preset : presets::registry()) {
    const std::string arch = index % 2 ? "sm_80" : "sm_90a";
    const int dim = (index / 2) % 2 ? 64 : 128;
    ++index;
    CompileOptions o = CompileOptions().with_arch(arch).with_head_dim(dim).with_cache(temp.cache());
    o.ragged = true;
    SCOPED_TRACE(preset.name + " " + arch);
    try {
      const PreparedKernel p = prepare(preset.make(), o);
      ASSERT_TRUE(p.cached.cubin);
      ++compiled;
    } catch (const UserError& e) {
      const std::string why = e.what();
      EXPECT_NE(why.find("reads a tensor"), std::string::npos) << why;
    }
  }
  EXPECT_EQ(compiled, static_cast<int>(presets::registry().size()) - 2);  // all but the document masks
}

}  // namespace
}  // namespace attnjit
