// GPU smoke test + timing of templates/fwd_sm80.cuh.
//
// Loads the cubins nvrtc_check compiled (the exact codegen path: abi.h + common.cuh + macros
// + hand-written hooks + fwd_sm80.cuh, NVRTC, no headers), runs them on poisoned outputs,
// compares with a CPU fp64 reference and a naive same-precision computation, then times
// B=4 H=16 S=4096 forward passes. See build.sh.
//   smoke <cubin dir> [--no-perf] [--no-check] [--no-sweep] [--filter S]...
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../../../templates/abi.h"
#include "tu.hpp"

using smoke::KernelCfg;

#define CK(x)                                                                          \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)
#define CKD(x)                                                                         \
  do {                                                                                 \
    CUresult e_ = (x);                                                                 \
    if (e_ != CUDA_SUCCESS) {                                                          \
      const char* s_ = nullptr;                                                        \
      cuGetErrorString(e_, &s_);                                                       \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, s_ ? s_ : "?");   \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

static std::string g_dir;

static float to_f(uint16_t h, bool bf16) {
  if (bf16) { __nv_bfloat16_raw r; r.x = h; return __bfloat162float(__nv_bfloat16(r)); }
  __half_raw r; r.x = h; return __half2float(__half(r));
}
static uint16_t from_f(float f, bool bf16) {
  if (bf16) { __nv_bfloat16_raw r = __nv_bfloat16(__float2bfloat16_rn(f)); return r.x; }
  __half_raw r = __half(__float2half_rn(f)); return r.x;
}
static float round_to(float f, bool bf16) { return to_f(from_f(f, bf16), bf16); }

struct Kernel {
  KernelCfg cfg;
  CUmodule mod = nullptr;
  CUfunction fn = nullptr;
};
static std::map<std::string, Kernel> g_kernels;

static Kernel& get_kernel(const KernelCfg& c) {
  auto it = g_kernels.find(c.name());
  if (it != g_kernels.end()) return it->second;
  Kernel k;
  k.cfg = c;
  const std::string path = g_dir + "/" + c.name() + ".cubin";
  std::string bin = smoke::read_text(path);
  CKD(cuModuleLoadData(&k.mod, bin.data()));
  CKD(cuModuleGetFunction(&k.fn, k.mod, "attnjit_fwd"));
  CKD(cuFuncSetAttribute(k.fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                         smoke::smem_bytes(c)));
  return g_kernels[c.name()] = k;
}

static void launch(Kernel& k, const AttnjitFwdArgs& args, cudaStream_t st = 0) {
  const KernelCfg& c = k.cfg;
  void* params[] = {(void*)&args};
  CKD(cuLaunchKernel(k.fn, (args.seq_q + c.bm - 1) / c.bm, args.heads_q, args.batch, c.nw * 32, 1,
                     1, smoke::smem_bytes(c), (CUstream)st, params, nullptr));
}

// ---------------------------------------------------------------------------------------
struct Problem {
  int B, Hq, Hkv, Sq, Sk, D;
  int variant;
  int shift = 0;       // causal: kv <= q - shift
  int window = 256;    // swa
  float cap = 30.f;    // softcap
};

static bool allowed(const Problem& p, int q, int kv) {
  if (p.variant == smoke::kCausal) return kv <= q - p.shift;
  if (p.variant == smoke::kSwaSoftcap) return kv <= q && q - kv < p.window;
  return true;
}

struct Result {
  std::string name;
  double err = 0, naive = 0, lse_err = 0;
  long bad = 0;  // NaN / unwritten / overwritten / wrong fully-masked rows
  bool pass = false;
};

// Layouts: q, k, v are [B, S, H, D] (BSHD, non-trivial strides); o is [B, H, Sq + 64, D]
// (rows >= Sq must stay poisoned).
static Result run_check(const KernelCfg& c, const Problem& p, uint64_t seed) {
  const bool bf = c.bf16;
  const int D = p.D;
  const size_t nq = (size_t)p.B * p.Sq * p.Hq * D, nk = (size_t)p.B * p.Sk * p.Hkv * D;
  const int SqP = p.Sq + 64;
  const size_t no = (size_t)p.B * p.Hq * SqP * D, nl = (size_t)p.B * p.Hq * p.Sq;
  std::vector<uint16_t> hq(nq), hk(nk), hv(nk);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (auto& x : hq) x = from_f(nd(rng), bf);
  for (auto& x : hk) x = from_f(nd(rng), bf);
  for (auto& x : hv) x = from_f(nd(rng), bf);

  void *dq, *dk, *dv, *dout;
  float* dl;
  CK(cudaMalloc(&dq, nq * 2));
  CK(cudaMalloc(&dk, nk * 2));
  CK(cudaMalloc(&dv, nk * 2));
  CK(cudaMalloc(&dout, no * 2));
  CK(cudaMalloc(&dl, nl * 4));
  CK(cudaMemcpy(dq, hq.data(), nq * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dk, hk.data(), nk * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dv, hv.data(), nk * 2, cudaMemcpyHostToDevice));
  CK(cudaMemset(dout, 0xff, no * 2));  // 0xffff: NaN in bf16 and fp16
  CK(cudaMemset(dl, 0xff, nl * 4));    // NaN

  AttnjitFwdArgs a;
  std::memset(&a, 0, sizeof(a));
  a.q = dq; a.k = dk; a.v = dv; a.o = dout; a.lse = dl;
  a.q_stride[0] = (long long)p.Sq * p.Hq * D; a.q_stride[1] = D; a.q_stride[2] = (long long)p.Hq * D;
  a.k_stride[0] = (long long)p.Sk * p.Hkv * D; a.k_stride[1] = D; a.k_stride[2] = (long long)p.Hkv * D;
  a.v_stride[0] = a.k_stride[0]; a.v_stride[1] = D; a.v_stride[2] = a.k_stride[2];
  a.o_stride[0] = (long long)p.Hq * SqP * D; a.o_stride[1] = (long long)SqP * D; a.o_stride[2] = D;
  a.batch = p.B; a.heads_q = p.Hq; a.heads_kv = p.Hkv; a.seq_q = p.Sq; a.seq_k = p.Sk;
  a.scale = 1.0f / std::sqrt((float)D);
  a.scale_log2 = a.scale * 1.4426950408889634f;
  a.int_params[0] = p.window; a.int_params[1] = p.shift; a.float_params[0] = p.cap;

  Kernel& k = get_kernel(c);
  launch(k, a);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  std::vector<uint16_t> ho(no);
  std::vector<float> hl(nl);
  CK(cudaMemcpy(ho.data(), dout, no * 2, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(hl.data(), dl, nl * 4, cudaMemcpyDeviceToHost));
  cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout); cudaFree(dl);

  Result res;
  std::ostringstream nm;
  nm << c.name() << " B" << p.B << " H" << p.Hq << "/" << p.Hkv << " Sq" << p.Sq << " Sk" << p.Sk;
  if (p.shift) nm << " shift" << p.shift;
  res.name = nm.str();

  std::vector<float> fq(nq), fk(nk), fv(nk);
  for (size_t i = 0; i < nq; ++i) fq[i] = to_f(hq[i], bf);
  for (size_t i = 0; i < nk; ++i) { fk[i] = to_f(hk[i], bf); fv[i] = to_f(hv[i], bf); }

  // Rows checked against the references: all for small problems, a sample for large ones.
  std::vector<int> rows;
  for (int q = 0; q < p.Sq; ++q)
    if (p.Sq <= 1200 || q < 40 || q >= p.Sq - 40 || q % 17 == 0) rows.push_back(q);

  const int nthreads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<double> t_err(nthreads), t_naive(nthreads), t_lse(nthreads);
  std::vector<long> t_bad(nthreads);
  std::atomic<size_t> next{0};
  const size_t total = (size_t)p.B * p.Hq * rows.size();
  auto worker = [&](int tix) {
    std::vector<double> sc(p.Sk), ref(D);
    std::vector<float> sf(p.Sk), acc(D);
    for (;;) {
      const size_t w = next.fetch_add(1);
      if (w >= total) break;
      const int b = (int)(w / ((size_t)p.Hq * rows.size()));
      const int h = (int)(w / rows.size() % p.Hq);
      const int q = rows[w % rows.size()];
      const int hk = h / (p.Hq / p.Hkv);
      const float* qr = &fq[(((size_t)b * p.Sq + q) * p.Hq + h) * D];
      // fp64 reference and naive fp32 computation on the same rounded inputs.
      double mx = -INFINITY;
      float mxf = -INFINITY;
      for (int kv = 0; kv < p.Sk; ++kv) {
        const float* kr = &fk[(((size_t)b * p.Sk + kv) * p.Hkv + hk) * D];
        double dd = 0; float df = 0;
        for (int i = 0; i < D; ++i) {
          const float x = qr[i], y = kr[i];
          dd += (double)x * y;
          df += x * y;
        }
        double s = dd * (1.0 / std::sqrt((double)D));
        float sfl = df * a.scale;
        if (p.variant == smoke::kSwaSoftcap) {
          s = p.cap * std::tanh(s / p.cap);
          sfl = p.cap * std::tanh(sfl / p.cap);
        }
        if (!allowed(p, q, kv)) { s = -INFINITY; sfl = -INFINITY; }
        sc[kv] = s; sf[kv] = sfl;
        mx = std::max(mx, s); mxf = std::max(mxf, sfl);
      }
      double lse_ref = -INFINITY;
      std::fill(ref.begin(), ref.end(), 0.0);
      std::fill(acc.begin(), acc.end(), 0.f);
      if (mx != -INFINITY) {
        double sum = 0; float sumf = 0;
        for (int kv = 0; kv < p.Sk; ++kv) {
          sc[kv] = std::exp(sc[kv] - mx); sum += sc[kv];
          sf[kv] = std::exp(sf[kv] - mxf); sumf += sf[kv];
        }
        lse_ref = mx + std::log(sum);
        for (int kv = 0; kv < p.Sk; ++kv) {
          if (sc[kv] == 0 && sf[kv] == 0) continue;
          const float* vr = &fv[(((size_t)b * p.Sk + kv) * p.Hkv + hk) * D];
          const double pd = sc[kv] / sum;
          const float pf = round_to(sf[kv] / sumf, bf);
          for (int i = 0; i < D; ++i) {
            const float vv = vr[i];
            ref[i] += pd * vv;
            acc[i] += pf * vv;
          }
        }
      }
      const uint16_t* orow = &ho[(((size_t)b * p.Hq + h) * SqP + q) * D];
      for (int i = 0; i < D; ++i) {
        const float ov = to_f(orow[i], bf);
        if (!std::isfinite(ov)) { ++t_bad[tix]; continue; }
        t_err[tix] = std::max(t_err[tix], std::fabs(ov - ref[i]));
        t_naive[tix] = std::max(t_naive[tix], std::fabs(round_to(acc[i], bf) - ref[i]));
        if (mx == -INFINITY && orow[i] != 0) ++t_bad[tix];  // fully masked row: exactly +0
      }
      const float lk = hl[((size_t)b * p.Hq + h) * p.Sq + q];
      if (mx == -INFINITY) {
        if (!(std::isinf(lk) && lk < 0)) ++t_bad[tix];
      } else if (!std::isfinite(lk)) {
        ++t_bad[tix];
      } else {
        t_lse[tix] = std::max(t_lse[tix], std::fabs(lk - lse_ref));
      }
    }
  };
  std::vector<std::thread> th;
  for (int i = 0; i < nthreads; ++i) th.emplace_back(worker, i);
  for (auto& x : th) x.join();
  for (int i = 0; i < nthreads; ++i) {
    res.err = std::max(res.err, t_err[i]);
    res.naive = std::max(res.naive, t_naive[i]);
    res.lse_err = std::max(res.lse_err, t_lse[i]);
    res.bad += t_bad[i];
  }
  // Whole-tensor scans: every row < Sq written and finite, rows >= Sq untouched.
  for (int b = 0; b < p.B; ++b)
    for (int h = 0; h < p.Hq; ++h)
      for (int q = 0; q < SqP; ++q) {
        const uint16_t* orow = &ho[(((size_t)b * p.Hq + h) * SqP + q) * D];
        for (int i = 0; i < D; ++i) {
          if (q < p.Sq) {
            if (!std::isfinite(to_f(orow[i], bf))) ++res.bad;
          } else if (orow[i] != 0xffff) {
            ++res.bad;
          }
        }
        if (q < p.Sq && std::isnan(hl[((size_t)b * p.Hq + h) * p.Sq + q])) ++res.bad;
      }
  res.pass = res.bad == 0 && res.err <= 2.0 * res.naive + 1e-6 && res.lse_err < 2e-3;
  return res;
}

// ---------------------------------------------------------------------------------------
struct Timing {
  std::string name;
  double ms = 0, tflops = 0;
};

static Timing run_time(const KernelCfg& c, int B, int H, int S) {
  const int D = c.d;
  const size_t n = (size_t)B * H * S * D;
  // Rotate among several input sets so L2 does not hold them between runs.
  const int sets = 3;
  std::vector<void*> bufs;
  std::vector<uint16_t> host(n);
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (auto& x : host) x = from_f(nd(rng), c.bf16);
  for (int i = 0; i < 3 * sets; ++i) {
    void* d;
    CK(cudaMalloc(&d, n * 2));
    CK(cudaMemcpy(d, host.data(), n * 2, cudaMemcpyHostToDevice));
    bufs.push_back(d);
  }
  void* dout;
  float* dl;
  CK(cudaMalloc(&dout, n * 2));
  CK(cudaMalloc(&dl, (size_t)B * H * S * 4));
  std::vector<AttnjitFwdArgs> args(sets);
  for (int s = 0; s < sets; ++s) {
    AttnjitFwdArgs& a = args[s];
    std::memset(&a, 0, sizeof(a));
    a.q = bufs[3 * s]; a.k = bufs[3 * s + 1]; a.v = bufs[3 * s + 2]; a.o = dout; a.lse = dl;
    for (auto* st : {a.q_stride, a.k_stride, a.v_stride, a.o_stride}) {
      st[0] = (long long)H * S * D; st[1] = (long long)S * D; st[2] = D;
    }
    a.batch = B; a.heads_q = H; a.heads_kv = H; a.seq_q = S; a.seq_k = S;
    a.scale = 1.0f / std::sqrt((float)D);
    a.scale_log2 = a.scale * 1.4426950408889634f;
    a.int_params[0] = 1024;
    a.float_params[0] = 30.f;
  }
  Kernel& k = get_kernel(c);
  for (int i = 0; i < 3; ++i) launch(k, args[i % sets]);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int i = 0; i < 25; ++i) {
    CK(cudaEventRecord(e0));
    launch(k, args[i % sets]);
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float t;
    CK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  CK(cudaGetLastError());
  std::sort(ms.begin(), ms.end());
  Timing r;
  r.name = c.name();
  r.ms = ms[ms.size() / 2];
  double flops = 4.0 * B * H * (double)S * S * D;
  if (c.variant == smoke::kCausal) flops *= 0.5;
  if (c.variant == smoke::kSwaSoftcap) flops = 0;  // density printed separately
  r.tflops = flops / (r.ms * 1e-3) / 1e12;
  for (auto* d : bufs) cudaFree(d);
  cudaFree(dout); cudaFree(dl);
  cudaEventDestroy(e0); cudaEventDestroy(e1);
  return r;
}

int main(int argc, char** argv) {
  if (argc < 2) { std::fprintf(stderr, "usage: smoke <cubin dir> [--no-perf] [--no-check]\n"); return 2; }
  g_dir = argv[1];
  bool perf = true, check = true, sweep = true;
  std::vector<std::string> filters;  // --filter S (repeatable): configs whose name contains S
  for (int i = 2; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--no-perf")) perf = false;
    if (!std::strcmp(argv[i], "--no-check")) check = false;
    if (!std::strcmp(argv[i], "--no-sweep")) sweep = false;
    if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) filters.push_back(argv[++i]);
  }
  auto selected = [&](const KernelCfg& c) {
    if (filters.empty()) return true;
    for (auto& f : filters)
      if (c.name().find(f) != std::string::npos) return true;
    return false;
  };
  CK(cudaFree(0));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, cc %d.%d\n", prop.name, prop.multiProcessorCount, prop.major,
              prop.minor);

  const auto cfgs = smoke::all_configs();

  int fails = 0, checks = 0;
  if (check) {
    std::vector<std::pair<const KernelCfg*, Problem>> tests;
    for (auto& c : cfgs) {
      if (!selected(c)) continue;
      const int D = c.d;
      const bool dflt = smoke::is_default(c);
      if (c.variant == smoke::kDense) {
        tests.push_back({&c, Problem{2, 4, 4, 1000, 1537, D, smoke::kDense}});
        if (dflt) {
          tests.push_back({&c, Problem{1, 2, 1, 1, 1, D, smoke::kDense}});
          tests.push_back({&c, Problem{1, 8, 2, 4096, 4096, D, smoke::kDense}});
        }
      } else if (c.variant == smoke::kCausal) {
        tests.push_back({&c, Problem{2, 8, 2, 1000, 1537, D, smoke::kCausal}});
        Problem sh{1, 2, 2, 333, 333, D, smoke::kCausal};
        sh.shift = 5;  // rows 0..4 have no key at all
        tests.push_back({&c, sh});
        if (dflt) {
          tests.push_back({&c, Problem{1, 3, 1, 17, 5, D, smoke::kCausal}});
          tests.push_back({&c, Problem{1, 8, 2, 4096, 4096, D, smoke::kCausal}});
        }
      } else {
        Problem p{2, 8, 2, 1000, 1537, D, smoke::kSwaSoftcap};
        p.window = 200;
        tests.push_back({&c, p});
        Problem p2{1, 8, 2, 4096, 4096, D, smoke::kSwaSoftcap};
        p2.window = 1024;
        tests.push_back({&c, p2});
      }
    }
    uint64_t seed = 1;
    for (auto& [c, p] : tests) {
      Result r = run_check(*c, p, seed++);
      ++checks;
      if (!r.pass) ++fails;
      std::printf("%s %-72s err %.3e naive %.3e lse %.2e bad %ld\n", r.pass ? "PASS" : "FAIL",
                  r.name.c_str(), r.err, r.naive, r.lse_err, r.bad);
      std::fflush(stdout);
    }
  }

  std::vector<Timing> times, main_times;
  if (perf) {
    // The sweep (bf16 knobs) first, then the recommended schedules.
    for (int pass = 0; pass < 2; ++pass)
      for (auto& c : cfgs) {
        if (c.variant == smoke::kSwaSoftcap || !selected(c)) continue;
        if (smoke::is_default(c) != (pass == 1)) continue;
        if (pass == 0 && (!sweep || (c.d != 64 && c.d != 128))) continue;
        Timing t = run_time(c, 4, 16, 4096);
        (pass == 0 ? times : main_times).push_back(t);
        std::printf("time %-36s %8.3f ms %7.1f TFLOP/s\n", t.name.c_str(), t.ms, t.tflops);
        std::fflush(stdout);
      }
    for (int d : {128, 64}) {
      const KernelCfg c = smoke::default_cfg(d, smoke::kSwaSoftcap, true);
      if (!selected(c)) continue;
      Timing t = run_time(c, 4, 16, 4096);
      // Window 1024 causal: pairs = sum over q of min(q+1, 1024).
      double pairs = 0;
      for (int q = 0; q < 4096; ++q) pairs += std::min(q + 1, 1024);
      t.tflops = 4.0 * 4 * 16 * pairs * d / (t.ms * 1e-3) / 1e12;
      t.name += " (w1024, unmasked pairs)";
      main_times.push_back(t);
      std::printf("time %-36s %8.3f ms %7.1f TFLOP/s\n", t.name.c_str(), t.ms, t.tflops);
    }
  }

  if (perf && !times.empty()) {
    std::printf("\n---- schedule sweep, bf16, B=4 H=16 S=4096 ----\n");
    for (auto& t : times) std::printf("%-36s %9.3f ms %7.1f TFLOP/s\n", t.name.c_str(), t.ms, t.tflops);
  }
  std::printf("\n==== summary: %d/%d correctness checks passed ====\n", checks - fails, checks);
  if (perf) {
    std::printf("recommended schedules, B=4 H=16 S=4096 (MHA), median of 25 (cudaEvent),\n"
                "TFLOP/s = 4*B*H*S*S*D (/2 causal) / t\n");
    std::printf("%-56s %9s %9s\n", "kernel", "ms", "TFLOP/s");
    for (auto& t : main_times) std::printf("%-56s %9.3f %9.1f\n", t.name.c_str(), t.ms, t.tflops);
  }
  return fails ? 1 : 0;
}
