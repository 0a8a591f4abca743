// attnjit's three kinds of error (DESIGN §5): the user's mistake, an internal bug, and a
// runtime failure. Every message names the field, the value, what is allowed, and a remedy.
#pragma once

#include <stdexcept>
#include <string>

namespace attnjit {

enum class ErrorKind { User, Internal, Runtime };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// A bad variant, shape, dtype or binding: the caller can fix it.
class UserError : public Error {
 public:
  explicit UserError(const std::string& message) : Error(ErrorKind::User, message) {}
};

// A broken invariant inside attnjit: please report it.
class InternalError : public Error {
 public:
  explicit InternalError(const std::string& message)
      : Error(ErrorKind::Internal, "internal error (please report): " + message) {}
};

// The environment failed: no driver, out of memory, NVRTC failure.
class RuntimeFailure : public Error {
 public:
  explicit RuntimeFailure(const std::string& message) : Error(ErrorKind::Runtime, message) {}
};

}  // namespace attnjit
