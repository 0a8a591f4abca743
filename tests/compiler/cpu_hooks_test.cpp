// The CPU hooks JIT (compiler/llvm): for every preset and some compositions, and for
// variants that use every operator and every tensor dtype, the JIT-compiled score_tile gives
// what the interpreted one (compiler/eval, fp64) gives, within fp32 rounding, and -inf exactly
// where the mask excludes a pair; on random tiles of odd sizes (rows and cols not multiples of
// the vector width, ld > cols) at every vector width. Also: the object cache (a fresh cache
// object finds the object on disk), the option checks, and the IR shown by
// cpu_hooks_llvm_ir. Skipped with a message where this build has no LLVM.
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "compiler/codegen/hook_emitter.hpp"
#include "compiler/error.hpp"
#include "compiler/llvm/cpu_hooks.hpp"
#include "dsl/presets.hpp"
#include "runtime/cache/kernel_cache.hpp"
#include "support/process.hpp"

namespace attnjit {
namespace {

using namespace attnjit::dsl::vars;
using ir::TensorDType;

constexpr float kInf = std::numeric_limits<float>::infinity();

// A captured tensor in host memory with padded, optionally reversed strides.
struct HostTensor {
  std::vector<std::uint8_t> bytes;
  CpuTensorArg arg{};
};

std::size_t dtype_bytes(TensorDType t) {
  switch (t) {
    case TensorDType::F32:
    case TensorDType::I32: return 4;
    case TensorDType::F16:
    case TensorDType::BF16: return 2;
    case TensorDType::I64: return 8;
    case TensorDType::U8: return 1;
  }
  return 1;
}

std::uint16_t float_to_bf16_bits(float f) { return static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(f) >> 16); }

// Random half bits: mostly normal numbers of moderate size, sometimes a special value.
std::uint16_t random_half(std::mt19937& rng, bool specials) {
  if (specials && rng() % 8 == 0) {
    static const std::uint16_t kSpecial[] = {0x0001, 0x03ff, 0x8001, 0x0000, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0x7bff};
    return kSpecial[rng() % std::size(kSpecial)];
  }
  const std::uint16_t sign = (rng() & 1) ? 0x8000 : 0;
  const std::uint16_t exponent = static_cast<std::uint16_t>(12 + rng() % 6);  // 2^-3 .. 2^2
  return static_cast<std::uint16_t>(sign | (exponent << 10) | (rng() & 0x3ff));
}

// Sizes per rank: small first dimensions (batch, heads), long position dimensions; indices
// beyond them clamp.
std::vector<std::int64_t> sizes_for(int rank) {
  switch (rank) {
    case 1: return {6};
    case 2: return {3, 90};
    case 3: return {2, 4, 90};
    default: return {2, 4, 90, 5};
  }
}

HostTensor make_tensor(const TensorDecl& decl, std::mt19937& rng, bool specials) {
  HostTensor t;
  const std::vector<std::int64_t> sizes = sizes_for(decl.rank);
  const bool reversed = rng() % 2 == 0;
  const std::int64_t step = 1 + static_cast<std::int64_t>(rng() % 2);
  std::int64_t stride = step;
  for (int i = 0; i < decl.rank; ++i) {
    const int d = reversed ? i : decl.rank - 1 - i;  // innermost in memory first
    t.arg.stride[d] = stride;
    t.arg.size[d] = sizes[static_cast<std::size_t>(d)];
    stride *= sizes[static_cast<std::size_t>(d)] + 1;
  }
  const std::size_t elements = static_cast<std::size_t>(stride);
  t.bytes.resize(elements * dtype_bytes(decl.dtype));
  std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
  for (std::size_t i = 0; i < elements; ++i) {
    void* at = t.bytes.data() + i * dtype_bytes(decl.dtype);
    switch (decl.dtype) {
      case TensorDType::F32: {
        const float v = uniform(rng);
        std::memcpy(at, &v, 4);
        break;
      }
      case TensorDType::F16: {
        const std::uint16_t v = random_half(rng, specials);
        std::memcpy(at, &v, 2);
        break;
      }
      case TensorDType::BF16: {
        const std::uint16_t v = float_to_bf16_bits(uniform(rng));
        std::memcpy(at, &v, 2);
        break;
      }
      case TensorDType::I32: {
        // Document ids: a few documents; other int tensors: small positions and offsets.
        const std::int32_t v =
            decl.name == "doc" ? static_cast<std::int32_t>(rng() % 3) : static_cast<std::int32_t>(rng() % 60) - 5;
        std::memcpy(at, &v, 4);
        break;
      }
      case TensorDType::I64: {
        // Beyond 32 bits sometimes: reads wrap to int32 like the GPU's.
        const std::int64_t v = static_cast<std::int64_t>(rng() % 60) - 5 +
                               (specials && rng() % 4 == 0 ? (std::int64_t{1} << 32) * (rng() % 5) : 0);
        std::memcpy(at, &v, 8);
        break;
      }
      case TensorDType::U8: {
        const std::uint8_t v = static_cast<std::uint8_t>(rng() % 3 == 0 ? 0 : rng() % 256);
        std::memcpy(at, &v, 1);
        break;
      }
    }
  }
  t.arg.data = t.bytes.data();
  t.arg.dtype = static_cast<int>(decl.dtype);
  return t;
}

// Arguments for `variant` (tensors kept alive by `storage`).
CpuHookArgs make_args(const Variant& variant, std::mt19937& rng, std::vector<HostTensor>& storage,
                      bool specials = false) {
  CpuHookArgs args;
  const ArgumentSlots slots = assign_slots(variant);
  for (std::size_t i = 0; i < slots.int_params.size(); ++i) {
    const std::string& n = slots.int_params[i].name;
    args.int_params[i] = n == "window"       ? 7
                         : n == "prefix_len" ? 5
                         : n == "stride"     ? 3
                         : n == "local"      ? 4
                         : n == "group"      ? 6
                                             : static_cast<std::int32_t>(rng() % 15) - 5;
  }
  for (std::size_t i = 0; i < slots.float_params.size(); ++i)
    args.float_params[i] =
        slots.float_params[i].name == "softcap" ? 3.5f : 0.5f + 0.25f * static_cast<float>(rng() % 12);
  storage.clear();
  for (const auto& t : slots.tensors) storage.push_back(make_tensor(t, rng, specials));
  for (std::size_t i = 0; i < storage.size(); ++i) args.tensors[i] = storage[i].arg;
  return args;
}

// Whether `got` (the JIT's fp32) matches `want` (the interpreter's fp64, rounded once):
// the same infinities and NaNs, else within a few ulps of the larger of the value and the
// tile's input score (the terms a score_mod adds are of that size).
bool close(float got, float want, float input) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want) || std::isinf(got)) return got == want;
  const float scale = std::max({1.0f, std::fabs(want), std::fabs(input)});
  return std::fabs(got - want) <= 3e-5f * scale;
}

struct Tile {
  int rows, cols, b, h, q0, kv0;
  std::int64_t ld;
};

Tile random_tile(std::mt19937& rng, CpuHookArgs& args) {
  Tile t{};
  t.rows = 1 + static_cast<int>(rng() % 9);
  t.cols = 1 + static_cast<int>(rng() % 100);  // up to six 16-lane steps: pairs of whole steps, then the rest
  t.ld = t.cols + static_cast<std::int64_t>(rng() % 6);
  t.b = static_cast<int>(rng() % 2);
  t.h = static_cast<int>(rng() % 4);
  t.q0 = static_cast<int>(rng() % 40);
  t.kv0 = static_cast<int>(rng() % 40);
  args.seq_q = t.q0 + t.rows + static_cast<int>(rng() % 10);
  args.seq_k = t.kv0 + t.cols + static_cast<int>(rng() % 10);
  args.heads_q = 4;
  return t;
}

// Runs `jit` and `interpreted` on `tiles` random tiles and compares every element; returns
// the number of masked elements seen (so callers can check the mask was exercised).
int compare_tiles(const Variant& variant, const CpuHooks& jit, const CpuHooks& interpreted, int tiles,
                  std::uint32_t seed, bool specials = false, float score_range = 6.0f) {
  std::mt19937 rng(seed);
  std::vector<HostTensor> storage;
  int masked = 0, mismatches = 0;
  for (int n = 0; n < tiles && mismatches < 5; ++n) {
    CpuHookArgs args = make_args(variant, rng, storage, specials);
    const Tile t = random_tile(rng, args);
    const int apply_mask = n % 3 == 2 ? 0 : 1;
    std::vector<float> input(static_cast<std::size_t>(t.rows * t.ld));
    std::uniform_real_distribution<float> score(-score_range, score_range);
    for (auto& x : input) x = score(rng);
    std::vector<float> got = input, want = input;
    jit.score_tile(got.data(), t.ld, t.rows, t.cols, t.b, t.h, t.q0, t.kv0, &args, apply_mask);
    interpreted.score_tile(want.data(), t.ld, t.rows, t.cols, t.b, t.h, t.q0, t.kv0, &args, apply_mask);
    for (int r = 0; r < t.rows; ++r)
      for (std::int64_t c = 0; c < t.ld; ++c) {
        const std::size_t i = static_cast<std::size_t>(r * t.ld + c);
        if (c >= t.cols) {  // beyond cols: untouched
          EXPECT_EQ(std::bit_cast<std::uint32_t>(got[i]), std::bit_cast<std::uint32_t>(input[i]))
              << variant.name() << ": wrote past cols at row " << r << " col " << c;
          continue;
        }
        masked += want[i] == -kInf && input[i] != -kInf;
        if (close(got[i], want[i], input[i])) continue;
        ++mismatches;
        ADD_FAILURE() << variant.name() << " (" << variant.text() << "): tile " << n << " b=" << t.b << " h=" << t.h
                      << " q=" << t.q0 + r << " kv=" << t.kv0 + c << " apply_mask=" << apply_mask
                      << " score=" << input[i] << ": jit " << got[i] << ", interpreted " << want[i];
      }
  }
  return masked;
}

class CpuHooksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cpu_jit_available(&why)) GTEST_SKIP() << "CPU JIT unavailable: " << why;
  }
  static CpuJitOptions no_cache(int width = 0) {
    return CpuJitOptions().with_use_cache(false).with_vector_width(width);
  }
};

// Compositions beyond the registry's.
std::vector<Variant> compositions() {
  using presets::CausalAlignment;
  return {
      presets::document().then(presets::softcap()).with_name("document_softcap"),
      presets::relative_bias().then(presets::sliding_window()).with_name("relative_window"),
      presets::alibi(Tensor("slopes", TensorDType::F32, 1)).then(presets::prefix_lm()).with_name("alibi_prefix"),
      presets::forget_gate().then(presets::strided()).with_name("forget_strided"),
      presets::shifted_sparse()
          .then(presets::softcap())
          .then(presets::causal(CausalAlignment::BottomRight))
          .with_name("shifted_softcap_causal"),
      presets::rope()
          .then(presets::alibi())
          .then(presets::output_gate())
          .then(presets::document())
          .with_name("rope_alibi_gate_document"),
  };
}

TEST_F(CpuHooksTest, EveryPresetAndCompositionMatchesTheInterpreterAtEveryWidth) {
  std::vector<Variant> variants;
  for (const auto& p : presets::registry()) variants.push_back(p.make());
  for (const auto& v : compositions()) variants.push_back(v);
  for (const int width : {0, 1, 4, 8, 16}) {
    for (std::size_t i = 0; i < variants.size(); ++i) {
      const Variant& v = variants[i];
      SCOPED_TRACE(v.name() + " at vector width " + std::to_string(width));
      const CpuHooks jit = jit_cpu_hooks(v, no_cache(width));
      const CpuHooks interpreted = interpreted_cpu_hooks(v);
      ASSERT_NE(jit.score_tile, nullptr);
      EXPECT_EQ(jit.has_score_mod, interpreted.has_score_mod);
      EXPECT_EQ(jit.has_mask, interpreted.has_mask);
      const int masked = compare_tiles(v, jit, interpreted, 24, 1000u + static_cast<std::uint32_t>(i));
      if (jit.has_mask) EXPECT_GT(masked, 0) << "the tiles never exercised the mask";
    }
  }
}

// Every operator, both int division paths (per key through double, per row in ints, by a
// constant), division and modulo by zero, -1 and negatives, saturation of to_int.
TEST_F(CpuHooksTest, EveryOperatorMatchesTheInterpreter) {
  const Expr p = param_int("p"), d = param_int("d"), f = param_float("f");
  const Expr t = Tensor("t", TensorDType::F32, 2)(h, kv);
  const Expr int_part = (kv - q) / d + (q * 7 - kv) % d + (q * 3 + 1) / d + q % d + (kv - 2 * q) / 3 + (kv + q) % -5 +
                        (q - kv) / -1 + abs(q - kv) - (-kv) + min(q, kv) * max(p, kv % 4) + to_int(score * 3.0) +
                        to_int(score * 1e10) + to_int(to_float(q) / 0.0) + to_int(log(score - 100.0)) +
                        to_int(score > 0.0) + to_int(where(q > kv, kv, q)) * 2;
  const Expr float_part = exp(score) * 0.01 + exp2(score * 0.5) + log(abs(score) + 0.5) + log2(abs(score) + 2.0) +
                          tanh(score) + sigmoid(score * f) + sqrt(abs(score)) + floor(score * 1.5) - min(score, f) +
                          max(score, t) + score / f + where(score >= f, -score, score * t) + abs(-score) +
                          to_float(q <= kv) + to_float(kv_len - q_len + num_heads);
  const Expr mask = (kv < q + p || (q != kv && !(kv % 3 == 1))) && ((kv > 2) == (q >= 4)) && (b != 1 || h <= 2);
  const Variant v = Variant("every_op").with_score_mod(float_part + to_float(int_part) * 0.125).with_mask_mod(mask);
  const CpuHooks interpreted = interpreted_cpu_hooks(v);
  for (const int width : {0, 1, 4, 8}) {
    SCOPED_TRACE("vector width " + std::to_string(width));
    const CpuHooks jit = jit_cpu_hooks(v, no_cache(width));
    EXPECT_GT(compare_tiles(v, jit, interpreted, 60, 7), 0);
  }
}

// Reads of every dtype with strides (padded, reversed), clamped indices, f16 specials and
// subnormals, i64 values beyond 32 bits.
TEST_F(CpuHooksTest, TensorReadsOfEveryDtypeMatchTheInterpreter) {
  const Tensor f32("tf32", TensorDType::F32, 3), f16("tf16", TensorDType::F16, 1), bf16("tbf16", TensorDType::BF16, 2),
      i32("ti32", TensorDType::I32, 2), i64("ti64", TensorDType::I64, 4), u8("tu8", TensorDType::U8, 2);
  const Expr ints = i32(q, kv) + i64(b, h, kv - q, q % 5) * 3;
  const Variant v = Variant("dtypes")
                        .with_score_mod(score + f32(b, h, kv) - f16[kv] * bf16(h, q + kv) + to_float(ints) * 0.001 +
                                        where(u8(q, kv), 1.0, -1.0) + f16[q])
                        .with_mask_mod(u8(kv, q) || i32(q, kv) % 3 != 0);
  const CpuHooks interpreted = interpreted_cpu_hooks(v);
  for (const int width : {0, 1, 8}) {
    SCOPED_TRACE("vector width " + std::to_string(width));
    const CpuHooks jit = jit_cpu_hooks(v, no_cache(width));
    EXPECT_GT(compare_tiles(v, jit, interpreted, 60, 11, /*specials=*/true), 0);
  }
}

// The inline transcendentals over wide ranges and the special values: within a few ulps of
// fp64 rounded once (compare_tiles' tolerance), infinities and NaNs exact.
TEST_F(CpuHooksTest, TranscendentalsMatchDoubleOverTheirRange) {
  const std::vector<std::pair<const char*, Expr>> functions = {
      {"exp", exp(score)},   {"exp2", exp2(score)},       {"log", log(score)},   {"log2", log2(score)},
      {"tanh", tanh(score)}, {"sigmoid", sigmoid(score)}, {"sqrt", sqrt(score)}, {"floor", floor(score)}};
  std::vector<float> inputs = {
      0.0f,       -0.0f,   1.0f,           -1.0f,   kInf,    -kInf,  std::numeric_limits<float>::quiet_NaN(),
      1e-45f,     1e-40f,  1.1754944e-38f, 88.7f,   88.8f,   -87.3f, -103.9f,
      -104.5f,    127.9f,  128.1f,         -149.5f, -150.2f, 1e-7f,  0.9999999f,
      1.0000001f, 3.4e38f, 9.05f,          20.0f};
  std::mt19937 rng(5);
  for (int i = 0; i < 4000; ++i) {  // log-uniform magnitudes of both signs
    const float m = std::exp2(std::uniform_real_distribution<float>(-30.0f, 8.0f)(rng));
    inputs.push_back(rng() % 2 ? m : -m);
  }
  for (const auto& [name, expr] : functions) {
    const Variant v = Variant(name).with_score_mod(expr);
    const CpuHooks jit = jit_cpu_hooks(v, no_cache());
    const CpuHooks interpreted = interpreted_cpu_hooks(v);
    std::vector<float> got = inputs, want = inputs;
    CpuHookArgs args;
    args.seq_q = 1;
    args.seq_k = static_cast<int>(inputs.size());
    jit.score_tile(got.data(), 0, 1, static_cast<int>(got.size()), 0, 0, 0, 0, &args, 1);
    interpreted.score_tile(want.data(), 0, 1, static_cast<int>(want.size()), 0, 0, 0, 0, &args, 1);
    double worst_ulps = 0;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      if (std::isnan(want[i]) || std::isinf(want[i]) || want[i] == 0.0f) {
        EXPECT_TRUE(std::isnan(want[i]) ? std::isnan(got[i]) : got[i] == want[i])
            << name << "(" << inputs[i] << "): jit " << got[i] << ", fp64 " << want[i];
        continue;
      }
      const float ulp = std::max(std::nextafter(std::fabs(want[i]), kInf) - std::fabs(want[i]), 1e-45f);
      // log and log2 near 1 and tanh, sigmoid near 0 are judged in absolute terms (2^-24).
      const double ulps = std::fabs(static_cast<double>(got[i]) - want[i]) / std::max(ulp, 5.96e-8f);
      worst_ulps = std::max(worst_ulps, ulps);
      EXPECT_LE(ulps, 4.0) << name << "(" << inputs[i] << "): jit " << got[i] << ", fp64 " << want[i];
    }
    std::cout << "[ cpu jit  ] " << name << ": worst error " << worst_ulps << " ulp over " << inputs.size()
              << " inputs\n";
  }
}

TEST_F(CpuHooksTest, DenseIsANoOpAndMasksOnlyWriteMinusInfinity) {
  const CpuHooks dense = jit_cpu_hooks(presets::dense(), no_cache());
  EXPECT_FALSE(dense.has_score_mod);
  EXPECT_FALSE(dense.has_mask);
  std::vector<float> s = {1.5f, -2.0f, 3.25f};
  CpuHookArgs args;
  dense.score_tile(s.data(), 3, 1, 3, 0, 0, 0, 0, &args, 1);
  EXPECT_EQ(s, (std::vector<float>{1.5f, -2.0f, 3.25f}));

  const CpuHooks causal = jit_cpu_hooks(presets::causal(), no_cache());
  std::vector<float> t = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};  // q = 1, 2 and kv = 1, 2, 3
  causal.score_tile(t.data(), 3, 2, 3, 0, 0, 1, 1, &args, 1);
  EXPECT_EQ(t, (std::vector<float>{1.0f, -kInf, -kInf, 4.0f, 5.0f, -kInf}));
  causal.score_tile(t.data(), 3, 2, 3, 0, 0, 1, 1, &args, 0);  // mask off: untouched
  EXPECT_EQ(t, (std::vector<float>{1.0f, -kInf, -kInf, 4.0f, 5.0f, -kInf}));
}

TEST_F(CpuHooksTest, ObjectCacheHitInAFreshCacheObject) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("attnjit_cpu_hooks_test_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  // A variant no other test (or earlier run) compiled: a constant from the clock.
  const double salt =
      1.0 + static_cast<double>(std::chrono::steady_clock::now().time_since_epoch().count() % 100000) / 1e6;
  const Variant v = presets::alibi().then(presets::softcap()).then(presets::document()).with_name("cache_probe");
  const Variant salted = Variant(v).with_score_mod(v.score_mod() * salt);
  double cold_ms = 0, hit_ms = 0;
  {
    runtime::KernelCache cache(runtime::KernelCacheOptions().set_directory(dir));
    const CpuHooks first = jit_cpu_hooks(salted, CpuJitOptions().with_cache(&cache));
    EXPECT_FALSE(first.cache_hit);
    cold_ms = first.compile_ms;
    EXPECT_EQ(cache.stats().entries, 1u);
  }  // the hooks are unloaded: the next call cannot share them in memory
  runtime::KernelCache fresh(runtime::KernelCacheOptions().set_directory(dir));
  const CpuHooks second = jit_cpu_hooks(salted, CpuJitOptions().with_cache(&fresh));
  EXPECT_TRUE(second.cache_hit);
  hit_ms = second.compile_ms;
  const CpuHooks shared = jit_cpu_hooks(salted, CpuJitOptions().with_cache(&fresh));
  EXPECT_TRUE(shared.cache_hit);
  EXPECT_EQ(shared.score_tile, second.score_tile) << "a variant loaded in this process is shared";
  EXPECT_EQ(fresh.verify().size(), 1u);
  const auto listing = fresh.list();
  ASSERT_EQ(listing.size(), 1u);
  ASSERT_TRUE(listing[0].metadata);
  EXPECT_NE(listing[0].metadata->target_arch.find(cpu_jit_target().cpu), std::string::npos);
  compare_tiles(salted, second, interpreted_cpu_hooks(salted), 10, 3);
  std::cout << "[ cpu jit  ] cold JIT compile " << cold_ms << " ms, disk cache hit " << hit_ms << " ms, in-process hit "
            << shared.compile_ms << " ms (" << cpu_jit_target().cpu << ", " << cpu_jit_target().vector_width
            << " lanes)\n";
  std::filesystem::remove_all(dir);
}

TEST_F(CpuHooksTest, TheIrIsVectorCodeForTheHostAndCarriesItsProvenance) {
  const CpuJitTarget target = cpu_jit_target();
  EXPECT_FALSE(target.cpu.empty());
  EXPECT_FALSE(target.triple.empty());
  EXPECT_NE(target.features.find('+'), std::string::npos);
  EXPECT_GE(target.vector_width, 4);
  const Variant v = presets::document().then(presets::alibi()).with_name("doc_alibi");
  const std::string ir = cpu_hooks_llvm_ir(v);
  const std::string lanes = "<" + std::to_string(target.vector_width) + " x float>";
  EXPECT_NE(ir.find("define void @aj_score_tile"), std::string::npos);
  EXPECT_NE(ir.find("mask_mod: doc[b, q + kv_len - q_len] == doc[b, kv]"), std::string::npos) << ir;
  EXPECT_NE(ir.find("llvm.masked.gather"), std::string::npos);
  const std::string optimized = cpu_hooks_llvm_ir(v, {}, true);
  EXPECT_NE(optimized.find(lanes), std::string::npos) << optimized;
  // The per-row document id is read once per row, not per key.
  EXPECT_NE(ir.find("load i32, ptr %doc.at"), std::string::npos) << ir;
}

TEST_F(CpuHooksTest, OptionsOutsideTheirRangeAreUserErrors) {
  EXPECT_THROW(jit_cpu_hooks(presets::causal(), CpuJitOptions().with_opt_level(4)), UserError);
  EXPECT_THROW(jit_cpu_hooks(presets::causal(), CpuJitOptions().with_vector_width(12)), UserError);
  Expr sum = score;
  for (int i = 0; i < 17; ++i) sum = sum + to_float(param_int("p" + std::to_string(i)));
  EXPECT_THROW(jit_cpu_hooks(Variant("many").with_score_mod(sum), no_cache()), UserError);
}

// Threads compiling, sharing, running and dropping hooks at once (the JIT is process-wide).
TEST_F(CpuHooksTest, ConcurrentCompilesAndRunsAgree) {
  const std::vector<Variant> variants = {presets::by_name("alibi_causal"), presets::by_name("document_causal"),
                                         presets::by_name("softcap"), presets::by_name("alibi_causal")};
  std::vector<std::thread> threads;
  std::vector<int> failures(variants.size(), 0);
  for (std::size_t i = 0; i < variants.size(); ++i)
    threads.emplace_back([&, i] {
      for (int round = 0; round < 3; ++round) {
        const CpuHooks jit = jit_cpu_hooks(variants[i], no_cache(round == 1 ? 8 : 0));
        const CpuHooks interpreted = interpreted_cpu_hooks(variants[i]);
        std::mt19937 rng(static_cast<std::uint32_t>(i * 10 + round));
        std::vector<HostTensor> storage;
        CpuHookArgs args = make_args(variants[i], rng, storage);
        const Tile t = random_tile(rng, args);
        std::vector<float> got(static_cast<std::size_t>(t.rows * t.ld), 0.5f), want = got;
        jit.score_tile(got.data(), t.ld, t.rows, t.cols, t.b, t.h, t.q0, t.kv0, &args, 1);
        interpreted.score_tile(want.data(), t.ld, t.rows, t.cols, t.b, t.h, t.q0, t.kv0, &args, 1);
        for (std::size_t e = 0; e < got.size(); ++e) failures[i] += !close(got[e], want[e], 0.5f);
      }
    });
  for (auto& t : threads) t.join();
  for (std::size_t i = 0; i < variants.size(); ++i) EXPECT_EQ(failures[i], 0) << variants[i].name();
}

TEST_F(CpuHooksTest, TheCliPrintsTheLlvmIr) {
  const std::filesystem::path err =
      std::filesystem::temp_directory_path() / ("attnjit_cpu_hooks_cli_" + std::to_string(::getpid()));
  const auto result =
      test_support::run_command(std::string(ATTNJIT_CLI_PATH) + " emit --arch cpu --preset alibi_causal", err);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("define void @aj_score_tile"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("x float>"), std::string::npos) << result.out;
}

}  // namespace
}  // namespace attnjit
