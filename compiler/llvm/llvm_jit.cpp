// The CPU hooks' JIT (see llvm_jit.hpp): host detection, optimization, object emission,
// caching, and loading into ORC.
//
// The object file is what the kernel cache stores (as it stores a cubin), keyed by the
// emitted LLVM IR (as bitcode: printing it as text would cost more than the rest of a cache
// hit, on the decimal forms of vector constants), which carries the variant's lowered hooks,
// the vector width and the target-cpu / target-features attributes; and by the opt level,
// LLVM's version and this codegen's version. So a second process links the cached object
// instead of compiling. Within one process, a variant already loaded is shared (weakly held).
#include "compiler/llvm/llvm_jit.hpp"

#include <fmt/format.h>
#include <llvm/Bitcode/BitcodeWriter.h>
#include <llvm/Config/llvm-config.h>
#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/LegacyPassManager.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/Verifier.h>
#include <llvm/MC/TargetRegistry.h>
#include <llvm/Passes/PassBuilder.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Target/TargetMachine.h>
#include <llvm/TargetParser/Host.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <unordered_map>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "compiler/error.hpp"
#include "compiler/llvm/llvm_codegen.hpp"
#include "runtime/api/attention.hpp"
#include "runtime/cache/kernel_cache.hpp"

namespace attnjit::cpu_llvm {
namespace {

// Bump when the emitted code changes meaning without changing the IR text (it never should).
constexpr const char* kCodegenVersion = "attnjit-cpu-hooks-1";

std::string error_text(llvm::Error error) { return llvm::toString(std::move(error)); }

// ---- the host ---------------------------------------------------------------------------

struct Host {
  CpuJitTarget target;
  std::vector<std::string> features;  // "+avx2", "-avx512f", ... sorted
  std::string problem;                // non-empty: LLVM cannot generate code for this CPU
};

const Host& host() {
  static const Host detected = [] {
    Host h;
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    h.target.llvm_version = LLVM_VERSION_STRING;
    h.target.triple = llvm::sys::getProcessTriple();
    h.target.cpu = llvm::sys::getHostCPUName().str();
    llvm::StringMap<bool> features;
    llvm::sys::getHostCPUFeatures(features);
    for (const auto& f : features) h.features.push_back((f.second ? "+" : "-") + f.first().str());
    std::sort(h.features.begin(), h.features.end());
    for (const auto& f : h.features) h.target.features += (h.target.features.empty() ? "" : ",") + f;
    const auto has = [&](const char* name) { return features.lookup(name); };
    h.target.vector_width = has("avx512f") ? 16 : (has("avx") ? 8 : 4);
    std::string error;
    if (!llvm::TargetRegistry::lookupTarget(h.target.triple, error))
      h.problem = fmt::format("LLVM {} cannot generate code for this machine ({}): {}", LLVM_VERSION_STRING,
                              h.target.triple, error);
    return h;
  }();
  return detected;
}

const Host& checked_host() {
  const Host& h = host();
  if (!h.problem.empty()) throw RuntimeFailure(h.problem);
  return h;
}

llvm::orc::JITTargetMachineBuilder machine_builder(int opt_level) {
  const Host& h = checked_host();
  llvm::orc::JITTargetMachineBuilder builder{llvm::Triple(h.target.triple)};
  builder.setCPU(h.target.cpu);
  builder.addFeatures(h.features);
  builder.setRelocationModel(llvm::Reloc::PIC_);
  builder.setCodeModel(llvm::CodeModel::Small);
  static constexpr llvm::CodeGenOpt::Level levels[] = {llvm::CodeGenOpt::None, llvm::CodeGenOpt::Less,
                                                       llvm::CodeGenOpt::Default, llvm::CodeGenOpt::Aggressive};
  builder.setCodeGenOptLevel(levels[opt_level]);
  return builder;
}

std::unique_ptr<llvm::TargetMachine> target_machine(int opt_level) {
  auto machine = machine_builder(opt_level).createTargetMachine();
  if (!machine)
    throw RuntimeFailure("LLVM cannot create a target machine for this CPU: " + error_text(machine.takeError()));
  return std::move(*machine);
}

// ---- module, passes, object ---------------------------------------------------------------

struct PreparedModule {
  std::unique_ptr<llvm::LLVMContext> context = std::make_unique<llvm::LLVMContext>();
  ScoreTileModule hooks;
  int lanes = 0;
};

PreparedModule prepare(const Variant& variant, const CpuJitOptions& options, llvm::TargetMachine& machine) {
  const Host& h = checked_host();
  PreparedModule p;
  p.lanes = options.vector_width != 0 ? options.vector_width : h.target.vector_width;
  p.hooks = build_score_tile_module(*p.context, variant, p.lanes);
  llvm::Module& m = *p.hooks.module;
  m.setTargetTriple(h.target.triple);
  m.setDataLayout(machine.createDataLayout());
  llvm::Function* f = m.getFunction(kScoreTileSymbol);
  f->addFnAttr("target-cpu", h.target.cpu);
  f->addFnAttr("target-features", h.target.features);
  std::string problems;
  llvm::raw_string_ostream out(problems);
  if (llvm::verifyModule(m, &out))
    throw InternalError(
        fmt::format("the CPU hooks' LLVM IR for variant '{}' is malformed: {}", variant.name(), problems));
  return p;
}

std::string bitcode_of(const llvm::Module& m) {
  llvm::SmallVector<char, 0> bytes;
  llvm::raw_svector_ostream out(bytes);
  llvm::WriteBitcodeToFile(m, out);
  return std::string(bytes.data(), bytes.size());
}

std::string text_of(const llvm::Module& m) {
  std::string text;
  llvm::raw_string_ostream out(text);
  m.print(out, nullptr);
  return text;
}

void optimize(llvm::Module& m, llvm::TargetMachine& machine, int opt_level) {
  llvm::LoopAnalysisManager loops;
  llvm::FunctionAnalysisManager functions;
  llvm::CGSCCAnalysisManager cgsccs;
  llvm::ModuleAnalysisManager modules;
  llvm::PassBuilder passes(&machine);
  passes.registerModuleAnalyses(modules);
  passes.registerCGSCCAnalyses(cgsccs);
  passes.registerFunctionAnalyses(functions);
  passes.registerLoopAnalyses(loops);
  passes.crossRegisterProxies(loops, functions, cgsccs, modules);
  static const llvm::OptimizationLevel levels[] = {llvm::OptimizationLevel::O0, llvm::OptimizationLevel::O1,
                                                   llvm::OptimizationLevel::O2, llvm::OptimizationLevel::O3};
  llvm::ModulePassManager pipeline = opt_level == 0 ? passes.buildO0DefaultPipeline(levels[0])
                                                    : passes.buildPerModuleDefaultPipeline(levels[opt_level]);
  pipeline.run(m, modules);
}

std::string object_of(llvm::Module& m, llvm::TargetMachine& machine) {
  llvm::SmallVector<char, 0> bytes;
  llvm::raw_svector_ostream out(bytes);
  llvm::legacy::PassManager codegen;
  if (machine.addPassesToEmitFile(codegen, out, nullptr, llvm::CGFT_ObjectFile))
    throw RuntimeFailure(
        fmt::format("LLVM {} cannot emit an object file for {}", LLVM_VERSION_STRING, machine.getTargetTriple().str()));
  codegen.run(m);
  return std::string(bytes.data(), bytes.size());
}

// ---- loading --------------------------------------------------------------------------------

// One LLJIT for the process, never destroyed (CpuHooks may outlive static destructors).
struct SharedJit {
  std::unique_ptr<llvm::orc::LLJIT> jit;
  std::mutex mutex;
  std::uint64_t loaded = 0;
};

SharedJit& shared_jit() {
  static SharedJit* shared = [] {
    auto jit = llvm::orc::LLJITBuilder().setJITTargetMachineBuilder(machine_builder(2)).create();
    if (!jit) throw RuntimeFailure("cannot start LLVM's ORC JIT: " + error_text(jit.takeError()));
    auto* s = new SharedJit;
    s->jit = std::move(*jit);
    return s;
  }();
  return *shared;
}

// An object linked into its own JITDylib (so equal symbol names never clash); unlinked with it.
struct LoadedObject {
  llvm::orc::JITDylib* dylib = nullptr;
  CpuScoreTileFn score_tile = nullptr;

  ~LoadedObject() {
    SharedJit& shared = shared_jit();
    std::lock_guard<std::mutex> lock(shared.mutex);
    if (llvm::Error e = shared.jit->getExecutionSession().removeJITDylib(*dylib))
      fmt::print(stderr, "attnjit: warning: could not unload JIT-compiled CPU hooks: {}\n", error_text(std::move(e)));
  }
};

std::shared_ptr<LoadedObject> load(const std::string& object, const std::string& key) {
  SharedJit& shared = shared_jit();
  std::lock_guard<std::mutex> lock(shared.mutex);
  llvm::orc::LLJIT& jit = *shared.jit;
  llvm::orc::ExecutionSession& session = jit.getExecutionSession();
  const std::string name = fmt::format("attnjit_cpu_hooks_{}_{}", key, shared.loaded++);
  llvm::orc::JITDylib& dylib = session.createBareJITDylib(name);
  const auto fail = [&](const std::string& what, llvm::Error error) {
    llvm::consumeError(session.removeJITDylib(dylib));
    return RuntimeFailure(fmt::format("cannot load the CPU hooks' object (cache key {}) into the JIT: {}: {}", key,
                                      what, error_text(std::move(error))));
  };
  // Library calls the code generator may emit (none on x86-64 with SSE4.1) come from the process.
  auto process = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(jit.getDataLayout().getGlobalPrefix());
  if (!process) throw fail("process symbols", process.takeError());
  dylib.addGenerator(std::move(*process));
  if (llvm::Error e = jit.addObjectFile(dylib, llvm::MemoryBuffer::getMemBufferCopy(object, name)))
    throw fail("adding the object", std::move(e));
  auto address = jit.lookup(dylib, kScoreTileSymbol);
  if (!address) throw fail(fmt::format("looking up {}", kScoreTileSymbol), address.takeError());
  auto loaded = std::make_shared<LoadedObject>();
  loaded->dylib = &dylib;
  loaded->score_tile = address->toPtr<CpuScoreTileFn>();
  return loaded;
}

// Variants loaded in this process, by cache key.
std::mutex g_loaded_mutex;
std::unordered_map<std::string, std::weak_ptr<LoadedObject>> g_loaded;

std::string short_hash(const std::string& text) {
  return fmt::format("{:016x}", XXH3_64bits(text.data(), text.size()));
}

}  // namespace

bool jit_available(std::string* why) {
  const Host& h = host();
  if (why) *why = h.problem;
  return h.problem.empty();
}

CpuJitTarget host_target() { return checked_host().target; }

std::string module_text(const Variant& variant, const CpuJitOptions& options, bool optimized) {
  auto machine = target_machine(options.opt_level);
  PreparedModule p = prepare(variant, options, *machine);
  if (optimized) optimize(*p.hooks.module, *machine, options.opt_level);
  return text_of(*p.hooks.module);
}

CpuHooks jit_hooks(const Variant& variant, const CpuJitOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const Host& h = checked_host();
  auto machine = target_machine(options.opt_level);
  PreparedModule p = prepare(variant, options, *machine);

  runtime::CacheKeyInputs inputs;
  inputs.generated_source = bitcode_of(*p.hooks.module);
  inputs.nvrtc_options = {fmt::format("-O{}", options.opt_level), fmt::format("lanes={}", p.lanes)};
  inputs.nvrtc_version = "LLVM " LLVM_VERSION_STRING;
  inputs.template_set_version = kCodegenVersion;
  inputs.target_arch =
      fmt::format("cpu {} {} (features {})", h.target.triple, h.target.cpu, short_hash(h.target.features));
  inputs.attnjit_version = runtime::attnjit_version();
  const std::string key = inputs.key();

  CpuHooks hooks;
  hooks.has_score_mod = p.hooks.has_score_mod;
  hooks.has_mask = p.hooks.has_mask;
  std::shared_ptr<LoadedObject> loaded;
  {
    std::lock_guard<std::mutex> lock(g_loaded_mutex);
    if (auto found = g_loaded.find(key); found != g_loaded.end()) loaded = found->second.lock();
  }
  hooks.cache_hit = loaded != nullptr;
  if (!loaded) {
    const auto build = [&] {
      const auto compile_start = std::chrono::steady_clock::now();
      optimize(*p.hooks.module, *machine, options.opt_level);
      runtime::CompiledKernel compiled;
      compiled.cubin = object_of(*p.hooks.module, *machine);
      compiled.compile_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - compile_start).count();
      return compiled;
    };
    std::string object;
    if (options.use_cache) {
      runtime::KernelCache& cache = options.cache ? *options.cache : default_kernel_cache();
      const runtime::CacheEntryLabels labels{variant.text(),
                                             fmt::format("cpu hooks, {} lanes, -O{}", p.lanes, options.opt_level)};
      const runtime::CacheLookupResult found = cache.get_or_compile(inputs, build, labels);
      object = *found.cubin;
      hooks.cache_hit = found.source != runtime::CacheSource::Compiled;
    } else {
      object = build().cubin;
    }
    loaded = load(object, key);
    std::lock_guard<std::mutex> lock(g_loaded_mutex);
    std::erase_if(g_loaded, [](const auto& entry) { return entry.second.expired(); });
    g_loaded[key] = loaded;
  }
  hooks.score_tile = loaded->score_tile;
  hooks.owner = loaded;
  hooks.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return hooks;
}

}  // namespace attnjit::cpu_llvm
