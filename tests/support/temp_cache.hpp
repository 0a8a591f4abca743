// A kernel cache in a fresh temporary folder for a test suite (ATTNJIT_CACHE_DIR points there
// too, so failure dumps stay out of ~/.cache), removed when the suite ends.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "runtime/cache/kernel_cache.hpp"

namespace attnjit {

class TempKernelCache {
 public:
  explicit TempKernelCache(const std::string& prefix)
      : dir_(std::filesystem::temp_directory_path() / (prefix + std::to_string(::getpid()))) {
    std::filesystem::create_directories(dir_);
    ::setenv("ATTNJIT_CACHE_DIR", dir_.c_str(), 1);
    cache_ = std::make_unique<runtime::KernelCache>(runtime::KernelCacheOptions().set_directory(dir_ / "kernels"));
  }
  ~TempKernelCache() {
    cache_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  TempKernelCache(const TempKernelCache&) = delete;
  TempKernelCache& operator=(const TempKernelCache&) = delete;

  runtime::KernelCache* cache() const { return cache_.get(); }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<runtime::KernelCache> cache_;
};

}  // namespace attnjit
