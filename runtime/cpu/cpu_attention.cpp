// The CPU backend's attention forward (see cpu_attention.hpp).
#include "runtime/cpu/cpu_attention.hpp"

#include <fmt/format.h>

#include <pmmintrin.h>  // _MM_DENORMALS_ZERO_ON (and xmmintrin's _mm_setcsr)

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <mutex>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "compiler/codegen/hook_emitter.hpp"
#include "compiler/error.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/cpu/cpu_kernels.hpp"
#include "runtime/cpu/thread_pool.hpp"
#include "runtime/cpu/tile_classes.hpp"

namespace attnjit {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

bool is_host(const DLTensor& t) { return t.device.device_type == kDLCPU || t.device.device_type == kDLCUDAHost; }

cpu::Storage storage_of(const DLTensor& t, const char* name) {
  if (t.dtype.lanes == 1 && t.dtype.code == kDLFloat && t.dtype.bits == 32) return cpu::Storage::F32;
  if (t.dtype.lanes == 1 && t.dtype.code == kDLFloat && t.dtype.bits == 16) return cpu::Storage::F16;
  if (t.dtype.lanes == 1 && t.dtype.code == kDLBfloat && t.dtype.bits == 16) return cpu::Storage::BF16;
  throw UserError(fmt::format("tensor {} has dtype {}; the CPU backend takes f32, f16 or bf16; convert it", name,
                              dlpack_dtype_name(t.dtype)));
}

void check_4d(const DLTensor& t, const char* name) {
  if (!is_host(t))
    throw UserError(fmt::format(
        "tensor {} is not in host memory (DLPack device type {}); the CPU backend reads host tensors: copy it to "
        "the host, or use attnjit::compile for CUDA tensors",
        name, static_cast<int>(t.device.device_type)));
  if (t.ndim != 4)
    throw UserError(fmt::format("tensor {} has rank {} (shape {}); expected 4: [batch, heads, seq, head_dim]", name,
                                t.ndim, shape_string(dlpack_shape(t))));
  for (int d = 0; d < 4; ++d)
    if (t.shape[d] <= 0 || t.shape[d] > 0x7fffffff)
      throw UserError(
          fmt::format("tensor {} has extent {} in dimension {}; extents must be in [1, 2^31)", name, t.shape[d], d));
  storage_of(t, name);
}

// A 4-d host tensor as the tile loop reads it: base pointer and strides in elements.
struct View {
  const char* data = nullptr;
  std::int64_t stride[4] = {};
  cpu::Storage storage = cpu::Storage::F32;
  std::size_t element_bytes = 4;

  explicit View(const DLTensor& t, const char* name) {
    data = static_cast<const char*>(t.data) + t.byte_offset;
    const auto s = dlpack_strides(t);
    std::copy(s.begin(), s.end(), stride);
    storage = storage_of(t, name);
    element_bytes = storage == cpu::Storage::F32 ? 4 : 2;
  }
  const void* at(std::int64_t b, std::int64_t h, std::int64_t row) const {
    return data + (b * stride[0] + h * stride[1] + row * stride[2]) * static_cast<std::int64_t>(element_bytes);
  }
};

// cos / sin of every RoPE angle the problem needs: positions [first, first + count), pairs
// j < rotary_dim / 2, angle = position * theta^(-2j / rotary_dim), computed in double.
struct RopeTable {
  RopeHook hook;
  int rotary_dim = 0;
  std::int64_t first = 0;
  std::vector<float> cos, sin;  // [position - first][j]

  RopeTable(const RopeHook& rope, int head_dim, std::int64_t lo, std::int64_t hi) : hook(rope), first(lo) {
    rotary_dim = rope.rotary_dim == 0 ? head_dim : rope.rotary_dim;
    if (rotary_dim > head_dim || rotary_dim % 2 != 0 || rotary_dim < 0)
      throw UserError(fmt::format(
          "rope rotary_dim {} is not allowed for head dimension {}; use 0 (the whole head) or an even number <= {}",
          rope.rotary_dim, head_dim, head_dim));
    const int half = rotary_dim / 2;
    const std::size_t count = static_cast<std::size_t>(hi - lo + 1);
    cos.resize(count * half);
    sin.resize(count * half);
    for (std::size_t i = 0; i < count; ++i)
      for (int j = 0; j < half; ++j) {
        const double angle =
            static_cast<double>(lo + static_cast<std::int64_t>(i)) * std::pow(rope.theta, -2.0 * j / rotary_dim);
        cos[i * half + j] = static_cast<float>(std::cos(angle));
        sin[i * half + j] = static_cast<float>(std::sin(angle));
      }
  }

  // Rotates `rows` fp32 rows (leading dimension ld), row r at position position0 + r.
  void rotate(float* rows, std::int64_t ld, int count, std::int64_t position0) const {
    const int half = rotary_dim / 2;
    const bool interleaved = hook.layout == RopeHook::Layout::Interleaved;
    for (int r = 0; r < count; ++r) {
      float* x = rows + r * ld;
      const std::size_t at = static_cast<std::size_t>(position0 + r - first) * half;
      const float* c = &cos[at];
      const float* s = &sin[at];
      for (int j = 0; j < half; ++j) {
        const int a = interleaved ? 2 * j : j, b = interleaved ? 2 * j + 1 : j + half;
        const float u = x[a], w = x[b];
        x[a] = u * c[j] - w * s[j];
        x[b] = u * s[j] + w * c[j];
      }
    }
  }
};

// Rows [r0, r0 + rows) of a task's block and the keys [c0, c1) of a run they compute.
struct RowGroup {
  int r0, rows, c0, c1;
  int slice = -1;  // the 16-row slice it is, or -1 for the whole block
};

// The row groups of the run of sub-tiles [first, last) (`cols` keys) for a block of `rows`
// rows: one group of every row and key, unless `words` (the table's slices) is given and a
// sub-tile of the run is partial; then each 16-row slice with the panels from the first to
// the last it may need (slices that need none are left out).
std::vector<RowGroup> row_groups(const std::uint8_t* classes, const std::uint64_t* words, int slices, int first,
                                 int last, int rows, int cols) {
  using Table = cpu::TileClassTable;
  bool partial = false;
  for (int t = first; t < last; ++t) partial |= classes[t] == static_cast<std::uint8_t>(ir::TileClass::Partial);
  if (words == nullptr || !partial || rows > slices * Table::kSliceRows) return {{0, rows, 0, cols}};
  std::vector<RowGroup> out;
  for (int sl = 0; sl * Table::kSliceRows < rows; ++sl) {
    int lo = -1, hi = -1;  // panels of the run, counted from its first key
    for (int t = first; t < last; ++t) {
      const std::uint64_t bits = (words[t] >> Table::slice_bit(sl, 0)) & 0xfu;  // this slice's 4 panels
      for (int pn = 0; pn < Table::kPanelsPerSubTile; ++pn)
        if (bits & (1u << pn)) {
          const int panel = (t - first) * Table::kPanelsPerSubTile + pn;
          if (lo < 0) lo = panel;
          hi = panel;
        }
    }
    if (lo < 0) continue;
    const int r0 = sl * Table::kSliceRows;
    const int c1 = std::min((hi + 1) * Table::kPanelKeys, cols);
    if (lo * Table::kPanelKeys >= c1) continue;
    out.push_back({r0, std::min(Table::kSliceRows, rows - r0), lo * Table::kPanelKeys, c1, sl});
  }
  return out;
}

// Denormals flushed to zero (results) and read as zero (inputs) while a task runs, the previous
// mode restored after: probabilities of masked or far-off scores land in the denormal range,
// where every vector instruction takes a microcode assist (a sliding window in bf16 ran 1.5x
// slower). Values under 1.2e-38 change nothing a check can see; the GPU kernels' exp2 flushes
// them too, and the AMX products always do.
class FlushDenormals {
 public:
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | _MM_FLUSH_ZERO_ON | _MM_DENORMALS_ZERO_ON); }
  ~FlushDenormals() { _mm_setcsr(saved_); }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  unsigned saved_;
};

// Scratch of one worker, grown as needed and kept by the pool's threads.
struct Workspace {
  std::vector<float> q, k, rotated, v, s, o, m, l;
  std::vector<std::uint32_t> q2, k2_rows, k2, v2, p2;  // the bf16 products' words (pairs)
  template <class T>
  static void fit(std::vector<T>& buffer, std::size_t n) {
    if (buffer.size() < n) buffer.resize(n);
  }
};

}  // namespace

std::string cpu_hook_source_name(CpuHookSource source) {
  switch (source) {
    case CpuHookSource::Auto: return "auto";
    case CpuHookSource::Jit: return "jit";
    case CpuHookSource::Interpreted: return "interpreted";
  }
  return "auto";
}

void CpuOptions::validate() const {
  if (threads < 0)
    throw UserError(fmt::format("CpuOptions::threads is {}; use 0 (every worker) or a positive count", threads));
  if (block_q < 0 || block_q > 1024)
    throw UserError(
        fmt::format("CpuOptions::block_q is {}; allowed: 0 (chosen per call) or 1 to 1024 query rows", block_q));
  if (block_kv != 0 &&
      (block_kv < cpu::TileClassTable::kSubTile || block_kv > 4096 || block_kv % cpu::TileClassTable::kSubTile != 0))
    throw UserError(
        fmt::format("CpuOptions::block_kv is {}; allowed: 0 (chosen per call) or a multiple of {} from {} "
                    "to 4096",
                    block_kv, cpu::TileClassTable::kSubTile, cpu::TileClassTable::kSubTile));
}

int cpu_block_kv(const CpuOptions& options, int head_dim) {
  if (options.block_kv != 0) return options.block_kv;
  return head_dim <= 128 ? 512 : 256;
}

bool cpu_backend_has_jit() {
#if ATTNJIT_HAVE_LLVM          // compiler/llvm/llvm_*.cpp are built only with LLVM (CMakeLists.txt)
  return cpu_jit_available();  // LLVM is there; can it target this CPU?
#else
  return false;
#endif
}

CpuHooks make_cpu_hooks(const Variant& variant, CpuHookSource source) {
  if (source == CpuHookSource::Interpreted || (source == CpuHookSource::Auto && !cpu_backend_has_jit()))
    return interpreted_cpu_hooks(variant);
#if ATTNJIT_HAVE_LLVM
  std::string why;
  if (!cpu_jit_available(&why))
    throw RuntimeFailure("the LLVM JIT of the CPU hooks cannot run here: " + why + "; use CpuHookSource::Interpreted");
  return jit_cpu_hooks(variant, CpuJitOptions{});
#else
  throw RuntimeFailure(
      "the LLVM JIT of the CPU hooks is not in this build of attnjit (configured without LLVM); install "
      "llvm-16-dev and rebuild, or use CpuHookSource::Interpreted");
#endif
}

struct CpuAttention::State {
  Variant variant;
  CpuHooks hooks;
  CpuOptions options;
  ArgumentSlots slots;
  cpu::MaskFacts mask;
  std::mutex stats_mutex;
  Stats stats;

  // The tile classes of the last call, and what they were computed for: reused while the
  // shape, the parameter values and the contents of the tensors the mask reads stay the same
  // (a model's layers share one call's document ids). The key holds the layouts; a copy of
  // the tensors' bytes, kept beside it, is compared with the call's in place.
  struct TableKey {
    int batch = 0, heads_q = 0, seq_q = 0, seq_k = 0;
    std::vector<double> params;
    std::vector<std::vector<std::int64_t>> tensor_layouts;  // dtype, shape and strides
    friend bool operator==(const TableKey&, const TableKey&) = default;
  };
  std::mutex table_mutex;
  std::optional<TableKey> table_key;
  std::vector<std::vector<char>> table_tensor_bytes;
  std::shared_ptr<const cpu::TileClassTable> table;
  int table_block_q = 0;
};

namespace {

// Bytes of mask tensors a table key may copy (more: the table is made anew on every call).
constexpr std::size_t kMaxTableSnapshotBytes = std::size_t{16} << 20;

// A host tensor's dtype, shape and strides, and the bytes its elements span; none past
// `limit` bytes or with a negative stride.
struct TensorSpan {
  std::vector<std::int64_t> layout;
  std::span<const char> bytes;
};
std::optional<TensorSpan> tensor_span(const DLTensor& t, std::size_t limit) {
  const auto strides = dlpack_strides(t);
  std::vector<std::int64_t> layout = {t.dtype.code, t.dtype.bits, t.dtype.lanes, t.ndim};
  std::int64_t last = 0;  // the farthest element, in elements
  for (int d = 0; d < t.ndim; ++d) {
    if (strides[static_cast<std::size_t>(d)] < 0) return std::nullopt;
    layout.push_back(t.shape[d]);
    layout.push_back(strides[static_cast<std::size_t>(d)]);
    last += (t.shape[d] - 1) * strides[static_cast<std::size_t>(d)];
  }
  const std::size_t bytes = static_cast<std::size_t>(last + 1) * ((t.dtype.bits * t.dtype.lanes + 7) / 8);
  if (bytes > limit) return std::nullopt;
  return TensorSpan{std::move(layout), {static_cast<const char*>(t.data) + t.byte_offset, bytes}};
}

// Rows per task when CpuOptions::block_q is 0: 256 where that leaves four tasks per worker, else
// 128 (tile_classes). A narrow band (a sliding window) or the causal diagonal does not need
// shorter blocks: inside a run with partial sub-tiles each 16-row slice computes only the
// 16-key panels the analysis cannot prove empty for it (TileClassTable::slices).

}  // namespace

// The tile classes for this call and the rows per task they were made for.
CpuAttention::TileClasses CpuAttention::tile_classes(State& st, int batch, int heads_q, int seq_q, int seq_k,
                                                     const Bindings& bindings) {
  State::TableKey key{batch, heads_q, seq_q, seq_k, {}, {}};
  for (const auto& p : st.variant.params())
    key.params.push_back(p.type == ir::Type::Int ? static_cast<double>(bound_int(bindings, p.name))
                                                 : bound_float(bindings, p.name));
  bool cacheable = true;
  std::size_t span_bytes = 0;
  std::vector<std::span<const char>> tensor_bytes;
  for (const std::string& name : st.mask.tensors) {
    const auto it = bindings.tensors().find(name);
    auto span =
        it == bindings.tensors().end() ? std::nullopt : tensor_span(it->second, kMaxTableSnapshotBytes - span_bytes);
    if (!span) {
      cacheable = false;
      break;
    }
    span_bytes += span->bytes.size();
    key.tensor_layouts.push_back(std::move(span->layout));
    tensor_bytes.push_back(span->bytes);
  }
  if (cacheable) {
    std::lock_guard<std::mutex> lock(st.table_mutex);
    const auto same_bytes = [&] {
      for (std::size_t i = 0; i < tensor_bytes.size(); ++i)
        if (!std::equal(tensor_bytes[i].begin(), tensor_bytes[i].end(), st.table_tensor_bytes[i].begin(),
                        st.table_tensor_bytes[i].end()))
          return false;
      return true;
    };
    if (st.table && st.table_key == key && same_bytes()) return {st.table, st.table_block_q, true};
  }
  const int requested = st.options.block_q;
  int block_q = requested == 0 ? 64 : requested;
  // block_kv here only groups sub-tiles for the interval analysis (the classes do not depend
  // on it); the forward's runs take cpu_block_kv, which needs the head dim.
  auto table = std::make_shared<cpu::TileClassTable>(cpu::classify_tiles(
      st.variant, st.mask,
      cpu::TileProblem{batch, heads_q, seq_q, seq_k, block_q, st.options.block_kv != 0 ? st.options.block_kv : 256},
      bindings, st.options.threads));
  if (requested == 0 && seq_q > 64) {
    // 256 rows while there are still four tasks per worker (K and V are packed once per task:
    // taller tasks pack them less often, and the products run best on tall blocks), else 128.
    // Masks keep their 16-row slices either way (16 or 8 per block), which skip what a band's
    // edge or the diagonal leaves empty.
    const int workers = st.options.threads > 0 ? st.options.threads : cpu::ThreadPool::instance().size();
    const bool tall =
        static_cast<std::int64_t>(batch) * heads_q * ((seq_q + 255) / 256) >= 4 * static_cast<std::int64_t>(workers);
    table = std::make_shared<cpu::TileClassTable>(cpu::merge_q_blocks(*table, tall ? 4 : 2));
    block_q = tall ? 256 : 128;
  }
  if (cacheable) {
    std::lock_guard<std::mutex> lock(st.table_mutex);
    st.table_key = key;
    st.table_tensor_bytes.clear();
    for (const auto& bytes : tensor_bytes) st.table_tensor_bytes.emplace_back(bytes.begin(), bytes.end());
    st.table = table;
    st.table_block_q = block_q;
  }
  return {table, block_q, false};
}

CpuAttention::CpuAttention(const Variant& variant, CpuHooks hooks, const CpuOptions& options)
    : state_(std::make_shared<State>()) {
  options.validate();
  if (!hooks.score_tile && (hooks.has_score_mod || hooks.has_mask))
    throw UserError(
        fmt::format("the CpuHooks given for variant '{}' have no score_tile function; make them with "
                    "make_cpu_hooks, jit_cpu_hooks or interpreted_cpu_hooks",
                    variant.name()));
  state_->mask = cpu::analyse_mask(variant);
  if (hooks.has_mask != state_->mask.has_mask)
    throw UserError(
        fmt::format("the CpuHooks given were made for another variant than '{}' ({} a mask); make them "
                    "from this variant",
                    variant.name(), hooks.has_mask ? "they have" : "they lack"));
  state_->variant = variant;
  state_->hooks = std::move(hooks);
  state_->options = options;
  state_->slots = assign_slots(variant);
}

const Variant& CpuAttention::variant() const { return state_->variant; }
const CpuHooks& CpuAttention::hooks() const { return state_->hooks; }
const CpuOptions& CpuAttention::options() const { return state_->options; }

CpuAttention::Stats CpuAttention::last_stats() const {
  std::lock_guard<std::mutex> lock(state_->stats_mutex);
  return state_->stats;
}

CpuAttention compile_cpu(const Variant& variant, const CpuOptions& options) {
  options.validate();
  return CpuAttention(variant, make_cpu_hooks(variant, options.hooks), options);
}

void CpuAttention::forward(const DLTensor& q, const DLTensor& k, const DLTensor& v, const DLTensor& o,
                           const DLTensor* lse, const Bindings& bindings, double softmax_scale) const {
  const State& st = *state_;
  const Variant& variant = st.variant;
  // ---- checks ----------------------------------------------------------------------
  check_4d(q, "q");
  check_4d(k, "k");
  check_4d(v, "v");
  check_4d(o, "o");
  const auto qs = dlpack_shape(q), ks = dlpack_shape(k), vs = dlpack_shape(v), os = dlpack_shape(o);
  if (ks[0] != qs[0] || vs[0] != qs[0] || vs[1] != ks[1] || vs[2] != ks[2] || ks[3] != qs[3] || os[0] != qs[0] ||
      os[1] != qs[1] || os[2] != qs[2] || os[3] != vs[3])
    throw UserError(fmt::format(
        "shapes do not match: q {}, k {}, v {}, o {}; expected q [B, Hq, Sq, D], k [B, Hkv, Sk, D], v [B, Hkv, Sk, "
        "Dv] and o [B, Hq, Sq, Dv]",
        shape_string(qs), shape_string(ks), shape_string(vs), shape_string(os)));
  if (qs[1] % ks[1] != 0)
    throw UserError(
        fmt::format("heads_q = {} is not a multiple of heads_kv = {}; GQA needs whole groups", qs[1], ks[1]));
  const View qv(q, "q"), kv(k, "k"), vv(v, "v"), ov(o, "o");
  if (kv.storage != qv.storage || vv.storage != qv.storage || ov.storage != qv.storage)
    throw UserError(fmt::format("q, k, v and o must share one dtype; got {}, {}, {} and {}", dlpack_dtype_name(q.dtype),
                                dlpack_dtype_name(k.dtype), dlpack_dtype_name(v.dtype), dlpack_dtype_name(o.dtype)));
  const int batch = static_cast<int>(qs[0]), heads_q = static_cast<int>(qs[1]), heads_kv = static_cast<int>(ks[1]);
  const int seq_q = static_cast<int>(qs[2]), seq_k = static_cast<int>(ks[2]);
  const int dim = static_cast<int>(qs[3]), dim_v = static_cast<int>(vs[3]);
  std::vector<std::int64_t> lse_strides;
  if (lse) {
    const std::vector<std::int64_t> want = {qs[0], qs[1], qs[2]};
    if (!is_host(*lse) || lse->dtype.code != kDLFloat || lse->dtype.bits != 32 || lse->dtype.lanes != 1 ||
        dlpack_shape(*lse) != want)
      throw UserError(fmt::format("lse must be an f32 host tensor of shape {}; got {} {} on device type {}",
                                  shape_string(want), dlpack_dtype_name(lse->dtype), shape_string(dlpack_shape(*lse)),
                                  static_cast<int>(lse->device.device_type)));
    lse_strides = dlpack_strides(*lse);
  }
  const double scale = softmax_scale != 0.0 ? softmax_scale : 1.0 / std::sqrt(static_cast<double>(dim));
  if (!(scale > 0.0) || !std::isfinite(scale))
    throw UserError(fmt::format(
        "softmax_scale {} is not allowed; it must be a positive finite number (0 means 1/sqrt(head_dim)). For a "
        "negated or zero scale, write it in the score_mod",
        softmax_scale));
  check_bindings(variant, bindings);

  // ---- arguments of the hooks --------------------------------------------------------
  CpuHookArgs args;
  args.seq_q = seq_q;
  args.seq_k = seq_k;
  args.heads_q = heads_q;
  for (std::size_t i = 0; i < st.slots.int_params.size(); ++i)
    args.int_params[i] = static_cast<std::int32_t>(bound_int(bindings, st.slots.int_params[i].name));
  for (std::size_t i = 0; i < st.slots.float_params.size(); ++i)
    args.float_params[i] = static_cast<float>(bound_float(bindings, st.slots.float_params[i].name));
  for (std::size_t i = 0; i < st.slots.tensors.size(); ++i) {
    const std::string& name = st.slots.tensors[i].name;
    const DLTensor& t = bindings.tensors().at(name);
    if (!is_host(t))
      throw UserError(
          fmt::format("tensor '{}' is not in host memory; the CPU backend reads captured tensors on the "
                      "host: copy it there",
                      name));
    const auto strides = dlpack_strides(t);
    CpuTensorArg& a = args.tensors[i];
    a.data = static_cast<const char*>(t.data) + t.byte_offset;
    a.dtype = static_cast<int>(st.slots.tensors[i].dtype);
    for (int d = 0; d < t.ndim; ++d) {
      if (t.shape[d] <= 0)
        throw UserError(fmt::format("tensor '{}' has an empty dimension {}; every extent must be at least 1", name, d));
      a.stride[d] = strides[static_cast<std::size_t>(d)];
      a.size[d] = t.shape[d];
    }
  }

  // ---- row hooks -----------------------------------------------------------------------
  std::optional<RopeTable> rope;
  std::int64_t rope_offset = 0;
  if (variant.rope()) {
    if (!variant.rope()->offset_param.empty()) rope_offset = bound_int(bindings, variant.rope()->offset_param);
    if (dim_v != dim) throw UserError(fmt::format("RoPE needs V's head dimension ({}) equal to Q's ({})", dim_v, dim));
    const std::int64_t q_first = seq_k - seq_q + rope_offset, k_first = rope_offset;
    rope.emplace(*variant.rope(), dim, std::min(q_first, k_first), std::max(q_first + seq_q, k_first + seq_k) - 1);
  }
  std::optional<DLTensor> gate;
  std::vector<std::int64_t> gate_strides;
  if (variant.output_gate()) {
    gate = bindings.tensors().at(variant.output_gate()->tensor);
    std::vector<std::int64_t> want = {batch, heads_q, seq_q};
    if (gate->ndim == 4) want.push_back(dim_v);
    if (dlpack_shape(*gate) != want)
      throw UserError(fmt::format("output gate tensor '{}' has shape {}; expected {}", variant.output_gate()->tensor,
                                  shape_string(dlpack_shape(*gate)), shape_string(want)));
    gate_strides = dlpack_strides(*gate);
  }

  // ---- tile classes and tasks ----------------------------------------------------------
  const int block_kv = cpu_block_kv(st.options, dim);
  const int threads = st.options.threads;
  const auto t0 = std::chrono::steady_clock::now();
  const auto [table_ptr, block_q, classes_reused] = tile_classes(*state_, batch, heads_q, seq_q, seq_k, bindings);
  const cpu::TileClassTable& table = *table_ptr;
  const double classify_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  // Tasks (b, h, q block), the heaviest (most non-empty sub-tiles) first so that the
  // dynamic hand-out ends evenly.
  const int q_blocks = table.q_blocks, sub_tiles = table.sub_tiles;
  const int tasks = batch * heads_q * q_blocks;
  std::vector<int> order(static_cast<std::size_t>(tasks)), weight(order.size());
  Stats stats;
  stats.classify_ms = classify_ms;
  stats.classes_reused = classes_reused;
  stats.block_q = block_q;
  for (int t = 0; t < tasks; ++t) {
    const int qb = t % q_blocks, bh = t / q_blocks;
    const std::uint8_t* row = table.row(bh / heads_q, bh % heads_q, qb);
    for (int s = 0; s < sub_tiles; ++s) {
      const auto cls = static_cast<ir::TileClass>(row[s]);
      weight[static_cast<std::size_t>(t)] += cls != ir::TileClass::Empty;
      (cls == ir::TileClass::Full ? stats.full_tiles
                                  : (cls == ir::TileClass::Partial ? stats.partial_tiles : stats.empty_tiles))++;
    }
  }
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return weight[static_cast<std::size_t>(a)] > weight[static_cast<std::size_t>(b)];
  });
  {
    std::lock_guard<std::mutex> lock(state_->stats_mutex);
    state_->stats = stats;
  }

  const CpuHooks& hooks = st.hooks;
  const bool has_mask = st.mask.has_mask && hooks.has_mask;
  // O and V rows are padded to whole vectors of 16 floats; fp32 V with such rows is read in place.
  const int width = (dim_v + 15) / 16 * 16;
  const bool direct_v = vv.storage == cpu::Storage::F32 && vv.stride[3] == 1 && width == dim_v;
  const int group = heads_q / heads_kv;
  const int sub = cpu::TileClassTable::kSubTile;
  const float scale_f = static_cast<float>(scale);
  // A score_mod sees scaled scores, so the products scale them; otherwise they stay unscaled
  // (the mask's -inf is the same either way) and the softmax applies the scale in its exp.
  const float product_scale = hooks.has_score_mod ? scale_f : 1.0f;
  const float post_scale = hooks.has_score_mod ? 1.0f : scale_f;
  // bf16 inputs on a CPU with AVX512_BF16: the products read bf16 pairs (cpu_kernels.hpp).
  const bool bf16_dot = st.options.bf16_products && qv.storage == cpu::Storage::BF16 && cpu::bf16_products_available();
  const int pairs = (dim + 1) / 2, kv_pairs = (block_kv + 1) / 2;
  char* const o_base = static_cast<char*>(o.data) + o.byte_offset;
  float* const lse_base = lse ? reinterpret_cast<float*>(static_cast<char*>(lse->data) + lse->byte_offset) : nullptr;

  // With AMX tiles, P V runs whole steps of 16 key pairs: P is zero-padded to them, and V gets
  // 16 zero pair rows past a run's last key pair, so that the padded steps read finite zeros.
  const bool amx = bf16_dot && cpu::amx_products_available();
  // bf16 K with unit column stride, an even head dim, even row strides and a 4-byte aligned
  // start: each row is already (dim / 2) words of pairs, read in place.
  const bool k_rows_are_words = bf16_dot && !rope && kv.stride[3] == 1 && dim % 2 == 0 && kv.stride[2] % 2 == 0 &&
                                kv.stride[1] % 2 == 0 && kv.stride[0] % 2 == 0 &&
                                reinterpret_cast<std::uintptr_t>(kv.at(0, 0, 0)) % 4 == 0;

  const auto run_task = [&](int, int index) {
    const FlushDenormals flush;
    thread_local Workspace ws;
    const int task = order[static_cast<std::size_t>(index)];
    const int qb = task % q_blocks, bh = task / q_blocks, b = bh / heads_q, h = bh % heads_q, hk = h / group;
    const int q0 = qb * block_q, rows = std::min(block_q, seq_q - q0);
    const std::uint8_t* classes = table.row(b, h, qb);
    const std::uint64_t* slice_words = table.slice_row(b, h, qb);
    const std::uint64_t* full_words = table.full_slice_row(b, h, qb);
    Workspace::fit(ws.q, static_cast<std::size_t>(rows) * dim);
    Workspace::fit(ws.s, static_cast<std::size_t>(rows) * block_kv);
    Workspace::fit(ws.o, static_cast<std::size_t>(rows) * width);
    Workspace::fit(ws.m, static_cast<std::size_t>(rows));
    Workspace::fit(ws.l, static_cast<std::size_t>(rows));
    Workspace::fit(ws.k, static_cast<std::size_t>(cpu::packed_keys_floats(block_kv, dim)));
    if (rope) Workspace::fit(ws.rotated, static_cast<std::size_t>(block_kv) * dim);
    if (!direct_v) Workspace::fit(ws.v, static_cast<std::size_t>(block_kv) * width);
    float *qf = ws.q.data(), *s = ws.s.data(), *acc = ws.o.data(), *m = ws.m.data(), *l = ws.l.data();

    if (bf16_dot) {
      Workspace::fit(ws.q2, static_cast<std::size_t>(rows) * pairs);
      Workspace::fit(ws.k2_rows, static_cast<std::size_t>(block_kv) * pairs);
      Workspace::fit(ws.k2, static_cast<std::size_t>(block_kv + cpu::kKeyPanel) * pairs);
      Workspace::fit(ws.v2, static_cast<std::size_t>(kv_pairs + 16) * width);
      Workspace::fit(ws.p2, static_cast<std::size_t>(rows) * kv_pairs);
    }
    if (bf16_dot && !rope) {
      cpu::pack_rows_bf16(static_cast<const std::uint16_t*>(qv.at(b, h, q0)), qv.stride[2], qv.stride[3], rows, dim,
                          ws.q2.data(), pairs);
    } else {
      cpu::load_tile(qv.storage, qv.at(b, h, q0), qv.stride[2], qv.stride[3], rows, dim, qf, dim);
      if (rope) rope->rotate(qf, dim, rows, seq_k - seq_q + rope_offset + q0);
      if (bf16_dot) cpu::pack_rows_bf16(qf, dim, rows, dim, ws.q2.data(), pairs);  // turned, then rounded
    }
    std::fill_n(acc, static_cast<std::size_t>(rows) * width, 0.0f);
    std::fill_n(m, rows, kNegInf);
    std::fill_n(l, rows, 0.0f);

    for (int first = 0; first < sub_tiles;) {
      if (classes[first] == static_cast<std::uint8_t>(ir::TileClass::Empty)) {
        ++first;
        continue;
      }
      // A run of non-empty sub-tiles, at most block_kv keys.
      int last = first + 1;
      while (last < sub_tiles && last - first < block_kv / sub &&
             classes[last] != static_cast<std::uint8_t>(ir::TileClass::Empty))
        ++last;
      const int kv0 = first * sub, cols = std::min(last * sub, seq_k) - kv0;

      // K widened (and rotated) into panels once per tile.
      const std::uint32_t* k2 = ws.k2.data();
      const float* kf = ws.k.data();
      if (bf16_dot) {
        if (k_rows_are_words) {  // K's rows are already rows of words: into panels directly
          cpu::pack_keys_bf16(static_cast<const std::uint32_t*>(kv.at(b, hk, kv0)), kv.stride[2] / 2, cols, dim,
                              ws.k2.data());
        } else {
          if (rope) {
            float* rotated = ws.rotated.data();
            cpu::load_tile(kv.storage, kv.at(b, hk, kv0), kv.stride[2], kv.stride[3], cols, dim, rotated, dim);
            rope->rotate(rotated, dim, cols, rope_offset + kv0);
            cpu::pack_rows_bf16(rotated, dim, cols, dim, ws.k2_rows.data(), pairs);
          } else {
            cpu::pack_rows_bf16(static_cast<const std::uint16_t*>(kv.at(b, hk, kv0)), kv.stride[2], kv.stride[3], cols,
                                dim, ws.k2_rows.data(), pairs);
          }
          cpu::pack_keys_bf16(ws.k2_rows.data(), pairs, cols, dim, ws.k2.data());
        }
      } else if (rope) {
        float* rotated = ws.rotated.data();
        cpu::load_tile(kv.storage, kv.at(b, hk, kv0), kv.stride[2], kv.stride[3], cols, dim, rotated, dim);
        rope->rotate(rotated, dim, cols, rope_offset + kv0);
        cpu::pack_keys(cpu::Storage::F32, rotated, dim, 1, cols, dim, ws.k.data());
      } else {
        cpu::pack_keys(kv.storage, kv.at(b, hk, kv0), kv.stride[2], kv.stride[3], cols, dim, ws.k.data());
      }

      // V of the run, packed (bf16 products) or widened once, before the groups use it.
      const std::uint32_t* v2 = ws.v2.data();
      const float* vp = nullptr;
      std::int64_t ldv = 0;
      if (bf16_dot) {
        cpu::pack_values_bf16(static_cast<const std::uint16_t*>(vv.at(b, hk, kv0)), vv.stride[2], vv.stride[3], cols,
                              dim_v, width, ws.v2.data());
        if (amx)
          std::fill_n(ws.v2.data() + static_cast<std::int64_t>((cols + 1) / 2) * width,
                      static_cast<std::size_t>(16) * width, 0u);
      } else if (direct_v) {
        vp = static_cast<const float*>(vv.at(b, hk, kv0));
        ldv = vv.stride[2];
      } else {
        float* vf = ws.v.data();
        cpu::load_tile(vv.storage, vv.at(b, hk, kv0), vv.stride[2], vv.stride[3], cols, dim_v, vf, width);
        if (width != dim_v)
          for (int j = 0; j < cols; ++j) std::fill(vf + j * width + dim_v, vf + (j + 1) * width, 0.0f);
        vp = vf;
        ldv = width;
      }

      // The row groups of this run and the keys each may need: the whole block over every
      // key, or, where the run holds a partial sub-tile and the table has slices, 16-row
      // slices over the panels [c0, c1) that the analysis could not prove empty for them (a
      // band's edge then costs about half a sub-tile instead of a whole one).
      const auto groups = row_groups(classes, slice_words, table.slices_per_block, first, last, rows, cols);
      for (const RowGroup& gr : groups) {
        // S (and P) of every group start at the scratch's first row, whichever rows it holds: a
        // band's 16 slices then reuse one L1-sized scratch instead of each writing rows of their
        // own, which pushed K and V out of the caches between slices.
        const int ncols = gr.c1 - gr.c0;
        // S = scale * Q K^T over the group's keys.
        if (bf16_dot)
          cpu::scores_bf16(gr.rows, ncols, dim, product_scale, ws.q2.data() + static_cast<std::int64_t>(gr.r0) * pairs,
                           pairs, k2 + static_cast<std::int64_t>(gr.c0) * pairs, s + gr.c0, block_kv);
        else
          cpu::scores(gr.rows, ncols, dim, product_scale, qf + static_cast<std::int64_t>(gr.r0) * dim, dim,
                      kf + static_cast<std::int64_t>(gr.c0) * dim, s + gr.c0, block_kv);

        // The hooks, per run of sub-tiles of one class: the mask only on partial ones, and in a
        // 16-row slice only on the 16-key panels the analysis does not prove full for it (a
        // band's edge then masks a panel per row and slice, not a 64-key sub-tile).
        const auto hook = [&](int c0, int c1, bool mask) {
          if (c0 < c1 && (hooks.has_score_mod || mask))
            hooks.score_tile(s + c0, block_kv, gr.rows, c1 - c0, b, h, q0 + gr.r0, kv0 + c0, &args, mask ? 1 : 0);
        };
        // Whether (this slice, the panel holding run key c) is proven full.
        const auto panel_full = [&](int c) {
          const int t = (kv0 + c) / sub, panel = (kv0 + c) % sub / cpu::TileClassTable::kPanelKeys;
          return (full_words[t] >> cpu::TileClassTable::slice_bit(gr.slice, panel) & 1u) != 0;
        };
        if (hooks.has_score_mod || has_mask)
          for (int a = first; a < last;) {
            int z = a + 1;
            while (z < last && classes[z] == classes[a]) ++z;
            const bool partial = classes[a] == static_cast<std::uint8_t>(ir::TileClass::Partial);
            const int c0 = std::max(a * sub - kv0, gr.c0), c1 = std::min(std::min(z * sub, seq_k) - kv0, gr.c1);
            if (!(partial && has_mask && gr.slice >= 0 && full_words)) {
              hook(c0, c1, partial && has_mask);
            } else {
              constexpr int kPanel = cpu::TileClassTable::kPanelKeys;
              for (int c = c0; c < c1;) {  // c0 is on a panel boundary (kv0 is on a sub-tile's)
                const bool full = panel_full(c);
                int e = std::min((c / kPanel + 1) * kPanel, c1);
                while (e < c1 && panel_full(e) == full) e = std::min(e + kPanel, c1);
                hook(c, e, !full);
                c = e;
              }
            }
            a = z;
          }

        // Online softmax: P = exp(S - m_new) in place (with bf16 products: straight into P's
        // words, row r's from word 0); O and l rescaled by exp(m_old - m_new). A row that has
        // admitted nothing yet keeps m = -inf and gets P = 0.
        for (int r = gr.r0; r < gr.r0 + gr.rows; ++r) {
          float* sr = s + static_cast<std::int64_t>(r - gr.r0) * block_kv + gr.c0;
          std::uint32_t* pr = bf16_dot ? ws.p2.data() + static_cast<std::int64_t>(r - gr.r0) * kv_pairs : nullptr;
          float m_new = kNegInf, sum = 0.0f;
          if (ncols <= cpu::kShortRowKeys) {  // max and exp in one pass, the row in registers (a band's slices)
            sum = bf16_dot ? cpu::softmax_short_row_bf16(sr, ncols, post_scale, m[r], &m_new, pr)
                           : cpu::softmax_short_row(sr, ncols, post_scale, m[r], &m_new);
          } else {
            m_new = std::max(m[r], cpu::max_of(sr, ncols) * post_scale);
            if (m_new == kNegInf) {
              if (bf16_dot)
                std::fill_n(pr, (ncols + 1) / 2, 0u);
              else
                std::fill_n(sr, ncols, 0.0f);
            } else {
              sum = bf16_dot ? cpu::exp_shifted_sum_bf16(sr, ncols, m_new, post_scale, pr)
                             : cpu::exp_shifted_sum(sr, ncols, m_new, post_scale);
            }
          }
          if (m_new == kNegInf) continue;
          if (m_new > m[r] && m[r] != kNegInf) {
            const float correction = std::exp(m[r] - m_new);
            l[r] *= correction;
            cpu::scale_in_place(acc + static_cast<std::int64_t>(r) * width, width, correction);
          }
          m[r] = m_new;
          l[r] += sum;
        }

        // O += P V over the group's keys, while its P is still in cache.
        if (bf16_dot) {
          std::uint32_t* pg = ws.p2.data();
          const int keys = gr.c1 - gr.c0, used = (keys + 1) / 2;  // P's words: written by the softmax
          // With AMX: whole steps of 16 pairs, the padding pairs zero (V is zero or finite there).
          const int padded = amx ? std::min((used + 15) / 16 * 16, kv_pairs) : used;
          for (int r = 0; r < gr.rows && padded > used; ++r)
            std::fill(pg + static_cast<std::int64_t>(r) * kv_pairs + used,
                      pg + static_cast<std::int64_t>(r) * kv_pairs + padded, 0u);
          cpu::accumulate_pv_bf16(gr.rows, width, padded > used ? 2 * padded : keys, pg, kv_pairs,
                                  v2 + static_cast<std::int64_t>(gr.c0 / 2) * width,
                                  acc + static_cast<std::int64_t>(gr.r0) * width, width);
        } else {
          cpu::accumulate_pv(gr.rows, width, gr.c1 - gr.c0, s + gr.c0, block_kv,
                             vp + static_cast<std::int64_t>(gr.c0) * ldv, ldv,
                             acc + static_cast<std::int64_t>(gr.r0) * width, width);
        }
      }
      first = last;
    }

    // O / l, the gate, one rounding into o; LSE = m + log(l). Fully masked rows: 0 and -inf.
    // Without a gate the store divides by l as it rounds (l[r] becomes 1 / l; one pass over O).
    for (int r = 0; r < rows; ++r) {
      float* ar = acc + static_cast<std::int64_t>(r) * width;
      const bool masked = !(l[r] > 0.0f);
      if (lse_base)
        lse_base[b * lse_strides[0] + h * lse_strides[1] + (q0 + r) * lse_strides[2]] =
            masked ? kNegInf : m[r] + std::log(l[r]);
      if (masked) {
        std::fill_n(ar, dim_v, 0.0f);
        l[r] = 1.0f;  // the store's factor
      } else if (!gate) {
        l[r] = 1.0f / l[r];
      } else {
        cpu::scale_in_place(ar, dim_v, 1.0f / l[r]);
        const std::int64_t g0 = b * gate_strides[0] + h * gate_strides[1] + (q0 + r) * gate_strides[2];
        for (int d = 0; d < dim_v; ++d) {
          const double g = load_as_double(*gate, g0 + (gate->ndim == 4 ? d * gate_strides[3] : 0));
          ar[d] *= static_cast<float>(1.0 / (1.0 + std::exp(-g)));
        }
      }
    }
    char* out = o_base + (b * ov.stride[0] + h * ov.stride[1] + static_cast<std::int64_t>(q0) * ov.stride[2]) *
                             static_cast<std::int64_t>(ov.element_bytes);
    cpu::store_tile(ov.storage, acc, width, rows, dim_v, out, ov.stride[2], ov.stride[3], gate ? nullptr : l);
  };
  cpu::ThreadPool::instance().parallel_for(tasks, run_task, threads);
}

}  // namespace attnjit
