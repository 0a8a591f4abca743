// The CUDA driver, reached only through dlopen("libcuda.so.1") + cuGetProcAddress (DESIGN §2
// runtime/driver). attnjit never links libcuda, so the library, the CLI and the CPU tests load
// on a machine with no GPU and no driver; there Driver::available() is false with a reason,
// and any GPU operation throws a RuntimeFailure saying so. On a GPU machine this file gives
// small RAII wrappers for what the launcher needs: the primary context, device properties,
// libraries loaded from cubins, kernels and their attributes, launches that pass one argument
// block, device memory, streams and events. Every driver error becomes a RuntimeFailure naming
// the call, the CUresult name and a remedy.
#pragma once

#include <cuda.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace attnjit::runtime {

struct DriverApi;  // the table of driver entry points, filled from cuGetProcAddress

class Driver {
 public:
  // The process-wide driver; the first call dlopens libcuda and runs cuInit.
  static Driver& instance();

  bool available() const { return api_ != nullptr; }
  // Why available() is false ("" when it is true).
  const std::string& unavailable_reason() const { return reason_; }
  // cuDriverGetVersion, e.g. 12040; 0 when unavailable.
  int version() const { return version_; }
  int device_count() const;

  // The entry points; throws RuntimeFailure("no CUDA driver: <reason>; ...") when unavailable.
  const DriverApi& api() const;
  // Throws RuntimeFailure naming `call`, the CUresult name and `remedy` unless result == CUDA_SUCCESS.
  void check(CUresult result, std::string_view call, std::string_view remedy) const;

  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

 private:
  Driver();
  std::unique_ptr<DriverApi> api_;
  std::string reason_;
  int version_ = 0;
};

// What the launcher needs to know about a GPU.
struct DeviceProperties {
  int ordinal = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  std::string arch;  // "sm_80", "sm_86", "sm_89", "sm_90a" (9.0 gets the arch-specific target)
  int sm_count = 0;
  int max_shared_memory_per_block_optin = 0;  // bytes, the opt-in limit for dynamic smem
  std::size_t total_memory_bytes = 0;
};

// "sm_90a" for 9.0, otherwise "sm_<major><minor>".
std::string arch_for_compute_capability(int major, int minor);

// The primary context of one device, retained and made current on construction, released on
// destruction. Create one per thread that issues GPU work (make_current() on other threads).
class DeviceContext {
 public:
  explicit DeviceContext(int ordinal = 0);
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  void make_current() const;
  void synchronize() const;
  const DeviceProperties& properties() const { return properties_; }
  CUcontext handle() const { return context_; }

 private:
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  DeviceProperties properties_;
};

// A kernel of a loaded library; valid while the library lives. The CUfunction belongs to the
// context that was current when it was looked up.
class KernelFunction {
 public:
  KernelFunction(CUkernel kernel, CUfunction function, std::string name)
      : kernel_(kernel), function_(function), name_(std::move(name)) {}
  const std::string& name() const { return name_; }
  CUfunction function() const { return function_; }
  CUkernel kernel() const { return kernel_; }

  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES (needed above 48 KiB).
  void set_max_dynamic_shared_memory(int bytes) const;
  int attribute(CUfunction_attribute which) const;
  int registers_per_thread() const { return attribute(CU_FUNC_ATTRIBUTE_NUM_REGS); }

 private:
  CUkernel kernel_;
  CUfunction function_;
  std::string name_;
};

// A __device__ variable of a loaded library: its address and size.
struct DeviceGlobal {
  CUdeviceptr pointer = 0;
  std::size_t bytes = 0;
};

// A cubin loaded with cuLibraryLoadData; unloaded on destruction.
class LoadedLibrary {
 public:
  explicit LoadedLibrary(std::string_view cubin);
  ~LoadedLibrary();
  LoadedLibrary(LoadedLibrary&& other) noexcept : library_(other.library_) { other.library_ = nullptr; }
  LoadedLibrary& operator=(LoadedLibrary&&) = delete;
  LoadedLibrary(const LoadedLibrary&) = delete;

  // Looks up an extern "C" kernel by name (cuLibraryGetKernel + cuKernelGetFunction).
  KernelFunction kernel(const std::string& name) const;
  // The extern "C" __device__ variable `name` in the current context, or nullopt if there is none.
  std::optional<DeviceGlobal> global(const std::string& name) const;

 private:
  CUlibrary library_ = nullptr;
};

class Stream {
 public:
  Stream();  // non-blocking with respect to the legacy default stream
  ~Stream();
  Stream(Stream&& other) noexcept : stream_(other.stream_) { other.stream_ = nullptr; }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  void synchronize() const;
  CUstream handle() const { return stream_; }

 private:
  CUstream stream_ = nullptr;
};

class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  void record(CUstream stream = nullptr) const;
  void synchronize() const;
  CUevent handle() const { return event_; }
  // Milliseconds between two recorded, completed events.
  static float elapsed_ms(const Event& start, const Event& end);

 private:
  CUevent event_ = nullptr;
};

// Device memory; freed on destruction.
// Pinned host memory the device can write (CU_MEMHOSTALLOC_DEVICEMAP): the host reads it
// without a copy, e.g. an error record a kernel fills in.
class MappedHostBuffer {
 public:
  explicit MappedHostBuffer(std::size_t bytes);
  ~MappedHostBuffer();
  MappedHostBuffer(const MappedHostBuffer&) = delete;
  MappedHostBuffer& operator=(const MappedHostBuffer&) = delete;

  void* host_pointer() const { return host_; }
  CUdeviceptr device_pointer() const { return device_; }
  std::size_t size_bytes() const { return bytes_; }

 private:
  void* host_ = nullptr;
  CUdeviceptr device_ = 0;
  std::size_t bytes_ = 0;
};

// cuMemcpyDtoH of `bytes` at `device` (synchronous with respect to the context's work).
void copy_device_to_host(void* host, CUdeviceptr device, std::size_t bytes);
// cuMemsetD8 of `bytes` zeros at `device`.
void zero_device_bytes(CUdeviceptr device, std::size_t bytes);
// cuCtxSynchronize: waits for every stream of the current context.
void synchronize_current_context();

class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept : pointer_(other.pointer_), bytes_(other.bytes_) {
    other.pointer_ = 0;
    other.bytes_ = 0;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  CUdeviceptr device_pointer() const { return pointer_; }
  std::size_t size_bytes() const { return bytes_; }
  void copy_from_host(const void* host, std::size_t bytes) const;
  void copy_to_host(void* host, std::size_t bytes) const;
  void fill_bytes(std::uint8_t value) const;

 private:
  CUdeviceptr pointer_ = 0;
  std::size_t bytes_ = 0;
};

// Grid, block, dynamic shared memory and stream of one launch. Chainable; validate() throws
// UserError for zero or oversized dimensions.
struct LaunchConfig {
  unsigned grid[3] = {1, 1, 1};
  unsigned block[3] = {1, 1, 1};
  unsigned dynamic_shared_bytes = 0;
  CUstream stream = nullptr;

  LaunchConfig& set_grid(unsigned x, unsigned y = 1, unsigned z = 1) {
    grid[0] = x;
    grid[1] = y;
    grid[2] = z;
    return *this;
  }
  LaunchConfig& set_block(unsigned x, unsigned y = 1, unsigned z = 1) {
    block[0] = x;
    block[1] = y;
    block[2] = z;
    return *this;
  }
  LaunchConfig& set_dynamic_shared_bytes(unsigned bytes) {
    dynamic_shared_bytes = bytes;
    return *this;
  }
  LaunchConfig& set_stream(CUstream value) {
    stream = value;
    return *this;
  }
  void validate() const;
};

// Launches `kernel` whose single parameter is an argument block passed by value: the driver
// copies `argument_block` (the kernel's parameter size) at launch time.
void launch(const KernelFunction& kernel, const LaunchConfig& config, const void* argument_block);

// A TMA descriptor of a 4-d tensor of 16-bit elements, dims innermost first (elements),
// strides of dims 1..3 in bytes; boxes of box_inner x box_rows x 1 x 1 elements, 128-byte
// swizzle, out-of-range elements read as zeros. Writes 128 bytes to `map` (64-byte aligned).
// Returns "" or why the tensor cannot be described (the TMA's alignment and stride rules, or
// the driver's refusal).
struct TensorMap4d {
  std::uint64_t address = 0;
  std::uint64_t dims[4] = {};
  std::uint64_t strides_bytes[3] = {};
  unsigned box_inner = 64, box_rows = 64;
};
std::string encode_tensor_map(void* map, const TensorMap4d& tensor);

template <typename ArgumentBlock>
void launch(const KernelFunction& kernel, const LaunchConfig& config, const ArgumentBlock& arguments) {
  launch(kernel, config, static_cast<const void*>(&arguments));
}

}  // namespace attnjit::runtime
