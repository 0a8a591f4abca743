# Third-party dependencies, all from Debian packages (see tools/setup.sh).
find_package(Threads REQUIRED)
find_package(fmt 9 REQUIRED)
find_package(CUDAToolkit REQUIRED)

# NVRTC alone. CMake's CUDA::nvrtc target also links the driver stub (libcuda.so), which
# would make libattnjit need libcuda.so.1 at load time; attnjit reaches the driver only
# through dlopen so that it loads and runs its CPU parts on machines without a GPU.
find_library(ATTNJIT_NVRTC_LIBRARY nvrtc HINTS ${CUDAToolkit_LIBRARY_DIR} REQUIRED NO_DEFAULT_PATH)
add_library(attnjit_nvrtc INTERFACE)
target_link_libraries(attnjit_nvrtc INTERFACE $<BUILD_INTERFACE:${ATTNJIT_NVRTC_LIBRARY}>)
target_include_directories(attnjit_nvrtc INTERFACE $<BUILD_INTERFACE:${CUDAToolkit_INCLUDE_DIRS}>)
# SQLite (libsqlite3-dev) for the tuning database; only libsqlite3.so.0 is needed at run time.
find_package(SQLite3 REQUIRED)

# CLI11 ships a CMake config on Debian; fall back to the header when it does not.
find_package(CLI11 CONFIG QUIET)
if(NOT TARGET CLI11::CLI11)
  find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  target_include_directories(CLI11::CLI11 INTERFACE ${CLI11_INCLUDE_DIR})
endif()

# DLPack: header only (libdlpack-dev).
find_path(DLPACK_INCLUDE_DIR dlpack/dlpack.h REQUIRED)
if(NOT TARGET dlpack::dlpack)
  add_library(dlpack::dlpack INTERFACE IMPORTED)
  target_include_directories(dlpack::dlpack INTERFACE ${DLPACK_INCLUDE_DIR})
endif()

# xxHash (libxxhash-dev), used header-only (XXH_INLINE_ALL) so nothing is needed at run time.
find_path(XXHASH_INCLUDE_DIR xxhash.h REQUIRED)
add_library(attnjit_xxhash INTERFACE)
target_include_directories(attnjit_xxhash INTERFACE $<BUILD_INTERFACE:${XXHASH_INCLUDE_DIR}>)

# nlohmann-json (nlohmann-json3-dev), header only: cache metadata, tuning export/import and
# every --json output go through it.
find_package(nlohmann_json 3 REQUIRED)

# LLVM 16 (llvm-16-dev), optional: the CPU backend JIT-compiles a variant's hooks with ORC
# LLJIT (compiler/llvm/). Linked as the one shared libLLVM-16.so, so attnjit stays small and
# needs only that runtime library. Without it the library builds as before and
# cpu_jit_available() says why; -DATTNJIT_WITH_LLVM=OFF builds without it on purpose.
option(ATTNJIT_WITH_LLVM "Build the CPU backend's LLVM JIT when LLVM 16 is found" ON)
set(ATTNJIT_HAVE_LLVM OFF)
if(ATTNJIT_WITH_LLVM)
  enable_language(C)  # LLVMConfig.cmake runs C checks for its own optional dependencies
  find_package(LLVM 16 CONFIG QUIET HINTS /usr/lib/llvm-16)
  if(LLVM_FOUND AND TARGET LLVM)
    set(ATTNJIT_HAVE_LLVM ON)
    message(STATUS "attnjit: CPU JIT enabled with LLVM ${LLVM_PACKAGE_VERSION} (${LLVM_DIR}, shared libLLVM)")
  elseif(LLVM_FOUND)
    message(STATUS "attnjit: LLVM ${LLVM_PACKAGE_VERSION} at ${LLVM_DIR} has no shared libLLVM: the CPU JIT is "
                   "disabled, CPU hooks run interpreted")
  else()
    message(STATUS "attnjit: LLVM 16 not found (install llvm-16-dev): the CPU JIT is disabled, "
                   "CPU hooks run interpreted")
  endif()
else()
  message(STATUS "attnjit: CPU JIT disabled (ATTNJIT_WITH_LLVM=OFF): CPU hooks run interpreted")
endif()
