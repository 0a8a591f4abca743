// CUDA driver loaded at run time (dlopen + cuGetProcAddress) and its RAII wrappers.
// See cuda_driver.hpp for why this exists.
#include "runtime/driver/cuda_driver.hpp"

#include <cudaTypedefs.h>
#include <dlfcn.h>
#include <fmt/format.h>

#include <cstring>

#include "compiler/error.hpp"

namespace attnjit::runtime {

// Entry points, each requested at the CUDA 12.0 ABI: every 12.x and 13.x driver provides
// them with these exact signatures, whatever toolkit attnjit was built with.
struct DriverApi {
  static constexpr int kAbiVersion = 12000;

  PFN_cuGetErrorName_v6000 cuGetErrorName = nullptr;
  PFN_cuGetErrorString_v6000 cuGetErrorString = nullptr;
  PFN_cuInit_v2000 cuInit = nullptr;
  PFN_cuDriverGetVersion_v2020 cuDriverGetVersion = nullptr;
  PFN_cuDeviceGetCount_v2000 cuDeviceGetCount = nullptr;
  PFN_cuDeviceGet_v2000 cuDeviceGet = nullptr;
  PFN_cuDeviceGetName_v2000 cuDeviceGetName = nullptr;
  PFN_cuDeviceGetAttribute_v2000 cuDeviceGetAttribute = nullptr;
  PFN_cuDeviceTotalMem_v3020 cuDeviceTotalMem = nullptr;
  PFN_cuDevicePrimaryCtxRetain_v7000 cuDevicePrimaryCtxRetain = nullptr;
  PFN_cuDevicePrimaryCtxRelease_v11000 cuDevicePrimaryCtxRelease = nullptr;
  PFN_cuCtxSetCurrent_v4000 cuCtxSetCurrent = nullptr;
  PFN_cuCtxSynchronize_v2000 cuCtxSynchronize = nullptr;
  PFN_cuLibraryLoadData_v12000 cuLibraryLoadData = nullptr;
  PFN_cuLibraryUnload_v12000 cuLibraryUnload = nullptr;
  PFN_cuLibraryGetKernel_v12000 cuLibraryGetKernel = nullptr;
  PFN_cuLibraryGetGlobal_v12000 cuLibraryGetGlobal = nullptr;
  PFN_cuKernelGetFunction_v12000 cuKernelGetFunction = nullptr;
  PFN_cuFuncSetAttribute_v9000 cuFuncSetAttribute = nullptr;
  PFN_cuFuncGetAttribute_v2020 cuFuncGetAttribute = nullptr;
  PFN_cuLaunchKernel_v4000 cuLaunchKernel = nullptr;
  PFN_cuMemAlloc_v3020 cuMemAlloc = nullptr;
  PFN_cuMemFree_v3020 cuMemFree = nullptr;
  PFN_cuMemHostAlloc_v2020 cuMemHostAlloc = nullptr;
  PFN_cuMemFreeHost_v2000 cuMemFreeHost = nullptr;
  PFN_cuMemHostGetDevicePointer_v3020 cuMemHostGetDevicePointer = nullptr;
  PFN_cuMemcpyHtoD_v3020 cuMemcpyHtoD = nullptr;
  PFN_cuMemcpyDtoH_v3020 cuMemcpyDtoH = nullptr;
  PFN_cuMemsetD8_v3020 cuMemsetD8 = nullptr;
  PFN_cuStreamCreate_v2000 cuStreamCreate = nullptr;
  PFN_cuStreamDestroy_v4000 cuStreamDestroy = nullptr;
  PFN_cuStreamSynchronize_v2000 cuStreamSynchronize = nullptr;
  PFN_cuEventCreate_v2000 cuEventCreate = nullptr;
  PFN_cuEventDestroy_v4000 cuEventDestroy = nullptr;
  PFN_cuEventRecord_v2000 cuEventRecord = nullptr;
  PFN_cuEventSynchronize_v2000 cuEventSynchronize = nullptr;
  PFN_cuEventElapsedTime_v2000 cuEventElapsedTime = nullptr;
  PFN_cuTensorMapEncodeTiled_v12000 cuTensorMapEncodeTiled = nullptr;
};

namespace {

constexpr const char* kNoGpuRemedy = "run on a machine with an NVIDIA GPU";

// Loads every entry point; returns "" on success or why it failed.
std::string load_entry_points(PFN_cuGetProcAddress_v12000 get_proc, DriverApi& api) {
  std::string missing;
  auto load = [&](const char* symbol, auto& slot) {
    void* pointer = nullptr;
    CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    const CUresult result =
        get_proc(symbol, &pointer, DriverApi::kAbiVersion, CU_GET_PROC_ADDRESS_LEGACY_STREAM, &status);
    if (result != CUDA_SUCCESS || status != CU_GET_PROC_ADDRESS_SUCCESS || pointer == nullptr) {
      missing += (missing.empty() ? "" : ", ") + std::string(symbol);
      return;
    }
    slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(pointer);
  };
  load("cuGetErrorName", api.cuGetErrorName);
  load("cuGetErrorString", api.cuGetErrorString);
  load("cuInit", api.cuInit);
  load("cuDriverGetVersion", api.cuDriverGetVersion);
  load("cuDeviceGetCount", api.cuDeviceGetCount);
  load("cuDeviceGet", api.cuDeviceGet);
  load("cuDeviceGetName", api.cuDeviceGetName);
  load("cuDeviceGetAttribute", api.cuDeviceGetAttribute);
  load("cuDeviceTotalMem", api.cuDeviceTotalMem);
  load("cuDevicePrimaryCtxRetain", api.cuDevicePrimaryCtxRetain);
  load("cuDevicePrimaryCtxRelease", api.cuDevicePrimaryCtxRelease);
  load("cuCtxSetCurrent", api.cuCtxSetCurrent);
  load("cuCtxSynchronize", api.cuCtxSynchronize);
  load("cuLibraryLoadData", api.cuLibraryLoadData);
  load("cuLibraryUnload", api.cuLibraryUnload);
  load("cuLibraryGetKernel", api.cuLibraryGetKernel);
  load("cuLibraryGetGlobal", api.cuLibraryGetGlobal);
  load("cuKernelGetFunction", api.cuKernelGetFunction);
  load("cuFuncSetAttribute", api.cuFuncSetAttribute);
  load("cuFuncGetAttribute", api.cuFuncGetAttribute);
  load("cuLaunchKernel", api.cuLaunchKernel);
  load("cuMemAlloc", api.cuMemAlloc);
  load("cuMemFree", api.cuMemFree);
  load("cuMemHostAlloc", api.cuMemHostAlloc);
  load("cuMemFreeHost", api.cuMemFreeHost);
  load("cuMemHostGetDevicePointer", api.cuMemHostGetDevicePointer);
  load("cuMemcpyHtoD", api.cuMemcpyHtoD);
  load("cuMemcpyDtoH", api.cuMemcpyDtoH);
  load("cuMemsetD8", api.cuMemsetD8);
  load("cuStreamCreate", api.cuStreamCreate);
  load("cuStreamDestroy", api.cuStreamDestroy);
  load("cuStreamSynchronize", api.cuStreamSynchronize);
  load("cuEventCreate", api.cuEventCreate);
  load("cuEventDestroy", api.cuEventDestroy);
  load("cuEventRecord", api.cuEventRecord);
  load("cuEventSynchronize", api.cuEventSynchronize);
  load("cuEventElapsedTime", api.cuEventElapsedTime);
  load("cuTensorMapEncodeTiled", api.cuTensorMapEncodeTiled);
  if (missing.empty()) return {};
  return fmt::format(
      "libcuda.so.1 lacks these entry points at the CUDA 12.0 ABI: {}; install an NVIDIA driver "
      "that supports CUDA 12.0 or newer",
      missing);
}

const DriverApi& api() { return Driver::instance().api(); }

void check(CUresult result, std::string_view call, std::string_view remedy) {
  Driver::instance().check(result, call, remedy);
}

}  // namespace

Driver& Driver::instance() {
  static Driver driver;
  return driver;
}

Driver::Driver() {
  // RTLD_NODELETE: the driver stays mapped for the life of the process, as with a linked libcuda.
  void* handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (!handle) {
    const char* why = dlerror();
    reason_ = fmt::format("libcuda.so.1 could not be loaded ({})", why ? why : "unknown dlopen error");
    return;
  }
  auto get_proc = reinterpret_cast<PFN_cuGetProcAddress_v12000>(dlsym(handle, "cuGetProcAddress_v2"));
  if (!get_proc) {
    reason_ =
        "libcuda.so.1 has no cuGetProcAddress_v2 (the driver predates CUDA 12.0); install a "
        "newer NVIDIA driver";
    return;
  }
  auto table = std::make_unique<DriverApi>();
  if (std::string missing = load_entry_points(get_proc, *table); !missing.empty()) {
    reason_ = std::move(missing);
    return;
  }
  if (const CUresult init = table->cuInit(0); init != CUDA_SUCCESS) {
    const char* name = nullptr;
    table->cuGetErrorName(init, &name);
    reason_ = fmt::format("cuInit failed with {}", name ? name : "an unknown error");
    return;
  }
  table->cuDriverGetVersion(&version_);
  if (version_ < DriverApi::kAbiVersion) {
    reason_ = fmt::format("the NVIDIA driver supports CUDA {}.{}, attnjit needs 12.0 or newer; update the driver",
                          version_ / 1000, version_ % 1000 / 10);
    return;
  }
  api_ = std::move(table);
}

const DriverApi& Driver::api() const {
  if (!api_) throw RuntimeFailure(fmt::format("no CUDA driver: {}; {}", reason_, kNoGpuRemedy));
  return *api_;
}

int Driver::device_count() const {
  if (!api_) return 0;
  int count = 0;
  check(api_->cuDeviceGetCount(&count), "cuDeviceGetCount", "check that the GPU is visible (nvidia-smi)");
  return count;
}

void Driver::check(CUresult result, std::string_view call, std::string_view remedy) const {
  if (result == CUDA_SUCCESS) return;
  const char* name = nullptr;
  const char* description = nullptr;
  if (api_) {
    api_->cuGetErrorName(result, &name);
    api_->cuGetErrorString(result, &description);
  }
  throw RuntimeFailure(fmt::format("CUDA driver call {} failed with {} ({}); {}", call,
                                   name ? name : fmt::format("CUresult {}", static_cast<int>(result)),
                                   description ? description : "no description", remedy));
}

std::string arch_for_compute_capability(int major, int minor) {
  if (major == 9 && minor == 0) return "sm_90a";
  return fmt::format("sm_{}{}", major, minor);
}

// ---- context ----------------------------------------------------------------

DeviceContext::DeviceContext(int ordinal) {
  const auto& driver = api();
  const int count = Driver::instance().device_count();
  if (ordinal < 0 || ordinal >= count) {
    throw UserError(
        fmt::format("device ordinal {} does not exist; this machine has {} CUDA device(s), allowed 0..{}; pass "
                    "a valid ordinal (CUDA_VISIBLE_DEVICES changes the numbering)",
                    ordinal, count, count - 1));
  }
  check(driver.cuDeviceGet(&device_, ordinal), "cuDeviceGet", "check that the GPU is visible (nvidia-smi)");
  check(driver.cuDevicePrimaryCtxRetain(&context_, device_), "cuDevicePrimaryCtxRetain",
        "the GPU may be in exclusive mode or out of memory; check nvidia-smi");
  try {
    make_current();
    auto attribute = [&](CUdevice_attribute which, const char* what) {
      int value = 0;
      check(driver.cuDeviceGetAttribute(&value, which, device_), what, "check the NVIDIA driver installation");
      return value;
    };
    properties_.ordinal = ordinal;
    char name[256] = {};
    check(driver.cuDeviceGetName(name, sizeof name, device_), "cuDeviceGetName",
          "check the NVIDIA driver installation");
    properties_.name = name;
    properties_.compute_major =
        attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MAJOR)");
    properties_.compute_minor =
        attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MINOR)");
    properties_.arch = arch_for_compute_capability(properties_.compute_major, properties_.compute_minor);
    properties_.sm_count =
        attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "cuDeviceGetAttribute(MULTIPROCESSOR_COUNT)");
    properties_.max_shared_memory_per_block_optin =
        attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                  "cuDeviceGetAttribute(MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)");
    check(driver.cuDeviceTotalMem(&properties_.total_memory_bytes, device_), "cuDeviceTotalMem",
          "check the NVIDIA driver installation");
  } catch (...) {
    driver.cuDevicePrimaryCtxRelease(device_);
    throw;
  }
}

DeviceContext::~DeviceContext() {
  if (context_) api().cuDevicePrimaryCtxRelease(device_);
}

void DeviceContext::make_current() const {
  check(api().cuCtxSetCurrent(context_), "cuCtxSetCurrent",
        "the context may have been destroyed; create a new DeviceContext");
}

void DeviceContext::synchronize() const {
  make_current();
  check(api().cuCtxSynchronize(), "cuCtxSynchronize",
        "a kernel launched earlier failed (illegal address, trap, timeout); rerun with compute-sanitizer");
}

// ---- libraries and kernels ----------------------------------------------------

LoadedLibrary::LoadedLibrary(std::string_view cubin) {
  if (cubin.size() < 4 || cubin.compare(0, 4,
                                        "\x7f"
                                        "ELF") != 0) {
    throw UserError(
        fmt::format("LoadedLibrary was given {} bytes that are not a cubin (no ELF magic); pass the output of "
                    "compile_to_cubin or a verified cache entry",
                    cubin.size()));
  }
  check(api().cuLibraryLoadData(&library_, cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0), "cuLibraryLoadData",
        "the cubin may target another GPU architecture than this device's, or need a newer driver; "
        "recompile for this device's arch (DeviceProperties::arch)");
}

LoadedLibrary::~LoadedLibrary() {
  if (library_) api().cuLibraryUnload(library_);
}

KernelFunction LoadedLibrary::kernel(const std::string& name) const {
  CUkernel kernel = nullptr;
  check(api().cuLibraryGetKernel(&kernel, library_, name.c_str()), fmt::format("cuLibraryGetKernel(\"{}\")", name),
        "no kernel of that name in the cubin; declare it extern \"C\" __global__ and check the spelling");
  CUfunction function = nullptr;
  check(api().cuKernelGetFunction(&function, kernel), fmt::format("cuKernelGetFunction(\"{}\")", name),
        "make a DeviceContext current on this thread first");
  return KernelFunction(kernel, function, name);
}

std::optional<DeviceGlobal> LoadedLibrary::global(const std::string& name) const {
  DeviceGlobal found;
  const CUresult result = api().cuLibraryGetGlobal(&found.pointer, &found.bytes, library_, name.c_str());
  if (result == CUDA_ERROR_NOT_FOUND) return std::nullopt;
  check(result, fmt::format("cuLibraryGetGlobal(\"{}\")", name), "make a DeviceContext current on this thread first");
  return found;
}

void KernelFunction::set_max_dynamic_shared_memory(int bytes) const {
  check(api().cuFuncSetAttribute(function_, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes),
        fmt::format("cuFuncSetAttribute(\"{}\", MAX_DYNAMIC_SHARED_SIZE_BYTES, {})", name_, bytes),
        "the request plus the kernel's static shared memory must not exceed the device's opt-in "
        "limit (DeviceProperties::max_shared_memory_per_block_optin); use smaller tiles or fewer stages");
}

int KernelFunction::attribute(CUfunction_attribute which) const {
  int value = 0;
  check(api().cuFuncGetAttribute(&value, which, function_),
        fmt::format("cuFuncGetAttribute(\"{}\", {})", name_, static_cast<int>(which)),
        "check that the library that owns this kernel is still loaded");
  return value;
}

void LaunchConfig::validate() const {
  for (int axis = 0; axis < 3; ++axis) {
    if (grid[axis] == 0 || block[axis] == 0) {
      throw UserError(
          fmt::format("LaunchConfig grid ({}, {}, {}) / block ({}, {}, {}) has a zero dimension; every "
                      "dimension must be at least 1",
                      grid[0], grid[1], grid[2], block[0], block[1], block[2]));
    }
  }
  const unsigned long long threads = 1ull * block[0] * block[1] * block[2];
  if (threads > 1024) {
    throw UserError(
        fmt::format("LaunchConfig block ({}, {}, {}) has {} threads; allowed at most 1024 per block; use fewer warps",
                    block[0], block[1], block[2], threads));
  }
  if (grid[1] > 65535 || grid[2] > 65535) {
    throw UserError(
        fmt::format("LaunchConfig grid ({}, {}, {}): y and z are limited to 65535; move the large extent to x", grid[0],
                    grid[1], grid[2]));
  }
}

void launch(const KernelFunction& kernel, const LaunchConfig& config, const void* argument_block) {
  config.validate();
  void* parameters[] = {const_cast<void*>(argument_block)};
  check(api().cuLaunchKernel(kernel.function(), config.grid[0], config.grid[1], config.grid[2], config.block[0],
                             config.block[1], config.block[2], config.dynamic_shared_bytes, config.stream, parameters,
                             nullptr),
        fmt::format("cuLaunchKernel(\"{}\", grid ({}, {}, {}), block ({}, {}, {}), {} B dynamic smem)", kernel.name(),
                    config.grid[0], config.grid[1], config.grid[2], config.block[0], config.block[1], config.block[2],
                    config.dynamic_shared_bytes),
        "check the launch shape and that set_max_dynamic_shared_memory covers the dynamic shared memory");
}

std::string encode_tensor_map(void* map, const TensorMap4d& t) {
  if (t.address % 16 != 0) return fmt::format("the base address {:#x} is not 16-byte aligned", t.address);
  for (int i = 0; i < 3; ++i)
    if (t.strides_bytes[i] % 16 != 0 || t.strides_bytes[i] == 0 || t.strides_bytes[i] >= (1ull << 40))
      return fmt::format("stride {} of {} bytes is not a positive multiple of 16 below 2^40", i + 1,
                         t.strides_bytes[i]);
  const cuuint64_t dims[4] = {t.dims[0], t.dims[1], t.dims[2], t.dims[3]};
  const cuuint64_t strides[3] = {t.strides_bytes[0], t.strides_bytes[1], t.strides_bytes[2]};
  const cuuint32_t box[4] = {t.box_inner, t.box_rows, 1, 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  // 16-bit elements are copied as bits, so one type serves bf16 and fp16.
  const CUresult r = api().cuTensorMapEncodeTiled(
      static_cast<CUtensorMap*>(map), CU_TENSOR_MAP_DATA_TYPE_UINT16, 4, reinterpret_cast<void*>(t.address), dims,
      strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r == CUDA_SUCCESS) return {};
  const char* name = nullptr;
  api().cuGetErrorName(r, &name);
  return fmt::format("cuTensorMapEncodeTiled refused it ({})", name ? name : "unknown error");
}

// ---- memory, streams, events ----------------------------------------------------

DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  check(api().cuMemAlloc(&pointer_, bytes), fmt::format("cuMemAlloc({} bytes)", bytes),
        "the GPU is out of memory; free tensors or use a smaller problem");
}

DeviceBuffer::~DeviceBuffer() {
  if (pointer_) api().cuMemFree(pointer_);
}

MappedHostBuffer::MappedHostBuffer(std::size_t bytes) : bytes_(bytes) {
  check(api().cuMemHostAlloc(&host_, bytes, CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_PORTABLE),
        fmt::format("cuMemHostAlloc({} bytes, mapped)", bytes), "the host is out of pinned memory");
  std::memset(host_, 0, bytes);
  if (api().cuMemHostGetDevicePointer(&device_, host_, 0) != CUDA_SUCCESS) {
    api().cuMemFreeHost(host_);
    throw RuntimeFailure(
        "cuMemHostGetDevicePointer failed for a mapped host buffer; the device cannot map host memory");
  }
}

MappedHostBuffer::~MappedHostBuffer() {
  if (host_) api().cuMemFreeHost(host_);
}

void DeviceBuffer::copy_from_host(const void* host, std::size_t bytes) const {
  if (bytes > bytes_) {
    throw UserError(fmt::format("copy_from_host of {} bytes into a {}-byte DeviceBuffer; copy at most {} bytes", bytes,
                                bytes_, bytes_));
  }
  if (bytes == 0) return;
  check(api().cuMemcpyHtoD(pointer_, host, bytes), "cuMemcpyHtoD",
        "check the host pointer and that a context is current");
}

void DeviceBuffer::copy_to_host(void* host, std::size_t bytes) const {
  if (bytes > bytes_) {
    throw UserError(fmt::format("copy_to_host of {} bytes from a {}-byte DeviceBuffer; copy at most {} bytes", bytes,
                                bytes_, bytes_));
  }
  if (bytes == 0) return;
  check(api().cuMemcpyDtoH(host, pointer_, bytes), "cuMemcpyDtoH",
        "a kernel launched earlier may have failed; rerun with compute-sanitizer");
}

void copy_device_to_host(void* host, CUdeviceptr device, std::size_t bytes) {
  if (bytes == 0) return;
  check(Driver::instance().api().cuMemcpyDtoH(host, device, bytes), "cuMemcpyDtoH",
        "a kernel launched earlier may have failed; rerun with compute-sanitizer");
}

void zero_device_bytes(CUdeviceptr device, std::size_t bytes) {
  if (bytes == 0) return;
  check(Driver::instance().api().cuMemsetD8(device, 0, bytes), "cuMemsetD8", "check that a context is current");
}

void synchronize_current_context() {
  check(Driver::instance().api().cuCtxSynchronize(), "cuCtxSynchronize",
        "a kernel launched earlier failed (illegal address, trap, timeout); rerun with compute-sanitizer");
}

void DeviceBuffer::fill_bytes(std::uint8_t value) const {
  if (bytes_ == 0) return;
  check(api().cuMemsetD8(pointer_, value, bytes_), "cuMemsetD8", "check that a context is current");
}

Stream::Stream() {
  check(api().cuStreamCreate(&stream_, CU_STREAM_NON_BLOCKING), "cuStreamCreate", "make a DeviceContext current first");
}

Stream::~Stream() {
  if (stream_) api().cuStreamDestroy(stream_);
}

void Stream::synchronize() const {
  check(api().cuStreamSynchronize(stream_), "cuStreamSynchronize",
        "a kernel on this stream failed (illegal address, trap, timeout); rerun with compute-sanitizer");
}

Event::Event() {
  check(api().cuEventCreate(&event_, CU_EVENT_DEFAULT), "cuEventCreate", "make a DeviceContext current first");
}

Event::~Event() {
  if (event_) api().cuEventDestroy(event_);
}

void Event::record(CUstream stream) const {
  check(api().cuEventRecord(event_, stream), "cuEventRecord", "record on a stream of the current context");
}

void Event::synchronize() const {
  check(api().cuEventSynchronize(event_), "cuEventSynchronize",
        "work before this event failed; rerun with compute-sanitizer");
}

float Event::elapsed_ms(const Event& start, const Event& end) {
  float milliseconds = 0;
  check(api().cuEventElapsedTime(&milliseconds, start.event_, end.event_), "cuEventElapsedTime",
        "record both events and synchronize the end event before asking for the time");
  return milliseconds;
}

}  // namespace attnjit::runtime
