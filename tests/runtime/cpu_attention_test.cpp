// The CPU backend (runtime/cpu) against the fp64 reference: every preset of the registry
// (RoPE and the output gate included: the backend applies them in fp32) and a few
// compositions, bf16 and fp32 inputs, GQA 4:1, odd lengths both ways (Sq = 67, Sk = 131 and
// Sq = 131, Sk = 67, where bottom-right masks leave rows fully masked), small tiles so that
// the online softmax crosses many tiles, a BSHD layout, fp16, MQA. Hooks are interpreted
// (so these run without LLVM) and, when this build has the LLVM JIT, JIT-compiled too.
// Also: tile classes (empty tiles skipped, masks only on partial tiles), errors.
#include <gtest/gtest.h>
#include <pmmintrin.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "compiler/error.hpp"
#include "dsl/presets.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/cpu/cpu_attention.hpp"
#include "runtime/cpu/cpu_check.hpp"
#include "runtime/cpu/cpu_kernels.hpp"
#include "runtime/cpu/thread_pool.hpp"

namespace attnjit {
namespace {

// Parameter values that make every mask a mix of empty, partial and full tiles at these
// lengths (the GPU tests' values are sized for sequences ~1000 long), and a soft-cap that bites.
Bindings small_scalars(const Variant& v) {
  Bindings b;
  for (const auto& p : v.params()) {
    if (p.name == "window")
      b.set("window", 40);
    else if (p.name == "prefix_len")
      b.set("prefix_len", 30);
    else if (p.name == "softcap")
      b.set("softcap", 2.0);
    else if (p.name == "stride")
      b.set("stride", 4);
    else if (p.name == "local")
      b.set("local", 16);
    else if (p.name == "group")
      b.set("group", 32);
    else
      ADD_FAILURE() << "no test value for parameter " << p.name;
  }
  return b;
}

std::vector<CpuHookSource> sources() {
  std::vector<CpuHookSource> s = {CpuHookSource::Interpreted};
  if (cpu_backend_has_jit()) s.push_back(CpuHookSource::Jit);
  return s;
}

std::string dtype_label(DLDataType t) { return dlpack_dtype_name(t); }

void expect_pass(const Variant& variant, const ForwardProblem& problem, int head_dim, DLDataType dtype,
                 const CpuOptions& options, std::uint64_t seed = 7) {
  for (const CpuHookSource source : sources()) {
    const CpuAttention attention = compile_cpu(variant, CpuOptions(options).with_hooks(source));
    const ForwardCheckResult r = check_cpu_forward(attention, problem, head_dim, dtype, small_scalars(variant), seed);
    EXPECT_TRUE(r.pass) << variant.name() << " " << dtype_label(dtype) << " D=" << head_dim << " " << problem.str()
                        << " hooks=" << cpu_hook_source_name(source) << ": " << r.summary();
    EXPECT_EQ(r.rows_checked, r.rows_total) << "small problems are compared on every row";
  }
}

ForwardProblem gqa(int seq_q, int seq_k) {
  ForwardProblem p;
  p.batch = 2;
  p.heads_q = 8;
  p.heads_kv = 2;  // GQA 4:1
  p.seq_q = seq_q;
  p.seq_k = seq_k;
  return p;
}

// ---- every preset --------------------------------------------------------------------

struct PresetCase {
  std::string preset;
  bool bf16;
};

class CpuPresetTest : public ::testing::TestWithParam<PresetCase> {};

TEST_P(CpuPresetTest, PassesTheReferenceCheck) {
  const Variant v = presets::by_name(GetParam().preset);
  const DLDataType dtype = GetParam().bf16 ? dlpack_bfloat16() : dlpack_float32();
  // Default tiles (64 x 256): one or two tiles per row of the problem.
  expect_pass(v, gqa(67, 131), 64, dtype, CpuOptions());
  // Small tiles: 16 query rows by 64 keys, so rows cross several tiles and partial ones.
  expect_pass(v, gqa(67, 131), 64, dtype, CpuOptions().with_blocks(16, 64), 11);
}

TEST_P(CpuPresetTest, MoreQueriesThanKeys) {
  const Variant v = presets::by_name(GetParam().preset);
  ForwardProblem p = gqa(131, 67);
  bool reads_below_zero = false;  // e.g. forget_gate reads c[q + kv_len - q_len], negative here
  for (const auto& decl : v.tensors()) try {
      covering_tensor_shape(v, decl, p, small_scalars(v), 64);
    } catch (const UserError&) {
      reads_below_zero = true;
    }
  if (reads_below_zero) GTEST_SKIP() << v.name() << " reads tensors at negative indices when Sq > Sk";
  expect_pass(v, p, 64, GetParam().bf16 ? dlpack_bfloat16() : dlpack_float32(), CpuOptions().with_blocks(32, 64));
}

std::vector<PresetCase> preset_cases() {
  std::vector<PresetCase> cases;
  for (const auto& info : presets::registry())
    for (const bool bf16 : {true, false}) cases.push_back({info.name, bf16});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Registry, CpuPresetTest, ::testing::ValuesIn(preset_cases()),
                         [](const ::testing::TestParamInfo<PresetCase>& info) {
                           return info.param.preset + (info.param.bf16 ? "_bf16" : "_f32");
                         });

// ---- compositions, layouts, dtypes ---------------------------------------------------

TEST(CpuAttention, Compositions) {
  using presets::CausalAlignment;
  const std::vector<Variant> variants = {
      presets::alibi().then(presets::prefix_lm()).with_name("alibi_prefix"),
      presets::softcap().then(presets::document()).with_name("softcap_document"),
      presets::relative_bias().then(presets::sliding_window()).with_name("relbias_window"),
      presets::strided().then(presets::softcap()).with_name("strided_softcap"),
      presets::rope().then(presets::alibi()).then(presets::causal()).with_name("rope_alibi_causal"),
      presets::output_gate(OutputGateHook{"gate", ir::TensorDType::F32, 4})
          .then(presets::causal(CausalAlignment::BottomRight))
          .with_name("gate4_causal_br"),
      Variant::parse("variant \"custom_text\";\n"
                     "score: score * 0.5 + where(kv % 3 == 0, -1.0, 0.25);\n"
                     "mask: (q + kv) % 5 != 1;\n"),
      // Every operator the interpreter has a loop for, and some it evaluates through apply_op.
      Variant::parse("variant \"operators\";\n"
                     "param softcap: float;\n"
                     "score: min(max(score, -4.0), 4.0) + log(abs(score) + 1.0) - sqrt(abs(score)) / 3.0"
                     " + exp2(-float(abs(kv - q) % 7)) + sigmoid(score) * tanh(score / softcap)"
                     " + floor(score * 2.0) / 4.0 + float(int(score * 3.0) - (kv - 40) / 9)"
                     " + where(score > 0.0 && kv >= q || !(kv != 2 * q), exp(-abs(score)), float(min(q, kv) - max(h, "
                     "b)) / 50.0);\n"
                     "mask: kv - q <= 50 && (kv + 1) / 4 != q / 3 || kv == 0;\n"),
  };
  for (const Variant& v : variants) {
    expect_pass(v, gqa(67, 131), 64, dlpack_bfloat16(), CpuOptions().with_blocks(16, 64));
    expect_pass(v, gqa(67, 131), 64, dlpack_float32(), CpuOptions());
  }
}

TEST(CpuAttention, LayoutsDtypesAndHeadDims) {
  ForwardProblem bshd = gqa(67, 131);
  bshd.bshd_layout = true;
  expect_pass(presets::causal(), bshd, 64, dlpack_bfloat16(), CpuOptions());
  expect_pass(presets::by_name("alibi_causal"), bshd, 64, dlpack_float32(), CpuOptions());
  ForwardProblem mqa = gqa(67, 131);
  mqa.heads_kv = 1;
  expect_pass(presets::sliding_window(), mqa, 128, dlpack_float16(), CpuOptions());
  expect_pass(presets::causal(presets::CausalAlignment::BottomRight), mqa, 32, dlpack_bfloat16(),
              CpuOptions().with_blocks(7, 64));
  ForwardProblem one = gqa(1, 200);  // decode: one query row
  expect_pass(presets::causal(presets::CausalAlignment::BottomRight), one, 64, dlpack_bfloat16(), CpuOptions());
}

TEST(CpuAttention, EveryInstructionSetOfTheProducts) {
  // The micro-kernels exist for AVX-512, AVX2 and SSE2; the others than the best one run
  // only when chosen. Odd head dims exercise the panel and width tails.
  const cpu::Isa best = cpu::best_isa();
  for (const cpu::Isa isa : {cpu::Isa::Sse2, cpu::Isa::Avx2, cpu::Isa::Avx512}) {
    if (static_cast<int>(isa) > static_cast<int>(best)) {
      EXPECT_THROW(cpu::use_products_isa(isa), UserError);
      continue;
    }
    cpu::use_products_isa(isa);
    SCOPED_TRACE(cpu::gemm_backend());
    expect_pass(presets::by_name("alibi_causal"), gqa(67, 131), 64, dlpack_bfloat16(),
                CpuOptions().with_blocks(16, 64));
    expect_pass(presets::sliding_window(), gqa(67, 131), 40, dlpack_float32(), CpuOptions());
    expect_pass(presets::dense(), gqa(29, 131), 72, dlpack_bfloat16(), CpuOptions().with_blocks(13, 128));
  }
  cpu::use_products_isa(best);
}

// ---- tile classes ----------------------------------------------------------------------

HostTensor random_tensor(DLDataType dtype, std::vector<std::int64_t> shape, std::uint64_t seed) {
  HostTensor t(dtype, std::move(shape));
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, normal(rng));
  return t;
}

// bf16 inputs take the vdpbf16ps products where the CPU has them (this machine does); turned
// off, the fp32 products run. Both pass the 2x rule, and they are different computations (P
// rounded to bf16 or not), so their outputs differ.
TEST(CpuAttention, Bf16ProductsPassAndCanBeTurnedOff) {
  if (!cpu::bf16_products_available()) GTEST_SKIP() << "this CPU has no AVX512_BF16: " << cpu::gemm_backend();
  const Variant v = presets::by_name("alibi_causal");
  expect_pass(v, gqa(67, 131), 64, dlpack_bfloat16(), CpuOptions());
  expect_pass(v, gqa(67, 131), 64, dlpack_bfloat16(), CpuOptions().with_bf16_products(false));
  HostTensor q = random_tensor(dlpack_bfloat16(), {1, 4, 96, 64}, 7),
             k = random_tensor(dlpack_bfloat16(), {1, 4, 160, 64}, 8),
             val = random_tensor(dlpack_bfloat16(), {1, 4, 160, 64}, 9);
  HostTensor fast(dlpack_bfloat16(), {1, 4, 96, 64}), exact(dlpack_bfloat16(), {1, 4, 96, 64});
  compile_cpu(v).forward(q.dl(), k.dl(), val.dl(), fast.dl(), nullptr);
  compile_cpu(v, CpuOptions().with_bf16_products(false)).forward(q.dl(), k.dl(), val.dl(), exact.dl(), nullptr);
  int differ = 0;
  for (std::int64_t i = 0; i < fast.numel(); ++i) differ += fast.get(i) != exact.get(i);
  EXPECT_GT(differ, 0);
}

// Rows of 128 floats or more take P V's 8-row, 2-vector micro-tiles (fewer than 8 rows left at
// a slice's or block's end go one by one): odd lengths, a band's slices, GQA.
TEST(CpuAttention, Bf16ProductsAtWideHeadDims) {
  if (!cpu::bf16_products_available()) GTEST_SKIP() << "this CPU has no AVX512_BF16: " << cpu::gemm_backend();
  for (const int dim : {128, 256}) {
    expect_pass(presets::sliding_window(), gqa(67, 131), dim, dlpack_bfloat16(), CpuOptions());
    expect_pass(presets::by_name("alibi_causal"), gqa(131, 67), dim, dlpack_bfloat16(), CpuOptions());
    expect_pass(presets::dense(), gqa(29, 131), dim, dlpack_bfloat16(), CpuOptions().with_blocks(13, 128));
  }
}

// The bf16 path's softmax writes P's words itself (exp2 polynomial, then bf16): each
// probability must be the bf16 rounding of the exact exp, or its neighbour where the exact
// value lies within the polynomial's error of a rounding tie; -inf gives exactly 0; an odd
// count pads its last word with 0; the sum is the fp32 values' to ~1e-6.
TEST(CpuAttention, FusedExpWritesRoundedProbabilities) {
  if (!cpu::bf16_products_available()) GTEST_SKIP() << "this CPU has no AVX512_BF16: " << cpu::gemm_backend();
  const auto bf16_bits = [](double x) {
    const float f = static_cast<float>(x);
    std::uint32_t b;
    std::memcpy(&b, &f, sizeof b);
    return static_cast<std::uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
  };
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<float> score(-30.0f, 12.0f);
  int exact = 0, total = 0;
  for (const int n : {0, 1, 5, 16, 31, 32, 33, 77, 256}) {
    SCOPED_TRACE(n);
    std::vector<float> x(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) x[static_cast<std::size_t>(i)] = i % 7 == 3 ? -INFINITY : score(rng);
    const float shift = 9.5f, scale = 0.7f;
    std::vector<std::uint32_t> words(static_cast<std::size_t>((n + 1) / 2) + 1, 0xdeadbeefu);
    const float sum = cpu::exp_shifted_sum_bf16(x.data(), n, shift, scale, words.data());
    double want = 0;
    for (int i = 0; i < n; ++i) {
      const double e = std::isinf(x[static_cast<std::size_t>(i)]) ? 0.0 : std::exp(scale * x[i] - shift);
      want += e;
      const std::uint32_t w = words[static_cast<std::size_t>(i / 2)];
      const std::uint16_t got = static_cast<std::uint16_t>(i % 2 ? w >> 16 : w & 0xffffu);
      if (e == 0.0) {
        EXPECT_EQ(got, 0) << i;
        continue;
      }
      const int ulps = std::abs(static_cast<int>(got) - static_cast<int>(bf16_bits(e)));
      EXPECT_LE(ulps, 1) << i << ": " << e;
      exact += ulps == 0;
      ++total;
    }
    if (n % 2) EXPECT_EQ(words[static_cast<std::size_t>(n / 2)] >> 16, 0u);
    EXPECT_EQ(words.back(), 0xdeadbeefu);  // nothing written past (n + 1) / 2 words
    EXPECT_NEAR(sum, want, 1e-6 * want + 1e-30);
  }
  EXPECT_GE(exact, total * 99 / 100);
}

// Where the CPU has AMX-BF16 tiles, their whole 32 x 32 blocks of the bf16 products run there
// (the rest on vdpbf16ps). The two give the same products up to the order of the fp32 sums:
// checked on the micro-kernels directly (rows, keys and reductions with tails), then through
// whole forwards with the tiles on and off, both by the 2x rule.
TEST(CpuAttention, AmxTilesMatchVdpbf16psAndPass) {
  if (!cpu::amx_products_supported() || !cpu::bf16_products_available())
    GTEST_SKIP() << "this CPU (or OS) offers no AMX-BF16 tiles: " << cpu::gemm_backend();
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<std::uint32_t> word(0, 0xffffffffu);
  // Random bf16 pairs with small exponents (finite, around 1).
  const auto pairs_of = [&](std::size_t n) {
    std::vector<std::uint32_t> w(n);
    for (auto& x : w) x = ((word(rng) & 0x807f807fu) | 0x3f003f00u);
    return w;
  };
  for (const int dim : {64, 128, 40}) {
    const int rows = 70, cols = 100, pairs = (dim + 1) / 2, width = 128, k = 75;
    const auto q = pairs_of(static_cast<std::size_t>(rows) * pairs);
    const auto packed = pairs_of(static_cast<std::size_t>(cpu::packed_keys_floats(cols, dim)));
    const auto p = pairs_of(static_cast<std::size_t>(rows) * 64), v = pairs_of(static_cast<std::size_t>(64) * width);
    std::vector<float> s_amx(static_cast<std::size_t>(rows) * 112), s_dot(s_amx.size());
    std::vector<float> o_amx(static_cast<std::size_t>(rows) * width, 0.5f), o_dot(o_amx);
    cpu::use_amx_products(true);
    cpu::scores_bf16(rows, cols, dim, 0.25f, q.data(), pairs, packed.data(), s_amx.data(), 112);
    cpu::accumulate_pv_bf16(rows, width, k, p.data(), 64, v.data(), o_amx.data(), width);
    cpu::use_amx_products(false);
    cpu::scores_bf16(rows, cols, dim, 0.25f, q.data(), pairs, packed.data(), s_dot.data(), 112);
    cpu::accumulate_pv_bf16(rows, width, k, p.data(), 64, v.data(), o_dot.data(), width);
    cpu::use_amx_products(true);
    double worst = 0;
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        const std::size_t i = static_cast<std::size_t>(r) * 112 + c;
        worst = std::max(worst, std::abs(static_cast<double>(s_amx[i]) - s_dot[i]) / (1.0 + std::abs(s_dot[i])));
      }
    for (std::size_t i = 0; i < o_amx.size(); ++i)
      worst = std::max(worst, std::abs(static_cast<double>(o_amx[i]) - o_dot[i]) / (1.0 + std::abs(o_dot[i])));
    EXPECT_LT(worst, 1e-5) << "dim " << dim;
  }
  const Variant v = presets::by_name("alibi_causal");
  for (const bool on : {true, false}) {
    cpu::use_amx_products(on);
    SCOPED_TRACE(on ? "AMX on" : "AMX off");
    expect_pass(v, gqa(67, 131), 64, dlpack_bfloat16(), CpuOptions());
    expect_pass(presets::sliding_window(), gqa(67, 300), 128, dlpack_bfloat16(), CpuOptions());
  }
  cpu::use_amx_products(true);
}

TEST(CpuAttention, SkipsEmptyTilesAndMasksOnlyPartialOnes) {
  const int s = 1024;
  HostTensor q = random_tensor(dlpack_float32(), {1, 2, s, 64}, 1),
             k = random_tensor(dlpack_float32(), {1, 2, s, 64}, 2);
  HostTensor v = random_tensor(dlpack_float32(), {1, 2, s, 64}, 3), o(dlpack_float32(), {1, 2, s, 64});

  const CpuAttention causal =
      compile_cpu(presets::causal(), CpuOptions().with_hooks(CpuHookSource::Interpreted).with_blocks(64, 256));
  causal.forward(q.dl(), k.dl(), v.dl(), o.dl(), nullptr);
  const auto st = causal.last_stats();
  EXPECT_EQ(st.block_q, 64);
  // 64-row blocks by 64-key sub-tiles: 16 x 16 per head, the diagonal partial, below it full.
  EXPECT_EQ(st.partial_tiles, 2 * 16);
  EXPECT_EQ(st.full_tiles, 2 * 16 * 15 / 2);
  EXPECT_EQ(st.empty_tiles, 2 * 16 * 15 / 2);

  // Document ids in 4 equal documents: tile classes from the ids themselves (scanned ranges).
  const Variant doc = presets::document();
  HostTensor ids(dlpack_int32(), {1, s});
  for (int i = 0; i < s; ++i) ids.set(i, i / 256);
  Bindings bindings;
  bindings.set("doc", ids.dl());
  const CpuAttention documents =
      compile_cpu(doc, CpuOptions().with_hooks(CpuHookSource::Interpreted).with_blocks(64, 256));
  documents.forward(q.dl(), k.dl(), v.dl(), o.dl(), nullptr, bindings);
  const auto sd = documents.last_stats();
  EXPECT_EQ(sd.partial_tiles, 0);
  EXPECT_EQ(sd.full_tiles, 2 * 4 * 4 * 4);  // per head: 4 documents of 4 x 4 sub-tiles
  EXPECT_EQ(sd.empty_tiles, 2 * 16 * 16 - sd.full_tiles);
}

TEST(CpuAttention, ChoosesTheRowsPerTaskAndReusesTileClassesOnlyWhileValid) {
  const int s = 1024;
  HostTensor q = random_tensor(dlpack_bfloat16(), {1, 2, s, 64}, 1),
             k = random_tensor(dlpack_bfloat16(), {1, 2, s, 64}, 2);
  HostTensor v = random_tensor(dlpack_bfloat16(), {1, 2, s, 64}, 3), o(dlpack_bfloat16(), {1, 2, s, 64});
  // 256 rows per task while that leaves four tasks per worker (here 2 heads x 4 blocks), else
  // 128; masks too (their 16-row slices skip what the diagonal or a band leaves empty).
  const int tall_rows = 2 * 4 >= 4 * cpu::ThreadPool::instance().size() ? 256 : 128;
  const CpuAttention causal = compile_cpu(presets::causal());
  causal.forward(q.dl(), k.dl(), v.dl(), o.dl(), nullptr);
  EXPECT_EQ(causal.last_stats().block_q, tall_rows);
  // Per head, s / block_q blocks, each with its diagonal's block_q / 64 partial sub-tiles.
  EXPECT_EQ(causal.last_stats().partial_tiles, 2 * 16);
  const CpuAttention one_worker = compile_cpu(presets::causal(), CpuOptions().with_threads(1));
  one_worker.forward(q.dl(), k.dl(), v.dl(), o.dl(), nullptr);
  EXPECT_EQ(one_worker.last_stats().block_q, 256);  // 8 tasks for 1 worker
  const CpuAttention window = compile_cpu(presets::sliding_window());
  Bindings narrow, wide;
  narrow.set("window", 100);
  wide.set("window", 700);
  window.forward(q.dl(), k.dl(), v.dl(), o.dl(), nullptr, narrow);
  const auto first = window.last_stats();
  EXPECT_EQ(first.block_q, tall_rows);
  EXPECT_FALSE(first.classes_reused);
  window.forward(q.dl(), k.dl(), v.dl(), o.dl(), nullptr, narrow);  // the same classes, reused
  EXPECT_EQ(window.last_stats().empty_tiles, first.empty_tiles);
  EXPECT_TRUE(window.last_stats().classes_reused);
  window.forward(q.dl(), k.dl(), v.dl(), o.dl(), nullptr, wide);  // another window: classified again
  EXPECT_LT(window.last_stats().empty_tiles, first.empty_tiles);
  EXPECT_FALSE(window.last_stats().classes_reused);
  // Document ids: classes reused while the tensor's contents stay; new contents (in place, the
  // same pointer), new classes.
  HostTensor ids(dlpack_int32(), {1, s});
  Bindings docs;
  docs.set("doc", ids.dl());
  const CpuAttention documents = compile_cpu(presets::document(), CpuOptions().with_blocks(64, 256));
  for (int i = 0; i < s; ++i) ids.set(i, i / 512);
  documents.forward(q.dl(), k.dl(), v.dl(), o.dl(), nullptr, docs);
  EXPECT_EQ(documents.last_stats().empty_tiles, 2 * 2 * 8 * 8);
  EXPECT_FALSE(documents.last_stats().classes_reused);
  documents.forward(q.dl(), k.dl(), v.dl(), o.dl(), nullptr, docs);
  EXPECT_TRUE(documents.last_stats().classes_reused);
  EXPECT_EQ(documents.last_stats().empty_tiles, 2 * 2 * 8 * 8);
  for (int i = 0; i < s; ++i) ids.set(i, i / 256);
  documents.forward(q.dl(), k.dl(), v.dl(), o.dl(), nullptr, docs);
  EXPECT_FALSE(documents.last_stats().classes_reused);
  EXPECT_EQ(documents.last_stats().empty_tiles, 2 * (16 * 16 - 4 * 4 * 4));
  ids.set(s - 1, 0);  // one id changed: classified again, and the last key joins document 0
  documents.forward(q.dl(), k.dl(), v.dl(), o.dl(), nullptr, docs);
  EXPECT_FALSE(documents.last_stats().classes_reused);
  EXPECT_GT(documents.last_stats().partial_tiles, 0);
}

// Tasks flush denormals (a window's far-off probabilities would take microcode assists) and
// put the caller's floating-point mode back: the calling thread runs tasks too.
TEST(CpuAttention, LeavesTheCallersFloatingPointModeAsItWas) {
  const unsigned before = _mm_getcsr();
  ASSERT_EQ(before & (_MM_FLUSH_ZERO_ON | _MM_DENORMALS_ZERO_ON), 0u) << "the test expects denormals on";
  HostTensor q = random_tensor(dlpack_bfloat16(), {1, 4, 300, 64}, 21),
             k = random_tensor(dlpack_bfloat16(), {1, 4, 300, 64}, 22);
  HostTensor v = random_tensor(dlpack_bfloat16(), {1, 4, 300, 64}, 23), o(dlpack_bfloat16(), {1, 4, 300, 64});
  compile_cpu(presets::sliding_window()).forward(q.dl(), k.dl(), v.dl(), o.dl(), nullptr, Bindings().set("window", 40));
  EXPECT_EQ(_mm_getcsr(), before);
  volatile float tiny = 1e-39f;  // still a denormal here
  EXPECT_GT(tiny * 1.0f, 0.0f);
}

TEST(CpuAttention, FullyMaskedRowsGiveZeroAndMinusInfinity) {
  // Bottom-right causal with Sq > Sk: the first Sq - Sk rows see no key.
  HostTensor q = random_tensor(dlpack_bfloat16(), {1, 1, 100, 64}, 4),
             k = random_tensor(dlpack_bfloat16(), {1, 1, 30, 64}, 5);
  HostTensor v = random_tensor(dlpack_bfloat16(), {1, 1, 30, 64}, 6), o(dlpack_bfloat16(), {1, 1, 100, 64});
  HostTensor lse(dlpack_float32(), {1, 1, 100});
  const CpuAttention attention = compile_cpu(presets::causal(presets::CausalAlignment::BottomRight));
  attention.forward(q.dl(), k.dl(), v.dl(), o.dl(), &lse.dl());
  for (int row = 0; row < 100; ++row) {
    if (row < 70) {
      EXPECT_EQ(lse.get(row), -std::numeric_limits<double>::infinity()) << row;
      for (int d = 0; d < 64; ++d) EXPECT_EQ(o.get(row * 64 + d), 0.0) << row;
    } else {
      EXPECT_TRUE(std::isfinite(lse.get(row))) << row;
    }
  }
}

// ---- errors and the pool ---------------------------------------------------------------

TEST(CpuAttention, DefaultKeysPerTileFollowTheHeadDim) {
  EXPECT_EQ(CpuOptions().block_kv, 0);
  EXPECT_EQ(cpu_block_kv(CpuOptions(), 32), 512);
  EXPECT_EQ(cpu_block_kv(CpuOptions(), 64), 512);
  EXPECT_EQ(cpu_block_kv(CpuOptions(), 128), 512);
  EXPECT_EQ(cpu_block_kv(CpuOptions(), 160), 256);
  EXPECT_EQ(cpu_block_kv(CpuOptions().with_blocks(0, 192), 64), 192);  // given: kept
  // Runs of 512 keys over every tile class: full, partial (a band's edges, the diagonal) and
  // empty, on the default options.
  ForwardProblem p = gqa(700, 700);  // every row compared: at most 2^20 pairs
  p.batch = 1;
  p.heads_q = 2;
  p.heads_kv = 1;
  expect_pass(presets::causal(), p, 64, dlpack_bfloat16(), CpuOptions());
  expect_pass(presets::sliding_window(), p, 64, dlpack_bfloat16(), CpuOptions());
  expect_pass(presets::document(), p, 64, dlpack_float32(), CpuOptions());
}

TEST(CpuAttention, RefusesBadInputs) {
  HostTensor q = random_tensor(dlpack_float32(), {1, 4, 8, 64}, 1),
             k = random_tensor(dlpack_float32(), {1, 3, 8, 64}, 2);
  HostTensor o(dlpack_float32(), {1, 4, 8, 64});
  const CpuAttention attention = compile_cpu(presets::dense());
  try {
    attention.forward(q.dl(), k.dl(), k.dl(), o.dl(), nullptr);
    FAIL() << "GQA with 4 query heads over 3 kv heads must be refused";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("not a multiple of heads_kv"), std::string::npos) << e.what();
  }
  HostTensor kb = random_tensor(dlpack_bfloat16(), {1, 4, 8, 64}, 3);
  try {
    attention.forward(q.dl(), kb.dl(), kb.dl(), o.dl(), nullptr);
    FAIL() << "mixed dtypes must be refused";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("share one dtype"), std::string::npos) << e.what();
  }
  DLTensor on_gpu = q.dl();
  on_gpu.device = DLDevice{kDLCUDA, 0};
  EXPECT_THROW(attention.forward(on_gpu, q.dl(), q.dl(), o.dl(), nullptr), UserError);
  EXPECT_THROW(compile_cpu(presets::dense(), CpuOptions().with_blocks(64, 100)), UserError);
  const CpuAttention window = compile_cpu(presets::sliding_window());
  EXPECT_THROW(window.forward(q.dl(), q.dl(), q.dl(), o.dl(), nullptr), UserError);  // `window` unbound
  // Hooks of another variant.
  EXPECT_THROW(CpuAttention(presets::causal(), interpreted_cpu_hooks(presets::dense())), UserError);
  if (!cpu_backend_has_jit()) {
    EXPECT_THROW(make_cpu_hooks(presets::dense(), CpuHookSource::Jit), RuntimeFailure);
  }
}

TEST(CpuThreadPool, RunsEveryTaskOnceAndRethrows) {
  auto& pool = cpu::ThreadPool::instance();
  EXPECT_GE(pool.size(), 1);
  std::vector<std::atomic<int>> hits(1000);
  pool.parallel_for(1000, [&](int worker, int task) {
    EXPECT_LT(worker, pool.size());
    hits[static_cast<std::size_t>(task)]++;
    // A nested call runs inline on this worker.
    pool.parallel_for(2, [](int, int) {});
  });
  for (const auto& h : hits) EXPECT_EQ(h.load(), 1);
  EXPECT_THROW(pool.parallel_for(100,
                                 [](int, int task) {
                                   if (task == 42) throw UserError("task 42");
                                 }),
               UserError);
  int after = 0;
  pool.parallel_for(10, [&](int, int) { __atomic_add_fetch(&after, 1, __ATOMIC_RELAXED); });
  EXPECT_EQ(after, 10);
}

}  // namespace
}  // namespace attnjit
