// An environment variable's value saved when a test (or fixture) starts and put back, or
// removed if it was unset, when it ends, so that a test may point it elsewhere meanwhile.
#pragma once

#include <stdlib.h>

#include <optional>
#include <string>

namespace attnjit {

class ScopedEnvRestore {
 public:
  explicit ScopedEnvRestore(std::string name) : name_(std::move(name)) {
    if (const char* value = std::getenv(name_.c_str())) saved_ = value;
  }
  ~ScopedEnvRestore() {
    if (saved_)
      ::setenv(name_.c_str(), saved_->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  ScopedEnvRestore(const ScopedEnvRestore&) = delete;
  ScopedEnvRestore& operator=(const ScopedEnvRestore&) = delete;

 private:
  std::string name_;
  std::optional<std::string> saved_;
};

}  // namespace attnjit
