// Knobs (see knobs.hpp).
#include "compiler/knobs.hpp"

#include <fmt/format.h>

#include <sstream>

#include "compiler/error.hpp"

namespace attnjit {

int Knobs::get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw InternalError(fmt::format("knob '{}' is not set in '{}'", name, str()));
  return it->second;
}

std::string Knobs::str() const {
  std::string out;
  for (const auto& [name, value] : values_) out += fmt::format("{}{}={}", out.empty() ? "" : " ", name, value);
  return out;
}

Knobs Knobs::parse(const std::string& text) {
  Knobs k;
  std::istringstream in(text);
  std::string token;
  while (in >> token) {
    const auto eq = token.find('=');
    std::size_t used = 0;
    int value = 0;
    bool ok = eq != std::string::npos && eq > 0;
    if (ok) {
      try {
        value = std::stoi(token.substr(eq + 1), &used);
      } catch (const std::exception&) {
        ok = false;
      }
      ok = ok && used == token.size() - eq - 1;
    }
    if (!ok)
      throw UserError(fmt::format("knob '{}' in '{}' is not of the form name=integer (e.g. block_m=128)", token, text));
    k.set(token.substr(0, eq), value);
  }
  return k;
}

}  // namespace attnjit
