// Forward-kernel benchmark (see benchmark.hpp).
#include "runtime/tuning/benchmark.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <thread>

#include "compiler/eval.hpp"
#include "compiler/mask_analysis.hpp"
#include "compiler/pipeline.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/api/tensor_ranges.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "templates/decode_sm80/decode_sm80_template.hpp"

namespace attnjit {
namespace {

// The template and knobs of the unit that ran, where it is not the compiled one.
void name_unit(BenchResult& r, const PreparedKernel& unit) {
  r.template_name = unit.config.template_name;
  r.schedule = unit.config.knobs.str();
}

// A 16-bit float buffer filled with N(0, 1) samples. The samples come in chunks of 2^20, each
// from its own generator seeded from `rng`, spread over the host's threads: the values do not
// depend on the thread count, and a 4k x 16 head problem's inputs take a fraction of a second
// instead of seconds of single-threaded sampling per launch of `attnjit bench`.
void fill_normal(const runtime::DeviceBuffer& buffer, std::mt19937_64& rng, DLDataType dtype) {
  constexpr std::int64_t chunk = std::int64_t{1} << 20;
  HostTensor h(dtype, {static_cast<std::int64_t>(buffer.size_bytes() / 2)});
  const std::int64_t chunks = (h.numel() + chunk - 1) / chunk;
  const std::uint64_t seed = rng();
  std::atomic<std::int64_t> next{0};
  auto work = [&] {
    for (std::int64_t c; (c = next.fetch_add(1)) < chunks;) {
      std::mt19937_64 chunk_rng(seed + static_cast<std::uint64_t>(c));
      std::normal_distribution<double> normal(0.0, 1.0);
      for (std::int64_t i = c * chunk; i < std::min(h.numel(), (c + 1) * chunk); ++i) h.set(i, normal(chunk_rng));
    }
  };
  const auto threads = static_cast<std::int64_t>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (std::int64_t t = 1; t < std::min(threads, chunks); ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  buffer.copy_from_host(h.data(), buffer.size_bytes());
}

// One set of device inputs (Q, K, V, O, LSE) with DLPack views.
struct DeviceProblem {
  std::vector<std::int64_t> q_shape, kv_shape, lse_shape;
  runtime::DeviceBuffer q, k, v, o, lse;
  DLTensor q_view{}, k_view{}, v_view{}, o_view{}, lse_view{};

  DeviceProblem(const ForwardProblem& p, int dim, DLDataType dtype)
      : q_shape{p.batch, p.heads_q, p.seq_q, dim},
        kv_shape{p.batch, p.heads_kv, p.seq_k, dim},
        lse_shape{p.batch, p.heads_q, p.seq_q},
        q(bytes(q_shape, 2)),
        k(bytes(kv_shape, 2)),
        v(bytes(kv_shape, 2)),
        o(bytes(q_shape, 2)),
        lse(bytes(lse_shape, 4)) {
    view(q_view, q, q_shape, dtype);
    view(k_view, k, kv_shape, dtype);
    view(v_view, v, kv_shape, dtype);
    view(o_view, o, q_shape, dtype);
    view(lse_view, lse, lse_shape, dlpack_float32());
  }
  static std::size_t bytes(const std::vector<std::int64_t>& s, int elem) {
    std::size_t n = static_cast<std::size_t>(elem);
    for (auto e : s) n *= static_cast<std::size_t>(e);
    return n;
  }
  static void view(DLTensor& t, const runtime::DeviceBuffer& buf, std::vector<std::int64_t>& shape, DLDataType dtype) {
    t.data = reinterpret_cast<void*>(buf.device_pointer());
    t.device = DLDevice{kDLCUDA, 0};
    t.ndim = static_cast<int>(shape.size());
    t.dtype = dtype;
    t.shape = shape.data();
  }
  void fill_random(std::mt19937_64& rng, DLDataType dtype) {
    for (const runtime::DeviceBuffer* b : {&q, &k, &v}) fill_normal(*b, rng, dtype);
  }
};

}  // namespace

void BenchOptions::validate() const {
  if (warmup < 0 || repetitions < 1 || input_sets < 0 || input_sets > 64 || documents < 1)
    throw UserError(
        fmt::format("bench options out of range: warmup {} (>= 0), repetitions {} (>= 1), input sets {} "
                    "(0..64), documents {} (>= 1)",
                    warmup, repetitions, input_sets, documents));
}

std::string BenchResult::csv_header() {
  return "variant,batch,heads_q,heads_kv,seq_q,seq_k,head_dim,dtype,template,schedule,median_ms,min_ms,max_ms,density,"
         "tflops,"
         "bandwidth_gbs,input_sets";
}

std::string BenchResult::csv() const {
  return fmt::format("{},{},{},{},{},{},{},{},{},{},{:.5f},{:.5f},{:.5f},{:.6f},{:.2f},{:.1f},{}", variant,
                     problem.batch, problem.heads_q, problem.heads_kv, problem.seq_q, problem.seq_k, head_dim, dtype,
                     template_name, schedule, median_ms, min_ms, max_ms, density, tflops, bandwidth_gbs, input_sets);
}

namespace {
// Rounds to `digits` decimals, as the CSV prints them, so a JSON line stays short.
double rounded(double value, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::isfinite(value) ? std::round(value * scale) / scale : value;
}
}  // namespace

std::string BenchResult::json() const {
  const nlohmann::json row = {{"variant", variant},
                              {"batch", problem.batch},
                              {"heads_q", problem.heads_q},
                              {"heads_kv", problem.heads_kv},
                              {"seq_q", problem.seq_q},
                              {"seq_k", problem.seq_k},
                              {"head_dim", head_dim},
                              {"dtype", dtype},
                              {"template", template_name},
                              {"schedule", schedule},
                              {"pass", pass},
                              {"median_ms", rounded(median_ms, 5)},
                              {"min_ms", rounded(min_ms, 5)},
                              {"max_ms", rounded(max_ms, 5)},
                              {"density", rounded(density, 6)},
                              {"tflops", rounded(tflops, 2)},
                              {"bandwidth_gbs", rounded(bandwidth_gbs, 1)},
                              {"input_sets", input_sets}};
  // A variant name is the user's text: bytes that are not UTF-8 become U+FFFD instead of failing.
  return row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

double mask_density(const Variant& variant, const ForwardProblem& p, const Bindings& bindings,
                    std::int64_t max_evaluations) {
  if (!variant.has_mask()) return 1.0;
  const auto lowered = ir::lower({{"mask_mod", variant.mask_mod().node(), ir::Type::Bool}});
  const ir::NodeRef mask = lowered.roots[0].root;
  const ir::NodeRef normalized = ir::normalize_for_intervals(mask);
  ir::EvalEnv env;
  env.q_len = p.seq_q;
  env.kv_len = p.seq_k;
  env.num_heads = p.heads_q;
  ir::TileBox box;
  box.q_len = p.seq_q;
  box.kv_len = p.seq_k;
  box.num_heads = p.heads_q;
  for (const auto& param : variant.params()) {
    if (param.type == ir::Type::Int) {
      env.params[param.name] = ir::Value::of_int(bound_int(bindings, param.name));
      box.int_params[param.name] = bound_int(bindings, param.name);
    } else {
      env.params[param.name] = ir::Value::of_float(bound_float(bindings, param.name));
      box.float_params[param.name] = bound_float(bindings, param.name);
    }
  }
  // Tiles of a mask that reads a tensor are bounded by the bound values (document ids): only
  // the tiles across a document's edge or the diagonal are then counted element by element.
  box.tensor_range = bound_tensor_ranges(bindings);
  env.read_tensor = [&](const ir::Node& read, std::span<const std::int64_t> idx) {
    const DLTensor& t = bindings.tensors().at(read.name);
    const auto strides = dlpack_strides(t);
    std::int64_t off = 0;
    for (int d = 0; d < t.ndim; ++d) off += std::clamp<std::int64_t>(idx[d], 0, t.shape[d] - 1) * strides[d];
    if (read.type == ir::Type::Float) return ir::Value::of_float(load_as_double(t, off));
    if (read.type == ir::Type::Int) return ir::Value::of_int(load_as_int(t, off));
    return ir::Value::of_bool(load_as_int(t, off) != 0);
  };
  // Masks that do not mention b (or h) are the same for every batch (or head): count one and
  // scale. A tensor read varies only with its indices, which are part of the mask (document
  // ids doc[b, kv] are the same for every head).
  const ir::IndexUses uses = ir::index_uses(mask);
  const int batches = uses.batch ? p.batch : 1, heads = uses.head ? p.heads_q : 1;
  std::vector<ir::Value> scratch, roots;
  // Classify every tile once; partial tiles are then evaluated element by element.
  constexpr int tile = 64;
  struct Tile {
    ir::IntRange b, h, q, kv;
    ir::TileClass cls;
  };
  std::vector<Tile> tiles;
  for (int b = 0; b < batches; ++b)
    for (int h = 0; h < heads; ++h)
      for (int q0 = 0; q0 < p.seq_q; q0 += tile)
        for (int k0 = 0; k0 < p.seq_k; k0 += tile) {
          box.b = {b, b};
          box.h = {h, h};
          box.q = {q0, std::min(q0 + tile, p.seq_q) - 1};
          box.kv = {k0, std::min(k0 + tile, p.seq_k) - 1};
          tiles.push_back({box.b, box.h, box.q, box.kv, ir::classify_tile(normalized, box)});
        }
  // Sample every row_step-th query row of partial tiles when evaluating all would be too much.
  int row_step = 1;
  for (int step : {1, 4, 16, 64, 256}) {
    row_step = step;
    std::int64_t partial_elements = 0;
    for (const Tile& t : tiles)
      if (t.cls == ir::TileClass::Partial)
        partial_elements += (t.q.hi - t.q.lo + step) / step * (t.kv.hi - t.kv.lo + 1);
    if (partial_elements <= max_evaluations) break;
  }
  double admitted = 0, total = 0;
  for (const Tile& t : tiles) {
    const double elements = static_cast<double>(t.q.hi - t.q.lo + 1) * (t.kv.hi - t.kv.lo + 1);
    total += elements;
    if (t.cls == ir::TileClass::Full) admitted += elements;
    if (t.cls != ir::TileClass::Partial) continue;
    double hits = 0, seen = 0;
    // Sampled rows start mid-stride (mid-tile when the stride is longer than the tile), so a
    // diagonal tile is not judged by its first row alone.
    const std::int64_t first = t.q.lo + std::min<std::int64_t>(row_step / 2, (t.q.hi - t.q.lo) / 2);
    for (std::int64_t q = first; q <= t.q.hi; q += row_step)
      for (std::int64_t kv = t.kv.lo; kv <= t.kv.hi; ++kv) {
        env.b = t.b.lo, env.h = t.h.lo, env.q = q, env.kv = kv;
        ir::evaluate_program(lowered.program, env, scratch, roots);
        hits += roots[0].b ? 1 : 0;
        seen += 1;
      }
    admitted += elements * hits / seen;
  }
  return admitted / total;
}

struct ForwardBenchmark::State {
  Variant variant;
  ElementType dtype_kind = ElementType::BF16;
  int dim = 0;
  ForwardProblem p;
  BenchOptions bench;
  Bindings device_bindings, host_bindings;
  std::vector<std::unique_ptr<HostTensor>> host_tensors;
  std::vector<std::unique_ptr<runtime::DeviceBuffer>> device_tensors;
  std::vector<std::vector<std::int64_t>> shapes;
  std::vector<std::unique_ptr<DeviceProblem>> inputs;
  std::size_t set_bytes = 0;
  int sets = 0;
  std::optional<double> density;
};

ForwardBenchmark::ForwardBenchmark(const Variant& variant, ElementType dtype_kind, int dim, const ForwardProblem& p,
                                   const Bindings& scalars, const BenchOptions& bench)
    : state_(std::make_unique<State>()) {
  bench.validate();
  State& st = *state_;
  st.variant = variant;
  st.dtype_kind = dtype_kind;
  st.dim = dim;
  st.p = p;
  st.bench = bench;
  const DLDataType dtype = dtype_kind == ElementType::BF16 ? dlpack_bfloat16() : dlpack_float16();
  std::mt19937_64 rng(42);

  // Captured tensors: random floats, int ids in `documents` equal segments along the last axis.
  st.device_bindings = scalars;
  st.host_bindings = scalars;
  st.shapes.reserve(variant.tensors().size());
  for (const auto& decl : variant.tensors()) {
    const std::vector<std::int64_t> shape = covering_tensor_shape(variant, decl, p, scalars);
    auto host = std::make_unique<HostTensor>(to_dlpack_dtype(decl.dtype), shape);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (std::int64_t i = 0; i < host->numel(); ++i) {
      if (ir::value_type_of(decl.dtype) == ir::Type::Float)
        host->set(i, 0.5 * normal(rng));
      else
        host->set(i, static_cast<double>((i % shape.back()) * bench.documents / shape.back()));
    }
    auto device =
        std::make_unique<runtime::DeviceBuffer>(std::max<std::size_t>(host->dl().dtype.bits / 8 * host->numel(), 16));
    device->copy_from_host(host->data(), static_cast<std::size_t>(host->dl().dtype.bits / 8 * host->numel()));
    st.shapes.push_back(shape);
    DLTensor view = host->dl();
    view.data = reinterpret_cast<void*>(device->device_pointer());
    view.device = DLDevice{kDLCUDA, 0};
    view.shape = st.shapes.back().data();
    st.device_bindings.set(decl.name, view);
    st.host_bindings.set(decl.name, host->dl());
    st.host_tensors.push_back(std::move(host));
    st.device_tensors.push_back(std::move(device));
  }

  st.set_bytes = DeviceProblem::bytes({p.batch, p.heads_q, p.seq_q, dim}, 2) * 2 +
                 DeviceProblem::bytes({p.batch, p.heads_kv, p.seq_k, dim}, 2) * 2;
  st.sets = bench.input_sets;
  if (st.sets == 0)
    st.sets =
        static_cast<int>(std::clamp<std::size_t>((200u << 20) / std::max<std::size_t>(st.set_bytes, 1) + 1, 1, 8));
  for (int i = 0; i < st.sets; ++i) {
    st.inputs.push_back(std::make_unique<DeviceProblem>(p, dim, dtype));
    st.inputs.back()->fill_random(rng, dtype);
  }
}

ForwardBenchmark::~ForwardBenchmark() = default;

namespace {
// The gradients' buffers of one input set (dO is random; dQ, dK, dV are written).
struct DeviceGradients {
  runtime::DeviceBuffer d_out, dq, dk, dv;
  DLTensor d_out_view{}, dq_view{}, dk_view{}, dv_view{};
  explicit DeviceGradients(DeviceProblem& in, std::mt19937_64& rng, DLDataType dtype)
      : d_out(in.o.size_bytes()), dq(in.q.size_bytes()), dk(in.k.size_bytes()), dv(in.v.size_bytes()) {
    DeviceProblem::view(d_out_view, d_out, in.q_shape, dtype);
    DeviceProblem::view(dq_view, dq, in.q_shape, dtype);
    DeviceProblem::view(dk_view, dk, in.kv_shape, dtype);
    DeviceProblem::view(dv_view, dv, in.kv_shape, dtype);
    fill_normal(d_out, rng, dtype);
  }
};

// Warm-up, then the sorted times of `repetitions` timed calls of `run(i)`. The calls are
// queued back to back, each between its own pair of events, and read after the last: while
// the GPU runs call i the host prepares call i + 1, so a time is the GPU's, not the host's
// argument checks and launch latency (the peers' do_bench measures the same way). Only the
// first call starts on an idle GPU.
std::vector<double> timed_runs(const BenchOptions& bench, const std::function<void(int)>& run) {
  for (int i = 0; i < bench.warmup; ++i) run(i);
  synchronize_device();
  std::vector<runtime::Event> starts(static_cast<std::size_t>(bench.repetitions));
  std::vector<runtime::Event> stops(starts.size());
  for (std::size_t i = 0; i < starts.size(); ++i) {
    starts[i].record();
    run(static_cast<int>(i));
    stops[i].record();
  }
  stops.back().synchronize();
  std::vector<double> times;
  for (std::size_t i = 0; i < starts.size(); ++i) times.push_back(runtime::Event::elapsed_ms(starts[i], stops[i]));
  std::sort(times.begin(), times.end());
  return times;
}
}  // namespace

BenchResult ForwardBenchmark::time_backward(const Kernel& kernel, const BackwardOptions& given,
                                            const std::vector<std::string>& tensor_gradients) {
  State& st = *state_;
  BackwardOptions options = given;
  std::vector<std::unique_ptr<runtime::DeviceBuffer>> gradient_buffers;
  std::vector<std::vector<std::int64_t>> gradient_shapes(tensor_gradients.size());
  for (std::size_t i = 0; i < tensor_gradients.size(); ++i) {
    const auto& name = tensor_gradients[i];
    if (!st.device_bindings.tensors().count(name))
      throw UserError(fmt::format("--tensor-grad {}: the variant captures no tensor of that name", name));
    const DLTensor& bound = st.device_bindings.tensors().at(name);
    gradient_shapes[i] = dlpack_shape(bound);
    std::size_t numel = 1;
    for (auto e : gradient_shapes[i]) numel *= static_cast<std::size_t>(e);
    gradient_buffers.push_back(std::make_unique<runtime::DeviceBuffer>(numel * 4));
    DLTensor view{};
    view.data = reinterpret_cast<void*>(gradient_buffers.back()->device_pointer());
    view.device = DLDevice{kDLCUDA, 0};
    view.ndim = static_cast<int>(gradient_shapes[i].size());
    view.dtype = dlpack_float32();
    view.shape = gradient_shapes[i].data();
    options.tensor_gradients[name] = view;
  }
  const DLDataType dtype = st.dtype_kind == ElementType::BF16 ? dlpack_bfloat16() : dlpack_float16();
  std::mt19937_64 rng(7);
  std::vector<std::unique_ptr<DeviceGradients>> grads;
  for (auto& in : st.inputs) {
    kernel.forward(in->q_view, in->k_view, in->v_view, in->o_view, &in->lse_view, st.device_bindings);
    grads.push_back(std::make_unique<DeviceGradients>(*in, rng, dtype));
  }
  const std::vector<double> times = timed_runs(st.bench, [&](int i) {
    const auto set = static_cast<std::size_t>(i % st.sets);
    const DeviceProblem& in = *st.inputs[set];
    const DeviceGradients& g = *grads[set];
    kernel.backward(in.q_view, in.k_view, in.v_view, in.o_view, in.lse_view, g.d_out_view, g.dq_view, g.dk_view,
                    g.dv_view, st.device_bindings, nullptr, options);
  });
  BenchResult r = result_of(kernel, times);
  const PreparedKernel& bwd = kernel.prepared_backward(options);
  r.template_name = bwd.config.template_name;
  r.schedule = bwd.config.knobs.str();
  r.pass = options.deterministic ? "backward deterministic" : "backward";
  for (const auto& name : tensor_gradients) r.pass += " d" + name;
  r.tflops *= 2.5;
  r.bandwidth_gbs *= 2.0;  // Q, K, V, O, dO read; dQ, dK, dV written: about twice the forward's bytes
  return r;
}

BenchResult ForwardBenchmark::time(const Kernel& kernel) {
  State& st = *state_;
  // Every input set shares the mask tensors (st.device_bindings), so one build serves all.
  const bool prebuilt = st.bench.prebuilt_block_mask && kernel.has_block_mask();
  const BlockMask mask =
      prebuilt ? kernel.build_block_mask(st.p.batch, st.p.heads_q, st.p.seq_q, st.p.seq_k, st.device_bindings)
               : BlockMask();
  const std::vector<double> times = timed_runs(st.bench, [&](int i) {
    const DeviceProblem& in = *st.inputs[static_cast<std::size_t>(i % st.sets)];
    kernel.forward(in.q_view, in.k_view, in.v_view, in.o_view, &in.lse_view, st.device_bindings, nullptr, 0.0,
                   prebuilt ? &mask : nullptr);
  });
  BenchResult r = result_of(kernel, times);
  if (prebuilt) r.pass = "forward, block mask prebuilt";
  // A decode shape that forward routed to the decode unit: name what ran.
  if (const PreparedKernel* decode = kernel.prepared_decode(); decode != nullptr && st.p.seq_q <= kDecodeMaxSeqQ)
    name_unit(r, *decode);
  return r;
}

void check_kv_cache_lengths(const std::vector<int>& seq_lens, const ForwardProblem& p) {
  if (static_cast<int>(seq_lens.size()) != p.batch)
    throw UserError(fmt::format("{} lengths for {} sequences; give one per sequence", seq_lens.size(), p.batch));
  for (const int len : seq_lens)
    if (len < 0 || len > p.seq_k)
      throw UserError(fmt::format("length {} is not in 0..{} (the cache's Sk)", len, p.seq_k));
}

BenchResult ForwardBenchmark::time_kv_cache(const Kernel& kernel, int page_size, const std::vector<int>& seq_lens) {
  State& st = *state_;
  const ForwardProblem& p = st.p;
  if (!seq_lens.empty()) check_kv_cache_lengths(seq_lens, p);
  if (page_size < 0 || (page_size > 0 && static_cast<std::int64_t>(p.batch) * p.seq_k < page_size))
    throw UserError(fmt::format("page size {} does not fit {} keys", page_size, p.batch * p.seq_k));
  const int pages_per_seq = page_size > 0 ? (p.seq_k + page_size - 1) / page_size : 0;
  // Whole pages the K (and V) buffer of each input set holds.
  const std::int64_t num_pages = page_size > 0 ? static_cast<std::int64_t>(p.batch) * p.seq_k / page_size : 0;
  std::vector<std::int32_t> lens(static_cast<std::size_t>(p.batch), p.seq_k), table;
  if (!seq_lens.empty()) lens.assign(seq_lens.begin(), seq_lens.end());
  if (page_size > 0) {
    std::vector<std::int32_t> order(static_cast<std::size_t>(num_pages));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
    table.resize(static_cast<std::size_t>(p.batch) * pages_per_seq);
    for (std::size_t i = 0; i < table.size(); ++i) table[i] = order[i % order.size()];
  }
  runtime::DeviceBuffer lens_buffer(lens.size() * 4), table_buffer(std::max<std::size_t>(4, table.size() * 4));
  lens_buffer.copy_from_host(lens.data(), lens.size() * 4);
  if (!table.empty()) table_buffer.copy_from_host(table.data(), table.size() * 4);
  std::vector<std::int64_t> lens_shape = {p.batch}, table_shape = {p.batch, pages_per_seq};
  std::vector<std::int64_t> page_shape = {num_pages, page_size, p.heads_kv, st.dim};
  const auto int_view = [](const runtime::DeviceBuffer& b, std::vector<std::int64_t>& shape) {
    DLTensor t{};
    t.data = reinterpret_cast<void*>(b.device_pointer());
    t.device = DLDevice{kDLCUDA, 0};
    t.ndim = static_cast<int>(shape.size());
    t.dtype = dlpack_int32();
    t.shape = shape.data();
    return t;
  };
  std::vector<KvCache> caches;
  for (const auto& in : st.inputs) {
    KvCache c;
    c.k = in->k_view;
    c.v = in->v_view;
    c.seq_lens = int_view(lens_buffer, lens_shape);
    if (page_size > 0) {
      c.k.shape = c.v.shape = page_shape.data();
      c.block_table = int_view(table_buffer, table_shape);
    }
    caches.push_back(c);
  }
  const std::vector<double> times = timed_runs(st.bench, [&](int i) {
    const DeviceProblem& in = *st.inputs[static_cast<std::size_t>(i % st.sets)];
    kernel.forward_kv_cache(in.q_view, caches[static_cast<std::size_t>(i % st.sets)], in.o_view, &in.lse_view,
                            st.device_bindings);
  });
  BenchResult r = result_of(kernel, times);
  // What ran: the decode unit, not the compiled one.
  if (const PreparedKernel* decode = kernel.prepared_decode()) name_unit(r, *decode);
  r.pass = page_size > 0 ? fmt::format("forward_kv_cache pages of {}", page_size) : "forward_kv_cache contiguous";
  if (!seq_lens.empty()) {  // as set_bytes counts them, with the keys in use: Q and O, K and V
    std::int64_t keys = 0;
    for (const int len : seq_lens) keys += len;
    const std::size_t bytes = DeviceProblem::bytes({p.batch, p.heads_q, p.seq_q, st.dim}, 2) * 2 +
                              DeviceProblem::bytes({keys, p.heads_kv, st.dim}, 2) * 2;
    r.bandwidth_gbs = static_cast<double>(bytes) / (r.median_ms * 1e-3) / 1e9;
    r.pass += fmt::format(", lengths given ({} keys in all)", keys);
  }
  return r;
}

BenchResult ForwardBenchmark::time_ragged(const Kernel& kernel, const std::vector<int>& lengths) {
  State& st = *state_;
  const ForwardProblem& p = st.p;
  if (static_cast<int>(lengths.size()) != p.batch)
    throw UserError(fmt::format("{} ragged lengths for a batch of {}", lengths.size(), p.batch));
  std::vector<std::int32_t> cu(lengths.size() + 1, 0);
  for (std::size_t b = 0; b < lengths.size(); ++b) {
    if (lengths[b] < 0 || lengths[b] > std::min(p.seq_q, p.seq_k))
      throw UserError(fmt::format("ragged length {} is outside [0, {}]", lengths[b], std::min(p.seq_q, p.seq_k)));
    cu[b + 1] = cu[b] + lengths[b];
  }
  const int longest = std::max(1, *std::max_element(lengths.begin(), lengths.end()));
  runtime::DeviceBuffer cu_buffer(cu.size() * 4);
  cu_buffer.copy_from_host(cu.data(), cu.size() * 4);
  std::vector<std::int64_t> cu_shape = {static_cast<std::int64_t>(cu.size())};
  std::vector<std::int64_t> q_shape = {cu.back(), p.heads_q, st.dim}, kv_shape = {cu.back(), p.heads_kv, st.dim};
  std::vector<std::int64_t> lse_shape = {p.heads_q, cu.back()};
  RaggedBatch batch;
  DeviceProblem::view(batch.cu_seqlens_q, cu_buffer, cu_shape, dlpack_int32());
  batch.cu_seqlens_k = batch.cu_seqlens_q;
  batch.max_seqlen_q = batch.max_seqlen_k = longest;
  // The packed tensors are the first T tokens' worth of each input set's padded buffers.
  struct Packed {
    DLTensor q, k, v, o, lse;
  };
  std::vector<Packed> packed;
  for (const auto& in : st.inputs) {
    Packed v{in->q_view, in->k_view, in->v_view, in->o_view, in->lse_view};
    v.q.shape = v.o.shape = q_shape.data();
    v.k.shape = v.v.shape = kv_shape.data();
    v.lse.shape = lse_shape.data();
    for (DLTensor* t : {&v.q, &v.k, &v.v, &v.o}) t->ndim = 3;
    v.lse.ndim = 2;
    packed.push_back(v);
  }
  const std::vector<double> times = timed_runs(st.bench, [&](int i) {
    const Packed& in = packed[static_cast<std::size_t>(i % st.sets)];
    kernel.forward_ragged(in.q, in.k, in.v, in.o, &in.lse, batch, st.device_bindings);
  });
  BenchResult r = result_of(kernel, times);
  // What ran: the ragged unit, not the compiled one.
  if (const PreparedKernel* unit = kernel.prepared_ragged()) name_unit(r, *unit);
  std::map<int, double> density;  // per length: sequences share it
  double pairs = 0.0;
  for (const int len : lengths) {
    if (len == 0) continue;
    if (!density.count(len))
      density[len] = mask_density(st.variant, ForwardProblem{1, p.heads_q, p.heads_kv, len, len}, st.host_bindings);
    pairs += static_cast<double>(p.heads_q) * len * len * density[len];
  }
  r.density = pairs / (static_cast<double>(p.heads_q) * p.batch * p.seq_q * p.seq_k);
  r.tflops = 4.0 * pairs * st.dim / (r.median_ms * 1e-3) / 1e12;
  r.bandwidth_gbs =
      2.0 * static_cast<double>(cu.back()) * st.dim * (2 * p.heads_q + 2 * p.heads_kv) / (r.median_ms * 1e-3) / 1e9;
  r.pass = fmt::format("forward_ragged lengths {}", fmt::join(lengths, ","));
  return r;
}

BenchResult ForwardBenchmark::result_of(const Kernel& kernel, const std::vector<double>& times) {
  State& st = *state_;
  const ForwardProblem& p = st.p;
  BenchResult r;
  r.variant = st.variant.name();
  r.problem = p;
  r.head_dim = st.dim;
  r.dtype = element_type_name(st.dtype_kind);
  r.template_name = kernel.prepared().config.template_name;
  r.schedule = kernel.prepared().config.knobs.str();
  r.median_ms = times[times.size() / 2];
  r.min_ms = times.front();
  r.max_ms = times.back();
  r.input_sets = st.sets;
  if (!st.density) st.density = mask_density(st.variant, p, st.host_bindings);
  r.density = *st.density;
  const double pairs = static_cast<double>(p.batch) * p.heads_q * p.seq_q * p.seq_k * r.density;
  r.tflops = 4.0 * pairs * st.dim / (r.median_ms * 1e-3) / 1e12;
  r.bandwidth_gbs = static_cast<double>(st.set_bytes) / (r.median_ms * 1e-3) / 1e9;
  return r;
}

BenchResult benchmark_backward(const Variant& variant, const CompileOptions& options, const ForwardProblem& p,
                               const Bindings& scalars, bool deterministic,
                               const std::vector<std::string>& tensor_gradients, const BenchOptions& bench) {
  bench.validate();
  CompileOptions forward = options;
  forward.role = TemplateRole::Forward;
  forward.template_name.clear();
  forward.knobs = Knobs();
  const Kernel kernel = compile(variant, forward);
  BackwardOptions backward;
  backward.deterministic = deterministic;
  backward.template_name = options.template_name;
  backward.knobs = options.knobs;
  ForwardBenchmark fixture(variant, options.dtype, options.head_dim, p, scalars, bench);
  return fixture.time_backward(kernel, backward, tensor_gradients);
}

BenchResult benchmark_forward(const Variant& variant, const CompileOptions& options, const ForwardProblem& p,
                              const Bindings& scalars, const BenchOptions& bench) {
  bench.validate();
  const Kernel kernel = compile(variant, options);
  ForwardBenchmark fixture(variant, options.dtype, options.head_dim, p, scalars, bench);
  return fixture.time(kernel);
}

}  // namespace attnjit
